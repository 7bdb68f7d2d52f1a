"""The operator package stays light: no torch, no trainer, and `operator/` is never a package."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def test_running_the_operator_imports_neither_torch_nor_the_trainer():
    code = (
        "import sys, kuberlhf_operator.__main__, kuberlhf_operator.handlers; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'kuberlhf_trainer', 'deepspeed')); "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_operator_directory_is_not_an_importable_package():
    # A top-level package named `operator` would shadow the standard library's.
    assert not (REPO / "operator" / "__init__.py").exists()
