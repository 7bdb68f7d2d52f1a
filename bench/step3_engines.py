#!/usr/bin/env python3
"""Step 3 with the `hf` and `hybrid` generation engines (and `deepspeed` on CUDA), same workload, side by side.

    python bench/step3_engines.py                      # CPU: OPT-30M-shaped actor, ZeRO-3, 1 and 2 processes
    python bench/step3_engines.py --actor builtin:opt-30m --nproc 2 --iterations 4 --answer-len 64
    # on a GPU, DeepSpeed-Chat's benchmark shapes: OPT-1.3B actor, OPT-350M reward model, prompts up
    # to 256 tokens (the HH sample), 256-token answers, bf16, OPT's vocabulary size:
    python bench/step3_engines.py --device cuda --actor builtin:opt-1.3b --reward builtin:opt-350m \
        --zero-stage 2 --nproc 1 --data hh --prompt-len 256 --answer-len 256 --vocab-size 50272 \
        --batch 64 --train-batch 16 --gradient-checkpointing --engines hf hybrid deepspeed

Actor and reward model have random weights (throughput does not depend on them), built from
configs; prompts come from the built-in task; answers run to `--answer-len` tokens unless the
model happens to emit EOS (identical for both engines: same seed, same samples). Each run is
`kuberlhf step ppo` under torchrun; the figures are the step's own throughput summary, without
the first iteration (which compiles the decoding step and warms the device up) and without
evaluation. On CUDA it also prints the memory-bandwidth bound on generation: reading the actor's
weights once per decoded token, B tokens per step. Prints figures, asserts nothing.
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


# HBM bandwidth in GB/s of the cards we may be lent (vendor datasheets), by a part of the CUDA device name.
HBM_GB_PER_S = {"H200": 4800, "H100 NVL": 3900, "H100 PCIe": 2000, "H100": 3350, "A100-SXM4-80GB": 2039,
                "A100 80GB PCIe": 1935, "A100": 1555, "L40S": 864, "A10G": 600}


def make_checkpoints(root: Path, actor: str, reward: str, vocab_size: int, device: str) -> tuple[Path, Path, int]:
    """Random-weight actor and reward checkpoints (16-bit on CUDA, built there: a 1.3B model
    initialises in seconds on a GPU and in minutes on a CPU); returns their paths and the actor's size."""
    import torch
    from transformers import AutoModel, AutoModelForCausalLM

    from kuberlhf_trainer.models import builtin_config, char_tokenizer
    from kuberlhf_trainer.value_model import ValueModel, save_value_model

    tokenizer = char_tokenizer()
    torch.manual_seed(0)
    actor_dir, reward_dir = root / "actor", root / "reward"
    vocab = max(vocab_size, len(tokenizer))  # a real vocabulary's size costs what it costs in the LM head
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(builtin_config(actor, vocab, tokenizer), dtype=dtype)
        actor_parameters = model.num_parameters()
        model.save_pretrained(actor_dir)
        del model
        value = ValueModel(AutoModel.from_config(builtin_config(reward, vocab, tokenizer), dtype=dtype))
    save_value_model(value.backbone, value.v_head.weight, reward_dir)
    for directory in (actor_dir, reward_dir):
        tokenizer.save_pretrained(directory)
    return actor_dir, reward_dir, actor_parameters


def run(root: Path, args, engine: str, nproc: int, checkpoints: tuple[Path, Path]) -> dict:
    """One `kuberlhf step ppo` with this engine; its steady-state throughput (or an `error`)."""
    from kuberlhf_trainer.config import ConfigError, dump_config
    from kuberlhf_trainer.engine import free_port

    out = root / f"{engine}-{nproc}"
    try:
        config = _config(args, engine, nproc, checkpoints, out)
    except ConfigError as error:
        return {"error": str(error)}
    out.mkdir(parents=True, exist_ok=True)
    config_file = out / "config.yaml"
    config_file.write_text(dump_config(config))
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", f"--master_port={free_port()}",
               "--module", "kuberlhf_trainer", "step", "ppo", "--config", str(config_file)]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:  # the error lines (e.g. out of memory), or the end of the log
        errors = [line for line in result.stderr.splitlines() if "Error:" in line]
        return {"error": "\n".join(dict.fromkeys(errors)) or result.stderr[-3000:]}
    summary = json.loads((out / "ppo" / "summary.json").read_text())
    steady = summary["throughput_after_first_iteration"] or summary["throughput"]
    return steady | {"breakdown": summary["time_breakdown_seconds"]}


def _config(args, engine: str, nproc: int, checkpoints: tuple[Path, Path], out: Path):
    """The step-3 run config of one engine (ConfigError if the combination is refused)."""
    from kuberlhf_trainer.config import build_config

    return build_config({
        "actor_model": {"name_or_path": args.actor, "zero_stage": args.zero_stage,
                        "gradient_checkpointing": args.gradient_checkpointing},
        "reward_model": {"name_or_path": args.reward, "zero_stage": args.zero_stage,
                         "gradient_checkpointing": args.gradient_checkpointing},
        # every prompt to step 3: the iterations must not run out of prompts of at most --prompt-len tokens
        "data": {"datasets": [DATA.get(args.data, args.data)], "data_split": "0,0,1", "synthetic": {"num_examples": 2000}},
        "ppo": {
            "actor_checkpoint": str(checkpoints[0]), "reward_checkpoint": str(checkpoints[1]),
            "per_device_generation_batch_size": args.batch,
            "per_device_training_batch_size": args.train_batch or args.batch,
            "max_answer_seq_len": args.answer_len, "max_prompt_seq_len": args.prompt_len,
            "max_steps": args.iterations, "num_warmup_steps": 0,
            "eval_prompts": 8, "generation": {"engine": engine},
        },
        "output_dir": str(out), "device": args.device, "steps": ["ppo"], "dtype": args.dtype,
        "deployment_type": "single_node" if nproc > 1 else "single_gpu", "nproc_per_node": nproc,
    })


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--actor", default="builtin:opt-30m")
    parser.add_argument("--reward", default="builtin:opt-small")
    parser.add_argument("--engines", nargs="+", default=["hf", "hybrid"], choices=["hf", "hybrid", "deepspeed"],
                        help="the first is the baseline of the ratios")
    parser.add_argument("--zero-stage", type=int, default=3)
    parser.add_argument("--nproc", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--iterations", type=int, default=3, help="PPO iterations; the first is left out of the figures")
    parser.add_argument("--batch", type=int, default=8, help="prompts per process per generation batch")
    parser.add_argument("--train-batch", type=int, default=0, help="sequences per PPO micro-batch (default: --batch)")
    parser.add_argument("--gradient-checkpointing", action="store_true", help="for actor and critic")
    parser.add_argument("--answer-len", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="auto", help="auto: fp32 on CPU, bf16 on recent GPUs")
    parser.add_argument("--data", default="sort",
                        help="prompts: 'sort' (the sorting task), 'hh' (the HH sample in ../shared) or a data.datasets entry")
    parser.add_argument("--prompt-len", type=int, default=64, help="longest prompt in tokens (longer ones are skipped)")
    parser.add_argument("--vocab-size", type=int, default=0, help="build the models with this vocabulary size")
    parser.add_argument("--hbm-gb-per-s", type=float, default=0, help="the card's memory bandwidth (default: by its name)")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="kuberlhf-bench-"))
    *checkpoints, actor_parameters = make_checkpoints(root, args.actor, args.reward, args.vocab_size, args.device)
    print(f"actor {args.actor} ({actor_parameters / 1e6:.0f}M parameters), reward {args.reward}, ZeRO-{args.zero_stage}, "
          f"{args.batch} prompts/process, micro-batch {args.train_batch or args.batch}, answers up to {args.answer_len} "
          f"tokens, {args.iterations} iterations (first left out), device {args.device}")
    bound = generation_bound(args, actor_parameters)
    print(f"{'processes':>9} {'engine':>9} {'gen tok/s':>10} {'train tok/s':>11} {'eff TFLOP/s':>11} {'s/iter':>7} {'peak MB':>8}"
          + ("  of bound" if bound else ""), flush=True)
    for nproc in args.nproc:
        figures = {}
        for engine in args.engines:
            f = figures[engine] = run(root, args, engine, nproc, tuple(checkpoints))
            if "error" in f:
                print(f"{nproc:>9} {engine:>9} failed:\n{f['error']}", flush=True)
                continue
            share = f"  {f['generation_tokens_per_second'] / (bound * nproc):>7.0%}" if bound else ""
            print(f"{nproc:>9} {engine:>9} {f['generation_tokens_per_second']:>10.1f} {f['training_tokens_per_second']:>11.1f} "
                  f"{f['effective_tflops_per_device']:>11.5f} {f['seconds_per_iteration']:>7.2f} {f['peak_memory_mb']:>8.0f}{share}",
                  flush=True)
        baseline = figures[args.engines[0]]
        for engine, f in figures.items():
            if engine == args.engines[0] or "error" in f or "error" in baseline:
                continue
            print(f"{nproc:>9} {engine + '/' + args.engines[0]:>9} "
                  f"{f['generation_tokens_per_second'] / baseline['generation_tokens_per_second']:>9.1f}x {'':>11} {'':>11} "
                  f"{baseline['seconds_per_iteration'] / f['seconds_per_iteration']:>6.1f}x "
                  "(generation speed; whole-iteration speed)")
        for engine, f in figures.items():
            if "error" not in f:
                split = ", ".join(f"{k} {v:.1f}s" for k, v in f["breakdown"].items())
                print(f"{'':>9} {engine:>9} time per phase (all iterations): {split}")
    if bound:
        print(f"bound: {bound:.0f} generated tokens/s per process = {args.batch} tokens per step / (actor weights "
              f"{actor_parameters * weight_bytes(args) / 1e9:.2f} GB / {args.hbm_gb_per_s:.0f} GB/s)")
    print(f"(outputs in {root})")
    return 0


def weight_bytes(args) -> int:
    return 4 if args.dtype == "fp32" else 2  # 'auto' is bf16 (or fp16) on CUDA


def generation_bound(args, actor_parameters: int) -> float:
    """Generated tokens/s per process if each decoding step only read the actor's weights once at
    the card's full memory bandwidth; 0 off CUDA."""
    if args.device != "cuda":
        return 0.0
    if not args.hbm_gb_per_s:
        import torch

        name = torch.cuda.get_device_name(0)
        args.hbm_gb_per_s = next((bw for part, bw in HBM_GB_PER_S.items() if part in name), 0)
        if not args.hbm_gb_per_s:
            print(f"(unknown memory bandwidth of '{name}': pass --hbm-gb-per-s for the bound)")
            return 0.0
    seconds_per_step = actor_parameters * weight_bytes(args) / (args.hbm_gb_per_s * 1e9)
    return args.batch / seconds_per_step


if __name__ == "__main__":
    sys.exit(main())
