"""`kuberlhf train`: steps 1 -> 2 -> 3 on one machine, and `kuberlhf step`: one step.

One process runs the steps in-process. Several processes per node (single_node) or several
nodes (multi_node with a hostfile) run each step as its own launch of `kuberlhf step`, the same
command a Kubernetes pod runs, and read the step's summary back from the output directory.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

from . import checkpoint
from .cli import EXIT_CONFIG_ERROR, write_config
from .config import ConfigError, RunConfig

log = logging.getLogger("kuberlhf")
TERMINATION_MESSAGE_LIMIT = 3000  # Kubernetes keeps at most 4096 bytes of a termination message


def user_errors() -> tuple[type[Exception], ...]:
    """Errors caused by input (config, data, models, stale outputs): reported plainly, exit 2."""
    from .data.records import DataFormatError
    from .models import ModelLoadError
    from .steps import StaleOutputError
    from .steps.common import NonFiniteLossError, StepInputError

    return (ConfigError, DataFormatError, ModelLoadError, StaleOutputError, StepInputError, NonFiniteLossError)


def quiet_libraries() -> None:
    """Our progress bar and messages only: library progress bars and info logs drown them."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    logging.getLogger("DeepSpeed").setLevel(logging.WARNING)


def run_single_step(step: str, config: RunConfig, overwrite: bool) -> int:
    quiet_libraries()
    from .engine import init_runtime
    from .steps import run_step

    from .resume import EXIT_PREEMPTED, Preempted

    try:
        runtime = init_runtime(config.device)
        run_step(step, config, runtime, overwrite)
    except user_errors() as error:
        return report_input_error(error)
    except Preempted as stopped:
        print(f"kuberlhf: {stopped}; run the step again to resume", file=sys.stderr)
        return EXIT_PREEMPTED
    return 0


def report_input_error(error: Exception) -> int:
    """Say what is wrong with the input, on stderr and, in a pod, in the termination log that the
    operator reads (env KUBERLHF_TERMINATION_LOG): launchers such as torchrun turn our exit code 2
    into 1, so the file is how the operator knows that retrying cannot help. Under MPIJob the
    trainer runs on workers whose termination log nobody reads: with KUBERLHF_REPORT_DIR set (a
    folder of the attempt on the shared storage), each rank also writes the report there as
    rank-<n>.json, whole or not at all, for the launcher to pass on."""
    print(f"kuberlhf: {error}", file=sys.stderr)
    reason = {"ConfigError": "InvalidConfig", "DataFormatError": "InvalidData", "ModelLoadError": "ModelLoadFailed",
              "StaleOutputError": "StaleOutput", "StepInputError": "MissingInput",
              "NonFiniteLossError": "TrainingDiverged"}.get(type(error).__name__, "InvalidInput")
    record = json.dumps({"reason": reason, "message": str(error)[:TERMINATION_MESSAGE_LIMIT], "retryable": False})
    log_path, folder = os.environ.get("KUBERLHF_TERMINATION_LOG"), os.environ.get("KUBERLHF_REPORT_DIR")
    # The rank as mpirun (OpenMPI, then other MPIs) or DeepSpeed's discovery names it; the pid if none does.
    rank = next((os.environ[v] for v in ("OMPI_COMM_WORLD_RANK", "PMI_RANK", "RANK") if os.environ.get(v)), None)
    try:  # each report is a courtesy; the exit code still says it
        if log_path:
            Path(log_path).write_text(record + "\n")
    except OSError as write_error:
        print(f"kuberlhf: cannot write {log_path}: {write_error}", file=sys.stderr)
    try:
        if folder:
            report = Path(folder) / f"rank-{rank or os.getpid()}.json"
            report.parent.mkdir(parents=True, exist_ok=True)
            partial = report.with_suffix(".partial")  # the launcher copies *.json: never a half-written one
            partial.write_text(record + "\n")
            os.replace(partial, report)
    except OSError as write_error:
        print(f"kuberlhf: cannot write a report in {folder}: {write_error}", file=sys.stderr)
    return EXIT_CONFIG_ERROR


def processes_per_node(config: RunConfig) -> int:
    if config.deployment_type == "single_gpu":
        return 1
    if config.nproc_per_node:
        return config.nproc_per_node
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() and config.device != "cpu" else 2


def check_later_steps_can_run_here(config: RunConfig) -> None:
    """ConfigError now, before step 1, for what would stop a later step on this machine. (With
    multi_node the steps run on the hostfile's machines, which this one cannot look at.)"""
    if "ppo" in config.steps and config.ppo.generation.engine == "deepspeed" and config.deployment_type != "multi_node":
        import torch

        from .hybrid_engine import require_cuda_for_deepspeed_engine

        require_cuda_for_deepspeed_engine(torch.cuda.is_available())


def run_pipeline(config: RunConfig, embedded: bool, overwrite: bool) -> int:
    if embedded:
        print("No --config or --actor-model given: running the embedded default "
              "(a tiny model built from a config, the built-in sorting task).")
    try:
        check_later_steps_can_run_here(config)
    except ConfigError as error:
        return report_input_error(error)
    config_path = write_config(config)
    nproc = processes_per_node(config)
    print(f"Steps {' -> '.join(config.steps)}; output in {config.output_dir}; {nproc} process(es) per node.")
    step_summaries, timings = {}, {}
    for step in config.steps:
        started = time.perf_counter()
        code = _run_step(step, config, config_path, nproc, overwrite)
        if code != 0:
            print(f"Step {step} failed (exit code {code}).", file=sys.stderr)
            return code
        timings[step] = time.perf_counter() - started
        step_summaries[step] = checkpoint.read_summary(config.step_dir(step)) or {}
        print(f"Step {step} finished in {timings[step]:.1f} s.")
    _write_run_summary(config, step_summaries, timings)
    print(report(step_summaries))
    return 0


def _run_step(step: str, config: RunConfig, config_path, nproc: int, overwrite: bool) -> int:
    if nproc == 1 and config.deployment_type != "multi_node":
        return run_single_step(step, config, overwrite)
    command = launch_command(config, nproc) + ["step", step, "--config", str(config_path)]
    command += ["--overwrite"] if overwrite else []
    return subprocess.call(command)


def launch_command(config: RunConfig, nproc: int) -> list[str]:
    """torchrun for one node, DeepSpeed's launcher over a hostfile for several."""
    if config.deployment_type == "multi_node":
        if not config.hostfile:
            raise ConfigError("deployment_type multi_node needs a hostfile (or run under Kubernetes, see docs/)")
        return ["deepspeed", "--hostfile", config.hostfile, "--module", "kuberlhf_trainer"]
    from .engine import free_port

    return [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
            f"--master_port={free_port()}", "--module", "kuberlhf_trainer"]


def _write_run_summary(config: RunConfig, steps: dict, timings: dict) -> None:
    figures = {name: {k: v for k, v in s.items() if k not in ("config", "loss_curve")} for name, s in steps.items()}
    checkpoint.write_json_atomic(
        Path(config.output_dir) / "summary.json",
        {"steps": figures, "seconds": {k: round(v, 2) for k, v in timings.items()}},
    )


def report(steps: dict) -> str:
    """How the run went, in a few lines."""
    lines = ["", "Summary:"]
    sft = steps.get("sft")
    if sft:
        lines.append(f"  sft:    eval perplexity {_fmt(sft.get('eval_perplexity_before'))} -> "
                     f"{_fmt(sft.get('eval_perplexity_after'))} ({sft.get('seconds', 0):.0f} s)")
    reward = steps.get("reward")
    if reward:
        lines.append(f"  reward: eval accuracy {_fmt(reward.get('eval_accuracy'))} ({reward.get('seconds', 0):.0f} s)")
    ppo = steps.get("ppo")
    if ppo:
        line = f"  ppo:    reward {_fmt(ppo.get('reward_before'))} -> {_fmt(ppo.get('reward_after'))}"
        if ppo.get("task_score_sft") is not None:
            line += f"; task score {_fmt(ppo['task_score_sft'])} -> {_fmt(ppo.get('task_score_ppo'))}"
        lines.append(line + f"; KL {_fmt(ppo.get('kl'))} ({ppo.get('seconds', 0):.0f} s)")
        speed = ppo.get("throughput_after_first_iteration") or ppo.get("throughput")
        if speed:
            lines.append(f"          generation {speed['generation_tokens_per_second']:.0f} tokens/s, training "
                         f"{speed['training_tokens_per_second']:.0f} tokens/s, "
                         f"{speed['seconds_per_iteration']:.2f} s per iteration")
    return "\n".join(lines)


def _fmt(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:.4g}"
