"""What the three steps share: data loaders, building a trainable DeepSpeed model, saving it,
and the progress line."""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch
from torch.utils.data import DataLoader

from .. import checkpoint, engine as ds
from ..config import ModelSettings, RunConfig
from ..data.sampler import ResumableSampler
from ..engine import Runtime
from ..metrics import TrainingMetrics
from ..resume import Checkpointer, StepClock, StopSignal, saved_world_size
from ..lora_checkpoints import base_reference
from ..models import apply_lora, is_lora_model
from ..value_model import ValueModel, save_value_model


@dataclass
class StepContext:
    """What a step function gets: the run, where it runs, where it writes, what it reports."""

    config: RunConfig
    runtime: Runtime
    out_dir: Path  # the staging directory the step writes its outputs into
    metrics: TrainingMetrics
    step_dir: Path  # where the outputs end up (its checkpoints live beside it)
    fingerprint: str  # of the configuration the step's result depends on
    stop: Optional[StopSignal] = None
    clock: StepClock = field(default_factory=StepClock)  # the step's seconds, over every attempt

    @property
    def load_universal(self) -> bool:
        """Whether the checkpoint to resume from was written by another number of processes."""
        saved = saved_world_size(self.config.checkpoint, self.step_dir, self.fingerprint)
        return saved is not None and saved != self.runtime.world_size

    def deepspeed_config(self, model: ModelSettings, loop) -> dict:
        """DeepSpeed's config for training `model` with the step's loop settings (steps 1, 2)."""
        return ds.deepspeed_config(
            model, loop.per_device_train_batch_size, loop.gradient_accumulation_steps, self.runtime.world_size,
            ds.resolve_dtype(self.config.dtype, self.runtime), loop.gradient_clipping, load_universal=self.load_universal,
        )

    def checkpointer(self, engines: dict) -> Checkpointer:
        return Checkpointer(self.config.checkpoint, self.step_dir, engines, self.runtime, self.fingerprint, self.stop,
                            self.clock)


class StepInputError(RuntimeError):
    """A step cannot start: its data or an earlier step's output is missing."""


class NonFiniteLossError(RuntimeError):
    """Training diverged: a loss became NaN or infinite. Nothing is published, no checkpoint
    is written from the bad state, and the last good checkpoint stays where it is."""


def check_finite(loss: torch.Tensor, what: str, step: int) -> None:
    """Stop before a NaN/inf loss reaches the weights (checked before backward)."""
    if not torch.isfinite(loss).all():
        raise NonFiniteLossError(
            f"{what} became {loss.item()} at optimizer step {step}: training diverged. The last complete "
            "checkpoint is kept; lower the learning rate, check the data, or use fp32/bf16 instead of fp16."
        )


def make_loader(examples: list, batch_size: int, collate: Callable, pad_id: int, runtime: Runtime, shuffle: bool, seed: int):
    """A loader that gives each process its own share (the same number of batches on every
    process, which ZeRO-3's collective parameter gathering needs), resumable mid-epoch."""
    sampler = ResumableSampler(len(examples), runtime.world_size, runtime.rank, shuffle, seed)
    # Its own generator: starting an iterator draws a seed, and drawing it from the global RNG
    # would make sampling after a resume differ from an uninterrupted run.
    return DataLoader(examples, batch_size=batch_size, sampler=sampler, collate_fn=functools.partial(collate, pad_id=pad_id),
                      generator=torch.Generator().manual_seed(seed))


def planned_steps(step: str, loader, loop) -> int:
    """The optimizer steps of step 1 or 2 (what the learning-rate schedule spans); at least one."""
    gas = loop.gradient_accumulation_steps
    total = ds.optimizer_steps(len(loader), gas, loop.num_train_epochs, loop.max_steps)
    if total < 1:
        raise StepInputError(
            f"{step}: {len(loader)} micro-batches per process x {loop.num_train_epochs} epochs make no optimizer step "
            f"at {step}.gradient_accumulation_steps {gas}; lower it or {step}.per_device_train_batch_size, or add data"
        )
    return total


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in batch.items()}


@dataclass
class TrainableModel:
    engine: object  # deepspeed.DeepSpeedEngine
    settings: ModelSettings
    ds_config: dict


def make_trainable(
    model,
    settings: ModelSettings,
    ds_config: dict,
    learning_rate: float,
    weight_decay: float,
    betas: tuple[float, float],
    scheduler: tuple[str, int, int],
    runtime: Runtime,
    keep_trainable: tuple[str, ...] = (),
) -> TrainableModel:
    """Gradient checkpointing, LoRA, optimizer, schedule (name, warmup, total) and the engine.

    The model trains in train mode: `from_pretrained` returns it in eval mode, where dropout
    (LoRA's too) and gradient checkpointing's recomputation are silently off."""
    if settings.gradient_checkpointing:
        ds.enable_gradient_checkpointing(model)
    if settings.lora.enabled:
        model = apply_lora(model, settings.lora, keep_trainable)
    model.train()
    groups = ds.parameter_groups(model, learning_rate, weight_decay, settings.lora.learning_rate)
    optimizer = ds.build_optimizer(groups, betas, settings.offload, runtime)
    name, warmup, total = scheduler
    lr_scheduler = ds.build_scheduler(optimizer, name, warmup, total)
    return TrainableModel(ds.initialize(model, ds_config, optimizer, lr_scheduler), settings, ds_config)


def save_model(trained: TrainableModel, directory: Path, build_base: Callable, runtime: Runtime) -> None:
    """Save the trained weights in Hugging Face layout, LoRA merged unless `lora.merge_on_save`
    is off (then peft's adapter format). Every process must call it: ZeRO-3 gathers
    collectively; rank 0 writes. `build_base` makes the bare model that merging rebuilds."""
    state = checkpoint.full_state_dict(trained.engine, trained.settings.zero_stage)
    if runtime.is_main:
        module = trained.engine.module
        if isinstance(module, ValueModel):
            backbone_state = {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
            backbone, backbone_state = _merged(module.backbone, backbone_state, trained.settings, build_base)
            save_value_model(backbone, state["v_head.weight"], directory, backbone_state)
        else:
            model, state = _merged(module, state, trained.settings, build_base)
            checkpoint.save_pretrained_model(model, directory, state)
    runtime.barrier()


def _merged(module, state: dict, settings: ModelSettings, build_base: Callable):
    """(model, state to save with it): the LoRA-merged plain model when merging applies; else the
    peft model, which saves its adapters in peft's format, naming the base they apply to."""
    if not is_lora_model(module):
        return module, state
    if settings.lora.merge_on_save:
        return checkpoint.merge_lora_state_dict(state, build_base, module.peft_config["default"]), None
    module.peft_config["default"].base_model_name_or_path = base_reference(settings.name_or_path)
    return module, state


def train_loop(engine, loader, loss_fn: Callable, settings, total_steps: int, runtime: Runtime, name: str,
               metrics: TrainingMetrics, evaluate: Optional[Callable[[], str]] = None,
               checkpointer: Optional[Checkpointer] = None, resume: Optional[dict] = None,
               extra_state: Optional[dict] = None) -> dict:
    """The optimisation loop of steps 1 and 2: forward (`loss_fn(batch)`), backward, and a
    DeepSpeed step that applies the update every `gradient_accumulation_steps` micro-batches.

    After every optimizer step the checkpointer may save (at its interval, or on SIGTERM, then
    raising Preempted); `resume` is the loop state of the checkpoint resumed from, and
    `extra_state` is saved with it. Returns the mean loss per optimizer step and the throughput."""
    state = resume or {"steps": 0, "epoch": 0, "consumed": 0, "losses": []}
    steps, losses = state["steps"], list(state["losses"])
    progress = Progress(total_steps, name, runtime, initial=steps)
    window, tokens, step_started = [], 0, time.perf_counter()
    for epoch in range(state["epoch"], settings.num_train_epochs):
        if steps >= total_steps:
            break
        loader.sampler.resume_at(epoch, state["consumed"] if epoch == state["epoch"] else 0)
        for batch in loader:
            batch = to_device(batch, runtime.device)
            loss = loss_fn(batch)
            check_finite(loss, f"the {name} loss", steps + 1)
            updates = optimizer_step(engine, loss)
            window.append(loss.item())
            tokens += int(batch["attention_mask"].sum()) * runtime.world_size  # estimated: this shard times ranks
            if not updates:
                continue
            steps += 1
            losses.append(sum(window) / len(window))
            metrics.training_step(steps, total_steps, losses[-1], tokens, time.perf_counter() - step_started)
            progress.update(tokens, loss=losses[-1])
            window, tokens, step_started = [], 0, time.perf_counter()
            if evaluate and settings.eval_interval and steps % settings.eval_interval == 0:
                progress.write(f"{name} step {steps}: {evaluate()}")
            if checkpointer is not None and steps < total_steps:
                position = {"steps": steps, "epoch": epoch, "consumed": loader.sampler.consumed(), "losses": losses}
                checkpointer.after_step(steps, lambda: position | (extra_state or {}))
            if steps >= total_steps:
                break
    progress.close()
    return {"steps": steps, "losses": losses, "tokens_per_second": progress.tokens_per_second}


def optimizer_step(engine, loss: torch.Tensor) -> bool:
    """Backward and DeepSpeed's step for one micro-batch; True when the optimizer updated the
    weights (every `gradient_accumulation_steps` micro-batches). Asked before `step()`: it
    advances DeepSpeed's micro-step counter, after which the answer is the next micro-batch's."""
    boundary = engine.is_gradient_accumulation_boundary()
    engine.backward(loss)
    engine.step()
    return boundary


class Progress:
    """A progress bar on rank 0 with the loss and throughput (tokens/s over all processes)."""

    def __init__(self, total: int, description: str, runtime: Runtime, initial: int = 0):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, initial=initial, desc=description, disable=not runtime.is_main, dynamic_ncols=True)
        self.started = time.perf_counter()
        self.tokens = 0

    def update(self, tokens: int, **values: float) -> None:
        self.tokens += tokens
        rate = self.tokens / max(time.perf_counter() - self.started, 1e-9)
        self.bar.set_postfix({k: f"{v:.4g}" for k, v in values.items()} | {"tok/s": f"{rate:.0f}"}, refresh=False)
        self.bar.update(1)

    def write(self, message: str) -> None:
        if not self.bar.disable:
            self.bar.write(message)

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / max(time.perf_counter() - self.started, 1e-9)

    def close(self) -> None:
        self.bar.close()


def mean_or_none(total: float, count: float) -> Optional[float]:
    return total / count if count else None
