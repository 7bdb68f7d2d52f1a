#!/usr/bin/env bash
# Set up .venv with the trainer and run `kuberlhf train` on its embedded default: a tiny model
# built from a config, the built-in sorting task, SFT -> reward model -> PPO on the CPU when
# there is no GPU. Extra arguments go to `kuberlhf train`.
set -euo pipefail
cd "$(dirname "$0")/.."
./hack/setup-venv.sh trainer
exec .venv/bin/kuberlhf train "$@"
