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

        from .models import load_tokenizer

        device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = torch.bfloat16 if device == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
        model = AutoModelForCausalLM.from_pretrained(directory, dtype=dtype).to(device).eval()
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
        kwargs = dict(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=self.max_new_tokens,
                      eos_token_id=self.tokenizer.eos_token_id, pad_token_id=self.tokenizer.pad_token_id,
                      streamer=streamer, **sampling)
        worker = threading.Thread(target=self.model.generate, kwargs=kwargs, daemon=True)
        worker.start()
        answer = ""
        for piece in streamer:
            cut = (answer + piece).find(STOP_MARK)
            if cut >= 0:  # the model began inventing the next human turn: the answer ends here
                piece = (answer + piece)[len(answer) : cut]
                answer += piece
                yield piece
                break
            answer += piece
            yield piece
        worker.join()
        self.history.append(Turn(message, answer.strip()))

    def ask(self, message: str) -> str:
        """The whole answer at once."""
        return "".join(self.send(message)).strip()


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
