"""Cross-field rules of the trainer's config that the API server can check (CEL), by definition.

The trainer's pydantic validators are the source of truth; these CEL rules repeat the ones that
are simple enough to state without the trainer's defaults, so that `kubectl apply` rejects them
at once instead of a training pod failing minutes later. A unit test checks every rule against
pydantic on examples, and an integration test checks that the API server rejects each example
naming the same field. Rules the API server cannot check (e.g. data_split shares summing to a
positive number, anything involving defaults of absent sections) stay with the trainer, which
fails the stage with a message naming the field; the operator then shows that message.

Keyed by the `$defs` name in `RunConfig.model_json_schema()`, so a rule applies wherever the
definition is used (ModelSettings is both actor_model and reward_model).
"""

from __future__ import annotations

from typing import Any

STEP_ORDER = "['sft', 'reward', 'ppo']"
# data_split's three shares as numbers (the pattern below guarantees they parse), and the share of
# a step by name.
SHARES = "self.data.data_split.split(',').map(p, double(p.trim()))"
SHARE_INDEX = "(s == 'sft' ? 0 : (s == 'reward' ? 1 : 2))"
NUMBER = r"\s*([0-9]+(\.[0-9]*)?|\.[0-9]+)\s*"
# Step 3 runs with DeepSpeed's own hybrid engine (a condition: the rules using it say "!(this && that)").
DEEPSPEED_ENGINE_IN_PPO = ("(!has(self.steps) || 'ppo' in self.steps) && has(self.ppo) && has(self.ppo.generation)"
                           " && has(self.ppo.generation.engine) && self.ppo.generation.engine == 'deepspeed'")

# Dataset entries the trainer can never load, told apart without looking at any file (the same
# names as kuberlhf_trainer.data: a unit test checks). An entry '<prefix>:<rest>' whose prefix is
# not a path (./, /, ~) is '<format>:<path>' or a built-in dataset; hub names have no ':'.
BUILTIN_DATASETS = ("builtin:sort",)
LOCAL_FORMATS = ("hh", "pairwise", "sft")
"""Formats of local files only: they need ':<path>'."""
HUB_FORMATS = (
    "Dahoas/rm-static", "Dahoas/full-hh-rlhf", "Dahoas/synthetic-instruct-gptj-pairwise",
    "yitingxie/rlhf-reward-datasets", "openai/webgpt_comparisons", "stanfordnlp/SHP",
    "pvduy/sharegpt_alpaca_oa_vicuna_format", "wangrui6/Zhihu-KOL", "Cohere/miracl-zh-queries-22-12",
    "Hello-SimpleAI/HC3-Chinese", "mkqa-Chinese", "mkqa-Japanese", "Cohere/miracl-ja-queries-22-12",
    "lmqg/qg_jaquad", "lmqg/qag_jaquad",
)
"""Supported hub datasets: also readable from a local copy as '<name>:<path>'."""


def _quoted(values: tuple[str, ...]) -> str:
    return "[" + ", ".join(f"'{v}'" for v in values) + "]"


PREFIX = "self.substring(0, self.indexOf(':'))"
DATASET_ENTRY = {
    "maxLength": 4096,
    "x-kubernetes-validations": [
        {"rule": f"!self.startsWith('builtin:') || self in {_quoted(BUILTIN_DATASETS)}",
         "message": f"unknown built-in dataset; built in: {', '.join(BUILTIN_DATASETS)}"},
        {"rule": f"!self.matches(r'^[^./~:][^:]*:') || self.startsWith('builtin:')"
                 f" || {PREFIX} in {_quoted(LOCAL_FORMATS + HUB_FORMATS)}",
         "messageExpression": f"\"unknown dataset format '\" + {PREFIX} + \"': '<format>:<path>' takes one of "
                              f"{', '.join(LOCAL_FORMATS)} or a supported hub dataset's name (e.g. "
                              f"{HUB_FORMATS[0]}); a local path with ':' must start with ./ or /\""},
        {"rule": f"!(self in {_quoted(LOCAL_FORMATS)})",
         "message": "a local format needs the data's location: write '<format>:<path to file or directory>'"},
    ],
}

RULES: dict[str, list[dict[str, str]]] = {
    "ModelSettings": [
        {
            "rule": "!has(self.offload) || !self.offload || (has(self.zero_stage) && self.zero_stage >= 1)",
            "message": "offload needs zero_stage >= 1 (DeepSpeed offloads ZeRO-partitioned state)",
            "fieldPath": ".offload",
        },
        {
            "rule": "!has(self.lora) || !has(self.lora.only_optimize) || !self.lora.only_optimize"
            " || (has(self.lora.dim) && self.lora.dim > 0)",
            "message": "lora.only_optimize needs lora.dim > 0",
            "fieldPath": ".lora.only_optimize",
        },
        {
            "rule": "!has(self.lora) || !has(self.lora.dim) || self.lora.dim == 0 || !has(self.lora.merge_on_save)"
            " || self.lora.merge_on_save || (has(self.lora.only_optimize) && self.lora.only_optimize)",
            "message": "lora.merge_on_save false saves only the adapters, but lora.only_optimize false trains the rest "
                       "of the model too, which would be lost",
            "fieldPath": ".lora.merge_on_save",
        },
        {
            "rule": "!has(self.lora) || !has(self.lora.dim) || self.lora.dim == 0 || !has(self.lora.merge_on_save)"
            " || self.lora.merge_on_save || !self.name_or_path.startsWith('builtin:')",
            "message": "lora.merge_on_save false saves adapters for their base model to be loaded from, but a built-in "
                       "model is random weights built from a config",
            "fieldPath": ".lora.merge_on_save",
        },
    ],
    "DataSettings": [
        {
            "rule": f"!has(self.data_split) || {SHARES.replace('self.data.', 'self.')}.sum() > 0.0",
            "message": "data_split needs non-negative numbers with a positive sum",
            "fieldPath": ".data_split",
        },
    ],
    "SyntheticTaskSettings": [
        {
            "rule": "(has(self.min_digits) ? self.min_digits : 3) <= (has(self.max_digits) ? self.max_digits : 6)",
            "message": "min_digits must be <= max_digits",
            "fieldPath": ".min_digits",
        },
    ],
    "RunConfig": [
        {
            # steps is a set, and CEL compares sets ignoring order: map each step to its index.
            "rule": "!has(self.steps) || self.steps.map(s, s == 'sft' ? 0 : (s == 'reward' ? 1 : 2)).isSorted()",
            "message": f"steps must be in pipeline order {STEP_ORDER}",
            "fieldPath": ".steps",
        },
        {
            # As the trainer: a selected step with a zero share has no data, unless it is sft and
            # sft_only_datasets feeds it.
            "rule": f"!has(self.data) || !has(self.data.data_split) || (has(self.steps) ? self.steps : {STEP_ORDER})"
                    f".all(s, {SHARES}[{SHARE_INDEX}] > 0.0 || (s == 'sft' && has(self.data.sft_only_datasets)"
                    " && size(self.data.sft_only_datasets) > 0))",
            "message": "data.data_split gives a step in steps no data (a share of 0)",
            "fieldPath": ".data.data_split",
        },
        {
            "rule": f"!({DEEPSPEED_ENGINE_IN_PPO} && has(self.device) && self.device == 'cpu')",
            "message": "ppo.generation.engine 'deepspeed' needs CUDA (DeepSpeed's inference kernels), but device is "
                       "'cpu'; use engine 'hybrid'",
            "fieldPath": ".ppo.generation.engine",
        },
        {
            "rule": f"!({DEEPSPEED_ENGINE_IN_PPO} && has(self.actor_model) && has(self.actor_model.lora)"
                    " && has(self.actor_model.lora.dim) && self.actor_model.lora.dim > 0)",
            "message": "ppo.generation.engine 'deepspeed' would generate without the actor's LoRA adapters (DeepSpeed's "
                       "hybrid engine fuses only DeepSpeed-Chat's own LoRA layers, not peft's); use engine 'hybrid'",
            "fieldPath": ".ppo.generation.engine",
        },
        {
            "rule": "!has(self.nproc_per_node) || self.nproc_per_node <= 1"
            " || (has(self.deployment_type) && self.deployment_type != 'single_gpu')",
            "message": "deployment_type single_gpu runs one process; set single_node for nproc_per_node > 1",
            "fieldPath": ".nproc_per_node",
        },
    ],
}

FIELD_OVERLAYS: dict[str, dict[str, dict[str, Any]]] = {
    # Three comma-separated non-negative numbers (the rules above check their sum and each step's
    # share); dataset entries the trainer can never load. The bounds keep the rules' cost in budget.
    "DataSettings": {
        "data_split": {"pattern": f"^{NUMBER},{NUMBER},{NUMBER}$", "maxLength": 64},
        "datasets": {"maxItems": 64, "items": DATASET_ENTRY},
        "sft_only_datasets": {"maxItems": 64, "items": DATASET_ENTRY},
    },
    # A set: the API server rejects a step listed twice (a list of three distinct stages at most).
    # The bounds keep the CEL rule's estimated cost within the API server's budget.
    "RunConfig": {"steps": {"x-kubernetes-list-type": "set", "maxItems": 3, "items": {"maxLength": 6}}},
}


def with_rules(schema: dict[str, Any]) -> dict[str, Any]:
    """A copy of RunConfig's JSON schema with the CEL rules and field overlays attached."""
    out = {**schema, "$defs": {name: dict(d) for name, d in schema.get("$defs", {}).items()}}
    targets = {**out["$defs"], "RunConfig": out}
    for name, rules in RULES.items():
        targets[name]["x-kubernetes-validations"] = [dict(rule) for rule in rules]
    for name, fields in FIELD_OVERLAYS.items():
        props = {k: dict(v) for k, v in targets[name]["properties"].items()}
        for field, extra in fields.items():
            for key, value in extra.items():
                # One level deep, so that an overlay on `items` adds to the item schema.
                if isinstance(value, dict) and isinstance(props[field].get(key), dict):
                    value = {**props[field][key], **value}
                props[field][key] = value
        targets[name]["properties"] = props
    return out
