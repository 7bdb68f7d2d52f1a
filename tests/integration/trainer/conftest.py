"""Real DeepSpeed training on the CPU, in this process (one-process group) or in subprocesses."""

from __future__ import annotations

import pytest

from kuberlhf_trainer.engine import Runtime, init_runtime
from kuberlhf_trainer.pipeline import quiet_libraries
from tests.support.tiny_runs import train_sft_and_reward


@pytest.fixture(scope="session")
def runtime() -> Runtime:
    """This test process as a one-process DeepSpeed group on the CPU."""
    quiet_libraries()
    return init_runtime("cpu")



@pytest.fixture(scope="session")
def trained_steps(tmp_path_factory, runtime):
    """SFT and reward-model checkpoints to start PPO from, trained once per session."""
    return train_sft_and_reward(tmp_path_factory.mktemp("steps12"), runtime, reward_max_steps=20)
