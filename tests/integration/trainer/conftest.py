"""Real DeepSpeed training on the CPU, in this process (one-process group) or in subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from kuberlhf_trainer.engine import Runtime, init_runtime
from kuberlhf_trainer.pipeline import quiet_libraries


@pytest.fixture(scope="session")
def runtime() -> Runtime:
    """This test process as a one-process DeepSpeed group on the CPU."""
    quiet_libraries()
    return init_runtime("cpu")


def run_cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """`kuberlhf <args>` in a fresh process (the way users and pods run it)."""
    env = dict(os.environ, DS_ACCELERATOR="cpu", PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, "-m", "kuberlhf_trainer", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)
