"""Exponential moving average of the actor's weights (InstructGPT; DeepSpeed-Chat --enable_ema).

Only trainable parameters change, so only they get a shadow copy (with LoRA: just the adapters),
kept in fp32. Under ZeRO-3 each process keeps the shadow of its own partition of each parameter
(DeepSpeed's `ds_tensor`), as DeepSpeed-Chat keeps its EMA model partitioned: 1/N of the memory
on each of N processes, and an update is local arithmetic, with no gathering. Without ZeRO-3
every process holds whole parameters and a whole shadow.

To evaluate or save the EMA model its weights are swapped into the actor for the duration of a
`with ema.applied():` block. For checkpoints, `state()` gathers the whole shadow (so that a run
can resume on another number of processes) and `load()` takes each process's partition from it.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Optional

import torch
import torch.distributed as dist

from ..losses import ema_update


class ActorEMA:
    def __init__(self, engine, beta: float, zero3: bool):
        self.engine, self.beta, self.zero3 = engine, beta, zero3
        self.params = [p for p in engine.module.parameters() if p.requires_grad]
        self.shadow = [t.detach().float().clone() for t in self._weights()]

    def _weights(self) -> list[torch.Tensor]:
        """What this process holds of each parameter: its ZeRO-3 partition, or the whole tensor."""
        return [p.ds_tensor if self.zero3 else p.data for p in self.params]

    def update(self) -> None:
        """shadow <- beta * shadow + (1 - beta) * current weights; call after each optimizer step."""
        ema_update(self.shadow, self._weights(), self.beta)

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """The actor runs with the EMA weights inside the block and gets its own back after."""
        weights = self._weights()
        backup = [w.detach().clone() for w in weights]
        self._write(weights, self.shadow)
        try:
            yield
        finally:
            self._write(weights, backup)

    def _write(self, weights: list[torch.Tensor], values: list[torch.Tensor]) -> None:
        # Under ZeRO-3 small parameters stay gathered between steps (stage3_param_persistence_threshold):
        # release every gathered copy before writing the partitions, and gather them again after,
        # as DeepSpeed itself does around a checkpoint.
        optimizer = self.engine.optimizer if self.zero3 else None
        if optimizer is not None:
            optimizer.checkpoint_event_prologue()
        with torch.no_grad():
            for weight, value in zip(weights, values):
                weight.copy_(value.to(weight.dtype))
        if optimizer is not None:
            optimizer.checkpoint_event_epilogue()

    def state(self) -> Optional[list[torch.Tensor]]:
        """The whole shadow, on the CPU, on rank 0 (None elsewhere). Every process must call it."""
        if not self.zero3:
            return [t.cpu().clone() for t in self.shadow]

        whole, world = [], dist.get_world_size()
        for param, part in zip(self.params, self.shadow):
            gathered = torch.empty(world * part.numel(), dtype=part.dtype, device=part.device)
            dist.all_gather_into_tensor(gathered, part)
            whole.append(gathered[: param.ds_numel].view(param.ds_shape).cpu() if dist.get_rank() == 0 else None)
        return whole if dist.get_rank() == 0 else None

    def load(self, whole: list[torch.Tensor]) -> None:
        """Take this process's share of a whole shadow saved by `state()`."""
        for shadow, saved in zip(self.shadow, whole):
            if self.zero3:
                flat = saved.reshape(-1).to(shadow.device, shadow.dtype)
                start = dist.get_rank() * shadow.numel()
                part = flat[start : start + shadow.numel()]
                shadow.zero_()[: part.numel()].copy_(part)  # the last partition is padded
            else:
                shadow.copy_(saved)
