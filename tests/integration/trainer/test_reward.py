"""Step 2 (reward model) for real: the ranking loss moves accuracy, checkpoints load as value models."""

from __future__ import annotations

import shutil

import pytest
import torch

from kuberlhf_trainer.steps import run_step
from kuberlhf_trainer.steps.common import StepInputError
from kuberlhf_trainer.value_model import ValueModel
from tests.support.tiny_runs import tiny_config


# Enough sorting data and SFT steps for the SFT model to be right about half the time, so its
# own samples contain both right and wrong answers.
SORTING = dict(data__synthetic__num_examples=2000, sft__per_device_train_batch_size=32, sft__num_train_epochs=20,
               sft__max_steps=120, sft__mask_prompt_loss=True)


@pytest.fixture(scope="module")
def sft_done(tmp_path_factory, runtime):
    """An output directory holding a trained SFT step (trained once for this module)."""
    root = tmp_path_factory.mktemp("sft")
    run_step("sft", tiny_config(root, **SORTING), runtime)
    return root


def _from_sft(tmp_path, sft_done, **overrides):
    shutil.copytree(sft_done / "sft", tmp_path / "sft")
    return tiny_config(tmp_path, **SORTING, **overrides)


def test_reward_model_from_the_sft_model_learns_to_rank_the_sorting_pairs(tmp_path, runtime, sft_done):
    config = _from_sft(tmp_path, sft_done, reward__init_from_sft=True, reward__max_steps=120, reward__eval_iters=8,
                       reward__num_train_epochs=10, reward__learning_rate=1e-3)
    summary = run_step("reward", config, runtime)

    # A short run on little data: it must clearly learn (the embedded default reaches 0.95+, see
    # tests/e2e and docs/training.md).
    assert summary["eval_accuracy"] > 0.65
    assert summary["eval_accuracy"] > summary["eval_accuracy_before"] + 0.1
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


def test_policy_samples_need_the_sft_checkpoint_and_add_labelled_pairs(tmp_path, runtime, sft_done):
    with pytest.raises(StepInputError, match="run step sft first"):
        run_step("reward", tiny_config(tmp_path / "empty", reward__policy_samples=4), runtime)

    config = _from_sft(tmp_path, sft_done, reward__policy_samples=4, reward__max_steps=4)
    summary = run_step("reward", config, runtime)
    assert summary["policy_pairs"] > 0, "the SFT model's samples give right/wrong pairs"
    assert summary["sft_sample_accuracy"] is not None
    assert 0.0 < summary["sft_sample_task_score"] < 1.0
