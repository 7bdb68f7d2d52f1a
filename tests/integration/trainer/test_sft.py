"""Step 1 (SFT) for real: DeepSpeed on the CPU, ZeRO 0/2/3, LoRA, two processes, the CLI."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from kuberlhf_trainer.config import dump_config
from kuberlhf_trainer.models import load_causal_lm, load_tokenizer
from kuberlhf_trainer.steps import StaleOutputError, run_step
from tests.support.tiny_runs import run_cli, tiny_config


def _initial_weights(config) -> dict[str, torch.Tensor]:
    """The weights the step starts from (built-in models are seeded by the run's seed)."""
    torch.manual_seed(config.seed)
    model = load_causal_lm(config.actor_model, load_tokenizer(config.actor_model.name_or_path), "actor_model")
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_sft_on_the_hh_sample_lowers_perplexity_and_saves_a_loadable_checkpoint(tmp_path, runtime):
    config = tiny_config(tmp_path, "hh", sft__max_steps=25)
    summary = run_step("sft", config, runtime)

    out = config.step_dir("sft")
    assert summary["eval_perplexity_after"] < 0.8 * summary["eval_perplexity_before"]
    assert json.loads((out / "summary.json").read_text())["eval_perplexity_after"] == summary["eval_perplexity_after"]
    assert (out / "model.safetensors").exists()
    assert (out / "loss.png").read_bytes().startswith(b"\x89PNG"), "a picture of the loss curve"
    model = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    ids = tokenizer("\n\nHuman: hello\n\nAssistant:", return_tensors="pt")["input_ids"]
    assert model(input_ids=ids).logits.shape[-1] == len(tokenizer)
    assert not list(tmp_path.glob(".sft.partial")), "the staging directory is renamed into place"


@pytest.mark.parametrize("stage", [0, 2, 3])
def test_sft_trains_under_each_zero_stage(tmp_path, runtime, stage):
    config = tiny_config(tmp_path, actor_model__zero_stage=stage, sft__max_steps=8)
    summary = run_step("sft", config, runtime)

    assert summary["eval_perplexity_after"] < summary["eval_perplexity_before"]
    saved = load_file(config.step_dir("sft") / "model.safetensors")
    initial = _initial_weights(config)
    assert set(saved) <= set(initial), "ZeRO-3 gathering must save the plain model's parameter names"
    assert all(saved[k].shape == initial[k].shape for k in saved)
    assert any(not torch.equal(saved[k], initial[k]) for k in saved)


def test_lora_under_zero3_trains_only_adapters_and_saves_them_merged(tmp_path, runtime):
    saved = {}
    for steps in (2, 8):  # same seed, same start: only what LoRA adapts may differ between them
        config = tiny_config(tmp_path / str(steps), actor_model__zero_stage=3, actor_model__lora__dim=4,
                             actor_model__lora__only_optimize=True, actor_model__gradient_checkpointing=True,
                             sft__max_steps=steps)
        run_step("sft", config, runtime)
        saved[steps] = load_file(config.step_dir("sft") / "model.safetensors")
        AutoModelForCausalLM.from_pretrained(config.step_dir("sft"))

    assert not any("lora" in k for k in saved[8]), "adapters are merged into plain weights"
    assert torch.equal(saved[2]["model.embed_tokens.weight"], saved[8]["model.embed_tokens.weight"]), "frozen"
    adapted = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(saved[2][adapted], saved[8][adapted]), "the merged LoRA update changes adapted weights"


def test_a_finished_step_is_skipped_and_a_changed_config_is_refused(tmp_path, runtime):
    config = tiny_config(tmp_path, sft__max_steps=2)
    first = run_step("sft", config, runtime)
    weights = (config.step_dir("sft") / "model.safetensors").stat().st_mtime_ns

    assert run_step("sft", config, runtime) == first
    assert (config.step_dir("sft") / "model.safetensors").stat().st_mtime_ns == weights, "not trained twice"

    changed = tiny_config(tmp_path, sft__max_steps=2, sft__learning_rate=1e-4)
    with pytest.raises(StaleOutputError, match=r"sft\.learning_rate: 0\.003 -> 0\.0001"):
        run_step("sft", changed, runtime)
    assert run_step("sft", changed, runtime, overwrite=True)["config"]["sft"]["learning_rate"] == 1e-4


def test_a_crashed_step_leaves_the_previous_output_whole(tmp_path, runtime, monkeypatch):
    config = tiny_config(tmp_path, sft__max_steps=2)
    good = run_step("sft", config, runtime)

    def crash(ctx):
        (ctx.out_dir / "model.safetensors").write_bytes(b"half a checkpoint")
        raise RuntimeError("killed mid-write")

    monkeypatch.setattr("kuberlhf_trainer.steps.sft.run", crash)
    with pytest.raises(RuntimeError, match="killed mid-write"):
        run_step("sft", config, runtime, overwrite=True)
    out = config.step_dir("sft")
    assert json.loads((out / "summary.json").read_text())["finished_at"] == good["finished_at"]
    AutoModelForCausalLM.from_pretrained(out)  # the old checkpoint still loads


def test_cli_step_1_on_the_hh_sample(tmp_path):
    config_file = tmp_path / "run.yaml"
    config_file.write_text(dump_config(tiny_config(tmp_path / "out", "hh", sft__max_steps=10)))
    result = run_cli("train", "--config", str(config_file), "--step", "1")

    assert result.returncode == 0, result.stderr[-3000:]
    assert "sft:    eval perplexity" in result.stdout
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["steps"]["sft"]["eval_perplexity_after"] < summary["steps"]["sft"]["eval_perplexity_before"]
    assert yaml.safe_load((tmp_path / "out" / "config.yaml").read_text())["steps"] == ["sft"]


def test_two_processes_share_the_work_under_zero3(tmp_path):
    config = tiny_config(tmp_path / "out", actor_model__zero_stage=3, sft__max_steps=4,
                         deployment_type="single_node", nproc_per_node=2)
    config_file = tmp_path / "run.yaml"
    config_file.write_text(dump_config(config))
    result = run_cli("train", "--config", str(config_file), "--step", "1")

    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "out" / "sft" / "summary.json").read_text())
    assert summary["world_size"] == 2
    assert summary["eval_perplexity_after"] < summary["eval_perplexity_before"]
    AutoModelForCausalLM.from_pretrained(tmp_path / "out" / "sft")


def test_bad_config_exits_2_naming_the_field(tmp_path):
    result = run_cli("train", "--output_dir", str(tmp_path), "--sft.learning_rate", "-1", "--step", "1")
    assert result.returncode == 2
    assert "sft.learning_rate" in result.stderr
    assert not (tmp_path / "sft").exists(), "nothing starts on a bad config"


def test_a_step_3_that_cannot_run_on_this_machine_stops_the_pipeline_before_step_1(tmp_path):
    result = run_cli("train", "--output_dir", str(tmp_path), "--actor-model", "builtin:llama-tiny",
                     "--reward-model", "builtin:llama-tiny", "--data.datasets", "builtin:sort",
                     "--ppo.generation.engine", "deepspeed")  # device auto, and this machine has no CUDA
    assert result.returncode == 2, result.stderr
    assert "ppo.generation.engine 'deepspeed'" in result.stderr and "use 'hybrid'" in result.stderr.lower()
    assert not (tmp_path / "sft").exists(), "steps 1 and 2 did not run first"


def test_bad_input_is_reported_in_the_termination_log_for_the_operator(tmp_path, monkeypatch):
    log = tmp_path / "termination-log"
    monkeypatch.setenv("KUBERLHF_TERMINATION_LOG", str(log))
    result = run_cli("step", "sft", "--output_dir", str(tmp_path), "--actor_model.name_or_path", "builtin:llama-tiny",
                     "--data.datasets", str(tmp_path / "missing.jsonl"))
    assert result.returncode == 2
    report = json.loads(log.read_text())
    assert report == {"reason": "InvalidData", "message": report["message"], "retryable": False}
    assert "missing.jsonl" in report["message"]


@pytest.mark.parametrize("stage", [2, 3])
def test_cpu_offload_of_the_optimizer(tmp_path, runtime, stage):
    # DeepSpeedCPUAdam is compiled on first use (about a minute), then cached.
    config = tiny_config(tmp_path, actor_model__zero_stage=stage, actor_model__offload=True, sft__max_steps=4)
    summary = run_step("sft", config, runtime)
    assert summary["eval_perplexity_after"] < summary["eval_perplexity_before"]


def test_bf16_training_on_the_cpu(tmp_path, runtime):
    config = tiny_config(tmp_path, dtype="bf16", sft__max_steps=4)
    summary = run_step("sft", config, runtime)
    assert summary["eval_perplexity_after"] < summary["eval_perplexity_before"]
    assert AutoModelForCausalLM.from_pretrained(config.step_dir("sft")).dtype == torch.bfloat16


def test_gradient_accumulation_steps_once_per_group_of_micro_batches(tmp_path, runtime):
    # 72 SFT examples in micro-batches of 8: 9 micro-batches, 3 optimizer steps of 3 each.
    config = tiny_config(tmp_path, sft__gradient_accumulation_steps=3)
    summary = run_step("sft", config, runtime)
    assert summary["train_examples"] == 72
    assert summary["optimizer_steps"] == 3 and len(summary["loss_curve"]) == 3
