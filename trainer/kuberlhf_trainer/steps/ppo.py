"""Step 3: RLHF with PPO (InstructGPT sec. 3.5; DeepSpeed-Chat step 3).

Each iteration: sample answers for `generation_batches` prompt batches, score them (reward
model, KL to the SFT model, critic values, GAE), then run `ppo_epochs` passes of clipped PPO
updates over the experience in micro-batches. Held-out prompts are evaluated before, at
`eval_interval` and after: reward, KL, answer length and, on tasks with a ground-truth scorer,
the true task score (greedy and sampled) of the SFT, PPO and EMA actors.

Output: the PPO actor in Hugging Face layout at <output_dir>/ppo/, the critic in ppo/critic/
and the EMA actor in ppo/actor_ema/.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch

from .. import losses
from ..config import RunConfig
from ..data.prepare import step_examples, tokenizer_fingerprint
from ..data.pretraining import collate_blocks, load_texts, text_blocks
from ..data.tokenize import collate_prompts
from ..engine import Runtime
from ..lora_checkpoints import is_checkpoint
from ..metrics import TrainingMetrics, forward_flops, peak_memory_mb, training_flops
from ..models import count_parameters, load_tokenizer
from ..rlhf.engine import RLHFEngine
from ..rlhf.evaluation import evaluate_policy
from ..rlhf.experience import Experience
from ..rlhf.trainer import PPOTrainer
from .common import Progress, StepContext, StepInputError, make_loader, save_model, to_device

log = logging.getLogger(__name__)


def run(ctx: StepContext) -> dict:
    config, runtime, metrics, out_dir = ctx.config, ctx.runtime, ctx.metrics, ctx.out_dir
    ppo = config.ppo
    actor_dir, reward_dir = _require_checkpoint(config.ppo_actor_start, "sft"), _require_checkpoint(config.ppo_reward_start, "reward")
    tokenizer = load_tokenizer(actor_dir, "ppo.actor_checkpoint")
    if tokenizer_fingerprint(load_tokenizer(reward_dir, "ppo.reward_checkpoint")) != tokenizer_fingerprint(tokenizer):
        raise StepInputError("ppo: the actor and the reward model use different tokenizers; step 3 needs one vocabulary")
    data = step_examples(config, "ppo", tokenizer, runtime.barrier, is_builder=runtime.local_rank == 0)
    if not data.train:
        raise StepInputError("ppo: no prompts (check data.datasets, data.data_split and ppo.max_prompt_seq_len)")

    loader = make_loader(data.train, ppo.per_device_generation_batch_size, collate_prompts, tokenizer.pad_token_id,
                         runtime, True, config.seed)
    iterations = _iterations(len(loader), ppo)
    optimizer_steps = iterations * ppo.micro_batches_per_iteration // ppo.gradient_accumulation_steps
    torch.manual_seed(config.seed)
    engine = RLHFEngine(actor_dir, reward_dir, tokenizer, optimizer_steps, config, runtime,
                        load_universal=ctx.load_universal)
    trainer = PPOTrainer(engine, ppo)
    eval_prompts = _eval_prompts(data, ppo.eval_prompts, runtime)
    evaluate = lambda: evaluate_policy(trainer, eval_prompts, runtime)  # noqa: E731

    ptx = _ptx_batches(config, tokenizer, runtime)
    checkpointer = ctx.checkpointer({"actor": engine.actor.engine, "critic": engine.critic.engine})
    loop = LoopState(prompts=BatchStream(loader), ptx=ptx)
    resumed = checkpointer.load_latest()
    if resumed:
        loop.restore(resumed, trainer)
    before = resumed["before"] if resumed else evaluate()  # measured once, before any training
    train(trainer, loop, iterations, runtime, evaluate, metrics, checkpointer, {"before": before})
    history = loop.history
    throughput = _throughput(history, runtime)
    # The first iteration pays for compiling the decoding step and warming up the device.
    warm = _throughput(history[1:], runtime) if len(history) > 1 else None
    after = evaluate()
    after_ema = None
    if engine.ema is not None:
        with engine.ema.applied():
            after_ema = evaluate()

    _save(engine, out_dir, tokenizer, runtime)
    summary = _summary(before, after, after_ema, history, len(data.train), data.skipped, len(eval_prompts))
    summary["eval_prompts_held_out"] = bool(data.eval)
    return summary | {"throughput": throughput, "throughput_after_first_iteration": warm}


def _eval_prompts(data, count: int, runtime: Runtime) -> list:
    """Held-out prompts to evaluate on; the training prompts, said loudly, when the split left none."""
    if data.eval:
        return data.eval[:count]
    if runtime.is_main:
        log.warning("ppo: the data split left no held-out prompts: evaluating on %d TRAINING prompts, so the reward, "
                    "KL and task scores in the summary are not held-out figures (summary: eval_prompts_held_out "
                    "false). More data, or a larger ppo share of data.data_split, gives held-out prompts.",
                    min(count, len(data.train)))
    return data.train[:count]


def _require_checkpoint(path: str, step: str) -> str:
    if not is_checkpoint(path):
        raise StepInputError(f"ppo: no checkpoint at {path} (run step {step} first, or set ppo.actor_checkpoint / ppo.reward_checkpoint)")
    return path


def _iterations(prompt_batches: int, ppo) -> int:
    total = ppo.num_train_epochs * max(prompt_batches // ppo.generation_batches, 1)
    return min(total, ppo.max_steps) if ppo.max_steps else total


@dataclass
class LoopState:
    """Everything the PPO loop carries from one iteration to the next (and through a checkpoint)."""

    prompts: "BatchStream"
    ptx: Optional["BatchStream"] = None
    history: list = field(default_factory=list)  # one record of figures per iteration (with its seconds and work)

    def checkpoint(self, trainer: PPOTrainer, extra: dict) -> dict:
        """The loop's state (rank 0 writes it; the EMA's shadow is gathered whole, so that it can
        be resumed on another number of processes)."""
        ema = trainer.engine.ema
        return {
            "history": self.history,
            "prompts": self.prompts.position(), "ptx": self.ptx.position() if self.ptx else None,
            "kl_coef": trainer.kl.coef, "trainer_iteration": trainer.iteration,
            "ema": ema.state() if ema is not None else None, **extra,
        }

    def restore(self, state: dict, trainer: PPOTrainer) -> None:
        self.history = state["history"]
        self.prompts.seek(*state["prompts"])
        if self.ptx is not None and state["ptx"] is not None:
            self.ptx.seek(*state["ptx"])
        trainer.kl.coef, trainer.iteration = state["kl_coef"], state["trainer_iteration"]
        if trainer.engine.ema is not None and state["ema"] is not None:
            trainer.engine.ema.load(state["ema"])


class BatchStream:
    """Batches epoch after epoch, knowing its position: (epoch, examples of the epoch consumed)."""

    def __init__(self, loader):
        self.loader = loader
        self.epoch, self._batches = 0, None
        loader.sampler.resume_at(0, 0)

    def position(self) -> tuple[int, int]:
        return self.epoch, self.loader.sampler.consumed()

    def seek(self, epoch: int, consumed: int) -> None:
        self.epoch, self._batches = epoch, None
        self.loader.sampler.resume_at(epoch, consumed)

    def __next__(self):
        while True:
            if self._batches is None:
                self._batches = iter(self.loader)
            batch = next(self._batches, None)
            if batch is not None:
                return batch
            self.seek(self.epoch + 1, 0)

    def __iter__(self):
        return self


def train(trainer: PPOTrainer, loop: LoopState, iterations: int, runtime: Runtime, evaluate, metrics: TrainingMetrics,
          checkpointer=None, extra_state: Optional[dict] = None) -> None:
    """The PPO loop, from wherever `loop` stands to `iterations`. After each iteration that ends
    on an optimizer step the checkpointer may save (at its interval, or on SIGTERM, then raising
    Preempted)."""
    settings = trainer.settings
    progress = Progress(iterations, "ppo", runtime, initial=len(loop.history))
    buffer = []
    sizes = (count_parameters(trainer.engine.actor.engine.module)[0], count_parameters(trainer.engine.critic.engine.module)[0])
    while len(loop.history) < iterations:
        if not buffer:
            clock = dict(trainer.timer.seconds)
        batch = to_device(next(loop.prompts), runtime.device)
        rollout = trainer.generate_sequences(*_repeat(batch, settings.samples_per_prompt))
        buffer.append(trainer.make_experience(rollout))
        if len(buffer) < settings.generation_batches:
            continue
        experience, buffer = trainer.whiten_advantages(Experience.concat(buffer)), []
        stats = _update(trainer, experience, loop.ptx, runtime)
        record = _iteration_record(experience, stats, trainer, runtime)
        trainer.end_iteration(record["kl"], record["sequences"])
        loop.history.append(record)
        done = len(loop.history)
        record["seconds"] = {phase: seconds - clock.get(phase, 0.0) for phase, seconds in trainer.timer.seconds.items()}
        record["work"] = _work(experience, sizes, trainer, runtime)
        _report(metrics, record, runtime, (done, iterations))
        progress.update(int(experience.attention_mask.sum()) * runtime.world_size,
                        reward=record["reward_mean"], kl=record["kl"])
        if settings.eval_interval and done % settings.eval_interval == 0:
            figures = evaluate()
            record["eval"] = figures
            progress.write(f"ppo iteration {done}: eval reward {figures['reward']:.4g}")
        if checkpointer is not None and done < iterations and _between_optimizer_steps(done, settings):
            checkpointer.after_step(done, lambda: loop.checkpoint(trainer, extra_state or {}))
    progress.close()


def _between_optimizer_steps(iterations_done: int, settings) -> bool:
    """Whether the last iteration ended on an optimizer step. Only there may a checkpoint be saved
    (also the one a SIGTERM asks for): an accumulation spanning iterations would lose its
    gradients, which DeepSpeed's checkpoint does not hold."""
    return iterations_done * settings.micro_batches_per_iteration % settings.gradient_accumulation_steps == 0


def _work(exp: Experience, sizes: tuple[int, int], trainer: PPOTrainer, runtime: Runtime) -> dict:
    """Tokens (over all processes) and estimated FLOPs of one iteration, per phase."""
    actor, critic = sizes
    world = runtime.world_size
    generated = exp.answer_mask.sum().item() * world
    sequence = exp.attention_mask.sum().item() * world
    trained = sequence * trainer.settings.ppo_epochs
    recompute = trainer.engine.actor.settings.gradient_checkpointing
    return {
        "generated_tokens": generated,
        "trained_tokens": trained,
        "generation_flops": forward_flops(actor, generated),
        "experience_flops": forward_flops(2 * actor + 2 * critic, sequence),  # actor, reference, critic, reward
        "training_flops": training_flops(actor, trained, recompute) + training_flops(critic, trained, recompute),
    }


def _report(metrics: TrainingMetrics, record: dict, runtime: Runtime, progress: tuple[int, int]) -> None:
    """Publish one iteration: progress, PPO health, throughput per phase with FLOP estimates."""
    spent, work = record["seconds"], record["work"]
    metrics.progress(*progress)
    metrics.throughput("generation", work["generated_tokens"], spent.get("generation", 0.0), work["generation_flops"])
    metrics.throughput("training", work["trained_tokens"], _training_seconds(spent), work["training_flops"])
    metrics.set("effective_tflops_per_device", _effective_tflops([record], runtime))
    for name in ("reward_mean", "reward_std", "kl", "entropy", "clip_fraction", "response_length"):
        metrics.set(f"ppo_{name}", record[name])
    metrics.set("ppo_value_loss", record["critic_loss"])
    metrics.set("train_loss", record["actor_loss"])


def _training_seconds(seconds: dict) -> float:
    return seconds.get("actor_train", 0.0) + seconds.get("critic_train", 0.0)


def _total(records: list, key: str) -> dict:
    """Per-name sums of the records' `key` dictionaries (their seconds, or their work)."""
    totals = defaultdict(float)
    for record in records:
        for name, value in record[key].items():
            totals[name] += value
    return totals


def _effective_tflops(records: list, runtime: Runtime) -> float:
    """All FLOPs of step 3 over all of its time (the DeepSpeed-Chat blog's effective throughput)."""
    work, seconds = _total(records, "work"), _total(records, "seconds")
    flops = work["generation_flops"] + work["experience_flops"] + work["training_flops"]
    return flops / max(sum(seconds.values()), 1e-9) / runtime.world_size / 1e12


def _throughput(records: list, runtime: Runtime) -> dict:
    """Throughput over these iterations, as the step-3 benchmark reports it (evaluation excluded)."""
    work, seconds = _total(records, "work"), _total(records, "seconds")
    return {
        "generation_tokens_per_second": work["generated_tokens"] / max(seconds["generation"], 1e-9),
        "training_tokens_per_second": work["trained_tokens"] / max(_training_seconds(seconds), 1e-9),
        "effective_tflops_per_device": _effective_tflops(records, runtime),
        "seconds_per_iteration": sum(seconds.values()) / max(len(records), 1),
        "peak_memory_mb": peak_memory_mb(runtime),
    }


def _update(trainer: PPOTrainer, experience: Experience, ptx, runtime: Runtime) -> list:
    """ppo_epochs passes over the experience in shuffled micro-batches."""
    settings, stats = trainer.settings, []
    for _ in range(settings.ppo_epochs):
        order = torch.randperm(len(experience))
        for micro in _reorder(experience, order).split(settings.per_device_training_batch_size):
            ptx_batch = to_device(next(ptx), runtime.device) if ptx is not None else None
            stats.append(trainer.train_rlhf(micro, ptx_batch))
    return stats


def _ptx_batches(config: RunConfig, tokenizer, runtime: Runtime) -> Optional[BatchStream]:
    """Endless pretraining batches for PPO-ptx, or None when ppo.ptx.dataset is unset."""
    ptx = config.ppo.ptx
    if not ptx.dataset:
        return None
    block = config.ppo.max_prompt_seq_len + config.ppo.max_answer_seq_len
    blocks = text_blocks(load_texts(ptx.dataset, ptx.dataset_config), tokenizer, block)
    loader = make_loader(blocks, config.ppo.per_device_training_batch_size, collate_blocks, tokenizer.pad_token_id,
                         runtime, True, config.seed)
    return BatchStream(loader)


def _reorder(exp: Experience, order: torch.Tensor) -> Experience:
    values = {k: (v[order] if isinstance(v, torch.Tensor) else v) for k, v in vars(exp).items()}
    return Experience(**values)


def _iteration_record(exp: Experience, stats: list, trainer: PPOTrainer, runtime: Runtime) -> dict:
    """The iteration's figures over every process's experience: each process gets the same
    (the adaptive KL controller moves alike everywhere) and the published figures are global."""
    kl = losses.sequence_kl(exp.logprobs, exp.ref_logprobs, exp.answer_mask)
    scores = exp.raw_scores
    n, reward, reward_squares, kl_total, length = runtime.sum(
        [len(exp), scores.sum().item(), (scores**2).sum().item(), kl.sum().item(), exp.answer_mask.sum().item()])
    mean = reward / n
    record = {
        "sequences": int(n),
        "reward_mean": mean,
        "reward_std": math.sqrt(max(reward_squares - n * mean**2, 0.0) / (n - 1)) if n > 1 else 0.0,
        "kl": kl_total / n,
        "kl_coef": trainer.kl_coef,
        "response_length": length / n,
    }
    # Every process makes the same number of micro-batch updates, so the mean of the processes'
    # means is the mean over all of them. A figure is None on every process alike (critic warm-up, no ptx).
    names = ("actor_loss", "critic_loss", "clip_fraction", "entropy", "ptx_loss")
    local = {name: _mean([getattr(s, name) for s in stats]) for name in names}
    present = [name for name in names if local[name] is not None]
    totals = runtime.sum([local[name] for name in present]) if present else []
    return record | dict.fromkeys(names) | {name: total / runtime.world_size for name, total in zip(present, totals)}


def _mean(values: list) -> Optional[float]:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def _repeat(batch: dict, times: int) -> tuple[torch.Tensor, torch.Tensor]:
    return batch["input_ids"].repeat_interleave(times, 0), batch["attention_mask"].repeat_interleave(times, 0)


def _save(engine: RLHFEngine, out_dir: Path, tokenizer, runtime: Runtime) -> None:
    from transformers import AutoModel, AutoModelForCausalLM

    actor_base = lambda: AutoModelForCausalLM.from_config(engine.actor.engine.module.config)  # noqa: E731
    critic_base = lambda: AutoModel.from_config(engine.critic.engine.module.config)  # noqa: E731
    save_model(engine.actor, out_dir, actor_base, runtime)
    save_model(engine.critic, out_dir / "critic", critic_base, runtime)
    targets = [out_dir, out_dir / "critic"]
    if engine.ema is not None:
        with engine.ema.applied():
            save_model(engine.actor, out_dir / "actor_ema", actor_base, runtime)
        targets.append(out_dir / "actor_ema")
    if runtime.is_main:
        for target in targets:
            tokenizer.save_pretrained(target)


def _summary(before, after, after_ema, history, num_prompts, skipped, num_eval) -> dict:
    summary = {
        "reward_before": before["reward"],
        "reward_after": after["reward"],
        "kl": after["kl"],
        "response_length": after["response_length"],
        "iterations": len(history),
        "train_prompts": num_prompts,
        "skipped_prompts": skipped,
        "eval_prompts": num_eval,
        "time_breakdown_seconds": {k: round(v, 2) for k, v in _total(history, "seconds").items()},
    }
    for name, figures in (("sft", before), ("ppo", after), ("ema", after_ema)):
        if figures is not None:
            summary[f"task_score_{name}"] = figures["task_score"]
            summary[f"task_score_{name}_sampled"] = figures["task_score_sampled"]
            summary[f"reward_{name}_greedy"] = figures["reward_greedy"]
    summary["history"] = history
    return summary
