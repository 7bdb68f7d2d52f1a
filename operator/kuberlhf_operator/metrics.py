"""Every Prometheus metric the operator exports, in one place (docs/operator.md has the table).

Labels stay low-cardinality: phase, stage, state, kind, trigger, reason. Job names are not
labels; per-job detail lives in the RLHFJob's status and in the trainer's own metrics.
"""

from __future__ import annotations

import threading
from typing import get_args

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from .api import Phase, StageState
from .names import CHILD_KINDS, STAGES

PHASES: tuple[Phase, ...] = ("Pending", "Running", "Suspended", "Succeeded", "Failed")

JOBS = Gauge(
    "kuberlhf_operator_rlhfjobs",
    "RLHFJobs this operator reconciles, by phase.",
    ["phase"],
)
STAGE_TRANSITIONS = Counter(
    "kuberlhf_operator_stage_transitions_total",
    "Stage state changes, by stage and the state entered (a retry counts as entering Starting).",
    ["stage", "state"],
)
CHILDREN_CREATED = Counter(
    "kuberlhf_operator_children_created_total",
    "Child jobs created, by kind (PyTorchJob, MPIJob).",
    ["kind"],
)
RECONCILE_DURATION = Histogram(
    "kuberlhf_operator_reconcile_duration_seconds",
    "Time to reconcile one RLHFJob, by what triggered it (rlhfjob, child, pod, resync).",
    ["trigger"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
RECONCILE_ERRORS = Counter(
    "kuberlhf_operator_reconcile_errors_total",
    "Reconciles that raised, by exception type; the next event or resync retries them.",
    ["reason"],
)
STATUS_CONFLICTS = Counter(
    "kuberlhf_operator_status_conflicts_total",
    "Status writes refused because the RLHFJob changed since it was read (harmless; it is re-read).",
)


class PhaseTracker:
    """Last known phase per RLHFJob uid, feeding the JOBS gauge."""

    def __init__(self) -> None:
        self._phases: dict[str, str] = {}
        self._lock = threading.Lock()

    def set(self, uid: str, phase: str | None) -> None:
        with self._lock:
            if phase is None:
                self._phases.pop(uid, None)
            else:
                self._phases[uid] = phase
        for name, count in self.counts().items():
            JOBS.labels(phase=name).set(count)

    def counts(self) -> dict[str, int]:
        with self._lock:
            phases = list(self._phases.values())
        return {p: phases.count(p) for p in PHASES}


TRIGGERS = ("rlhfjob", "child", "pod", "resync")


def initialize() -> None:
    """Create every known label combination at zero. A counter series that first appears at 1
    shows no increase() or rate() for that first event, so without this a dashboard would miss
    each stage's first transition and the first child of each kind."""
    for stage in STAGES:
        for state in get_args(StageState):
            STAGE_TRANSITIONS.labels(stage=stage, state=state)
    for _, kind, _ in CHILD_KINDS.values():
        CHILDREN_CREATED.labels(kind=kind)
    for trigger in TRIGGERS:
        RECONCILE_DURATION.labels(trigger=trigger)


def serve(port: int) -> None:
    """Expose /metrics on all interfaces (port 0: not at all)."""
    if port:
        initialize()
        start_http_server(port)
