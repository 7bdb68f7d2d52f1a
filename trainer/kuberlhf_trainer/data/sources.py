"""Loading one dataset entry of `data.datasets` into train and eval `Sample` lists.

An entry is one of:
  builtin:sort                    the synthetic task shipped with the package
  Dahoas/rm-static                a supported hub dataset (loaded with `datasets`)
  Dahoas/rm-static:/data/rm       a local copy of a supported dataset, read with its adapter
  hh:./pairs.jsonl                a local file or directory in a named generic format
  ./pairs.jsonl                   a local file or directory, format told from its fields
  org/other-dataset               any other hub dataset whose fields match a generic format

Every problem names its source: `file:line` for local JSON, `dataset [split] record i` otherwise.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional

from ..config import DataSettings
from . import synthetic
from .adapters import ADAPTERS, Adapter, detect_local_format
from .records import DataFormatError, Sample

EVAL_FRACTION = 0.1  # carved out of train when a dataset has no evaluation split
_SPLIT_FILES = {"train": ("train",), "eval": ("eval", "test", "validation", "valid", "dev")}


@dataclass
class LoadedDataset:
    name: str
    train: list[Sample]
    eval: list[Sample]
    fingerprint: str  # changes whenever the content or how it was read changes


@dataclass(frozen=True)
class _Row:
    where: str  # "file.jsonl:12" or "Dahoas/rm-static [train] record 7"
    data: Any


# -- entry points --------------------------------------------------------------------------------


def load_dataset_entry(entry: str, settings: DataSettings, seed: int) -> LoadedDataset:
    """Resolve and load one `data.datasets` entry."""
    if entry == synthetic.NAME:
        return _load_synthetic(settings, seed)
    adapter, location = resolve_entry(entry)
    if location is not None:
        train_rows, eval_rows, fingerprint = _read_local(location)
    else:
        train_rows, eval_rows, fingerprint = _read_hub(adapter.hub_path if adapter else entry, adapter)
    if adapter is None:
        first = next(iter(train_rows), None)
        if first is None:
            raise DataFormatError(f"{entry}: no records")
        try:
            adapter = detect_local_format(first.data) if isinstance(first.data, dict) else None
        except ValueError as error:
            raise DataFormatError(f"{first.where}: {error}") from None
    train = _to_samples(train_rows, adapter, settings.max_samples_per_dataset, seed)
    evaluation = _to_samples(eval_rows, adapter, settings.max_samples_per_dataset, seed)
    if not eval_rows:
        train, evaluation = carve_eval(train, seed)
    fingerprint = _hash(fingerprint, adapter.name, str(settings.max_samples_per_dataset), str(seed))
    return LoadedDataset(entry, train, evaluation, fingerprint)


def resolve_entry(entry: str) -> tuple[Optional[Adapter], Optional[Path]]:
    """(adapter or None to auto-detect, local path or None for the hub)."""
    name, sep, rest = entry.partition(":")
    if sep and name in ADAPTERS:
        return ADAPTERS[name], Path(rest).expanduser()
    if entry in ADAPTERS and ADAPTERS[entry].hub_path:
        return ADAPTERS[entry], None
    if entry in ADAPTERS:
        raise DataFormatError(f"'{entry}' is a local format: write '{entry}:<path to file or directory>'")
    path = Path(entry).expanduser()
    if path.exists():
        return None, path
    if entry.startswith((".", "/", "~")) or entry.endswith((".json", ".jsonl")):
        raise DataFormatError(f"dataset file or directory not found: {entry}")
    return None, None  # any other hub dataset, format detected from its fields


def carve_eval(samples: list[Sample], seed: int) -> tuple[list[Sample], list[Sample]]:
    """Split off a deterministic tenth for evaluation (datasets without an eval split)."""
    order = list(range(len(samples)))
    random.Random(f"eval-{seed}").shuffle(order)
    cut = max(1, int(len(samples) * EVAL_FRACTION)) if len(samples) > 1 else 0
    return [samples[i] for i in order[cut:]], [samples[i] for i in order[:cut]]


# -- readers -------------------------------------------------------------------------------------


def _load_synthetic(settings: DataSettings, seed: int) -> LoadedDataset:
    task = settings.synthetic
    try:
        samples = synthetic.generate(task.num_examples, task.min_digits, task.max_digits, seed)
    except ValueError as error:
        raise DataFormatError(str(error)) from None
    train, evaluation = carve_eval(samples, seed)
    return LoadedDataset(synthetic.NAME, train, evaluation, _hash(synthetic.NAME, task.model_dump_json(), str(seed)))


def _read_local(path: Path) -> tuple[list[_Row], list[_Row], str]:
    if not path.exists():
        raise DataFormatError(f"dataset file or directory not found: {path}")
    if path.is_file():
        return read_json_records(path), [], _file_hash(path)
    split_files = {split: _find_split_file(path, names) for split, names in _SPLIT_FILES.items()}
    if split_files["train"]:
        train = read_json_records(split_files["train"])
        evaluation = read_json_records(split_files["eval"]) if split_files["eval"] else []
        return train, evaluation, _hash(*(_file_hash(f) for f in split_files.values() if f))
    import datasets  # a directory written by save_to_disk, or a hub snapshot (parquet, csv, ...)

    try:
        loaded = datasets.load_from_disk(str(path)) if _is_saved_dataset(path) else datasets.load_dataset(str(path))
    except Exception as error:  # datasets raises many types; the user needs the path and the reason
        raise DataFormatError(f"{path}: cannot be read as a dataset: {error}") from None
    return _rows_from_dataset_dict(loaded, str(path))


def _read_hub(hub_path: str, adapter: Optional[Adapter]) -> tuple[list[_Row], list[_Row], str]:
    import datasets

    config = adapter.hub_config if adapter else None
    try:
        loaded = datasets.load_dataset(hub_path, config)
    except Exception as error:
        known = ", ".join(a for a in ADAPTERS if ADAPTERS[a].hub_path)
        raise DataFormatError(
            f"dataset '{hub_path}' is neither a local path nor loadable from the hub ({error}). "
            f"Supported hub datasets: {known}"
        ) from None
    return _rows_from_dataset_dict(loaded, hub_path, adapter)


def _rows_from_dataset_dict(loaded: Any, name: str, adapter: Optional[Adapter] = None):
    splits = dict(loaded) if hasattr(loaded, "keys") else {"train": loaded}
    train_name = adapter.train_split if adapter else "train"
    if train_name not in splits:
        raise DataFormatError(f"{name}: no '{train_name}' split (found {sorted(splits)})")
    eval_name = adapter.eval_split if adapter else next((s for s in _SPLIT_FILES["eval"] if s in splits), None)

    def rows(split: str) -> list[_Row]:
        return [_Row(f"{name} [{split}] record {i}", row) for i, row in enumerate(splits[split])]

    fingerprint = _hash(*(getattr(splits[s], "_fingerprint", s) for s in sorted(splits)))
    return rows(train_name), rows(eval_name) if eval_name in splits else [], fingerprint


def read_json_records(path: Path) -> list[_Row]:
    """Records of a JSONL file (one object per line) or a JSON file holding a list of objects."""
    raw = path.read_bytes().removeprefix(codecs.BOM_UTF8)  # editors on Windows write a BOM
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise DataFormatError(f"{path}:{line}: not valid UTF-8 (byte {raw[error.start]:#04x}); save the file as UTF-8") from None
    if not text.strip():
        raise DataFormatError(f"{path}: the file is empty")
    if path.suffix == ".json" and text.lstrip().startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as error:
            raise DataFormatError(f"{path}:{error.lineno}: not valid JSON: {error.msg} (column {error.colno})") from None
        return [_Row(f"{path} record {i}", r) for i, r in enumerate(records)]
    rows = []
    # Split on "\n" only: str.splitlines() also splits on U+2028, U+0085 and others, which JSON
    # strings may hold unescaped (json.dumps(..., ensure_ascii=False) writes them as they are).
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            rows.append(_Row(f"{path}:{number}", json.loads(line)))
        except json.JSONDecodeError as error:
            raise DataFormatError(f"{path}:{number}: not valid JSON: {error.msg} (column {error.colno})") from None
    return rows


def _to_samples(rows: Iterable[_Row], adapter: Adapter, limit: Optional[int], seed: int) -> list[Sample]:
    rows = list(rows)
    if limit is not None and len(rows) > limit:
        random.Random(f"limit-{seed}").shuffle(rows)
        rows = rows[:limit]
    samples = []
    for row in rows:
        if not isinstance(row.data, dict):
            raise DataFormatError(f"{row.where}: expected a JSON object, got {type(row.data).__name__}")
        try:
            sample = adapter.to_sample(row.data)
        except (ValueError, TypeError, KeyError, IndexError) as error:
            raise DataFormatError(f"{row.where}: {error} (read as '{adapter.name}')") from None
        if sample is not None:
            samples.append(sample)
    return samples


# -- helpers ---------------------------------------------------------------------------------------


def _find_split_file(directory: Path, names: tuple[str, ...]) -> Optional[Path]:
    for name in names:
        for suffix in (".jsonl", ".json"):
            candidate = directory / f"{name}{suffix}"
            if candidate.is_file():
                return candidate
    return None


def _is_saved_dataset(path: Path) -> bool:
    return (path / "dataset_dict.json").exists() or (path / "dataset_info.json").exists()


def _file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _hash(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()
