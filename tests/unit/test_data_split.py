"""The per-step split: every prompt in exactly one step, shares, determinism, no eval leaks."""

from __future__ import annotations

import pytest

from kuberlhf_trainer.config import STEP_NAMES
from kuberlhf_trainer.data.records import Sample, format_prompt
from kuberlhf_trainer.data.sources import LoadedDataset
from kuberlhf_trainer.data.split import StepData, split_steps

SHARES = (0.2, 0.4, 0.4)


def pair(i: int, answer: str = "good") -> Sample:
    return Sample(format_prompt(f"question {i}"), f" {answer} {i}", f" bad {i}")


def demo(i: int, answer: str = "demo") -> Sample:
    return Sample(format_prompt(f"question {i}"), f" {answer} {i}")


def dataset(name: str, train: list[Sample], evaluation: list[Sample] = ()) -> LoadedDataset:
    return LoadedDataset(name, list(train), list(evaluation), fingerprint=name)


def prompts(samples: list[Sample]) -> set[str]:
    return {s.prompt for s in samples}


def assert_disjoint(result: dict[str, StepData]) -> None:
    """No prompt is used by two steps, and no eval prompt is trained on by any step."""
    trained = {step: prompts(data.train) for step, data in result.items()}
    evaluated = {step: prompts(data.eval) for step, data in result.items()}
    for i, a in enumerate(STEP_NAMES):
        for b in STEP_NAMES[i + 1 :]:
            assert not trained[a] & trained[b], (a, b)
            assert not evaluated[a] & evaluated[b], (a, b)
            assert not (trained[a] | evaluated[a]) & (trained[b] | evaluated[b]), (a, b)
    all_trained = set().union(*trained.values())
    assert not set().union(*evaluated.values()) & all_trained


def as_sets(result: dict[str, StepData]) -> dict[str, tuple[frozenset, frozenset]]:
    return {step: (frozenset(d.train), frozenset(d.eval)) for step, d in result.items()}


def test_no_prompt_in_two_steps():
    data = [dataset("a", [pair(i) for i in range(300)], [pair(i) for i in range(300, 330)])]
    result = split_steps(data, [], SHARES, seed=1)
    assert_disjoint(result)
    assert sum(len(d.train) for d in result.values()) == 300
    assert sum(len(d.eval) for d in result.values()) == 30


def test_repeated_prompts_and_blended_datasets_stay_in_one_step():
    # HH-RLHF has several pairs per prompt, and blended datasets share prompts.
    first = [pair(i, "good") for i in range(200)] + [pair(i, "better") for i in range(0, 200, 2)]
    second = [pair(i, "other") for i in range(100, 400)]
    result = split_steps([dataset("a", first), dataset("b", second)], [], SHARES, seed=7)
    assert_disjoint(result)
    for step, data in result.items():
        for p in prompts(data.train):
            copies = [s for s in first + second if s.prompt == p]
            assert set(copies) <= set(data.train), (step, p)  # every copy follows its prompt
    assert sum(len(d.train) for d in result.values()) == len(set(first + second))


def test_shares_are_cut_exactly():
    result = split_steps([dataset("a", [pair(i) for i in range(1000)])], [], SHARES, seed=3)
    counts = [len(result[step].train) for step in STEP_NAMES]
    assert counts == pytest.approx([200, 400, 400], abs=1)


@pytest.mark.parametrize("shares,expected", [((1.0, 0.0, 0.0), (999, 0, 0)), ((0.0, 0.5, 0.5), (0, 500, 499))])
def test_zero_share_gets_nothing(shares, expected):
    result = split_steps([dataset("a", [pair(i) for i in range(999)])], [], shares, seed=3)
    assert [len(result[s].train) for s in STEP_NAMES] == pytest.approx(list(expected), abs=1)
    for step, share in zip(STEP_NAMES, shares):
        if share == 0:
            assert not result[step].train


def test_shares_count_prompts_not_pairs():
    # 100 prompts with 5 pairs each: the cut is by prompt, so each step gets whole prompts.
    samples = [pair(i, f"v{k}") for i in range(100) for k in range(5)]
    result = split_steps([dataset("a", samples)], [], SHARES, seed=3)
    assert [len(prompts(result[s].train)) for s in STEP_NAMES] == [20, 40, 40]
    assert [len(result[s].train) for s in STEP_NAMES] == [100, 200, 200]


def test_deterministic_for_a_seed_and_independent_of_dataset_order():
    a = dataset("a", [pair(i) for i in range(150)], [pair(i) for i in range(500, 520)])
    b = dataset("b", [pair(i, "other") for i in range(100, 300)])
    one = split_steps([a, b], [], SHARES, seed=11)
    assert as_sets(one) == as_sets(split_steps([a, b], [], SHARES, seed=11))
    assert as_sets(one) == as_sets(split_steps([b, a], [], SHARES, seed=11))


def test_a_different_seed_gives_a_different_split():
    data = [dataset("a", [pair(i) for i in range(200)])]
    one, two = split_steps(data, [], SHARES, seed=1), split_steps(data, [], SHARES, seed=2)
    assert prompts(one["sft"].train) != prompts(two["sft"].train)
    assert [len(one[s].train) for s in STEP_NAMES] == [len(two[s].train) for s in STEP_NAMES]


def test_eval_prompts_that_a_step_trains_on_are_dropped():
    train = [pair(i) for i in range(100)]
    leaky_eval = [pair(i, "eval") for i in range(90, 110)]  # 90..99 are train prompts
    result = split_steps([dataset("a", train, leaky_eval)], [], SHARES, seed=4)
    assert_disjoint(result)
    evaluated = set().union(*(prompts(d.eval) for d in result.values()))
    assert evaluated == {format_prompt(f"question {i}") for i in range(100, 110)}


def test_eval_prompt_of_one_dataset_is_a_train_prompt_of_another():
    a = dataset("a", [pair(i) for i in range(50)], [pair(i, "eval") for i in range(50, 60)])
    b = dataset("b", [pair(i, "b") for i in range(50, 80)])  # trains on a's eval prompts
    result = split_steps([a, b], [], SHARES, seed=4)
    assert_disjoint(result)
    assert not any(d.eval for d in result.values())


def test_sft_only_datasets_only_feed_sft():
    main = dataset("main", [pair(i) for i in range(100)])
    demos = dataset("demos", [demo(i) for i in range(1000, 1050)], [demo(i) for i in range(2000, 2005)])
    result = split_steps([main], [demos], SHARES, seed=9)
    assert_disjoint(result)
    assert set(demos.train) <= set(result["sft"].train)
    assert set(demos.eval) <= set(result["sft"].eval)
    for step in ("reward", "ppo"):
        assert not (set(result[step].train) | set(result[step].eval)) & (set(demos.train) | set(demos.eval))


def test_sft_only_data_never_trains_on_another_steps_prompts():
    main = dataset("main", [pair(i) for i in range(100)])
    demos = dataset("demos", [demo(i) for i in range(100)])  # the same prompts, single answers
    result = split_steps([main], [demos], SHARES, seed=9)
    assert_disjoint(result)
    elsewhere = prompts(result["reward"].train) | prompts(result["ppo"].train)
    assert len(elsewhere) == 80
    assert not [s for s in result["sft"].train if s.prompt in elsewhere]
    sft_prompts = prompts(result["sft"].train)
    assert {s for s in demos.train if s.prompt in sft_prompts} == {s for s in result["sft"].train if not s.is_pair}


def test_sft_only_data_feeds_sft_with_a_zero_share():
    main = dataset("main", [pair(i) for i in range(100)])
    demos = dataset("demos", [demo(i) for i in range(500, 520)])
    result = split_steps([main], [demos], (0.0, 0.5, 0.5), seed=9)
    assert result["sft"].train == demos.train


def test_the_reward_step_keeps_only_pairs():
    mixed = [pair(i) for i in range(100)] + [demo(i) for i in range(100, 200)]
    evaluation = [pair(i) for i in range(300, 320)] + [demo(i) for i in range(320, 340)]
    result = split_steps([dataset("mixed", mixed, evaluation)], [], SHARES, seed=2)
    assert_disjoint(result)
    assert result["reward"].train and all(s.is_pair for s in result["reward"].train)
    assert result["reward"].eval and all(s.is_pair for s in result["reward"].eval)
    assert any(not s.is_pair for s in result["sft"].train)  # SFT and PPO keep demonstrations
    assert any(not s.is_pair for s in result["ppo"].train)


def test_exact_duplicates_are_dropped():
    samples = [pair(i) for i in range(50)] * 3
    result = split_steps([dataset("a", samples), dataset("b", samples)], [], SHARES, seed=2)
    assert sum(len(d.train) for d in result.values()) == 50
