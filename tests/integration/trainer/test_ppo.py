"""Step 3 (PPO) for real: the RLHF engine's models, experience, updates, outputs."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForCausalLM

from kuberlhf_trainer.config import dump_config
from kuberlhf_trainer.data.prepare import step_examples
from kuberlhf_trainer.data.tokenize import collate_prompts
from kuberlhf_trainer.engine import free_port
from kuberlhf_trainer.models import load_tokenizer
from kuberlhf_trainer.rlhf import PPOTrainer, RLHFEngine
from kuberlhf_trainer.steps import run_step
from kuberlhf_trainer.steps.common import StepInputError
from kuberlhf_trainer.value_model import ValueModel
from tests.support.tiny_runs import REPO, cli_env, ppo_config, tiny_config



def test_ppo_writes_actor_critic_and_ema_and_reports_its_figures(tmp_path, runtime, trained_steps):
    config = ppo_config(tmp_path, trained_steps, ppo__ema__enabled=True, ppo__max_steps=4,
                         ppo__samples_per_prompt=2, ppo__center_rewards_per_prompt=True)
    summary = run_step("ppo", config, runtime)

    out = config.step_dir("ppo")
    for name in ("reward_before", "reward_after", "kl", "task_score_sft", "task_score_ppo", "task_score_ema",
                 "task_score_sft_sampled", "task_score_ppo_sampled", "task_score_ema_sampled"):
        assert summary[name] is not None, name
    assert summary["iterations"] == 4 and len(summary["history"]) == 4
    phases = {"generation", "actor_forward", "reference_forward", "critic_forward", "reward_forward",
              "actor_train", "critic_train"}
    assert set(summary["time_breakdown_seconds"]) == phases and all(summary["time_breakdown_seconds"].values())
    for picture in ("training.png", "time_breakdown.png", "throughput.png"):
        assert (out / picture).read_bytes().startswith(b"\x89PNG"), picture
    throughput = summary["throughput"]
    assert throughput["generation_tokens_per_second"] > 0 and throughput["training_tokens_per_second"] > 0
    assert throughput["effective_tflops_per_device"] > 0 and throughput["peak_memory_mb"] > 0
    # each iteration's seconds add up to the breakdown; the steady-state figures leave the first out
    first = summary["history"][0]
    assert set(first["seconds"]) == phases and first["work"]["generated_tokens"] > 0
    breakdown = summary["time_breakdown_seconds"]
    assert sum(breakdown.values()) == pytest.approx(sum(sum(r["seconds"].values()) for r in summary["history"]), abs=0.1)
    warm = summary["throughput_after_first_iteration"]
    later = summary["history"][1:]
    assert warm["seconds_per_iteration"] == pytest.approx(sum(sum(r["seconds"].values()) for r in later) / len(later))
    assert warm["generation_tokens_per_second"] == pytest.approx(
        sum(r["work"]["generated_tokens"] for r in later) / sum(r["seconds"]["generation"] for r in later))
    actor = AutoModelForCausalLM.from_pretrained(out)
    ema = AutoModelForCausalLM.from_pretrained(out / "actor_ema")
    ValueModel.from_pretrained(out / "critic")
    sft = AutoModelForCausalLM.from_pretrained(trained_steps / "sft")
    name = "model.layers.0.mlp.up_proj.weight"
    actor_w, ema_w, sft_w = (dict(m.named_parameters())[name] for m in (actor, ema, sft))
    assert not torch.equal(actor_w, sft_w), "PPO moved the actor"
    # beta 0.992 over a few steps: the EMA stays much closer to where it started
    assert (ema_w - sft_w).abs().sum() < (actor_w - sft_w).abs().sum()


def test_ppo_needs_the_earlier_steps(tmp_path, runtime):
    with pytest.raises(StepInputError, match="run step sft first"):
        run_step("ppo", tiny_config(tmp_path), runtime)


def test_blog_api_generate_experience_and_train_rlhf(tmp_path, runtime, trained_steps):
    config = ppo_config(tmp_path, trained_steps)
    tokenizer = load_tokenizer(str(trained_steps / "sft"))
    engine = RLHFEngine(str(trained_steps / "sft"), str(trained_steps / "reward"), tokenizer, 10, config, runtime)
    trainer = PPOTrainer(engine, config.ppo)
    prompts = step_examples(config, "ppo", tokenizer).train[:4]

    experience = trainer.generate_experience(collate_prompts(prompts, tokenizer.pad_token_id))
    assert experience.sequences.shape[0] == 4 and experience.answer_mask.sum() > 0
    assert torch.allclose(experience.logprobs * experience.answer_mask, experience.ref_logprobs * experience.answer_mask,
                          atol=1e-4), "before any update the actor is the reference"
    stats = trainer.train_rlhf(experience)
    assert stats.critic_loss > 0 and stats.clip_fraction == 0.0, "the first update starts at ratio 1"


def test_ppo_with_lora_zero3_and_the_pretraining_mix(tmp_path, runtime, trained_steps):
    text = tmp_path / "pretrain.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 200)
    config = ppo_config(tmp_path, trained_steps, actor_model__zero_stage=3, actor_model__lora__dim=4,
                         actor_model__lora__only_optimize=True, reward_model__zero_stage=3,
                         reward_model__lora__dim=4, ppo__ptx__dataset=str(text), ppo__ptx__coef=1.0,
                         ppo__ema__enabled=True, ppo__max_steps=2)
    summary = run_step("ppo", config, runtime)
    assert all(record["ptx_loss"] > 0 for record in summary["history"])
    assert not (config.step_dir("ppo") / "adapter_config.json").exists(), "LoRA merged into the saved actor"
    AutoModelForCausalLM.from_pretrained(config.step_dir("ppo"))


def test_ppo_in_two_processes_agrees_between_ranks_and_partitions_the_ema(tmp_path, trained_steps):
    """ZeRO-3 on two processes: one KL coefficient, advantages whitened over the global batch,
    figures over both ranks, and an EMA partitioned like the actor (saved and resumed whole)."""
    config = ppo_config(tmp_path / "out", trained_steps, actor_model__zero_stage=3, reward_model__zero_stage=3,
                        deployment_type="single_node", nproc_per_node=2, ppo__max_steps=3, ppo__ema__enabled=True,
                        ppo__adaptive_kl__enabled=True, ppo__adaptive_kl__target=0.5, ppo__adaptive_kl__horizon=100)
    config_file = tmp_path / "run.yaml"
    config_file.write_text(dump_config(config))
    probes = tmp_path / "probes"
    probes.mkdir()
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                             str(free_port()), str(REPO / "tests" / "support" / "ppo_two_processes.py"), str(config_file),
                             str(probes)], env=cli_env(), capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((probes / f"rank{r}.json").read_text()) for r in (0, 1)]
    summary = json.loads((tmp_path / "out" / "ppo" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["iterations"] == 3

    assert ranks[0]["kl_observed"] == ranks[1]["kl_observed"], "the controller sees the KL of both ranks' sequences"
    assert ranks[0]["kl_coef"] == ranks[1]["kl_coef"] and ranks[0]["kl_coef"][-1] != config.ppo.kl_coef
    for iteration, record in enumerate(summary["history"]):
        total, squares, count = (sum(r["advantages"][iteration][k] for r in ranks) for k in range(3))
        assert total / count == pytest.approx(0.0, abs=1e-4) and squares / count == pytest.approx(1.0, abs=1e-3)
        score_sum, sequences = (sum(r["scores"][iteration][k] for r in ranks) for k in range(2))
        assert record["sequences"] == sequences == 2 * config.ppo.per_device_generation_batch_size
        assert record["reward_mean"] == pytest.approx(score_sum / sequences)
        assert record["kl_coef"] == (ranks[1]["kl_coef"][iteration - 1] if iteration else config.ppo.kl_coef)
    local_means = [r["advantages"][i][0] / r["advantages"][i][2] for r in ranks for i in range(3)]
    assert any(abs(mean) > 1e-3 for mean in local_means), "each rank's share is not whitened on its own"

    for rank in ranks:
        assert 0.45 < rank["ema_bytes"] / rank["ema_bytes_whole"] < 0.6, "each rank keeps half of the EMA"
        assert rank["ema_loads_back"]
    assert ranks[0]["ema_saved_as_gathered"], "ppo/actor_ema holds the EMA's weights"


def test_metrics_endpoint_serves_every_documented_metric_during_ppo(tmp_path, trained_steps):
    import time
    import urllib.request

    from kuberlhf_trainer.engine import free_port
    from kuberlhf_trainer.metrics import DEFINITIONS, PREFIX

    port = free_port()
    config = ppo_config(tmp_path / "out", trained_steps, ppo__max_steps=60, ppo__num_train_epochs=50, metrics_port=port)
    config_file = tmp_path / "run.yaml"
    config_file.write_text(dump_config(config))
    process = subprocess.Popen([sys.executable, "-m", "kuberlhf_trainer", "step", "ppo", "--config", str(config_file)],
                               env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wanted = {PREFIX + name for name in DEFINITIONS}
    samples: dict[str, float] = {}
    try:
        while process.poll() is None and not wanted <= set(samples):
            time.sleep(0.5)
            try:
                text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
            except OSError:
                continue
            samples = _parse(text)
    finally:
        process.kill()
        stderr = process.communicate()[1]
    assert wanted <= set(samples), f"missing {sorted(wanted - set(samples))}; stderr: {stderr[-2000:]}"
    assert samples[PREFIX + "tokens_per_second"] > 0 and samples[PREFIX + "tflops_per_device"] > 0
    assert 0 < samples[PREFIX + "step_progress"] <= samples[PREFIX + "step_total"] == 60
    assert samples[PREFIX + "ppo_response_length"] >= 1 and 0 <= samples[PREFIX + "ppo_clip_fraction"] <= 1


def _parse(text: str) -> dict[str, float]:
    """name -> value of the first sample of each metric labelled with job and stage ppo."""
    samples = {}
    for line in text.splitlines():
        if line.startswith("#") or 'stage="ppo"' not in line or 'job="out"' not in line:
            continue
        name, value = line.split("{")[0], float(line.rsplit(" ", 1)[1])
        samples.setdefault(name, value)
    return samples


def test_several_generation_batches_and_ppo_epochs_per_update(tmp_path, runtime, trained_steps):
    # prompts of different lengths: the batches' experience is padded to one width and joined
    config = ppo_config(tmp_path, trained_steps, ppo__generation_batches=3, ppo__ppo_epochs=2, ppo__max_steps=2,
                         ppo__per_device_training_batch_size=5, ppo__eval_interval=1)
    summary = run_step("ppo", config, runtime)
    assert summary["iterations"] == 2
    assert all("eval" in record for record in summary["history"]), "evaluated at every interval"
    assert all(0.0 <= record["clip_fraction"] <= 1.0 for record in summary["history"])
