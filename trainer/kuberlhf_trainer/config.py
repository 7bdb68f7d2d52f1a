"""The training-run schema: the one contract between the CLI, the trainer and the RLHFJob CRD.

Every field has a type, a default and a one-line description. The descriptions become
`kuberlhf train --help`, the configuration reference in docs/ and the CRD's `kubectl explain`
text, so they are written for users. Defaults follow DeepSpeed-Chat's scripts where those are
sound (noted "DeepSpeed-Chat:" where we differ on purpose).

This module imports only pydantic and yaml: the operator's CRD generator reads it without torch.
It is longer than the house limit of 400 lines on purpose: it is the whole schema, most of it
field descriptions, and one file is what the CRD, the flags and the docs are generated from.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

STEP_NAMES = ("sft", "reward", "ppo")
"""The three steps of the InstructGPT recipe, in order. Step k's outputs live in <output_dir>/<name>."""


class ConfigError(ValueError):
    """A configuration problem, worded for the user: it names the field (and file) at fault."""


class _Section(BaseModel):
    # Unknown fields are errors, not silently ignored: a typo must not train the wrong thing.
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------


class LoraSettings(_Section):
    """Low-rank adapters through `peft`. `dim: 0` turns LoRA off."""

    dim: int = Field(0, ge=0, description="LoRA rank r; 0 disables LoRA.")
    alpha: Optional[float] = Field(
        None, gt=0, description="LoRA alpha (scaling = alpha / dim); unset means alpha = dim, i.e. scaling 1."
    )
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the LoRA branch.")
    target_modules: list[str] = Field(
        default_factory=list,
        description="Module names (or suffixes) to adapt; empty means every linear layer of the decoder "
        "(peft's 'all-linear'), which works for any architecture.",
    )
    only_optimize: bool = Field(
        False, description="Train only the LoRA weights (and a reward/value head); freeze everything else."
    )
    learning_rate: float = Field(5e-4, gt=0, description="Learning rate of the LoRA parameters.")
    merge_on_save: bool = Field(
        True,
        description="Merge the adapters into the weights when saving, so the checkpoint is a plain HF model; false "
        "saves only the adapters in peft's format, naming the base model (needs only_optimize, and a base that is "
        "not built-in); later steps and chat merge them on loading.",
    )

    @property
    def enabled(self) -> bool:
        return self.dim > 0


class ModelSettings(_Section):
    """A model and how DeepSpeed holds it while it trains."""

    name_or_path: str = Field(
        ..., min_length=1, description="Hugging Face hub name, local directory, or 'builtin:<size>' for a tiny model built from a config."
    )
    tokenizer: Optional[str] = Field(
        None, description="Tokenizer (hub name, local directory or 'builtin:char'); unset means the model's own."
    )
    zero_stage: int = Field(0, ge=0, le=3, description="DeepSpeed ZeRO stage (0-3).")
    offload: bool = Field(False, description="Offload optimizer state (and, under ZeRO-3, parameters) to CPU memory.")
    gradient_checkpointing: bool = Field(False, description="Recompute activations in the backward pass to save memory.")
    dropout: Optional[float] = Field(
        None, ge=0, lt=1, description="Override every dropout probability in the model config; unset keeps the model's."
    )
    lora: LoraSettings = Field(default_factory=LoraSettings, description="LoRA adapters.")

    @model_validator(mode="after")
    def _check_combinations(self) -> "ModelSettings":
        if self.offload and self.zero_stage == 0:
            raise ValueError("offload needs zero_stage >= 1 (DeepSpeed offloads ZeRO-partitioned state)")
        if self.lora.only_optimize and not self.lora.enabled:
            raise ValueError("lora.only_optimize needs lora.dim > 0")
        if self.lora.enabled and not self.lora.merge_on_save:
            # An adapter output is the adapters alone, loaded onto the base model again later.
            if not self.lora.only_optimize:
                raise ValueError("lora.merge_on_save false saves only the adapters, but lora.only_optimize false trains "
                                 "the rest of the model too, which would be lost: set lora.only_optimize true, or "
                                 "merge_on_save true")
            if self.name_or_path.startswith("builtin:"):
                raise ValueError("lora.merge_on_save false saves adapters for their base model to be loaded from, but a "
                                 "built-in model is random weights built from a config: set merge_on_save true")
        return self


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


class SyntheticTaskSettings(_Section):
    """The built-in sorting task ('builtin:sort'): sort a string of digits. It has a ground-truth score."""

    num_examples: int = Field(4000, ge=10, description="How many distinct prompts to generate.")
    min_digits: int = Field(3, ge=2, description="Shortest digit string.")
    max_digits: int = Field(6, ge=2, le=32, description="Longest digit string.")

    @model_validator(mode="after")
    def _check_range(self) -> "SyntheticTaskSettings":
        if self.min_digits > self.max_digits:
            raise ValueError("min_digits must be <= max_digits")
        return self


class DataSettings(_Section):
    """Which datasets feed the three steps, and how they are split between them."""

    datasets: list[str] = Field(
        default_factory=lambda: ["Dahoas/rm-static"],
        min_length=1,
        description="Datasets blended for all steps: a supported hub name (e.g. Dahoas/rm-static), a local "
        "JSON/JSONL file or directory, 'builtin:sort', or '<format>:<path>' to read a local copy in a "
        "named format (e.g. 'Dahoas/full-hh-rlhf:/data/hh' or 'hh:./pairs.jsonl').",
    )
    data_split: str = Field(
        "2,4,4",
        description="Relative shares of the data for steps sft,reward,ppo, e.g. '2,4,4'. Each prompt lands in "
        "exactly one step.",
    )
    sft_only_datasets: list[str] = Field(
        default_factory=list, description="Datasets used whole for SFT only (single responses, no pairs)."
    )
    max_samples_per_dataset: Optional[int] = Field(
        None, ge=1, description="Use at most this many records of each dataset (after shuffling); unset uses all."
    )
    cache_dir: Optional[str] = Field(
        None, description="Where tokenized data is cached; unset means <output_dir>/.data-cache."
    )
    synthetic: SyntheticTaskSettings = Field(
        default_factory=SyntheticTaskSettings, description="Settings of the built-in sorting task."
    )

    @field_validator("data_split")
    @classmethod
    def _check_split(cls, value: str) -> str:
        parse_data_split(value)
        return value

    @property
    def split_shares(self) -> tuple[float, float, float]:
        return parse_data_split(self.data_split)


def parse_data_split(value: str) -> tuple[float, float, float]:
    """'2,4,4' -> (0.2, 0.4, 0.4). Three non-negative numbers with a positive sum."""
    parts = [p.strip() for p in str(value).split(",")]
    if len(parts) != 3:
        raise ValueError(f"needs three comma-separated numbers (sft,reward,ppo), got {value!r}")
    try:
        numbers = [float(p) for p in parts]
    except ValueError:
        raise ValueError(f"needs numbers, got {value!r}") from None
    if any(n < 0 for n in numbers) or sum(numbers) <= 0:
        raise ValueError(f"needs non-negative numbers with a positive sum, got {value!r}")
    total = sum(numbers)
    return (numbers[0] / total, numbers[1] / total, numbers[2] / total)


# --------------------------------------------------------------------------------------------
# Per-step hyperparameters
# --------------------------------------------------------------------------------------------

SchedulerName = Literal["linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup"]


class _Optimizer(_Section):
    """AdamW and gradient clipping, the same for every trained model."""

    adam_beta1: float = Field(0.9, gt=0, lt=1, description="AdamW beta1.")
    adam_beta2: float = Field(0.95, gt=0, lt=1, description="AdamW beta2 (DeepSpeed-Chat uses 0.95).")
    gradient_clipping: float = Field(1.0, ge=0, description="Clip the global gradient norm to this; 0 disables.")


class _TrainingLoop(_Optimizer):
    """What every step's optimisation loop takes."""

    per_device_train_batch_size: int = Field(16, ge=1, description="Micro-batch size per process.")
    per_device_eval_batch_size: int = Field(16, ge=1, description="Evaluation batch size per process.")
    gradient_accumulation_steps: int = Field(1, ge=1, description="Micro-batches per optimizer step.")
    num_train_epochs: int = Field(1, ge=1, description="Passes over the step's training split.")
    learning_rate: float = Field(9.65e-6, gt=0, description="Peak learning rate of the non-LoRA parameters.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    lr_scheduler_type: SchedulerName = Field("cosine", description="Learning-rate schedule after warmup.")
    num_warmup_steps: int = Field(0, ge=0, description="Linear warmup, in optimizer steps.")
    max_seq_len: int = Field(512, ge=8, description="Longest tokenized sequence (prompt + answer); longer ones are truncated.")
    max_steps: Optional[int] = Field(
        None, ge=1, description="Stop after this many optimizer steps (a budget for quick runs); unset runs all epochs."
    )
    eval_interval: int = Field(0, ge=0, description="Evaluate every N optimizer steps; 0 evaluates before and after only.")
    eval_iters: int = Field(100, ge=1, description="At most this many evaluation batches per evaluation.")


class SFTSettings(_TrainingLoop):
    """Step 1: supervised fine-tuning of the actor on prompt + chosen answer."""

    mask_prompt_loss: bool = Field(
        False,
        description="Train only on answer tokens. DeepSpeed-Chat trains on the prompt tokens too (false).",
    )


class RewardSettings(_TrainingLoop):
    """Step 2: the reward model, a causal-LM backbone with a scalar head trained on preference pairs."""

    learning_rate: float = Field(5e-5, gt=0, description="Peak learning rate of the non-LoRA parameters.")
    weight_decay: float = Field(0.1, ge=0, description="AdamW weight decay.")
    loss: Literal["end", "tokenwise"] = Field(
        "end",
        description="'end': pairwise ranking loss on the score at the end of each answer (InstructGPT). "
        "'tokenwise': DeepSpeed-Chat's loss over every token of the divergent span.",
    )
    init_from_sft: bool = Field(
        False,
        description="Start the reward model's backbone from the step-1 checkpoint, as InstructGPT does, instead of "
        "reward_model.name_or_path (whose other settings still apply).",
    )
    policy_samples: int = Field(
        0,
        ge=0,
        description="On tasks with a ground-truth scorer (builtin:sort): sample this many answers per prompt from "
        "the SFT model and add (right, wrong) pairs ranked by the scorer, as InstructGPT's labellers rank the SFT "
        "model's own outputs; 0 disables.",
    )
    policy_sample_temperature: float = Field(1.0, gt=0, description="Sampling temperature for policy_samples.")


class AdaptiveKLSettings(_Section):
    """Adaptive KL controller of Ziegler et al. (arXiv 1909.08593): steer the KL toward a target."""

    enabled: bool = Field(False, description="Adapt the KL coefficient; off keeps ppo.kl_coef fixed.")
    target: float = Field(6.0, gt=0, description="Target KL to the reference, in nats per sequence.")
    horizon: int = Field(10000, ge=1, description="Horizon of the controller, in sequences.")


class EMASettings(_Section):
    """Exponential moving average of the actor's weights (InstructGPT, DeepSpeed-Chat --enable_ema)."""

    enabled: bool = Field(False, description="Keep and save an EMA copy of the actor (saved as ppo/actor_ema).")
    beta: float = Field(0.992, gt=0, lt=1, description="EMA decay per optimizer step.")


class PTXSettings(_Section):
    """Mixing in the pretraining objective during PPO (InstructGPT's PPO-ptx)."""

    dataset: Optional[str] = Field(
        None, description="Pretraining text dataset (hub name or local file); unset disables ptx."
    )
    dataset_config: Optional[str] = Field(None, description="Hub config name of the pretraining dataset.")
    coef: float = Field(27.8, ge=0, description="Weight of the pretraining loss (gamma in InstructGPT eq. 2).")


class GenerationSettings(_Section):
    """How the actor generates answers during PPO."""

    engine: Literal["hybrid", "hf", "deepspeed"] = Field(
        "hybrid",
        description="'hybrid': our hybrid engine (gather once, merged LoRA, KV cache); 'hf': plain generate; "
        "'deepspeed': DeepSpeed's own hybrid engine (CUDA only).",
    )
    decoding: Literal["auto", "compiled", "eager"] = Field(
        "auto",
        description="Engine 'hybrid': 'compiled' decodes with a static KV cache kept between generation phases and "
        "torch.compile (CUDA graphs on GPU); 'eager' with a KV cache that grows per token, nothing compiled; 'auto' "
        "is 'compiled' on CUDA and 'eager' elsewhere (on CPU compiling costs more than it saves). Engine 'deepspeed': "
        "anything but 'eager' turns on its CUDA-graph decoding (hybrid_engine.enable_cuda_graph).",
    )
    do_sample: bool = Field(True, description="Sample answers; false decodes greedily.")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling probability mass.")
    top_k: int = Field(0, ge=0, description="Sample from the k most likely tokens; 0 disables.")
    inference_tp_size: int = Field(1, ge=1, description="Tensor-parallel size for DeepSpeed's hybrid engine.")
    tp_gather_partition_size: int = Field(8, ge=1, description="DeepSpeed hybrid engine: gather partition size.")
    release_inference_cache: bool = Field(
        False,
        description="Free the inference copy and KV cache after each generation phase (engines 'hybrid' and "
        "'deepspeed'): less memory while training, but a new allocation per phase (and, with compiled decoding, "
        "compiling again).",
    )
    pin_parameters: bool = Field(True, description="DeepSpeed hybrid engine: pin gathered parameters in memory.")
    inference_copy: Literal["auto", "on", "off"] = Field(
        "auto",
        description="Engine 'hybrid' under ZeRO-3 or LoRA: 'on' decodes from a whole copy of the actor (LoRA merged; "
        "one more copy of its weights per process); 'off' decodes on the training module itself, ZeRO-3 gathering "
        "each layer per token (slower, memory bounded by the ZeRO-3 live-parameter limit); 'auto' makes the copy "
        "when the device has room for it and its KV cache, else decodes without one (the log says which and why).",
    )


class PPOSettings(_Optimizer):
    """Step 3: PPO of the actor against the frozen reward model, with a KL penalty to the SFT model."""

    actor_checkpoint: Optional[str] = Field(
        None, description="Starting actor (and frozen reference); unset means <output_dir>/sft."
    )
    reward_checkpoint: Optional[str] = Field(
        None, description="Frozen reward model (and the critic's start); unset means <output_dir>/reward."
    )
    per_device_generation_batch_size: int = Field(16, ge=1, description="Prompts per process per generation batch.")
    per_device_training_batch_size: int = Field(16, ge=1, description="Sequences per process per PPO micro-batch.")
    generation_batches: int = Field(1, ge=1, description="Generation batches collected before each PPO update.")
    ppo_epochs: int = Field(1, ge=1, description="Passes of PPO over each batch of experience.")
    gradient_accumulation_steps: int = Field(1, ge=1, description="Micro-batches per optimizer step.")
    num_train_epochs: int = Field(1, ge=1, description="Passes over the PPO prompts.")
    max_steps: Optional[int] = Field(None, ge=1, description="Stop after this many PPO iterations; unset runs all epochs.")
    max_prompt_seq_len: int = Field(256, ge=2, description="Longest prompt in tokens; longer prompts are skipped.")
    max_answer_seq_len: int = Field(256, ge=1, description="Most tokens generated per answer.")
    actor_learning_rate: float = Field(9.65e-6, gt=0, description="Actor learning rate (non-LoRA parameters).")
    critic_learning_rate: float = Field(5e-6, gt=0, description="Critic learning rate (non-LoRA parameters).")
    actor_weight_decay: float = Field(0.0, ge=0, description="Actor AdamW weight decay.")
    critic_weight_decay: float = Field(0.0, ge=0, description="Critic AdamW weight decay.")
    lr_scheduler_type: SchedulerName = Field("cosine", description="Learning-rate schedule after warmup.")
    num_warmup_steps: int = Field(100, ge=0, description="Linear warmup, in optimizer steps.")
    kl_coef: float = Field(0.1, ge=0, description="Per-token KL penalty coefficient (initial value if adaptive).")
    adaptive_kl: AdaptiveKLSettings = Field(default_factory=AdaptiveKLSettings, description="Adaptive KL controller.")
    clip_reward_value: float = Field(5.0, gt=0, description="Clip the reward model's score to [-v, v].")
    cliprange: float = Field(0.2, gt=0, description="PPO policy ratio clip epsilon.")
    cliprange_value: float = Field(0.2, gt=0, description="PPO value clip range around the old values.")
    gamma: float = Field(1.0, ge=0, le=1, description="Discount factor.")
    lam: float = Field(0.95, ge=0, le=1, description="GAE lambda.")
    whiten_advantages: bool = Field(
        True, description="Normalise advantages to zero mean, unit variance per batch. DeepSpeed-Chat does not."
    )
    samples_per_prompt: int = Field(
        1, ge=1, description="Answers sampled per prompt in each generation batch (more gives a per-prompt baseline)."
    )
    center_rewards_per_prompt: bool = Field(
        False,
        description="Subtract the mean reward-model score of each prompt's answers from its scores (needs "
        "samples_per_prompt > 1): the policy learns which of its answers are better, not which prompts are easy.",
    )
    critic_head_scale: float = Field(
        1.0,
        ge=0,
        description="Multiply the critic's value head (copied from the reward model) by this at the start: the reward "
        "model's raw scale rarely matches the shaped, centred rewards the critic must predict; 0 starts it at zero.",
    )
    entropy_coef: float = Field(0.0, ge=0, description="Weight of the entropy bonus in the actor loss.")
    critic_warmup_iterations: int = Field(
        0, ge=0, description="Train only the critic for this many iterations before the actor starts moving."
    )
    offload_reference_model: bool = Field(False, description="Keep the frozen reference model in CPU memory.")
    offload_reward_model: bool = Field(False, description="Keep the frozen reward model in CPU memory.")
    eval_interval: int = Field(0, ge=0, description="Evaluate on held-out prompts every N iterations; 0: before and after only.")
    eval_prompts: int = Field(64, ge=1, description="Held-out prompts per evaluation.")
    generation: GenerationSettings = Field(default_factory=GenerationSettings, description="Answer generation.")
    ema: EMASettings = Field(default_factory=EMASettings, description="EMA of the actor.")
    ptx: PTXSettings = Field(default_factory=PTXSettings, description="Pretraining-mix objective.")

    @property
    def micro_batches_per_iteration(self) -> int:
        """PPO micro-batches per process in one iteration: ppo_epochs passes over its sequences. When
        gradient_accumulation_steps does not divide it, an optimizer step spans iterations, as in
        DeepSpeed-Chat (e.g. its single-GPU OPT-1.3B recipe: one micro-batch per iteration, GAS 2)."""
        sequences = self.per_device_generation_batch_size * self.generation_batches * self.samples_per_prompt
        return self.ppo_epochs * -(-sequences // self.per_device_training_batch_size)


class CheckpointSettings(_Section):
    """Checkpoints inside a step, so a preempted or crashed step resumes where it stopped."""

    interval_steps: int = Field(
        0, ge=0, description="Save every N optimizer steps (PPO: iterations); 0 saves by time only."
    )
    interval_minutes: float = Field(
        30.0, ge=0, description="Save when this many minutes passed since the last save; 0 saves by steps only."
    )
    keep_last: int = Field(2, ge=1, description="Complete checkpoints kept; older ones go once a newer one is complete.")
    resume: bool = Field(True, description="Resume a step from its latest complete checkpoint when one is there.")


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------


class RunConfig(_Section):
    """One RLHF training run: models, data and the three steps."""

    actor_model: ModelSettings = Field(
        default_factory=lambda: ModelSettings(name_or_path="facebook/opt-1.3b", zero_stage=2),
        description="The policy: fine-tuned in step 1 (SFT), optimised in step 3 (PPO).",
    )
    reward_model: ModelSettings = Field(
        default_factory=lambda: ModelSettings(name_or_path="facebook/opt-350m", zero_stage=0),
        description="The reward model's backbone, trained in step 2; its settings also hold the critic in step 3.",
    )
    data: DataSettings = Field(default_factory=DataSettings, description="Datasets and their split between steps.")
    sft: SFTSettings = Field(default_factory=SFTSettings, description="Step 1: supervised fine-tuning.")
    reward: RewardSettings = Field(default_factory=RewardSettings, description="Step 2: reward model training.")
    ppo: PPOSettings = Field(default_factory=PPOSettings, description="Step 3: RLHF with PPO.")
    checkpoint: CheckpointSettings = Field(
        default_factory=CheckpointSettings, description="Checkpoints inside each step (preemption, crashes)."
    )
    steps: list[Literal["sft", "reward", "ppo"]] = Field(
        default_factory=lambda: list(STEP_NAMES), min_length=1, description="Which steps to run, in order."
    )
    seed: int = Field(1234, ge=0, description="Seed for data splits, shuffling, initialisation and sampling.")
    output_dir: str = Field("./output", min_length=1, description="Where checkpoints and summaries go: <output_dir>/<step>/.")
    dtype: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="Training precision; 'auto' is bf16 on GPUs that support it, fp16 on older GPUs, fp32 on CPU."
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Where to train; 'auto' uses CUDA when present.")
    deployment_type: Literal["single_gpu", "single_node", "multi_node"] = Field(
        "single_gpu",
        description="As DeepSpeed-Chat: one process, one process per local device, or several nodes (a hostfile).",
    )
    nproc_per_node: Optional[int] = Field(
        None, ge=1, description="Processes per node; unset means 1 for single_gpu, else one per GPU (2 on CPU)."
    )
    hostfile: Optional[str] = Field(
        None, description="DeepSpeed hostfile for multi_node runs outside Kubernetes (the operator uses torchrun's env)."
    )
    metrics_port: int = Field(
        0, ge=0, le=65535, description="Serve Prometheus metrics on this port during training; 0 disables."
    )
    metrics_linger_seconds: float = Field(
        0.0,
        ge=0,
        description="After a step ends, keep serving its final metrics this long, so a scrape sees the step "
        "complete (the operator sets two scrape intervals).",
    )

    @field_validator("steps")
    @classmethod
    def _steps_in_order(cls, steps: list[str]) -> list[str]:
        if len(set(steps)) != len(steps):
            raise ValueError("a step is listed twice")
        if steps != sorted(steps, key=STEP_NAMES.index):
            raise ValueError(f"steps must be in pipeline order {list(STEP_NAMES)}")
        return steps

    @model_validator(mode="after")
    def _check_run(self) -> "RunConfig":
        shares = self.data.split_shares
        for index, step in enumerate(STEP_NAMES):
            needs_data = step in self.steps and shares[index] == 0
            if needs_data and not (step == "sft" and self.data.sft_only_datasets):
                raise ValueError(f"data.data_split gives step '{step}' no data, but steps includes it")
        if "ppo" in self.steps and self.ppo.generation.engine == "deepspeed":
            if self.device == "cpu":
                raise ValueError("ppo.generation.engine 'deepspeed' needs CUDA (DeepSpeed's inference kernels), "
                                 "but device is 'cpu'; use engine 'hybrid'")
            if self.actor_model.lora.dim > 0:
                raise ValueError("ppo.generation.engine 'deepspeed' would generate without the actor's LoRA adapters "
                                 "(DeepSpeed's hybrid engine fuses only DeepSpeed-Chat's own LoRA layers, not peft's); "
                                 "use engine 'hybrid', which merges them, or actor_model.lora.dim 0")
        if self.ppo.generation.inference_tp_size > 1 and self.actor_model.zero_stage != 3:
            raise ValueError("ppo.generation.inference_tp_size > 1 needs actor_model.zero_stage 3")
        if self.ppo.center_rewards_per_prompt and self.ppo.samples_per_prompt < 2:
            raise ValueError("ppo.center_rewards_per_prompt needs ppo.samples_per_prompt >= 2")
        if self.deployment_type == "single_gpu" and (self.nproc_per_node or 1) > 1:
            raise ValueError("deployment_type single_gpu runs one process; set single_node for nproc_per_node > 1")
        return self

    # -- derived paths: computed here, in one place --------------------------------------------

    def step_dir(self, step: str) -> Path:
        return Path(self.output_dir) / step

    @property
    def data_cache_dir(self) -> Path:
        return Path(self.data.cache_dir) if self.data.cache_dir else Path(self.output_dir) / ".data-cache"

    @property
    def ppo_actor_start(self) -> str:
        return self.ppo.actor_checkpoint or str(self.step_dir("sft"))

    @property
    def ppo_reward_start(self) -> str:
        return self.ppo.reward_checkpoint or str(self.step_dir("reward"))

    def fingerprint(self, *sections: str) -> str:
        """A short hash of the named sections (all when none): tells whether a step's output is stale."""
        data = self.model_dump(mode="json")
        if sections:
            data = {name: data[name] for name in sections}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------------------------
# Loading, overriding, errors
# --------------------------------------------------------------------------------------------


def format_validation_error(error: ValidationError, source: str | None = None) -> str:
    """One line per problem, each naming the dotted field path: 'sft.learning_rate: ...'."""
    where = f" in {source}" if source else ""
    lines = [f"invalid configuration{where}:"]
    for item in error.errors():
        path = ".".join(str(p) for p in item["loc"]) or "(top level)"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown field (check the spelling; `kuberlhf train --help` lists every field)"
        elif "input" in item and not isinstance(item["input"], (dict, list)) and repr(item["input"]) not in message:
            message += f" (got {item['input']!r})"
        lines.append(f"  {path}: {message}")
    return "\n".join(lines)


def build_config(data: dict[str, Any], source: str | None = None) -> RunConfig:
    """Validate a plain mapping into a RunConfig, or raise ConfigError naming every bad field."""
    try:
        return RunConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(format_validation_error(error, source)) from None


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; a syntax error names the file and line."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: not valid YAML: {getattr(error, 'problem', error)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of fields, got {type(data).__name__}")
    return data


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Load a YAML config file and apply dotted overrides such as {'sft.learning_rate': 1e-4}."""
    data = read_yaml(path)
    apply_overrides(data, overrides or {})
    return build_config(data, source=str(path))


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Set dotted keys in a nested mapping in place: {'ppo.ema.enabled': True}."""
    for dotted, value in overrides.items():
        node = data
        *parents, leaf = dotted.split(".")
        for key in parents:
            child = node.get(key)
            if child is None:  # absent, or an empty section in YAML ("sft:" with nothing under it)
                child = node[key] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"{dotted}: '{key}' is not a section")
            node = child
        node[leaf] = value
    # A flag for one setting of a model (`--actor-zero-stage 3`, `--reward_model.lora.dim 8`) keeps
    # the run's default model instead of failing with "name_or_path: Field required".
    for role in ("actor_model", "reward_model"):
        section = data.get(role)
        if isinstance(section, dict) and "name_or_path" not in section and any(k.startswith(f"{role}.") for k in overrides):
            section["name_or_path"] = RunConfig.model_fields[role].get_default(call_default_factory=True).name_or_path
    return data


def dump_config(config: RunConfig) -> str:
    """The resolved config as YAML, written beside every run so it can be reproduced."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


def json_schema() -> dict[str, Any]:
    """JSON schema of RunConfig (the CRD's spec.config is generated from it)."""
    return RunConfig.model_json_schema()
