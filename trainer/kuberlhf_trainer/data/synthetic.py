"""The built-in synthetic task ('builtin:sort'): sort a string of digits.

It ships with the package, needs no download and has a ground-truth score, so every step can
be shown to improve the real objective, not only its own proxy: SFT learns the format, the
reward model learns to rank, and PPO should raise the exact-match accuracy.

Prompt:  "\\n\\nHuman: sort 31415\\n\\nAssistant:"     chosen: " 11345"
Rejected answers are the mistakes a small model really makes: sorted but with a wrong digit,
a digit dropped or repeated, two neighbours swapped, the input copied unsorted.
"""

from __future__ import annotations

import random
import re

from .records import Sample, format_prompt

NAME = "builtin:sort"
_PROMPT = re.compile(r"Human: sort (\d+)\n\nAssistant:$")


def make_prompt(digits: str) -> str:
    return format_prompt(f"sort {digits}")


def is_task_prompt(prompt: str) -> bool:
    return _PROMPT.search(prompt) is not None


def correct_answer(digits: str) -> str:
    return "".join(sorted(digits))


def digits_of(prompt: str) -> str:
    """The digit string a sorting prompt asks about."""
    match = _PROMPT.search(prompt)
    if not match:
        raise ValueError(f"not a sorting prompt: {prompt!r}")
    return match.group(1)


def score(prompt: str, answer: str) -> float:
    """Ground truth: 1.0 when the answer is exactly the sorted digits, else 0.0."""
    return float(answer.strip() == correct_answer(digits_of(prompt)))


def corrupt(digits: str, rng: random.Random) -> str:
    """A plausible wrong answer for `digits` (never the correct one)."""
    right = correct_answer(digits)
    kinds = ["wrong_digit", "wrong_digit", "drop", "repeat", "swap", "unsorted"]
    while True:
        kind = rng.choice(kinds)
        chars = list(right)
        i = rng.randrange(len(chars))
        if kind == "wrong_digit":  # sorted, but one digit replaced: the commonest real mistake
            chars[i] = rng.choice([d for d in "0123456789" if d != chars[i]])
            chars.sort()
        elif kind == "drop":
            del chars[i]
        elif kind == "repeat":
            chars.insert(i, chars[i])
        elif kind == "swap" and len(chars) > 1:
            j = min(i + 1, len(chars) - 1) if i + 1 < len(chars) else i - 1
            chars[i], chars[j] = chars[j], chars[i]
        elif kind == "unsorted":
            chars = list(digits)
        wrong = "".join(chars)
        if wrong and wrong != right:
            return wrong


def generate(num_examples: int, min_digits: int, max_digits: int, seed: int) -> list[Sample]:
    """`num_examples` distinct sorting prompts with a correct and a wrong answer each."""
    rng = random.Random(f"kuberlhf-sort-{seed}")
    seen: set[str] = set()
    samples: list[Sample] = []
    capacity = sum(10**n for n in range(min_digits, max_digits + 1))
    if num_examples > capacity // 2:
        raise ValueError(f"data.synthetic.num_examples: at most {capacity // 2} distinct prompts fit these lengths")
    while len(samples) < num_examples:
        digits = "".join(rng.choice("0123456789") for _ in range(rng.randint(min_digits, max_digits)))
        if digits in seen:
            continue
        seen.add(digits)
        samples.append(Sample(make_prompt(digits), " " + correct_answer(digits), " " + corrupt(digits, rng)))
    return samples
