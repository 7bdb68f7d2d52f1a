"""`kuberlhf chat` and its Python API on a tiny saved model."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from kuberlhf_trainer.chat import ChatSession
from kuberlhf_trainer.models import builtin_config, char_tokenizer


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny model with a 96-token context, saved like a step's output."""
    from transformers import AutoModelForCausalLM

    directory = tmp_path_factory.mktemp("model")
    tokenizer = char_tokenizer()
    config = builtin_config("builtin:llama-tiny", len(tokenizer), tokenizer)
    config.max_position_embeddings = 96
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def test_turns_are_remembered_and_streamed(model_dir):
    session = ChatSession.load(model_dir, max_new_tokens=4)
    pieces = list(session.send("a"))
    assert session.history[0].user == "a"
    assert session.history[0].assistant == "".join(pieces).strip()
    session.ask("b")
    text = session.tokenizer.decode(session.prompt_ids("c"))
    assert text.index("Human: a") < text.index("Human: b") < text.index("Human: c")
    session.reset()
    assert "Human: a" not in session.tokenizer.decode(session.prompt_ids("d"))


def test_an_answer_ends_where_the_model_starts_the_next_human_turn(tmp_path):
    """A model that learned to go on with a made-up "Human:" turn: the answer stops there, and
    only the answer joins the history."""
    from transformers import AutoModelForCausalLM

    tokenizer = char_tokenizer()
    config = builtin_config("builtin:llama-tiny", len(tokenizer), tokenizer)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    text = "\n\nHuman: hi\n\nAssistant: ok\n\nHuman: more please"
    ids = torch.tensor([tokenizer(text)["input_ids"]])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(150):  # learn the conversation by heart, invented turn included
        optimizer.zero_grad()
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
    session = ChatSession(model.eval(), tokenizer, max_new_tokens=40)
    assert session.ask("hi") == "ok"
    assert session.history[0].assistant == "ok"


def test_the_oldest_turns_make_room_within_the_context(model_dir):
    session = ChatSession.load(model_dir, max_new_tokens=16)
    for word in ("first", "second", "third", "fourth"):
        session.ask(f"{word} message")
    ids = session.prompt_ids("last")
    text = session.tokenizer.decode(ids)
    assert len(ids) <= 96 - 16
    assert "last" in text and "first message" not in text


def test_cli_chat_reads_turns_until_quit(model_dir):
    result = subprocess.run(
        [sys.executable, "-m", "kuberlhf_trainer", "chat", "--model", str(model_dir), "--max-new-tokens", "4"],
        input="hello\nclear\nquit\n", capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("Assistant:") == 1 and "(conversation cleared)" in result.stdout


def test_cli_chat_names_a_missing_model(tmp_path):
    result = subprocess.run([sys.executable, "-m", "kuberlhf_trainer", "chat", "--model", str(tmp_path)],
                            input="", capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "--model" in result.stderr
