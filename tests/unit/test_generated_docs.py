"""Generated files must match their source: the configuration reference."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_configuration_reference_matches_the_schema():
    result = subprocess.run([sys.executable, str(REPO / "hack" / "generate_config_docs.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
