"""Evaluating the policy on held-out prompts during and after PPO.

Figures (means over prompts): `reward` of sampled answers (the objective PPO maximises),
`reward_greedy`, `kl` to the reference per sequence (nats), `response_length`, and where the
prompts come from a task with a ground-truth scorer, `task_score` (greedy) and
`task_score_sampled`. Every process evaluates its share; the sums are combined.
"""

from __future__ import annotations

from typing import Optional

import torch

from ..data import synthetic
from ..data.tokenize import PromptExample, collate_prompts
from ..engine import Runtime
from ..generation import decode_answers
from ..models import eval_mode
from .trainer import PPOTrainer

EVAL_BATCH = 64


@torch.no_grad()
def evaluate_policy(trainer: PPOTrainer, prompts: list[PromptExample], runtime: Runtime) -> dict:
    totals = dict.fromkeys(["n", "reward", "reward_greedy", "kl", "length", "task_n", "task", "task_sampled"], 0.0)
    with eval_mode(trainer.engine.actor.engine.module):
        for chunk, weight in _shard(prompts, runtime):
            _add_chunk(trainer, chunk, weight, runtime, totals)
    keys = list(totals)
    totals = dict(zip(keys, runtime.sum([totals[k] for k in keys])))
    n, task_n = totals["n"] or 1.0, totals["task_n"]
    return {
        "reward": totals["reward"] / n,
        "reward_greedy": totals["reward_greedy"] / n,
        "kl": totals["kl"] / n,
        "response_length": totals["length"] / n,
        "task_score": totals["task"] / task_n if task_n else None,
        "task_score_sampled": totals["task_sampled"] / task_n if task_n else None,
    }


def _add_chunk(trainer: PPOTrainer, chunk: list[PromptExample], weight: torch.Tensor, runtime: Runtime,
               totals: dict) -> None:
    """Add one chunk's sampled and greedy figures (weighted per prompt) to `totals`."""
    actor = trainer.engine.actor.engine.module
    batch = collate_prompts(chunk, trainer.tokenizer.pad_token_id)
    ids, mask = batch["input_ids"].to(runtime.device), batch["attention_mask"].to(runtime.device)
    for greedy in (False, True):
        rollout = trainer.generate_sequences(ids, mask, greedy=greedy)
        answer_mask = rollout.answer_mask.float()
        scores = trainer.score(rollout.sequences, rollout.attention_mask, rollout.prompt_len, answer_mask)
        task = _task_scores(chunk, decode_answers(trainer.tokenizer, rollout))
        if greedy:
            totals["reward_greedy"] += (scores * weight).sum().item()
            totals["task"] += sum(t * w for t, w in zip(task, weight.tolist()) if t is not None)
            continue
        logprobs = trainer.answer_logprobs(actor, rollout.sequences, rollout.attention_mask, rollout.prompt_len)
        ref = trainer.answer_logprobs(trainer.engine.ref, rollout.sequences, rollout.attention_mask, rollout.prompt_len)
        totals["n"] += weight.sum().item()
        totals["reward"] += (scores * weight).sum().item()
        totals["kl"] += (((logprobs - ref) * answer_mask).sum(1) * weight).sum().item()
        totals["length"] += (answer_mask.sum(1) * weight).sum().item()
        totals["task_n"] += sum(w for t, w in zip(task, weight.tolist()) if t is not None)
        totals["task_sampled"] += sum(t * w for t, w in zip(task, weight.tolist()) if t is not None)


def _task_scores(prompts: list[PromptExample], answers: list[str]) -> list[Optional[float]]:
    """The ground-truth score of each answer, None where no scorer applies to the prompt."""
    return [synthetic.score(p.prompt, a) if synthetic.is_task_prompt(p.prompt) else None for p, a in zip(prompts, answers)]


def _shard(prompts: list[PromptExample], runtime: Runtime):
    """This process's chunks with per-prompt weights. Every process gets the same number of
    equally sized chunks (ZeRO-3 generation is collective); fillers carry weight 0."""
    per_rank = -(-len(prompts) // runtime.world_size)
    mine = prompts[runtime.rank * per_rank : (runtime.rank + 1) * per_rank]
    weights = [1.0] * len(mine) + [0.0] * (per_rank - len(mine))
    mine = mine + [prompts[0]] * (per_rank - len(mine))
    for start in range(0, per_rank, EVAL_BATCH):
        yield mine[start : start + EVAL_BATCH], torch.tensor(weights[start : start + EVAL_BATCH], device=runtime.device)
