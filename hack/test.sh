#!/usr/bin/env bash
# Set up everything the test suite needs, then run it: the Python environment (.venv), the
# test control plane (kube-apiserver, etcd, kubectl, helm built from the Go module proxy and
# cached in ~/.cache/kuberlhf), then pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
./hack/setup-venv.sh trainer,operator,test
./hack/build-control-plane.sh
./hack/install-test-tools.sh   # Prometheus, monitoring CRDs, hadolint: chart, image and monitoring tests
exec .venv/bin/python -m pytest "$@"
