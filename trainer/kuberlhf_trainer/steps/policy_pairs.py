"""Preference pairs from the SFT model's own samples, labelled by a ground-truth scorer.

InstructGPT's labellers ranked the SFT model's outputs, so the reward model learned exactly the
mistakes the policy makes. On the built-in sorting task the scorer plays the labeller: for each
reward-step prompt we sample `reward.policy_samples` answers from the SFT model and pair every
right answer with every wrong one (at most `policy_samples` pairs per prompt). The held-out
prompts' pairs measure `sft_sample_accuracy`: how often the reward model ranks the SFT model's
right answers above its wrong ones.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, field
from typing import Optional

import torch

from ..config import GenerationSettings, RunConfig
from ..data import synthetic
from ..data.prepare import load_blend
from ..data.records import Sample, format_answer
from ..data.tokenize import PairExample, encode_pair, pad_left
from ..engine import Runtime
from ..generation import decode_answers, generate
from ..lora_checkpoints import is_checkpoint, resolve_checkpoint
from .common import StepInputError

log = logging.getLogger(__name__)
SAMPLE_BATCH = 256  # prompts per generate call: the SFT model runs unsharded, without gradients


@dataclass
class PolicyPairs:
    train: list[PairExample] = field(default_factory=list)
    eval: list[PairExample] = field(default_factory=list)
    sample_score: Optional[float] = None  # the SFT model's mean ground-truth score on these samples


def labelled_policy_pairs(config: RunConfig, runtime: Runtime, tokenizer) -> PolicyPairs:
    """Pairs for the reward step's train and eval prompts (none when disabled or no scorer applies)."""
    count = config.reward.policy_samples
    if count == 0:
        return PolicyPairs()
    split = load_blend(config)[0]["reward"]
    prompts = {name: _task_prompts(samples) for name, samples in (("train", split.train), ("eval", split.eval))}
    if not prompts["train"] and not prompts["eval"]:
        log.warning("reward.policy_samples is set but no dataset has a ground-truth scorer; skipped")
        return PolicyPairs()
    sft_dir = config.step_dir("sft")
    if not is_checkpoint(sft_dir):
        raise StepInputError(f"reward.policy_samples samples the SFT model, but {sft_dir} has none: run step sft first")
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(resolve_checkpoint(str(sft_dir))).to(runtime.device)
    torch.manual_seed(config.seed + runtime.rank)  # the same samples again when a resumed step redoes this
    sampling = GenerationSettings(temperature=config.reward.policy_sample_temperature, top_k=0, top_p=1.0)
    result, scores = PolicyPairs(), []
    for name, names in prompts.items():
        mine = names[runtime.rank :: runtime.world_size]  # each process samples its share
        answers = _sample(model, tokenizer, mine, count, sampling, config.ppo.max_answer_seq_len, runtime)
        labelled = [(p, a, synthetic.score(p, a)) for p, group in zip(mine, answers) for a in group]
        scores += [s for _, _, s in labelled]
        pairs = [encode_pair(tokenizer, s, config.reward.max_seq_len) for s in _pairs(labelled, count)]
        setattr(result, name, _gather(pairs, runtime))
    total = runtime.sum([sum(scores), len(scores)])
    result.sample_score = total[0] / total[1] if total[1] else None
    del model
    return result


def _task_prompts(samples: list[Sample]) -> list[str]:
    return sorted({s.prompt for s in samples if synthetic.is_task_prompt(s.prompt)})


def _sample(model, tokenizer, prompts: list[str], count: int, sampling, max_new_tokens: int, runtime: Runtime):
    """`count` answers for each prompt: a list of lists of texts."""
    repeated = [p for p in prompts for _ in range(count)]
    texts = []
    for start in range(0, len(repeated), SAMPLE_BATCH):
        chunk = repeated[start : start + SAMPLE_BATCH]
        ids, mask = pad_left([tokenizer(p)["input_ids"] for p in chunk], tokenizer.pad_token_id)
        rollout = generate(model, ids.to(runtime.device), mask.to(runtime.device), max_new_tokens, sampling,
                           tokenizer.eos_token_id, tokenizer.pad_token_id)
        texts += decode_answers(tokenizer, rollout)
    return [texts[i * count : (i + 1) * count] for i in range(len(prompts))]


def _pairs(labelled: list[tuple[str, str, float]], per_prompt: int) -> list[Sample]:
    """(right, wrong) pairs per prompt, distinct answers, at most `per_prompt` of them."""
    samples = []
    for prompt, group in itertools.groupby(labelled, key=lambda x: x[0]):
        group = list(group)
        right = sorted({a for _, a, s in group if s == 1.0})
        wrong = sorted({a for _, a, s in group if s < 1.0})
        for good, bad in itertools.islice(itertools.product(right, wrong), per_prompt):
            samples.append(Sample(prompt, format_answer(good), format_answer(bad)))
    return samples


def _gather(items: list, runtime: Runtime) -> list:
    """Every process's items, in rank order, on every process."""
    if runtime.world_size == 1:
        return items
    gathered: list = [None] * runtime.world_size
    torch.distributed.all_gather_object(gathered, items)
    return [item for part in gathered for item in part]
