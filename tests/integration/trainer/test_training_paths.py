"""The paths real runs take, beside the embedded default's: models loaded from a directory,
gradient accumulation above 1, and step 3 reading exactly what generation produced and what
step 2 trained on."""

from __future__ import annotations

import json

import pytest
import torch

from kuberlhf_trainer.config import ModelSettings, SFTSettings
from kuberlhf_trainer.data.prepare import step_examples
from kuberlhf_trainer.data.records import Sample
from kuberlhf_trainer.data.tokenize import collate_pairs, collate_prompts, collate_sft, encode_pair
from kuberlhf_trainer.generation import Rollout, answer_mask_from, decode_answers
from kuberlhf_trainer.losses import token_logprobs
from kuberlhf_trainer.metrics import TrainingMetrics
from kuberlhf_trainer.models import eval_mode, load_tokenizer
from kuberlhf_trainer.rlhf import PPOTrainer, RLHFEngine
from kuberlhf_trainer.steps.common import make_loader, optimizer_step, planned_steps, train_loop
from kuberlhf_trainer.steps.ppo import _update
from kuberlhf_trainer.value_model import ValueModel, scores_at
from tests.support.tiny_runs import ppo_config, saved_model_dir, tiny_config, trainable_engine


def _sft_batches(config, count: int, size: int, runtime):
    tokenizer = load_tokenizer(config.actor_model.name_or_path)
    examples = step_examples(config, "sft", tokenizer).train[: count * size]
    return make_loader(examples, size, collate_sft, tokenizer.pad_token_id, runtime, True, config.seed)


def test_a_model_loaded_from_a_directory_trains_with_dropout_and_recomputation(tmp_path, runtime):
    """from_pretrained returns a model in eval mode: it must still train in train mode."""
    settings = ModelSettings(name_or_path=saved_model_dir(tmp_path / "base"), gradient_checkpointing=True, dropout=0.5)
    engine = trainable_engine(settings, runtime)
    calls = []
    mlp = engine.module.model.layers[0].mlp  # runs inside the checkpointed layer (module hooks do not run on recompute)
    mlp.forward = lambda *args, forward=mlp.forward, **kwargs: (calls.append(1), forward(*args, **kwargs))[1]
    batch = next(iter(_sft_batches(tiny_config(tmp_path, actor_model__name_or_path=settings.name_or_path), 1, 4, runtime)))

    first = engine(**batch, use_cache=False).loss
    second = engine(**batch, use_cache=False).loss
    assert first.item() != second.item(), "dropout 0.5 is active while training"
    calls.clear()
    optimizer_step(engine, engine(**batch, use_cache=False).loss)
    assert len(calls) == 2, "gradient checkpointing runs the layer again in the backward pass"
    with eval_mode(engine), torch.no_grad():
        assert engine(**batch, use_cache=False).loss.item() == engine(**batch, use_cache=False).loss.item()
    assert engine.module.training, "back in train mode after evaluating"
    assert engine.module.config.use_cache, "the saved config still generates with a KV cache"


class RecordingCheckpointer:
    """Stands in for the Checkpointer: records when the loop offers to save."""

    def __init__(self, engine):
        self.engine, self.offers = engine, []

    def after_step(self, steps_done: int, state_fn) -> None:
        self.offers.append((steps_done, self.engine.global_steps))


@pytest.mark.parametrize("accumulation", [1, 2, 3])
def test_optimizer_steps_evaluations_and_checkpoints_follow_gradient_accumulation(tmp_path, runtime, accumulation):
    config = tiny_config(tmp_path)
    loader = _sft_batches(config, 9, 4, runtime)
    settings = SFTSettings(gradient_accumulation_steps=accumulation, eval_interval=1, num_train_epochs=1)
    engine = trainable_engine(config.actor_model, runtime, accumulation)
    total = planned_steps("sft", loader, settings)
    evaluated_at = []
    checkpointer = RecordingCheckpointer(engine)

    def evaluate() -> str:
        evaluated_at.append(engine.global_steps)
        return ""

    curve = train_loop(engine, loader, lambda batch: engine(**batch, use_cache=False).loss, settings, total, runtime,
                       "sft", TrainingMetrics("test", "sft", serve=False), evaluate, checkpointer)
    steps = 9 // accumulation
    assert total == curve["steps"] == engine.global_steps == len(curve["losses"]) == steps
    assert evaluated_at == list(range(1, steps + 1)), "evaluated right after each optimizer step"
    assert checkpointer.offers == [(n, n) for n in range(1, steps)], "saved only between optimizer steps"


def test_an_accumulation_that_makes_no_optimizer_step_is_refused(tmp_path, runtime):
    from kuberlhf_trainer.steps.common import StepInputError

    loader = _sft_batches(tiny_config(tmp_path), 3, 4, runtime)
    with pytest.raises(StepInputError, match="sft.gradient_accumulation_steps 4"):
        planned_steps("sft", loader, SFTSettings(gradient_accumulation_steps=4))


def _engine(tmp_path, trained_steps, runtime, **overrides):
    config = ppo_config(tmp_path, trained_steps, **overrides)
    tokenizer = load_tokenizer(str(trained_steps / "sft"))
    engine = RLHFEngine(str(trained_steps / "sft"), str(trained_steps / "reward"), tokenizer, 10, config, runtime)
    return config, tokenizer, PPOTrainer(engine, config.ppo)


@pytest.mark.parametrize("accumulation", [1, 2, 3])
def test_the_ema_follows_each_optimizer_step_of_the_actor(tmp_path, runtime, trained_steps, accumulation):
    config, tokenizer, trainer = _engine(
        tmp_path, trained_steps, runtime, ppo__ema__enabled=True, ppo__gradient_accumulation_steps=accumulation,
        ppo__per_device_generation_batch_size=6, ppo__per_device_training_batch_size=1)
    actor, ema = trainer.engine.actor.engine, trainer.engine.ema
    updated_after = []
    original = ema.update
    ema.update = lambda: (updated_after.append(actor.global_steps), original())[1]
    prompts = collate_prompts(step_examples(config, "ppo", tokenizer).train[:6], tokenizer.pad_token_id)

    _update(trainer, trainer.generate_experience(prompts), None, runtime)
    steps = 6 // accumulation
    assert actor.global_steps == trainer.engine.critic.engine.global_steps == steps
    assert updated_after == list(range(1, steps + 1)), "one EMA update right after each optimizer step"


def test_ppo_learns_from_the_log_probs_the_answers_were_sampled_with(tmp_path, runtime, trained_steps):
    """Left padding (prompts of several lengths) and answers that end early in the batch."""
    config, tokenizer, trainer = _engine(tmp_path, trained_steps, runtime, ppo__max_answer_seq_len=12)
    examples = sorted(step_examples(config, "ppo", tokenizer).train, key=lambda e: len(e.prompt_ids))
    prompts = collate_prompts(examples[:4] + examples[-4:], tokenizer.pad_token_id)
    assert (prompts["attention_mask"] == 0).any(), "some prompts are left-padded"
    model = trainer.engine.generation.actor_engine.module
    torch.manual_seed(0)
    with eval_mode(model), torch.no_grad():
        out = model.generate(**prompts, max_new_tokens=12, do_sample=True, output_logits=True,
                             return_dict_in_generate=True, eos_token_id=tokenizer.eos_token_id,
                             pad_token_id=tokenizer.pad_token_id)
    prompt_len = prompts["input_ids"].shape[1]
    answers = out.sequences[:, prompt_len:]
    answer_mask = answer_mask_from(answers, tokenizer.eos_token_id)
    assert (answer_mask.sum(1) < answers.shape[1]).any(), "some answers end before others"
    sampled_with = token_logprobs(torch.stack(out.logits, 1), answers)
    rollout = Rollout(out.sequences, torch.cat([prompts["attention_mask"], answer_mask], 1), prompt_len, answer_mask)

    experience = trainer.make_experience(rollout)
    mask = answer_mask.bool()
    torch.testing.assert_close(experience.logprobs[mask], sampled_with[mask], atol=1e-4, rtol=0)
    with torch.no_grad():  # what the first PPO update's ratio is computed from
        trained = trainer.answer_logprobs(trainer.engine.actor.engine, rollout.sequences, rollout.attention_mask, prompt_len)
    torch.testing.assert_close(trained[mask], sampled_with[mask], atol=1e-4, rtol=0)


def test_step_3_scores_an_answer_as_step_2_scores_the_same_text(tmp_path, runtime, trained_steps):
    """Also an answer cut at max_answer_seq_len: step 2's sequences always end with EOS."""
    config, tokenizer, trainer = _engine(tmp_path, trained_steps, runtime, ppo__max_answer_seq_len=3)
    examples = step_examples(config, "ppo", tokenizer).train[:16]
    prompts = collate_prompts(examples, tokenizer.pad_token_id)
    torch.manual_seed(0)
    rollout = trainer.generate_sequences(prompts["input_ids"], prompts["attention_mask"])
    step3 = trainer.score(rollout.sequences, rollout.attention_mask, rollout.prompt_len, rollout.answer_mask.float())

    # Step 2 reads a (prompt, answer) pair of texts, tokenized by its data layer, right-padded.
    texts = decode_answers(tokenizer, rollout)
    pairs = [encode_pair(tokenizer, Sample(e.prompt, text, text), 64) for e, text in zip(examples, texts)]
    with torch.no_grad():
        batch = collate_pairs(pairs, tokenizer.pad_token_id)
        values = ValueModel.from_pretrained(trained_steps / "reward").eval()(batch["input_ids"], batch["attention_mask"])
        step2 = scores_at(values, batch["ends"])[: len(pairs)]
    # Rows whose text is their tokens (a sampled special token, e.g. <unk>, is no text): the same sequence.
    same = [row for row, pair in enumerate(pairs) if _real_tokens(rollout, row, tokenizer.eos_token_id) == pair.chosen_ids]
    assert len(same) >= len(pairs) // 2 and any(rollout.answer_lengths[row] == 3 for row in same)
    torch.testing.assert_close(step3[same], step2[same], atol=1e-4, rtol=0)


def _real_tokens(rollout: Rollout, row: int, eos_id: int) -> list[int]:
    """A rollout row's prompt and answer tokens, ending with EOS (appended if the answer was cut)."""
    tokens = rollout.sequences[row][rollout.attention_mask[row].bool()].tolist()
    return tokens if tokens[-1] == eos_id else tokens + [eos_id]


def test_an_optimizer_step_may_span_ppo_iterations_and_checkpoints_wait_for_it(tmp_path, runtime, trained_steps):
    """DeepSpeed-Chat's single-GPU recipe: one micro-batch per iteration at gradient accumulation 2."""
    from kuberlhf_trainer.data.tokenize import collate_prompts as collate
    from kuberlhf_trainer.steps.ppo import BatchStream, LoopState, train

    config, tokenizer, trainer = _engine(tmp_path, trained_steps, runtime, ppo__gradient_accumulation_steps=2)
    assert config.ppo.micro_batches_per_iteration == 1
    loader = make_loader(step_examples(config, "ppo", tokenizer).train, 4, collate, tokenizer.pad_token_id, runtime,
                         True, config.seed)
    checkpointer = RecordingCheckpointer(trainer.engine.actor.engine)
    train(trainer, LoopState(prompts=BatchStream(loader)), 5, runtime, None, TrainingMetrics("test", "ppo", serve=False),
          checkpointer)
    assert trainer.engine.actor.engine.global_steps == 2
    assert checkpointer.offers == [(2, 1), (4, 2)], "saved only after iterations that end on an optimizer step"


def test_an_adapter_output_feeds_steps_2_and_3_and_chat(tmp_path, runtime, monkeypatch):
    """lora.merge_on_save false: step 1 saves peft's adapter format; step 2 starts its backbone from
    it, step 3 its actor (and saves its own adapter on top), and chat talks to the result."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from kuberlhf_trainer.chat import ChatSession
    from kuberlhf_trainer.lora_checkpoints import ADAPTER_CONFIG, resolve_checkpoint
    from kuberlhf_trainer.steps import run_step

    monkeypatch.setenv("KUBERLHF_CACHE_DIR", str(tmp_path / "cache"))
    base = saved_model_dir(tmp_path / "base")
    config = tiny_config(tmp_path / "out", actor_model__name_or_path=base, actor_model__lora__dim=8,
                         actor_model__lora__only_optimize=True, actor_model__lora__merge_on_save=False,
                         actor_model__lora__learning_rate=1e-2, reward_model__name_or_path=base,
                         reward__init_from_sft=True, sft__max_steps=10, reward__max_steps=4, ppo__max_steps=2)
    for step in ("sft", "reward", "ppo"):
        run_step(step, config, runtime)

    sft, ppo = config.step_dir("sft"), config.step_dir("ppo")
    for output, its_base in ((sft, base), (ppo, str(sft.resolve()))):
        assert not (output / "config.json").exists()
        assert json.loads((output / ADAPTER_CONFIG).read_text())["base_model_name_or_path"] == its_base
    ids = torch.tensor([[5, 20, 21, 22, 23]])
    with torch.no_grad():
        ours = AutoModelForCausalLM.from_pretrained(resolve_checkpoint(str(sft)))(ids).logits
        peft_own = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), sft)(ids).logits
        untrained = AutoModelForCausalLM.from_pretrained(base)(ids).logits
    torch.testing.assert_close(ours, peft_own, atol=1e-5, rtol=0)  # peft's own format: it loads it the same
    assert not torch.allclose(ours, untrained, atol=1e-3), "the adapters carry what step 1 trained"
    assert json.loads((config.step_dir("reward") / "summary.json").read_text())["eval_accuracy"] is not None
    assert isinstance(ChatSession.load(ppo, max_new_tokens=4).ask("Sort: 3 1 2"), str)


def test_without_held_out_prompts_step_3_says_it_evaluates_on_training_prompts(runtime, caplog):
    from types import SimpleNamespace

    from kuberlhf_trainer.steps.ppo import _eval_prompts

    held_out = SimpleNamespace(train=["t1", "t2", "t3"], eval=["e1"])
    assert _eval_prompts(held_out, 2, runtime) == ["e1"] and not caplog.records
    none_held_out = SimpleNamespace(train=["t1", "t2", "t3"], eval=[])
    assert _eval_prompts(none_held_out, 2, runtime) == ["t1", "t2"]
    assert "evaluating on 2 TRAINING prompts" in caplog.text and "eval_prompts_held_out" in caplog.text
