"""Blending datasets and splitting them between the three steps.

DeepSpeed-Chat splits each dataset by shuffled index, so a prompt that occurs twice (HH-RLHF
has several pairs per prompt; blended datasets overlap) can land in two steps, and with its
default `seed=None` step 3 could even reuse step 1's data. Here the unit of the split is the
*prompt*: every distinct prompt goes to exactly one step, so no example is shared between
steps, and evaluation never sees a prompt that any step trains on.

The order is a hash of (seed, prompt): deterministic, independent of dataset order, with the
step shares cut exactly.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from ..config import STEP_NAMES
from .records import Sample
from .sources import LoadedDataset


@dataclass
class StepData:
    train: list[Sample] = field(default_factory=list)
    eval: list[Sample] = field(default_factory=list)


def assign_prompts(prompts: set[str], shares: tuple[float, ...], seed: int) -> dict[str, str]:
    """Map each distinct prompt to a step name, cutting a seeded hash order at the shares."""
    order = sorted(prompts, key=lambda p: hashlib.sha256(f"{seed}\x1f{p}".encode()).digest())
    assignment, start, cumulative = {}, 0, 0.0
    for step, share in zip(STEP_NAMES, shares):
        cumulative += share
        end = round(len(order) * cumulative)
        for prompt in order[start:end]:
            assignment[prompt] = step
        start = end
    return assignment


def split_steps(
    datasets: list[LoadedDataset], sft_only: list[LoadedDataset], shares: tuple[float, float, float], seed: int
) -> dict[str, StepData]:
    """The blended train/eval samples of each step, with no prompt shared between steps."""
    train_pool = [s for d in datasets for s in d.train]
    train_steps = assign_prompts({s.prompt for s in train_pool}, shares, seed)
    # Evaluation prompts that some step trains on would leak: drop them, then split the rest.
    eval_pool = [s for d in datasets for s in d.eval if s.prompt not in train_steps]
    eval_steps = assign_prompts({s.prompt for s in eval_pool}, shares, seed)

    result = {step: StepData() for step in STEP_NAMES}
    for sample in train_pool:
        result[train_steps[sample.prompt]].train.append(sample)
    for sample in eval_pool:
        result[eval_steps[sample.prompt]].eval.append(sample)

    # SFT-only data feeds step 1 whole, except prompts that belong to another step.
    taken = train_steps | eval_steps
    for dataset in sft_only:
        result["sft"].train += [s for s in dataset.train if taken.get(s.prompt, "sft") == "sft"]
        result["sft"].eval += [s for s in dataset.eval if taken.get(s.prompt, "sft") == "sft"]

    result["reward"].train = [s for s in result["reward"].train if s.is_pair]
    result["reward"].eval = [s for s in result["reward"].eval if s.is_pair]
    trained_on = {s.prompt for data in result.values() for s in data.train}
    for data in result.values():
        data.train = _unique(data.train)
        data.eval = _unique([s for s in data.eval if s.prompt not in trained_on])
    return result


def _unique(samples: list[Sample]) -> list[Sample]:
    """Drop exact duplicates (same prompt and answers), keeping first-seen order."""
    return list(dict.fromkeys(samples))
