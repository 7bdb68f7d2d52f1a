"""From the config to each step's tokenized train/eval examples, through a content-keyed cache.

The cache key hashes everything the result depends on: each dataset's content fingerprint,
the split, the seed, the tokenizer's vocabulary and the length settings. A changed file or
setting therefore never reuses stale data (DeepSpeed-Chat's cache ignores local file edits).
Entries are written to a temporary name and renamed, so concurrent or killed writers never
leave a half-written entry; they hold only lists and strings (loaded with weights_only=True).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Callable, Optional

import torch

from ..config import RunConfig
from .sources import LoadedDataset, load_dataset_entry
from .split import StepData, split_steps
from .tokenize import PairExample, PromptExample, SFTExample, encode_pair, encode_prompt, encode_sft

log = logging.getLogger(__name__)
CACHE_FORMAT = 2  # bump when the tokenized layout changes or adapters read records differently
_EXAMPLE_TYPES = {"sft": SFTExample, "reward": PairExample, "ppo": PromptExample}


@dataclasses.dataclass
class StepExamples:
    train: list
    eval: list
    skipped: int = 0  # prompts dropped as too long (step 3)


def load_blend(config: RunConfig) -> tuple[dict[str, StepData], str]:
    """Every dataset loaded, blended and split between the steps, plus a fingerprint of it all."""
    main = [load_dataset_entry(e, config.data, config.seed) for e in config.data.datasets]
    sft_only = [load_dataset_entry(e, config.data, config.seed) for e in config.data.sft_only_datasets]
    steps = split_steps(main, sft_only, config.data.split_shares, config.seed)
    return steps, _fingerprint(main, sft_only, config)


def step_examples(
    config: RunConfig, step: str, tokenizer, barrier: Optional[Callable[[], None]] = None, is_builder: bool = True
) -> StepExamples:
    """Tokenized examples of one step. Under several processes one builds and the others wait."""
    blend, fingerprint = load_blend(config)
    key = _cache_key(config, step, tokenizer, fingerprint)
    path = config.data_cache_dir / f"{step}-{key}.pt"
    if is_builder and not path.exists():
        _atomic_save(_tokenize(config, step, tokenizer, blend[step]), path)
    if barrier is not None:
        barrier()
    loaded = torch.load(path, weights_only=True)
    example_type = _EXAMPLE_TYPES[step]
    return StepExamples(
        [example_type(**row) for row in loaded["train"]],
        [example_type(**row) for row in loaded["eval"]],
        loaded["skipped"],
    )


def _tokenize(config: RunConfig, step: str, tokenizer, data: StepData) -> dict:
    if step == "sft":
        encode = lambda s: encode_sft(tokenizer, s, config.sft.max_seq_len, config.sft.mask_prompt_loss)  # noqa: E731
    elif step == "reward":
        encode = lambda s: encode_pair(tokenizer, s, config.reward.max_seq_len)  # noqa: E731
    else:
        encode = lambda s: encode_prompt(tokenizer, s)  # noqa: E731
    train, evaluation = [encode(s) for s in data.train], [encode(s) for s in data.eval]
    skipped = 0
    if step == "ppo":  # as DeepSpeed-Chat: prompts that do not fit are skipped, not cut
        limit = config.ppo.max_prompt_seq_len
        kept = [e for e in train if len(e.prompt_ids) <= limit]
        skipped, train = len(train) - len(kept), kept
        evaluation = [e for e in evaluation if len(e.prompt_ids) <= limit]
        if skipped:
            log.warning("Skipped %d PPO prompts longer than ppo.max_prompt_seq_len=%d tokens", skipped, limit)
    return {
        "train": [dataclasses.asdict(e) for e in train],
        "eval": [dataclasses.asdict(e) for e in evaluation],
        "skipped": skipped,
    }


def tokenizer_fingerprint(tokenizer) -> str:
    """Changes whenever the tokenizer could split the same text differently. A fast tokenizer's
    whole serialisation (merges, normalizer, pre-tokenizer) counts, not only its vocabulary:
    two BPE tokenizers with one vocabulary but other merges tokenize differently."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        # Padding and truncation are call-time state that `transformers` leaves in the backend.
        whole = {k: v for k, v in json.loads(backend.to_str()).items() if k not in ("padding", "truncation")}
        vocab = json.dumps(whole, sort_keys=True)
    else:
        vocab = json.dumps(sorted(tokenizer.get_vocab().items()))
    special = json.dumps(tokenizer.special_tokens_map, sort_keys=True, default=str)
    return hashlib.sha256(f"{type(tokenizer).__name__}\x1f{vocab}\x1f{special}".encode()).hexdigest()


def _fingerprint(main: list[LoadedDataset], sft_only: list[LoadedDataset], config: RunConfig) -> str:
    parts = [d.fingerprint for d in main] + ["sft-only"] + [d.fingerprint for d in sft_only]
    parts += [config.data.data_split, str(config.seed)]
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


def _cache_key(config: RunConfig, step: str, tokenizer, fingerprint: str) -> str:
    lengths = {
        "sft": (config.sft.max_seq_len, config.sft.mask_prompt_loss),
        "reward": (config.reward.max_seq_len,),
        "ppo": (config.ppo.max_prompt_seq_len,),
    }[step]
    parts = [str(CACHE_FORMAT), step, fingerprint, tokenizer_fingerprint(tokenizer), json.dumps(lengths)]
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:20]


def _atomic_save(obj: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "wb") as file:
            torch.save(obj, file)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
