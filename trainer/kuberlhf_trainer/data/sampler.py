"""A distributed sampler that can resume mid-epoch, on any number of processes.

Each epoch has one global order (a seeded permutation, as `DistributedSampler` uses). Process r
of W takes every W-th example of that order from a start position, so after a restart the
remaining examples are dealt out again — by the same or a different number of processes —
and no example is trained twice or skipped. The order is padded by wrapping around so every
process gets the same number of batches (ZeRO-3's collectives need that).
"""

from __future__ import annotations

import math

import torch
from torch.utils.data import Sampler


class ResumableSampler(Sampler[int]):
    def __init__(self, size: int, world_size: int, rank: int, shuffle: bool, seed: int):
        self.size, self.world_size, self.rank = size, world_size, rank
        self.shuffle, self.seed = shuffle, seed
        self.epoch, self.start, self.taken = 0, 0, 0

    def set_epoch(self, epoch: int) -> None:
        """A new epoch starts at its beginning."""
        self.resume_at(epoch, 0)

    def resume_at(self, epoch: int, consumed: int) -> None:
        """Continue `epoch` after the first `consumed` examples of its global order."""
        self.epoch, self.start, self.taken = epoch, consumed, 0

    def consumed(self) -> int:
        """Examples of this epoch's global order handed out so far, by all processes together
        (what `resume_at` takes after a restart)."""
        return self.start + self.taken * self.world_size

    def order(self) -> list[int]:
        """This epoch's global order from the start position."""
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.size, generator=generator).tolist()
        else:
            order = list(range(self.size))
        return order[self.start :]

    def __iter__(self):
        remaining = self.order()
        if not remaining:
            return iter([])
        total = math.ceil(len(remaining) / self.world_size) * self.world_size
        padded = (remaining * math.ceil(total / len(remaining)))[:total]
        return self._counted(padded[self.rank :: self.world_size])

    def _counted(self, indices: list[int]):
        for index in indices:
            self.taken += 1
            yield index

    def __len__(self) -> int:
        return math.ceil(max(self.size - self.start, 0) / self.world_size)
