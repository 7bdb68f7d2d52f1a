"""Small, fast training configurations for tests: tiny built-in models, little data, few steps.

Everything is local: the built-in sorting task or the real HH-RLHF sample in ../shared/data,
the character-level built-in tokenizer, models built from configs. No downloads.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from kuberlhf_trainer.config import RunConfig, apply_overrides, build_config

REPO = Path(__file__).resolve().parents[2]
HH_SAMPLE = REPO.parent / "shared" / "data" / "hh-rlhf-harmless-test-1000.jsonl"


def tiny_config(output_dir: Path, data: str = "sort", **overrides: Any) -> RunConfig:
    """A run that trains every step for a handful of optimizer steps on the CPU.

    `data`: "sort" (the built-in task, 400 prompts) or "hh" (200 records of the HH sample).
    `overrides`: dotted fields with "." written as "__", e.g. sft__max_steps=3.
    """
    datasets = {"sort": ["builtin:sort"], "hh": [f"hh:{HH_SAMPLE}"]}[data]
    seq_len = 64 if data == "sort" else 256
    base: dict = {
        "actor_model": {"name_or_path": "builtin:llama-tiny"},
        "reward_model": {"name_or_path": "builtin:llama-tiny"},
        "data": {"datasets": datasets, "max_samples_per_dataset": 200, "synthetic": {"num_examples": 400}},
        "sft": {"per_device_train_batch_size": 8, "max_seq_len": seq_len, "max_steps": 6, "eval_iters": 2,
                "learning_rate": 3e-3, "num_warmup_steps": 0},
        "reward": {"per_device_train_batch_size": 8, "max_seq_len": seq_len, "max_steps": 6, "eval_iters": 2},
        "ppo": {"per_device_generation_batch_size": 4, "per_device_training_batch_size": 4, "max_steps": 3,
                "max_prompt_seq_len": seq_len, "max_answer_seq_len": 8, "eval_prompts": 8, "num_warmup_steps": 0},
        "output_dir": str(output_dir),
        "device": "cpu",
    }
    apply_overrides(base, {key.replace("__", "."): value for key, value in overrides.items()})
    return build_config(base)


def train_sft_and_reward(root: Path, runtime, reward_max_steps: int) -> Path:
    """Tiny SFT and reward-model checkpoints under `root`, to start PPO from."""
    from kuberlhf_trainer.steps import run_step

    config = tiny_config(root, sft__max_steps=30, reward__max_steps=reward_max_steps)
    run_step("sft", config, runtime)
    run_step("reward", config, runtime)
    return root


def ppo_config(output_dir: Path, trained_steps: Path, **overrides: Any) -> RunConfig:
    """A tiny run whose PPO starts from the checkpoints `train_sft_and_reward` made."""
    return tiny_config(output_dir, ppo__actor_checkpoint=str(trained_steps / "sft"),
                       ppo__reward_checkpoint=str(trained_steps / "reward"), **overrides)


def plain_generation(engine, config: RunConfig, runtime):
    """Plain `generate` (engine 'hf') on an RLHFEngine's actor, with the run's settings: the
    baseline the other engines' answers are compared with."""
    from kuberlhf_trainer.hybrid_engine import HFGeneration

    ppo = config.ppo
    return HFGeneration(engine.actor.engine, ppo.generation, ppo.max_prompt_seq_len, ppo.max_answer_seq_len,
                        engine.tokenizer, config.actor_model.zero_stage == 3, runtime.world_size)


def saved_model_dir(directory: Path) -> str:
    """A tiny model saved as a local directory: to the trainer, the same as a hub model."""
    from transformers import AutoModelForCausalLM

    from kuberlhf_trainer.models import builtin_config, char_tokenizer

    tokenizer = char_tokenizer()
    AutoModelForCausalLM.from_config(builtin_config("builtin:llama-tiny", len(tokenizer), tokenizer)).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return str(directory)


def trainable_engine(settings, runtime, accumulation: int = 1):
    """A DeepSpeed engine training `settings`' model in this process, micro-batches of 4."""
    import torch

    from kuberlhf_trainer import engine as ds
    from kuberlhf_trainer.models import load_causal_lm, load_tokenizer
    from kuberlhf_trainer.steps.common import make_trainable

    tokenizer = load_tokenizer(settings.name_or_path)
    model = load_causal_lm(settings, tokenizer, "actor_model")
    ds_config = ds.deepspeed_config(settings, 4, accumulation, runtime.world_size, torch.float32)
    return make_trainable(model, settings, ds_config, 1e-3, 0.0, (0.9, 0.95), ("constant", 0, 100), runtime).engine


def cli_env() -> dict[str, str]:
    """The environment for a `kuberlhf` subprocess: CPU, and not this process's own distributed
    rendezvous (a test may have joined a one-process group, which sets RANK, MASTER_PORT ...)."""
    rendezvous = {"RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"}
    return {k: v for k, v in os.environ.items() if k not in rendezvous} | {"DS_ACCELERATOR": "cpu", "PYTHONUNBUFFERED": "1"}


def run_cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """`kuberlhf <args>` in a fresh process, the way users and pods run it."""
    return subprocess.run([sys.executable, "-m", "kuberlhf_trainer", *args], capture_output=True, text=True,
                          timeout=timeout, env=cli_env())
