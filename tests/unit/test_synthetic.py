"""The built-in sorting task: a ground-truth score, wrong rejected answers, determinism."""

from __future__ import annotations

import random

import pytest

from kuberlhf_trainer.config import DataSettings
from kuberlhf_trainer.data import synthetic
from kuberlhf_trainer.data.records import ASSISTANT, DataFormatError
from kuberlhf_trainer.data.sources import load_dataset_entry


def test_prompt_format_and_digits():
    prompt = synthetic.make_prompt("31415")
    assert prompt == "\n\nHuman: sort 31415" + ASSISTANT
    assert synthetic.digits_of(prompt) == "31415"
    with pytest.raises(ValueError, match="not a sorting prompt"):
        synthetic.digits_of("\n\nHuman: add 1 and 2\n\nAssistant:")


@pytest.mark.parametrize(
    "answer,expected",
    [
        (" 11345", 1.0),
        ("11345", 1.0),
        (" 11345 ", 1.0),
        (" 1345", 0.0),  # a digit dropped
        (" 113345", 0.0),  # a digit repeated
        (" 11354", 0.0),  # not sorted
        (" 31415", 0.0),  # copied
        (" 11346", 0.0),  # sorted, one digit wrong
        (" 1 1345", 0.0),
        ("", 0.0),
    ],
)
def test_score_is_one_only_for_the_exact_sorted_answer(answer, expected):
    assert synthetic.score(synthetic.make_prompt("31415"), answer) == expected


def test_generated_pairs_are_right_and_wrong():
    samples = synthetic.generate(600, 3, 6, seed=5)
    assert len(samples) == 600
    for s in samples:
        assert synthetic.score(s.prompt, s.chosen) == 1.0
        assert synthetic.score(s.prompt, s.rejected) == 0.0
        assert s.chosen.startswith(" ") and s.rejected.startswith(" ") and s.rejected.strip()
        assert 3 <= len(synthetic.digits_of(s.prompt)) <= 6


def test_rejected_answers_are_plausible_mistakes():
    # Mostly "sorted but wrong": the mistakes a small model really makes, not random strings.
    samples = synthetic.generate(600, 3, 6, seed=5)
    sorted_wrong = sum(s.rejected.strip() == "".join(sorted(s.rejected.strip())) for s in samples)
    assert sorted_wrong / len(samples) > 0.3
    assert all(set(s.rejected.strip()) <= set("0123456789") for s in samples)
    assert all(abs(len(s.rejected.strip()) - len(s.chosen.strip())) <= 1 for s in samples)


def test_corrupt_never_returns_the_right_answer():
    rng = random.Random(0)
    for digits in ("11", "12", "21", "111", "999999", "0123456789"):
        for _ in range(200):
            assert synthetic.corrupt(digits, rng) != "".join(sorted(digits))


def test_prompts_are_distinct():
    samples = synthetic.generate(1000, 2, 4, seed=1)
    assert len({s.prompt for s in samples}) == 1000


def test_generate_is_deterministic_per_seed():
    assert synthetic.generate(300, 3, 6, seed=42) == synthetic.generate(300, 3, 6, seed=42)
    other = synthetic.generate(300, 3, 6, seed=43)
    assert {s.prompt for s in other} != {s.prompt for s in synthetic.generate(300, 3, 6, seed=42)}


def test_too_many_examples_for_the_lengths_fails_naming_the_setting():
    with pytest.raises(ValueError, match="data.synthetic.num_examples"):
        synthetic.generate(51, 2, 2, seed=0)
    assert len(synthetic.generate(50, 2, 2, seed=0)) == 50


def test_builtin_sort_loads_through_the_dataset_layer():
    settings = DataSettings(datasets=["builtin:sort"], synthetic={"num_examples": 200, "min_digits": 3, "max_digits": 5})
    loaded = load_dataset_entry("builtin:sort", settings, seed=3)
    assert (len(loaded.train), len(loaded.eval)) == (180, 20)
    assert not {s.prompt for s in loaded.train} & {s.prompt for s in loaded.eval}
    again = load_dataset_entry("builtin:sort", settings, seed=3)
    assert again.fingerprint == loaded.fingerprint and again.train == loaded.train
    assert load_dataset_entry("builtin:sort", settings, seed=4).fingerprint != loaded.fingerprint
    bigger = DataSettings(synthetic={"num_examples": 300, "min_digits": 3, "max_digits": 5})
    assert load_dataset_entry("builtin:sort", bigger, seed=3).fingerprint != loaded.fingerprint


def test_builtin_sort_with_impossible_settings_is_a_data_error():
    settings = DataSettings(synthetic={"num_examples": 100, "min_digits": 2, "max_digits": 2})
    with pytest.raises(DataFormatError, match="num_examples"):
        load_dataset_entry("builtin:sort", settings, seed=0)
