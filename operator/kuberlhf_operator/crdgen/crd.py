"""Assemble the RLHFJob CustomResourceDefinition from the API types and the trainer's schema.

`build_crd(config_schema)` is pure: the caller passes `RunConfig.model_json_schema()` (this
package never imports the trainer). hack/generate_crd.py writes the result to
manifests/crds/kuberlhf.io_rlhfjobs.yaml and a unit test fails when the file drifts.
"""

from __future__ import annotations

from typing import Any

from .. import names
from ..api import RLHFJobSpec, RLHFJobStatus
from .config_rules import with_rules
from .structural import to_structural

GENERATOR = "hack/generate_crd.py"

# Root-level rules see metadata.name and the old object's status (field-level ones do not).
ROOT_RULES = [
    {
        "rule": f"size(self.metadata.name) <= {names.MAX_JOB_NAME}",
        "message": f"metadata.name must be at most {names.MAX_JOB_NAME} characters: child jobs are named "
        "'<name>-<stage>-<attempt>' and their pods' names must stay 63-character DNS labels",
    },
    {
        "rule": "self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",
        "message": "metadata.name must be a DNS-1035 label (lower-case letters, digits and '-', starting "
        "with a letter): Kubeflow jobs and their Services are named after it",
    },
    {
        "rule": "!has(oldSelf.status) || !has(oldSelf.status.phase)"
        " || !(oldSelf.status.phase in ['Running', 'Suspended']) || self.spec.config == oldSelf.spec.config",
        "message": "spec.config cannot change while a stage is running or suspended; change it once the job "
        "has succeeded or failed, then restart from a stage (annotation kuberlhf.io/restart-from)",
    },
]

PRINTER_COLUMNS = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase", "description": "Phase of the job."},
    {"name": "Progress", "type": "string", "jsonPath": ".status.progress",
     "description": "Stage k of n: the latest stage that started, among those in config.steps."},
    {"name": "Stage", "type": "string", "jsonPath": ".status.stage", "description": "Stage(s) now active."},
    {"name": "State", "type": "string", "jsonPath": ".status.stageState",
     "description": "State of the active stage(s): Starting, Queued, Running, Suspended."},
    {"name": "Attempt", "type": "string", "jsonPath": ".status.attempt", "description": "Attempt of the active stage(s)."},
    {"name": "Started", "type": "date", "jsonPath": ".status.startTime", "description": "When the first stage started."},
    {"name": "Completed", "type": "date", "jsonPath": ".status.completionTime",
     "description": "When the job succeeded or failed."},
    {"name": "Launcher", "type": "string", "jsonPath": ".spec.launcher", "priority": 1,
     "description": "Kind of the child jobs."},
    {"name": "Message", "type": "string", "jsonPath": ".status.message", "priority": 1,
     "description": "What is happening."},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def spec_schema(config_schema: dict[str, Any]) -> dict[str, Any]:
    """spec: our own fields with their defaults, and config from the trainer's RunConfig."""
    spec = to_structural(RLHFJobSpec.model_json_schema(by_alias=True), defaults="keep")
    config = to_structural(with_rules(config_schema), defaults="describe")
    config["description"] = spec["properties"]["config"]["description"]
    spec["properties"]["config"] = config
    return spec


def openapi_schema(config_schema: dict[str, Any]) -> dict[str, Any]:
    status = to_structural(RLHFJobStatus.model_json_schema(by_alias=True), defaults="drop")
    return {
        "type": "object",
        "description": "An RLHF training run: SFT, reward model and PPO, each stage a Kubeflow job "
        "(PyTorchJob or MPIJob), run in order with checkpoints handed over on shared storage.",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string", "description": "kuberlhf.io/v1alpha1."},
            "kind": {"type": "string", "description": "RLHFJob."},
            "metadata": {"type": "object"},
            "spec": spec_schema(config_schema),
            "status": status,
        },
        "x-kubernetes-validations": ROOT_RULES,
    }


def build_crd(config_schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{names.PLURAL}.{names.GROUP}",
            "annotations": {f"{names.GROUP}/generated-by": GENERATOR},
        },
        "spec": {
            "group": names.GROUP,
            "names": {
                "kind": names.KIND,
                "listKind": f"{names.KIND}List",
                "plural": names.PLURAL,
                "singular": names.SINGULAR,
                "shortNames": names.SHORT_NAMES,
                "categories": names.CATEGORIES,
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": names.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {"openAPIV3Schema": openapi_schema(config_schema)},
                }
            ],
        },
    }
