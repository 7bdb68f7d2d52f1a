"""What only the operator can check: whether the objects it would create for a stage attempt can
exist. A pure function of the RLHFJob, the stage and the attempt number; no API calls.

The API server checks each field and the rules between fields (the CRD's schema and CEL rules).
What it cannot check is the size of what the operator renders from them: the trainer config
as one ConfigMap, and `spec.env` copied into every container of a child job. A job whose objects
the API server would refuse fails before any of them is created, with a message that names the
field to change — instead of a child that cannot exist, or a refusal retried for nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .builders import build_child, build_config_map
from .builders.pod import CONFIG_KEY
from .job import Job
from .names import CHILD_KINDS, MAX_CHILD_NAME, child_name

INVALID_SPEC = "InvalidSpec"
"""Reason of a stage (and of the Failed condition and the event) refused for its spec."""
CONFIG_MAP_LIMIT = 1024 * 1024
"""Bytes of data a ConfigMap may hold (the API server's limit)."""
OBJECT_LIMIT = 1024 * 1024
"""Largest child job the operator sends. The API server refuses what etcd will not store, by
default requests over 1.5 MiB; the stored object is larger than the one sent (managedFields,
defaults), so the operator keeps a margin."""


@dataclass(frozen=True)
class Problem:
    field: str  # the RLHFJob's field to change, e.g. spec.env
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


def problems(job: Job, stage: str, attempt: int) -> list[Problem]:
    """Why the objects of this stage attempt cannot be created; empty if they can."""
    name = child_name(job.name, stage, attempt)
    if len(name) > MAX_CHILD_NAME:
        # Only after thousands of attempts: the CRD bounds the job's name.
        return [Problem("metadata.name", f"the child of attempt {attempt} would be named {name!r}, longer than "
                                         f"{MAX_CHILD_NAME} characters; recreate the job under a shorter name")]
    config_map = build_config_map(job)
    size = len(config_map["data"][CONFIG_KEY].encode())
    if size > CONFIG_MAP_LIMIT:
        return [Problem("spec.config", f"is {size} bytes as YAML, and the ConfigMap that carries it to the "
                                       f"trainer holds at most {CONFIG_MAP_LIMIT}")]
    child = build_child(job, stage, attempt, config_map["metadata"]["name"], "claim")
    size = _size(child)
    if size > OBJECT_LIMIT:
        kind = CHILD_KINDS[job.spec.launcher][1]
        field, part, copies = _largest_part(job, child)
        return [Problem(field, f"the {kind} of stage {stage} would be {size} bytes, more than the {OBJECT_LIMIT} "
                               f"the operator creates in one object; {field} is {part} bytes and the {kind} holds "
                               f"{copies} {'copy' if copies == 1 else 'copies'} of it")]
    return []


def _largest_part(job: Job, child: dict[str, Any]) -> tuple[str, int, int]:
    """(field, bytes, copies in the child) of the spec field that contributes most to the child:
    spec.env is in every container, the other fields once or twice (one pod template per replica
    type)."""
    replicas = child["spec"].get("pytorchReplicaSpecs") or child["spec"].get("mpiReplicaSpecs") or {}
    containers = sum(len(r["template"]["spec"]["containers"]) for r in replicas.values())
    spec = job.spec.model_dump(by_alias=True, mode="json", exclude={"config"})  # config goes to the ConfigMap
    parts = [(_size(value) * (containers if key == "env" else 1), f"spec.{key}", _size(value),
              containers if key == "env" else 1) for key, value in spec.items()]
    _, field, size, copies = max(parts)
    return field, size, copies


def _size(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":")).encode())
