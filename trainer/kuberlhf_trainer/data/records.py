"""The one record shape every dataset is turned into, and the conversation format.

Every adapter maps a raw row to a `Sample`: a prompt in the Human/Assistant format that
Anthropic's HH-RLHF uses, a preferred answer and (for preference data) a rejected one. Steps
read what they need: SFT prompt+chosen, the reward model prompt+chosen vs prompt+rejected,
PPO the prompt alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

HUMAN = "\n\nHuman:"
ASSISTANT = "\n\nAssistant:"


class DataFormatError(ValueError):
    """A record that cannot be used; the message names the dataset and line or index."""


@dataclass(frozen=True)
class Sample:
    prompt: str  # ends with the assistant marker: "...\n\nAssistant:"
    chosen: str  # the preferred answer, starting with a space
    rejected: Optional[str] = None  # the dispreferred answer; None for SFT-only data

    @property
    def prompt_and_chosen(self) -> str:
        return self.prompt + self.chosen

    @property
    def prompt_and_rejected(self) -> Optional[str]:
        return None if self.rejected is None else self.prompt + self.rejected

    @property
    def is_pair(self) -> bool:
        return self.rejected is not None


def format_prompt(question: str) -> str:
    """Wrap a bare question as a single-turn conversation; normalise an already formatted one.

    The result always starts with "\\n\\n" and ends with exactly "\\n\\nAssistant:", also for
    DeepSpeed-Chat's space-separated style (" Human: q Assistant:").
    """
    text = question.strip()
    if text.endswith("Assistant:"):
        return "\n\n" + text[: -len("Assistant:")].rstrip() + ASSISTANT
    if text.startswith("Human:"):
        return "\n\n" + text + ASSISTANT
    return f"{HUMAN} {text}{ASSISTANT}"


def format_answer(answer: str) -> str:
    """Answers start with one space after 'Assistant:' and carry no trailing whitespace."""
    return " " + answer.strip()


def split_dialogue(dialogue: str) -> tuple[str, str]:
    """Split a whole HH dialogue at its last assistant turn: (prompt, answer)."""
    cut = dialogue.rfind(ASSISTANT)
    if cut < 0:
        raise ValueError("no '\\n\\nAssistant:' turn in the dialogue")
    prompt = dialogue[: cut + len(ASSISTANT)]
    answer = dialogue[cut + len(ASSISTANT) :]
    return prompt, format_answer(answer)


def require_text(row: dict, field: str) -> str:
    """The field as a non-empty string, or a ValueError naming it."""
    if field not in row:
        raise ValueError(f"missing field '{field}' (fields present: {sorted(row)})")
    value = row[field]
    if not isinstance(value, str):
        raise ValueError(f"field '{field}' should be a string, got {type(value).__name__}")
    if not value.strip():
        raise ValueError(f"field '{field}' is empty")
    return value
