"""`python -m kuberlhf_trainer ...` is `kuberlhf ...` (what torchrun --module launches)."""

import sys

from .cli import main

sys.exit(main())
