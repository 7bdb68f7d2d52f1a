#!/usr/bin/env python3
"""Step 3 with the `hf` and `hybrid` generation engines, same workload, side by side.

    python bench/step3_engines.py                      # CPU: OPT-30M-shaped actor, ZeRO-3, 1 and 2 processes
    python bench/step3_engines.py --actor builtin:opt-30m --nproc 2 --iterations 4 --answer-len 64
    # on a GPU, DeepSpeed-Chat's benchmark shapes: OPT-1.3B actor, OPT-350M reward model, prompts up
    # to 256 tokens (the HH sample), 256-token answers, bf16, OPT's vocabulary size:
    python bench/step3_engines.py --device cuda --actor builtin:opt-1.3b --reward builtin:opt-350m \
        --zero-stage 2 --nproc 1 --data hh --prompt-len 256 --answer-len 256 --vocab-size 50272 --batch 32

Actor and reward model have random weights (throughput does not depend on them), built from
configs; prompts come from the built-in task; answers run to `--answer-len` tokens unless the
model happens to emit EOS (identical for both engines: same seed, same samples). Each run is
`kuberlhf step ppo` under torchrun; the figures are the step's own `throughput` summary
(evaluation excluded). Prints figures, asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = {"sort": "builtin:sort", "hh": f"hh:{REPO.parent / 'shared' / 'data' / 'hh-rlhf-harmless-test-1000.jsonl'}"}


def make_checkpoints(root: Path, actor: str, reward: str, vocab_size: int = 0) -> tuple[Path, Path]:
    import torch
    from transformers import AutoModel, AutoModelForCausalLM

    from kuberlhf_trainer.models import builtin_config, char_tokenizer
    from kuberlhf_trainer.value_model import ValueModel, save_value_model

    tokenizer = char_tokenizer()
    torch.manual_seed(0)
    actor_dir, reward_dir = root / "actor", root / "reward"
    vocab = max(vocab_size, len(tokenizer))  # a real vocabulary's size costs what it costs in the LM head
    AutoModelForCausalLM.from_config(builtin_config(actor, vocab, tokenizer)).save_pretrained(actor_dir)
    value = ValueModel(AutoModel.from_config(builtin_config(reward, vocab, tokenizer)))
    save_value_model(value.backbone, value.v_head.weight, reward_dir)
    for directory in (actor_dir, reward_dir):
        tokenizer.save_pretrained(directory)
    return actor_dir, reward_dir


def run(root: Path, args, engine: str, nproc: int, checkpoints: tuple[Path, Path]) -> dict:
    from kuberlhf_trainer.config import build_config, dump_config
    from kuberlhf_trainer.engine import free_port

    out = root / f"{engine}-{nproc}"
    config = build_config({
        "actor_model": {"name_or_path": args.actor, "zero_stage": args.zero_stage},
        "reward_model": {"name_or_path": args.reward, "zero_stage": args.zero_stage},
        "data": {"datasets": [DATA.get(args.data, args.data)], "synthetic": {"num_examples": 2000}},
        "ppo": {
            "actor_checkpoint": str(checkpoints[0]), "reward_checkpoint": str(checkpoints[1]),
            "per_device_generation_batch_size": args.batch, "per_device_training_batch_size": args.batch,
            "max_answer_seq_len": args.answer_len, "max_prompt_seq_len": args.prompt_len,
            "max_steps": args.iterations, "num_warmup_steps": 0,
            "eval_prompts": 8, "generation": {"engine": engine},
        },
        "output_dir": str(out), "device": args.device, "steps": ["ppo"], "dtype": args.dtype,
        "deployment_type": "single_node" if nproc > 1 else "single_gpu", "nproc_per_node": nproc,
    })
    (out).mkdir(parents=True, exist_ok=True)
    config_file = out / "config.yaml"
    config_file.write_text(dump_config(config))
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", f"--master_port={free_port()}",
               "--module", "kuberlhf_trainer", "step", "ppo", "--config", str(config_file)]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise SystemExit(f"{engine} x{nproc} failed:\n{result.stderr[-3000:]}")
    summary = json.loads((out / "ppo" / "summary.json").read_text())
    return summary["throughput"] | {"breakdown": summary["time_breakdown_seconds"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--actor", default="builtin:opt-30m")
    parser.add_argument("--reward", default="builtin:opt-small")
    parser.add_argument("--zero-stage", type=int, default=3)
    parser.add_argument("--nproc", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8, help="prompts per process per generation batch")
    parser.add_argument("--answer-len", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="auto", help="auto: fp32 on CPU, bf16 on recent GPUs")
    parser.add_argument("--data", default="sort",
                        help="prompts: 'sort' (the sorting task), 'hh' (the HH sample in ../shared) or a data.datasets entry")
    parser.add_argument("--prompt-len", type=int, default=64, help="longest prompt in tokens (longer ones are skipped)")
    parser.add_argument("--vocab-size", type=int, default=0, help="build the models with this vocabulary size")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="kuberlhf-bench-"))
    checkpoints = make_checkpoints(root, args.actor, args.reward, args.vocab_size)
    print(f"actor {args.actor}, reward {args.reward}, ZeRO-{args.zero_stage}, {args.batch} prompts/process, "
          f"answers up to {args.answer_len} tokens, {args.iterations} iterations, device {args.device}")
    header = f"{'processes':>9} {'engine':>7} {'gen tok/s':>10} {'train tok/s':>11} {'eff TFLOP/s':>11} {'s/iter':>7} {'peak MB':>8}"
    print(header)
    for nproc in args.nproc:
        figures = {engine: run(root, args, engine, nproc, checkpoints) for engine in ("hf", "hybrid")}
        for engine, f in figures.items():
            print(f"{nproc:>9} {engine:>7} {f['generation_tokens_per_second']:>10.1f} {f['training_tokens_per_second']:>11.1f} "
                  f"{f['effective_tflops_per_device']:>11.5f} {f['seconds_per_iteration']:>7.2f} {f['peak_memory_mb']:>8.0f}")
        hf, hybrid = figures["hf"], figures["hybrid"]
        print(f"{nproc:>9} {'ratio':>7} {hybrid['generation_tokens_per_second'] / hf['generation_tokens_per_second']:>9.1f}x "
              f"{'':>11} {'':>11} {hf['seconds_per_iteration'] / hybrid['seconds_per_iteration']:>6.1f}x "
              "(hybrid over hf: generation speed; whole-iteration speed)")
        for engine, f in figures.items():
            split = ", ".join(f"{k} {v:.1f}s" for k, v in f["breakdown"].items())
            print(f"{'':>9} {engine:>7} time per phase: {split}")
    print(f"(outputs in {root})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
