"""The generation engines: hybrid agrees with plain generate and never changes training."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from kuberlhf_trainer.data.prepare import step_examples
from kuberlhf_trainer.data.tokenize import collate_prompts
from kuberlhf_trainer.hybrid_engine import HFGeneration, HybridGeneration
from kuberlhf_trainer.models import load_tokenizer
from kuberlhf_trainer.rlhf import RLHFEngine
from kuberlhf_trainer.steps import run_step
from tests.support.tiny_runs import ppo_config, train_sft_and_reward


@pytest.fixture(scope="module")
def trained_steps(tmp_path_factory, runtime):
    return train_sft_and_reward(tmp_path_factory.mktemp("steps12"), runtime, reward_max_steps=10)


@pytest.mark.parametrize("zero_stage,lora", [(0, 4), (3, 0), (3, 4)], ids=["lora", "zero3", "zero3+lora"])
def test_hybrid_and_hf_agree_under_greedy_decoding(tmp_path, runtime, trained_steps, zero_stage, lora):
    config = ppo_config(tmp_path, trained_steps, actor_model__zero_stage=zero_stage, actor_model__lora__dim=lora)
    tokenizer = load_tokenizer(str(trained_steps / "sft"))
    engine = RLHFEngine(str(trained_steps / "sft"), str(trained_steps / "reward"), tokenizer, 10, config, runtime)
    if lora:  # adapters start as a no-op (B = 0): give them weight so merging matters
        _perturb_lora(engine.actor.engine.module, zero3=zero_stage == 3)
    hybrid = engine.generation
    assert isinstance(hybrid, HybridGeneration) and hybrid.needs_copy
    plain = HFGeneration(engine.actor.engine, config.ppo.generation, config.ppo.max_answer_seq_len, tokenizer,
                         zero_stage == 3, runtime.world_size)
    prompts = collate_prompts(step_examples(config, "ppo", tokenizer).train[:8], tokenizer.pad_token_id)
    ours = hybrid.generate(prompts["input_ids"], prompts["attention_mask"], greedy=True)
    theirs = plain.generate(prompts["input_ids"], prompts["attention_mask"], greedy=True)
    assert torch.equal(ours.sequences, theirs.sequences)
    assert torch.equal(ours.answer_mask, theirs.answer_mask)


def _perturb_lora(module, zero3: bool) -> None:
    import contextlib

    import deepspeed

    params = [p for name, p in module.named_parameters() if "lora_B" in name]
    gathered = deepspeed.zero.GatheredParameters(params, modifier_rank=0) if zero3 else contextlib.nullcontext()
    torch.manual_seed(0)
    with gathered, torch.no_grad():
        for param in params:
            param.normal_(0, 0.05)


def test_switching_engines_does_not_change_the_training_result(tmp_path, runtime, trained_steps):
    """Same samples, same updates: the inference copy computes what the training module computes
    and consumes no random numbers of its own."""
    weights = {}
    for engine in ("hf", "hybrid"):
        config = ppo_config(tmp_path / engine, trained_steps, actor_model__zero_stage=3, ppo__max_steps=2,
                         ppo__generation__engine=engine)
        torch.manual_seed(0)
        run_step("ppo", config, runtime)
        weights[engine] = load_file(config.step_dir("ppo") / "model.safetensors")
    start = load_file(trained_steps / "sft" / "model.safetensors")
    assert weights["hf"].keys() == weights["hybrid"].keys()
    assert any(not torch.equal(weights["hf"][k], start[k]) for k in start), "PPO trained"
    for name in weights["hf"]:
        assert torch.equal(weights["hf"][name], weights["hybrid"][name]), name


def test_deepspeed_engine_explains_that_it_needs_cuda(tmp_path, runtime, trained_steps):
    config = ppo_config(tmp_path, trained_steps, ppo__generation__engine="deepspeed")
    tokenizer = load_tokenizer(str(trained_steps / "sft"))
    with pytest.raises(RuntimeError, match="needs CUDA.*Use 'hybrid'"):
        RLHFEngine(str(trained_steps / "sft"), str(trained_steps / "reward"), tokenizer, 10, config, runtime)


def test_generation_leaves_the_training_weights_untouched(tmp_path, runtime, trained_steps):
    """LoRA is merged into the inference copy only: the actor's own (adapter and base) weights
    come out of a generation phase bit for bit as they went in."""
    config = ppo_config(tmp_path, trained_steps, actor_model__zero_stage=3, actor_model__lora__dim=4)
    tokenizer = load_tokenizer(str(trained_steps / "sft"))
    engine = RLHFEngine(str(trained_steps / "sft"), str(trained_steps / "reward"), tokenizer, 10, config, runtime)
    module = engine.actor.engine.module
    _perturb_lora(module, zero3=True)
    before = {name: p.ds_tensor.clone() for name, p in module.named_parameters()}
    prompts = collate_prompts(step_examples(config, "ppo", tokenizer).train[:8], tokenizer.pad_token_id)
    engine.generation.generate(prompts["input_ids"], prompts["attention_mask"])
    assert all(torch.equal(before[name], p.ds_tensor) for name, p in module.named_parameters())
