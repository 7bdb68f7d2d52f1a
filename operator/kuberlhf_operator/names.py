"""API coordinates, label and annotation keys, and the deterministic names of owned objects.

Names are a pure function of the RLHFJob's name, the stage and the attempt number, so that
re-running any handler, or a restarted operator, finds the object it created before instead
of creating a second one.
"""

from __future__ import annotations

GROUP = "kuberlhf.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "RLHFJob"
PLURAL = "rlhfjobs"
SINGULAR = "rlhfjob"
SHORT_NAMES = ["rlhf"]
# Not "all": `kubectl delete all --all` would take RLHFJobs (and their trained models' claims) with it.
CATEGORIES = ["kuberlhf"]

STAGES = ("sft", "reward", "ppo")
"""The pipeline in order. Same names as kuberlhf_trainer.config.STEP_NAMES (a unit test checks)."""

# Kubeflow child kinds, keyed by spec.launcher.
KUBEFLOW_GROUP = "kubeflow.org"
CHILD_KINDS = {
    "pytorchjob": ("kubeflow.org/v1", "PyTorchJob", "pytorchjobs"),
    "mpijob": ("kubeflow.org/v2beta1", "MPIJob", "mpijobs"),
}

# Labels on every object the operator creates (and on the children's pods).
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "kuberlhf-operator"
LABEL_PART_OF = "app.kubernetes.io/part-of"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_JOB = f"{GROUP}/rlhfjob"
LABEL_STAGE = f"{GROUP}/stage"
LABEL_ATTEMPT = f"{GROUP}/attempt"

# Copied from the RLHFJob to each child, so that Kueue queues every stage like the job.
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
KUEUE_PRIORITY_LABEL = "kueue.x-k8s.io/priority-class"
KUEUE_LABELS = (KUEUE_QUEUE_LABEL, KUEUE_PRIORITY_LABEL)

RESTART_ANNOTATION = f"{GROUP}/restart-from"
"""Set by a user to rerun from a stage: '<stage>' or '<stage>@<anything>' to repeat a request."""

FINALIZER = f"{GROUP}/finalizer"

MAX_JOB_NAME = 40
"""Longest RLHFJob name. A child is '<job>-<stage>-<attempt>' (up to 40+1+6+1+3 = 51 characters);
MPIJob names its worker pods '<child>-worker-<index>' and PyTorchJob makes a Service of the same
name for each pod, which must stay a 63-character DNS label for up to 256 nodes."""
MAX_CHILD_NAME = 63 - len("-worker-255")


def child_name(job: str, stage: str, attempt: int) -> str:
    """'<job>-<stage>-<attempt>': the attempt number makes each retry a new object."""
    return f"{job}-{stage}-{attempt}"


def config_map_name(job: str, digest: str) -> str:
    """The trainer config of a job, named by the content's digest: a changed config is a new
    ConfigMap, so a running stage never sees its config change under it. The '-trainer-config'
    suffix cannot collide with the '<child>-config' ConfigMap MPIJob makes (child names end in
    a digit)."""
    return f"{job}-trainer-config-{digest}"


def claim_name(job: str) -> str:
    """The PVC the operator creates from spec.storage.claimTemplate."""
    return f"{job}-storage"


def job_labels(job: str) -> dict[str, str]:
    """Labels that select everything the operator made for one RLHFJob."""
    return {LABEL_MANAGED_BY: MANAGED_BY, LABEL_PART_OF: "kuberlhf", LABEL_JOB: job}


def stage_labels(job: str, stage: str, attempt: int) -> dict[str, str]:
    return {**job_labels(job), LABEL_STAGE: stage, LABEL_ATTEMPT: str(attempt)}
