#!/usr/bin/env bash
# Where the test control plane's binaries and CRDs live. One definition, used by
# hack/build-control-plane.sh (which sources this file) and by
# tests/support/controlplane.py (which runs it and reads the exports).
#
#   eval "$(hack/tools-env.sh)"     # puts kube-apiserver, etcd, kubectl, helm, kwok, ... on PATH
#
# The cache is outside the repository; its subdirectory is named after every
# pinned version, so bumping a version in hack/control-plane/versions.env
# builds into a fresh directory (the Go build cache keeps unchanged parts fast).

_kuberlhf_hack_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=control-plane/versions.env
source "${_kuberlhf_hack_dir}/control-plane/versions.env"

KUBERLHF_TOOLS_ROOT="${KUBERLHF_TOOLS_DIR:-$HOME/.cache/kuberlhf/tools}"
KUBERLHF_TOOLS_HOME="${KUBERLHF_TOOLS_ROOT}/r${RECIPE_REVISION}-k8s-${KUBERNETES_VERSION}-etcd-${ETCD_VERSION}-helm-${HELM_VERSION}-kto-${TRAINING_OPERATOR_VERSION}-mpi-${MPI_OPERATOR_VERSION}-kwok-${KWOK_VERSION}"
KUBERLHF_TOOLS_BIN="${KUBERLHF_TOOLS_HOME}/bin"
KUBERLHF_CRDS_DIR="${KUBERLHF_TOOLS_HOME}/crds"
export KUBERNETES_VERSION ETCD_VERSION HELM_VERSION TRAINING_OPERATOR_VERSION MPI_OPERATOR_VERSION KWOK_VERSION
export KUBERLHF_TOOLS_HOME KUBERLHF_TOOLS_BIN KUBERLHF_CRDS_DIR

# Executed (not sourced): print the exports for eval / for the Python helper.
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  for _v in KUBERNETES_VERSION ETCD_VERSION HELM_VERSION TRAINING_OPERATOR_VERSION \
            MPI_OPERATOR_VERSION KWOK_VERSION KUBERLHF_TOOLS_HOME KUBERLHF_TOOLS_BIN KUBERLHF_CRDS_DIR; do
    printf 'export %s=%q\n' "$_v" "${!_v}"
  done
  printf 'export PATH=%q:"$PATH"\n' "$KUBERLHF_TOOLS_BIN"
fi
