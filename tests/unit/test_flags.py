"""Command-line flags: one per schema field, DeepSpeed-Chat's spellings, and how they resolve."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel

from kuberlhf_trainer.cli import build_parser, resolve_config
from kuberlhf_trainer.config import ConfigError, RunConfig, dump_config
from kuberlhf_trainer.flags import leaf_fields


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["train", *argv])


def resolve(*argv: str, allow_embedded: bool = False) -> RunConfig:
    config, _ = resolve_config(parse(*argv), allow_embedded=allow_embedded)
    return config


def train_actions() -> dict[str, argparse.Action]:
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {flag: action for action in subparsers.choices["train"]._actions for flag in action.option_strings}


def all_leaf_paths(model: type[BaseModel] = RunConfig, prefix: str = "") -> set[str]:
    """Computed independently of flags.leaf_fields: every non-section field of the schema."""
    paths = set()
    for name, info in model.model_fields.items():
        if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
            paths |= all_leaf_paths(info.annotation, f"{prefix}{name}.")
        else:
            paths.add(f"{prefix}{name}")
    return paths


# -- every field has a documented flag -----------------------------------------------------------


def test_every_leaf_field_has_a_flag_documented_by_its_description():
    actions = train_actions()
    paths = all_leaf_paths()
    assert len(paths) > 100 and {dotted for dotted, _ in leaf_fields()} == paths
    for dotted, info in leaf_fields():
        action = actions.get(f"--{dotted}")
        assert action is not None, f"no flag --{dotted}"
        assert info.description and info.description in action.help.replace("%%", "%"), dotted


def test_help_shows_the_run_default_not_the_section_default():
    actions = train_actions()
    assert "'facebook/opt-1.3b'" in actions["--actor_model.name_or_path"].help
    assert "'facebook/opt-350m'" in actions["--reward_model.name_or_path"].help
    assert "[default: 2]" in actions["--actor_model.zero_stage"].help
    assert "[default: 5e-05]" in actions["--reward.learning_rate"].help
    assert not [flag for flag, action in actions.items() if "PydanticUndefined" in (action.help or "")]


@pytest.mark.parametrize(
    "command",
    [[sys.executable, "-m", "kuberlhf_trainer", "train", "--help"],
     [str(Path(sys.executable).parent / "kuberlhf"), "train", "--help"]],
    ids=["python -m kuberlhf_trainer", "console script"],
)
def test_train_help_lists_the_flags(command):
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    for flag in ("--actor-model", "--reward-model", "--deployment-type", "--actor-zero-stage", "--step",
                 "--config", "--sft.learning_rate", "--ppo.generation.temperature", "--data.data_split",
                 "--actor_model.lora.dim"):
        assert flag in result.stdout
    assert "Peak learning rate of the non-LoRA parameters." in " ".join(result.stdout.split())


# -- DeepSpeed-Chat's flags ------------------------------------------------------------------------


def test_deepspeed_chat_flags():
    config = resolve("--actor-model", "1.3b", "--reward-model", "350m", "--deployment-type", "single_node",
                     "--actor-zero-stage", "3", "--reward-zero-stage", "2", "--step", "1", "3")
    assert config.actor_model.name_or_path == "facebook/opt-1.3b"
    assert config.reward_model.name_or_path == "facebook/opt-350m"
    assert config.deployment_type == "single_node"
    assert config.actor_model.zero_stage == 3 and type(config.actor_model.zero_stage) is int
    assert config.reward_model.zero_stage == 2
    assert config.steps == ["sft", "ppo"]


def test_deepspeed_chat_flags_keep_other_model_names():
    config = resolve("--actor-model", "facebook/opt-6.7b", "--reward-model", "./my-rm", "--step", "reward")
    assert config.actor_model.name_or_path == "facebook/opt-6.7b"
    assert config.reward_model.name_or_path == "./my-rm"
    assert config.steps == ["reward"]


def test_output_dir_flag():
    assert resolve("--output-dir", "/tmp/run").output_dir == "/tmp/run"


# -- flags, files and values -------------------------------------------------------------------


def test_flags_override_the_config_file(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("actor_model:\n  name_or_path: builtin:llama-tiny\n  zero_stage: 1\n"
                    "sft:\n  learning_rate: 1.0e-3\n  num_train_epochs: 3\nseed: 7\n")
    config = resolve("--config", str(path), "--sft.learning_rate", "2e-3", "--actor-zero-stage", "2")
    assert config.sft.learning_rate == 2e-3
    assert config.actor_model.zero_stage == 2
    assert config.sft.num_train_epochs == 3 and config.seed == 7  # untouched by flags
    assert config.actor_model.name_or_path == "builtin:llama-tiny"


def test_values_parse_as_yaml_scalars():
    config = resolve("--ppo.ema.enabled", "true", "--sft.learning_rate", "1e-4", "--sft.max_steps", "null",
                     "--ppo.kl_coef", "0.05", "--seed", "42", "--actor_model.lora.alpha", "16",
                     "--data.data_split", "1,1,1", "--output_dir", "123")
    assert config.ppo.ema.enabled is True
    assert config.sft.learning_rate == pytest.approx(1e-4)
    assert config.sft.max_steps is None
    assert config.ppo.kl_coef == 0.05 and config.seed == 42 and config.actor_model.lora.alpha == 16.0
    assert config.data.data_split == "1,1,1"
    assert config.output_dir == "123"  # a string field keeps numbers-looking text as text


def test_null_unsets_an_optional_text_field(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("actor_model:\n  name_or_path: m\n  tokenizer: builtin:char\nppo:\n  ptx:\n    dataset: ./text\n")
    config = resolve("--config", str(path), "--actor_model.tokenizer", "null", "--ppo.ptx.dataset", "~")
    assert config.actor_model.tokenizer is None and config.ppo.ptx.dataset is None


def test_list_fields_take_several_values():
    config = resolve("--data.datasets", "hh:./a.jsonl", "builtin:sort", "--steps", "sft", "reward")
    assert config.data.datasets == ["hh:./a.jsonl", "builtin:sort"]
    assert config.steps == ["sft", "reward"]


def test_a_resolved_config_reloads_identically(tmp_path):
    config = resolve("--actor-model", "350m", "--sft.learning_rate", "3e-5")
    path = tmp_path / "resolved.yaml"
    path.write_text(dump_config(config))
    assert resolve("--config", str(path)) == config


# -- the embedded default ------------------------------------------------------------------------


def test_no_config_and_no_actor_model_gives_the_embedded_default():
    config, embedded = resolve_config(parse(), allow_embedded=True)
    assert embedded is True
    assert config.actor_model.name_or_path.startswith("builtin:")
    assert config.data.datasets == ["builtin:sort"]


def test_embedded_default_still_takes_flags():
    config, embedded = resolve_config(parse("--step", "1", "--sft.max_steps", "5"), allow_embedded=True)
    assert embedded is True and config.steps == ["sft"] and config.sft.max_steps == 5
    assert config.data.datasets == ["builtin:sort"]


def test_an_actor_model_or_a_config_turns_the_embedded_default_off(tmp_path):
    config, embedded = resolve_config(parse("--actor-model", "125m"), allow_embedded=True)
    assert embedded is False and config.data.datasets == ["Dahoas/rm-static"]
    path = tmp_path / "run.yaml"
    path.write_text("seed: 3\n")
    config, embedded = resolve_config(parse("--config", str(path)), allow_embedded=True)
    assert embedded is False and config.seed == 3
    config, embedded = resolve_config(parse(), allow_embedded=False)
    assert embedded is False and config == RunConfig()


# -- bad values ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv,field",
    [
        (["--sft.learning_rate", "fast"], "sft.learning_rate"),
        (["--actor-zero-stage", "7"], "actor_model.zero_stage"),
        (["--actor-zero-stage", "three"], "actor_model.zero_stage"),
        (["--seed", "-1"], "seed"),
        (["--ppo.generation.top_p", "2"], "ppo.generation.top_p"),
        (["--data.data_split", "1,2"], "data.data_split"),
        (["--step", "4"], "steps.0"),
    ],
)
def test_bad_value_raises_naming_the_field(argv, field):
    with pytest.raises(ConfigError) as caught:
        resolve(*argv)
    assert f"  {field}: " in str(caught.value)


def test_bad_choice_exits_naming_the_flag(capsys):
    with pytest.raises(SystemExit) as caught:
        parse("--dtype", "fp8")
    assert caught.value.code == 2
    assert "--dtype" in capsys.readouterr().err


def test_cli_exits_with_the_config_error(capsys):
    from kuberlhf_trainer.cli import EXIT_CONFIG_ERROR, main

    assert main(["train", "--sft.learning_rate", "-1"]) == EXIT_CONFIG_ERROR
    assert "sft.learning_rate" in capsys.readouterr().err


def test_one_model_setting_keeps_the_default_model():
    config = resolve("--actor-zero-stage", "3", "--reward_model.lora.dim", "8")
    assert config.actor_model.name_or_path == "facebook/opt-1.3b" and config.actor_model.zero_stage == 3
    assert config.reward_model.name_or_path == "facebook/opt-350m" and config.reward_model.lora.dim == 8


def test_flags_fill_an_empty_yaml_section(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("sft:\n  # learning_rate: 1.0e-3\n")
    assert resolve("--config", str(path), "--sft.num_train_epochs", "2").sft.num_train_epochs == 2
