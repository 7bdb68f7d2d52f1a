"""The pod template every training pod shares, whichever launcher runs it.

What each choice protects against:
- `automountServiceAccountToken: false`: the trainer never talks to the API server (progress
  goes out through metrics and summaries), so a compromised training process gets no token.
- non-root `securityContext`, no privilege escalation, all capabilities dropped: training
  needs none of them; `fsGroup` makes the shared storage writable for that user.
- a memory-backed `/dev/shm`: NCCL and data-loader workers exchange tensors through it and
  the runtime's 64Mi default fails them.
- `enableServiceLinks: false`: a namespace with many Services would otherwise inject
  thousands of variables into the trainer's environment.
- `terminationGracePeriodSeconds` of the stage: the trainer saves a checkpoint on SIGTERM (a
  drain, an eviction, a preemption), which takes longer than the default 30 s.

Scheduling settings of the job (nodeSelector, tolerations, affinity, priorityClassName,
schedulerName) and its podLabels and podAnnotations (Kueue's topology-aware scheduling reads
annotations) go into every pod template of every stage, the MPIJob's launcher included.
"""

from __future__ import annotations

from typing import Any

from ..api import ResourceRequirements, StageSpec
from ..job import Job
from ..names import LABEL_COMPONENT, stage_labels

CONFIG_DIR = "/etc/kuberlhf"
CONFIG_FILE = f"{CONFIG_DIR}/config.yaml"
CONFIG_KEY = "config.yaml"
GPU_RESOURCE = "nvidia.com/gpu"
METRICS_PORT_NAME = "metrics"


TERMINATION_LOG = "/dev/termination-log"
METRICS_LINGER_SECONDS = 30
REPORT_DIR_ENV = "KUBERLHF_REPORT_DIR"
"""Where (on the shared storage) each rank also writes its failure report: under MPIJob the trainer
runs on workers whose termination log nobody reads (see children.launcher_command)."""


def trainer_args(job: Job, stage: str, overwrite: bool) -> list[str]:
    """Arguments of `kuberlhf step` (also `python -m kuberlhf_trainer step`) for one stage.
    Without --overwrite the trainer reuses a result it finds for the same config (a re-created
    job resumes); a restarted stage passes it to train again."""
    args = ["step", stage, "--config", CONFIG_FILE, "--output_dir", job.output_dir]
    if job.spec.metrics_port:
        # Keep the final values up for two default scrape intervals: a stage that ends between
        # scrapes would otherwise never be seen complete.
        args += ["--metrics_port", str(job.spec.metrics_port), "--metrics_linger_seconds", str(METRICS_LINGER_SECONDS)]
    if overwrite:
        args.append("--overwrite")
    return args


def trainer_env(job: Job, report_dir: str | None = None) -> list[dict[str, Any]]:
    """The trainer's environment. The hub token is a reference: its value never leaves the Secret."""
    mount = job.spec.storage.mount_path.rstrip("/")
    env: list[dict[str, Any]] = [
        {"name": "PYTHONUNBUFFERED", "value": "1"},
        # Where the trainer writes why it failed; the operator shows it (see observe.FailureDetail).
        {"name": "KUBERLHF_TERMINATION_LOG", "value": TERMINATION_LOG},
        *([{"name": REPORT_DIR_ENV, "value": report_dir}] if report_dir else []),
        # The `job` label of the trainer's Prometheus metrics.
        {"name": "KUBERLHF_JOB", "value": job.name},
        # One download cache per claim, shared by every stage and job that uses it.
        {"name": "HF_HOME", "value": f"{mount}/.cache/huggingface"},
    ]
    token = job.spec.hub_token_secret
    if token is not None:
        env.append({"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": token.name, "key": token.key}}})
    env += [{"name": e.name, "value": e.value} for e in job.spec.env]
    return env


def resources(wanted: ResourceRequirements, gpus: int) -> dict[str, Any]:
    requests = dict(wanted.requests)
    limits = dict(wanted.limits)
    if gpus:
        # Extended resources must have request == limit; setting both is explicit.
        requests[GPU_RESOURCE] = limits[GPU_RESOURCE] = gpus
    out: dict[str, Any] = {}
    if requests:
        out["requests"] = requests
    if limits:
        out["limits"] = limits
    return out


def report_dir(job: Job, stage: str, attempt: int) -> str:
    """One folder per attempt, so that an earlier attempt's report is never taken for this one's."""
    return f"{job.output_dir}/.reports/{stage}-{attempt}"


def container(
    job: Job, name: str, command: list[str], *, resources_: dict[str, Any], training: bool,
    reports: str | None = None,
) -> dict[str, Any]:
    """A container of the trainer image; `training` ones mount config, storage and /dev/shm.
    `reports`: the folder of the attempt's failure reports (MPIJob only)."""
    out: dict[str, Any] = {
        "name": name,
        "image": job.spec.image,
        "command": command,
        "env": trainer_env(job, reports),
        "resources": resources_,
        "terminationMessagePath": TERMINATION_LOG,
        # No report written (a crash): the log's tail becomes the message instead.
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "runAsNonRoot": True,
        },
    }
    if job.spec.image_pull_policy:
        out["imagePullPolicy"] = job.spec.image_pull_policy
    if training:
        out["volumeMounts"] = [
            {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
            {"name": "storage", "mountPath": job.spec.storage.mount_path},
            {"name": "dshm", "mountPath": "/dev/shm"},
        ]
        if job.spec.metrics_port:
            out["ports"] = [{"name": METRICS_PORT_NAME, "containerPort": job.spec.metrics_port, "protocol": "TCP"}]
    return out


def volumes(job: Job, stage: StageSpec, config_map: str, claim: str) -> list[dict[str, Any]]:
    return [
        {"name": "config", "configMap": {"name": config_map, "items": [{"key": CONFIG_KEY, "path": CONFIG_KEY}]}},
        storage_volume(claim),
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": stage.shm_size}},
    ]


def storage_volume(claim: str) -> dict[str, Any]:
    return {"name": "storage", "persistentVolumeClaim": {"claimName": claim}}


def pod_template(
    job: Job, stage: str, attempt: int, containers: list[dict[str, Any]], volumes_: list[dict[str, Any]]
) -> dict[str, Any]:
    security = job.spec.security_context
    spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": job.spec.stages.of(stage).termination_grace_period_seconds,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": security.run_as_user,
            "runAsGroup": security.run_as_group,
            "fsGroup": security.fs_group,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": containers,
        "volumes": volumes_,
        **scheduling(job),
    }
    if job.spec.image_pull_secrets:
        spec["imagePullSecrets"] = [{"name": s.name} for s in job.spec.image_pull_secrets]
    # Ours last: the CRD refuses podLabels that would override them.
    labels = {**job.spec.pod_labels, **stage_labels(job.name, stage, attempt), LABEL_COMPONENT: "trainer"}
    metadata: dict[str, Any] = {"labels": labels}
    if job.spec.pod_annotations:
        metadata["annotations"] = dict(job.spec.pod_annotations)
    return {"metadata": metadata, "spec": spec}


def scheduling(job: Job) -> dict[str, Any]:
    """Where and how the pods are scheduled: the job's settings, as pod spec fields (unset ones left out)."""
    spec = job.spec
    out: dict[str, Any] = {}
    if spec.node_selector:
        out["nodeSelector"] = dict(spec.node_selector)
    if spec.tolerations:
        out["tolerations"] = [t.model_dump(by_alias=True, exclude_none=True) for t in spec.tolerations]
    if spec.affinity is not None:
        out["affinity"] = spec.affinity.model_dump(by_alias=True, exclude_none=True, exclude_defaults=True)
    if spec.priority_class_name:
        out["priorityClassName"] = spec.priority_class_name
    if spec.scheduler_name:
        out["schedulerName"] = spec.scheduler_name
    return out
