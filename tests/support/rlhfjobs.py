"""RLHFJob manifests and polling helpers shared by the operator's tests and benchmark."""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any, Callable, TypeVar

from kubernetes import client

REPO_ROOT = Path(__file__).resolve().parents[2]
CRD_PATH = REPO_ROOT / "manifests" / "crds" / "kuberlhf.io_rlhfjobs.yaml"
GROUP, VERSION, PLURAL = "kuberlhf.io", "v1alpha1", "rlhfjobs"
CHILD_PLURALS = {"PyTorchJob": ("v1", "pytorchjobs"), "MPIJob": ("v2beta1", "mpijobs")}
SHARED_CLAIM = "shared"  # the claim manifest() mounts: a test's namespace provides it
T = TypeVar("T")

# A tiny run: the builtin sorting task and builtin models, CPU only, no hub access.
TINY_CONFIG: dict[str, Any] = {
    "actor_model": {"name_or_path": "builtin:tiny", "tokenizer": "builtin:char"},
    "reward_model": {"name_or_path": "builtin:tiny", "tokenizer": "builtin:char"},
    "data": {"datasets": ["builtin:sort"]},
    "device": "cpu",
}


def manifest(name: str, **spec: Any) -> dict[str, Any]:
    """An RLHFJob on CPU (gpusPerNode 0) with an existing claim; keyword arguments override spec."""
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "RLHFJob",
        "metadata": {"name": name},
        "spec": {
            "image": "kuberlhf-trainer:test",
            "storage": {"claimName": SHARED_CLAIM},
            "config": copy.deepcopy(TINY_CONFIG),
            "stages": {s: {"gpusPerNode": 0} for s in ("sft", "reward", "ppo")},
        },
    }
    for key, value in spec.items():
        body["spec"][key] = value
    return body


class Cluster:
    """The few reads and writes tests make, against one namespace."""

    def __init__(self, api: client.ApiClient, namespace: str):
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)
        self.namespace = namespace

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.custom.create_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, body)

    def job(self, name: str) -> dict[str, Any]:
        return self.custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)

    def patch(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        return self.custom.patch_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name, patch)

    def delete(self, name: str) -> None:
        self.custom.delete_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)

    def exists(self, name: str) -> bool:
        try:
            self.job(name)
            return True
        except client.ApiException as error:
            if error.status == 404:
                return False
            raise

    def children(self, kind: str = "PyTorchJob") -> list[dict[str, Any]]:
        version, plural = CHILD_PLURALS[kind]
        items = self.custom.list_namespaced_custom_object("kubeflow.org", version, self.namespace, plural)["items"]
        return sorted(items, key=lambda c: c["metadata"]["name"])

    def child_names(self, kind: str = "PyTorchJob") -> list[str]:
        return [c["metadata"]["name"] for c in self.children(kind)]

    def patch_child(self, kind: str, name: str, patch: dict[str, Any]) -> None:
        version, plural = CHILD_PLURALS[kind]
        self.custom.patch_namespaced_custom_object("kubeflow.org", version, self.namespace, plural, name, patch)

    def events(self, name: str) -> list[tuple[str, str, str]]:
        items = self.core.list_namespaced_event(self.namespace, field_selector=f"involvedObject.name={name}").items
        return [(e.type, e.reason, e.message) for e in items]

    def pods(self, child: str) -> list[client.V1Pod]:
        """The pods the Kubeflow operators made for a child job (launcher included), by name."""
        items = self.core.list_namespaced_pod(self.namespace, label_selector=f"training.kubeflow.org/job-name={child}").items
        return sorted(items, key=lambda p: p.metadata.name)

    def running(self, child: str, count: int) -> list[client.V1Pod]:
        """Wait until `count` of the child's pods run; returns them."""
        return wait_for(f"{count} running pods of {child}", lambda: len(
            pods := [p for p in self.pods(child) if p.status.phase == "Running"]) == count and pods)

    def phase(self, name: str) -> str | None:
        return (self.job(name).get("status") or {}).get("phase")

    def stage(self, name: str, stage: str) -> dict[str, Any]:
        stages = (self.job(name).get("status") or {}).get("stages") or []
        return next((s for s in stages if s["name"] == stage), {})


def printed_columns(table: str) -> list[dict[str, str]]:
    """Rows of `kubectl get` output as {header: value}: columns are cut where their headers start
    (an empty column, such as COMPLETED while a job runs, is then "", not the next column's value)."""
    header, *rows = table.rstrip("\n").split("\n")
    starts = [i for i, ch in enumerate(header) if ch != " " and (i == 0 or header[i - 1] == " ")]
    bounds = list(zip(starts, [*starts[1:], None]))
    return [{header[a:b].strip(): row[a:b].strip() for a, b in bounds} for row in rows]


def wait_for(what: str, check: Callable[[], T], timeout: float = 30, interval: float = 0.1) -> T:
    """Poll until check() is truthy; fail naming what was awaited and the last value seen."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last seen: {last!r}")
