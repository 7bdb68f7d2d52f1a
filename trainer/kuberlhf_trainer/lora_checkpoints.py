"""Step outputs saved as LoRA adapters (`lora.merge_on_save: false`), and loading them back.

Such an output is peft's own format, what the ecosystem loads (peft, transformers, vLLM's LoRA
serving): `adapter_config.json` naming the base model (a hub name or an absolute local path),
`adapter_model.safetensors`, the tokenizer, and for a reward model or critic its
`value_head.safetensors`. Only adapters that are the whole change can be saved this way, so the
config refuses it with `lora.only_optimize: false` (embeddings, norms and the head train too)
and for a built-in base (random weights built from a config: nothing to load the adapter onto).

Later steps and `kuberlhf chat` read an adapter output through `resolve_checkpoint`: its base
with the adapter merged, written once to a cache directory keyed by the adapter's content, so
every loader (ZeRO-3 partitioned loading, AutoConfig, chat) sees a plain Hugging Face model. A
base that is itself an adapter output is resolved first.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

log = logging.getLogger(__name__)

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
VALUE_HEAD_FILE = "value_head.safetensors"  # the scalar head of a reward model or critic (value_model.py)


def is_adapter_dir(path: str | Path) -> bool:
    path = Path(path)
    return (path / ADAPTER_CONFIG).is_file() and not (path / "config.json").is_file()


def is_checkpoint(path: str | Path) -> bool:
    """A step output a later step can load: a Hugging Face model or a LoRA adapter output."""
    return (Path(path) / "config.json").is_file() or is_adapter_dir(path)


def cache_root() -> Path:
    """Where merged adapter outputs are kept: $KUBERLHF_CACHE_DIR, else ~/.cache/kuberlhf."""
    return Path(os.environ.get("KUBERLHF_CACHE_DIR") or Path.home() / ".cache" / "kuberlhf") / "merged-lora"


def resolve_checkpoint(name_or_path: str) -> str:
    """`name_or_path` itself, unless it is a LoRA adapter output: then a directory holding its
    base with the adapter merged (made once, by one process at a time, then reused)."""
    if not is_adapter_dir(name_or_path):
        return name_or_path
    source = Path(name_or_path)
    target = cache_root() / _content_key(source)
    if (target / "config.json").is_file():
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f"{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the other processes of the step wait, then reuse it
        if not (target / "config.json").is_file():
            _merge_into(source, target)
    return str(target)


def _content_key(source: Path) -> str:
    """The adapter's files, and which base they apply to (a local base's weight files by size and
    time, not content: a rewritten base makes a new key without reading gigabytes)."""
    digest = hashlib.sha256()
    for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS, VALUE_HEAD_FILE):
        if (source / name).is_file():
            digest.update(name.encode() + (source / name).read_bytes())
    base = Path(json.loads((source / ADAPTER_CONFIG).read_text()).get("base_model_name_or_path") or "")
    for weights in sorted(base.glob("*.safetensors")):
        stat = weights.stat()
        digest.update(f"{weights}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:24]


def _merge_into(source: Path, target: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModel, AutoModelForCausalLM

    base = json.loads((source / ADAPTER_CONFIG).read_text()).get("base_model_name_or_path")
    if not base:
        raise ValueError(f"{source / ADAPTER_CONFIG} names no base model (base_model_name_or_path)")
    has_head = (source / VALUE_HEAD_FILE).is_file()  # a reward model or critic: the backbone alone
    log.info("Merging the LoRA adapter output %s into its base %s; cached in %s", source, base, target)
    model = (AutoModel if has_head else AutoModelForCausalLM).from_pretrained(resolve_checkpoint(base))
    merged = PeftModel.from_pretrained(model, source).merge_and_unload()
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    merged.save_pretrained(staging, safe_serialization=True)
    for extra in source.iterdir():  # the tokenizer, the value head, anything else beside the adapter
        if extra.is_file() and extra.name not in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
            shutil.copy2(extra, staging / extra.name)
    os.replace(staging, target)


def base_reference(name_or_path: str) -> str:
    """How an adapter output names its base: local paths made absolute (so that it loads from
    anywhere the storage is mounted at the same place), hub names as they are."""
    path = Path(name_or_path)
    return str(path.resolve()) if path.exists() else name_or_path
