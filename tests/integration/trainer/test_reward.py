"""Step 2 (reward model) for real: the ranking loss moves accuracy, checkpoints load as value models."""

from __future__ import annotations

import pytest
import torch

from kuberlhf_trainer.steps import run_step
from kuberlhf_trainer.steps.common import StepInputError
from kuberlhf_trainer.value_model import ValueModel
from tests.support.tiny_runs import tiny_config


def test_reward_model_learns_to_rank_the_sorting_pairs(tmp_path, runtime):
    config = tiny_config(tmp_path, reward__max_steps=40, reward__learning_rate=2e-3)
    summary = run_step("reward", config, runtime)

    assert summary["eval_accuracy"] > 0.7
    assert summary["eval_accuracy"] > summary["eval_accuracy_before"]
    assert summary["eval_chosen_score"] > summary["eval_rejected_score"]
    model = ValueModel.from_pretrained(config.step_dir("reward"))
    assert model.v_head.weight.abs().sum() > 0


@pytest.mark.parametrize("loss", ["end", "tokenwise"])
def test_reward_step_on_the_hh_sample(tmp_path, runtime, loss):
    config = tiny_config(tmp_path, "hh", reward__loss=loss, reward__max_steps=4)
    summary = run_step("reward", config, runtime)
    assert summary["train_pairs"] > 0 and summary["eval_accuracy"] is not None
    ValueModel.from_pretrained(config.step_dir("reward"))


def test_reward_model_with_lora_under_zero3_is_saved_merged(tmp_path, runtime):
    config = tiny_config(tmp_path, reward_model__zero_stage=3, reward_model__lora__dim=4,
                         reward_model__lora__only_optimize=True, reward__max_steps=4)
    run_step("reward", config, runtime)
    out = config.step_dir("reward")
    assert not (out / "adapter_config.json").exists()
    model = ValueModel.from_pretrained(out)
    ids = torch.tensor([[5, 6, 7]])
    assert model(ids, torch.ones_like(ids)).shape == (1, 3)


def test_policy_samples_need_the_sft_checkpoint_and_add_labelled_pairs(tmp_path, runtime):
    config = tiny_config(tmp_path, reward__policy_samples=4, reward__max_steps=4)
    with pytest.raises(StepInputError, match="run step sft first"):
        run_step("reward", config, runtime)

    run_step("sft", tiny_config(tmp_path, sft__max_steps=30), runtime)
    summary = run_step("reward", config, runtime)
    assert summary["policy_pairs"] > 0, "the SFT model's samples give right/wrong pairs"
    assert summary["sft_sample_accuracy"] is not None
    assert 0.0 <= summary["sft_sample_task_score"] <= 1.0
