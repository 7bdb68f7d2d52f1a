"""Talking to a trained model: a multi-turn chat session, as a Python API and `kuberlhf chat`.

    session = ChatSession.load("output/ppo")
    for piece in session.send("How do I sort a list?"):   # streamed text
        print(piece, end="")
    session.reset()

The conversation uses the training format ("\\n\\nHuman: ...\\n\\nAssistant: ..."). Each turn
is generated from the whole history, cut from the oldest turns to fit the model's context
(leaving room for the answer); the answer stops at EOS or at the next "Human:" turn the
model starts to invent.
"""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import torch

from .data.records import ASSISTANT, HUMAN

STOP_MARK = HUMAN.strip()  # a model that starts the next human turn has finished its answer


@dataclass
class Turn:
    user: str
    assistant: str


@dataclass
class ChatSession:
    model: object
    tokenizer: object
    max_new_tokens: int = 128
    temperature: float = 0.0  # 0: greedy
    history: list[Turn] = field(default_factory=list)

    @classmethod
    def load(cls, directory: str | Path, **settings) -> "ChatSession":
        """A chat with the model saved in `directory` (a step output: ppo/, sft/, ppo/actor_ema/ ...)."""
        from transformers import AutoModelForCausalLM

        from .lora_checkpoints import resolve_checkpoint
        from .models import load_tokenizer

        device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = torch.bfloat16 if device == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
        weights = resolve_checkpoint(str(directory))  # a LoRA adapter output: merged into its base
        model = AutoModelForCausalLM.from_pretrained(weights, dtype=dtype).to(device).eval()
        return cls(model, load_tokenizer(str(directory), "--model"), **settings)

    @property
    def context_length(self) -> int:
        config = self.model.config
        return getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", 1024)

    def reset(self) -> None:
        self.history.clear()

    def prompt_ids(self, message: str) -> list[int]:
        """The conversation so far plus `message`, as token ids that leave room for the answer:
        whole old turns are dropped first; a single message too long is cut from the left."""
        budget = self.context_length - self.max_new_tokens
        turns = self.history[:]
        while True:
            text = "".join(f"{HUMAN} {t.user}{ASSISTANT} {t.assistant}" for t in turns) + f"{HUMAN} {message}{ASSISTANT}"
            ids = self.tokenizer(text)["input_ids"]
            if len(ids) <= budget or not turns:
                return ids[-budget:]
            turns.pop(0)

    def send(self, message: str) -> Iterator[str]:
        """Stream the answer to `message`; the turn joins the history when the answer is done."""
        from transformers import TextIteratorStreamer

        ids = torch.tensor([self.prompt_ids(message)], device=self.model.device)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        sampling = {"do_sample": True, "temperature": self.temperature, "top_k": 0} if self.temperature > 0 else {"do_sample": False}
        # stop_strings ends generation itself at an invented turn, instead of running on to
        # max_new_tokens while we wait.
        kwargs = dict(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=self.max_new_tokens,
                      eos_token_id=self.tokenizer.eos_token_id, pad_token_id=self.tokenizer.pad_token_id,
                      stop_strings=[STOP_MARK], tokenizer=self.tokenizer, streamer=streamer, **sampling)
        output = {}
        worker = threading.Thread(target=lambda: output.update(ids=self.model.generate(**kwargs)), daemon=True)
        worker.start()
        streamed, shown = "", ""
        for piece in streamer:
            streamed += piece
            visible = _before_stop_mark(streamed)
            if len(visible) > len(shown):
                yield visible[len(shown) :]
                shown = visible
        worker.join()
        # The whole answer from its tokens (the streamer may hold back the last one), cut at the mark.
        answer = self.tokenizer.decode(output["ids"][0, ids.shape[1] :], skip_special_tokens=True)
        answer = answer.split(STOP_MARK)[0]
        if answer.startswith(shown) and len(answer) > len(shown):
            yield answer[len(shown) :]
        self.history.append(Turn(message, answer.strip()))

    def ask(self, message: str) -> str:
        """The whole answer at once."""
        return "".join(self.send(message)).strip()


def _before_stop_mark(text: str) -> str:
    """`text` up to the stop mark, without a tail that may be the mark's beginning (not shown
    until the next piece tells)."""
    cut = text.find(STOP_MARK)
    if cut >= 0:
        return text[:cut]
    for size in range(min(len(STOP_MARK) - 1, len(text)), 0, -1):
        if text.endswith(STOP_MARK[:size]):
            return text[:-size]
    return text


def run_chat(model_dir: str, max_new_tokens: int, temperature: float, stream=sys.stdout, lines=None) -> int:
    """The interactive loop of `kuberlhf chat`: 'clear' starts over, 'quit' (or end of input) leaves."""
    if not (Path(model_dir) / "config.json").exists():
        print(f"kuberlhf: --model {model_dir}: no model there (expected a step output such as output/ppo)", file=sys.stderr)
        return 2
    session = ChatSession.load(model_dir, max_new_tokens=max_new_tokens, temperature=temperature)
    stream.write("Chat with the model ('clear' forgets the conversation, 'quit' leaves).\n")
    for line in lines if lines is not None else _input_lines(stream):
        message = line.strip()
        if message in ("quit", "exit"):
            break
        if message == "clear":
            session.reset()
            stream.write("(conversation cleared)\n")
            continue
        if not message:
            continue
        stream.write("Assistant:")
        for piece in session.send(message):
            stream.write(piece)
            stream.flush()
        stream.write("\n")
    return 0


def _input_lines(stream) -> Iterator[str]:
    while True:
        stream.write("Human: ")
        stream.flush()
        try:
            yield input()
        except EOFError:
            stream.write("\n")
            return
