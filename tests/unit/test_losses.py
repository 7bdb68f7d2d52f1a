"""The RLHF math against values computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from kuberlhf_trainer import losses

approx = lambda value: pytest.approx(value, abs=1e-4)  # noqa: E731
T = torch.tensor


def test_pairwise_ranking_loss():
    # -log sigmoid(1) = 0.31326, -log sigmoid(-1) = 1.31326
    assert losses.pairwise_ranking_loss(T([1.0, 0.0]), T([0.0, 1.0])).item() == approx(0.81326)


def test_tokenwise_ranking_loss_averages_over_the_divergent_span():
    chosen, rejected, span = T([[1.0, 2.0, 3.0]]), T([[0.0, 2.0, 4.0]]), T([[0.0, 1.0, 1.0]])
    # positions 1 and 2: -log sigmoid(0) = 0.69315, -log sigmoid(-1) = 1.31326
    assert losses.tokenwise_ranking_loss(chosen, rejected, span).item() == approx((0.69315 + 1.31326) / 2)


def test_kl_shaped_rewards_put_the_score_on_the_last_answer_token():
    rewards = losses.kl_shaped_rewards(
        logprobs=T([[-1.0, -2.0, -3.0]]), ref_logprobs=T([[-1.5, -2.0, -2.0]]), scores=T([2.0]),
        mask=T([[1.0, 1.0, 0.0]]), kl_coef=0.1,
    )
    assert rewards.tolist() == [[approx(-0.05), approx(2.0), approx(0.0)]]


def test_gae_by_hand():
    advantages, returns = losses.gae(T([[0.0, 1.0]]), T([[0.5, 0.2]]), T([[1.0, 1.0]]), gamma=1.0, lam=0.5)
    # t=1: delta = 1 - 0.2 = 0.8;  t=0: delta = 0 + 0.2 - 0.5 = -0.3, A0 = -0.3 + 0.5 * 0.8 = 0.1
    assert advantages.tolist() == [[approx(0.1), approx(0.8)]]
    assert returns.tolist() == [[approx(0.6), approx(1.0)]]


def test_gae_ends_the_episode_at_the_mask():
    advantages, returns = losses.gae(T([[1.0, 5.0]]), T([[0.5, 3.0]]), T([[1.0, 0.0]]), gamma=0.9, lam=0.9)
    # the padded position contributes neither reward nor bootstrap value: A0 = 1 - 0.5
    assert advantages.tolist() == [[approx(0.5), approx(0.0)]]
    assert returns.tolist() == [[approx(1.0), approx(0.0)]]


def test_whiten_uses_only_masked_entries():
    whitened = losses.whiten(T([1.0, 2.0, 3.0, 100.0]), T([1.0, 1.0, 1.0, 0.0]))
    # mean 2, variance 2/3
    assert whitened.tolist() == [approx(-1.22474), approx(0.0), approx(1.22474), approx(0.0)]


def test_clipped_policy_loss_and_its_diagnostics():
    result = losses.clipped_policy_loss(
        logprobs=T([[0.0, math.log(2.0)]]), old_logprobs=T([[0.0, 0.0]]), advantages=T([[1.0, 1.0]]),
        mask=T([[1.0, 1.0]]), cliprange=0.2,
    )
    # ratios 1 and 2; the second is clipped to 1.2: mean of -1 and -1.2
    assert result.loss.item() == approx(-1.1)
    assert result.clip_fraction.item() == approx(0.5)
    assert result.approx_kl.item() == approx((1 - math.log(2.0)) / 2)


def test_clipped_policy_loss_with_a_negative_advantage_takes_the_pessimistic_side():
    result = losses.clipped_policy_loss(T([[math.log(0.5)]]), T([[0.0]]), T([[-1.0]]), T([[1.0]]), cliprange=0.2)
    assert result.loss.item() == approx(0.8)  # max(0.5, 0.8)


def test_clipped_value_loss():
    loss = losses.clipped_value_loss(T([[1.0]]), T([[0.0]]), T([[2.0]]), T([[1.0]]), cliprange_value=0.2)
    assert loss.item() == approx(0.5 * (0.2 - 2.0) ** 2)  # the clipped error (3.24) is the larger


def test_entropy_of_a_uniform_distribution():
    assert losses.entropy_from_logits(torch.zeros(1, 4)).item() == approx(math.log(4))


def test_sequence_kl_sums_over_the_answer():
    kl = losses.sequence_kl(T([[-1.0, -1.0, -9.0]]), T([[-2.0, -1.5, 0.0]]), T([[1.0, 1.0, 0.0]]))
    assert kl.tolist() == [approx(1.5)]


def test_actor_objective_mixes_the_pretraining_loss():
    loss = losses.actor_objective(T(0.5), entropy=T(2.0), ptx_loss=T(3.0), entropy_coef=0.01, ptx_coef=27.8)
    assert loss.item() == approx(0.5 - 0.02 + 83.4)


def test_adaptive_kl_controller_moves_at_most_twenty_percent_of_the_horizon_share():
    controller = losses.AdaptiveKLController(0.1, target=6.0, horizon=10000)
    assert controller.update(observed_kl=12.0, num_sequences=100) == approx(0.1 * (1 + 0.2 * 100 / 10000))
    assert controller.update(observed_kl=5.4, num_sequences=100) < 0.1 * (1 + 0.2 * 100 / 10000)


def test_ema_update():
    ema, param = [torch.zeros(2)], [torch.ones(2)]
    losses.ema_update(ema, param, beta=0.9)
    assert ema[0].tolist() == [approx(0.1), approx(0.1)]
