"""Invalid RLHFJobs are refused by the API server at `kubectl apply`, with the field named.

No operator runs here: this is the CRD's schema and CEL doing the work.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from tests.support.rlhfjobs import REPO_ROOT, Cluster, manifest

pytestmark = pytest.mark.k8s
EXAMPLES = REPO_ROOT / "manifests" / "examples"


def _with(path: str, value: Any, name: str = "bad") -> dict[str, Any]:
    body = manifest(name)
    node = body
    *parents, leaf = path.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value
    return body


def _without_storage() -> dict[str, Any]:
    body = manifest("bad")
    body["spec"]["storage"] = {}
    return body


CASES = [
    # spec.config: the trainer's schema (types, ranges, enums, unknown fields, CEL rules)
    ("unknown config field", _with("spec.config.sft", {"learning_rat": 1e-4}), 'unknown field "spec.config.sft.learning_rat"'),
    ("range", _with("spec.config.sft", {"learning_rate": -1}), "spec.config.sft.learning_rate"),
    ("enum", _with("spec.config.dtype", "fp8"), "spec.config.dtype"),
    ("pattern", _with("spec.config.data", {"data_split": "2,8"}), "spec.config.data.data_split"),
    ("offload without ZeRO", _with("spec.config.actor_model", {"name_or_path": "m", "offload": True}),
     "spec.config.actor_model.offload: Invalid value: offload needs zero_stage >= 1"),
    ("LoRA-only without LoRA", _with("spec.config.reward_model", {"name_or_path": "m", "lora": {"only_optimize": True}}),
     "spec.config.reward_model.lora.only_optimize"),
    ("digits", _with("spec.config.data", {"synthetic": {"min_digits": 9}}), "spec.config.data.synthetic.min_digits"),
    ("step order", _with("spec.config.steps", ["ppo", "sft"]), "spec.config.steps: Invalid value: steps must be in pipeline order"),
    ("step twice", _with("spec.config.steps", ["sft", "sft"]), 'spec.config.steps[1]: Duplicate value: "sft"'),
    ("processes on single_gpu", _with("spec.config.nproc_per_node", 4), "spec.config.nproc_per_node"),
    # the rest of spec: our own types
    ("launcher", _with("spec.launcher", "slurm"), 'spec.launcher: Unsupported value: "slurm"'),
    ("nodes", _with("spec.stages", {"sft": {"nodes": 0}}), "spec.stages.sft.nodes"),
    ("quantity", _with("spec.stages", {"ppo": {"shmSize": "lots"}}), "spec.stages.ppo.shmSize"),
    ("no storage", _without_storage(), "spec.storage: Invalid value: set exactly one of claimName"),
    ("no image", _with("spec.image", ""), "spec.image"),
    ("long name", manifest("a" * 41), "metadata.name must be at most 40 characters"),
    ("DNS-1035 name", manifest("9lives"), "metadata.name must be a DNS-1035 label"),
]


@pytest.mark.parametrize("body,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_kubectl_apply_refuses_an_invalid_rlhfjob_naming_the_field(control_plane, namespace, body, expected):
    result = control_plane.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(body), check=False)
    assert result.returncode != 0, f"accepted: {result.stdout}"
    assert expected in result.stderr


@pytest.mark.parametrize("example", sorted(p.name for p in EXAMPLES.glob("*.yaml")))
def test_the_shipped_examples_are_accepted(control_plane, namespace, example):
    result = control_plane.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", str(EXAMPLES / example),
                                   check=False)
    assert result.returncode == 0, result.stderr


def test_config_cannot_change_while_a_stage_runs(control_plane, api, namespace):
    cluster = Cluster(api, namespace)
    cluster.create(manifest("frozen"))
    status = {"status": {"phase": "Running"}}
    cluster.custom.patch_namespaced_custom_object_status("kuberlhf.io", "v1alpha1", namespace, "rlhfjobs", "frozen", status)
    changed = copy.deepcopy(cluster.job("frozen"))
    changed["spec"]["config"]["seed"] = 7
    result = control_plane.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(changed), check=False)
    assert result.returncode != 0 and "spec.config cannot change while a stage is running" in result.stderr
    cluster.patch("frozen", {"spec": {"image": "kuberlhf-trainer:v2"}})  # the rest of spec may change

    done = {"status": {"phase": "Failed"}}
    cluster.custom.patch_namespaced_custom_object_status("kuberlhf.io", "v1alpha1", namespace, "rlhfjobs", "frozen", done)
    cluster.patch("frozen", {"spec": {"config": {"seed": 7}}})  # between runs it may
    assert cluster.job("frozen")["spec"]["config"]["seed"] == 7
