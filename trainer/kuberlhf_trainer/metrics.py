"""Prometheus metrics of a training process: every name is defined here, once.

Served on `metrics_port` (when non-zero) by local rank 0 of each node, for the whole step.
Labels: `job` (env KUBERLHF_JOB, else the output directory's name), `stage` (sft, reward, ppo)
and, for throughput, `phase` (generation, training). docs/metrics.md lists them all.

FLOP estimates follow the usual dense-transformer rule (Kaplan et al. 2020): a forward pass
costs 2 FLOPs per parameter per token, forward and backward 6 (8 with activation
recomputation). Effective TFLOP/s of a PPO iteration is all its model work (generation,
the experience forwards, actor and critic training) over its wall time, per device, as
DeepSpeed-Chat's blog reports it.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import defaultdict
from pathlib import Path
from typing import Iterator, Optional

from prometheus_client import CollectorRegistry, Gauge, start_http_server

PREFIX = "kuberlhf_"
FORWARD_FLOPS_PER_PARAM_TOKEN = 2
TRAIN_FLOPS_PER_PARAM_TOKEN = 6
TRAIN_FLOPS_PER_PARAM_TOKEN_RECOMPUTE = 8

# name: (help, extra labels beyond job and stage)
DEFINITIONS: dict[str, tuple[str, tuple[str, ...]]] = {
    "step_progress": ("Optimizer steps (PPO: iterations) done in the current step.", ()),
    "step_total": ("Optimizer steps (PPO: iterations) the current step will take.", ()),
    "tokens_per_second": ("Tokens processed per second over all processes, by phase.", ("phase",)),
    "tflops_per_device": ("Estimated TFLOP/s per device, by phase.", ("phase",)),
    "seconds_per_iteration": ("Wall seconds per iteration (optimizer step; PPO iteration), by phase.", ("phase",)),
    "effective_tflops_per_device": ("Estimated TFLOP/s per device over whole PPO iterations (all phases).", ()),
    "train_loss": ("Training loss of the last optimizer step (PPO: the actor's policy loss).", ()),
    "ppo_reward_mean": ("Mean reward-model score of the last PPO batch.", ()),
    "ppo_reward_std": ("Standard deviation of the reward-model scores of the last PPO batch.", ()),
    "ppo_kl": ("Mean KL to the reference model per answer, in nats, of the last PPO batch.", ()),
    "ppo_entropy": ("Mean per-token entropy of the policy on the last PPO batch.", ()),
    "ppo_clip_fraction": ("Share of answer tokens where the PPO clip was active.", ()),
    "ppo_value_loss": ("The critic's clipped value loss.", ()),
    "ppo_response_length": ("Mean answer length in tokens of the last PPO batch.", ()),
}


class PhaseTimer:
    """Wall seconds per phase. On CUDA it waits for queued work at both ends, so the GPU time of
    a phase is charged to that phase and not to whichever comes next."""

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)

    @contextlib.contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        _synchronize()
        started = time.perf_counter()
        try:
            yield
        finally:
            _synchronize()
            self.seconds[phase] += time.perf_counter() - started


def _synchronize() -> None:
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def peak_memory_mb(runtime) -> float:
    """This process's peak memory: allocated device memory on CUDA, resident set size on CPU."""
    import torch

    if runtime.is_cuda:
        return torch.cuda.max_memory_allocated(runtime.device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def job_name(output_dir: str) -> str:
    return os.environ.get("KUBERLHF_JOB") or Path(output_dir).resolve().name


class TrainingMetrics:
    """The gauges of one step. Without a port they still record (tests read them) but nothing is served."""

    def __init__(self, job: str, stage: str, port: int = 0, serve: bool = True, devices: int = 1):
        self.devices = devices
        self.parameters, self.recompute = 0, False  # of the model being trained, for FLOP estimates
        self.registry = CollectorRegistry()
        self.labels = {"job": job, "stage": stage}
        self.gauges = {
            name: Gauge(PREFIX + name, help_text, ("job", "stage", *extra), registry=self.registry)
            for name, (help_text, extra) in DEFINITIONS.items()
        }
        self.server = start_http_server(port, registry=self.registry) if port and serve else None

    def set(self, name: str, value: Optional[float], **labels: str) -> None:
        if value is not None:
            self.gauges[name].labels(**self.labels, **labels).set(value)

    def progress(self, done: int, total: int) -> None:
        self.set("step_progress", done)
        self.set("step_total", total)

    def throughput(self, phase: str, tokens: float, seconds: float, flops: float) -> None:
        """One iteration's work in a phase: tokens over all processes, FLOPs over all devices."""
        if seconds <= 0:
            return
        self.set("tokens_per_second", tokens / seconds, phase=phase)
        self.set("tflops_per_device", flops / seconds / self.devices / 1e12, phase=phase)
        self.set("seconds_per_iteration", seconds, phase=phase)

    def training_step(self, done: int, total: int, loss: float, tokens: float, seconds: float) -> None:
        """After an optimizer step of steps 1 and 2 (`tokens` over all processes)."""
        self.progress(done, total)
        self.set("train_loss", loss)
        self.throughput("training", tokens, seconds, training_flops(self.parameters, tokens, self.recompute))

    def close(self, linger_seconds: float = 0.0) -> None:
        """Stop serving, after `linger_seconds` so the last values can still be scraped."""
        if self.server is not None:
            time.sleep(linger_seconds)
            server, thread = self.server
            server.shutdown()
            thread.join()


def training_flops(parameters: int, tokens: float, recompute: bool) -> float:
    per = TRAIN_FLOPS_PER_PARAM_TOKEN_RECOMPUTE if recompute else TRAIN_FLOPS_PER_PARAM_TOKEN
    return per * parameters * tokens


def forward_flops(parameters: int, tokens: float) -> float:
    return FORWARD_FLOPS_PER_PARAM_TOKEN * parameters * tokens
