"""What a pass looks up before it decides: pure functions of an RLHFJob (its status) and what the
watches show of its children and pods, naming the few API reads decide() needs to judge right.

The watches can lag behind, and some facts are in no watched object: why a failed child's pods
failed (their termination messages, read once per failed attempt), why a child has no pod at all
(its Warning events), and whether a child that vanished from the watch is really gone.
"""

from __future__ import annotations

from typing import Sequence

from .api import ACTIVE_STATES
from .job import Job
from .observe import Child, Pod
from .starting import needs_events


def failures_to_explain(job: Job, children: Sequence[Child]) -> list[Child]:
    """Failed children this pass will judge: the caller looks up why (their pods) first."""
    current = {(s.name, s.attempt) for s in job.status.stages if s.state in ACTIVE_STATES}
    return [c for c in children if c.state == "Failed" and (c.stage, c.attempt) in current
            and c.owner_uid == job.uid]


def children_without_pods(job: Job, children: Sequence[Child], pods: Sequence[Pod], now: str) -> list[Child]:
    """Current children still starting with no pod for a while: the caller reads their latest
    Warning event (Child.warning) first, as only it says why the pods were not made."""
    current = {(s.name, s.attempt) for s in job.status.stages if s.state in ACTIVE_STATES}
    with_pods = {p.child for p in pods}
    return [c for c in children if (c.stage, c.attempt) in current and c.owner_uid == job.uid
            and needs_events(c, c.name in with_pods, now)]


def missing_children(job: Job, children: Sequence[Child]) -> list[tuple[str, str]]:
    """(kind, name) of children seen before (their uid is in status) that the caller did not
    observe now: this pass would count them as deleted, so the caller makes sure first."""
    present = {(c.stage, c.attempt) for c in children if c.owner_uid == job.uid and not c.deleting}
    return [(s.child_ref.kind, s.child_ref.name) for s in job.status.stages
            if s.state in ACTIVE_STATES and s.child_ref is not None and s.child_ref.uid
            and (s.name, s.attempt) not in present]
