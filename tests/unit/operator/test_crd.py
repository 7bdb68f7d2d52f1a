"""The generated RLHFJob CRD: up to date, structural, and its config rules agree with the trainer."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any, Iterator, Optional, Union

import pytest
from pydantic import BaseModel, ConfigDict, Field

from kuberlhf_operator import names
from kuberlhf_operator.crdgen import build_crd
from kuberlhf_operator.crdgen import config_rules
from kuberlhf_operator.crdgen.config_rules import RULES
from kuberlhf_operator.crdgen.structural import UnsupportedSchema, to_structural
from kuberlhf_trainer import config as trainer_config

REPO = Path(__file__).resolve().parents[3]


def _generator():
    spec = importlib.util.spec_from_file_location("generate_crd", REPO / "hack" / "generate_crd.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    crd = build_crd(trainer_config.json_schema())
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def _walk(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, node
    for name, child in node.get("properties", {}).items():
        yield from _walk(child, f"{path}.{name}")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _walk(node["additionalProperties"], f"{path}[*]")
    if "items" in node:
        yield from _walk(node["items"], f"{path}[]")


def test_committed_crd_is_what_the_generator_writes():
    generator = _generator()
    committed = generator.CRD_PATH.read_text() if generator.CRD_PATH.exists() else ""
    assert committed == generator.render(), (
        "manifests/crds/kuberlhf.io_rlhfjobs.yaml is out of date with kuberlhf_operator.api or "
        "kuberlhf_trainer.config: run `python hack/generate_crd.py` and commit the result"
    )


def test_operator_stage_names_are_the_trainers():
    assert names.STAGES == trainer_config.STEP_NAMES


def test_schema_is_structural(schema):
    for path, node in _walk(schema):
        assert "$ref" not in node and "allOf" not in node, path
        assert node.get("additionalProperties") is not False, path
        assert "uniqueItems" not in node, path
        if "anyOf" in node:
            assert node.get("x-kubernetes-int-or-string"), f"{path}: anyOf is only for int-or-string"
        else:
            assert "type" in node, f"{path} has no type"


def test_every_field_is_explained(schema):
    """kubectl explain shows descriptions; a field without one is a field users must guess."""
    spec, status = schema["properties"]["spec"], schema["properties"]["status"]
    for root in (spec, status):
        for path, node in _walk(root):
            if path and not path.endswith("[]") and not path.endswith("[*]"):
                assert node.get("description"), f"{path} has no description"


def test_own_defaults_are_served_and_config_defaults_only_described(schema):
    spec = schema["properties"]["spec"]["properties"]
    assert spec["launcher"]["default"] == "pytorchjob"
    assert spec["stages"]["properties"]["sft"]["properties"]["retryLimit"]["default"] == 1
    kl = spec["config"]["properties"]["ppo"]["properties"]["kl_coef"]
    assert "default" not in kl and "Defaults to 0.1." in kl["description"]


def test_crd_metadata_for_kubectl(schema):
    crd = build_crd(trainer_config.json_schema())
    version = crd["spec"]["versions"][0]
    assert crd["spec"]["names"]["shortNames"] == ["rlhf"]
    # Not in "all": `kubectl delete all --all` must not take RLHFJobs with it.
    assert crd["spec"]["names"]["categories"] == ["kuberlhf"]
    assert version["subresources"] == {"status": {}}
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"] if not c.get("priority")}
    assert columns == {"Phase": ".status.phase", "Progress": ".status.progress", "Stage": ".status.stage",
                       "State": ".status.stageState", "Attempt": ".status.attempt", "Started": ".status.startTime",
                       "Completed": ".status.completionTime", "Age": ".metadata.creationTimestamp"}
    status = schema["properties"]["status"]["properties"]
    assert all(c["jsonPath"].split(".")[-1] in status for c in version["additionalPrinterColumns"]
               if c["jsonPath"].startswith(".status."))
    conditions = schema["properties"]["status"]["properties"]["conditions"]
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    assert conditions["items"]["required"] == ["type", "status", "lastTransitionTime", "reason"]


# -- the structural conversion, rule by rule -------------------------------------------------


class _Inner(BaseModel):
    """Inner docs."""

    model_config = ConfigDict(extra="forbid")
    x: int = Field(3, gt=0, lt=10, description="An x.")


class _Outer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    inner: _Inner = Field(default_factory=_Inner, description="Field docs win.")
    maybe: Optional[_Inner] = Field(None, description="Optional.")
    mode: str = Field("a", json_schema_extra={"enum": ["a", "b"]}, description="Mode.")
    size: Union[int, str] = Field("1Gi", description="Size.")
    tags: set[str] = Field(default_factory=set, description="Tags.")


def test_structural_conversion_rules():
    out = to_structural(_Outer.model_json_schema(), defaults="keep")
    inner, maybe = out["properties"]["inner"], out["properties"]["maybe"]
    assert inner["description"] == "Field docs win." and inner["type"] == "object"
    x = inner["properties"]["x"]
    assert (x["minimum"], x["exclusiveMinimum"], x["maximum"], x["exclusiveMaximum"]) == (0, True, 10, True)
    assert x["default"] == 3 and x["description"] == "An x. Defaults to 3."
    assert maybe["nullable"] is True and maybe["properties"]["x"]["type"] == "integer"
    assert "additionalProperties" not in out and "title" not in out
    size = out["properties"]["size"]
    assert size["x-kubernetes-int-or-string"] is True and size["default"] == "1Gi"
    assert out["properties"]["tags"]["x-kubernetes-list-type"] == "set"


def test_a_union_without_structural_form_names_the_field():
    class Bad(BaseModel):
        either: Union[int, list[str]] = 1

    with pytest.raises(UnsupportedSchema, match=r"\.either"):
        to_structural(Bad.model_json_schema())


# -- CEL rules on the trainer config agree with the trainer's own validation ----------------

# (definition, example config that breaks the rule, field the trainer names)
VIOLATIONS = [
    ("ModelSettings", {"actor_model": {"name_or_path": "m", "offload": True}}, "actor_model"),
    ("ModelSettings", {"reward_model": {"name_or_path": "m", "lora": {"only_optimize": True}}}, "reward_model"),
    ("ModelSettings", {"actor_model": {"name_or_path": "m", "lora": {"dim": 8, "merge_on_save": False}}}, "actor_model"),
    ("ModelSettings", {"actor_model": {"name_or_path": "builtin:llama-tiny",
                                       "lora": {"dim": 8, "only_optimize": True, "merge_on_save": False}}}, "actor_model"),
    ("SyntheticTaskSettings", {"data": {"synthetic": {"min_digits": 9}}}, "data.synthetic"),
    ("RunConfig", {"steps": ["ppo", "sft"]}, "steps"),
    ("RunConfig", {"nproc_per_node": 2}, "(top level)"),
    ("RunConfig", {"device": "cpu", "ppo": {"generation": {"engine": "deepspeed"}}}, "(top level)"),
    ("RunConfig", {"actor_model": {"name_or_path": "m", "lora": {"dim": 8}}, "ppo": {"generation": {"engine": "deepspeed"}}},
     "(top level)"),
    ("RunConfig", {"data": {"data_split": "0,5,5"}}, "(top level)"),
    ("DataSettings", {"data": {"data_split": "0,0,0"}}, "data.data_split"),
]


@pytest.mark.parametrize("definition,config,field", VIOLATIONS)
def test_each_cel_rule_matches_a_trainer_validator(definition, config, field):
    with pytest.raises(trainer_config.ConfigError) as error:
        trainer_config.build_config(config)
    assert f"  {field}: " in str(error.value)


def test_every_rule_has_a_violation_example():
    covered = {d for d, _, _ in VIOLATIONS}
    assert covered == set(RULES)
    for definition, rules in RULES.items():
        examples = sum(1 for d, _, _ in VIOLATIONS if d == definition)
        assert examples >= len(rules), f"{definition}: one example per rule"


@pytest.mark.parametrize("example", sorted((REPO / "manifests" / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_the_shipped_examples_are_valid_for_the_operator_and_the_trainer(example):
    import yaml

    from kuberlhf_operator.api import RLHFJobSpec

    body = yaml.safe_load(example.read_text())
    spec = RLHFJobSpec.model_validate(body["spec"])
    trainer_config.build_config(spec.config, source=str(example))  # raises naming the field


# -- dataset entries the CRD refuses are ones the trainer can never load -----------------------

# A Hugging Face hub repository id: what an entry the trainer sends to the hub would have to be.
HUB_ID = r"^[A-Za-z0-9][-A-Za-z0-9_.]*(/[A-Za-z0-9][-A-Za-z0-9_.]*)?$"
REFUSED_DATASETS = ["builtin:sorting", "builtin:", "jsonl:/data/pairs.jsonl", "hf:Dahoas/rm-static", "hh", "sft",
                    "pairwise", "Dahoas/rm-statik:/data/rm"]
ACCEPTED_DATASETS = ["builtin:sort", "hh:/data/hh", "sft:./sft.jsonl", "Dahoas/full-hh-rlhf:/data/hh",
                     "mkqa-Chinese:/data/mkqa", "Dahoas/rm-static", "org/any-dataset", "./local:v2/pairs.jsonl",
                     "/data/pairs.jsonl"]


def test_the_dataset_names_the_crd_knows_are_the_trainers():
    from kuberlhf_trainer.data import adapters, synthetic

    assert config_rules.BUILTIN_DATASETS == (synthetic.NAME,)
    assert set(config_rules.LOCAL_FORMATS) == {n for n, a in adapters.ADAPTERS.items() if not a.hub_path}
    assert set(config_rules.HUB_FORMATS) == {n for n, a in adapters.ADAPTERS.items() if a.hub_path}


def _cel_accepts(entry: str) -> bool:
    """The DATASET_ENTRY rules, evaluated in Python (the integration tests run them on the API server)."""
    if entry.startswith("builtin:") and entry not in config_rules.BUILTIN_DATASETS:
        return False
    if re.match(r"^[^./~:][^:]*:", entry) and not entry.startswith("builtin:"):
        if entry[: entry.index(":")] not in config_rules.LOCAL_FORMATS + config_rules.HUB_FORMATS:
            return False
    return entry not in config_rules.LOCAL_FORMATS


@pytest.mark.parametrize("entry", REFUSED_DATASETS)
def test_a_refused_dataset_entry_is_one_the_trainer_cannot_load(entry):
    from kuberlhf_trainer.data.records import DataFormatError
    from kuberlhf_trainer.data.sources import resolve_entry

    assert not _cel_accepts(entry)
    try:
        adapter, path = resolve_entry(entry)
    except DataFormatError:
        return
    # Not a local format: the trainer would ask the hub for it, under a name no repository has.
    assert adapter is None and path is None and not re.match(HUB_ID, entry), entry


@pytest.mark.parametrize("entry", ACCEPTED_DATASETS)
def test_a_dataset_entry_the_trainer_may_load_is_accepted(entry):
    assert _cel_accepts(entry)


def test_the_dataset_rules_in_the_crd_are_the_ones_checked_here(schema):
    data = schema["properties"]["spec"]["properties"]["config"]["properties"]["data"]["properties"]
    for field in ("datasets", "sft_only_datasets"):
        rules = [r["rule"] for r in data[field]["items"]["x-kubernetes-validations"]]
        assert rules == [r["rule"] for r in config_rules.DATASET_ENTRY["x-kubernetes-validations"]]
        assert "r'^[^./~:][^:]*:'" in rules[1]
