"""The CUDA path: only meaningful on a machine with a GPU (run with `pytest -m gpu tests/gpu`).

On machines without CUDA these tests are skipped with the reason; CI runs them only where a
GPU is lent (see docs/benchmarks.md for the figures measured there).
"""

from __future__ import annotations

import pytest
import torch

from kuberlhf_trainer.steps import run_step
from tests.support.tiny_runs import plain_generation, tiny_config

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


def test_hybrid_engine_compiles_decoding_on_cuda_and_agrees_with_generate(tmp_path, cuda_runtime):
    """On CUDA the hybrid engine decodes with a static cache and a compiled step (CUDA graphs) by
    default: greedy answers equal plain generate's (fp32, TF32 off, so both compute the same), and
    a second phase with longer prompts compiles nothing new."""
    from torch._dynamo.utils import counters

    from kuberlhf_trainer.data.prepare import step_examples
    from kuberlhf_trainer.data.tokenize import collate_prompts
    from kuberlhf_trainer.models import load_tokenizer
    from kuberlhf_trainer.rlhf import RLHFEngine

    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    config = tiny_config(tmp_path, device="cuda", dtype="fp32", actor_model__zero_stage=2, reward_model__zero_stage=2,
                         ppo__actor_checkpoint=str(tmp_path / "sft"), ppo__reward_checkpoint=str(tmp_path / "reward"))
    run_step("sft", config, cuda_runtime)
    run_step("reward", config, cuda_runtime)
    tokenizer = load_tokenizer(str(tmp_path / "sft"))
    engine = RLHFEngine(str(tmp_path / "sft"), str(tmp_path / "reward"), tokenizer, 10, config, cuda_runtime)
    hybrid = engine.generation
    assert hybrid.compiled(cuda_runtime.device), "decoding 'auto' compiles on CUDA"
    plain = plain_generation(engine, config, cuda_runtime)
    examples = sorted(step_examples(config, "ppo", tokenizer).train, key=lambda e: len(e.prompt_ids))
    graphs = []
    for batch in (examples[:8], examples[-8:]):
        prompts = {k: v.cuda() for k, v in collate_prompts(batch, tokenizer.pad_token_id).items()}
        ours = hybrid.generate(prompts["input_ids"], prompts["attention_mask"], greedy=True)
        theirs = plain.generate(prompts["input_ids"], prompts["attention_mask"], greedy=True)
        assert torch.equal(ours.sequences, theirs.sequences)
        graphs.append(counters["stats"]["unique_graphs"])
    assert graphs[0] > 0 and graphs[1] == graphs[0]
