"""Whether a stage attempt's pods are on their way, stuck, or out of time: a pure function of the
child, its pods and the stage's settings.

The Kubeflow operators say only so much: a PyTorchJob is Running once its Master pod runs, an
MPIJob once its launcher and every worker run; until then the child has nothing but `Created`,
whatever keeps its pods from running. The pods say why (the scheduler's verdict, a container
waiting on its image or on a missing Secret), so the stage's message shows their reasons while it
waits, and the attempt fails with them once `startDeadlineSeconds` has passed. Image pulls that
cannot succeed fail sooner: InvalidImageName and ErrImageNeverPull at once (the same spec would
fail the same way again, so without a retry), a pull that keeps failing after
`imagePullDeadlineSeconds`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from .api import StageSpec
from .clock import seconds_between
from .observe import Child, Pod, describe

START_DEADLINE = "StartDeadlineExceeded"
IMAGE_PULL_FAILED = "ImagePullFailed"
WAITING_FOR_PODS = "WaitingForPods"
QUOTA_EXCEEDED = "QuotaExceeded"
NO_PODS_GRACE_S = 5.0
"""The Kubeflow operators make a child's pods within a second or two of seeing it. A child with no
pod after this long was refused them (a ResourceQuota, an admission policy), and only the child's
events say so: the caller reads them (Child.warning) from then on."""
HOPELESS_IMAGE = ("InvalidImageName", "ErrImageNeverPull")
PULL_FAILING = ("ErrImagePull", "ImagePullBackOff")
SHOWN = 3  # pods named in a message; the rest are counted
ROUTINE = ("Pending", "ContainerCreating")
ROUTINE_QUIET_S = 30.0
"""Every pod waits Pending, then ContainerCreating, on its way to Running: naming that in the stage's
message would only cost status writes (several per attempt, measured at 200 jobs) while nothing is
wrong. Pods still waiting so after this long are named too: a scheduler that never looks at them
(a schedulerName nobody serves) leaves them Pending without a word."""


@dataclass(frozen=True)
class StartCheck:
    waiting: str = ""                         # the stage's message while it waits ("" : nothing to add)
    reason: str = WAITING_FOR_PODS            # ... and its reason
    failure: tuple[str, str] | None = None    # (reason, message): the attempt fails now
    permanent: bool = False                   # ... and retrying cannot help
    recheck_in: float | None = None           # seconds until a deadline passes, if nothing else happens


def still_starting(child: Child, pods: Sequence[Pod]) -> bool:
    """Not every pod runs yet: the child has not reported Running, or it has (a PyTorchJob's master
    runs) while another of its pods is still pending (torchrun waits for every node)."""
    return child.state == "Starting" or (child.state == "Running" and any(p.waiting for p in pods))


def needs_events(child: Child, has_pods: bool, now: str) -> bool:
    """Whether the caller should read the child's Warning events for this pass: it is still starting
    and has had no pod for NO_PODS_GRACE_S."""
    return child.state == "Starting" and not has_pods and _elapsed(child, now) >= NO_PODS_GRACE_S


def check_start(child: Child, pods: Sequence[Pod], spec: StageSpec, now: str) -> StartCheck:
    """`pods` are the child's own. Decides on the first problem that ends the attempt, else says
    what the pods wait for and when to look again."""
    waiting = [p for p in pods if p.waiting is not None]
    hopeless = [p for p in waiting if p.waiting[0] in HOPELESS_IMAGE]
    if hopeless:
        return StartCheck(failure=(IMAGE_PULL_FAILED, summary(hopeless)), permanent=True)
    pulls = {p: seconds_between(p.scheduled_at, now) for p in waiting
             if p.waiting[0] in PULL_FAILING and p.scheduled_at}
    stuck = [p for p, seconds in pulls.items() if seconds >= spec.image_pull_deadline_seconds]
    if stuck:
        return StartCheck(failure=(IMAGE_PULL_FAILED, f"{summary(stuck)} (no image after "
                                   f"{spec.image_pull_deadline_seconds} s: imagePullDeadlineSeconds)"))
    elapsed = _elapsed(child, now)
    if elapsed >= spec.start_deadline_seconds:
        why = summary(waiting) or (_no_pods(child) if not pods else "its pods are not all running")
        return StartCheck(failure=(START_DEADLINE, f"pods not running after {spec.start_deadline_seconds} s "
                                                   f"(startDeadlineSeconds): {why}"))
    deadlines = [spec.start_deadline_seconds - elapsed,
                 *(spec.image_pull_deadline_seconds - seconds for seconds in pulls.values())]
    if not pods and elapsed < NO_PODS_GRACE_S:
        deadlines.append(NO_PODS_GRACE_S - elapsed)  # then the child's events are read
    shown = [p for p in waiting if p.waiting[0] not in ROUTINE or elapsed >= ROUTINE_QUIET_S]
    if len(shown) < len(waiting):
        deadlines.append(ROUTINE_QUIET_S - elapsed)  # then they are named too
    recheck = max(min(deadlines), 1.0)
    if shown:
        return StartCheck(waiting=f"waiting for pods: {summary(shown)}", recheck_in=recheck)
    if not pods and child.warning is not None:
        quota = "exceeded quota" in child.warning[1]
        return StartCheck(waiting=f"waiting for pods: {_no_pods(child)}", recheck_in=recheck,
                          reason=QUOTA_EXCEEDED if quota else WAITING_FOR_PODS)
    return StartCheck(recheck_in=recheck)


def check_active_deadline(child: Child, spec: StageSpec, now: str) -> tuple[bool, float | None]:
    """(whether the child has run past the stage's activeDeadlineSeconds, else in how many seconds it
    will have). Counted as the Kubeflow operators count it: from its creation or last resumption;
    a finished or suspended child is not running."""
    deadline = spec.active_deadline_seconds
    if not deadline or child.state not in ("Starting", "Running") or child.suspend_requested:
        return False, None
    left = deadline - _elapsed(child, now)
    return (True, None) if left <= 0 else (False, max(left, 1.0))


def _elapsed(child: Child, now: str) -> float:
    return seconds_between(child.since, now) if child.since else 0.0


def _no_pods(child: Child) -> str:
    """Why a child has no pod, as far as its events say."""
    if child.warning is None:
        return f"no pod was created; the {child.kind}'s events say why (e.g. a quota)"
    reason, message = child.warning
    return f"no pod was created; the {child.kind} warns: {reason}: {message}".rstrip(": ")


def summary(pods: Sequence[Pod]) -> str:
    """'master-0 Unschedulable: 0/3 nodes ...; worker-0, worker-1 ImagePullBackOff: ...': pods that
    wait for the same reason and message are named together."""
    groups: dict[tuple[str, str], list[Pod]] = {}
    for pod in sorted(pods, key=lambda p: p.name):
        groups.setdefault(pod.waiting or ("", ""), []).append(pod)
    parts = []
    for (reason, message), members in list(groups.items())[:SHOWN]:
        names = ", ".join(p.short_name for p in members[:SHOWN]) + (
            f" and {len(members) - SHOWN} more" if len(members) > SHOWN else "")
        parts.append(describe(names, reason, message))
    if len(groups) > SHOWN:
        parts.append(f"{len(groups) - SHOWN} more reasons")
    return "; ".join(parts)
