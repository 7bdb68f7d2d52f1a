#!/usr/bin/env bash
# The device check of a session that is lent a GPU: one call, about 8 minutes on an H100.
#   here:   ./bench/gpu/prepare-wheels.sh
#   device: run(command="bash bench/gpu/check.sh", carry=[".whl"], timeout_s=560)
# It runs the CUDA tests (tests/gpu) and the step-3 engine benchmark at DeepSpeed-Chat's
# benchmark shapes (OPT-1.3B actor, OPT-350M reward model, prompts up to 256 + answers of 256
# tokens, bf16), and leaves its output in $OUT. Record the figures with the card in docs/benchmarks.md.
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH="/tmp/site:$PWD/trainer:$PWD/operator:$PWD" PYTHONUNBUFFERED=1
out="${OUT:-/tmp/out}"; mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python3 -c "import torch, deepspeed, transformers; print(torch.__version__, deepspeed.__version__, transformers.__version__)" | tee -a "$out/gpu.txt"
timeout 200 python3 -m pytest tests/gpu -q -m gpu -p no:cacheprovider 2>&1 | tail -n 30 | tee "$out/tests.txt"
for engine_run in "--batch 32"; do
  timeout 300 python3 bench/step3_engines.py --device cuda --actor builtin:opt-1.3b --reward builtin:opt-350m \
    --zero-stage 2 --nproc 1 --data hh:.whl/hh.jsonl --prompt-len 256 --answer-len 256 --vocab-size 50272 \
    --iterations 2 $engine_run 2>&1 | grep -v "Writing model" | tee "$out/bench.txt"
done
