"""Writing step outputs: Hugging Face checkpoints, summaries, and the staging that keeps them whole.

A step writes into `<output_dir>/.<step>.partial/` and only renames it to `<output_dir>/<step>/`
once the checkpoint and `summary.json` are complete, so a crash never leaves a half-written
checkpoint where a good one was, and a directory with a summary is always a finished step.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional

import torch

SUMMARY = "summary.json"


# -- summaries -----------------------------------------------------------------------------------


def write_json_atomic(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(handle, "w") as file:
        json.dump(data, file, indent=2, sort_keys=False)
        file.write("\n")
    os.replace(tmp, path)


def read_summary(step_dir: Path) -> Optional[dict]:
    """The summary of a finished step, or None when the step never finished there."""
    try:
        return json.loads((step_dir / SUMMARY).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


# -- staging -------------------------------------------------------------------------------------


def staging_dir(final: Path) -> Path:
    return final.parent / f".{final.name}.partial"


def start_staging(final: Path) -> Path:
    """A fresh, empty staging directory beside `final` (leftovers of a crashed attempt go)."""
    staging = staging_dir(final)
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    return staging


def publish(staging: Path, final: Path) -> None:
    """Swap the finished staging directory into place; the old output is removed only after."""
    old = None
    if final.exists():
        old = final.parent / f".{final.name}.old-{int(time.time())}"
        os.replace(final, old)
    os.replace(staging, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# -- model weights -------------------------------------------------------------------------------


def full_state_dict(engine, zero_stage: int) -> Optional[dict[str, torch.Tensor]]:
    """The complete weights on rank 0 (None elsewhere). Under ZeRO-3 every rank must call this:
    the partitions are gathered collectively."""
    if zero_stage == 3:
        state = engine._zero3_consolidated_16bit_state_dict()  # gathers layer by layer; rank 0 keeps it
    else:
        state = engine.module.state_dict() if torch.distributed.get_rank() == 0 else None
    if state is None:
        return None
    return {name: tensor.detach().to("cpu") for name, tensor in state.items()}


def merge_lora_state_dict(state: dict[str, torch.Tensor], build_base: Callable[[], torch.nn.Module], peft_config):
    """Rebuild the peft model around `state` (on the meta device: no second copy of the weights),
    merge the adapters with peft's own arithmetic and return the plain model."""
    from peft import get_peft_model

    with torch.device("meta"):
        base = build_base()
    wrapped = get_peft_model(base, peft_config)
    wrapped.load_state_dict(state, assign=True, strict=True)
    return wrapped.merge_and_unload()


def save_pretrained_model(model: torch.nn.Module, directory: Path, state: Optional[dict] = None) -> None:
    """Safetensors weights and config in Hugging Face layout."""
    model.save_pretrained(directory, state_dict=state, safe_serialization=True)
