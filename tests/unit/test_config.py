"""The run config schema: defaults, YAML round trip, and errors that name the field at fault."""

from __future__ import annotations

import json
import re

import jsonschema
import pytest
import yaml

from kuberlhf_trainer.config import (
    STEP_NAMES,
    ConfigError,
    RunConfig,
    build_config,
    dump_config,
    json_schema,
    load_config,
    parse_data_split,
    read_yaml,
)


def error_lines(data: dict) -> list[str]:
    """The problem lines of the ConfigError that `data` raises (one per bad field)."""
    with pytest.raises(ConfigError) as caught:
        build_config(data)
    return str(caught.value).splitlines()[1:]


def only_problem(data: dict) -> str:
    lines = error_lines(data)
    assert len(lines) == 1, lines
    return lines[0].strip()


# -- defaults and round trip -------------------------------------------------------------------


def test_defaults_validate_and_match_deepspeed_chat():
    config = build_config({})
    assert config.steps == list(STEP_NAMES)
    assert config.actor_model.name_or_path == "facebook/opt-1.3b"
    assert config.reward_model.name_or_path == "facebook/opt-350m"
    assert config.data.datasets == ["Dahoas/rm-static"]
    assert config.data.split_shares == pytest.approx((0.2, 0.4, 0.4))
    assert config == RunConfig()


def test_yaml_round_trip(tmp_path):
    config = build_config(
        {
            "actor_model": {"name_or_path": "builtin:llama-tiny", "zero_stage": 3, "offload": True,
                            "lora": {"dim": 8, "only_optimize": True}},
            "data": {"datasets": ["hh:./pairs.jsonl", "builtin:sort"], "data_split": "1,0,1",
                     "sft_only_datasets": ["sft:./demos.jsonl"]},
            "sft": {"learning_rate": 1.5e-4, "mask_prompt_loss": True},
            "ppo": {"ema": {"enabled": True, "beta": 0.99}, "generation": {"top_p": 0.9}},
            "steps": ["sft", "ppo"],
            "deployment_type": "single_node",
            "nproc_per_node": 2,
        }
    )
    path = tmp_path / "run.yaml"
    path.write_text(dump_config(config))
    assert load_config(path) == config
    assert yaml.safe_load(path.read_text())["sft"]["learning_rate"] == 1.5e-4


def test_load_config_applies_dotted_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("sft:\n  learning_rate: 1.0e-3\n")
    config = load_config(path, {"sft.learning_rate": 2e-3, "ppo.ema.enabled": True})
    assert config.sft.learning_rate == 2e-3 and config.ppo.ema.enabled is True


# -- field errors name the dotted path -----------------------------------------------------------


def test_wrong_type_names_the_field_and_the_value():
    line = only_problem({"sft": {"learning_rate": "fast"}})
    assert line.startswith("sft.learning_rate:") and "'fast'" in line


def test_wrong_type_in_a_list_names_the_item():
    line = only_problem({"data": {"datasets": ["ok", 3]}})
    assert line.startswith("data.datasets.1:")


def test_unknown_top_level_field():
    line = only_problem({"learning_rate": 1e-4})
    assert line.startswith("learning_rate:") and "unknown field" in line


def test_unknown_nested_field_names_its_full_path():
    line = only_problem({"ppo": {"generation": {"temprature": 0.7}}})
    assert line.startswith("ppo.generation.temprature:") and "unknown field" in line


@pytest.mark.parametrize(
    "data,path",
    [
        ({"actor_model": {"name_or_path": "m", "zero_stage": 4}}, "actor_model.zero_stage"),
        ({"ppo": {"generation": {"top_p": 1.5}}}, "ppo.generation.top_p"),
        ({"sft": {"per_device_train_batch_size": 0}}, "sft.per_device_train_batch_size"),
        ({"metrics_port": 70000}, "metrics_port"),
        ({"reward_model": {"name_or_path": "m", "lora": {"dropout": 1.0}}}, "reward_model.lora.dropout"),
        ({"data": {"data_split": "2,4"}}, "data.data_split"),
        ({"data": {"data_split": "a,b,c"}}, "data.data_split"),
        ({"data": {"data_split": "0,0,0"}}, "data.data_split"),
        ({"data": {"data_split": "-1,1,1"}}, "data.data_split"),
        ({"dtype": "fp8"}, "dtype"),
    ],
)
def test_out_of_range_value_names_the_field(data, path):
    assert only_problem(data).startswith(f"{path}:")


def test_every_bad_field_is_reported_at_once():
    lines = error_lines({"seed": -1, "sft": {"learning_rate": 0}, "ppo": {"typo": 1}})
    assert sorted(line.split(":")[0].strip() for line in lines) == ["ppo.typo", "seed", "sft.learning_rate"]


def test_the_source_file_is_named(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("sft:\n  learning_rate: -1\n")
    with pytest.raises(ConfigError, match=re.escape(f"in {path}:")):
        load_config(path)


# -- cross-field rules --------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["actor_model", "reward_model"])
def test_offload_needs_zero(role):
    line = only_problem({role: {"name_or_path": "m", "zero_stage": 0, "offload": True}})
    assert line.startswith(f"{role}:") and "offload" in line and "zero_stage" in line
    build_config({role: {"name_or_path": "m", "zero_stage": 1, "offload": True}})


def test_only_optimize_needs_lora():
    line = only_problem({"actor_model": {"name_or_path": "m", "lora": {"only_optimize": True}}})
    assert line.startswith("actor_model:") and "lora.only_optimize" in line and "lora.dim" in line
    build_config({"actor_model": {"name_or_path": "m", "lora": {"dim": 4, "only_optimize": True}}})


@pytest.mark.parametrize("split,step", [("0,1,1", "sft"), ("1,0,1", "reward"), ("1,1,0", "ppo")])
def test_data_split_must_give_every_selected_step_data(split, step):
    line = only_problem({"data": {"data_split": split}})
    assert "data.data_split" in line and f"'{step}'" in line


def test_data_split_may_starve_a_step_that_does_not_run():
    config = build_config({"data": {"data_split": "0,1,1"}, "steps": ["reward", "ppo"]})
    assert config.data.split_shares == (0.0, 0.5, 0.5)


def test_sft_only_datasets_feed_sft_without_a_share():
    build_config({"data": {"data_split": "0,1,1", "sft_only_datasets": ["sft:./demos.jsonl"]}})


@pytest.mark.parametrize("steps", [["ppo", "sft"], ["reward", "sft"], ["sft", "sft"], ["ppo", "ppo"]])
def test_steps_in_order_and_once(steps):
    assert only_problem({"steps": steps}).startswith("steps:")


def test_unknown_step_name():
    assert only_problem({"steps": ["sft", "rl"]}).startswith("steps.1:")


def test_inference_tp_needs_zero3():
    data = {"ppo": {"generation": {"inference_tp_size": 2}}}
    line = only_problem(data)
    assert "ppo.generation.inference_tp_size" in line and "actor_model.zero_stage" in line
    build_config({**data, "actor_model": {"name_or_path": "m", "zero_stage": 3}})


def test_single_gpu_runs_one_process():
    line = only_problem({"deployment_type": "single_gpu", "nproc_per_node": 2})
    assert "deployment_type" in line and "nproc_per_node" in line
    build_config({"deployment_type": "single_node", "nproc_per_node": 2})
    build_config({"deployment_type": "single_gpu", "nproc_per_node": 1})


def test_synthetic_digit_range():
    line = only_problem({"data": {"synthetic": {"min_digits": 7, "max_digits": 4}}})
    assert line.startswith("data.synthetic:") and "min_digits" in line


# -- YAML files ---------------------------------------------------------------------------------


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("seed: 1\nsft:\n  learning_rate: [1, 2\n  mask_prompt_loss: true\nppo: {}\n")
    with pytest.raises(ConfigError) as caught:
        read_yaml(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:") and "not valid YAML" in message
    line = int(message.split(":")[1])
    assert 3 <= line <= 5  # where the unclosed list is noticed


def test_bad_indentation_names_its_line(tmp_path):
    path = tmp_path / "indent.yaml"
    path.write_text("seed: 1\nsft:\n  learning_rate: 1\n   mask_prompt_loss: true\n")
    with pytest.raises(ConfigError, match="^" + re.escape(f"{path}:4: not valid YAML")):
        read_yaml(path)


def test_yaml_top_level_must_be_a_mapping(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- sft\n- ppo\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(path)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_empty_yaml_file_is_the_defaults(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing set\n")
    assert load_config(path) == RunConfig()


# -- JSON schema ---------------------------------------------------------------------------------


def test_json_schema_is_valid_and_lists_every_section():
    schema = json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    json.dumps(schema)  # plain JSON, no Python objects
    assert set(schema["properties"]) == set(RunConfig.model_fields)
    for section in ("actor_model", "reward_model", "data", "sft", "reward", "ppo"):
        assert section in schema["properties"]
    for definition in ("ModelSettings", "LoraSettings", "DataSettings", "SFTSettings", "RewardSettings",
                       "PPOSettings", "GenerationSettings", "EMASettings", "PTXSettings", "AdaptiveKLSettings"):
        assert definition in schema["$defs"]
    assert schema["$defs"]["SFTSettings"]["properties"]["learning_rate"]["description"]


def test_json_schema_accepts_a_dumped_config_and_rejects_bad_ones():
    validator = jsonschema.Draft202012Validator(json_schema())
    assert not list(validator.iter_errors(yaml.safe_load(dump_config(RunConfig()))))
    assert list(validator.iter_errors({"sft": {"learning_rate": "fast"}}))
    assert list(validator.iter_errors({"sft": {"learning_rat": 1.0}}))  # unknown fields too


# -- fingerprints ---------------------------------------------------------------------------------


def test_fingerprint_changes_with_the_sections_it_covers():
    base = RunConfig()
    changed_sft = build_config({"sft": {"learning_rate": 1e-4}})
    changed_ppo = build_config({"ppo": {"kl_coef": 0.2}})
    assert base.fingerprint() == RunConfig().fingerprint()
    assert base.fingerprint("sft") != changed_sft.fingerprint("sft")
    assert base.fingerprint("sft", "data") == changed_ppo.fingerprint("sft", "data")
    assert base.fingerprint() != changed_ppo.fingerprint()
    assert base.fingerprint("data") != build_config({"data": {"data_split": "1,1,1"}}).fingerprint("data")


def test_parse_data_split_normalises():
    assert parse_data_split(" 2, 4 ,4") == pytest.approx((0.2, 0.4, 0.4))
    assert parse_data_split("1,0,0") == (1.0, 0.0, 0.0)
