"""RLHFJob `kuberlhf.io/v1alpha1`: spec and status types, the single source of the CRD.

`hack/generate_crd.py` turns these models (and the trainer's RunConfig for `spec.config`) into
manifests/crds/kuberlhf.io_rlhfjobs.yaml, the way controller-gen turns Go types into a CRD:
field descriptions become `kubectl explain` text, `Field` bounds become OpenAPI validation,
`x-kubernetes-*` keys in `json_schema_extra` pass through unchanged. The operator parses
objects with the same models, so the API server's defaults and ours are the same numbers.
Shared patterns are in api_base.py, pod-level types (scheduling, identity) in api_pod.py, the
status in api_status.py.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional

from pydantic import ConfigDict, Field

from .api_base import (ABSOLUTE_PATH, ABSOLUTE_PATH_HELP, DNS_SUBDOMAIN, IMAGE, LABEL_VALUE, POSITIVE_QUANTITY,
                       QUALIFIED_NAME, QUANTITY_EXTRA, RESERVED_ENV, RESERVED_ENV_PREFIXES, RESERVED_MOUNTS, Model,
                       Quantity, cel_list)
from .api_pod import (POD_ANNOTATIONS, POD_LABELS, Affinity, AnnotationValue, LabelValue, LocalObjectReference,
                      PodSecurity, Toleration)
from .api_status import (ACTIVE_STATES, ChildRef, Condition, Phase, RLHFJobStatus, StageState, StageStatus,  # noqa: F401
                         empty_stage_statuses)
from .names import STAGES

Launcher = Literal["pytorchjob", "mpijob"]
# --------------------------------------------------------------------------------------------
# Spec
# --------------------------------------------------------------------------------------------


class ResourceRequirements(Model):
    """CPU, memory and other resources of each training pod (GPUs are set by gpusPerNode)."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        {"rule": "!has(self.requests) || !has(self.limits) || self.requests.all(k, !(k in self.limits)"
                 " || !quantity(string(self.requests[k])).isGreaterThan(quantity(string(self.limits[k]))))",
         "message": "a request is above its limit: the API server would refuse the training pods",
         "fieldPath": ".requests"},
        {"rule": "(!has(self.requests) || !('nvidia.com/gpu' in self.requests))"
                 " && (!has(self.limits) || !('nvidia.com/gpu' in self.limits))",
         "message": "set GPUs with the stage's gpusPerNode, not as a resource", "fieldPath": ".limits"},
        {"rule": f"(!has(self.requests) || self.requests.all(k, k.matches(r'{QUALIFIED_NAME}')))"
                 f" && (!has(self.limits) || self.limits.all(k, k.matches(r'{QUALIFIED_NAME}')))",
         "message": "resource names are qualified names such as cpu, memory or example.com/fpga"},
    ]})

    requests: dict[str, Quantity] = Field(
        default_factory=dict,
        description="Minimum resources per pod, e.g. {cpu: 8, memory: 64Gi}.",
        json_schema_extra={"additionalProperties": QUANTITY_EXTRA, "maxProperties": 16},
    )
    limits: dict[str, Quantity] = Field(
        default_factory=dict,
        description="Maximum resources per pod, e.g. {memory: 128Gi}.",
        json_schema_extra={"additionalProperties": QUANTITY_EXTRA, "maxProperties": 16},
    )


class StageSpec(Model):
    """How one stage runs: pods, GPUs, resources and retries."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        {"rule": "!has(self.processesPerNode) || self.gpusPerNode == 0 || self.processesPerNode == self.gpusPerNode",
         "message": "with GPUs each process trains on one GPU: processesPerNode must equal gpusPerNode (or be unset)",
         "fieldPath": ".processesPerNode"},
    ]})

    nodes: int = Field(1, ge=1, le=256, description="Pods (nodes) that train this stage.")
    gpus_per_node: int = Field(
        1, ge=0, le=16, description="nvidia.com/gpu requested by each training pod; 0 trains on the CPU."
    )
    processes_per_node: Optional[int] = Field(
        None, ge=1, le=64, description="Training processes per pod; unset means one per GPU, or 1 without GPUs."
    )
    resources: ResourceRequirements = Field(
        default_factory=ResourceRequirements, description="Resources of each training pod besides GPUs."
    )
    shm_size: Quantity = Field(
        "8Gi",
        description="Size limit of the memory-backed /dev/shm (NCCL and data loaders need more than the "
        "container runtime's 64Mi). It counts against the pod's memory limit.",
        json_schema_extra=POSITIVE_QUANTITY,
    )
    retry_limit: int = Field(
        1, ge=0, le=10, description="Failed attempts retried with a new child job before the RLHFJob fails."
    )
    start_deadline_seconds: int = Field(
        1200, ge=1, le=604800,
        description="Seconds an attempt's pods may take to run (scheduling, node scale-up, image pulls), from "
        "the child's creation or its admission by Kueue. Then the attempt fails with the pods' own reasons, "
        "e.g. Unschedulable and the scheduler's message.",
    )
    image_pull_deadline_seconds: int = Field(
        300, ge=1, le=86400,
        description="Seconds a scheduled pod may keep failing to pull an image (ErrImagePull, ImagePullBackOff) "
        "before the attempt fails; InvalidImageName and ErrImageNeverPull fail it at once, without a retry.",
    )
    disruption_limit: int = Field(
        10, ge=0, le=100,
        description="Disruptions of the stage's pods (evictions, preemptions, node drains and shutdowns) answered "
        "with a new attempt that resumes from the last checkpoint without using a retry; more count against "
        "retryLimit.",
    )
    termination_grace_period_seconds: int = Field(
        300, ge=30, le=7200,
        description="Seconds a training pod gets between SIGTERM and SIGKILL: the trainer saves a checkpoint "
        "on SIGTERM. Long enough for a 13B-parameter model's ZeRO checkpoint at about 1 GB/s.",
    )
    active_deadline_seconds: Optional[int] = Field(
        None, ge=1,
        description="The child's runPolicy.activeDeadlineSeconds: an attempt running longer is failed by the "
        "Kubeflow operator, and not retried. Unset: no limit.",
    )

    @property
    def processes(self) -> int:
        return self.processes_per_node or max(self.gpus_per_node, 1)


class PPOStageSpec(StageSpec):
    """How PPO runs: as every stage, with twice the time to save a checkpoint (actor and critic)."""

    termination_grace_period_seconds: int = Field(
        600, ge=30, le=7200,
        description="Seconds a training pod gets between SIGTERM and SIGKILL: the trainer saves a checkpoint "
        "on SIGTERM (PPO saves actor and critic, and checks for SIGTERM once per iteration).",
    )


class StagesSpec(Model):
    """Per-stage settings; a stage that is left out uses the defaults."""

    sft: StageSpec = Field(default_factory=StageSpec, description="Step 1: supervised fine-tuning.",
                           json_schema_extra={"default": {}})
    reward: StageSpec = Field(default_factory=StageSpec, description="Step 2: reward model training.",
                              json_schema_extra={"default": {}})
    ppo: PPOStageSpec = Field(default_factory=PPOStageSpec, description="Step 3: PPO.",
                              json_schema_extra={"default": {}})

    def of(self, stage: str) -> StageSpec:
        return getattr(self, stage)


class ClaimTemplate(Model):
    """A PersistentVolumeClaim the operator creates for this job, named '<job>-storage'."""

    size: Quantity = Field(..., description="Requested capacity, e.g. 500Gi.", json_schema_extra=POSITIVE_QUANTITY)
    storage_class_name: Optional[str] = Field(
        None, max_length=253, pattern=DNS_SUBDOMAIN, description="StorageClass; unset uses the cluster default."
    )
    access_modes: list[Literal["ReadWriteMany", "ReadWriteOnce", "ReadWriteOncePod"]] = Field(
        default_factory=lambda: ["ReadWriteMany"],
        min_length=1,
        max_length=3,
        description="Access modes; ReadWriteMany lets every node of a multi-node stage mount it.",
        json_schema_extra={"default": ["ReadWriteMany"], "x-kubernetes-list-type": "set"},
    )
    retention_policy: Literal["Retain", "Delete"] = Field(
        "Retain",
        description="Retain keeps the claim (and the trained models) when the RLHFJob is deleted; "
        "Delete removes it with the job.",
    )


class StorageSpec(Model):
    """Shared storage that carries checkpoints from stage to stage: '<mountPath>/<job>/<stage>/'."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        {"rule": "has(self.claimName) != has(self.claimTemplate)",
         "message": "set exactly one of claimName (an existing claim) and claimTemplate (a claim to create)"},
    ]})

    claim_name: Optional[str] = Field(
        None, max_length=253, pattern=DNS_SUBDOMAIN,
        description="An existing PersistentVolumeClaim in the job's namespace. Exactly one of claimName "
        "and claimTemplate.",
    )
    claim_template: Optional[ClaimTemplate] = Field(
        None, description="A claim the operator creates. Exactly one of claimName and claimTemplate."
    )
    mount_path: str = Field(
        "/mnt/kuberlhf", pattern=ABSOLUTE_PATH, max_length=256,
        description=f"Where the storage is mounted in training pods: {ABSOLUTE_PATH_HELP}, not /etc/kuberlhf "
        "(the config) or /dev/shm, nor a folder above them.",
        json_schema_extra={"x-kubernetes-validations": [
            {"rule": f"!({cel_list(RESERVED_MOUNTS)}.exists(p, p == self || p.startsWith(self + '/')"
                     " || self.startsWith(p + '/')))",
             "message": "training pods mount the config at /etc/kuberlhf and shared memory at /dev/shm: "
             "choose a path apart from both, e.g. /mnt/kuberlhf"},
        ]},
    )


class SecretKeyRef(Model):
    """A key of a Secret in the job's namespace."""

    name: str = Field(..., min_length=1, max_length=253, pattern=DNS_SUBDOMAIN, description="Secret name.")
    key: str = Field("token", min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$",
                     description="Key within the Secret.")


class EnvVar(Model):
    """An environment variable of the training containers."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        {"rule": f"!(self.name in {cel_list(RESERVED_ENV)})"
                 + "".join(f" && !self.name.startsWith('{p}')" for p in RESERVED_ENV_PREFIXES),
         "message": "the hub token comes only from hubTokenSecret (never as a plain value), and "
         f"{', '.join(p + '*' for p in RESERVED_ENV_PREFIXES)} are set by the operator and the training-operator",
         "fieldPath": ".name"},
    ]})

    name: str = Field(..., min_length=1, max_length=256, pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$",
                      description="Variable name.")
    value: str = Field("", max_length=32768, description="Value.")


LAUNCHER_RESOURCES = {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "2Gi"}}


class MPISpec(Model):
    """Settings used only with launcher mpijob."""

    ssh_auth_mount_path: str = Field(
        "/home/mpiuser/.ssh", max_length=256, pattern=ABSOLUTE_PATH,
        description=f"Where mpi-operator mounts the SSH keys; the home of the image's non-root user: "
        f"{ABSOLUTE_PATH_HELP}.",
    )
    sshd_command: list[Annotated[str, Field(min_length=1, max_length=4096)]] = Field(
        default_factory=lambda: ["/usr/sbin/sshd", "-De", "-f", "/home/mpiuser/.sshd_config"],
        min_length=1, max_length=32,
        description="The worker containers' command: an SSH daemon the launcher's mpirun connects to.",
        json_schema_extra={"default": ["/usr/sbin/sshd", "-De", "-f", "/home/mpiuser/.sshd_config"]},
    )
    launcher_resources: ResourceRequirements = Field(
        default_factory=lambda: ResourceRequirements(**LAUNCHER_RESOURCES),
        description="Resources of the launcher pod (mpirun and DeepSpeed's launcher, no GPUs): requests keep it "
        "from being evicted first and let it run where quotas require them.",
        json_schema_extra={"default": LAUNCHER_RESOURCES},
    )


def _spec_rules() -> list[dict[str, str]]:
    """What spans fields of the spec: stages against the config, storage and launcher."""
    rules = []
    for stage in STAGES:
        rules.append({
            "rule": f"!has(self.config.device) || self.config.device != 'cuda'"
                    f" || (has(self.config.steps) && !('{stage}' in self.config.steps)) || self.stages.{stage}.gpusPerNode > 0",
            "message": "config.device is cuda: every stage that runs needs gpusPerNode > 0",
            "fieldPath": f".stages.{stage}.gpusPerNode",
        })
    return rules + [
        {"rule": "!self.parallelSFTAndReward || !has(self.config.steps)"
                 " || ('sft' in self.config.steps && 'reward' in self.config.steps)",
         "message": "parallelSFTAndReward runs sft and reward together: config.steps must include both",
         "fieldPath": ".parallelSFTAndReward"},
        {"rule": "!has(self.storage.claimTemplate) || 'ReadWriteMany' in self.storage.claimTemplate.accessModes"
                 " || (self.stages.sft.nodes == 1 && self.stages.reward.nodes == 1 && self.stages.ppo.nodes == 1)",
         "message": "a stage with nodes > 1 mounts the claim on several nodes: accessModes must include ReadWriteMany",
         "fieldPath": ".storage.claimTemplate.accessModes"},
        {"rule": "!has(self.storage.claimTemplate) || !self.parallelSFTAndReward"
                 " || self.storage.claimTemplate.accessModes.exists(m, m != 'ReadWriteOncePod')",
         "message": "ReadWriteOncePod lets one pod mount the claim, and parallelSFTAndReward runs two at once",
         "fieldPath": ".storage.claimTemplate.accessModes"},
        {"rule": f"self.launcher != 'mpijob' || !(self.mpi.sshAuthMountPath in "
                 f"{cel_list(RESERVED_MOUNTS)[:-1]}, self.storage.mountPath])",
         "message": "the MPIJob's workers mount the SSH keys, the storage, /etc/kuberlhf and /dev/shm: each needs "
         "its own path", "fieldPath": ".mpi.sshAuthMountPath"},
    ]


class RLHFJobSpec(Model):
    """Desired state of an RLHF run: the training config and how to run it on this cluster."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": _spec_rules()})

    config: dict[str, Any] = Field(
        ...,
        description="The training run (kuberlhf's RunConfig): models, data and each step's "
        "hyperparameters. config.steps selects the stages. Passed to the trainer as a YAML file.",
    )
    image: str = Field(..., min_length=1, max_length=512, pattern=IMAGE,
                       description="The kuberlhf trainer image (a reference such as registry/repository:tag).")
    image_pull_policy: Optional[Literal["Always", "IfNotPresent", "Never"]] = Field(
        None, description="Pull policy of the trainer image; unset uses the cluster's default."
    )
    image_pull_secrets: list[LocalObjectReference] = Field(
        default_factory=list, max_length=16, description="Secrets for pulling the image."
    )
    launcher: Launcher = Field(
        "pytorchjob",
        description="pytorchjob runs each stage as a Kubeflow PyTorchJob under torchrun; mpijob as an "
        "MPIJob (v2beta1) under DeepSpeed's launcher over the MPI hostfile.",
    )
    parallel_sft_and_reward: bool = Field(
        False,
        alias="parallelSFTAndReward",
        description="Train the SFT model and the reward model at the same time (they do not depend on "
        "each other); PPO starts when both have succeeded.",
    )
    stages: StagesSpec = Field(
        default_factory=StagesSpec, description="Per-stage nodes, GPUs, resources and retries.",
        json_schema_extra={"default": {}},
    )
    storage: StorageSpec = Field(..., description="Shared storage for checkpoints.")
    node_selector: dict[str, Annotated[str, Field(max_length=63, pattern=LABEL_VALUE)]] = Field(
        default_factory=dict, description="Node labels training pods must match.",
        json_schema_extra={"maxProperties": 64, "x-kubernetes-validations": [
            {"rule": f"self.all(k, k.matches(r'{QUALIFIED_NAME}'))",
             "message": "keys are label keys: '[prefix/]name', name at most 63 characters"}]},
    )
    tolerations: list[Toleration] = Field(default_factory=list, max_length=32, description="Pod tolerations.")
    priority_class_name: Optional[str] = Field(
        None, max_length=253, pattern=DNS_SUBDOMAIN, description="PriorityClass of the training pods."
    )
    scheduler_name: Optional[str] = Field(
        None, max_length=253, pattern=DNS_SUBDOMAIN,
        description="The scheduler of the training pods (e.g. a gang scheduler); unset: the cluster's default.",
    )
    affinity: Optional[Affinity] = Field(None, description="Node and pod (anti-)affinity of the training pods.")
    pod_labels: dict[str, LabelValue] = Field(
        default_factory=dict, json_schema_extra=POD_LABELS,
        description="Labels of every pod of every stage; not those the operators set (kuberlhf.io/*, "
        "training.kubeflow.org/*, app.kubernetes.io/managed-by, ...).",
    )
    pod_annotations: dict[str, AnnotationValue] = Field(
        default_factory=dict, json_schema_extra=POD_ANNOTATIONS,
        description="Annotations of every pod of every stage, e.g. Kueue's topology-aware scheduling "
        "(kueue.x-k8s.io/podset-required-topology).",
    )
    hub_token_secret: Optional[SecretKeyRef] = Field(
        None, description="A Secret key holding a Hugging Face hub token, given to the trainer as HF_TOKEN."
    )
    env: list[EnvVar] = Field(
        default_factory=list, max_length=64,
        description="Extra environment of the trainer. Not HF_TOKEN (use hubTokenSecret), nor KUBERLHF_* or PET_*.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    metrics_port: int = Field(
        9090, ge=0, le=65535, description="Port of the trainer's Prometheus endpoint (container port 'metrics'); 0 disables it."
    )
    security_context: PodSecurity = Field(
        default_factory=PodSecurity, description="User and group of the training pods.",
        json_schema_extra={"default": {}},
    )
    mpi: MPISpec = Field(default_factory=MPISpec, description="MPIJob settings.", json_schema_extra={"default": {}})
    suspend: bool = Field(
        False,
        description="Suspend the job: the running stage's child is suspended (its pods are deleted) and no "
        "stage starts until this is false again. A child that Kueue manages is left to Kueue.",
    )


class RLHFJob(Model):
    """An RLHF training run: SFT, reward model and PPO, each stage a Kubeflow job, in order."""

    api_version: str = Field("kuberlhf.io/v1alpha1", description="kuberlhf.io/v1alpha1.")
    kind: str = Field("RLHFJob", description="RLHFJob.")
    metadata: dict[str, Any] = Field(default_factory=dict, description="Standard object metadata.")
    spec: RLHFJobSpec = Field(..., description="Desired state.")
    status: RLHFJobStatus = Field(default_factory=RLHFJobStatus, description="Observed state.")
