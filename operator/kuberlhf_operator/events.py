"""Kubernetes Events for every transition, derived from the old and the new status.

Events are short-lived (the API server drops them after about an hour); the status keeps
the lasting record. Reasons are CamelCase and Warning marks what a user must look at.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .api import RLHFJobStatus, StageStatus
from .job import Job
from .names import CHILD_KINDS, RESTART_ANNOTATION, STAGES, child_name


@dataclass(frozen=True)
class Event:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass(frozen=True)
class Transition:
    stage: str
    old: str
    new: str


def stage_transitions(old: RLHFJobStatus, new: RLHFJobStatus) -> list[Transition]:
    """Stage state changes, plus a retry (a new attempt) even where the state stayed Starting."""
    before = {s.name: s for s in old.stages}
    out = []
    for stage in new.stages:
        prev = before.get(stage.name) or StageStatus(name=stage.name)
        if prev.state != stage.state or prev.attempt != stage.attempt:
            out.append(Transition(stage.name, prev.state, stage.state))
    return out


def transition_events(job: Job, old: RLHFJobStatus, new: RLHFJobStatus) -> list[Event]:
    before = {s.name: s for s in old.stages}
    events = []
    for stage in new.stages:
        prev = before.get(stage.name) or StageStatus(name=stage.name)
        event = _stage_event(job, prev, stage)
        if event is not None:
            events.append(event)
    # Pending -> Running needs no event of its own: the first StageStarting says it.
    if old.phase != new.phase and not (old.phase == "Pending" and new.phase == "Running"):
        events.append(_phase_event(old.phase, new))
    return events


def _stage_event(job: Job, prev: StageStatus, stage: StageStatus) -> Event | None:
    kind = CHILD_KINDS[job.spec.launcher][1]
    child = child_name(job.name, stage.name, stage.attempt)
    if stage.state == "Starting" and stage.failed_attempts > prev.failed_attempts:
        return Event("Warning", "StageRetrying", f"Stage {stage.name}: {stage.message}")
    if stage.state == "Starting" and stage.disruptions > prev.disruptions:
        return Event("Warning", "StageDisrupted", f"Stage {stage.name}: {stage.message}")
    if prev.state == stage.state and prev.attempt == stage.attempt:
        return None
    if stage.state == "Starting" and prev.state == "Queued" and prev.attempt == stage.attempt:
        return Event("Normal", "StageAdmitted", f"Stage {stage.name}: Kueue admitted {child}; its pods are starting")
    if stage.state == "Starting" and prev.state == "Suspended" and prev.attempt == stage.attempt:
        return Event("Normal", "StageResumed", f"Stage {stage.name} is resuming in {child}; its pods are starting")
    if stage.state == "Starting":
        return Event("Normal", "StageStarting", f"Creating {kind} {child} for stage {stage.name}")
    if stage.state == "Running" and prev.state == "Starting":
        return None  # progress, not news: the status shows it and the child's own events say why
    messages = {
        "Running": ("Normal", "StageResumed", f"Stage {stage.name} is running again in {child}"),
        "Queued": ("Normal", "StageQueued", f"Stage {stage.name}: Kueue holds {child} until it is admitted"),
        "Suspended": ("Normal", "StageSuspended", f"Stage {stage.name}: {child} is suspended"),
        "Succeeded": ("Normal", "StageSucceeded",
                      f"Stage {stage.name} succeeded; checkpoint at {stage.checkpoint_path}"),
        "Failed": ("Warning", "StageFailed", f"Stage {stage.name}: {stage.message}"),
        "Pending": ("Normal", "StageRestarted", f"Stage {stage.name}: {stage.message}"),
        "Skipped": ("Normal", "StageSkipped", f"Stage {stage.name} is not in config.steps"),
    }
    if stage.state == "Pending" and prev.state in ("Pending", "Skipped"):
        return None
    type_, reason, message = messages[stage.state]
    return Event(type_, reason, message)


def _phase_event(old_phase: str, new: RLHFJobStatus) -> Event:
    if new.phase == "Failed":
        return Event("Warning", "Failed", new.message)
    if new.phase == "Succeeded":
        return Event("Normal", "Succeeded", new.message)
    if new.phase == "Suspended":
        return Event("Normal", "Suspended", new.message)
    if old_phase == "Suspended":
        return Event("Normal", "Resumed", new.message)
    if old_phase in ("Failed", "Succeeded"):
        return Event("Normal", "Restarted", new.message)
    return Event("Normal", new.phase, new.message)


def restart_ignored(request: str, selected: tuple[str, ...]) -> Event:
    return Event(
        "Warning", "RestartIgnored",
        f"{RESTART_ANNOTATION}={request!r} names no stage of this job; use one of {', '.join(selected)} "
        f"(optionally '<stage>@<anything>' to repeat a request); stages are {', '.join(STAGES)}",
    )
