"""Test objects for the operator's pure functions: RLHFJob bodies and observed children, no cluster."""

from __future__ import annotations

import copy
from typing import Any

from kuberlhf_operator.job import Job
from kuberlhf_operator.names import FINALIZER, LABEL_ATTEMPT, LABEL_JOB, LABEL_STAGE, child_name
from kuberlhf_operator.observe import Child

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
          deleting: bool = False, job: str = "demo") -> Child:
    return Child(
        api_version="kubeflow.org/v1" if kind == "PyTorchJob" else "kubeflow.org/v2beta1",
        kind=kind, name=child_name(job, stage, attempt), uid=f"uid-{stage}-{attempt}", stage=stage,
        attempt=attempt, owner_uid=owner, state=state, reason=reason, message=message,
        suspend_requested=suspend, kueue_managed=kueue, deleting=deleting,
    )


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

