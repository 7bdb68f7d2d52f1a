"""Exponential moving average of the actor's weights (InstructGPT; DeepSpeed-Chat --enable_ema).

Only trainable parameters change, so only they get a shadow copy (with LoRA: just the adapters).
The shadow is kept in fp32 at full size on every process; under ZeRO-3 each update gathers the
partitioned parameters, as DeepSpeed-Chat does. To evaluate or save the EMA model its weights
are swapped into the actor for the duration of a `with ema.applied():` block.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch

from ..losses import ema_update


class ActorEMA:
    def __init__(self, module: torch.nn.Module, beta: float, zero3: bool):
        self.beta, self.zero3 = beta, zero3
        self.params = [p for p in module.parameters() if p.requires_grad]
        with self._gathered(self.params):
            self.shadow = [p.detach().float().clone() for p in self.params]

    def _gathered(self, params, modifier_rank=None):
        if not self.zero3:
            return contextlib.nullcontext()
        import deepspeed

        return deepspeed.zero.GatheredParameters(params, modifier_rank=modifier_rank)

    def update(self) -> None:
        """shadow <- beta * shadow + (1 - beta) * current weights; call after each optimizer step."""
        with self._gathered(self.params):
            ema_update(self.shadow, self.params, self.beta)

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """The actor runs with the EMA weights inside the block and gets its own back after."""
        with self._gathered(self.params, modifier_rank=0):
            backup = [p.detach().clone() for p in self.params]
            for param, shadow in zip(self.params, self.shadow):
                param.data.copy_(shadow.to(param.dtype))
        try:
            yield
        finally:
            with self._gathered(self.params, modifier_rank=0):
                for param, saved in zip(self.params, backup):
                    param.data.copy_(saved)
