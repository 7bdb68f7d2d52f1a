"""Test objects for the operator's pure functions: RLHFJob bodies and observed children, no cluster."""

from __future__ import annotations

import copy
from typing import Any

from kuberlhf_operator.job import Job
from kuberlhf_operator.names import FINALIZER, LABEL_ATTEMPT, LABEL_JOB, LABEL_STAGE, child_name
from kuberlhf_operator.observe import Child, Pod

UID = "uid-of-job"
NOW = "2026-01-01T00:00:00Z"


def job_body(name: str = "demo", spec: dict[str, Any] | None = None, status: dict[str, Any] | None = None,
             labels: dict[str, str] | None = None, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    base_spec: dict[str, Any] = {
        "image": "registry.example/kuberlhf-trainer:1",
        "storage": {"claimName": "shared"},
        "config": {"actor_model": {"name_or_path": "facebook/opt-125m"}},
    }
    _merge(base_spec, spec or {})
    return {
        "apiVersion": "kuberlhf.io/v1alpha1",
        "kind": "RLHFJob",
        "metadata": {"name": name, "namespace": "team", "uid": UID, "generation": 1, "resourceVersion": "7",
                     "labels": labels or {}, "annotations": annotations or {}, "finalizers": [FINALIZER]},
        "spec": base_spec,
        "status": status or {},
    }


def make_job(**kwargs: Any) -> Job:
    return Job.from_body(job_body(**kwargs))


def child(stage: str, attempt: int = 1, state: str = "Running", *, kind: str = "PyTorchJob", reason: str = "",
          message: str = "", suspend: bool = False, kueue: bool = False, owner: str = UID,
          deleting: bool = False, job: str = "demo", since: str = NOW,
          warning: tuple[str, str] | None = None) -> Child:
    return Child(
        api_version="kubeflow.org/v1" if kind == "PyTorchJob" else "kubeflow.org/v2beta1",
        kind=kind, name=child_name(job, stage, attempt), uid=f"uid-{stage}-{attempt}", stage=stage,
        attempt=attempt, owner_uid=owner, state=state, reason=reason, message=message,
        suspend_requested=suspend, kueue_managed=kueue, deleting=deleting, since=since, warning=warning,
    )


# -- pods, as the kubelet, the scheduler and the Kubeflow controllers leave them ----------------


def pod_body(child_name_: str, role: str = "master", index: int = 0, *, kind: str = "PyTorchJob",
             phase: str = "Pending", conditions: list[dict] | None = None, containers: list[dict] | None = None,
             init_containers: list[dict] | None = None, reason: str | None = None, message: str | None = None,
             deleting: bool = False) -> dict[str, Any]:
    """A pod of a child. PyTorchJob pods (training-operator v1.9.4) are '<child>-<role>-<index>' with
    label replica-type; MPIJob pods (mpi-operator v0.8.0) carry job-role, and the launcher is a pod of
    the batch Job '<child>-launcher'. Both carry job-name and the pod template's labels (ours)."""
    labels = {"training.kubeflow.org/job-name": child_name_, LABEL_JOB: "demo",
              "training.kubeflow.org/operator-name": "pytorchjob-controller" if kind == "PyTorchJob" else "mpi-operator"}
    if kind == "PyTorchJob":
        labels["training.kubeflow.org/replica-type"] = role
        name = f"{child_name_}-{role}-{index}"
    else:
        labels["training.kubeflow.org/job-role"] = role
        name = f"{child_name_}-launcher-x7k2p" if role == "launcher" else f"{child_name_}-worker-{index}"
    status: dict[str, Any] = {"phase": phase, "conditions": conditions or []}
    if containers is not None:
        status["containerStatuses"] = containers
    if init_containers is not None:
        status["initContainerStatuses"] = init_containers
    if reason:
        status["reason"], status["message"] = reason, message or ""
    meta: dict[str, Any] = {"name": name, "namespace": "team", "labels": labels}
    if deleting:
        meta["deletionTimestamp"] = NOW
    return {"metadata": meta, "status": status}


def pod(*args: Any, **kwargs: Any) -> Pod:
    return Pod.from_body(pod_body(*args, **kwargs))


def unschedulable(message: str) -> list[dict]:
    return [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message,
             "lastTransitionTime": NOW}]


def scheduled(at: str = NOW) -> list[dict]:
    return [{"type": "PodScheduled", "status": "True", "lastTransitionTime": at}]


def waiting(container: str, reason: str, message: str = "") -> dict:
    return {"name": container, "ready": False, "restartCount": 0,
            "state": {"waiting": {"reason": reason, "message": message}}}


def running(container: str = "pytorch") -> dict:
    return {"name": container, "ready": True, "restartCount": 0, "state": {"running": {"startedAt": NOW}}}


def terminated(container: str, code: int, reason: str = "Error", message: str = "", finished: str = NOW) -> dict:
    return {"name": container, "ready": False, "restartCount": 0, "state": {"terminated": {
        "exitCode": code, "reason": reason, "message": message, "startedAt": NOW, "finishedAt": finished}}}


def disruption_target(reason: str, message: str) -> dict:
    return {"type": "DisruptionTarget", "status": "True", "reason": reason, "message": message,
            "lastTransitionTime": NOW}


def kubeflow_body(stage: str, attempt: int, conditions: list[dict[str, str]], **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob",
        "metadata": {"name": child_name("demo", stage, attempt), "uid": "c-uid",
                     "labels": {LABEL_JOB: "demo", LABEL_STAGE: stage, LABEL_ATTEMPT: str(attempt), **labels},
                     "ownerReferences": [{"uid": UID, "controller": True}]},
        "spec": {"runPolicy": {}},
        "status": {"conditions": conditions},
    }


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> None:
    for key, value in copy.deepcopy(extra).items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value

