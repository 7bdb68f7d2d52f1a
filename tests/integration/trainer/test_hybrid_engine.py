"""The generation engines: hybrid agrees with plain generate and never changes training."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from kuberlhf_trainer.config import ConfigError
from kuberlhf_trainer.data.prepare import step_examples
from kuberlhf_trainer.data.tokenize import collate_prompts
from kuberlhf_trainer.hybrid_engine import HybridGeneration
from kuberlhf_trainer.models import load_tokenizer
from kuberlhf_trainer.rlhf import RLHFEngine
from kuberlhf_trainer.steps import run_step
from tests.support.tiny_runs import plain_generation, ppo_config



@pytest.mark.parametrize("zero_stage,lora", [(0, 4), (3, 0), (3, 4)], ids=["lora", "zero3", "zero3+lora"])
def test_hybrid_and_hf_agree_under_greedy_decoding(tmp_path, runtime, trained_steps, zero_stage, lora):
    """In every generation phase, after the weights changed as training changes them: the inference
    copy must follow each update (and merge the adapters anew each time)."""
    config = ppo_config(tmp_path, trained_steps, actor_model__zero_stage=zero_stage, actor_model__lora__dim=lora)
    tokenizer = load_tokenizer(str(trained_steps / "sft"))
    engine = RLHFEngine(str(trained_steps / "sft"), str(trained_steps / "reward"), tokenizer, 10, config, runtime)
    hybrid = engine.generation
    assert isinstance(hybrid, HybridGeneration) and hybrid.needs_copy
    plain = plain_generation(engine, config, runtime)
    prompts = collate_prompts(step_examples(config, "ppo", tokenizer).train[:8], tokenizer.pad_token_id)
    answers = []
    for phase in range(3):
        # an "update" between phases; with LoRA only the adapters move (they start as a no-op, B = 0)
        _perturb(engine.actor.engine.module, zero3=zero_stage == 3, only_lora=bool(lora), seed=phase)
        ours = hybrid.generate(prompts["input_ids"], prompts["attention_mask"], greedy=True)
        theirs = plain.generate(prompts["input_ids"], prompts["attention_mask"], greedy=True)
        assert torch.equal(ours.sequences, theirs.sequences), f"phase {phase}"
        assert torch.equal(ours.answer_mask, theirs.answer_mask), f"phase {phase}"
        answers.append(ours.sequences)
    assert not torch.equal(answers[1], answers[2]), "the updates change the answers"


@pytest.mark.parametrize("zero_stage,lora", [(0, 0), (3, 4)], ids=["training-module", "zero3+lora-copy"])
def test_compiled_decoding_agrees_and_compiles_once(tmp_path, runtime, trained_steps, zero_stage, lora):
    """decoding 'compiled' (the default on CUDA; forced here on CPU): the static KV cache and the
    compiled step give plain generate's greedy answers, and a second phase with prompts of another
    length reuses what was compiled instead of compiling again."""
    from torch._dynamo.utils import counters

    config = ppo_config(tmp_path, trained_steps, actor_model__zero_stage=zero_stage, actor_model__lora__dim=lora,
                        ppo__generation__decoding="compiled")
    tokenizer = load_tokenizer(str(trained_steps / "sft"))
    engine = RLHFEngine(str(trained_steps / "sft"), str(trained_steps / "reward"), tokenizer, 10, config, runtime)
    if lora:  # adapters start as a no-op (B = 0): give them weight so merging matters
        _perturb(engine.actor.engine.module, zero3=zero_stage == 3)
    hybrid = engine.generation
    assert hybrid.compiled(torch.device("cpu"))
    plain = plain_generation(engine, config, runtime)
    examples = sorted(step_examples(config, "ppo", tokenizer).train, key=lambda e: len(e.prompt_ids))
    short, long = examples[:8], examples[-8:]
    assert len(short[-1].prompt_ids) < len(long[-1].prompt_ids)
    graphs = []
    for batch in (short, long):
        prompts = collate_prompts(batch, tokenizer.pad_token_id)
        ours = hybrid.generate(prompts["input_ids"], prompts["attention_mask"], greedy=True)
        theirs = plain.generate(prompts["input_ids"], prompts["attention_mask"], greedy=True)
        assert torch.equal(ours.sequences, theirs.sequences)
        graphs.append(counters["stats"]["unique_graphs"])
    assert graphs[0] > 0, "the decoding step was compiled"
    assert graphs[1] == graphs[0], "the second phase compiled nothing new"


def _perturb(module, zero3: bool, only_lora: bool = True, seed: int = 0) -> None:
    """Move the actor's weights as a training step would: the LoRA B matrices, or every weight."""
    import contextlib

    import deepspeed

    params = [p for name, p in module.named_parameters() if "lora_B" in name or not only_lora]
    gathered = deepspeed.zero.GatheredParameters(params, modifier_rank=0) if zero3 else contextlib.nullcontext()
    generator = torch.Generator().manual_seed(seed)
    with gathered, torch.no_grad():
        for param in params:
            param.add_(torch.randn(param.shape, generator=generator, dtype=param.dtype) * (0.3 if only_lora else 0.05))


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
    """With device 'cpu' the config refuses it; with 'auto' on a machine without CUDA, step 3 does."""
    with pytest.raises(ConfigError, match="ppo.generation.engine 'deepspeed' needs CUDA"):
        ppo_config(tmp_path, trained_steps, ppo__generation__engine="deepspeed")
    config = ppo_config(tmp_path, trained_steps, ppo__generation__engine="deepspeed", device="auto")
    tokenizer = load_tokenizer(str(trained_steps / "sft"))
    with pytest.raises(ConfigError, match="needs CUDA.*Use 'hybrid'"):
        RLHFEngine(str(trained_steps / "sft"), str(trained_steps / "reward"), tokenizer, 10, config, runtime)


def test_generation_leaves_the_training_weights_untouched(tmp_path, runtime, trained_steps):
    """LoRA is merged into the inference copy only: the actor's own (adapter and base) weights
    come out of a generation phase bit for bit as they went in."""
    config = ppo_config(tmp_path, trained_steps, actor_model__zero_stage=3, actor_model__lora__dim=4)
    tokenizer = load_tokenizer(str(trained_steps / "sft"))
    engine = RLHFEngine(str(trained_steps / "sft"), str(trained_steps / "reward"), tokenizer, 10, config, runtime)
    module = engine.actor.engine.module
    _perturb(module, zero3=True)
    before = {name: p.ds_tensor.clone() for name, p in module.named_parameters()}
    prompts = collate_prompts(step_examples(config, "ppo", tokenizer).train[:8], tokenizer.pad_token_id)
    engine.generation.generate(prompts["input_ids"], prompts["attention_mask"])
    assert all(torch.equal(before[name], p.ds_tensor) for name, p in module.named_parameters())


@pytest.mark.parametrize("free_bytes,copies", [(1, False), (10**12, True)], ids=["no-room", "room"])
def test_the_hybrid_engine_makes_its_inference_copy_only_where_it_fits(tmp_path, runtime, trained_steps, monkeypatch,
                                                                         free_bytes, copies):
    """'auto' weighs the copy and its KV cache against free memory; without room it decodes on the
    sharded training module (ZeRO-3 gathering per layer) and gives the same answers."""
    from kuberlhf_trainer import hybrid_engine

    monkeypatch.setattr(hybrid_engine, "free_memory_bytes", lambda device: free_bytes)
    gathered = []  # elements per ZeRO-3 gather while filling the copy
    gather = hybrid_engine._gathered
    monkeypatch.setattr(hybrid_engine, "_gathered", lambda params: (gathered.append(sum(p.ds_numel for p in params)),
                                                                    gather(params))[1])
    monkeypatch.setattr(hybrid_engine, "ZERO3_MAX_LIVE_PARAMETERS", 20_000)
    config = ppo_config(tmp_path, trained_steps, actor_model__zero_stage=3, actor_model__lora__dim=4)
    tokenizer = load_tokenizer(str(trained_steps / "sft"))
    engine = RLHFEngine(str(trained_steps / "sft"), str(trained_steps / "reward"), tokenizer, 10, config, runtime)
    _perturb(engine.actor.engine.module, zero3=True)
    prompts = collate_prompts(step_examples(config, "ppo", tokenizer).train[:8], tokenizer.pad_token_id)
    ours = engine.generation.generate(prompts["input_ids"], prompts["attention_mask"], greedy=True)
    theirs = plain_generation(engine, config, runtime).generate(prompts["input_ids"], prompts["attention_mask"], greedy=True)

    assert torch.equal(ours.sequences, theirs.sequences)
    assert engine.generation.uses_copy is copies and (engine.generation._copy is not None) is copies
    if copies:  # filled a bounded share at a time, not the whole model at once
        whole = sum(p.ds_numel for p in engine.actor.engine.module.parameters())
        assert len(gathered) > 1 and max(gathered) <= 20_000 < whole
