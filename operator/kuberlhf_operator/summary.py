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
    active = [_active(s) for s in stages if s.state in ACTIVE_STATES]
    if phase == "Suspended":
        return "suspended" + (f"; {', '.join(active)}" if active else "")
    return ", ".join(active) if active else "waiting to start"


def _active(stage: StageStatus) -> str:
    """'sft starting (attempt 1)', with why it waits or why the last attempt ended, if anything."""
    text = f"{stage.name} {stage.state.lower()} (attempt {stage.attempt})"
    plain = stage.state != "Starting" or stage.reason == "Starting" or not stage.message
    return text if plain else f"{text}: {stage.message}"


def summarize(job: Job, status: RLHFJobStatus, now: str) -> None:
    selected = [s for s in status.stages if s.name in job.selected_stages]
    active = [s for s in selected if s.state in ACTIVE_STATES]
    phase = phase_of(job, selected)
    status.phase = phase
    status.stage = ",".join(s.name for s in active)
    status.stage_state = ",".join(s.state for s in active)
    status.attempt = ",".join(str(s.attempt) for s in active)
    status.progress = progress_of(selected)
    status.message = message_of(phase, job, selected)
    status.observed_generation = job.generation
    started = [s.start_time for s in selected if s.start_time]
    status.start_time = status.start_time or (min(started) if started else None)
    terminal = phase in ("Succeeded", "Failed")
    status.completion_time = (status.completion_time or now) if terminal else None
    failed = next((s for s in status.stages if s.state == "Failed"), None)
    reason = INVALID_SPEC if failed is not None and failed.reason == INVALID_SPEC else "StageFailed"
    set_phase_conditions(status, reason, now, job.generation)


def progress_of(selected: list[StageStatus]) -> str:
    """'k/n': the latest stage that started is the k-th of the n selected ones ('0/n' before any)."""
    started = [i for i, s in enumerate(selected, 1) if s.state not in ("Pending", "Skipped")]
    return f"{max(started, default=0)}/{len(selected)}"


def set_phase_conditions(status: RLHFJobStatus, failure_reason: str, now: str, generation: int) -> None:
    """Every condition, from status.phase and status.message: the phase's own (Running, Suspended,
    Succeeded, Failed) and the three kstatus reads (Argo CD, Flux, kpt): Reconciling while the
    stages run, Stalled once failed, Ready once succeeded; `failure_reason` names why it failed."""
    phase, msg, gen = status.phase, status.message, generation
    reason = {"Running": "StagesRunning", "Failed": failure_reason, "Succeeded": "AllStagesSucceeded",
              "Suspended": "SuspendedByUser", "Pending": "Pending"}[phase]
    for type_, true, otherwise in (
        ("Ready", phase == "Succeeded", phase),
        ("Reconciling", phase in ("Pending", "Running"), phase),
        ("Stalled", phase == "Failed", "NotStalled"),
        ("Running", phase == "Running", phase),
        ("Suspended", phase == "Suspended", "NotSuspended"),
        ("Succeeded", phase == "Succeeded", "NotSucceeded"),
        ("Failed", phase == "Failed", "NotFailed"),
    ):
        shown = true or type_ == "Ready"  # Ready says why not, too
        set_condition(status, type_, true, reason if true else otherwise, msg if shown else "", now, gen)
