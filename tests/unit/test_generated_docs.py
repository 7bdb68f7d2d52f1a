"""Generated files must match their source: the configuration reference."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_configuration_reference_matches_the_schema():
    result = subprocess.run([sys.executable, str(REPO / "hack" / "generate_config_docs.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_every_trainer_metric_is_documented():
    from kuberlhf_trainer.metrics import DEFINITIONS, PREFIX

    text = (REPO / "docs" / "metrics.md").read_text()
    missing = [PREFIX + name for name in DEFINITIONS if f"`{PREFIX}{name}`" not in text]
    assert not missing, f"document these in docs/metrics.md: {missing}"
