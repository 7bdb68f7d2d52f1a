#!/usr/bin/env bash
# Create (or update) the project's virtual environment in .venv with the given extras
# (default: trainer,operator,test), pinned by hack/constraints.txt. Re-running is cheap: it
# reinstalls only when pyproject.toml, the constraints or the extras changed.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-trainer,operator,test}"
python="${PYTHON:-python3}"

[[ -x .venv/bin/python ]] || "$python" -m venv .venv
stamp=".venv/.kuberlhf-installed"
want="$(cat pyproject.toml hack/constraints.txt | sha256sum | cut -d' ' -f1) $extras"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  exit 0
fi
echo "Installing kuberlhf[$extras] into .venv (torch and DeepSpeed take a few minutes the first time)..."
.venv/bin/pip install --quiet --upgrade pip
.venv/bin/pip install --quiet -c hack/constraints.txt -e ".[$extras]"
echo "$want" > "$stamp"
