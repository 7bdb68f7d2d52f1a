"""The objects a job's stages share: the trainer config (ConfigMap) and the storage claim (PVC)."""

from __future__ import annotations

import hashlib
from typing import Any

import yaml

from ..job import Job
from ..names import claim_name, config_map_name, job_labels
from .pod import CONFIG_KEY


def config_yaml(job: Job) -> str:
    """spec.config as the trainer reads it. --output_dir on the command line overrides output_dir."""
    return yaml.safe_dump(dict(job.spec.config), sort_keys=True)


def build_config_map(job: Job) -> dict[str, Any]:
    """Immutable and named by content: kubelets need not watch it, and a changed spec.config
    (allowed between runs) becomes a new ConfigMap instead of changing the file under a stage."""
    text = config_yaml(job)
    digest = hashlib.sha256(text.encode()).hexdigest()[:10]
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": config_map_name(job.name, digest),
            "namespace": job.namespace,
            "labels": job_labels(job.name),
            "ownerReferences": [job.owner_reference],
        },
        "immutable": True,
        "data": {CONFIG_KEY: text},
    }


def claim_for(job: Job) -> str:
    """The claim training pods mount: the user's, or the one built from the template."""
    storage = job.spec.storage
    return storage.claim_name or claim_name(job.name)


def build_pvc(job: Job) -> dict[str, Any] | None:
    """The claim from spec.storage.claimTemplate, or None when the job uses an existing claim.
    Owned by the job only with retentionPolicy Delete: by default trained models outlive it."""
    template = job.spec.storage.claim_template
    if template is None:
        return None
    metadata: dict[str, Any] = {"name": claim_name(job.name), "namespace": job.namespace, "labels": job_labels(job.name)}
    if template.retention_policy == "Delete":
        metadata["ownerReferences"] = [job.owner_reference]
    spec: dict[str, Any] = {
        "accessModes": list(template.access_modes),
        "resources": {"requests": {"storage": template.size}},
    }
    if template.storage_class_name:
        spec["storageClassName"] = template.storage_class_name
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": metadata, "spec": spec}
