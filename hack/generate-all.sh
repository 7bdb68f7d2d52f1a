#!/usr/bin/env bash
# Regenerate every generated file, in dependency order (the chart embeds the CRD, the CRD
# embeds the trainer's config schema). Run after changing trainer/kuberlhf_trainer/config.py,
# operator/kuberlhf_operator/api.py or the chart's values. Tests fail when these drift.
set -euo pipefail
cd "$(dirname "$0")/.."
python=".venv/bin/python"
"$python" hack/generate_crd.py
"$python" hack/generate_chart.py
"$python" hack/generate_config_docs.py
