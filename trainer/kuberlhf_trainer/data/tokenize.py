"""Turning samples into token ids for each step, and padding them into batches.

Conventions shared by all three steps (DeepSpeed-Chat mixes them; see docs/data.md):
- a sequence is  prompt tokens + answer tokens + EOS, and the reward model scores the EOS
  position; step 3 appends EOS to generated answers the same way before scoring;
- a sequence too long for `max_len` loses the *oldest* prompt tokens first, so the answer and
  its end survive; only an answer longer than `max_len` on its own is cut at the right;
- padding is explicit (attention masks come from lengths, never from `ids == pad`, because
  many tokenizers use EOS as padding).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from .records import Sample

IGNORE_INDEX = -100  # label value that the cross-entropy loss skips


@dataclass
class SFTExample:
    input_ids: list[int]
    labels: list[int]  # IGNORE_INDEX on masked prompt tokens


@dataclass
class PairExample:
    chosen_ids: list[int]
    rejected_ids: list[int]
    prompt_len: int  # the shared prompt: the two sequences agree up to here


@dataclass
class PromptExample:
    prompt_ids: list[int]
    prompt: str  # the text, kept for ground-truth scoring and for printing answers
    reference: str  # the dataset's preferred answer


def fit(prompt: list[int], answer: list[int], max_len: int) -> tuple[list[int], list[int]]:
    """Left-truncate the prompt, then right-truncate the answer, to fit `max_len` tokens."""
    overflow = len(prompt) + len(answer) - max_len
    if overflow > 0:
        prompt = prompt[min(overflow, len(prompt)) :]
    return prompt, answer[: max_len - len(prompt)]


def encode_sft(tokenizer, sample: Sample, max_len: int, mask_prompt: bool) -> SFTExample:
    prompt = tokenizer(sample.prompt, add_special_tokens=True)["input_ids"]
    answer = tokenizer(sample.chosen, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    prompt, answer = fit(prompt, answer, max_len)
    labels = [IGNORE_INDEX] * len(prompt) + answer if mask_prompt else prompt + answer
    return SFTExample(prompt + answer, labels)


def encode_pair(tokenizer, sample: Sample, max_len: int) -> PairExample:
    prompt = tokenizer(sample.prompt, add_special_tokens=True)["input_ids"]
    eos = [tokenizer.eos_token_id]
    chosen = tokenizer(sample.chosen, add_special_tokens=False)["input_ids"] + eos
    rejected = tokenizer(sample.rejected, add_special_tokens=False)["input_ids"] + eos
    # Cut the prompt once, for the longer answer, so both sequences keep the same prompt.
    prompt, _ = fit(prompt, max(chosen, rejected, key=len), max_len)
    chosen, rejected = chosen[: max_len - len(prompt)], rejected[: max_len - len(prompt)]
    return PairExample(prompt + chosen, prompt + rejected, len(prompt))


def encode_prompt(tokenizer, sample: Sample) -> PromptExample:
    ids = tokenizer(sample.prompt, add_special_tokens=True)["input_ids"]
    return PromptExample(ids, sample.prompt, sample.chosen)


# -- batching ------------------------------------------------------------------------------------


def pad_right(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, attention_mask), both (B, T_max), padded at the end."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = 1
    return ids, mask


def pad_left(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, attention_mask), both (B, T_max), padded at the start: prompts for generation."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, width - len(seq) :] = torch.tensor(seq, dtype=torch.long)
        mask[row, width - len(seq) :] = 1
    return ids, mask


def collate_sft(examples: list[SFTExample], pad_id: int) -> dict[str, torch.Tensor]:
    ids, mask = pad_right([e.input_ids for e in examples], pad_id)
    labels, _ = pad_right([e.labels for e in examples], IGNORE_INDEX)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def collate_pairs(examples: list[PairExample], pad_id: int) -> dict[str, torch.Tensor]:
    """Chosen sequences first, then rejected: (2B, T). `ends` (2B,) is each sequence's last index."""
    sequences = [e.chosen_ids for e in examples] + [e.rejected_ids for e in examples]
    ids, mask = pad_right(sequences, pad_id)
    prompt_lens = torch.tensor([e.prompt_len for e in examples] * 2, dtype=torch.long)
    return {"input_ids": ids, "attention_mask": mask, "ends": mask.sum(1) - 1, "prompt_lens": prompt_lens}


def collate_prompts(examples: list[PromptExample], pad_id: int) -> dict[str, torch.Tensor]:
    """Prompts left-padded for generation: (B, P) ids and mask."""
    ids, mask = pad_left([e.prompt_ids for e in examples], pad_id)
    return {"input_ids": ids, "attention_mask": mask}
