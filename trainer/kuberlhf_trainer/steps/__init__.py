"""Running one step with its bookkeeping: skip it if already done, refuse stale output, stage
its files and publish them whole, time it and write its summary.

The step functions themselves (`sft.run`, ...) only train and return their figures.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any

from .. import checkpoint, plots
from ..config import STEP_NAMES, RunConfig
from ..engine import Runtime
from ..metrics import TrainingMetrics, job_name
from ..resume import StepClock, StopSignal, checkpoint_dir
from .common import StepContext

log = logging.getLogger(__name__)

# The config sections each step's result depends on (a later step depends on earlier ones).
_SECTIONS = {
    "sft": ["actor_model", "data", "sft", "seed", "dtype"],
    "reward": ["actor_model", "data", "sft", "seed", "dtype", "reward_model", "reward"],
    "ppo": ["actor_model", "data", "sft", "seed", "dtype", "reward_model", "reward", "ppo"],
}


class StaleOutputError(RuntimeError):
    """The output directory holds this step's result for a different configuration."""


def step_function(step: str):
    from . import ppo, reward, sft

    return {"sft": sft.run, "reward": reward.run, "ppo": ppo.run}[step]


def run_step(step: str, config: RunConfig, runtime: Runtime, overwrite: bool = False) -> dict[str, Any]:
    """Run `step` unless its output is already there for this same configuration."""
    assert step in STEP_NAMES, step
    final = config.step_dir(step)
    relevant = config.model_dump(mode="json", include=set(_SECTIONS[step]))
    fingerprint = config.fingerprint(*_SECTIONS[step])
    previous = checkpoint.read_summary(final)
    if previous and not overwrite:
        if previous.get("config_fingerprint") == fingerprint:
            if runtime.is_main:
                log.info("Skipped step %s: %s already holds its result for this configuration", step, final)
            return previous
        changes = "; ".join(describe_changes(previous.get("config", {}), relevant)) or "unknown fields"
        raise StaleOutputError(
            f"{final} holds step '{step}' trained with a different configuration ({changes}). "
            "Use another output_dir, or pass --overwrite to replace it."
        )

    staging = checkpoint.staging_dir(final)
    if runtime.is_main:
        checkpoint.start_staging(final)
    runtime.barrier()
    clock = StepClock()
    metrics = TrainingMetrics(job_name(config.output_dir), step, config.metrics_port,
                              serve=runtime.local_rank == 0, devices=runtime.world_size)
    stop = StopSignal()
    context = StepContext(config, runtime, staging, metrics, final, fingerprint, stop, clock)
    try:
        figures = step_function(step)(context)
    finally:
        metrics.close(config.metrics_linger_seconds)
        stop.restore()
    summary = {
        "step": step,
        "seconds": round(clock.elapsed(), 2),  # over every attempt, when the step was resumed
        "seconds_this_attempt": round(clock.attempt(), 2),
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "world_size": runtime.world_size,
        "device": runtime.device.type,
        **figures,
        "config_fingerprint": fingerprint,
        "config": relevant,
    }
    if runtime.is_main:
        plots.draw(step, summary, staging)
        checkpoint.write_json_atomic(staging / checkpoint.SUMMARY, summary)
        checkpoint.publish(staging, final)
        _remove_tree(checkpoint_dir(final))  # the step is done: its mid-step checkpoints are not needed
    runtime.barrier()
    return summary


def _remove_tree(path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def describe_changes(old: dict, new: dict, prefix: str = "") -> list[str]:
    """'sft.learning_rate: 1e-05 -> 0.0001' for every leaf that differs."""
    changes = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            changes += describe_changes(a, b, f"{prefix}{key}.")
        elif a != b:
            changes.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return changes
