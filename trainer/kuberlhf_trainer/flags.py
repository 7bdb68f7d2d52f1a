"""Command-line flags generated from the config schema, plus DeepSpeed-Chat's own flag names.

Every field of `RunConfig` becomes `--<dotted.path>` (e.g. `--sft.learning_rate 1e-4`,
`--ppo.ema.enabled true`) with the field's description as help, so `--help` documents every
setting and the schema stays the single source. The flags DeepSpeed-Chat users already type
(`--actor-model 1.3b --reward-model 350m --deployment-type single_node --step 1 2 3 ...`) map
onto the same fields.
"""

from __future__ import annotations

import argparse
import typing
from typing import Any, Iterator

import yaml
from pydantic import BaseModel

from .config import STEP_NAMES, RunConfig

_UNSET = object()

# DeepSpeed-Chat's e2e flags: (flag, dotted field, help).
DSCHAT_FLAGS = [
    ("--actor-model", "actor_model.name_or_path", "Actor model: hub name, local path, builtin:<size>, or an OPT size like 1.3b."),
    ("--reward-model", "reward_model.name_or_path", "Reward model: hub name, local path, builtin:<size>, or an OPT size like 350m."),
    ("--actor-zero-stage", "actor_model.zero_stage", "ZeRO stage of the actor (0-3)."),
    ("--reward-zero-stage", "reward_model.zero_stage", "ZeRO stage of the reward model and critic (0-3)."),
    ("--output-dir", "output_dir", "Output directory (steps write <output-dir>/<step>/)."),
    ("--deployment-type", "deployment_type", "single_gpu, single_node or multi_node."),
]
OPT_SIZES = ("125m", "350m", "1.3b", "2.7b", "6.7b", "13b", "30b", "66b")


def leaf_fields(model: type[BaseModel] = RunConfig, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted name, pydantic FieldInfo) of every non-section field."""
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from leaf_fields(annotation, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", info


def _describe(info, default: Any = _UNSET) -> tuple[str, dict]:
    """Help text and argparse kwargs for one field; `default` is its value in a default RunConfig."""
    annotation = info.annotation
    origin = typing.get_origin(annotation)
    kwargs: dict = {"default": _UNSET, "type": _parse_value}
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if origin is typing.Literal:
        kwargs["choices"] = list(typing.get_args(annotation))
        kwargs["type"] = str
    elif origin is list:
        kwargs["nargs"] = "+"
        inner = typing.get_args(annotation)[0]
        if typing.get_origin(inner) is typing.Literal:
            kwargs["choices"] = list(typing.get_args(inner))
        if inner is str or typing.get_origin(inner) is typing.Literal:
            kwargs["type"] = str
    elif annotation is str:
        kwargs["type"] = str
    elif args and all(a is str for a in args):  # Optional[str]: 'null' unsets it, as in YAML
        kwargs["type"] = _parse_optional_text
    if default is _UNSET:
        default = info.get_default(call_default_factory=True)
    if isinstance(default, BaseModel):
        default = "(see section)"
    help_text = f"{info.description} [default: {default!r}]"
    return help_text.replace("%", "%%"), kwargs


def _parse_value(text: str) -> Any:
    """YAML scalars: 1e-4 -> float, true -> bool, null -> None, anything else stays a string."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return value if isinstance(value, (int, float, bool)) or value is None else text


def _parse_optional_text(text: str) -> Any:
    return None if text in _YAML_NULLS else text


_YAML_NULLS = ("null", "Null", "NULL", "~")


def _effective_default(defaults: dict, dotted: str) -> Any:
    """The field's value in a default RunConfig: a section's own defaults can differ from the
    run's (RunConfig's actor_model is facebook/opt-1.3b at ZeRO-2, not ModelSettings' 0)."""
    node: Any = defaults
    for key in dotted.split("."):
        node = node[key]
    return node


def add_config_flags(parser: argparse.ArgumentParser, dschat: bool = True) -> None:
    parser.add_argument("--config", help="YAML config file (fields as in docs/configuration.md); flags override it.")
    if dschat:
        group = parser.add_argument_group("DeepSpeed-Chat flags")
        for flag, dotted, help_text in DSCHAT_FLAGS:
            group.add_argument(flag, dest=f"cfg:{dotted}", default=_UNSET, help=help_text, metavar="VALUE")
        group.add_argument(
            "--step", dest="cfg:steps", nargs="+", default=_UNSET, metavar="STEP",
            help="Steps to run: 1 2 3 or sft reward ppo (default: all).",
        )
    group = parser.add_argument_group("config fields (any field of the schema, by its dotted path)")
    defaults = RunConfig().model_dump(mode="json")
    for dotted, info in leaf_fields():
        help_text, kwargs = _describe(info, _effective_default(defaults, dotted))
        group.add_argument(f"--{dotted}", dest=f"cfg:{dotted}", help=help_text, metavar="VALUE", **kwargs)


def overrides_from(args: argparse.Namespace) -> dict[str, Any]:
    """Dotted overrides from parsed flags, DeepSpeed-Chat spellings normalised."""
    overrides = {}
    for key, value in vars(args).items():
        if key.startswith("cfg:") and value is not _UNSET:
            overrides[key[4:]] = value
    if "steps" in overrides:
        overrides["steps"] = [normalise_step(s) for s in overrides["steps"]]
    for role in ("actor_model", "reward_model"):
        name = overrides.get(f"{role}.name_or_path")
        if isinstance(name, str) and name.removeprefix("facebook/opt-") in OPT_SIZES:
            overrides[f"{role}.name_or_path"] = f"facebook/opt-{name.removeprefix('facebook/opt-')}"
    for key in ("actor_model.zero_stage", "reward_model.zero_stage"):
        if key in overrides and isinstance(overrides[key], str) and overrides[key].isdigit():
            overrides[key] = int(overrides[key])
    return overrides


def normalise_step(step: Any) -> str:
    text = str(step).strip()
    if text in ("1", "2", "3"):
        return STEP_NAMES[int(text) - 1]
    return text
