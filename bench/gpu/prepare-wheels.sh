#!/usr/bin/env bash
# Run HERE (not on the device machine) before a GPU session's device check: the device image has
# torch, transformers, peft, accelerate, safetensors, tokenizers, numpy, matplotlib,
# prometheus-client (docs: /work/.library/device/KINDS.md) but not DeepSpeed, datasets or
# pydantic, and nothing can be downloaded there. This puts wheels for Python 3.12 into .whl/
# (ignored by git), which bench/gpu/check.sh installs there; pass `.whl` in the run's carry.
# Versions follow hack/constraints.txt.
set -euo pipefail
cd "$(dirname "$0")/../.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
rm -rf .whl && mkdir .whl
platforms=()
for n in 28 27 24 17; do platforms+=(--platform "manylinux_2_${n}_x86_64"); done
platforms+=(--platform manylinux2014_x86_64)
download() {
  .venv/bin/python -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp "${platforms[@]}" -d .whl "$@"
}
# pydantic and its compiled core, pinned as hack/constraints.txt pins pydantic
download pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
# the versions the CPU suite runs (the image has older transformers and peft)
download transformers==5.24.0 peft==0.21.2
# datasets and what it needs beyond the image
download datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19
# DeepSpeed ships as source: build a pure-Python wheel here (its CUDA ops compile at first use there)
.venv/bin/python -m pip wheel --quiet --no-deps --no-build-isolation -w .whl deepspeed==0.19.8 hjson==3.1.0
# The HH sample (../shared does not travel to the device machine): 256-token prompts for the benchmark
cp ../shared/data/hh-rlhf-harmless-test-1000.jsonl .whl/hh.jsonl
du -sh .whl && ls .whl
