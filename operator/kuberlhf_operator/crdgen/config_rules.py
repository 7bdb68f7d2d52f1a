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
            "rule": "!has(self.nproc_per_node) || self.nproc_per_node <= 1"
            " || (has(self.deployment_type) && self.deployment_type != 'single_gpu')",
            "message": "deployment_type single_gpu runs one process; set single_node for nproc_per_node > 1",
            "fieldPath": ".nproc_per_node",
        },
    ],
}

FIELD_OVERLAYS: dict[str, dict[str, dict[str, Any]]] = {
    # Three comma-separated non-negative numbers; the trainer also checks that they sum to > 0.
    "DataSettings": {"data_split": {"pattern": r"^\s*[0-9.]+\s*,\s*[0-9.]+\s*,\s*[0-9.]+\s*$"}},
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
