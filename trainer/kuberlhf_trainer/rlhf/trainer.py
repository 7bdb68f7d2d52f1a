"""The PPO trainer: make experience from a batch of prompts, then learn from it.

  experience = trainer.generate_experience(prompt_batch)   # sample, score, KL-shape, GAE
  actor_loss, critic_loss = trainer.train_rlhf(experience)  # one PPO update per micro-batch

The math lives in losses.py; this module only moves tensors between the models and it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from .. import losses
from ..config import PPOSettings
from ..metrics import PhaseTimer
from ..steps.common import check_finite, optimizer_step
from ..generation import Rollout
from ..models import eval_mode, position_ids
from .engine import RLHFEngine
from .experience import Experience


@dataclass
class TrainStats:
    """One micro-batch update. The actor's figures stay None while the critic warms up alone."""

    critic_loss: float
    actor_loss: Optional[float] = None
    clip_fraction: Optional[float] = None
    approx_kl: Optional[float] = None
    entropy: Optional[float] = None
    ptx_loss: Optional[float] = None


class PPOTrainer:
    def __init__(self, engine: RLHFEngine, settings: PPOSettings):
        self.engine, self.settings = engine, settings
        self.tokenizer = engine.tokenizer
        self.kl = losses.AdaptiveKLController(settings.kl_coef, settings.adaptive_kl.target, settings.adaptive_kl.horizon)
        self.iteration = 0  # completed PPO updates: critic warm-up counts them
        self.timer = PhaseTimer()  # seconds per phase, as DeepSpeed-Chat's blog (Figure 5) breaks them down

    @property
    def kl_coef(self) -> float:
        return self.kl.coef

    # -- experience ------------------------------------------------------------------------------

    def generate_sequences(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, greedy: bool = False) -> Rollout:
        """Answers from the actor through the configured generation engine (hybrid_engine.py)."""
        with self.timer("generation"):
            return self.engine.generation.generate(prompt_ids, prompt_mask, greedy=greedy)

    @torch.no_grad()
    def generate_experience(self, prompt_batch: dict) -> Experience:
        """Sample answers for (B, P) left-padded prompts, score them and compute advantages."""
        repeat = self.settings.samples_per_prompt
        ids = prompt_batch["input_ids"].repeat_interleave(repeat, 0)
        mask = prompt_batch["attention_mask"].repeat_interleave(repeat, 0)
        rollout = self.generate_sequences(ids, mask)
        return self.whiten_advantages(self.make_experience(rollout))

    @torch.no_grad()
    def make_experience(self, rollout: Rollout) -> Experience:
        """Score one generation batch and compute its advantages (whitened later, over everything
        one update learns from: `whiten_advantages`)."""
        seq, attn, P, answer_mask = rollout.sequences, rollout.attention_mask, rollout.prompt_len, rollout.answer_mask
        answer_mask = answer_mask.float()
        actor, critic = self.engine.actor.engine.module, self.engine.critic.engine.module
        with eval_mode(actor, critic):  # the old log-probs and values: no dropout, no recomputation
            with self.timer("actor_forward"):
                logprobs = self.answer_logprobs(actor, seq, attn, P)
            with self.timer("reference_forward"):
                ref_logprobs = self.answer_logprobs(self.engine.ref, seq, attn, P)
            with self.timer("critic_forward"):
                values = critic(seq, attn)[:, P - 1 : -1].float() * answer_mask
            with self.timer("reward_forward"):
                raw_scores = self.score(seq, attn, P, answer_mask)
        scores = self.shape_scores(raw_scores)
        rewards = losses.kl_shaped_rewards(logprobs, ref_logprobs, scores, answer_mask, self.kl_coef)
        advantages, returns = losses.gae(rewards, values, answer_mask, self.settings.gamma, self.settings.lam)
        return Experience(seq, attn, answer_mask, P, logprobs, ref_logprobs, values, scores, raw_scores, rewards,
                          advantages, returns)

    def whiten_advantages(self, exp: Experience) -> Experience:
        """Advantages to zero mean and unit variance over the update's whole batch: every
        generation batch and every process (one scale for all of them, as OpenRLHF does)."""
        if self.settings.whiten_advantages:
            exp.advantages = losses.whiten(exp.advantages, exp.answer_mask,
                                           sum_over_processes=self.engine.runtime.sum_tensor)
        return exp

    def score(self, seq: torch.Tensor, attn: torch.Tensor, prompt_len: int, answer_mask: torch.Tensor) -> torch.Tensor:
        """The reward model's score at each answer's EOS, read as step 2 reads it (B,). An answer
        cut off at max_answer_seq_len has no EOS: it gets one appended for scoring, as step 2's
        sequences always end with one (a score read at any other token was never trained)."""
        seq, attn, eos_at = with_final_eos(seq, attn, prompt_len, answer_mask, self.tokenizer.eos_token_id)
        values = self.engine.reward(seq, attn).float()
        return values.gather(1, eos_at.unsqueeze(1)).squeeze(1)

    def shape_scores(self, raw: torch.Tensor) -> torch.Tensor:
        """Clip to +-clip_reward_value, then (optionally) centre within each prompt's group of answers."""
        scores = raw.clamp(-self.settings.clip_reward_value, self.settings.clip_reward_value)
        if self.settings.center_rewards_per_prompt:
            groups = scores.view(-1, self.settings.samples_per_prompt)
            scores = (groups - groups.mean(1, keepdim=True)).view(-1)
        return scores

    @staticmethod
    def answer_logprobs(model, seq: torch.Tensor, attn: torch.Tensor, prompt_len: int, with_logits: bool = False):
        """log pi(answer token t) for each answer position: (B, A); the logits too if asked."""
        logits = model(input_ids=seq, attention_mask=attn, position_ids=position_ids(attn), use_cache=False).logits
        logits = logits[:, prompt_len - 1 : -1]  # the logits that predict each answer token
        logprobs = losses.token_logprobs(logits, seq[:, prompt_len:])
        return (logprobs, logits) if with_logits else logprobs

    # -- learning --------------------------------------------------------------------------------

    def train_rlhf(self, exp: Experience, ptx_batch: Optional[dict] = None) -> TrainStats:
        """One PPO update of actor and critic on a micro-batch of experience."""
        with self.timer("critic_train"):
            stats = TrainStats(critic_loss=self._train_critic(exp))
        if self.iteration >= self.settings.critic_warmup_iterations:
            with self.timer("actor_train"):
                self._train_actor(exp, ptx_batch, stats)
        return stats

    def _train_actor(self, exp: Experience, ptx_batch: Optional[dict], stats: TrainStats) -> None:
        actor = self.engine.actor.engine
        logprobs, logits = self.answer_logprobs(actor, exp.sequences, exp.attention_mask, exp.prompt_len, with_logits=True)
        policy = losses.clipped_policy_loss(logprobs, exp.logprobs, exp.advantages, exp.answer_mask, self.settings.cliprange)
        # Without an entropy bonus the entropy is only reported: no graph through the full vocabulary.
        with torch.set_grad_enabled(self.settings.entropy_coef > 0):
            entropy = losses.masked_mean(losses.entropy_from_logits(logits), exp.answer_mask)
        ptx = actor(**ptx_batch, use_cache=False).loss if ptx_batch is not None else torch.zeros((), device=logits.device)
        loss = losses.actor_objective(policy.loss, entropy, ptx, self.settings.entropy_coef, self.settings.ptx.coef)
        check_finite(loss, "the PPO actor loss", self.iteration + 1)
        if optimizer_step(actor, loss) and self.engine.ema is not None:
            self.engine.ema.update()  # after each optimizer step, never between micro-batches
        stats.actor_loss, stats.entropy = policy.loss.item(), entropy.item()
        stats.clip_fraction, stats.approx_kl = policy.clip_fraction.item(), policy.approx_kl.item()
        stats.ptx_loss = ptx.item() if ptx_batch is not None else None

    def _train_critic(self, exp: Experience) -> float:
        critic = self.engine.critic.engine
        values = critic(exp.sequences, exp.attention_mask)[:, exp.prompt_len - 1 : -1].float()
        loss = losses.clipped_value_loss(values, exp.values, exp.returns, exp.answer_mask, self.settings.cliprange_value)
        check_finite(loss, "the PPO critic loss", self.iteration + 1)
        optimizer_step(critic, loss)
        return loss.item()

    def end_iteration(self, observed_kl: float, num_sequences: int) -> None:
        """After each PPO update: count it and let the adaptive KL controller move."""
        self.iteration += 1
        if self.settings.adaptive_kl.enabled:
            self.kl.update(observed_kl, num_sequences)


def with_final_eos(seq: torch.Tensor, attn: torch.Tensor, prompt_len: int, answer_mask: torch.Tensor, eos_id: int):
    """(sequences, attention mask, index of each row's EOS): one column wider, an EOS written
    after every answer that has none (the whole answer width was generated without one)."""
    lengths = answer_mask.sum(1).long()
    last = prompt_len + lengths - 1
    ended = (lengths > 0) & (seq.gather(1, last.clamp(min=0).unsqueeze(1)).squeeze(1) == eos_id)
    seq = torch.nn.functional.pad(seq, (0, 1), value=eos_id)
    attn = torch.nn.functional.pad(attn, (0, 1), value=0)
    rows = torch.arange(len(seq), device=seq.device)
    eos_at = torch.where(ended, last, last + 1)
    seq[rows, eos_at] = eos_id
    attn[rows, eos_at] = 1
    return seq, attn, eos_at


# DeepSpeed-Chat's names, for code written against its blog API.
DeepSpeedPPOTrainer = PPOTrainer
