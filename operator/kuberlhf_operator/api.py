"""RLHFJob `kuberlhf.io/v1alpha1`: spec and status types, the single source of the CRD.

`hack/generate_crd.py` turns these models (and the trainer's RunConfig for `spec.config`) into
manifests/crds/kuberlhf.io_rlhfjobs.yaml, the way controller-gen turns Go types into a CRD:
field descriptions become `kubectl explain` text, `Field` bounds become OpenAPI validation,
`x-kubernetes-*` keys in `json_schema_extra` pass through unchanged. The operator parses
objects with the same models, so the API server's defaults and ours are the same numbers.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from .names import STAGES

Launcher = Literal["pytorchjob", "mpijob"]
StageName = Literal["sft", "reward", "ppo"]
Quantity = Union[int, str]
"""A Kubernetes resource quantity such as 8Gi or 500m (the CRD marks it int-or-string)."""

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# A label value, and a qualified name ('[prefix/]name', e.g. nvidia.com/gpu): label keys, resource
# names, taint keys. Checked here because the Kubeflow CRDs do not check their pod templates: a
# value the Pod API refuses would give a child whose pods never get created.
LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
QUALIFIED_NAME = (r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                  r"([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9]$")
# Non-negative (the API server's own quantity syntax allows a sign); bounded for the CEL rules' cost.
QUANTITY = r"^\+?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
QUANTITY_EXTRA = {"x-kubernetes-int-or-string": True, "pattern": QUANTITY, "maxLength": 64}
POSITIVE_QUANTITY = {**QUANTITY_EXTRA, "x-kubernetes-validations": [
    {"rule": "quantity(string(self)).isGreaterThan(quantity('0'))", "message": "must be more than 0"}]}
# An absolute path of plain segments: it is mounted into pods and ends up on command lines.
ABSOLUTE_PATH = r"^(/\.?[-_A-Za-z0-9][-._A-Za-z0-9]*)+$"
ABSOLUTE_PATH_HELP = "an absolute path of letters, digits, '-', '_' and '.' (no '.' or '..' segments)"
# Where training pods mount the trainer config and /dev/shm; storage or SSH keys there would collide.
RESERVED_MOUNTS = ("/etc/kuberlhf", "/dev/shm")
# An image reference (registry/repository:tag@digest): no spaces, shell characters or non-ASCII.
IMAGE = r"^[A-Za-z0-9][-A-Za-z0-9._/:@]*$"
# Environment variables the operator or the training-operator sets; the hub token comes only from
# hubTokenSecret, so that its value is never written into an RLHFJob or a child job.
RESERVED_ENV = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
RESERVED_ENV_PREFIXES = ("KUBERLHF_", "PET_")


def _cel_list(values: tuple[str, ...]) -> str:
    return "[" + ", ".join(f"'{v}'" for v in values) + "]"


class _Model(BaseModel):
    # camelCase on the wire like every Kubernetes API; snake_case in Python.
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


# --------------------------------------------------------------------------------------------
# Spec
# --------------------------------------------------------------------------------------------


class ResourceRequirements(_Model):
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


class StageSpec(_Model):
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

    @property
    def processes(self) -> int:
        return self.processes_per_node or max(self.gpus_per_node, 1)


class StagesSpec(_Model):
    """Per-stage settings; a stage that is left out uses the defaults."""

    sft: StageSpec = Field(default_factory=StageSpec, description="Step 1: supervised fine-tuning.",
                           json_schema_extra={"default": {}})
    reward: StageSpec = Field(default_factory=StageSpec, description="Step 2: reward model training.",
                              json_schema_extra={"default": {}})
    ppo: StageSpec = Field(default_factory=StageSpec, description="Step 3: PPO.",
                           json_schema_extra={"default": {}})

    def of(self, stage: str) -> StageSpec:
        return getattr(self, stage)


class ClaimTemplate(_Model):
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


class StorageSpec(_Model):
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
            {"rule": f"!({_cel_list(RESERVED_MOUNTS)}.exists(p, p == self || p.startsWith(self + '/')"
                     " || self.startsWith(p + '/')))",
             "message": "training pods mount the config at /etc/kuberlhf and shared memory at /dev/shm: "
             "choose a path apart from both, e.g. /mnt/kuberlhf"},
        ]},
    )


class SecretKeyRef(_Model):
    """A key of a Secret in the job's namespace."""

    name: str = Field(..., min_length=1, max_length=253, pattern=DNS_SUBDOMAIN, description="Secret name.")
    key: str = Field("token", min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$",
                     description="Key within the Secret.")


class EnvVar(_Model):
    """An environment variable of the training containers."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        {"rule": f"!(self.name in {_cel_list(RESERVED_ENV)})"
                 + "".join(f" && !self.name.startsWith('{p}')" for p in RESERVED_ENV_PREFIXES),
         "message": "the hub token comes only from hubTokenSecret (never as a plain value), and "
         f"{', '.join(p + '*' for p in RESERVED_ENV_PREFIXES)} are set by the operator and the training-operator",
         "fieldPath": ".name"},
    ]})

    name: str = Field(..., min_length=1, max_length=256, pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$",
                      description="Variable name.")
    value: str = Field("", max_length=32768, description="Value.")


class LocalObjectReference(_Model):
    """A reference to an object in the same namespace."""

    name: str = Field(..., min_length=1, max_length=253, pattern=DNS_SUBDOMAIN, description="Name of the object.")


class Toleration(_Model):
    """A pod toleration, as in the core API."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        {"rule": "!has(self.operator) || self.operator != 'Exists' || !has(self.value) || self.value == ''",
         "message": "operator Exists matches any value: leave value empty", "fieldPath": ".value"},
        {"rule": "(has(self.key) && self.key != '') || (has(self.operator) && self.operator == 'Exists')",
         "message": "an empty key matches every taint and needs operator Exists", "fieldPath": ".operator"},
        {"rule": "!has(self.tolerationSeconds) || (has(self.effect) && self.effect == 'NoExecute')",
         "message": "tolerationSeconds applies to effect NoExecute only", "fieldPath": ".tolerationSeconds"},
    ]})

    key: Optional[str] = Field(None, max_length=316, pattern=r"^$|" + QUALIFIED_NAME,
                               description="Taint key; empty with Exists matches all.")
    operator: Optional[Literal["Exists", "Equal"]] = Field(None, description="Exists or Equal (default).")
    value: Optional[str] = Field(None, max_length=63, pattern=LABEL_VALUE, description="Taint value for Equal.")
    effect: Optional[Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]] = Field(
        None, description="Taint effect to tolerate; empty matches all."
    )
    toleration_seconds: Optional[int] = Field(None, description="How long a NoExecute taint is tolerated.")


class PodSecurity(_Model):
    """The non-root identity training pods run as (the trainer image must allow it)."""

    run_as_user: int = Field(1000, ge=1, description="UID of the training processes (never root).")
    run_as_group: int = Field(1000, ge=0, description="GID of the training processes.")
    fs_group: int = Field(1000, ge=0, description="Group that owns the mounted storage, so the trainer can write.")


class MPISpec(_Model):
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
                 f"{_cel_list(RESERVED_MOUNTS)[:-1]}, self.storage.mountPath])",
         "message": "the MPIJob's workers mount the SSH keys, the storage, /etc/kuberlhf and /dev/shm: each needs "
         "its own path", "fieldPath": ".mpi.sshAuthMountPath"},
    ]


class RLHFJobSpec(_Model):
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


# --------------------------------------------------------------------------------------------
# Status
# --------------------------------------------------------------------------------------------

Phase = Literal["Pending", "Running", "Suspended", "Succeeded", "Failed"]
StageState = Literal["Pending", "Skipped", "Starting", "Queued", "Running", "Suspended", "Succeeded", "Failed"]
ACTIVE_STATES = ("Starting", "Queued", "Running", "Suspended")
DATE_TIME = {"format": "date-time"}


class Condition(_Model):
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


class ChildRef(_Model):
    """The Kubeflow job running a stage attempt."""

    api_version: str = Field(..., description="kubeflow.org/v1 or kubeflow.org/v2beta1.")
    kind: str = Field(..., description="PyTorchJob or MPIJob.")
    name: str = Field(..., description="Name: '<job>-<stage>-<attempt>'.")
    uid: Optional[str] = Field(None, description="UID, once the operator has seen the child.")


class StageStatus(_Model):
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


class RLHFJobStatus(_Model):
    """Observed state of the RLHF run."""

    phase: Phase = Field("Pending", description="Pending, Running, Suspended, Succeeded or Failed.")
    stage: str = Field("", description="The stage(s) now active, comma-separated; empty when none.")
    message: str = Field("", description="What is happening, in one line.")
    stages: list[StageStatus] = Field(
        default_factory=list, max_length=3, description="Per-stage state, in pipeline order.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    conditions: list[Condition] = Field(
        default_factory=list, max_length=8,
        description="Running, Suspended, Succeeded and Failed, as metav1.Conditions.",
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


class RLHFJob(_Model):
    """An RLHF training run: SFT, reward model and PPO, each stage a Kubeflow job, in order."""

    api_version: str = Field("kuberlhf.io/v1alpha1", description="kuberlhf.io/v1alpha1.")
    kind: str = Field("RLHFJob", description="RLHFJob.")
    metadata: dict[str, Any] = Field(default_factory=dict, description="Standard object metadata.")
    spec: RLHFJobSpec = Field(..., description="Desired state.")
    status: RLHFJobStatus = Field(default_factory=RLHFJobStatus, description="Observed state.")


def empty_stage_statuses() -> list[StageStatus]:
    return [StageStatus(name=name) for name in STAGES]
