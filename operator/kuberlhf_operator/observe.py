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
from dataclasses import dataclass
from typing import Any, Literal, Mapping, Sequence

from .names import KUEUE_QUEUE_LABEL, LABEL_ATTEMPT, LABEL_STAGE

ChildState = Literal["Starting", "Running", "Suspended", "Succeeded", "Failed"]

TRAINER_INPUT_ERROR = 2
"""The trainer's exit code for bad input (config, data, stale outputs): retrying cannot help."""
KUBEFLOW_JOB_NAME_LABEL = "training.kubeflow.org/job-name"
KUBEFLOW_REPLICA_LABEL = "training.kubeflow.org/replica-type"


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

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> "Child":
        meta = body.get("metadata", {})
        labels = meta.get("labels") or {}
        state, reason, message = child_state((body.get("status") or {}).get("conditions") or [])
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
        )


def child_state(conditions: list[Mapping[str, Any]]) -> tuple[ChildState, str, str]:
    """(state, reason, message) from Kubeflow JobConditions; Starting when nothing is True yet."""
    true = {c.get("type"): c for c in conditions if c.get("status") == "True"}
    for condition_type, state in _PRECEDENCE:
        if condition_type in true:
            found = true[condition_type]
            return state, found.get("reason") or condition_type, found.get("message") or ""
    return "Starting", "", ""


def controller_uid(meta: Mapping[str, Any]) -> str | None:
    for ref in meta.get("ownerReferences") or []:
        if ref.get("controller"):
            return ref.get("uid")
    return None


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def pod_failure(pods: Sequence[Mapping[str, Any]]) -> FailureDetail | None:
    """The first failed container of a child's pods, the master or launcher looked at first."""
    first = sorted(pods, key=lambda p: (p.get("metadata", {}).get("labels") or {}).get(KUBEFLOW_REPLICA_LABEL, "")
                   not in ("master", "launcher"))
    for pod in first:
        for status in (pod.get("status") or {}).get("containerStatuses") or []:
            terminated = (status.get("state") or {}).get("terminated") or {}
            code = terminated.get("exitCode")
            if code:
                return _detail(int(code), terminated.get("reason") or "Error", (terminated.get("message") or "").strip())
    return None


def _detail(code: int, reason: str, text: str) -> FailureDetail:
    try:
        report = json.loads(text.splitlines()[-1]) if text else None
    except ValueError:
        report = None
    if isinstance(report, dict) and "message" in report:
        return FailureDetail(code, str(report.get("reason") or reason), str(report["message"]),
                             bool(report.get("retryable", code != TRAINER_INPUT_ERROR)))
    return FailureDetail(code, reason, text, code != TRAINER_INPUT_ERROR)
