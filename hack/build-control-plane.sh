#!/usr/bin/env bash
# Builds the real Kubernetes control plane and test cluster the integration tests
# run against, from the Go module proxy only (no Docker, no release downloads):
#
#   kube-apiserver, kubectl,  k8s.io/kubernetes        (wrapper module, staging replaces)
#   kube-controller-manager,
#   kube-scheduler
#   etcd                      go.etcd.io/etcd/server/v3 (wrapper module)
#   helm                      helm.sh/helm/v3           (wrapper module)
#   training-operator         github.com/kubeflow/training-operator  (wrapper; no replaces upstream)
#   mpi-operator              github.com/kubeflow/mpi-operator       (wrapper; no replaces upstream)
#   kwok                      sigs.k8s.io/kwok                       (wrapper; no replaces upstream)
#   crds/pytorchjobs.yaml     github.com/kubeflow/training-operator  (kubeflow.org/v1)
#   crds/mpijobs.yaml         github.com/kubeflow/mpi-operator       (kubeflow.org/v2beta1)
#   crds/kwok-stages.yaml     sigs.k8s.io/kwok                       (kwok.x-k8s.io/v1alpha1 Stage)
#
# Versions: hack/control-plane/versions.env. Output: $KUBERLHF_TOOLS_HOME (see
# hack/tools-env.sh), outside the repository. Only missing pieces are built, so
# a second run does nothing and takes about a second.
#
# Cost of the first build on the 2-core / 24 GiB dev machine (Go 1.26.8, empty
# build cache): 13m56s wall measured with other tests running (load ~3.3), 26
# CPU-minutes: etcd 64 s, helm 98 s, kube-apiserver 269 s, kubectl 25 s (this
# control plane alone: 4m54s and 5m53s on a quiet machine), then the test
# cluster's parts: kube-controller-manager 73 s, kube-scheduler 6 s,
# training-operator 92 s, mpi-operator 139 s, kwok 69 s. Peak RSS of one process
# 1.9 GiB. It fills ~6.2 GiB of Go build cache and ~1.8 GiB of module cache; the
# tools themselves are ~580 MiB. No -p/GOMAXPROCS limit is needed at this size.
set -euo pipefail
shopt -s inherit_errexit

HACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=tools-env.sh
source "${HACK_DIR}/tools-env.sh"

# Wrapper modules start with no requirements but their one root module; -mod=mod
# lets `go build` add the rest (checked against the checksum database).
export GOFLAGS="-mod=mod -buildvcs=false"
export CGO_ENABLED=0

SRC_DIR="${KUBERLHF_TOOLS_HOME}/src"
BUILD_DATE="$(date -u +%Y-%m-%dT%H:%M:%SZ)"

log() { printf '[build-control-plane] %s\n' "$*" >&2; }

# Directory of module@version in the module cache, downloading it if needed.
module_dir() {
  GOFLAGS= go mod download -json "$1" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",*$/\1/p'
}

# Creates a wrapper module in $SRC_DIR/<name> that requires <module>@<version>.
# Extra go.mod lines (replace blocks) come on stdin.
write_wrapper() {
  local name="$1" module="$2" version="$3" dir="${SRC_DIR}/$1"
  mkdir -p "$dir"
  {
    printf 'module kuberlhf.local/control-plane/%s\n\ngo 1.26.0\n\n' "$name"
    printf 'require %s %s\n\n' "$module" "$version"
    cat
  } > "${dir}/go.mod"
  echo "$dir"
}

# go build <pkg> inside a wrapper module into bin/<out>; writes a temp file
# first so an interrupted build never leaves a half-written binary behind.
build_into_bin() {
  local dir="$1" out="$2" pkg="$3" ldflags="$4" start=$SECONDS tmp
  log "building ${out} from ${pkg} ..."
  tmp="$(mktemp "${KUBERLHF_TOOLS_BIN}/.${out}.XXXXXX")"
  (cd "$dir" && go build -trimpath -ldflags "-s -w ${ldflags}" -o "$tmp" "$pkg")
  mv "$tmp" "${KUBERLHF_TOOLS_BIN}/${out}"
  log "built ${out} in $((SECONDS - start))s"
}

# k8s.io/kubernetes requires every staging module at v0.0.0 and replaces it with
# ./staging/src/k8s.io/<x>; that replace is ignored outside its own module, so
# the wrapper maps each one to the published k8s.io/<x> v0.<minor>.<patch> tag.
kubernetes_replaces() {
  local gomod staging_version="v0.${KUBERNETES_VERSION#v1.}"
  gomod="$(module_dir "k8s.io/kubernetes@${KUBERNETES_VERSION}")/go.mod"
  echo "replace ("
  sed -n 's#^[[:space:]]*\(k8s\.io/[A-Za-z0-9._-]*\) => \./staging/src/.*#\1#p' "$gomod" |
    while read -r m; do printf '\t%s => %s %s\n' "$m" "$m" "$staging_version"; done
  echo ")"
}

# /version and `kubectl version` read these; unset they say v0.0.0-master.
kubernetes_ldflags() {
  local v="$KUBERNETES_VERSION" minor flags=""
  minor="$(cut -d. -f2 <<<"$v")"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags+=" -X ${pkg}.gitVersion=${v} -X ${pkg}.gitMajor=1 -X ${pkg}.gitMinor=${minor}"
    flags+=" -X ${pkg}.gitTreeState=clean -X ${pkg}.buildDate=${BUILD_DATE}"
  done
  echo "$flags"
}

KUBERNETES_COMMANDS=(kube-apiserver kubectl kube-controller-manager kube-scheduler)

build_kubernetes() {
  local dir ldflags cmd missing=()
  for cmd in "${KUBERNETES_COMMANDS[@]}"; do
    [[ -x "${KUBERLHF_TOOLS_BIN}/${cmd}" ]] || missing+=("$cmd")
  done
  (( ${#missing[@]} )) || return 0
  dir="$(kubernetes_replaces | write_wrapper kubernetes k8s.io/kubernetes "$KUBERNETES_VERSION")"
  ldflags="$(kubernetes_ldflags)"
  for cmd in "${missing[@]}"; do
    build_into_bin "$dir" "$cmd" "k8s.io/kubernetes/cmd/${cmd}" "$ldflags"
  done
}

build_etcd() {
  [[ -x "${KUBERLHF_TOOLS_BIN}/etcd" ]] && return
  local dir
  # The server module's root package is etcd's main; its own replace directives
  # (../api, ../client/...) are ignored here and resolve to published tags.
  dir="$(write_wrapper etcd go.etcd.io/etcd/server/v3 "$ETCD_VERSION" </dev/null)"
  build_into_bin "$dir" etcd go.etcd.io/etcd/server/v3 \
    "-X go.etcd.io/etcd/api/v3/version.GitSHA=module-proxy-${ETCD_VERSION}"
}

build_helm() {
  [[ -x "${KUBERLHF_TOOLS_BIN}/helm" ]] && return
  local dir v="helm.sh/helm/v3/internal/version"
  dir="$(write_wrapper helm helm.sh/helm/v3 "$HELM_VERSION" </dev/null)"
  build_into_bin "$dir" helm helm.sh/helm/v3/cmd/helm \
    "-X ${v}.version=${HELM_VERSION} -X ${v}.gitTreeState=clean"
}

# build_upstream <out> <module> <version> <package> [ldflags]: a command of a module whose
# go.mod has no replace directives (true of these three at their pinned tags), so a wrapper
# module that requires it selects exactly the dependency versions upstream builds with.
build_upstream() {
  local out="$1" module="$2" version="$3" pkg="$4" ldflags="${5:-}" dir
  [[ -x "${KUBERLHF_TOOLS_BIN}/${out}" ]] && return
  if grep -q '^replace\|=>' "$(module_dir "${module}@${version}")/go.mod"; then
    log "ERROR: ${module}@${version} has replace directives; build it inside its own source instead"
    exit 1
  fi
  dir="$(write_wrapper "$out" "$module" "$version" </dev/null)"
  build_into_bin "$dir" "$out" "$pkg" "$ldflags"
}

build_test_cluster_controllers() {
  # The repository was renamed kubeflow/trainer, but v1.x tags keep this module path.
  build_upstream training-operator github.com/kubeflow/training-operator "$TRAINING_OPERATOR_VERSION" \
    github.com/kubeflow/training-operator/cmd/training-operator.v1
  build_upstream mpi-operator github.com/kubeflow/mpi-operator "$MPI_OPERATOR_VERSION" \
    github.com/kubeflow/mpi-operator/cmd/mpi-operator \
    "-X github.com/kubeflow/mpi-operator/pkg/version.Version=${MPI_OPERATOR_VERSION}"
  build_upstream kwok sigs.k8s.io/kwok "$KWOK_VERSION" sigs.k8s.io/kwok/cmd/kwok \
    "-X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_VERSION}"
}

# copy_crd <module@version> <path in module> <stable name>
copy_crd() {
  local dest="${KUBERLHF_CRDS_DIR}/$3" dir
  [[ -s "$dest" ]] && return
  dir="$(module_dir "$1")"
  [[ -f "${dir}/$2" ]] || { log "ERROR: $1 has no $2"; exit 1; }
  install -m 0644 "${dir}/$2" "$dest"   # module cache files are read-only
  log "copied $1/$2 -> ${dest}"
}

main() {
  local start=$SECONDS
  mkdir -p "$KUBERLHF_TOOLS_BIN" "$KUBERLHF_CRDS_DIR" "$SRC_DIR"
  # Two runs at once (a developer and CI on one machine) would rewrite the same
  # wrapper go.mod files: the second waits, then finds everything built.
  exec 9>"${KUBERLHF_TOOLS_HOME}/.lock"
  flock 9
  log "$(go version); cache ${KUBERLHF_TOOLS_HOME}"
  build_etcd
  build_helm
  build_kubernetes
  build_test_cluster_controllers
  copy_crd "github.com/kubeflow/training-operator@${TRAINING_OPERATOR_VERSION}" \
    manifests/base/crds/kubeflow.org_pytorchjobs.yaml pytorchjobs.yaml
  copy_crd "github.com/kubeflow/mpi-operator@${MPI_OPERATOR_VERSION}" \
    manifests/base/kubeflow.org_mpijobs.yaml mpijobs.yaml
  copy_crd "sigs.k8s.io/kwok@${KWOK_VERSION}" kustomize/crd/bases/kwok.x-k8s.io_stages.yaml kwok-stages.yaml
  log "done in $((SECONDS - start))s"
  for f in "$KUBERLHF_TOOLS_BIN"/* "$KUBERLHF_CRDS_DIR"/*; do echo "$f"; done
  echo "Use them with: eval \"\$(${HACK_DIR}/tools-env.sh)\""
}

main "$@"
