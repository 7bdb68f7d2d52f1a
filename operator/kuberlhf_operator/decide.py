"""decide(job, children, now, pods) -> Decision: the operator's whole logic, as a pure function.

The RLHFJob's status is the operator's *intent* and the children (and their pods) are the
*actual* state. One pass, level-triggered (it never asks what changed, only what is):

1. a new restart request (annotation kuberlhf.io/restart-from) resets that stage and the
   stages after it, and deletes their running children;
2. each active stage takes the state of its current child (the one whose attempt number the
   status records): Succeeded advances; Failed retries with attempt+1 up to retryLimit and
   then fails the job with the reason its pods give (bad input and a passed activeDeadlineSeconds
   are not retried; a disruption -- eviction, preemption -- starts a new attempt that resumes
   from the last checkpoint without using a retry, up to disruptionLimit); a vanished child counts
   as a failed attempt; while its pods do not all run yet, the stage's message says why, and the
   attempt fails (its child deleted) once they are past startDeadlineSeconds (see starting.py);
3. stages whose predecessors succeeded start: attempt+1, state Starting;
4. every Starting stage without its child gets a CreateChild, unless the job is suspended or the
   objects it needs could not exist (validate.problems: then the stage fails, reason
   InvalidSpec, naming the field, and nothing is created);
5. suspend/resume is passed to running children that Kueue does not manage;
6. phase, message and conditions summarise the stages.

The caller writes the new status first, guarded by the object's resourceVersion, and only then
carries out the actions. A child is therefore only ever created for an attempt number already
recorded in status, and its name carries that number: a stale or concurrent pass that decides
the same thing asks for the same name and gets AlreadyExists, never a second child.

Children carry a controller ownerReference to the job: the cluster's garbage collector deletes
them (and the job's ConfigMaps, and its claim with retentionPolicy Delete) when the job goes, so
no finalizer holds the job (see docs/operator.md, "Deletion").
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from pydantic import ValidationError

from .actions import CreateChild, Decision, DeleteChild, SuspendChild
from .api import ACTIVE_STATES, ChildRef, RLHFJobStatus, StageStatus
from .builders import claim_for
from .events import Event, restart_ignored, transition_events
from .job import InvalidSpec, Job
from .names import CHILD_KINDS, RESTART_ANNOTATION, STAGES, child_name
from .observe import KUBELET_DISRUPTIONS, Child, Pod, describe
from .starting import QUOTA_EXCEEDED, check_active_deadline, check_start, still_starting
from .summary import set_phase_conditions, summarize
from .validate import INVALID_SPEC, Problem, problems

MPIJOB_EVICTED = "MPIJobEvicted"
"""mpi-operator's reason when a worker pod was evicted by its kubelet."""
DEADLINE_EXCEEDED = "DeadlineExceeded"
PAST_DEADLINE = "the attempt ran past activeDeadlineSeconds"
DISRUPTED = "Disrupted"


Attempts = dict[int, Child]


def decide(job: Job, children: Sequence[Child], now: str, pods: Sequence[Pod] = ()) -> Decision:
    """`pods`: the children's pods as watched (the operator watches only pods it labelled)."""
    status = job.status.model_copy(deep=True)
    status.stages = _stage_entries(job, status.stages)
    status.claim_name = claim_for(job)
    by_stage = _group(job, children)
    decision = Decision(status)
    _handle_restart(job, status, by_stage, now, decision)
    for stage in _selected(job, status):
        _observe(job, stage, by_stage.get(stage.name, {}), pods, now, decision)
    _start_ready(job, status, now)
    _request_children(job, status, by_stage, now, decision)
    _pass_suspend(job, status, by_stage, decision)
    summarize(job, status, now)
    decision.events += transition_events(job, job.status, status)
    return decision


def attempt_creation_failed(job: Job, status: RLHFJobStatus, stage_name: str, reason: str, message: str,
                            now: str) -> Decision:
    """The API server refused to create a stage's child: that attempt failed (and is retried
    under a new name up to retryLimit, which also gets past a name another object took)."""
    new = status.model_copy(deep=True)
    _attempt_failed(job, new.stage_status(stage_name), reason, message, now)
    summarize(job, new, now)
    return Decision(new, events=[Event("Warning", reason, message), *transition_events(job, status, new)])


def creation_waiting(job: Job, status: RLHFJobStatus, stage_name: str, reason: str, message: str,
                     now: str) -> Decision:
    """Creating a stage's child must wait (a ResourceQuota is full; the name still belongs to the
    child of a deleted job of the same name): the stage says so, the attempt does not fail, and the
    caller tries again later. A Warning event when the reason first shows."""
    new = status.model_copy(deep=True)
    stage = new.stage_status(stage_name)
    stage.reason, stage.message = reason, f"waiting to create {_name(job, stage)}: {message}"
    summarize(job, new, now)
    news = stage.message != status.stage_status(stage_name).message
    return Decision(new, events=[Event("Warning", reason, f"Stage {stage_name}: {stage.message}")] if news else [])


def _stage_entries(job: Job, current: list[StageStatus]) -> list[StageStatus]:
    """One entry per stage in pipeline order; stages left out of config.steps are Skipped."""
    known = {s.name: s for s in current}
    entries = []
    for name in STAGES:
        entry = known.get(name) or StageStatus(name=name)
        if name not in job.selected_stages and entry.state in ("Pending", "Skipped"):
            entry.state = "Skipped"
        elif name in job.selected_stages and entry.state == "Skipped":
            entry.state = "Pending"
        entries.append(entry)
    return entries


def _group(job: Job, children: Sequence[Child]) -> dict[str, Attempts]:
    """Children by stage and attempt. Children another object controls are not ours to judge."""
    out: dict[str, Attempts] = {}
    for child in children:
        if child.owner_uid == job.uid and child.stage in STAGES and child.attempt > 0:
            out.setdefault(child.stage, {})[child.attempt] = child
    return out


def _selected(job: Job, status: RLHFJobStatus) -> list[StageStatus]:
    return [s for s in status.stages if s.name in job.selected_stages]


def _handle_restart(job: Job, status: RLHFJobStatus, by_stage: dict[str, Attempts], now: str,
                    decision: Decision) -> None:
    request = job.annotations.get(RESTART_ANNOTATION, "").strip()
    if not request or request == status.restart_request:
        return
    status.restart_request = request
    first = request.split("@", 1)[0].strip()
    if first not in job.selected_stages:
        decision.events.append(restart_ignored(request, job.selected_stages))
        return
    for stage in _selected(job, status)[job.selected_stages.index(first):]:
        current = by_stage.get(stage.name, {}).get(stage.attempt)
        if stage.state in ACTIVE_STATES and current is not None and not current.deleting:
            decision.actions.append(DeleteChild(current.kind, current.name))
        _reset(stage, f"restarted on request {request!r}")


def _reset(stage: StageStatus, message: str) -> None:
    """Back to Pending; the attempt number stays, so the next child gets a new name."""
    stage.state = "Pending"
    stage.rerun = True
    stage.failed_attempts = stage.disruptions = 0
    stage.child_ref = stage.disruption = None
    stage.start_time = stage.completion_time = None
    stage.reason, stage.message = "Restarted", message


def _observe(job: Job, stage: StageStatus, attempts: Attempts, pods: Sequence[Pod], now: str,
             decision: Decision) -> None:
    latest = max(attempts, default=0)
    if latest > stage.attempt:
        # A child newer than the status knows of (e.g. status was lost): it is the current one.
        stage.attempt, stage.state = latest, "Starting"
    if stage.state not in ACTIVE_STATES:
        return
    child = attempts.get(stage.attempt)
    if child is None or child.deleting:
        if stage.child_ref is not None and stage.child_ref.uid:  # seen before, and now it is gone
            _attempt_failed(job, stage, "ChildDeleted", f"child {_name(job, stage)} was deleted", now)
        return
    mine = [p for p in pods if p.child == child.name]
    _note_disruption(stage, mine)
    if _past_active_deadline(job, stage, child, now, decision):
        return
    if stage.state != "Running" and still_starting(child, mine):
        if not job.spec.suspend:  # a suspended job's child is on its way to Suspended
            _check_start(job, stage, child, mine, now, decision)
        return
    if child.state == "Starting":
        return
    stage.child_ref = ChildRef(api_version=child.api_version, kind=child.kind, name=child.name, uid=child.uid)
    if child.state == "Succeeded":
        stage.state, stage.completion_time = "Succeeded", now
        stage.reason, stage.message = child.reason, f"{child.kind} {child.name} succeeded"
    elif child.state == "Failed":
        _child_failed(job, stage, child, now)
    elif child.state == "Suspended":
        # Kueue holds a job it has not admitted; we never suspend a child Kueue manages.
        stage.state = "Queued" if child.kueue_managed else "Suspended"
    else:
        stage.state = child.state
    if child.state in ("Running", "Suspended") and child.message:
        stage.reason, stage.message = child.reason, child.message


def _past_active_deadline(job: Job, stage: StageStatus, child: Child, now: str, decision: Decision) -> bool:
    """End an attempt past activeDeadlineSeconds ourselves: training-operator v1.9.4 checks it only
    when something else makes it look at the PyTorchJob (the delayed requeue it asks for goes to a
    no-op queue), so a quietly running child would run on. (For an MPIJob the launcher's batch Job
    enforces it, and the child fails first.)"""
    expired, recheck = check_active_deadline(child, job.spec.stages.of(stage.name), now)
    decision.recheck(recheck)
    if expired:
        decision.actions.append(DeleteChild(child.kind, child.name))
        seconds = job.spec.stages.of(stage.name).active_deadline_seconds
        _attempt_failed(job, stage, DEADLINE_EXCEEDED, f"{child.kind} {child.name} was still running after "
                        f"activeDeadlineSeconds ({seconds} s)", now, permanent=PAST_DEADLINE)
    return expired


def _check_start(job: Job, stage: StageStatus, child: Child, pods: Sequence[Pod], now: str,
                 decision: Decision) -> None:
    """The child exists and its pods do not all run yet: say why, or fail the attempt."""
    check = check_start(child, pods, job.spec.stages.of(stage.name), now)
    if check.failure is not None:
        # Its pods would go on waiting for (and holding) resources: the next attempt is a new child.
        decision.actions.append(DeleteChild(child.kind, child.name))
        _attempt_failed(job, stage, *check.failure, now,
                        permanent="the image reference cannot be pulled" if check.permanent else "")
        return
    decision.recheck(check.recheck_in)
    if stage.state in ("Queued", "Suspended"):  # admitted by Kueue, or resumed: starting again
        stage.state = "Starting"
        stage.reason, stage.message = "Starting", f"starting attempt {stage.attempt}"
    if check.waiting:
        if check.reason == QUOTA_EXCEEDED and stage.reason != QUOTA_EXCEEDED:  # once, as creation_waiting
            decision.events.append(Event("Warning", QUOTA_EXCEEDED, f"Stage {stage.name}: {check.waiting}"))
        stage.reason, stage.message = check.reason, check.waiting


def _note_disruption(stage: StageStatus, pods: Sequence[Pod]) -> None:
    """Remember that a pod of this attempt is being evicted or preempted: it may be gone by the time
    its child fails, and the failure is then the disruption's, not the trainer's."""
    seen = next((describe(p.short_name, *p.disruption) for p in pods if p.disruption is not None), None)
    if seen is not None and stage.disruption is None:
        stage.disruption = seen[:4096]


def _child_failed(job: Job, stage: StageStatus, child: Child, now: str) -> None:
    detail = child.failure
    if detail is not None and not detail.retryable:  # the trainer's own words: e.g. which field is wrong
        _attempt_failed(job, stage, detail.reason, detail.message or child.message, now,
                        permanent="the trainer reported bad input")
        return
    if child.reason.startswith(DEADLINE_EXCEEDED) or "active longer than specified deadline" in child.message:
        _attempt_failed(job, stage, DEADLINE_EXCEEDED, child.message, now, permanent=PAST_DEADLINE)
        return
    disruption = stage.disruption or (detail.disruption if detail else None) or _child_disruption(child)
    limit = job.spec.stages.of(stage.name).disruption_limit
    if disruption and stage.disruptions < limit:
        _attempt_disrupted(stage, disruption, limit)
    elif disruption:
        _attempt_failed(job, stage, DISRUPTED, f"{disruption} (disruptionLimit {limit} reached)", now)
    elif detail is None:
        _attempt_failed(job, stage, child.reason or "Failed", child.message, now)
    else:
        _attempt_failed(job, stage, detail.reason, detail.message or child.message, now)


def _child_disruption(child: Child) -> str | None:
    """mpi-operator's own word for an evicted worker, or a launcher Job failed because its pod was
    evicted ('BackoffLimitExceeded/Evicted')."""
    if child.reason == MPIJOB_EVICTED or child.reason.rpartition("/")[2] in KUBELET_DISRUPTIONS:
        return f"{child.reason}: {child.message}".rstrip(": ")
    return None


def _attempt_disrupted(stage: StageStatus, disruption: str, limit: int) -> None:
    """A new attempt, not counted against retryLimit. It passes the trainer what the last one did
    (--overwrite only for a restarted stage, which must not reuse the result from before the
    restart), and the trainer resumes from the checkpoint it saved on SIGTERM either way."""
    stage.disruptions += 1
    stage.reason = DISRUPTED
    stage.message = (f"attempt {stage.attempt} was disrupted: {disruption}; attempt {stage.attempt + 1} resumes "
                     f"from the last checkpoint ({stage.disruptions} of {limit} disruptions)")
    _next_attempt(stage)


def _attempt_failed(job: Job, stage: StageStatus, reason: str, message: str, now: str,
                    permanent: str = "") -> None:
    """`permanent`: why retrying cannot help (the stage fails at once), or "" to retry."""
    stage.failed_attempts += 1
    limit = job.spec.stages.of(stage.name).retry_limit
    failed = f"attempt {stage.attempt} failed: {reason}: {message}".rstrip(": ")
    stage.reason = reason
    if permanent:
        stage.state, stage.completion_time = "Failed", now
        stage.message = f"{failed}; not retried: {permanent}"
    elif stage.failed_attempts <= limit:
        stage.message = f"{failed}; retrying as attempt {stage.attempt + 1} ({stage.failed_attempts} of {limit} retries)"
        _next_attempt(stage)
    else:
        stage.state, stage.completion_time = "Failed", now
        stage.message = f"{failed}; no retries left (retryLimit {limit})"


def _next_attempt(stage: StageStatus) -> None:
    stage.attempt += 1
    stage.state = "Starting"
    stage.child_ref = stage.disruption = None


def _dependencies(job: Job, stage: str) -> list[str]:
    if job.spec.parallel_sft_and_reward and stage in ("sft", "reward"):
        return []
    before = STAGES[: STAGES.index(stage)]
    return [s for s in before if s in job.selected_stages]


def _start_ready(job: Job, status: RLHFJobStatus, now: str) -> None:
    """Start every Pending stage whose predecessors succeeded, unless the job is over or held."""
    stages = {s.name: s for s in status.stages}
    if job.spec.suspend or any(s.state == "Failed" for s in stages.values()):
        return
    for stage in _selected(job, status):
        ready = all(stages[d].state == "Succeeded" for d in _dependencies(job, stage.name))
        if stage.state == "Pending" and ready:
            stage.attempt += 1
            stage.state, stage.start_time = "Starting", now
            stage.failed_attempts = stage.disruptions = 0
            stage.completion_time = stage.disruption = None
            stage.checkpoint_path = job.checkpoint_path(stage.name)
            stage.reason, stage.message = "Starting", f"starting attempt {stage.attempt}"


def _request_children(job: Job, status: RLHFJobStatus, by_stage: dict[str, Attempts], now: str,
                      decision: Decision) -> None:
    if job.spec.suspend:
        return
    for stage in _selected(job, status):
        if stage.state == "Starting" and stage.attempt not in by_stage.get(stage.name, {}):
            found = problems(job, stage.name, stage.attempt)
            if found:
                _refuse(stage, found, now, decision)
                continue
            decision.actions.append(CreateChild(stage.name, stage.attempt, overwrite=stage.rerun))
            api_version, kind, _ = CHILD_KINDS[job.spec.launcher]
            stage.child_ref = ChildRef(api_version=api_version, kind=kind, name=_name(job, stage))


def _refuse(stage: StageStatus, found: list[Problem], now: str, decision: Decision) -> None:
    """The objects of this attempt could not exist: the stage fails at once (retrying cannot help)."""
    text = "; ".join(str(p) for p in found)
    stage.state, stage.completion_time = "Failed", now
    stage.child_ref = None
    stage.reason = INVALID_SPEC
    stage.message = f"{text}; nothing was created: change the spec, then restart from this stage"
    decision.events.append(Event("Warning", INVALID_SPEC, f"Stage {stage.name}: {text}"))


def unreadable(body: Mapping[str, Any], error: InvalidSpec, now: str) -> Decision:
    """A job the operator cannot read (the CRD's schema should have refused it: an object stored
    under an older, looser CRD, say): Failed, naming the fields, and nothing else is done."""
    shown = "; ".join(f"{f}: {m}" for f, m in error.errors[:5])
    more = f"; and {len(error.errors) - 5} more" if len(error.errors) > 5 else ""
    try:
        status = RLHFJobStatus.model_validate(body.get("status") or {})
    except ValidationError:
        status = RLHFJobStatus()
    old = status.model_copy(deep=True)
    generation = int((body.get("metadata") or {}).get("generation", 0))
    status.phase, status.stage = "Failed", ""
    status.message = f"invalid spec: {shown}{more}"
    status.observed_generation = generation
    status.completion_time = status.completion_time or now
    set_phase_conditions(status, INVALID_SPEC, now, generation)
    news = old.phase != "Failed" or old.message != status.message
    return Decision(status, events=[Event("Warning", INVALID_SPEC, status.message)] if news else [])


def _pass_suspend(job: Job, status: RLHFJobStatus, by_stage: dict[str, Attempts], decision: Decision) -> None:
    for stage in _selected(job, status):
        child = by_stage.get(stage.name, {}).get(stage.attempt)
        if stage.state not in ACTIVE_STATES or child is None or child.kueue_managed or child.deleting:
            continue
        if child.suspend_requested != job.spec.suspend:
            decision.actions.append(SuspendChild(child.kind, child.name, job.spec.suspend))


def _name(job: Job, stage: StageStatus) -> str:
    return child_name(job.name, stage.name, stage.attempt)
