"""The CUDA path: only meaningful on a machine with a GPU (run with `pytest -m gpu tests/gpu`).

On machines without CUDA these tests are skipped with the reason; CI runs them only where a
GPU is lent (see docs/benchmarks.md for the figures measured there).
"""

from __future__ import annotations

import pytest
import torch

from kuberlhf_trainer.steps import run_step
from tests.support.tiny_runs import tiny_config

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.fixture(scope="module")
def cuda_runtime():
    from kuberlhf_trainer.engine import init_runtime
    from kuberlhf_trainer.pipeline import quiet_libraries

    quiet_libraries()
    return init_runtime("cuda")


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_all_three_steps_on_cuda(tmp_path, cuda_runtime, dtype):
    config = tiny_config(tmp_path, device="cuda", dtype=dtype, actor_model__zero_stage=2, reward_model__zero_stage=2)
    sft = run_step("sft", config, cuda_runtime)
    assert sft["device"] == "cuda" and sft["eval_perplexity_after"] < sft["eval_perplexity_before"]
    run_step("reward", config, cuda_runtime)
    ppo = run_step("ppo", config, cuda_runtime)
    assert ppo["iterations"] == config.ppo.max_steps
