"""Step 2: the reward model — a causal-LM backbone with a scalar head, trained on preference
pairs with the pairwise ranking loss at the end of each answer (InstructGPT eq. 1).

On tasks with a ground-truth scorer the training pairs also include the SFT model's own
samples ranked by the scorer (see policy_pairs.py): a reward model that only knows hand-made
mistakes ranks the policy's real mistakes near chance, and PPO then learns to fool it.
"""

from __future__ import annotations


import torch

from ..config import RunConfig
from ..data.prepare import step_examples
from ..data.tokenize import collate_pairs
from ..engine import Runtime
from ..lora_checkpoints import is_checkpoint
from ..losses import pairwise_ranking_loss, tokenwise_ranking_loss
from ..models import count_parameters, eval_mode, load_pretrained, model_config, tokenizer_for, zero3_loading
from ..value_model import ValueModel, scores_at
from .common import StepContext, StepInputError, make_loader, make_trainable, planned_steps, save_model, to_device, train_loop
from .policy_pairs import labelled_policy_pairs


def run(ctx: StepContext) -> dict:
    config, runtime, metrics, out_dir = ctx.config, ctx.runtime, ctx.metrics, ctx.out_dir
    settings, model_settings = config.reward, _backbone_settings(config)
    tokenizer = tokenizer_for(model_settings, "reward_model")
    data = step_examples(config, "reward", tokenizer, runtime.barrier, is_builder=runtime.local_rank == 0)
    policy = labelled_policy_pairs(config, runtime, tokenizer)
    train_pairs = data.train + policy.train
    if not train_pairs:
        raise StepInputError("reward: no preference pairs (check data.datasets and data.data_split)")

    ds_config = ctx.deepspeed_config(model_settings, settings)
    torch.manual_seed(config.seed)
    with zero3_loading(ds_config):
        model = ValueModel(load_pretrained(_auto_model(), model_settings, tokenizer, "reward_model"))
    metrics.parameters, metrics.recompute = count_parameters(model)[0], model_settings.gradient_checkpointing
    pad = tokenizer.pad_token_id
    loader = make_loader(train_pairs, settings.per_device_train_batch_size, collate_pairs, pad, runtime, True, config.seed)
    eval_loaders = {
        name: make_loader(pairs, settings.per_device_eval_batch_size, collate_pairs, pad, runtime, False, config.seed)
        for name, pairs in (("eval", data.eval), ("sft_samples", policy.eval))
    }
    total_steps = planned_steps("reward", loader, settings)
    trained = make_trainable(
        model, model_settings, ds_config, settings.learning_rate, settings.weight_decay,
        (settings.adam_beta1, settings.adam_beta2), (settings.lr_scheduler_type, settings.num_warmup_steps, total_steps),
        runtime,
    )
    engine = trained.engine
    evaluate = lambda name: evaluate_pairs(engine, eval_loaders[name], settings.eval_iters, runtime)  # noqa: E731
    checkpointer = ctx.checkpointer({"model": engine})
    resumed = checkpointer.load_latest()
    before = resumed["eval_before"] if resumed else evaluate("eval")  # measured once, before any training
    loss_fn = lambda batch: ranking_loss(engine, batch, settings.loss)  # noqa: E731
    curve = train_loop(engine, loader, loss_fn, settings, total_steps, runtime, "reward", metrics,
                       lambda: _describe(evaluate("eval")), checkpointer, resumed, {"eval_before": before})
    after, on_samples = evaluate("eval"), evaluate("sft_samples")

    save_model(trained, out_dir, lambda: _auto_model().from_config(model_config(model_settings, tokenizer, "reward_model")), runtime)
    if runtime.is_main:
        tokenizer.save_pretrained(out_dir)
    return {
        "eval_accuracy_before": before["accuracy"],
        "eval_accuracy": after["accuracy"],
        "eval_chosen_score": after["chosen_score"],
        "eval_rejected_score": after["rejected_score"],
        "sft_sample_accuracy": on_samples["accuracy"],
        "train_pairs": len(data.train),
        "policy_pairs": len(policy.train),
        "eval_pairs": len(data.eval),
        "sft_sample_eval_pairs": len(policy.eval),
        "sft_sample_task_score": policy.sample_score,
        "optimizer_steps": curve["steps"],
        "parameters": count_parameters(model)[0],
        "tokens_per_second": curve["tokens_per_second"],
        "loss_curve": curve["losses"],
    }


def _describe(figures: dict) -> str:
    if figures["accuracy"] is None:
        return "no eval pairs"
    return (f"eval accuracy {figures['accuracy']:.3f}, chosen score {figures['chosen_score']:.3f}, "
            f"rejected score {figures['rejected_score']:.3f}")


def _backbone_settings(config: RunConfig):
    """reward_model, with the weights taken from the SFT checkpoint when reward.init_from_sft is on."""
    if not config.reward.init_from_sft:
        return config.reward_model
    sft_dir = config.step_dir("sft")
    if not is_checkpoint(sft_dir):
        raise StepInputError(f"reward.init_from_sft needs the SFT checkpoint, but {sft_dir} has none: run step sft first")
    return config.reward_model.model_copy(update={"name_or_path": str(sft_dir), "tokenizer": None})


def _auto_model():
    from transformers import AutoModel

    return AutoModel


def pair_scores(engine, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(values (2B, T), chosen scores (B,), rejected scores (B,)): the score is the value at
    each sequence's last token, the EOS after the answer."""
    values = engine(batch["input_ids"], batch["attention_mask"]).float()
    scores = scores_at(values, batch["ends"])
    half = scores.shape[0] // 2
    return values, scores[:half], scores[half:]


def ranking_loss(engine, batch: dict, kind: str) -> torch.Tensor:
    values, chosen, rejected = pair_scores(engine, batch)
    if kind == "end":
        return pairwise_ranking_loss(chosen, rejected)
    return tokenwise_ranking_loss(*values.chunk(2), divergent_span(batch))


def divergent_span(batch: dict) -> torch.Tensor:
    """(B, T) mask from the first position where chosen and rejected differ through the end of
    the longer one (DeepSpeed-Chat's span for the token-wise loss)."""
    ids, ends = batch["input_ids"].chunk(2), batch["ends"].chunk(2)
    differs = ids[0] != ids[1]
    first = torch.where(differs.any(1), differs.float().argmax(1), torch.full_like(ends[0], ids[0].shape[1]))
    last = torch.maximum(ends[0], ends[1])
    positions = torch.arange(ids[0].shape[1], device=ids[0].device)
    return ((positions >= first.unsqueeze(1)) & (positions <= last.unsqueeze(1))).float()


@torch.no_grad()
def evaluate_pairs(engine, loader, max_batches: int, runtime: Runtime) -> dict:
    """Share of pairs ranked right and mean scores (None without pairs)."""
    right = count = chosen_sum = rejected_sum = 0.0
    with eval_mode(engine):
        for index, batch in enumerate(loader):
            if index >= max_batches:
                break
            _, chosen, rejected = pair_scores(engine, to_device(batch, runtime.device))
            right += (chosen > rejected).sum().item()
            count += len(chosen)
            chosen_sum += chosen.sum().item()
            rejected_sum += rejected.sum().item()
    right, count, chosen_sum, rejected_sum = runtime.sum([right, count, chosen_sum, rejected_sum])
    if not count:
        return {"accuracy": None, "chosen_score": None, "rejected_score": None}
    return {"accuracy": right / count, "chosen_score": chosen_sum / count, "rejected_score": rejected_sum / count}
