"""DeepSpeed set-up: the process group, precision, the DeepSpeed config and `deepspeed.initialize`.

One builder (`deepspeed_config`) turns the run config into DeepSpeed's JSON for every model;
the steps never write DeepSpeed keys themselves.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Optional

import torch

from .config import ModelSettings

# DeepSpeed-Chat's ZeRO-3 tuning for models up to tens of billions of parameters: keep small
# parameters resident, bound the memory of gathered ones and prefetch in 30M-element buckets.
ZERO3_PARAM_PERSISTENCE_THRESHOLD = 10_000
ZERO3_MAX_LIVE_PARAMETERS = 30_000_000
ZERO3_PREFETCH_BUCKET_SIZE = 30_000_000
FP16_LOSS_SCALE_WINDOW = 100
_SILENT = 2**31 - 1  # DeepSpeed's steps_per_print: we log progress ourselves


@dataclass(frozen=True)
class Runtime:
    """Where this process sits: its ranks and its device."""

    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    def barrier(self) -> None:
        if self.world_size > 1:
            torch.distributed.barrier()

    def sum(self, values: list[float]) -> list[float]:
        """Sum floats over all processes."""
        return self.sum_tensor(torch.tensor(values, dtype=torch.float64, device=self.device)).tolist()

    def sum_tensor(self, tensor: torch.Tensor) -> torch.Tensor:
        """The element-wise sum of `tensor` over all processes (a new tensor)."""
        tensor = tensor.clone()
        if self.world_size > 1:
            torch.distributed.all_reduce(tensor)
        return tensor


def select_device(setting: str) -> str:
    """'cuda' or 'cpu'. Must run before deepspeed is imported: it picks its accelerator once."""
    if setting == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device: 'cuda' requested but no CUDA device is visible")
    kind = "cuda" if setting != "cpu" and torch.cuda.is_available() else "cpu"
    if kind == "cpu":
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    return kind


def init_runtime(device_setting: str) -> Runtime:
    """Join (or create) the process group. Launchers (torchrun, deepspeed) set RANK etc.; a plain
    `python` process gets a one-process group here, so DeepSpeed does not try MPI discovery."""
    kind = select_device(device_setting)
    if "RANK" not in os.environ:
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(free_port()))
    import deepspeed

    deepspeed.init_distributed(verbose=False)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local_rank) if kind == "cuda" else torch.device("cpu")
    if kind == "cuda":
        torch.cuda.set_device(device)
    return Runtime(torch.distributed.get_rank(), local_rank, torch.distributed.get_world_size(), device)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def resolve_dtype(setting: str, runtime: Runtime) -> torch.dtype:
    if setting == "auto":
        if not runtime.is_cuda:
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if setting == "fp16" and not runtime.is_cuda:
        raise RuntimeError("dtype: fp16 needs a GPU (DeepSpeed's CPU backend trains in fp32 or bf16)")
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[setting]


def deepspeed_config(
    model: ModelSettings,
    micro_batch_size: int,
    gradient_accumulation_steps: int,
    world_size: int,
    dtype: torch.dtype,
    gradient_clipping: float = 0.0,
    zero_stage: Optional[int] = None,
    offload: Optional[bool] = None,
    load_universal: bool = False,
) -> dict:
    """DeepSpeed's config for one model. `zero_stage`/`offload` override the model's settings
    (frozen models in step 3 follow their trainable counterpart's stage)."""
    stage = model.zero_stage if zero_stage is None else zero_stage
    offload = model.offload if offload is None else offload
    zero: dict = {"stage": stage}
    if stage == 3:
        zero |= {
            "stage3_param_persistence_threshold": ZERO3_PARAM_PERSISTENCE_THRESHOLD,
            "stage3_max_live_parameters": ZERO3_MAX_LIVE_PARAMETERS,
            "stage3_prefetch_bucket_size": ZERO3_PREFETCH_BUCKET_SIZE,
        }
    if offload and stage >= 1:
        zero["offload_optimizer"] = {"device": "cpu"}
    if offload and stage == 3:
        zero["offload_param"] = {"device": "cpu"}
    config = {
        "train_micro_batch_size_per_gpu": micro_batch_size,
        "gradient_accumulation_steps": gradient_accumulation_steps,
        "train_batch_size": micro_batch_size * gradient_accumulation_steps * world_size,
        "zero_optimization": zero,
        "bf16": {"enabled": dtype == torch.bfloat16},
        "fp16": {"enabled": dtype == torch.float16, "loss_scale_window": FP16_LOSS_SCALE_WINDOW},
        "steps_per_print": _SILENT,
        "wall_clock_breakdown": False,
    }
    if gradient_clipping > 0:
        config["gradient_clipping"] = gradient_clipping
    if load_universal:  # resuming a checkpoint written by another number of processes
        config["checkpoint"] = {"load_universal": True}
    return config


def parameter_groups(model, learning_rate: float, weight_decay: float, lora_learning_rate: float) -> list[dict]:
    """AdamW groups: no weight decay on biases and norms; LoRA weights at their own rate."""
    groups = {
        "decay": {"params": [], "weight_decay": weight_decay, "lr": learning_rate},
        "no_decay": {"params": [], "weight_decay": 0.0, "lr": learning_rate},
        "lora": {"params": [], "weight_decay": weight_decay, "lr": lora_learning_rate},
    }
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if "lora_" in name:
            groups["lora"]["params"].append(param)
        elif param.ndim < 2 or "norm" in name.lower() or name.endswith(".bias"):
            groups["no_decay"]["params"].append(param)
        else:
            groups["decay"]["params"].append(param)
    return [g for g in groups.values() if g["params"]]


def build_optimizer(groups: list[dict], betas: tuple[float, float], offload: bool, runtime: Runtime):
    if offload:
        from deepspeed.ops.adam import DeepSpeedCPUAdam

        return DeepSpeedCPUAdam(groups, betas=betas)
    return torch.optim.AdamW(groups, betas=betas, fused=runtime.is_cuda)


def build_scheduler(optimizer, name: str, warmup_steps: int, total_steps: int):
    from transformers import get_scheduler

    return get_scheduler(name, optimizer, num_warmup_steps=warmup_steps, num_training_steps=max(total_steps, 1))


def initialize(model, ds_config: dict, optimizer=None, scheduler=None):
    """Wrap `model` in a DeepSpeed engine (training when an optimizer is given, else inference-only)."""
    import deepspeed

    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler, config=ds_config)
    return engine


def optimizer_steps(num_batches: int, accumulation: int, epochs: int, max_steps: Optional[int]) -> int:
    """Optimizer steps the loop will take: what the learning-rate schedule spans. DeepSpeed's
    micro-batch count runs on across epochs, so an accumulation can span an epoch's end; the
    micro-batches left over after the last full accumulation make no step."""
    total = epochs * num_batches // accumulation
    return min(total, max_steps) if max_steps else total


def enable_gradient_checkpointing(model) -> None:
    # Non-reentrant checkpointing keeps gradients flowing when only LoRA weights train
    # (DeepSpeed-Chat had to forbid that combination with the reentrant variant).
    # The training forward passes ask for no KV cache themselves; the model's config keeps
    # use_cache, so that the saved checkpoint generates with a cache.
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
