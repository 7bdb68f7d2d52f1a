"""Adapters: one small function per dataset format, mapping a raw row to a `Sample`.

Covers every dataset DeepSpeed-Chat supports (same hub names, same choice of fields), the raw
Anthropic HH-RLHF format and three generic local formats. An adapter raises ValueError on a
bad row; the loader adds the file and line (or dataset and index) to the message. Returning
None skips a row that carries no usable example (e.g. a tie in a comparison dataset).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Optional

from .records import Sample, format_answer, format_prompt, require_text, split_dialogue


@dataclass(frozen=True)
class Adapter:
    name: str  # what users write in data.datasets
    to_sample: Callable[[dict], Optional[Sample]]
    hub_path: Optional[str] = None  # None for local-only formats
    hub_config: Optional[str] = None
    train_split: str = "train"
    eval_split: Optional[str] = None  # None: carve a tenth of train out for evaluation
    pairwise: bool = True  # False: SFT data only (no rejected answers)


# -- generic formats ---------------------------------------------------------------------------


def hh_dialogues(row: dict) -> Sample:
    """Anthropic HH-RLHF raw: `chosen` and `rejected` are whole dialogues sharing the prompt."""
    prompt, chosen = split_dialogue(require_text(row, "chosen"))
    rejected_prompt, rejected = split_dialogue(require_text(row, "rejected"))
    if rejected_prompt != prompt:
        raise ValueError("'chosen' and 'rejected' differ before their last assistant turn")
    return Sample(prompt, chosen, rejected)


def prompt_chosen_rejected(row: dict) -> Sample:
    """{prompt, chosen, rejected}: DeepSpeed-Chat's local JSON format, Dahoas/rm-static and others."""
    return Sample(
        format_prompt(require_text(row, "prompt")),
        format_answer(require_text(row, "chosen")),
        format_answer(require_text(row, "rejected")),
    )


def prompt_response(row: dict) -> Sample:
    """{prompt, response} (or {prompt, chosen}): a single demonstration for SFT."""
    answer_field = "response" if "response" in row else "chosen"
    return Sample(format_prompt(require_text(row, "prompt")), format_answer(require_text(row, answer_field)))


# -- the datasets DeepSpeed-Chat supports --------------------------------------------------------


def yitingxie_rlhf_reward(row: dict) -> Sample:
    # The prompt field stops before "Assistant:"; answers repeat the "Assistant:" marker.
    prompt = require_text(row, "prompt") + "Assistant:"
    chosen = require_text(row, "chosen").split("Assistant:")[-1]
    rejected = require_text(row, "rejected").split("Assistant:")[-1]
    return Sample(format_prompt(prompt), format_answer(chosen), format_answer(rejected))


_CITATION = re.compile(r" ?[\(\[][0-9, ]+[\)\]]")


def webgpt_comparisons(row: dict) -> Optional[Sample]:
    question = row.get("question")
    if not isinstance(question, dict):
        raise ValueError("field 'question' should be an object with 'full_text'")
    scores = (row.get("score_0"), row.get("score_1"))
    if not all(isinstance(s, (int, float)) for s in scores):
        raise ValueError("fields 'score_0' and 'score_1' should be numbers")
    if scores[0] == scores[1]:
        return None  # a tie says nothing about which answer is better
    better, worse = ("answer_0", "answer_1") if scores[0] > scores[1] else ("answer_1", "answer_0")
    clean = lambda field: _CITATION.sub("", require_text(row, field))  # noqa: E731 - "[1]" markers
    return Sample(format_prompt(require_text(question, "full_text")), format_answer(clean(better)), format_answer(clean(worse)))


def stanford_shp(row: dict) -> Sample:
    a, b = require_text(row, "human_ref_A"), require_text(row, "human_ref_B")
    if row.get("labels") not in (0, 1):
        raise ValueError("field 'labels' should be 0 or 1")
    chosen, rejected = (a, b) if row["labels"] == 1 else (b, a)
    return Sample(format_prompt(require_text(row, "history")), format_answer(chosen), format_answer(rejected))


_VICUNA_TURN = re.compile(r"\s*\b(USER|ASSISTANT):\s*")
_VICUNA_ROLES = {"USER": "Human", "ASSISTANT": "Assistant"}


def sharegpt_vicuna(row: dict) -> Sample:
    # Vicuna format: "USER: q ASSISTANT: a</s>USER: q2 ASSISTANT:", label "a2</s>". The turn
    # markers become HH's "\n\nHuman: " / "\n\nAssistant: "; the "</s>" end markers are dropped
    # (the tokenizer adds its own EOS).
    prompt = require_text(row, "prompt").replace("</s>", " ")
    prompt = _VICUNA_TURN.sub(lambda m: f"\n\n{_VICUNA_ROLES[m.group(1)]}: ", prompt)
    answer = require_text(row, "label").replace("</s>", "")
    if not answer.strip():
        raise ValueError("field 'label' is empty")
    return Sample(format_prompt(prompt), format_answer(answer))


def instruction_response(row: dict) -> Sample:
    return Sample(format_prompt(require_text(row, "INSTRUCTION")), format_answer(require_text(row, "RESPONSE")))


def miracl_queries(row: dict) -> Sample:
    positives, negatives = row.get("positive_passages"), row.get("negative_passages") or []
    if not positives or not isinstance(positives, list):
        raise ValueError("field 'positive_passages' should be a non-empty list")
    rejected = format_answer(require_text(negatives[0], "text")) if negatives else None
    return Sample(format_prompt(require_text(row, "query")), format_answer(require_text(positives[0], "text")), rejected)


def hc3_chinese(row: dict) -> Optional[Sample]:
    answers = row.get("human_answers")
    if not isinstance(answers, list):
        raise ValueError("field 'human_answers' should be a list")
    if not answers or not str(answers[0]).strip():
        return None
    return Sample(format_prompt(require_text(row, "question")), format_answer(str(answers[0])))


def mkqa(language: str) -> Callable[[dict], Optional[Sample]]:
    def adapt(row: dict) -> Optional[Sample]:
        queries, answers = row.get("queries"), row.get("answers")
        if not isinstance(queries, dict) or not isinstance(answers, dict):
            raise ValueError("fields 'queries' and 'answers' should be objects keyed by language")
        texts = [a.get("text") for a in answers.get(language) or [] if isinstance(a, dict)]
        if not texts or not texts[0]:
            return None  # MKQA has unanswerable questions
        return Sample(format_prompt(require_text(queries, language)), format_answer(texts[0]))

    return adapt


def qg_jaquad(row: dict) -> Sample:
    return Sample(format_prompt(require_text(row, "question")), format_answer(require_text(row, "sentence")))


def qag_jaquad(row: dict) -> Sample:
    questions = row.get("questions")
    if not isinstance(questions, list) or not questions:
        raise ValueError("field 'questions' should be a non-empty list")
    return Sample(format_prompt(str(questions[0])), format_answer(require_text(row, "paragraph")))


ADAPTERS: dict[str, Adapter] = {
    a.name: a
    for a in [
        Adapter("Dahoas/rm-static", prompt_chosen_rejected, "Dahoas/rm-static", eval_split="test"),
        Adapter("Dahoas/full-hh-rlhf", prompt_chosen_rejected, "Dahoas/full-hh-rlhf", eval_split="test"),
        Adapter("Dahoas/synthetic-instruct-gptj-pairwise", prompt_chosen_rejected, "Dahoas/synthetic-instruct-gptj-pairwise"),
        Adapter("yitingxie/rlhf-reward-datasets", yitingxie_rlhf_reward, "yitingxie/rlhf-reward-datasets", eval_split="test"),
        Adapter("openai/webgpt_comparisons", webgpt_comparisons, "openai/webgpt_comparisons"),
        Adapter("stanfordnlp/SHP", stanford_shp, "stanfordnlp/SHP", eval_split="validation"),
        Adapter(
            "pvduy/sharegpt_alpaca_oa_vicuna_format", sharegpt_vicuna, "pvduy/sharegpt_alpaca_oa_vicuna_format",
            eval_split="test", pairwise=False,
        ),
        Adapter("wangrui6/Zhihu-KOL", instruction_response, "wangrui6/Zhihu-KOL", pairwise=False),
        Adapter("Cohere/miracl-zh-queries-22-12", miracl_queries, "Cohere/miracl-zh-queries-22-12", eval_split="dev"),
        Adapter("Hello-SimpleAI/HC3-Chinese", hc3_chinese, "Hello-SimpleAI/HC3-Chinese", hub_config="all", pairwise=False),
        Adapter("mkqa-Chinese", mkqa("zh_cn"), "mkqa", pairwise=False),
        Adapter("mkqa-Japanese", mkqa("ja"), "mkqa", pairwise=False),
        Adapter("Cohere/miracl-ja-queries-22-12", miracl_queries, "Cohere/miracl-ja-queries-22-12", eval_split="dev"),
        Adapter("lmqg/qg_jaquad", qg_jaquad, "lmqg/qg_jaquad", eval_split="validation", pairwise=False),
        Adapter("lmqg/qag_jaquad", qag_jaquad, "lmqg/qag_jaquad", eval_split="validation", pairwise=False),
        # Local formats (read from JSON/JSONL files or directories; see docs/data.md).
        Adapter("hh", hh_dialogues),
        Adapter("pairwise", prompt_chosen_rejected),
        Adapter("sft", prompt_response, pairwise=False),
    ]
}


def detect_local_format(row: dict) -> Adapter:
    """Pick a generic adapter from the fields of a local file's first record."""
    fields = set(row)
    if {"prompt", "chosen", "rejected"} <= fields:
        return ADAPTERS["pairwise"]
    if {"chosen", "rejected"} <= fields:
        return ADAPTERS["hh"]
    if "prompt" in fields and fields & {"response", "chosen"}:
        return ADAPTERS["sft"]
    raise ValueError(
        f"cannot tell the format from the fields {sorted(fields)}: expected chosen+rejected (HH dialogues), "
        "prompt+chosen+rejected (pairs) or prompt+response (SFT); or name it as '<format>:<path>'"
    )
