"""Generating answers from a causal LM: one interface for every caller (reward-model sampling,
PPO rollouts, evaluation, chat).

A `Rollout` is a batch of prompts (left-padded to P) followed by answers (right-padded to A).
The answer mask is 1 on each answer's tokens up to and including its first EOS; an answer that
hits the length limit has no EOS.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .config import GenerationSettings
from .models import eval_mode


@dataclass
class Rollout:
    sequences: torch.Tensor  # (B, P + A) prompt then answer token ids
    attention_mask: torch.Tensor  # (B, P + A) 1 on real prompt and answer tokens
    prompt_len: int  # P
    answer_mask: torch.Tensor  # (B, A) 1 on answer tokens through the first EOS

    @property
    def answers(self) -> torch.Tensor:
        return self.sequences[:, self.prompt_len :]

    @property
    def answer_lengths(self) -> torch.Tensor:
        return self.answer_mask.sum(1)


def answer_mask_from(answers: torch.Tensor, eos_id: int) -> torch.Tensor:
    """(B, A) mask: 1 through the first EOS of each row (the whole row when there is none)."""
    is_eos = answers == eos_id
    seen_before = (is_eos.cumsum(1) - is_eos.long()) > 0  # an EOS earlier in the row
    return (~seen_before).long()


@torch.no_grad()
def generate(
    model,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    max_new_tokens: int,
    sampling: GenerationSettings,
    eos_id: int,
    pad_id: int,
    synced_gpus: bool = False,
    greedy: bool = False,
    **generate_kwargs,
) -> Rollout:
    """Answers for left-padded prompts with Hugging Face `generate`.

    `synced_gpus` keeps ZeRO-3 processes in step (each forward gathers parameters collectively)
    even when one process finishes its answers first."""
    do_sample = sampling.do_sample and not greedy
    with eval_mode(model):
        output = model.generate(
            input_ids=prompt_ids,
            attention_mask=prompt_mask,
            max_new_tokens=max_new_tokens,
            do_sample=do_sample,
            temperature=sampling.temperature if do_sample else None,
            top_p=sampling.top_p if do_sample else None,
            top_k=sampling.top_k if do_sample else None,
            eos_token_id=eos_id,
            pad_token_id=pad_id,
            synced_gpus=synced_gpus,
            use_cache=True,
            **generate_kwargs,
        )
    prompt_len = prompt_ids.shape[1]
    answers = output[:, prompt_len:]
    answer_mask = answer_mask_from(answers, eos_id)
    answers = torch.where(answer_mask.bool(), answers, torch.full_like(answers, pad_id))
    sequences = torch.cat([prompt_ids, answers], dim=1)
    return Rollout(sequences, torch.cat([prompt_mask, answer_mask], dim=1), prompt_len, answer_mask)


def decode_answers(tokenizer, rollout: Rollout) -> list[str]:
    """The answer texts, without EOS and padding."""
    texts = []
    for answer, mask in zip(rollout.answers, rollout.answer_mask):
        tokens = answer[mask.bool()].tolist()
        texts.append(tokenizer.decode(tokens, skip_special_tokens=True))
    return texts
