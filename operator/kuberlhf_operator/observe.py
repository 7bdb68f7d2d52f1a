"""What a child job's status says, read the way the Kubeflow operators write it.

PyTorchJob (training-operator v1) and MPIJob (mpi-operator v2beta1) share one status shape:
`status.conditions[]` of JobCondition {type, status, reason, message}, with types Created,
Running, Restarting, Succeeded, Suspended, Failed. The list's order is not a contract, so we
look for conditions by type with status "True", never at the last entry. When a job succeeds
or fails, its Running entry is rewritten to "False" but stays; once Failed is True nothing
changes any more.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Mapping

from .names import KUEUE_QUEUE_LABEL, LABEL_ATTEMPT, LABEL_STAGE

ChildState = Literal["Starting", "Running", "Suspended", "Succeeded", "Failed"]

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
