"""What a child job's status says, read the way the Kubeflow operators write it.

PyTorchJob (training-operator v1) and MPIJob (mpi-operator v2beta1) share one status shape:
`status.conditions[]` of JobCondition {type, status, reason, message}, with types Created,
Running, Restarting, Succeeded, Suspended, Failed. The list's order is not a contract, so we
look for conditions by type with status "True", never at the last entry. When a job succeeds
or fails, its Running entry is rewritten to "False" but stays; once Failed is True nothing
changes any more.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Literal, Mapping, Sequence

from .names import KUEUE_QUEUE_LABEL, LABEL_ATTEMPT, LABEL_STAGE

ChildState = Literal["Starting", "Running", "Suspended", "Succeeded", "Failed"]

TRAINER_INPUT_ERROR = 2
"""The trainer's exit code for bad input (config, data, stale outputs): retrying cannot help."""
# On the pods of both kinds: training-operator v1.9.4 (PyTorchJob) labels replica-type
# master|worker; mpi-operator v0.8.0 (MPIJob) labels job-role launcher|worker (launcher pods are
# those of its batch Job '<child>-launcher'), and job-name on every pod, launcher's included.
KUBEFLOW_JOB_NAME_LABEL = "training.kubeflow.org/job-name"
KUBEFLOW_REPLICA_LABEL = "training.kubeflow.org/replica-type"
KUBEFLOW_ROLE_LABEL = "training.kubeflow.org/job-role"
LEADERS = ("master", "launcher")
# Pod status.reason values the kubelet writes when it ends a pod to free its node (node-pressure
# eviction, admission preemption by a critical pod, graceful node shutdown): none is the trainer's fault.
KUBELET_DISRUPTIONS = ("Evicted", "Preempting", "Terminated")


@dataclass(frozen=True)
class FailureDetail:
    """Why a child's pod failed, from its container's termination state.

    The trainer writes one JSON line to its termination log (path in env KUBERLHF_TERMINATION_LOG):
    {"reason": "InvalidConfig", "message": "sft.learning_rate: ...", "retryable": false}. Without
    it, the message is the tail of the container's log (terminationMessagePolicy
    FallbackToLogsOnError), and exit code 2 still marks bad input (torchrun itself exits 1, which
    is why the JSON line is the reliable signal)."""

    exit_code: int
    reason: str
    message: str
    retryable: bool
    disruption: str | None = None  # a pod of the child was evicted or preempted: 'worker-1 Evicted: ...'

# Checked in this order: a terminal condition wins over a stale Running or Suspended entry.
_PRECEDENCE: tuple[tuple[str, ChildState], ...] = (
    ("Failed", "Failed"),
    ("Succeeded", "Succeeded"),
    ("Suspended", "Suspended"),
    ("Running", "Running"),
    ("Restarting", "Running"),
)


@dataclass(frozen=True)
class Child:
    """One child job of an RLHFJob, as observed."""

    api_version: str
    kind: str
    name: str
    uid: str
    stage: str
    attempt: int
    owner_uid: str | None
    state: ChildState
    reason: str
    message: str
    suspend_requested: bool
    kueue_managed: bool
    deleting: bool
    failure: FailureDetail | None = None
    since: str = ""  # when it last began to start: created, or resumed (by us or by Kueue)
    # (reason, message) of its latest Warning event, read while it has no pod: why the Kubeflow
    # operator could not make them (a quota, an admission policy) is said nowhere else.
    warning: tuple[str, str] | None = None

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> "Child":
        meta = body.get("metadata", {})
        labels = meta.get("labels") or {}
        conditions = (body.get("status") or {}).get("conditions") or []
        state, reason, message = child_state(conditions)
        run_policy = (body.get("spec") or {}).get("runPolicy") or {}
        return cls(
            api_version=body.get("apiVersion", ""),
            kind=body.get("kind", ""),
            name=meta.get("name", ""),
            uid=meta.get("uid", ""),
            stage=labels.get(LABEL_STAGE, ""),
            attempt=_int(labels.get(LABEL_ATTEMPT)),
            owner_uid=controller_uid(meta),
            state=state,
            reason=reason,
            message=message,
            suspend_requested=bool(run_policy.get("suspend")),
            kueue_managed=KUEUE_QUEUE_LABEL in labels,
            deleting=bool(meta.get("deletionTimestamp")),
            since=_starting_since(meta.get("creationTimestamp") or "", conditions),
        )


def child_state(conditions: list[Mapping[str, Any]]) -> tuple[ChildState, str, str]:
    """(state, reason, message) from Kubeflow JobConditions; Starting when nothing is True yet."""
    true = {c.get("type"): c for c in conditions if c.get("status") == "True"}
    for condition_type, state in _PRECEDENCE:
        if condition_type in true:
            found = true[condition_type]
            return state, found.get("reason") or condition_type, found.get("message") or ""
    return "Starting", "", ""


def _starting_since(created: str, conditions: list[Mapping[str, Any]]) -> str:
    """A resumed child (Suspended back to False: Kueue admitted it, or the job was resumed) starts
    its pods anew then, not when it was created."""
    resumed = [c.get("lastTransitionTime") or "" for c in conditions
               if c.get("type") == "Suspended" and c.get("status") == "False"]
    return max([created, *resumed])


def controller_ref(meta: Mapping[str, Any]) -> Mapping[str, Any]:
    """The ownerReference with controller: true, or {} when none."""
    return next((ref for ref in meta.get("ownerReferences") or [] if ref.get("controller")), {})


def controller_uid(meta: Mapping[str, Any]) -> str | None:
    return controller_ref(meta).get("uid")


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


@dataclass(frozen=True)
class Ended:
    """A container that ended with a non-zero exit code."""

    container: str
    exit_code: int
    reason: str
    message: str
    finished_at: str


@dataclass(frozen=True)
class Pod:
    """A pod of a child job, reduced to what decisions read (the operator's index holds these, not
    whole pods): why it does not run yet, whether it is being disrupted, which containers failed."""

    name: str
    child: str
    role: str
    phase: str
    scheduled_at: str | None = None
    waiting: tuple[str, str] | None = None     # (reason, message): why it is not running yet
    disruption: tuple[str, str] | None = None  # (reason, message): evicted, preempted, ...
    ended: tuple[Ended, ...] = ()

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> "Pod":
        meta, status = body.get("metadata") or {}, body.get("status") or {}
        labels = meta.get("labels") or {}
        scheduled = _pod_condition(status, "PodScheduled")
        return cls(
            name=meta.get("name", ""),
            child=labels.get(KUBEFLOW_JOB_NAME_LABEL, ""),
            role=labels.get(KUBEFLOW_REPLICA_LABEL) or labels.get(KUBEFLOW_ROLE_LABEL) or "",
            phase=status.get("phase") or "Pending",
            scheduled_at=scheduled.get("lastTransitionTime") if scheduled.get("status") == "True" else None,
            waiting=_waiting(status),
            disruption=_disruption(status),
            ended=tuple(_ended(status)),
        )

    @property
    def short_name(self) -> str:
        """'master-0' of 'chat-sft-1-master-0': the child's name is in the stage message already."""
        return self.name.removeprefix(f"{self.child}-") if self.child else self.name


class Departed:
    """Pods deleted while being disrupted (evicted, drained, preempted), remembered for a while by
    the job they belong to. Where the pod goes at once (a force deletion, a lost node; KWOK always),
    its deletion is the last the watch shows of it, and the pass that judges the child's failure
    (the Kubeflow controller fails it for the deleted pod) may run after the index dropped the pod:
    without this, the failure would count against retryLimit. Only for this process's life."""

    def __init__(self, keep_s: float = 600.0, clock: Callable[[], float] = time.monotonic):
        self.keep_s, self.clock = keep_s, clock
        self._pods: dict[tuple[str, str], list[tuple[float, Pod]]] = {}
        self._lock = threading.Lock()

    def add(self, key: tuple[str, str], pod: Pod) -> None:
        with self._lock:
            self._pods.setdefault(key, []).append((self.clock(), pod))

    def of(self, key: tuple[str, str]) -> list[Pod]:
        """The job's departed pods not yet forgotten."""
        with self._lock:
            kept = [(t, p) for t, p in self._pods.get(key, []) if self.clock() - t < self.keep_s]
            if kept:
                self._pods[key] = kept
            else:
                self._pods.pop(key, None)
            return [p for _, p in kept]


def _pod_condition(status: Mapping[str, Any], type_: str) -> Mapping[str, Any]:
    return next((c for c in status.get("conditions") or [] if c.get("type") == type_), {})


def _waiting(status: Mapping[str, Any]) -> tuple[str, str] | None:
    """Why a Pending pod does not run: the scheduler's verdict, else the first container (init
    containers first, as they run first) that waits with a reason, else plain Pending."""
    if status.get("phase", "Pending") != "Pending":
        return None
    scheduled = _pod_condition(status, "PodScheduled")
    if scheduled.get("status") == "False":
        return scheduled.get("reason") or "Unschedulable", scheduled.get("message") or ""
    for kind, key in (("init container", "initContainerStatuses"), ("container", "containerStatuses")):
        for container in status.get(key) or []:
            waiting = (container.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") and waiting["reason"] != "PodInitializing":
                where = f"{kind} {container.get('name')}: " if kind == "init container" else ""
                return waiting["reason"], where + (waiting.get("message") or "")
    return "Pending", "" if scheduled else "not scheduled yet"


def _disruption(status: Mapping[str, Any]) -> tuple[str, str] | None:
    """The DisruptionTarget condition (scheduler preemption, the Eviction API, the taint manager,
    the kubelet: PreemptionByScheduler, EvictionByEvictionAPI, DeletionByTaintManager,
    TerminationByKubelet), or a kubelet's reason where that condition is missing."""
    target = _pod_condition(status, "DisruptionTarget")
    if target.get("status") == "True":
        return target.get("reason") or "DisruptionTarget", target.get("message") or ""
    if status.get("reason") in KUBELET_DISRUPTIONS:
        return status["reason"], status.get("message") or ""
    return None


def _ended(status: Mapping[str, Any]) -> list[Ended]:
    out = []
    for key in ("initContainerStatuses", "containerStatuses"):
        for container in status.get(key) or []:
            terminated = (container.get("state") or {}).get("terminated") or {}
            if terminated.get("exitCode"):
                out.append(Ended(container.get("name", ""), int(terminated["exitCode"]),
                                 terminated.get("reason") or "Error", (terminated.get("message") or "").strip(),
                                 terminated.get("finishedAt") or ""))
    return out


def describe(pods: str, reason: str, message: str) -> str:
    """'master-0 Unschedulable: 0/3 nodes are available: ...' (pods: one short name or several)."""
    return f"{pods} {reason}: {message}" if message else f"{pods} {reason}"


def pod_failure(pods: Sequence[Pod]) -> FailureDetail | None:
    """Why a child failed, from its pods: the container that failed FIRST (a master that failed
    because a worker died would hide the worker's cause; the leader goes first on a tie), and
    whether a pod was disrupted. None where no pod says anything (e.g. deleted already)."""
    ended = [(e.finished_at or "~", p.role not in LEADERS, p, e) for p in pods for e in p.ended]
    disrupted = next((describe(p.short_name, *p.disruption) for p in pods if p.disruption is not None), None)
    if not ended:
        return FailureDetail(0, "Disrupted", disrupted, True, disrupted) if disrupted else None
    _, _, pod, first = min(ended, key=lambda item: item[:2])
    detail = read_report(first.exit_code, first.reason,
                         first.message or f"{pod.short_name} exited with code {first.exit_code}")
    return replace(detail, disruption=disrupted)


def read_report(code: int, reason: str, text: str) -> FailureDetail:
    """A container's exit: the trainer's JSON report if its message ends with one, else the message as
    it is (a log tail), exit code 2 marking bad input."""
    try:
        report = json.loads(text.splitlines()[-1]) if text else None
    except ValueError:
        report = None
    if isinstance(report, dict) and "message" in report:
        return FailureDetail(code, str(report.get("reason") or reason), str(report["message"]),
                             bool(report.get("retryable", code != TRAINER_INPUT_ERROR)))
    return FailureDetail(code, reason, text, code != TRAINER_INPUT_ERROR)
