"""Phase, one-line message and conditions of an RLHFJob, summarised from its stages."""

from __future__ import annotations

from .api import ACTIVE_STATES, Phase, RLHFJobStatus, StageStatus
from .builders import claim_for
from .conditions import set_condition
from .job import Job
from .validate import INVALID_SPEC


def phase_of(job: Job, stages: list[StageStatus]) -> Phase:
    if any(s.state == "Failed" for s in stages):
        return "Failed"
    if stages and all(s.state == "Succeeded" for s in stages):
        return "Succeeded"
    if job.spec.suspend:
        return "Suspended"
    if any(s.state in ACTIVE_STATES or s.state == "Succeeded" for s in stages):
        return "Running"
    return "Pending"


def message_of(phase: Phase, job: Job, stages: list[StageStatus]) -> str:
    if phase == "Failed":
        failed = next(s for s in stages if s.state == "Failed")
        return f"stage {failed.name} failed: {failed.message or failed.reason}"
    if phase == "Succeeded":
        return f"all stages succeeded; checkpoints in {job.output_dir} on claim {claim_for(job)}"
    active = [f"{s.name} {s.state.lower()} (attempt {s.attempt})" for s in stages if s.state in ACTIVE_STATES]
    if phase == "Suspended":
        return "suspended" + (f"; {', '.join(active)}" if active else "")
    return ", ".join(active) if active else "waiting to start"


def summarize(job: Job, status: RLHFJobStatus, now: str) -> None:
    selected = [s for s in status.stages if s.name in job.selected_stages]
    phase = phase_of(job, selected)
    status.phase = phase
    status.stage = ",".join(s.name for s in selected if s.state in ACTIVE_STATES)
    status.message = message_of(phase, job, selected)
    status.observed_generation = job.generation
    started = [s.start_time for s in selected if s.start_time]
    status.start_time = status.start_time or (min(started) if started else None)
    terminal = phase in ("Succeeded", "Failed")
    status.completion_time = (status.completion_time or now) if terminal else None
    _set_conditions(job, status, now)


def _set_conditions(job: Job, status: RLHFJobStatus, now: str) -> None:
    phase, gen, msg = status.phase, job.generation, status.message
    failed = next((s for s in status.stages if s.state == "Failed"), None)
    set_condition(status, "Running", phase == "Running", "StagesRunning" if phase == "Running" else phase,
                  msg if phase == "Running" else "", now, gen)
    set_condition(status, "Suspended", phase == "Suspended",
                  "SuspendedByUser" if phase == "Suspended" else "NotSuspended",
                  msg if phase == "Suspended" else "", now, gen)
    set_condition(status, "Succeeded", phase == "Succeeded",
                  "AllStagesSucceeded" if phase == "Succeeded" else "NotSucceeded",
                  msg if phase == "Succeeded" else "", now, gen)
    reason = "NotFailed" if failed is None else (INVALID_SPEC if failed.reason == INVALID_SPEC else "StageFailed")
    set_condition(status, "Failed", failed is not None, reason, msg if failed else "", now, gen)
