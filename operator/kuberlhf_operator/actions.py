"""What a pass decides: the RLHFJob's new status, the actions on its children that follow (carried
out only once that status is written), the events to post, and when to look again."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

from .api import RLHFJobStatus
from .events import Event


@dataclass(frozen=True)
class CreateChild:
    stage: str
    attempt: int
    overwrite: bool = False  # a restarted stage replaces its earlier result


@dataclass(frozen=True)
class DeleteChild:
    kind: str
    name: str


@dataclass(frozen=True)
class SuspendChild:
    kind: str
    name: str
    suspend: bool


Action = Union[CreateChild, DeleteChild, SuspendChild]


@dataclass
class Decision:
    status: RLHFJobStatus
    actions: list[Action] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    recheck_in: float | None = None  # seconds until a deadline passes: pass the job again by then

    def recheck(self, seconds: float | None) -> None:
        if seconds is not None:
            self.recheck_in = seconds if self.recheck_in is None else min(self.recheck_in, seconds)
