"""Tokenizing samples for each step, padding and collating, and the content-keyed data cache."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from kuberlhf_trainer.config import build_config
from kuberlhf_trainer.data import prepare
from kuberlhf_trainer.data.records import Sample, format_prompt
from kuberlhf_trainer.data.tokenize import (
    IGNORE_INDEX,
    PairExample,
    PromptExample,
    SFTExample,
    collate_pairs,
    collate_sft,
    encode_pair,
    encode_prompt,
    encode_sft,
    fit,
    pad_left,
    pad_right,
)
from kuberlhf_trainer.models import char_tokenizer, load_tokenizer


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("builtin:char")


def ids(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


SAMPLE = Sample(format_prompt("sort 3142"), " 1234", " 1243")


# -- fit -----------------------------------------------------------------------------------------


def test_fit_leaves_short_sequences_alone():
    assert fit([1, 2, 3], [4, 5], 10) == ([1, 2, 3], [4, 5])
    assert fit([1, 2, 3], [4, 5], 5) == ([1, 2, 3], [4, 5])


def test_fit_drops_the_oldest_prompt_tokens_first():
    prompt, answer = list(range(10, 20)), [7, 8, 2]
    assert fit(prompt, answer, 8) == ([15, 16, 17, 18, 19], [7, 8, 2])


def test_fit_cuts_an_answer_longer_than_the_limit_at_the_right():
    assert fit([1, 2], list(range(10, 20)), 4) == ([], [10, 11, 12, 13])


# -- encoding --------------------------------------------------------------------------------------


def test_char_tokenizer_round_trips(tok):
    assert tok.decode(ids(tok, SAMPLE.prompt_and_chosen)) == SAMPLE.prompt_and_chosen
    assert tok.eos_token_id is not None and tok.pad_token_id is not None
    assert tok.eos_token_id != tok.pad_token_id
    assert tok.padding_side == "right"
    assert char_tokenizer().get_vocab() == tok.get_vocab()


def test_encode_sft_trains_on_the_prompt_by_default(tok):
    example = encode_sft(tok, SAMPLE, max_len=64, mask_prompt=False)
    assert example.input_ids == ids(tok, SAMPLE.prompt) + ids(tok, " 1234") + [tok.eos_token_id]
    assert example.labels == example.input_ids


def test_encode_sft_can_mask_the_prompt(tok):
    example = encode_sft(tok, SAMPLE, max_len=64, mask_prompt=True)
    n = len(ids(tok, SAMPLE.prompt))
    assert example.labels[:n] == [IGNORE_INDEX] * n
    assert example.labels[n:] == ids(tok, " 1234") + [tok.eos_token_id]
    assert len(example.labels) == len(example.input_ids)


def test_encode_sft_truncates_the_prompt_and_keeps_answer_and_eos(tok):
    example = encode_sft(tok, SAMPLE, max_len=16, mask_prompt=True)
    assert len(example.input_ids) == 16
    assert example.input_ids[-1] == tok.eos_token_id
    assert tok.decode(example.input_ids[:-1]) == "Assistant: 1234"  # the oldest characters went first
    assert example.labels == [IGNORE_INDEX] * 10 + ids(tok, " 1234") + [tok.eos_token_id]


def test_encode_pair_keeps_the_same_prompt_for_both_answers(tok):
    sample = Sample(format_prompt("name a fruit"), " apple", " a very long wrong answer")
    for max_len in (200, 40, 30):
        example = encode_pair(tok, sample, max_len)
        n = example.prompt_len
        assert example.chosen_ids[:n] == example.rejected_ids[:n]
        assert n > 0 and sample.prompt.endswith(tok.decode(example.chosen_ids[:n]))  # the newest part kept
        assert example.chosen_ids[n:] == ids(tok, " apple") + [tok.eos_token_id]
        assert example.rejected_ids[n:] == ids(tok, " a very long wrong answer") + [tok.eos_token_id]
        assert max(len(example.chosen_ids), len(example.rejected_ids)) <= max_len
    assert encode_pair(tok, sample, 30).prompt_len == 30 - len(" a very long wrong answer") - 1


def test_encode_prompt_keeps_text_and_reference(tok):
    example = encode_prompt(tok, SAMPLE)
    assert example.prompt_ids == ids(tok, SAMPLE.prompt)
    assert (example.prompt, example.reference) == (SAMPLE.prompt, " 1234")


# -- padding and batches --------------------------------------------------------------------------


def test_pad_right():
    batch, mask = pad_right([[5, 6, 7], [8]], pad_id=0)
    assert batch.tolist() == [[5, 6, 7], [8, 0, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch.dtype == mask.dtype == torch.long


def test_pad_left():
    batch, mask = pad_left([[5, 6, 7], [8]], pad_id=0)
    assert batch.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]


def test_masks_come_from_lengths_not_from_pad_ids():
    # Many tokenizers pad with EOS: a real EOS token must stay unmasked.
    batch, mask = pad_right([[5, 2], [2]], pad_id=2)
    assert mask.tolist() == [[1, 1], [1, 0]]
    batch, mask = pad_left([[5, 2], [2]], pad_id=2)
    assert mask.tolist() == [[1, 1], [0, 1]]


def test_collate_sft_pads_labels_with_ignore_index():
    batch = collate_sft([SFTExample([5, 6, 7], [-100, 6, 7]), SFTExample([8], [8])], pad_id=0)
    assert batch["labels"].tolist() == [[-100, 6, 7], [8, -100, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]


def test_collate_pairs_puts_chosen_first_and_marks_ends(tok):
    samples = [Sample(format_prompt("q"), " yes", " no thanks"), Sample(format_prompt("longer question"), " ok", " x")]
    examples = [encode_pair(tok, s, 64) for s in samples]
    batch = collate_pairs(examples, tok.pad_token_id)
    ids_, ends = batch["input_ids"], batch["ends"]
    assert ids_.shape[0] == 4
    rows = [e.chosen_ids for e in examples] + [e.rejected_ids for e in examples]
    for row, expected in enumerate(rows):
        assert ids_[row, : len(expected)].tolist() == expected
        assert ends[row].item() == len(expected) - 1
        assert ids_[row, ends[row]].item() == tok.eos_token_id
    assert batch["prompt_lens"].tolist() == [e.prompt_len for e in examples] * 2


# -- the data cache --------------------------------------------------------------------------------

PAIRS = [{"prompt": f"Question {i}?", "chosen": f"Answer {i}.", "rejected": "No."} for i in range(60)]


def write_pairs(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def make_config(tmp_path: Path, **sections):
    data = {"datasets": [str(tmp_path / "pairs.jsonl")], "cache_dir": str(tmp_path / "cache")}
    return build_config({"data": data, "output_dir": str(tmp_path / "out"), **sections})


@pytest.fixture
def builds(monkeypatch):
    """How many times each step was tokenized (rather than read from the cache)."""
    calls: list[str] = []
    real = prepare._tokenize

    def counting(config, step, tokenizer, data):
        calls.append(step)
        return real(config, step, tokenizer, data)

    monkeypatch.setattr(prepare, "_tokenize", counting)
    return calls


def cache_files(tmp_path: Path) -> list[str]:
    directory = tmp_path / "cache"
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def test_second_call_reads_the_cache(tmp_path, tok, builds):
    write_pairs(tmp_path / "pairs.jsonl", PAIRS)
    config = make_config(tmp_path)
    first = prepare.step_examples(config, "sft", tok)
    assert builds == ["sft"] and len(cache_files(tmp_path)) == 1
    again = prepare.step_examples(config, "sft", tok)
    assert builds == ["sft"]  # not tokenized again
    assert again == first and first.train and first.eval
    assert all(isinstance(e, SFTExample) for e in first.train + first.eval)
    # a setting that does not affect this step's data reuses the entry
    prepare.step_examples(make_config(tmp_path, ppo={"kl_coef": 0.5}, sft={"learning_rate": 1e-3}), "sft", tok)
    assert builds == ["sft"] and len(cache_files(tmp_path)) == 1


def test_each_step_gets_its_example_type(tmp_path, tok):
    write_pairs(tmp_path / "pairs.jsonl", PAIRS)
    config = make_config(tmp_path)
    assert all(isinstance(e, PairExample) for e in prepare.step_examples(config, "reward", tok).train)
    ppo = prepare.step_examples(config, "ppo", tok)
    assert ppo.train and all(isinstance(e, PromptExample) for e in ppo.train) and ppo.skipped == 0


def test_ppo_skips_prompts_longer_than_the_limit(tmp_path, tok):
    rows = PAIRS[:30] + [{"prompt": "x" * 100 + f" {i}", "chosen": "a", "rejected": "b"} for i in range(30)]
    write_pairs(tmp_path / "pairs.jsonl", rows)
    ppo = prepare.step_examples(make_config(tmp_path, ppo={"max_prompt_seq_len": 40}), "ppo", tok)
    assert ppo.skipped > 0 and all(len(e.prompt_ids) <= 40 for e in ppo.train + ppo.eval)


def test_a_changed_local_file_gives_a_new_key(tmp_path, tok, builds):
    path = write_pairs(tmp_path / "pairs.jsonl", PAIRS)
    config = make_config(tmp_path)
    before = prepare.step_examples(config, "sft", tok)
    write_pairs(path, [dict(r, chosen=r["chosen"] + " Edited.") for r in PAIRS])
    after = prepare.step_examples(config, "sft", tok)
    assert builds == ["sft", "sft"] and len(cache_files(tmp_path)) == 2
    assert after != before
    assert any("Edited." in tok.decode(e.input_ids) for e in after.train)


def test_a_changed_max_seq_len_gives_a_new_key(tmp_path, tok, builds):
    write_pairs(tmp_path / "pairs.jsonl", PAIRS)
    prepare.step_examples(make_config(tmp_path), "sft", tok)
    short = prepare.step_examples(make_config(tmp_path, sft={"max_seq_len": 16}), "sft", tok)
    assert builds == ["sft", "sft"] and len(cache_files(tmp_path)) == 2
    assert max(len(e.input_ids) for e in short.train) == 16
    prepare.step_examples(make_config(tmp_path, sft={"mask_prompt_loss": True}), "sft", tok)
    assert len(cache_files(tmp_path)) == 3


def test_a_different_tokenizer_gives_a_new_key(tmp_path, tok, builds):
    write_pairs(tmp_path / "pairs.jsonl", PAIRS)
    config = make_config(tmp_path)
    prepare.step_examples(config, "sft", tok)
    other = char_tokenizer()
    other.add_tokens(["Question"])
    examples = prepare.step_examples(config, "sft", other)
    assert builds == ["sft", "sft"] and len(cache_files(tmp_path)) == 2
    assert other.convert_tokens_to_ids("Question") in examples.train[0].input_ids


def bpe_tokenizer(merges: list[tuple[str, str]]):
    """A fast BPE tokenizer over a fixed vocabulary; only `merges` varies."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(["<unk>", "a", "b", "c", "ab", "bc"])}
    backend = Tokenizer(models.BPE(vocab, merges, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", pad_token="<unk>")


def test_same_vocabulary_other_merges_gives_a_new_key():
    first, second = bpe_tokenizer([("a", "b")]), bpe_tokenizer([("b", "c")])
    assert first.get_vocab() == second.get_vocab()
    assert first.tokenize("abc") != second.tokenize("abc")  # so cached token ids would be wrong
    assert prepare.tokenizer_fingerprint(first) != prepare.tokenizer_fingerprint(second)
    again = bpe_tokenizer([("a", "b")])
    again(["ab c", "a"], padding=True, truncation=True, max_length=2)  # leaves call-time state in the backend
    assert prepare.tokenizer_fingerprint(first) == prepare.tokenizer_fingerprint(again)


def test_the_split_and_seed_are_part_of_the_key(tmp_path, tok, builds):
    write_pairs(tmp_path / "pairs.jsonl", PAIRS)
    prepare.step_examples(make_config(tmp_path), "sft", tok)
    prepare.step_examples(make_config(tmp_path, seed=99), "sft", tok)
    prepare.step_examples(make_config(tmp_path, data={"datasets": [str(tmp_path / "pairs.jsonl")],
                                                      "cache_dir": str(tmp_path / "cache"), "data_split": "1,1,1"}),
                          "sft", tok)
    assert builds == ["sft"] * 3 and len(cache_files(tmp_path)) == 3


def test_a_failed_save_leaves_no_partial_file(tmp_path, tok, monkeypatch):
    write_pairs(tmp_path / "pairs.jsonl", PAIRS)
    config = make_config(tmp_path)

    def broken_save(obj, file, *args, **kwargs):
        file.write(b"half a cache entry")
        raise OSError("disk full")

    with monkeypatch.context() as patch:
        patch.setattr(torch, "save", broken_save)
        with pytest.raises(OSError, match="disk full"):
            prepare.step_examples(config, "sft", tok)
    assert cache_files(tmp_path) == []
    assert prepare.step_examples(config, "sft", tok).train  # the next run builds a good entry
    assert len(cache_files(tmp_path)) == 1


def test_a_waiting_process_reads_what_the_builder_wrote(tmp_path, tok, builds):
    write_pairs(tmp_path / "pairs.jsonl", PAIRS)
    config = make_config(tmp_path)
    barrier_calls = []
    built = prepare.step_examples(config, "reward", tok, barrier=lambda: barrier_calls.append(1))
    waited = prepare.step_examples(config, "reward", tok, barrier=lambda: barrier_calls.append(1), is_builder=False)
    assert builds == ["reward"] and barrier_calls == [1, 1] and waited == built
