"""The RLHF math as small pure functions of tensors, each with its source.

Shapes: B sequences; A answer (action) positions. `mask` (B, A) is 1 on real answer tokens
(including the final EOS) and 0 on padding. All functions are tested against hand-computed
values in tests/unit/test_losses.py.

References:
  InstructGPT   Ouyang et al. 2022, arXiv 2203.02155 (eq. 1: reward loss, eq. 2: PPO-ptx)
  Ziegler       Ziegler et al. 2019, arXiv 1909.08593 (KL-shaped reward, adaptive KL)
  PPO           Schulman et al. 2017, arXiv 1707.06347 (eq. 7: clipped surrogate)
  GAE           Schulman et al. 2015, arXiv 1506.02438 (eq. 16)
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F

EPS = 1e-8


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (values * mask).sum() / mask.sum().clamp(min=1)


def whiten(values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True,
           sum_over_processes: Callable[[torch.Tensor], torch.Tensor] = lambda t: t) -> torch.Tensor:
    """Normalise to zero mean and unit variance over the masked entries. With several
    data-parallel processes, `sum_over_processes` (an all-reduce) makes the statistics those of
    the global batch, as OpenRLHF does: each process's advantages then share one scale."""
    total, count = sum_over_processes(torch.stack([(values * mask).sum(), mask.sum()])).unbind()
    mean = total / count.clamp(min=1)
    var = sum_over_processes(((values - mean) ** 2 * mask).sum()) / count.clamp(min=1)
    whitened = (values - mean) * torch.rsqrt(var + EPS)
    return (whitened if shift_mean else whitened + mean) * mask


# -- step 2: reward model -------------------------------------------------------------------------


def pairwise_ranking_loss(chosen_scores: torch.Tensor, rejected_scores: torch.Tensor) -> torch.Tensor:
    """InstructGPT eq. 1: -log sigmoid(r(x, y_w) - r(x, y_l)), mean over pairs (B,)."""
    return -F.logsigmoid(chosen_scores - rejected_scores).mean()


def tokenwise_ranking_loss(chosen_values: torch.Tensor, rejected_values: torch.Tensor, span: torch.Tensor) -> torch.Tensor:
    """DeepSpeed-Chat's variant: the ranking loss at every position of the span where the two
    answers differ (B, T), averaged per pair, then over pairs."""
    per_token = -F.logsigmoid(chosen_values - rejected_values) * span
    return (per_token.sum(1) / span.sum(1).clamp(min=1)).mean()


# -- step 3: PPO ------------------------------------------------------------------------------------


def kl_shaped_rewards(
    logprobs: torch.Tensor, ref_logprobs: torch.Tensor, scores: torch.Tensor, mask: torch.Tensor, kl_coef: float
) -> torch.Tensor:
    """Ziegler eq. 2 per token: r_t = -kl_coef * (log pi - log pi_ref), plus the (clipped) reward
    model score on the last answer token. (B, A)."""
    rewards = -kl_coef * (logprobs - ref_logprobs) * mask
    last = (mask.sum(1).long() - 1).clamp(min=0)  # index of the EOS (or last generated) token
    rewards[torch.arange(len(scores)), last] += scores
    return rewards


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float):
    """Generalised advantage estimation (GAE eq. 16), backwards over answer positions.
    Returns (advantages, returns), both (B, A); zero outside the mask."""
    advantages = torch.zeros_like(rewards)
    next_advantage = torch.zeros_like(rewards[:, 0])  # (B,)
    next_value = torch.zeros_like(rewards[:, 0])  # V after the last token: the episode ends
    for t in reversed(range(rewards.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]  # TD error
        next_advantage = (delta + gamma * lam * next_advantage) * mask[:, t]
        next_value = values[:, t] * mask[:, t]
        advantages[:, t] = next_advantage
    return advantages, (advantages + values) * mask


class PolicyLoss(NamedTuple):
    loss: torch.Tensor
    clip_fraction: torch.Tensor  # share of tokens where the clip was active
    approx_kl: torch.Tensor  # E[(r - 1) - log r], Schulman's low-variance estimator of KL(old || new)


def clipped_policy_loss(
    logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, cliprange: float
) -> PolicyLoss:
    """PPO eq. 7: max(-A r, -A clip(r, 1-eps, 1+eps)), masked mean over answer tokens."""
    log_ratio = (logprobs - old_logprobs) * mask
    ratio = log_ratio.exp()
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - cliprange, 1.0 + cliprange)
    loss = masked_mean(torch.max(unclipped, clipped), mask)
    with torch.no_grad():
        clip_fraction = masked_mean((clipped > unclipped).float(), mask)
        approx_kl = masked_mean((ratio - 1) - log_ratio, mask)
    return PolicyLoss(loss, clip_fraction, approx_kl)


def clipped_value_loss(
    values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor, cliprange_value: float
) -> torch.Tensor:
    """0.5 * max((V - R)^2, (V_clip - R)^2), V_clip within +-cliprange_value of the old value."""
    clipped = old_values + (values - old_values).clamp(-cliprange_value, cliprange_value)
    return 0.5 * masked_mean(torch.max((values - returns) ** 2, (clipped - returns) ** 2), mask)


def actor_objective(
    policy_loss: torch.Tensor, entropy: torch.Tensor, ptx_loss: torch.Tensor, entropy_coef: float, ptx_coef: float
) -> torch.Tensor:
    """InstructGPT eq. 2 as a loss: the clipped policy loss, minus an entropy bonus, plus
    gamma * the pretraining LM loss (PPO-ptx). The critic's value loss is separate: the critic
    is its own model with its own optimizer."""
    return policy_loss - entropy_coef * entropy + ptx_coef * ptx_loss


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the next-token distribution at each position, (..., V) -> (...)."""
    log_probs = F.log_softmax(logits.float(), dim=-1)
    return -(log_probs.exp() * log_probs).sum(-1)


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log p(token) under `logits`: (B, T, V), (B, T) -> (B, T)."""
    return torch.gather(F.log_softmax(logits.float(), dim=-1), 2, tokens.unsqueeze(-1)).squeeze(-1)


def sequence_kl(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """KL to the reference per sequence in nats: sum over answer tokens of log pi - log pi_ref. (B,)"""
    return ((logprobs - ref_logprobs) * mask).sum(1)


class AdaptiveKLController:
    """Ziegler sec. 2.2: move the KL coefficient so the observed KL tracks a target."""

    def __init__(self, init_coef: float, target: float, horizon: int):
        self.coef, self.target, self.horizon = init_coef, target, horizon

    def update(self, observed_kl: float, num_sequences: int) -> float:
        error = max(-0.2, min(0.2, observed_kl / self.target - 1.0))  # proportional, clipped at 20%
        self.coef *= 1.0 + error * num_sequences / self.horizon
        return self.coef


@torch.no_grad()
def ema_update(ema_params, params, beta: float) -> None:
    """ema <- beta * ema + (1 - beta) * param, in place."""
    for ema, param in zip(ema_params, params):
        ema.lerp_(param.to(ema.dtype), 1.0 - beta)
