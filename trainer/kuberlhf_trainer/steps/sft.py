"""Step 1: supervised fine-tuning of the actor on prompt + preferred answer.

The loop, in order: load data and model, measure eval perplexity, then for each micro-batch
forward, backward and (every `gradient_accumulation_steps`) step; evaluate at intervals;
measure perplexity again; save a Hugging Face checkpoint. Returns the step's summary figures.
"""

from __future__ import annotations

import math

import torch

from ..data.prepare import step_examples
from ..data.tokenize import IGNORE_INDEX, collate_sft
from ..engine import Runtime
from ..models import count_parameters, eval_mode, load_causal_lm, model_config, tokenizer_for, zero3_loading
from .common import StepContext, StepInputError, make_loader, make_trainable, planned_steps, save_model, to_device, train_loop


def run(ctx: StepContext) -> dict:
    config, runtime, metrics = ctx.config, ctx.runtime, ctx.metrics
    settings, model_settings = config.sft, config.actor_model
    tokenizer = tokenizer_for(model_settings, "actor_model")
    data = step_examples(config, "sft", tokenizer, runtime.barrier, is_builder=runtime.local_rank == 0)
    if not data.train:
        raise StepInputError("sft: no training examples (check data.datasets and data.data_split)")

    ds_config = ctx.deepspeed_config(model_settings, settings)
    torch.manual_seed(config.seed)
    with zero3_loading(ds_config):
        model = load_causal_lm(model_settings, tokenizer, "actor_model")
    total_params, _ = count_parameters(model)
    metrics.parameters, metrics.recompute = total_params, model_settings.gradient_checkpointing

    pad = tokenizer.pad_token_id
    train_loader = make_loader(data.train, settings.per_device_train_batch_size, collate_sft, pad, runtime, True, config.seed)
    eval_loader = make_loader(data.eval, settings.per_device_eval_batch_size, collate_sft, pad, runtime, False, config.seed)
    total_steps = planned_steps("sft", train_loader, settings)
    trained = make_trainable(
        model, model_settings, ds_config, settings.learning_rate, settings.weight_decay,
        (settings.adam_beta1, settings.adam_beta2),
        (settings.lr_scheduler_type, settings.num_warmup_steps, total_steps), runtime,
    )
    engine = trained.engine

    evaluate = lambda: evaluate_perplexity(engine, eval_loader, settings.eval_iters, runtime)  # noqa: E731
    checkpointer = ctx.checkpointer({"model": engine})
    resumed = checkpointer.load_latest()
    # Measured once, before any training: a resumed step keeps the figure from its first start.
    perplexity_before = resumed["perplexity_before"] if resumed else evaluate()
    curve = train_loop(
        engine, train_loader, lambda batch: engine(**batch, use_cache=False).loss, settings, total_steps, runtime,
        "sft", metrics, lambda: f"eval perplexity {evaluate():.4g}",
        checkpointer, resumed, {"perplexity_before": perplexity_before},
    )
    perplexity_after = evaluate()

    build_base = lambda: load_base_for_merge(model_settings, tokenizer)  # noqa: E731
    save_model(trained, ctx.out_dir, build_base, runtime)
    if runtime.is_main:
        tokenizer.save_pretrained(ctx.out_dir)
    return {
        "eval_perplexity_before": perplexity_before,
        "eval_perplexity_after": perplexity_after,
        "optimizer_steps": curve["steps"],
        "train_examples": len(data.train),
        "eval_examples": len(data.eval),
        "parameters": total_params,
        "tokens_per_second": curve["tokens_per_second"],
        "loss_curve": curve["losses"],
    }


@torch.no_grad()
def evaluate_perplexity(engine, loader, max_batches: int, runtime: Runtime):
    """exp of the token-weighted mean loss over the eval split (None without eval data)."""
    total_loss = total_tokens = 0.0
    with eval_mode(engine):
        for index, batch in enumerate(loader):
            if index >= max_batches:
                break
            batch = to_device(batch, runtime.device)
            tokens = (batch["labels"][:, 1:] != IGNORE_INDEX).sum().item()  # predicted positions
            total_loss += engine(**batch, use_cache=False).loss.float().item() * tokens
            total_tokens += tokens
    total_loss, total_tokens = runtime.sum([total_loss, total_tokens])
    return math.exp(total_loss / total_tokens) if total_tokens else None


def load_base_for_merge(model_settings, tokenizer):
    """The bare causal LM (no weights loaded) that LoRA merging rebuilds around saved weights."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_config(model_config(model_settings, tokenizer, "actor_model"))
