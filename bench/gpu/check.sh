#!/usr/bin/env bash
# The device check of a session that is lent a GPU: one call of at most ~9 minutes.
#   here:   ./bench/gpu/prepare-wheels.sh
#   device: run(command="bash bench/gpu/check.sh", carry=[".whl"], timeout_s=580)
# In order of importance, each part under its own time limit so that what finished is kept:
#   1. the step-3 engine benchmark, hf vs hybrid, at DeepSpeed-Chat's benchmark shapes (OPT-1.3B
#      actor, OPT-350M reward model, prompts up to 256 + answers of 256 tokens, bf16), with the
#      memory-bandwidth bound;
#   2. the CUDA tests (tests/gpu): all three steps in bf16 and fp16, compiled decoding;
#   3. DeepSpeed's own hybrid engine on the same workload, with whatever time is left (its
#      inference kernels compile on first use).
# Output lands in $OUT. Record the figures with the card in docs/benchmarks.md.
set -uo pipefail
budget=${CHECK_SECONDS:-550}
left() { echo $(( budget - SECONDS )); }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH="/tmp/site:$PWD/trainer:$PWD/operator:$PWD" PYTHONUNBUFFERED=1
out="${OUT:-/tmp/out}"; mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python3 -c "import torch, deepspeed, transformers, peft; print(torch.__version__, deepspeed.__version__, transformers.__version__, peft.__version__)" | tee -a "$out/gpu.txt"

shapes=(--device cuda --actor builtin:opt-1.3b --reward builtin:opt-350m --zero-stage 2 --nproc 1
        --data hh:.whl/hh.jsonl --prompt-len 256 --answer-len 256 --vocab-size 50272 --iterations 3
        --batch 64 --train-batch 16 --gradient-checkpointing)
timeout $(( $(left) - 120 )) python3 bench/step3_engines.py "${shapes[@]}" --engines hf hybrid 2>&1 \
  | grep -v "Writing model" | tee "$out/bench.txt"
timeout $(( $(left) > 130 ? 100 : $(left) - 30 )) python3 -m pytest tests/gpu -q -m gpu -p no:cacheprovider 2>&1 \
  | tail -n 40 | tee "$out/tests.txt"
timeout $(( $(left) - 5 )) python3 bench/step3_engines.py "${shapes[@]}" --engines deepspeed 2>&1 \
  | grep -v "Writing model" | tail -n 40 | tee "$out/bench-deepspeed.txt"
echo "check finished after ${SECONDS}s" | tee -a "$out/gpu.txt"
