"""Checkpoints inside a step: saved at intervals and on SIGTERM, resumed after a restart.

A pod being preempted gets SIGTERM and a grace period. The handler only sets a flag; the
training loops look at it after every optimizer step (all processes agree on it through one
all-reduce), save a checkpoint and leave with exit code 143, which the launcher treats as
retryable (PyTorchJob's ExitCode policy retries 128-255). On restart the step resumes from its
latest complete checkpoint: model, optimizer and scheduler (DeepSpeed's own checkpoint), the
position in the data, every process's random-number generators and the loop's own state
(curves, the figures measured before training, EMA weights, the KL coefficient).

Layout: <output_dir>/.<step>.checkpoints/<fingerprint>/, one directory per configuration:
  <engine>/<tag>/...           DeepSpeed checkpoint of each engine (actor, critic, model)
  <tag>.rng-rank<r>.pt         each process's RNG states
  <tag>.state.pt               the loop's state (written by rank 0)
  <tag>.done                   written last: only tags with it are complete
A crash in the middle of a save leaves no `.done`, so the previous checkpoint is the one used.
A run of another configuration (the step's config fingerprint) never sees these checkpoints:
they can neither shadow its own nor be pruned by it. All of them go once the step is published.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from .config import CheckpointSettings
from .engine import Runtime

log = logging.getLogger(__name__)
EXIT_PREEMPTED = 143  # 128 + SIGTERM: "try again" to PyTorchJob's ExitCode restart policy



class Preempted(Exception):
    """SIGTERM arrived and the step saved a checkpoint: leave, and be restarted."""


class StepClock:
    """Seconds a step has taken over all its attempts: those up to the checkpoint this attempt
    resumed from (saved in it), plus this attempt's own. Work lost after the last checkpoint of
    a killed attempt is not counted: it was done again."""

    def __init__(self):
        self.started = time.perf_counter()
        self.before = 0.0  # seconds of earlier attempts, up to the checkpoint resumed from

    def attempt(self) -> float:
        return time.perf_counter() - self.started

    def elapsed(self) -> float:
        return self.before + self.attempt()


class StopSignal:
    """SIGTERM as a flag the training loops read at optimizer-step boundaries."""

    def __init__(self):
        self.received = False
        self._previous = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame) -> None:
        self.received = True

    def restore(self) -> None:
        signal.signal(signal.SIGTERM, self._previous)


def checkpoint_dir(step_dir: Path) -> Path:
    """Where a step's checkpoints live, for every configuration."""
    return step_dir.parent / f".{step_dir.name}.checkpoints"


def config_checkpoint_dir(step_dir: Path, fingerprint: str) -> Path:
    """The checkpoints of one configuration of a step."""
    return checkpoint_dir(step_dir) / fingerprint[:16]


class Checkpointer:
    """Save and load one step's checkpoints. `engines` maps a name to a DeepSpeed engine."""

    def __init__(self, settings: CheckpointSettings, step_dir: Path, engines: dict, runtime: Runtime,
                 fingerprint: str, stop: Optional[StopSignal] = None, clock: Optional[StepClock] = None):
        self.settings, self.engines, self.runtime = settings, engines, runtime
        self.directory, self.fingerprint, self.stop = config_checkpoint_dir(step_dir, fingerprint), fingerprint, stop
        self.clock = clock or StepClock()
        self.last_save = time.monotonic()

    # -- saving ----------------------------------------------------------------------------------

    def after_step(self, steps_done: int, state_fn) -> None:
        """Call after every optimizer step: save when due, and on SIGTERM save and raise Preempted.
        `state_fn()` gives the loop's state (a dict of plain values and tensors)."""
        # One all-reduce for both questions: every process must decide alike (saving is collective).
        stop, due = self.runtime.sum([float(self.stop is not None and self.stop.received), float(self._due(steps_done))])
        if stop or due:
            self.save(steps_done, state_fn())
        if stop:
            raise Preempted(f"stopped by SIGTERM after step {steps_done}; checkpoint saved in {self.directory}")

    def _due(self, steps_done: int) -> bool:
        by_steps = self.settings.interval_steps and steps_done % self.settings.interval_steps == 0
        minutes = self.settings.interval_minutes
        by_time = minutes and time.monotonic() - self.last_save >= 60 * minutes
        return bool(by_steps or (by_time and self.runtime.is_main))  # rank 0's clock decides the time

    def save(self, steps_done: int, state: dict) -> None:
        tag = f"step-{steps_done:08d}"
        for name, engine in self.engines.items():
            # The universal-checkpoint marker lets DeepSpeed re-partition this checkpoint for
            # another number of processes (see load_latest).
            engine.save_checkpoint(str(self.directory / name), tag=tag, save_latest=False, client_state=_universal_info())
        torch.save(_rng_state(), self.directory / f"{tag}.rng-rank{self.runtime.rank}.pt")
        self.runtime.barrier()
        if self.runtime.is_main:
            torch.save({"fingerprint": self.fingerprint, "world_size": self.runtime.world_size,
                        "elapsed_seconds": self.clock.elapsed(), **state},
                       self.directory / f"{tag}.state.pt")
            _write_atomic(self.directory / f"{tag}.done", tag)
            self._prune()
        self.runtime.barrier()
        self.last_save = time.monotonic()
        if self.runtime.is_main:
            log.info("Saved checkpoint %s of step %s", tag, self.directory.parent.name)

    def _prune(self) -> None:
        """Keep the newest `keep_last` complete checkpoints; drop older ones and half-written leftovers."""
        complete = self.complete_tags()
        keep = set(complete[-self.settings.keep_last :])
        newest = complete[-1]
        for path in self.directory.iterdir():
            tag = path.name.split(".")[0]
            if tag.startswith("step-") and tag not in keep and tag < newest:
                _remove(path)
        for name in self.engines:
            for path in (self.directory / name).glob("step-*"):
                if path.name not in keep and path.name < newest:
                    _remove(path)

    # -- loading ---------------------------------------------------------------------------------

    def complete_tags(self) -> list[str]:
        if not self.directory.exists():
            return []
        return sorted(p.name.removesuffix(".done") for p in self.directory.glob("step-*.done"))

    def load_latest(self) -> Optional[dict]:
        """Restore the newest complete checkpoint made with this configuration; its loop state, or None."""
        tags = self.complete_tags() if self.settings.resume else []
        self._mention_other_configurations()
        if not tags:
            return None
        tag = tags[-1]
        state = torch.load(self.directory / f"{tag}.state.pt", weights_only=False)
        if state.pop("fingerprint") != self.fingerprint:  # a 16-digit prefix collision: start afresh
            log.warning("Ignored checkpoint %s: it was made with another configuration", tag)
            return None
        for name, engine in self.engines.items():
            load_tag = tag
            if state.get("world_size") != self.runtime.world_size and engine.zero_optimization_stage() > 0:
                load_tag = self._universal(name, tag)
            path, _ = engine.load_checkpoint(str(self.directory / name), tag=load_tag)
            if path is None:
                raise RuntimeError(f"checkpoint {self.directory / name / tag} could not be loaded")
        rng_file = self.directory / f"{tag}.rng-rank{self.runtime.rank}.pt"
        if state.get("world_size") == self.runtime.world_size and rng_file.exists():
            _set_rng_state(torch.load(rng_file, weights_only=False))
        self.clock.before = state.pop("elapsed_seconds", 0.0)
        if self.runtime.is_main:
            log.info("Resumed step %s from checkpoint %s", self.directory.parent.name, tag)
        return state

    def _mention_other_configurations(self) -> None:
        others = [p.name for p in checkpoint_dir(self.directory.parent).glob("*") if p != self.directory]
        if others and self.runtime.is_main:
            log.info("Left alone: checkpoints of another configuration of this step in %s (%s); they go when "
                     "this step finishes", self.directory.parent, ", ".join(sorted(others)))

    def _universal(self, engine_name: str, tag: str) -> str:
        """ZeRO partitions optimizer state by process; for another number of processes the
        checkpoint is converted once (by rank 0) into DeepSpeed's universal format. The engine
        must have been built with `load_universal` (see `saved_world_size`)."""
        universal = f"{tag}_universal"
        source, target = self.directory / engine_name / tag, self.directory / engine_name / universal
        if self.runtime.is_main and not target.exists():
            log.info("Converting checkpoint %s/%s to DeepSpeed's universal format", engine_name, tag)
            # A clean environment: the converter is not one of this job's distributed processes.
            env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_PORT")}
            result = subprocess.run(
                [sys.executable, "-m", "deepspeed.checkpoint.ds_to_universal", "--input_folder", str(source),
                 "--output_folder", str(target), "--inject_missing_state"], capture_output=True, text=True, env=env,
            )
            if result.returncode != 0:
                raise RuntimeError(f"converting {source} to DeepSpeed's universal checkpoint failed:\n{result.stderr[-2000:]}")
        self.runtime.barrier()
        return universal

    def discard(self) -> None:
        """After the step's output is published: its checkpoints are no longer needed."""
        if self.runtime.is_main:
            _remove(self.directory)


def saved_world_size(settings: CheckpointSettings, step_dir: Path, fingerprint: str) -> Optional[int]:
    """The number of processes that wrote the checkpoint a restart would resume from (None:
    nothing to resume). A step compares it with its own to build its DeepSpeed engines with
    `load_universal` when they differ."""
    directory = config_checkpoint_dir(step_dir, fingerprint)
    checkpoints = sorted(directory.glob("step-*.done")) if settings.resume else []
    if not checkpoints:
        return None
    tag = checkpoints[-1].name.removesuffix(".done")
    return torch.load(directory / f"{tag}.state.pt", weights_only=False).get("world_size")


def _universal_info() -> dict:
    from deepspeed.checkpoint import constants

    return {constants.UNIVERSAL_CHECKPOINT_INFO: {constants.UNIVERSAL_CHECKPOINT_VERSION_KEY: constants.UNIVERSAL_CHECKPOINT_VERSION_VALUE}}


def _rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
