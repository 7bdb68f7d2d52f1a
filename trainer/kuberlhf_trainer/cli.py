"""The `kuberlhf` command.

  kuberlhf train [--config F] [flags]     steps 1 -> 2 -> 3 (DeepSpeed-Chat's e2e flags work)
  kuberlhf step {sft,reward,ppo} ...      one step in the current process group (torchrun, pods)
  kuberlhf chat --model DIR               talk to a trained model
  kuberlhf config [--schema]              print the resolved config (or its JSON schema)

With neither --config nor an actor model, `train` runs the embedded default: a tiny model built
from a config, the built-in sorting task, on the CPU when there is no GPU.
"""

from __future__ import annotations

import argparse
import json
import logging
from importlib import resources
from pathlib import Path
from typing import Optional

from .config import ConfigError, RunConfig, apply_overrides, build_config, dump_config, json_schema, read_yaml
from .flags import add_config_flags, overrides_from

log = logging.getLogger("kuberlhf")
EMBEDDED_DEFAULT = "tiny-sort.yaml"
EXIT_CONFIG_ERROR = 2  # bad input: retrying cannot help (the operator treats it as permanent)


def embedded_default() -> dict:
    return read_yaml(resources.files("kuberlhf_trainer") / "defaults" / EMBEDDED_DEFAULT)


def resolve_config(args: argparse.Namespace, allow_embedded: bool) -> tuple[RunConfig, bool]:
    """(config, whether it is the embedded default) from --config, flags and defaults."""
    overrides = overrides_from(args)
    if args.config:
        data, source = read_yaml(args.config), args.config
    elif allow_embedded and "actor_model.name_or_path" not in overrides:
        data, source = embedded_default(), f"embedded default ({EMBEDDED_DEFAULT})"
    else:
        data, source = {}, "flags"
    apply_overrides(data, overrides)
    return build_config(data, source=source), source.startswith("embedded")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kuberlhf", description="RLHF (SFT -> reward model -> PPO) on DeepSpeed.", allow_abbrev=False
    )
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser(
        "train", allow_abbrev=False, help="run steps 1 -> 2 -> 3", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="kuberlhf train [--config FILE] [--step 1 2 3] [--overwrite] [flags]",
    )
    train.add_argument("--overwrite", action="store_true", help="replace step outputs made with another configuration")
    add_config_flags(train)

    step = commands.add_parser(
        "step", allow_abbrev=False, help="run one step in the current process group (what torchrun and pods run)",
        usage="kuberlhf step {sft,reward,ppo} [--config FILE] [--overwrite] [flags]",
    )
    step.add_argument("name", choices=["sft", "reward", "ppo"], help="the step to run")
    step.add_argument("--overwrite", action="store_true", help="replace step outputs made with another configuration")
    add_config_flags(step, dschat=False)

    chat = commands.add_parser("chat", allow_abbrev=False, help="talk to a trained model (multi-turn, streamed)")
    chat.add_argument("--model", required=True, help="a step's output directory, e.g. output/ppo or output/sft")
    chat.add_argument("--max-new-tokens", type=int, default=128, help="longest answer in tokens (default 128)")
    chat.add_argument("--temperature", type=float, default=0.0, help="sampling temperature; 0 decodes greedily")

    show = commands.add_parser("config", allow_abbrev=False, help="print the resolved configuration or its JSON schema")
    show.add_argument("--schema", action="store_true", help="print the JSON schema of the configuration")
    add_config_flags(show)
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = build_parser().parse_args(argv)
    if args.command == "chat":
        from .chat import run_chat
        from .pipeline import quiet_libraries

        quiet_libraries()
        return run_chat(args.model, args.max_new_tokens, args.temperature)
    try:
        if args.command == "config":
            return _show_config(args)
        config, embedded = resolve_config(args, allow_embedded=args.command == "train")
    except ConfigError as error:
        from .pipeline import report_input_error

        return report_input_error(error)
    from .pipeline import run_pipeline, run_single_step

    if args.command == "step":
        return run_single_step(args.name, config, args.overwrite)
    return run_pipeline(config, embedded, args.overwrite)


def _show_config(args: argparse.Namespace) -> int:
    if args.schema:
        print(json.dumps(json_schema(), indent=2))
        return 0
    config, _ = resolve_config(args, allow_embedded=True)
    print(dump_config(config), end="")
    return 0


def write_config(config: RunConfig) -> Path:
    """The resolved config beside the outputs: what child processes and later reruns read."""
    path = Path(config.output_dir) / "config.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dump_config(config))
    return path
