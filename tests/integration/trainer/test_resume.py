"""Interrupted training resumes and ends exactly where an uninterrupted run ends.

Each test runs `kuberlhf` as a subprocess (as a pod runs it), stops it with SIGTERM (a
preemption: the step saves a checkpoint within its grace period and exits 143) or SIGKILL (a
crash: the last complete checkpoint is what survives), runs it again, and compares the result
with an uninterrupted run's: the same weights bit for bit, the same loss curve (no optimizer
step done twice or skipped).
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from kuberlhf_trainer.config import dump_config
from kuberlhf_trainer.resume import EXIT_PREEMPTED
from tests.support.tiny_runs import cli_env, tiny_config


def _write(directory: Path, **overrides) -> Path:
    config = tiny_config(directory / "out", checkpoint__interval_steps=5, checkpoint__interval_minutes=0, **overrides)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "run.yaml"
    path.write_text(dump_config(config))
    return path


def _start(config_file: Path, *command: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "kuberlhf_trainer", *command, "--config", str(config_file)],
                            env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _finish(config_file: Path, *command: str) -> None:
    process = _start(config_file, *command)
    assert process.wait(timeout=900) == 0, process.stderr.read()[-3000:]


def _wait_for(path_glob: str, root: Path, process: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not list(root.glob(path_glob)):
        assert process.poll() is None, f"finished before {path_glob} appeared: {process.stderr.read()[-2000:]}"
        assert time.monotonic() < deadline, f"no {path_glob} after {timeout} s"
        time.sleep(0.1)


def _same_weights(a: Path, b: Path) -> None:
    left, right = load_file(a), load_file(b)
    assert left.keys() == right.keys()
    different = [name for name in left if not left[name].equal(right[name])]
    assert not different, f"weights differ: {different[:5]}"


MAX_INTERRUPTIONS = 4
SFT = dict(data__synthetic__num_examples=1500, sft__max_steps=40, sft__num_train_epochs=10)


@pytest.mark.parametrize("accumulation", [1, 2])
def test_sigterm_saves_and_the_restarted_step_ends_bitwise_as_an_uninterrupted_one(tmp_path, accumulation):
    overrides = dict(SFT, sft__gradient_accumulation_steps=accumulation)
    reference, interrupted = _write(tmp_path / "reference", **overrides), _write(tmp_path / "interrupted", **overrides)
    _finish(reference, "step", "sft")

    process = _start(interrupted, "step", "sft")
    _wait_for(".sft.checkpoints/*/step-*.done", interrupted.parent / "out", process)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=120) == EXIT_PREEMPTED, process.stderr.read()[-2000:]
    assert "run the step again to resume" in process.stderr.read()
    _finish(interrupted, "step", "sft")

    ours = json.loads((interrupted.parent / "out" / "sft" / "summary.json").read_text())
    theirs = json.loads((reference.parent / "out" / "sft" / "summary.json").read_text())
    assert ours["loss_curve"] == theirs["loss_curve"], "no optimizer step done twice or skipped"
    assert ours["eval_perplexity_before"] == theirs["eval_perplexity_before"]
    _same_weights(interrupted.parent / "out" / "sft" / "model.safetensors",
                  reference.parent / "out" / "sft" / "model.safetensors")
    assert not (interrupted.parent / "out" / ".sft.checkpoints").exists(), "checkpoints go once the step is done"
    # The step's time counts the attempt before the checkpoint too; an uninterrupted one had one attempt.
    assert ours["seconds"] > ours["seconds_this_attempt"] > 0
    assert theirs["seconds"] == pytest.approx(theirs["seconds_this_attempt"], abs=0.05)


def test_a_pipeline_killed_at_random_points_ends_as_an_uninterrupted_one(tmp_path):
    """SIGTERM and SIGKILL at seeded random moments of `kuberlhf train` (all three steps)."""
    overrides = dict(SFT, reward__max_steps=20, ppo__max_steps=12, ppo__ema__enabled=True,
                     reward__policy_samples=2, ppo__samples_per_prompt=2, ppo__center_rewards_per_prompt=True)
    reference, interrupted = _write(tmp_path / "reference", **overrides), _write(tmp_path / "interrupted", **overrides)
    started = time.monotonic()
    _finish(reference, "train")
    duration = time.monotonic() - started

    chance = random.Random(7)
    interruptions = []
    for attempt in range(MAX_INTERRUPTIONS + 1):
        process = _start(interrupted, "train")
        try:
            # Somewhere in the middle of what an uninterrupted run takes; the last attempt runs to the end.
            process.wait(timeout=chance.uniform(0.3, 0.9) * duration if attempt < MAX_INTERRUPTIONS else 900)
        except subprocess.TimeoutExpired:
            how = (signal.SIGTERM, signal.SIGKILL)[attempt % 2]  # a preemption, then a crash, ...
            process.send_signal(how)
            process.wait(timeout=120)
            interruptions.append(how.name)
            continue
        assert process.returncode == 0, process.stderr.read()[-3000:]
        break
    else:
        pytest.fail(f"never finished after {interruptions}")
    assert interruptions, "the test must interrupt at least once"

    out, ref = interrupted.parent / "out", reference.parent / "out"
    for step, weights in (("sft", "model.safetensors"), ("reward", "model.safetensors"), ("ppo", "model.safetensors"),
                          ("ppo", "critic/model.safetensors"), ("ppo", "actor_ema/model.safetensors")):
        _same_weights(out / step / weights, ref / step / weights)
    ours, theirs = (json.loads((d / "ppo" / "summary.json").read_text()) for d in (out, ref))
    assert [r["reward_mean"] for r in ours["history"]] == [r["reward_mean"] for r in theirs["history"]]
    print(f"interruptions survived: {interruptions}")


def test_a_one_process_checkpoint_resumes_on_two_processes(tmp_path):
    """ZeRO partitions optimizer state per process: the checkpoint is converted to DeepSpeed's
    universal format and re-partitioned; the examples not yet trained are dealt to both."""
    one = _write(tmp_path, actor_model__zero_stage=2, **SFT)
    process = _start(one, "step", "sft")
    _wait_for(".sft.checkpoints/*/step-*.done", tmp_path / "out", process)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=120) == EXIT_PREEMPTED
    kept = sorted((tmp_path / "out" / ".sft.checkpoints").glob("*/step-*.done"))[-1].name
    interrupted_at = int(kept.removeprefix("step-").removesuffix(".done"))

    two = tmp_path / "two.yaml"
    two.write_text(one.read_text().replace("deployment_type: single_gpu", "deployment_type: single_node")
                   .replace("nproc_per_node: null", "nproc_per_node: 2"))
    result = subprocess.run([sys.executable, "-m", "kuberlhf_trainer", "train", "--config", str(two), "--step", "1"],
                            env=cli_env(), capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "universal format" in result.stderr
    summary = json.loads((tmp_path / "out" / "sft" / "summary.json").read_text())
    assert summary["world_size"] == 2 and len(summary["loss_curve"]) == SFT["sft__max_steps"]
    assert interrupted_at < SFT["sft__max_steps"]
    assert summary["eval_perplexity_after"] < summary["eval_perplexity_before"]


def test_a_diverging_loss_stops_the_step_and_keeps_the_last_good_checkpoint(tmp_path, runtime):
    from kuberlhf_trainer.steps import run_step
    from kuberlhf_trainer.steps.common import NonFiniteLossError

    config = tiny_config(tmp_path, sft__learning_rate=1e12, sft__gradient_clipping=0, sft__max_steps=40,
                         sft__num_train_epochs=10, checkpoint__interval_steps=1, checkpoint__interval_minutes=0)
    with pytest.raises(NonFiniteLossError, match=r"the sft loss became (nan|inf) at optimizer step \d+") as error:
        run_step("sft", config, runtime)
    failed_at = int(error.value.args[0].split("optimizer step ")[1].split(":")[0])
    kept = sorted(p.name for p in (tmp_path / ".sft.checkpoints").glob("*/step-*.done"))
    assert kept and kept[-1] == f"step-{failed_at - 1:08d}.done", "the last good step's checkpoint is kept"
    assert not (tmp_path / "sft").exists(), "nothing is published from a diverged run"


def test_checkpoints_of_another_configuration_neither_shadow_nor_prune_this_ones(tmp_path, runtime):
    """A run changed after a preemption (say, its learning rate) must resume from its own checkpoints."""
    from kuberlhf_trainer.config import CheckpointSettings
    from kuberlhf_trainer.resume import Checkpointer
    from tests.support.tiny_runs import trainable_engine

    engine = trainable_engine(tiny_config(tmp_path).actor_model, runtime)
    settings, step_dir = CheckpointSettings(keep_last=1), tmp_path / "sft"
    old = Checkpointer(settings, step_dir, {"model": engine}, runtime, fingerprint="a" * 64)
    for steps in (10, 20):
        old.save(steps, {"steps": steps})
    new = Checkpointer(settings, step_dir, {"model": engine}, runtime, fingerprint="b" * 64)
    new.save(2, {"steps": 2})

    assert new.complete_tags() == ["step-00000002"], "not pruned for being older than the other run's step 20"
    assert new.load_latest()["steps"] == 2, "resumes from its own checkpoint"
    assert old.complete_tags() == ["step-00000020"] and old.load_latest()["steps"] == 20
