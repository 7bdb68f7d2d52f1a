"""Pretraining text for PPO-ptx (InstructGPT eq. 2): tokenized, concatenated, cut into blocks.

Accepted: a local .txt file (the whole text), a local .json/.jsonl file of records with a
`text` field, or a hub dataset (its `text` column, else its first string column). As in
DeepSpeed-Chat, the blocks are `max_prompt_seq_len + max_answer_seq_len` tokens long and the
remainder is dropped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from .records import DataFormatError
from .sources import read_json_records


def load_texts(name: str, config_name: Optional[str] = None) -> list[str]:
    path = Path(name).expanduser()
    if path.is_file() and path.suffix == ".txt":
        return [path.read_text(encoding="utf-8")]
    if path.is_file():
        texts = []
        for row in read_json_records(path):
            if not isinstance(row.data, dict) or not isinstance(row.data.get("text"), str):
                raise DataFormatError(f"{row.where}: ppo.ptx.dataset records need a string field 'text'")
            texts.append(row.data["text"])
        return texts
    import datasets

    try:
        loaded = datasets.load_dataset(name, config_name, split="train")
    except Exception as error:  # many error types; the user needs the name and the reason
        raise DataFormatError(f"ppo.ptx.dataset: cannot load '{name}': {error}") from None
    column = "text" if "text" in loaded.column_names else loaded.column_names[0]
    return [t for t in loaded[column] if isinstance(t, str)]


def text_blocks(texts: list[str], tokenizer, block_size: int) -> list[list[int]]:
    """All texts tokenized, joined with EOS and cut into blocks of `block_size` tokens."""
    stream: list[int] = []
    for text in texts:
        stream += tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    blocks = [stream[i : i + block_size] for i in range(0, len(stream) - block_size + 1, block_size)]
    if not blocks:
        raise DataFormatError(f"ppo.ptx.dataset: fewer than {block_size} tokens of text, not one block")
    return blocks


def collate_blocks(blocks: list[list[int]], pad_id: int = 0) -> dict[str, torch.Tensor]:
    ids = torch.tensor(blocks, dtype=torch.long)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}
