"""Experience: one batch of rollouts with everything PPO needs, as a typed record.

B sequences; P prompt positions (left-padded); A answer positions (right-padded).
Answer token t sits at sequence index P + t and is predicted by the logits at P + t - 1.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch


@dataclass
class Experience:
    # trajectory
    sequences: torch.Tensor  # (B, P+A) prompt then answer token ids
    attention_mask: torch.Tensor  # (B, P+A)
    answer_mask: torch.Tensor  # (B, A) 1 on answer tokens through EOS
    prompt_len: int  # P
    # policy
    logprobs: torch.Tensor  # (B, A) log pi_old(a_t | s_t)
    ref_logprobs: torch.Tensor  # (B, A) log pi_ref(a_t | s_t)
    # value
    values: torch.Tensor  # (B, A) V_old(s_t)
    # outcome
    scores: torch.Tensor  # (B,) reward-model score (clipped, centred if configured)
    raw_scores: torch.Tensor  # (B,) reward-model score as the model gave it
    rewards: torch.Tensor  # (B, A) KL-shaped per-token rewards
    advantages: torch.Tensor  # (B, A) A_hat (whitened if configured)
    returns: torch.Tensor  # (B, A) advantage + V_old: the critic's target

    def __len__(self) -> int:
        return self.sequences.shape[0]

    def split(self, size: int) -> list["Experience"]:
        """Micro-batches of `size` sequences."""
        parts = []
        for start in range(0, len(self), size):
            chunk = {f.name: getattr(self, f.name) for f in fields(self)}
            for name, value in chunk.items():
                if isinstance(value, torch.Tensor):
                    chunk[name] = value[start : start + size]
            parts.append(Experience(**chunk))
        return parts

    @staticmethod
    def concat(parts: list["Experience"]) -> "Experience":
        """Join generation batches (padded to the widest prompt and answer)."""
        if len(parts) == 1:
            return parts[0]
        prompt_len = max(p.prompt_len for p in parts)
        answer_len = max(p.answer_mask.shape[1] for p in parts)
        padded = [_pad_to(p, prompt_len, answer_len) for p in parts]
        joined = {}
        for f in fields(Experience):
            values = [getattr(p, f.name) for p in padded]
            joined[f.name] = torch.cat(values) if isinstance(values[0], torch.Tensor) else values[0]
        return Experience(**joined)


def _pad_to(exp: Experience, prompt_len: int, answer_len: int) -> Experience:
    """Left-pad the prompt part and right-pad the answer part with zeros (masked out)."""
    left, right = prompt_len - exp.prompt_len, answer_len - exp.answer_mask.shape[1]
    if left == 0 and right == 0:
        return exp
    values = {f.name: getattr(exp, f.name) for f in fields(exp)}
    for name in ("sequences", "attention_mask"):
        values[name] = torch.nn.functional.pad(values[name], (left, right))
    for name in ("answer_mask", "logprobs", "ref_logprobs", "values", "rewards", "advantages", "returns"):
        values[name] = torch.nn.functional.pad(values[name], (0, right))
    values["prompt_len"] = prompt_len
    return Experience(**values)
