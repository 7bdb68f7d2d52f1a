"""A corpus of invalid RLHFJobs, and who must refuse each one, naming which field.

Every entry is an RLHFJob a user could submit (`kubectl create -f`), wrong in one way. Either

- the API server refuses it (`by="apiserver"`): the CRD's schema and CEL rules, generated from
  kuberlhf_operator.api and the trainer's config; the error must contain `expect`, which names
  the field; or
- the API server cannot tell (`by="operator"`): it is stored, and the running operator marks it
  Failed, with a Failed condition and a Warning event that name `field`, and creates nothing.

Used by tests/integration/operator/test_rlhfjob_validation.py. Each body is the tiny CPU job of
tests/support/rlhfjobs.manifest with one thing changed.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Literal

from tests.support.rlhfjobs import manifest

Where = Literal["apiserver", "operator"]
_DROP = object()


@dataclass(frozen=True)
class Invalid:
    id: str
    category: str
    body: dict[str, Any]
    field: str             # the field the answer must name
    by: Where = "apiserver"
    expect: str = ""       # what the API server's error must contain; defaults to `field`

    @property
    def expected(self) -> str:
        return self.expect or self.field


def job(name: str = "bad", **changes: Any) -> dict[str, Any]:
    """The tiny valid job with `changes` applied: dotted paths under spec ('stages.sft.nodes'), or
    'spec' itself; _DROP removes a key."""
    body = manifest(name)
    for path, value in changes.items():
        keys = path.split(".")
        node = body if keys == ["spec"] else body["spec"]
        *parents, leaf = keys
        for key in parents:
            node = node.setdefault(key, {})
        if value is _DROP:
            node.pop(leaf, None)
        else:
            node[leaf] = copy.deepcopy(value)
    return body


def with_(path: str, value: Any, name: str = "bad") -> dict[str, Any]:
    return job(name, **{path: value})


CPU = {"gpusPerNode": 0}
TEMPLATE = {"claimTemplate": {"size": "10Gi"}}


def _template(**fields: Any) -> dict[str, Any]:
    return {"claimTemplate": {"size": "10Gi", **fields}}


def _mpijob(**mpi: Any) -> dict[str, Any]:
    return job(launcher="mpijob", mpi=mpi)


def _env(*pairs: tuple[str, str]) -> list[dict[str, str]]:
    return [{"name": n, "value": v} for n, v in pairs]


def _toleration(**fields: Any) -> dict[str, Any]:
    return with_("tolerations", [fields])


def _generate_name(prefix: str) -> dict[str, Any]:
    body = manifest("unused")
    del body["metadata"]["name"]
    body["metadata"]["generateName"] = prefix
    return body


def _without_spec() -> dict[str, Any]:
    body = manifest("bad")
    del body["spec"]
    return body


# Big, for the operator's cases: the API server stores objects up to about 1.5 MiB.
BIG_ENV = [{"name": f"BLOB_{i}", "value": "x" * 30_000} for i in range(20)]  # 600 kB per container


CORPUS: list[Invalid] = [
    # -- wrong types and ranges ------------------------------------------------------------
    Invalid("nodes is a string", "type", with_("stages.sft", {**CPU, "nodes": "two"}), "spec.stages.sft.nodes"),
    Invalid("learning_rate is a string", "type", with_("config.sft", {"learning_rate": "fast"}),
            "spec.config.sft.learning_rate"),
    Invalid("parallelSFTAndReward is a string", "type", with_("parallelSFTAndReward", "yes"),
            "spec.parallelSFTAndReward"),
    Invalid("steps is a string", "type", with_("config.steps", "sft"), "spec.config.steps"),
    Invalid("env is a map", "type", with_("env", {"WANDB_MODE": "offline"}), "spec.env"),
    Invalid("nodeSelector is a list", "type", with_("nodeSelector", ["gpu"]), "spec.nodeSelector"),
    Invalid("config is a string", "type", with_("config", "lr=1e-5"), "spec.config"),
    Invalid("spec is a list", "type", job(spec=[]), "spec", expect="spec: Invalid value"),
    Invalid("retryLimit above 10", "type", with_("stages.ppo", {**CPU, "retryLimit": 11}),
            "spec.stages.ppo.retryLimit"),
    Invalid("metricsPort above 65535", "type", with_("metricsPort", 70000), "spec.metricsPort"),
    Invalid("gpusPerNode above 16", "type", with_("stages.sft", {"gpusPerNode": 17}), "spec.stages.sft.gpusPerNode"),
    Invalid("negative learning rate", "type", with_("config.sft", {"learning_rate": -1}),
            "spec.config.sft.learning_rate"),
    Invalid("unknown dtype", "type", with_("config.dtype", "fp8"), "spec.config.dtype"),
    Invalid("unknown launcher", "type", with_("launcher", "slurm"), "spec.launcher",
            expect='spec.launcher: Unsupported value: "slurm"'),
    Invalid("pods as root", "type", with_("securityContext", {"runAsUser": 0}), "spec.securityContext.runAsUser"),
    Invalid("start deadline of zero", "type", with_("stages.sft", {**CPU, "startDeadlineSeconds": 0}),
            "spec.stages.sft.startDeadlineSeconds"),
    Invalid("image pull deadline is a string", "type", with_("stages.sft", {**CPU, "imagePullDeadlineSeconds": "5m"}),
            "spec.stages.sft.imagePullDeadlineSeconds"),
    Invalid("disruption limit above 100", "type", with_("stages.ppo", {**CPU, "disruptionLimit": 101}),
            "spec.stages.ppo.disruptionLimit"),
    Invalid("grace period too short for a checkpoint", "type",
            with_("stages.ppo", {**CPU, "terminationGracePeriodSeconds": 5}), "spec.stages.ppo.terminationGracePeriodSeconds"),
    Invalid("active deadline of zero", "type", with_("stages.reward", {**CPU, "activeDeadlineSeconds": 0}),
            "spec.stages.reward.activeDeadlineSeconds"),
    Invalid("unknown node affinity operator", "type",
            with_("affinity", {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "gpu", "operator": "Like", "values": ["a100"]}]}]}}}),
            "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0]"
            ".matchExpressions[0].operator"),

    # -- missing required fields -----------------------------------------------------------
    Invalid("no image", "missing", job(image=_DROP), "spec.image", expect="spec.image: Required value"),
    Invalid("empty image", "missing", with_("image", ""), "spec.image"),
    Invalid("no config", "missing", job(config=_DROP), "spec.config", expect="spec.config: Required value"),
    Invalid("no storage", "missing", job(storage=_DROP), "spec.storage", expect="spec.storage: Required value"),
    Invalid("no spec", "missing", _without_spec(), "spec", expect="spec: Required value"),
    Invalid("secret reference without a name", "missing", with_("hubTokenSecret", {"key": "token"}),
            "spec.hubTokenSecret.name", expect="spec.hubTokenSecret.name: Required value"),
    Invalid("env entry without a name", "missing", with_("env", [{"value": "1"}]), "spec.env[0].name",
            expect="spec.env[0].name: Required value"),
    Invalid("claim template without a size", "missing", with_("storage", {"claimTemplate": {}}),
            "spec.storage.claimTemplate.size", expect="spec.storage.claimTemplate.size: Required value"),
    Invalid("model without name_or_path", "missing", with_("config.actor_model", {"tokenizer": "builtin:char"}),
            "spec.config.actor_model.name_or_path", expect="spec.config.actor_model.name_or_path: Required value"),
    Invalid("no datasets", "missing", with_("config.data", {"datasets": []}), "spec.config.data.datasets"),
    Invalid("storage names no source", "storage", with_("storage", {}), "spec.storage",
            expect="spec.storage: Invalid value: set exactly one of claimName"),

    # -- unknown fields (kubectl asks for strict field validation) ---------------------------
    Invalid("misspelt config field", "unknown field", with_("config.sft", {"learning_rat": 1e-4}),
            "spec.config.sft.learning_rat", expect='unknown field "spec.config.sft.learning_rat"'),
    Invalid("misspelt spec field", "unknown field", with_("stage", {"sft": CPU}), "spec.stage",
            expect='unknown field "spec.stage"'),
    Invalid("misspelt stage field", "unknown field", with_("stages.sft", {"gpus": 0}), "spec.stages.sft.gpus",
            expect='unknown field "spec.stages.sft.gpus"'),
    Invalid("unknown stage", "unknown field", with_("stages.critic", CPU), "spec.stages.critic",
            expect='unknown field "spec.stages.critic"'),
    Invalid("misspelt claim template field", "unknown field", with_("storage", _template(storageClass="ssd")),
            "spec.storage.claimTemplate.storageClass", expect='unknown field "spec.storage.claimTemplate.storageClass"'),
    Invalid("misspelt affinity field", "unknown field", with_("affinity", {"nodeAfinity": {}}),
            "spec.affinity.nodeAfinity", expect='unknown field "spec.affinity.nodeAfinity"'),

    # -- impossible stage, resource and launcher combinations ------------------------------
    Invalid("zero nodes", "combination", with_("stages.sft", {**CPU, "nodes": 0}), "spec.stages.sft.nodes"),
    Invalid("fewer processes than GPUs", "combination", with_("stages.sft", {"gpusPerNode": 8, "processesPerNode": 3}),
            "spec.stages.sft.processesPerNode"),
    Invalid("more processes than GPUs", "combination", with_("stages.ppo", {"gpusPerNode": 1, "processesPerNode": 2}),
            "spec.stages.ppo.processesPerNode"),
    Invalid("GPUs as a resource", "combination",
            with_("stages.sft", {**CPU, "resources": {"limits": {"nvidia.com/gpu": 2}}}),
            "spec.stages.sft.resources.limits"),
    Invalid("request above limit", "combination",
            with_("stages.reward", {**CPU, "resources": {"requests": {"memory": "64Gi"}, "limits": {"memory": "32Gi"}}}),
            "spec.stages.reward.resources.requests"),
    Invalid("CUDA without GPUs", "combination", with_("config.device", "cuda"), "spec.stages.sft.gpusPerNode"),
    Invalid("parallel SFT and reward without reward", "combination",
            job(parallelSFTAndReward=True, **{"config.steps": ["sft", "ppo"]}), "spec.parallelSFTAndReward"),
    Invalid("ReadWriteOnce claim for a multi-node stage", "combination",
            job(storage=_template(accessModes=["ReadWriteOnce"]), **{"stages.ppo": {**CPU, "nodes": 2}}),
            "spec.storage.claimTemplate.accessModes"),
    Invalid("ReadWriteOncePod claim for parallel stages", "combination",
            job(storage=_template(accessModes=["ReadWriteOncePod"]), parallelSFTAndReward=True),
            "spec.storage.claimTemplate.accessModes"),
    Invalid("mpijob with SSH keys on the storage", "combination", _mpijob(sshAuthMountPath="/mnt/kuberlhf"),
            "spec.mpi.sshAuthMountPath"),
    Invalid("mpijob with SSH keys at a relative path", "combination", _mpijob(sshAuthMountPath=".ssh"),
            "spec.mpi.sshAuthMountPath"),
    Invalid("mpijob without an sshd command", "combination", _mpijob(sshdCommand=[]), "spec.mpi.sshdCommand"),
    Invalid("several processes on single_gpu", "combination", with_("config.nproc_per_node", 4),
            "spec.config.nproc_per_node"),
    Invalid("DeepSpeed's engine on the CPU", "combination",
            job(**{"config.device": "cpu", "config.ppo": {"generation": {"engine": "deepspeed"}}}),
            "spec.config.ppo.generation.engine"),
    Invalid("DeepSpeed's engine with peft LoRA", "combination",
            job(**{"config.actor_model": {"name_or_path": "m", "lora": {"dim": 8}},
                   "config.ppo": {"generation": {"engine": "deepspeed"}}}),
            "spec.config.ppo.generation.engine"),
    Invalid("offload without ZeRO", "combination", with_("config.actor_model", {"name_or_path": "m", "offload": True}),
            "spec.config.actor_model.offload", expect="spec.config.actor_model.offload: Invalid value: offload needs"),
    Invalid("LoRA-only without LoRA", "combination",
            with_("config.reward_model", {"name_or_path": "m", "lora": {"only_optimize": True}}),
            "spec.config.reward_model.lora.only_optimize"),
    Invalid("LoRA adapters saved alone while the rest trains", "combination",
            with_("config.actor_model", {"name_or_path": "m", "lora": {"dim": 8, "merge_on_save": False}}),
            "spec.config.actor_model.lora.merge_on_save"),
    Invalid("LoRA adapters saved alone for a built-in base", "combination",
            with_("config.actor_model", {"name_or_path": "builtin:llama-tiny",
                                         "lora": {"dim": 8, "only_optimize": True, "merge_on_save": False}}),
            "spec.config.actor_model.lora.merge_on_save"),
    Invalid("digits range reversed", "combination", with_("config.data", {"synthetic": {"min_digits": 9}}),
            "spec.config.data.synthetic.min_digits"),
    Invalid("steps out of order", "combination", with_("config.steps", ["ppo", "sft"]), "spec.config.steps",
            expect="spec.config.steps: Invalid value: steps must be in pipeline order"),
    Invalid("a step twice", "combination", with_("config.steps", ["sft", "sft"]), "spec.config.steps[1]",
            expect='spec.config.steps[1]: Duplicate value: "sft"'),
    Invalid("storage over the config mount", "combination", with_("storage.mountPath", "/etc/kuberlhf"),
            "spec.storage.mountPath"),
    Invalid("storage at the root", "combination", with_("storage.mountPath", "/"), "spec.storage.mountPath"),
    Invalid("storage above /dev/shm", "combination", with_("storage.mountPath", "/dev"), "spec.storage.mountPath"),
    Invalid("not a resource name", "combination",
            with_("stages.sft", {**CPU, "resources": {"requests": {"gpu count": 1}}}), "spec.stages.sft.resources"),
    Invalid("Exists toleration with a value", "combination", _toleration(key="gpu", operator="Exists", value="a100"),
            "spec.tolerations[0].value"),
    Invalid("tolerationSeconds without NoExecute", "combination",
            _toleration(key="gpu", effect="NoSchedule", tolerationSeconds=60), "spec.tolerations[0].tolerationSeconds"),
    Invalid("toleration of every taint without Exists", "combination", _toleration(effect="NoSchedule"),
            "spec.tolerations[0].operator"),
    Invalid("node affinity In without values", "combination",
            with_("affinity", {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "gpu", "operator": "In"}]}]}}}),
            "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0]"
            ".matchExpressions[0].values"),
    Invalid("pod anti-affinity without a topology key", "combination",
            with_("affinity", {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {"matchLabels": {"team": "nlp"}}}]}}),
            "spec.affinity.podAntiAffinity.requiredDuringSchedulingIgnoredDuringExecution[0].topologyKey",
            expect="spec.affinity.podAntiAffinity.requiredDuringSchedulingIgnoredDuringExecution[0].topologyKey: "
                   "Required value"),
    Invalid("pod label the operator sets", "combination", with_("podLabels", {"kuberlhf.io/stage": "ppo"}),
            "spec.podLabels"),
    Invalid("launcher with GPUs", "combination",
            _mpijob(launcherResources={"limits": {"nvidia.com/gpu": 1}}), "spec.mpi.launcherResources.limits"),

    # -- names the operator derives child objects from --------------------------------------
    Invalid("name of 41 characters", "name", manifest("a" * 41), "metadata.name",
            expect="metadata.name must be at most 40 characters"),
    Invalid("generateName that grows past 40", "name", _generate_name("chat-" + "a" * 35), "metadata.name",
            expect="metadata.name must be at most 40 characters"),
    Invalid("name starting with a digit", "name", manifest("9lives"), "metadata.name",
            expect="metadata.name must be a DNS-1035 label"),
    Invalid("name with a dot", "name", manifest("chat.v2"), "metadata.name",
            expect="metadata.name must be a DNS-1035 label"),
    Invalid("upper-case name", "name", manifest("Chat"), "metadata.name"),
    Invalid("secret name of 254 characters", "name", with_("hubTokenSecret", {"name": "s" * 254}),
            "spec.hubTokenSecret.name"),
    Invalid("claim name with an underscore", "name", with_("storage", {"claimName": "shared_claim"}),
            "spec.storage.claimName"),

    # -- storage ---------------------------------------------------------------------------
    Invalid("both claim and template", "storage", with_("storage", {"claimName": "shared", **TEMPLATE}), "spec.storage",
            expect="spec.storage: Invalid value: set exactly one of claimName"),
    Invalid("size is not a quantity", "storage", with_("storage", {"claimTemplate": {"size": "lots"}}),
            "spec.storage.claimTemplate.size"),
    Invalid("size zero", "storage", with_("storage", {"claimTemplate": {"size": "0"}}),
            "spec.storage.claimTemplate.size", expect='spec.storage.claimTemplate.size: Invalid value: "0": must be more'),
    Invalid("negative size", "storage", with_("storage", {"claimTemplate": {"size": "-10Gi"}}),
            "spec.storage.claimTemplate.size"),
    Invalid("unknown access mode", "storage", with_("storage", _template(accessModes=["ReadWriteSometimes"])),
            "spec.storage.claimTemplate.accessModes[0]"),
    Invalid("storage class with a space", "storage", with_("storage", _template(storageClassName="fast ssd")),
            "spec.storage.claimTemplate.storageClassName"),
    Invalid("shm size is not a quantity", "storage", with_("stages.ppo", {**CPU, "shmSize": "lots"}),
            "spec.stages.ppo.shmSize"),
    Invalid("shm size zero", "storage", with_("stages.ppo", {**CPU, "shmSize": 0}), "spec.stages.ppo.shmSize"),

    # -- the embedded training config: datasets and data_split ------------------------------
    Invalid("unknown built-in dataset", "config", with_("config.data", {"datasets": ["builtin:sorting"]}),
            "spec.config.data.datasets[0]", expect='spec.config.data.datasets[0]: Invalid value: "builtin:sorting"'),
    Invalid("unknown dataset format", "config", with_("config.data", {"datasets": ["builtin:sort", "jsonl:/data/x.jsonl"]}),
            "spec.config.data.datasets[1]", expect="unknown dataset format 'jsonl'"),
    Invalid("local format without a path", "config", with_("config.data", {"datasets": ["hh"]}),
            "spec.config.data.datasets[0]"),
    Invalid("misspelt hub dataset read locally", "config", with_("config.data", {"datasets": ["Dahoas/rm-statik:/data/rm"]}),
            "spec.config.data.datasets[0]"),
    Invalid("unknown SFT-only dataset", "config",
            with_("config.data", {"datasets": ["builtin:sort"], "sft_only_datasets": ["builtin:chat"]}),
            "spec.config.data.sft_only_datasets[0]"),
    Invalid("data_split of zeros", "config", with_("config.data", {"datasets": ["builtin:sort"], "data_split": "0,0,0"}),
            "spec.config.data.data_split"),
    Invalid("data_split without SFT data", "config",
            with_("config.data", {"datasets": ["builtin:sort"], "data_split": "0,5,5"}), "spec.config.data.data_split",
            expect="data_split gives a step in steps no data"),
    Invalid("data_split not numbers", "config",
            with_("config.data", {"datasets": ["builtin:sort"], "data_split": "1.2.3,1,1"}), "spec.config.data.data_split"),
    Invalid("data_split of two shares", "config", with_("config.data", {"datasets": ["builtin:sort"], "data_split": "2,8"}),
            "spec.config.data.data_split"),

    # -- hostile strings in fields that reach commands, mounts, labels and the scheduler ------
    Invalid("image with a shell command", "hostile", with_("image", "trainer:1; rm -rf /"), "spec.image"),
    Invalid("image with a newline", "hostile", with_("image", "trainer:1\nmalicious:2"), "spec.image"),
    Invalid("image with non-ASCII letters", "hostile", with_("image", "trainér:1"), "spec.image"),
    Invalid("image of 600 characters", "hostile", with_("image", "r/" + "i" * 598), "spec.image"),
    Invalid("mount path with a space", "hostile", with_("storage.mountPath", "/mnt/my data"), "spec.storage.mountPath"),
    Invalid("mount path climbing up", "hostile", with_("storage.mountPath", "/mnt/../etc"), "spec.storage.mountPath"),
    Invalid("env name with a command", "hostile", with_("env", _env(("$(id)", "1"))), "spec.env[0].name"),
    Invalid("env name with a newline", "hostile", with_("env", _env(("A\nB", "1"))), "spec.env[0].name"),
    Invalid("hub token as a plain value", "hostile", with_("env", _env(("HF_TOKEN", "hf_plain"))), "spec.env[0].name",
            expect="spec.env[0].name: Invalid value: the hub token comes only from hubTokenSecret"),
    Invalid("operator's variable overridden", "hostile", with_("env", _env(("KUBERLHF_JOB", "other"))),
            "spec.env[0].name"),
    Invalid("env name twice", "hostile", with_("env", _env(("A", "1"), ("A", "2"))), "spec.env[1]",
            expect="spec.env[1]: Duplicate value"),
    Invalid("env value of 40000 characters", "hostile", with_("env", _env(("A", "v" * 40_000))), "spec.env[0].value"),
    Invalid("node selector value with a space", "hostile", with_("nodeSelector", {"gpu": "a100; reboot"}),
            "spec.nodeSelector"),
    Invalid("node selector key with punctuation", "hostile", with_("nodeSelector", {"gpu type!": "a100"}),
            "spec.nodeSelector"),
    Invalid("toleration key with a semicolon", "hostile", _toleration(key="gpu;x", operator="Exists"),
            "spec.tolerations[0].key"),
    Invalid("priority class with spaces", "hostile", with_("priorityClassName", "High Priority"),
            "spec.priorityClassName"),
    Invalid("scheduler name with a command", "hostile", with_("schedulerName", "volcano; reboot"),
            "spec.schedulerName"),
    Invalid("pod label value with a space", "hostile", with_("podLabels", {"team": "nlp research"}),
            "spec.podLabels.team"),
    Invalid("pod annotation key with a space", "hostile", with_("podAnnotations", {"my note": "x"}),
            "spec.podAnnotations"),
    Invalid("pod annotation of 5000 characters", "hostile", with_("podAnnotations", {"note": "n" * 5000}),
            "spec.podAnnotations.note"),
    Invalid("secret key with a slash", "hostile", with_("hubTokenSecret", {"name": "hf", "key": "../token"}),
            "spec.hubTokenSecret.key"),
    Invalid("pull secret name with a space", "hostile", with_("imagePullSecrets", [{"name": "my secret"}]),
            "spec.imagePullSecrets[0].name"),
    Invalid("empty sshd command word", "hostile", _mpijob(sshdCommand=["/usr/sbin/sshd", ""]), "spec.mpi.sshdCommand[1]"),
    Invalid("sshd command word of 5000 characters", "hostile", _mpijob(sshdCommand=["s" * 5000]),
            "spec.mpi.sshdCommand[0]"),
    Invalid("dataset entry of 5000 characters", "hostile", with_("config.data", {"datasets": ["/" + "d" * 4999]}),
            "spec.config.data.datasets[0]"),

    # -- what only the operator can tell: the size of what it renders ------------------------
    Invalid("config too large for a ConfigMap (one long value)", "operator",
            with_("config.data", {"datasets": ["builtin:sort"], "cache_dir": "/c" * 550_000}, name="op-config-value"),
            "spec.config", by="operator"),
    Invalid("config too large for a ConfigMap (many values)", "operator",
            with_("config.actor_model", {"name_or_path": "builtin:tiny", "tokenizer": "builtin:char",
                                         "lora": {"dim": 8, "target_modules": ["q" * 4000] * 280}},
                  name="op-config-list"),
            "spec.config", by="operator"),
    Invalid("env copied into two pod templates (PyTorchJob of 2 nodes)", "operator",
            job("op-env-nodes", env=BIG_ENV, **{"stages.sft": {**CPU, "nodes": 2}}), "spec.env", by="operator"),
    Invalid("env copied into launcher and worker (MPIJob)", "operator",
            job("op-env-mpijob", env=BIG_ENV, launcher="mpijob"), "spec.env", by="operator"),
]

REJECTED_BY_APISERVER = [c for c in CORPUS if c.by == "apiserver"]
FAILED_BY_OPERATOR = [c for c in CORPUS if c.by == "operator"]
