"""RLHFJob status types: what the operator observed and decided (part of the CRD, like api.py)."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field

from .api_base import Model
from .names import STAGES

StageName = Literal["sft", "reward", "ppo"]
Phase = Literal["Pending", "Running", "Suspended", "Succeeded", "Failed"]
StageState = Literal["Pending", "Skipped", "Starting", "Queued", "Running", "Suspended", "Succeeded", "Failed"]
ACTIVE_STATES = ("Starting", "Queued", "Running", "Suspended")
DATE_TIME = {"format": "date-time"}


class Condition(Model):
    """A metav1.Condition."""

    type: str = Field(..., max_length=316, description="Condition type, e.g. Succeeded.",
                      pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                              r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$")
    status: Literal["True", "False", "Unknown"] = Field(..., description="True, False or Unknown.")
    observed_generation: Optional[int] = Field(None, ge=0, description="metadata.generation this was set for.")
    last_transition_time: str = Field(..., description="When status last changed.", json_schema_extra=DATE_TIME)
    reason: str = Field(..., min_length=1, max_length=1024, pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
                        description="CamelCase reason for the last transition.")
    message: str = Field("", max_length=32768, description="Human-readable details.")


class ChildRef(Model):
    """The Kubeflow job running a stage attempt."""

    api_version: str = Field(..., description="kubeflow.org/v1 or kubeflow.org/v2beta1.")
    kind: str = Field(..., description="PyTorchJob or MPIJob.")
    name: str = Field(..., description="Name: '<job>-<stage>-<attempt>'.")
    uid: Optional[str] = Field(None, description="UID, once the operator has seen the child.")


class StageStatus(Model):
    """Observed state of one stage."""

    name: StageName = Field(..., description="sft, reward or ppo.")
    state: StageState = Field(
        "Pending",
        description="Pending (waiting for earlier stages), Skipped (not in config.steps), Starting, Queued "
        "(held by Kueue), Running, Suspended, Succeeded or Failed.",
    )
    attempt: int = Field(0, ge=0, description="Number of the current attempt; the child's name ends with it. "
                                               "It keeps counting across retries and restarts.")
    failed_attempts: int = Field(0, ge=0, description="Attempts that failed since the stage last started afresh.")
    disruptions: int = Field(0, ge=0, description="Attempts ended by a disruption (eviction, preemption) since the "
                                                   "stage last started afresh; each resumed without using a retry.")
    disruption: Optional[str] = Field(
        None, max_length=4096, description="A disruption seen among the current attempt's pods, e.g. 'worker-1 "
        "PreemptionByScheduler: ...': the attempt's failure then starts a new attempt without using a retry.")
    rerun: bool = Field(
        False, description="The stage was restarted on request: its child passes --overwrite, so the trainer "
        "replaces the earlier result instead of reusing it."
    )
    child_ref: Optional[ChildRef] = Field(None, description="The current attempt's child job.")
    start_time: Optional[str] = Field(None, description="When the stage first started.", json_schema_extra=DATE_TIME)
    completion_time: Optional[str] = Field(None, description="When the stage succeeded or failed.",
                                           json_schema_extra=DATE_TIME)
    checkpoint_path: Optional[str] = Field(
        None, description="Where the stage writes its checkpoint and summary.json, as training pods see the storage."
    )
    reason: Optional[str] = Field(None, description="Reason of the last change, e.g. PyTorchJobFailed.")
    message: Optional[str] = Field(None, max_length=32768, description="Last message, e.g. the child's failure.")


class RLHFJobStatus(Model):
    """Observed state of the RLHF run."""

    phase: Phase = Field("Pending", description="Pending, Running, Suspended, Succeeded or Failed.")
    stage: str = Field("", description="The stage(s) now active, comma-separated; empty when none.")
    progress: str = Field("", description="'k/n': the latest stage that started is the k-th of the n in "
                                          "config.steps (n/n once all succeeded).")
    stage_state: str = Field("", description="State of the active stage(s), comma-separated like stage.")
    attempt: str = Field("", description="Attempt of the active stage(s), comma-separated like stage.")
    message: str = Field("", description="What is happening, in one line.")
    stages: list[StageStatus] = Field(
        default_factory=list, max_length=3, description="Per-stage state, in pipeline order.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    conditions: list[Condition] = Field(
        default_factory=list, max_length=8,
        description="Ready, Reconciling and Stalled (as kstatus reads them), Running, Suspended, Succeeded and "
        "Failed, as metav1.Conditions.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    observed_generation: Optional[int] = Field(None, ge=0, description="metadata.generation last acted on.")
    claim_name: Optional[str] = Field(None, description="The PersistentVolumeClaim that holds the checkpoints.")
    start_time: Optional[str] = Field(None, description="When the first stage started.", json_schema_extra=DATE_TIME)
    completion_time: Optional[str] = Field(None, description="When the job succeeded or failed.",
                                           json_schema_extra=DATE_TIME)
    restart_request: Optional[str] = Field(
        None, description="The last kuberlhf.io/restart-from annotation value acted on."
    )

    def stage_status(self, name: str) -> StageStatus:
        return next(s for s in self.stages if s.name == name)


def empty_stage_statuses() -> list[StageStatus]:
    return [StageStatus(name=name) for name in STAGES]
