"""Every dataset adapter on a local copy in that dataset's real raw schema, local file layouts,
format detection, the real HH-RLHF sample, and malformed input that must name file and line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kuberlhf_trainer.config import DataSettings
from kuberlhf_trainer.data.adapters import ADAPTERS
from kuberlhf_trainer.data.records import ASSISTANT, DataFormatError, Sample, format_prompt
from kuberlhf_trainer.data.sources import load_dataset_entry

REPO = Path(__file__).resolve().parents[2]
HH_SAMPLE = REPO.parent / "shared" / "data" / "hh-rlhf-harmless-test-1000.jsonl"
SEED = 1234


def write_jsonl(path: Path, rows: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return path


def load(entry: str, **settings) -> list[Sample]:
    """Train and eval samples of one entry together (a single file has a tenth carved out for eval)."""
    loaded = load_dataset_entry(entry, DataSettings(**settings), SEED)
    return loaded.train + loaded.eval


def by_prompt(samples: list[Sample]) -> dict[str, Sample]:
    return {s.prompt: s for s in samples}


def q(text: str) -> str:
    """The canonical single-turn prompt."""
    return f"\n\nHuman: {text}\n\nAssistant:"


# -- one case per adapter: raw rows in the hub dataset's own schema, and the samples they give -----

WEBGPT_QUOTES = {"title": ["Purring - Wikipedia"], "extract": ["Purring is a tonal fluttering sound."]}

CASES: dict[str, tuple[list[dict], list[Sample]]] = {
    "Dahoas/rm-static": (
        [
            {"prompt": "\n\nHuman: What is a good first pet?\n\nAssistant:", "response": " A goldfish.",
             "chosen": " A goldfish is easy to care for.", "rejected": " A tiger."},
            {"prompt": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: How do I boil an egg?\n\nAssistant:",
             "response": " Boil it for 8 minutes.", "chosen": " Boil it for 8 minutes.", "rejected": " Fry it."},
        ],
        [
            Sample(q("What is a good first pet?"), " A goldfish is easy to care for.", " A tiger."),
            Sample("\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: How do I boil an egg?\n\nAssistant:",
                   " Boil it for 8 minutes.", " Fry it."),
        ],
    ),
    "Dahoas/full-hh-rlhf": (
        [
            {"prompt": "\n\nHuman: Can you help me fix my bike?\n\nAssistant:", "response": " Sure, what is wrong?",
             "chosen": " Sure, what is wrong with it?", "rejected": " No."},
        ],
        [Sample(q("Can you help me fix my bike?"), " Sure, what is wrong with it?", " No.")],
    ),
    "Dahoas/synthetic-instruct-gptj-pairwise": (
        [
            {"prompt": "Suggest a name for a grey cat.", "chosen": "Smokey is a fitting name.", "rejected": "Dog."},
            {"prompt": "List two primary colours.", "chosen": " Red and blue. ", "rejected": "Green grass."},
        ],
        [
            Sample(q("Suggest a name for a grey cat."), " Smokey is a fitting name.", " Dog."),
            Sample(q("List two primary colours."), " Red and blue.", " Green grass."),
        ],
    ),
    "yitingxie/rlhf-reward-datasets": (
        [
            # The prompt stops before the last "Assistant:"; both answers repeat that marker.
            {"prompt": "\n\nHuman: Why is the sky blue?\n\n", "chosen": "Assistant: Rayleigh scattering.",
             "rejected": "Assistant: Because it is."},
            {"prompt": "\n\nHuman: Hi\n\nAssistant: Hello.\n\nHuman: Name a fruit.\n\n",
             "chosen": "Assistant: An apple.", "rejected": "Assistant: A carrot."},
        ],
        [
            Sample(q("Why is the sky blue?"), " Rayleigh scattering.", " Because it is."),
            Sample("\n\nHuman: Hi\n\nAssistant: Hello.\n\nHuman: Name a fruit.\n\nAssistant:", " An apple.", " A carrot."),
        ],
    ),
    "openai/webgpt_comparisons": (
        [
            {"question": {"dataset": "eli5", "id": "q1", "full_text": "Why do cats purr?"},
             "quotes_0": WEBGPT_QUOTES, "answer_0": "Cats purr to communicate [1].", "tokens_0": [], "score_0": -1.0,
             "quotes_1": WEBGPT_QUOTES, "answer_1": "Purring is a vibration of the larynx [1][2], which may aid healing [3, 4].",
             "tokens_1": [], "score_1": 1.0},
            {"question": {"dataset": "eli5", "id": "q2", "full_text": "Why is ice slippery?"},
             "quotes_0": WEBGPT_QUOTES, "answer_0": "A thin film of water forms on top [1].", "tokens_0": [], "score_0": 0.5,
             "quotes_1": WEBGPT_QUOTES, "answer_1": "It is cold.", "tokens_1": [], "score_1": -0.5},
            # A tie says nothing about which answer is better: skipped.
            {"question": {"dataset": "eli5", "id": "q3", "full_text": "Why do we yawn?"},
             "quotes_0": WEBGPT_QUOTES, "answer_0": "Nobody knows.", "tokens_0": [], "score_0": 0.0,
             "quotes_1": WEBGPT_QUOTES, "answer_1": "To cool the brain [1].", "tokens_1": [], "score_1": 0.0},
        ],
        [
            Sample(q("Why do cats purr?"), " Purring is a vibration of the larynx, which may aid healing.",
                   " Cats purr to communicate."),
            Sample(q("Why is ice slippery?"), " A thin film of water forms on top.", " It is cold."),
        ],
    ),
    "stanfordnlp/SHP": (
        [
            {"post_id": "p1", "domain": "askscience_train", "upvote_ratio": 0.98, "history": "Why is water wet?",
             "c_root_id_A": "a1", "c_root_id_B": "b1", "created_at_utc_A": 1, "created_at_utc_B": 2,
             "score_A": 40, "score_B": 3, "human_ref_A": "Cohesion and adhesion.", "human_ref_B": "It isn't.",
             "labels": 1, "seconds_difference": 1.0, "score_ratio": 13.3},
            {"post_id": "p2", "domain": "askculinary_train", "upvote_ratio": 0.9, "history": "How salty should pasta water be?",
             "c_root_id_A": "a2", "c_root_id_B": "b2", "created_at_utc_A": 5, "created_at_utc_B": 3,
             "score_A": 2, "score_B": 25, "human_ref_A": "Like the sea.", "human_ref_B": "About 1% salt by weight.",
             "labels": 0, "seconds_difference": 2.0, "score_ratio": 12.5},
        ],
        [
            Sample(q("Why is water wet?"), " Cohesion and adhesion.", " It isn't."),
            Sample(q("How salty should pasta water be?"), " About 1% salt by weight.", " Like the sea."),
        ],
    ),
    "pvduy/sharegpt_alpaca_oa_vicuna_format": (
        [
            {"prompt": "USER: Hi there ASSISTANT: Hello! How can I help?</s>USER: Tell me a joke. ASSISTANT:",
             "label": "Why did the chicken cross the road?</s>"},
            {"prompt": "USER: What is 2+2? ASSISTANT:", "label": " 4"},
        ],
        [
            Sample("\n\nHuman: Hi there\n\nAssistant: Hello! How can I help?\n\nHuman: Tell me a joke.\n\nAssistant:",
                   " Why did the chicken cross the road?"),
            Sample(q("What is 2+2?"), " 4"),
        ],
    ),
    "wangrui6/Zhihu-KOL": (
        [
            {"INSTRUCTION": "如何学习编程？", "RESPONSE": "多写代码，多读代码。", "SOURCE": "Zhihu",
             "METADATA": "{\"question_id\": 1, \"upvotes\": \"12\"}"},
        ],
        [Sample(q("如何学习编程？"), " 多写代码，多读代码。")],
    ),
    "Cohere/miracl-zh-queries-22-12": (
        [
            {"query_id": "0", "query": "北京在哪里？",
             "positive_passages": [{"docid": "1#0", "title": "北京", "text": "北京是中国的首都。"}],
             "negative_passages": [{"docid": "2#0", "title": "上海", "text": "上海是一个城市。"}]},
            {"query_id": "1", "query": "长城有多长？",
             "positive_passages": [{"docid": "3#0", "title": "长城", "text": "长城长两万多公里。"}],
             "negative_passages": []},
        ],
        [
            Sample(q("北京在哪里？"), " 北京是中国的首都。", " 上海是一个城市。"),
            Sample(q("长城有多长？"), " 长城长两万多公里。"),  # no negative passage: a demonstration only
        ],
    ),
    "Cohere/miracl-ja-queries-22-12": (
        [
            {"query_id": "0", "query": "富士山の高さは？",
             "positive_passages": [{"docid": "1#0", "title": "富士山", "text": "富士山の標高は3776メートルです。"}],
             "negative_passages": [{"docid": "2#0", "title": "東京", "text": "東京は日本の首都です。"}]},
        ],
        [Sample(q("富士山の高さは？"), " 富士山の標高は3776メートルです。", " 東京は日本の首都です。")],
    ),
    "Hello-SimpleAI/HC3-Chinese": (
        [
            {"id": "0", "question": "什么是机器学习？", "human_answers": ["让计算机从数据中学习。"],
             "chatgpt_answers": ["机器学习是人工智能的一个分支。"]},
            {"id": "1", "question": "没有人回答的问题", "human_answers": [], "chatgpt_answers": ["……"]},
        ],
        [Sample(q("什么是机器学习？"), " 让计算机从数据中学习。")],
    ),
    "mkqa-Chinese": (
        [
            {"example_id": 1, "query": "who wrote hamlet",
             "queries": {"en": "who wrote hamlet", "zh_cn": "谁写了哈姆雷特", "ja": "ハムレットを書いたのは誰"},
             "answers": {"en": [{"type": 0, "entity": "Q692", "text": "William Shakespeare", "aliases": []}],
                         "zh_cn": [{"type": 0, "entity": "Q692", "text": "威廉·莎士比亚", "aliases": ["莎士比亚"]}],
                         "ja": [{"type": 0, "entity": "Q692", "text": "ウィリアム・シェイクスピア", "aliases": []}]}},
            # MKQA has unanswerable questions: no text. Skipped.
            {"example_id": 2, "query": "what will I eat tomorrow",
             "queries": {"en": "what will I eat tomorrow", "zh_cn": "我明天吃什么", "ja": "明日何を食べる"},
             "answers": {"en": [{"type": 2, "entity": "", "text": None, "aliases": []}],
                         "zh_cn": [{"type": 2, "entity": "", "text": None, "aliases": []}],
                         "ja": [{"type": 2, "entity": "", "text": None, "aliases": []}]}},
        ],
        [Sample(q("谁写了哈姆雷特"), " 威廉·莎士比亚")],
    ),
    "mkqa-Japanese": (
        [
            {"example_id": 1, "query": "who wrote hamlet",
             "queries": {"en": "who wrote hamlet", "zh_cn": "谁写了哈姆雷特", "ja": "ハムレットを書いたのは誰"},
             "answers": {"en": [{"type": 0, "entity": "Q692", "text": "William Shakespeare", "aliases": []}],
                         "zh_cn": [{"type": 0, "entity": "Q692", "text": "威廉·莎士比亚", "aliases": []}],
                         "ja": [{"type": 0, "entity": "Q692", "text": "ウィリアム・シェイクスピア", "aliases": []}]}},
            {"example_id": 3, "query": "is it raining",
             "queries": {"en": "is it raining", "zh_cn": "下雨了吗", "ja": "雨が降っていますか"},
             "answers": {"en": [{"type": 2, "entity": "", "text": "", "aliases": []}],
                         "zh_cn": [{"type": 2, "entity": "", "text": "", "aliases": []}],
                         "ja": [{"type": 2, "entity": "", "text": "", "aliases": []}]}},
        ],
        [Sample(q("ハムレットを書いたのは誰"), " ウィリアム・シェイクスピア")],
    ),
    "lmqg/qg_jaquad": (
        [
            {"answer": "東京", "paragraph_question": "question: 日本の首都は？, context: 東京は日本の首都である。",
             "question": "日本の首都は？", "sentence": "東京は日本の首都である。", "paragraph": "東京は日本の首都である。人口が多い。",
             "sentence_answer": "<hl> 東京 <hl>は日本の首都である。", "paragraph_answer": "<hl> 東京 <hl>は日本の首都である。人口が多い。",
             "paragraph_sentence": "<hl> 東京は日本の首都である。 <hl>人口が多い。"},
        ],
        [Sample(q("日本の首都は？"), " 東京は日本の首都である。")],
    ),
    "lmqg/qag_jaquad": (
        [
            {"paragraph": "富士山は日本で一番高い山である。", "questions": ["日本で一番高い山は？", "富士山はどこにある？"],
             "answers": ["富士山", "日本"], "questions_answers": "question: 日本で一番高い山は？, answer: 富士山"},
        ],
        [Sample(q("日本で一番高い山は？"), " 富士山は日本で一番高い山である。")],
    ),
    "hh": (
        [
            {"chosen": "\n\nHuman: How do I bake bread?\n\nAssistant: Mix flour, water, yeast and salt, then bake.",
             "rejected": "\n\nHuman: How do I bake bread?\n\nAssistant: Buy it."},
            {"chosen": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Tell me a secret.\n\nAssistant: I have none.",
             "rejected": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Tell me a secret.\n\nAssistant:  Your password."},
        ],
        [
            Sample(q("How do I bake bread?"), " Mix flour, water, yeast and salt, then bake.", " Buy it."),
            Sample("\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Tell me a secret.\n\nAssistant:", " I have none.",
                   " Your password."),
        ],
    ),
    "pairwise": (
        [
            {"prompt": "Human: Name a colour. Assistant:", "chosen": "Blue.", "rejected": "Seven."},
            {"prompt": "What is the capital of France?", "chosen": " Paris.", "rejected": " Lyon."},
        ],
        [
            Sample(q("Name a colour."), " Blue.", " Seven."),
            Sample(q("What is the capital of France?"), " Paris.", " Lyon."),
        ],
    ),
    "sft": (
        [
            {"prompt": "Say hello.", "response": "Hello!"},
            {"prompt": "Count to three.", "chosen": "1, 2, 3."},
        ],
        [Sample(q("Say hello."), " Hello!"), Sample(q("Count to three."), " 1, 2, 3.")],
    ),
}


def test_every_adapter_has_a_case():
    assert set(CASES) == set(ADAPTERS)


@pytest.mark.parametrize("name", sorted(CASES))
def test_adapter_reads_its_raw_schema(name, tmp_path):
    rows, expected = CASES[name]
    path = write_jsonl(tmp_path / "raw.jsonl", rows)
    samples = load(f"{name}:{path}")
    assert by_prompt(samples) == by_prompt(expected)
    assert len(samples) == len(expected)  # skipped rows (ties, unanswerable) are not loaded
    for sample in samples:
        assert sample.prompt.startswith("\n\nHuman: ") and sample.prompt.endswith(ASSISTANT)
        for answer in (sample.chosen, sample.rejected):
            if answer is not None:
                assert answer.startswith(" ") and not answer.startswith("  ") and answer == answer.rstrip()
        assert sample.is_pair == (sample.rejected is not None)


@pytest.mark.parametrize("name", sorted(n for n in CASES if not ADAPTERS[n].pairwise))
def test_sft_only_adapters_give_no_pairs(name, tmp_path):
    path = write_jsonl(tmp_path / "raw.jsonl", CASES[name][0])
    assert not any(s.is_pair for s in load(f"{name}:{path}"))


# Splits as DeepSpeed-Chat's raw_datasets.py reads them from the hub (None: carve a tenth of train).
DSCHAT_EVAL_SPLITS = {
    "Dahoas/rm-static": "test", "Dahoas/full-hh-rlhf": "test", "Dahoas/synthetic-instruct-gptj-pairwise": None,
    "yitingxie/rlhf-reward-datasets": "test", "openai/webgpt_comparisons": None, "stanfordnlp/SHP": "validation",
    "pvduy/sharegpt_alpaca_oa_vicuna_format": "test", "wangrui6/Zhihu-KOL": None,
    "Cohere/miracl-zh-queries-22-12": "dev", "Hello-SimpleAI/HC3-Chinese": None, "mkqa-Chinese": None,
    "mkqa-Japanese": None, "Cohere/miracl-ja-queries-22-12": "dev", "lmqg/qg_jaquad": "validation",
    "lmqg/qag_jaquad": "validation",
}


def test_hub_datasets_are_read_from_deepspeed_chats_splits():
    hub = {name: a for name, a in ADAPTERS.items() if a.hub_path}
    assert set(hub) == set(DSCHAT_EVAL_SPLITS)
    for name, adapter in hub.items():
        assert (adapter.train_split, adapter.eval_split) == ("train", DSCHAT_EVAL_SPLITS[name]), name
    assert ADAPTERS["mkqa-Chinese"].hub_path == ADAPTERS["mkqa-Japanese"].hub_path == "mkqa"
    assert ADAPTERS["Hello-SimpleAI/HC3-Chinese"].hub_config == "all"


def test_format_prompt_normalises_every_style():
    expected = q("Hi?")
    for raw in ("Hi?", "  Hi?  ", "Human: Hi?", " Human: Hi? Assistant:", "\n\nHuman: Hi?\n\nAssistant:",
                "Human: Hi?\nAssistant: ", "\n\nHuman: Hi?\n\nAssistant:\n"):
        assert format_prompt(raw) == expected, repr(raw)


# -- local layouts and format detection -----------------------------------------------------------

PAIRS = [{"prompt": f"Question {i}?", "chosen": f"Answer {i}.", "rejected": "No."} for i in range(20)]


def test_directory_with_train_and_test_files(tmp_path):
    write_jsonl(tmp_path / "data" / "train.jsonl", PAIRS[:15])
    write_jsonl(tmp_path / "data" / "test.jsonl", PAIRS[15:])
    loaded = load_dataset_entry(str(tmp_path / "data"), DataSettings(), SEED)
    assert {s.prompt for s in loaded.train} == {q(f"Question {i}?") for i in range(15)}
    assert {s.prompt for s in loaded.eval} == {q(f"Question {i}?") for i in range(15, 20)}


def test_named_format_on_a_directory(tmp_path):
    rows, expected = CASES["stanfordnlp/SHP"]
    write_jsonl(tmp_path / "shp" / "train.jsonl", rows[:1])
    write_jsonl(tmp_path / "shp" / "validation.jsonl", rows[1:])
    loaded = load_dataset_entry(f"stanfordnlp/SHP:{tmp_path / 'shp'}", DataSettings(), SEED)
    assert (loaded.train, loaded.eval) == ([expected[0]], [expected[1]])


def test_json_list_file(tmp_path):
    path = tmp_path / "pairs.json"
    path.write_text(json.dumps(PAIRS, indent=2))
    assert len(load(str(path))) == 20


def test_a_file_without_eval_split_carves_a_tenth(tmp_path):
    loaded = load_dataset_entry(str(write_jsonl(tmp_path / "p.jsonl", PAIRS)), DataSettings(), SEED)
    assert (len(loaded.train), len(loaded.eval)) == (18, 2)
    assert not {s.prompt for s in loaded.train} & {s.prompt for s in loaded.eval}


def test_max_samples_per_dataset(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", PAIRS)
    assert len(load(str(path), max_samples_per_dataset=5)) == 5


def test_dataset_saved_with_save_to_disk(tmp_path):
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_list(PAIRS).save_to_disk(str(tmp_path / "one"))
    assert len(load(str(tmp_path / "one"))) == 20

    rows, expected = CASES["Cohere/miracl-zh-queries-22-12"]
    datasets.DatasetDict(
        {"train": datasets.Dataset.from_list(rows[:1]), "dev": datasets.Dataset.from_list(rows[1:])}
    ).save_to_disk(str(tmp_path / "miracl"))
    loaded = load_dataset_entry(f"Cohere/miracl-zh-queries-22-12:{tmp_path / 'miracl'}", DataSettings(), SEED)
    assert (loaded.train, loaded.eval) == ([expected[0]], [expected[1]])


@pytest.mark.parametrize(
    "rows,adapter_name",
    [
        (CASES["pairwise"][0], "pairwise"),
        (CASES["hh"][0], "hh"),
        (CASES["sft"][0][:1], "sft"),
        (CASES["Dahoas/rm-static"][0], "pairwise"),  # prompt/response/chosen/rejected
    ],
)
def test_format_is_detected_from_the_fields(rows, adapter_name, tmp_path):
    path = write_jsonl(tmp_path / "auto.jsonl", rows)
    assert by_prompt(load(str(path))) == by_prompt(load(f"{adapter_name}:{path}"))


def test_undetectable_format_says_how_to_name_it(tmp_path):
    path = write_jsonl(tmp_path / "odd.jsonl", [{"question": "q", "answer": "a"}])
    with pytest.raises(DataFormatError) as caught:
        load(str(path))
    message = str(caught.value)
    assert f"{path}:1:" in message and "['answer', 'question']" in message and "<format>:<path>" in message


def test_fingerprint_follows_content_not_location(tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", PAIRS)
    b = write_jsonl(tmp_path / "b.jsonl", PAIRS)
    fingerprint = lambda entry: load_dataset_entry(entry, DataSettings(), SEED).fingerprint  # noqa: E731
    assert fingerprint(str(a)) == fingerprint(str(b))
    assert fingerprint(str(a)) != fingerprint(f"sft:{a}")  # read differently
    write_jsonl(b, PAIRS[:-1])
    assert fingerprint(str(a)) != fingerprint(str(b))


# -- the real HH-RLHF sample --------------------------------------------------------------------


def test_real_hh_sample_loads_every_pair():
    samples = load(str(HH_SAMPLE))
    assert len(samples) == 1000 and all(s.is_pair for s in samples)
    assert all(s.prompt.startswith("\n\nHuman: ") and s.prompt.endswith(ASSISTANT) for s in samples)
    assert all(s.chosen.startswith(" ") and s.rejected.startswith(" ") for s in samples)
    assert sum(s.chosen != s.rejected for s in samples) == 1000
    first = json.loads(HH_SAMPLE.read_text(encoding="utf-8").split("\n", 1)[0])
    words = lambda text: text.split()  # noqa: E731 - the answer's own spacing is normalised
    assert [words(s.prompt_and_chosen) for s in samples].count(words(first["chosen"])) == 1
    assert by_prompt(load(f"hh:{HH_SAMPLE}")) == by_prompt(samples)


# -- malformed input: file and line, and what is wrong ---------------------------------------------


def bad_file(tmp_path: Path, lines: list[str], name: str = "bad.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


GOOD = json.dumps(PAIRS[0])


def load_error(entry: str) -> str:
    with pytest.raises(DataFormatError) as caught:
        load(entry)
    return str(caught.value)


def test_broken_json_line(tmp_path):
    path = bad_file(tmp_path, [GOOD, GOOD, '{"prompt": "q", "chosen": "a", "rejected": ', GOOD])
    message = load_error(str(path))
    assert message.startswith(f"{path}:3:") and "not valid JSON" in message


def test_broken_json_list_file_names_the_line(tmp_path):
    path = tmp_path / "list.json"
    path.write_text('[\n  {"prompt": "q", "chosen": "a", "rejected": "b"},\n  {"prompt": "q2" "chosen": "a"}\n]\n')
    assert load_error(str(path)).startswith(f"{path}:3:")


def test_missing_field_names_field_and_line(tmp_path):
    path = bad_file(tmp_path, [GOOD, json.dumps({"prompt": "q", "chosen": "a"}), GOOD])
    message = load_error(f"pairwise:{path}")
    assert message.startswith(f"{path}:2:") and "missing field 'rejected'" in message


def test_missing_field_in_a_hub_schema(tmp_path):
    rows = [dict(CASES["stanfordnlp/SHP"][0][0]) for _ in range(3)]
    del rows[2]["human_ref_B"]
    path = write_jsonl(tmp_path / "shp.jsonl", rows)
    message = load_error(f"stanfordnlp/SHP:{path}")
    assert message.startswith(f"{path}:3:") and "'human_ref_B'" in message and "stanfordnlp/SHP" in message


@pytest.mark.parametrize(
    "name,row,words",
    [
        ("pairwise", {"prompt": "q", "chosen": 5, "rejected": "b"}, ["'chosen'", "string", "int"]),
        ("hh", {"chosen": ["a"], "rejected": "b"}, ["'chosen'", "string", "list"]),
        ("openai/webgpt_comparisons", {"question": "why?", "answer_0": "a", "answer_1": "b", "score_0": 1, "score_1": 0},
         ["'question'"]),
        ("openai/webgpt_comparisons", {"question": {"full_text": "q"}, "answer_0": "a", "answer_1": "b",
                                       "score_0": "1", "score_1": 0}, ["score_0"]),
        ("stanfordnlp/SHP", {"history": "q", "human_ref_A": "a", "human_ref_B": "b", "labels": 2}, ["'labels'"]),
        ("Cohere/miracl-zh-queries-22-12", {"query": "q", "positive_passages": [], "negative_passages": []},
         ["'positive_passages'"]),
        ("mkqa-Chinese", {"queries": "q", "answers": {}}, ["'queries'"]),
        ("Hello-SimpleAI/HC3-Chinese", {"question": "q", "human_answers": "a"}, ["'human_answers'"]),
        ("lmqg/qag_jaquad", {"paragraph": "p", "questions": "q"}, ["'questions'"]),
        ("pairwise", {"prompt": "   ", "chosen": "a", "rejected": "b"}, ["'prompt'", "empty"]),
        ("hh", {"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": "\n\nHuman: c\n\nAssistant: d"},
         ["differ"]),
        ("hh", {"chosen": "no turns here", "rejected": "none"}, ["Assistant"]),
    ],
)
def test_wrong_type_or_value_names_field_and_line(name, row, words, tmp_path):
    path = bad_file(tmp_path, [json.dumps(row)])
    message = load_error(f"{name}:{path}")
    assert message.startswith(f"{path}:1:")
    for word in words:
        assert word in message


def test_empty_file(tmp_path):
    path = bad_file(tmp_path, ["", "   "])
    assert "empty" in load_error(str(path)) and str(path) in load_error(str(path))


def test_non_utf8_file_names_the_line(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes((GOOD + "\n" + GOOD + "\n").encode() + '{"prompt": "café", "chosen": "a", "rejected": "b"}\n'.encode("latin-1"))
    message = load_error(str(path))
    assert message.startswith(f"{path}:3:") and "UTF-8" in message


def test_non_object_record(tmp_path):
    path = bad_file(tmp_path, [GOOD, "[1, 2]"])
    message = load_error(f"pairwise:{path}")
    assert message.startswith(f"{path}:2:") and "JSON object" in message and "list" in message


def test_non_object_first_record_when_detecting(tmp_path):
    path = bad_file(tmp_path, ['"just a string"', GOOD])
    message = load_error(str(path))
    assert message.startswith(f"{path}:1:") and "JSON object" in message


def test_utf8_bom_is_accepted(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + (GOOD + "\n").encode())
    assert len(load(str(path))) == 1


def test_line_separator_characters_inside_json_strings(tmp_path):
    # json.dumps(..., ensure_ascii=False) writes U+2028 and U+0085 raw: still one record per line.
    rows = [{"prompt": "first\u2028line", "chosen": "a\x85b", "rejected": "c"}, PAIRS[1]]
    path = write_jsonl(tmp_path / "seps.jsonl", rows)
    samples = by_prompt(load(str(path)))
    assert samples[q("first\u2028line")].chosen == " a\x85b"
    bad = bad_file(tmp_path, ["{\"prompt\": \"x\u2028y\"", GOOD], name="bad-sep.jsonl")
    assert load_error(str(bad)).startswith(f"{bad}:1:")


def test_windows_line_endings(tmp_path):
    path = tmp_path / "crlf.jsonl"
    path.write_bytes((GOOD + "\r\n" + json.dumps(PAIRS[1]) + "\r\n").encode())
    assert len(load(str(path))) == 2


@pytest.fixture
def offline(monkeypatch):
    """No network here: make every hub lookup fail at once instead of retrying."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import datasets.config
    import huggingface_hub.constants

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


@pytest.mark.timeout(60)
def test_unknown_dataset_name(offline):
    message = load_error("nobody-here/no-such-dataset")
    assert "'nobody-here/no-such-dataset'" in message and "neither a local path nor loadable" in message
    for name in ("Dahoas/rm-static", "stanfordnlp/SHP", "lmqg/qag_jaquad"):
        assert name in message


@pytest.mark.parametrize("entry", ["./no/such/pairs.jsonl", "/no/such/dir", "missing.json"])
def test_missing_local_path(entry, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    message = load_error(entry)
    assert "not found" in message and entry in message


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", ["hh", "Dahoas/rm-static"])
def test_missing_local_path_with_a_named_format(name, tmp_path, offline):
    message = load_error(f"{name}:{tmp_path / 'nope.jsonl'}")
    assert "not found" in message and str(tmp_path / "nope.jsonl") in message


def test_local_format_needs_a_path():
    assert "hh:<path" in load_error("hh")
