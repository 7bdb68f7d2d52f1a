"""Real DeepSpeed training on the CPU, in this process (one-process group) or in subprocesses."""

from __future__ import annotations

import pytest

from kuberlhf_trainer.engine import Runtime, init_runtime
from kuberlhf_trainer.pipeline import quiet_libraries


@pytest.fixture(scope="session")
def runtime() -> Runtime:
    """This test process as a one-process DeepSpeed group on the CPU."""
    quiet_libraries()
    return init_runtime("cpu")

