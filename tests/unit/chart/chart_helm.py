"""Rendering charts/kuberlhf with the real helm (built by hack/build-control-plane.sh), for tests.

No cluster: `helm template` with the values and API versions a test names. The generator
(hack/generate_chart.py) is loaded from its file, as the CRD tests load theirs.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import Any, Iterable

import yaml

REPO = Path(__file__).resolve().parents[3]
CHART = REPO / "charts" / "kuberlhf"
MONITORING_APIS = ("monitoring.coreos.com/v1/ServiceMonitor", "monitoring.coreos.com/v1/PodMonitor")
TEST_TOOLS_ENV = REPO / "hack" / "test-tools.env"


@lru_cache(maxsize=1)
def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("generate_chart", REPO / "hack" / "generate_chart.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look themselves up there
    spec.loader.exec_module(module)
    return module


@lru_cache(maxsize=1)
def _helm_home() -> str:
    return tempfile.mkdtemp(prefix="kuberlhf-helm-")


def helm(*args: str, check: bool = True, kubeconfig: str | None = None) -> subprocess.CompletedProcess:
    """Run the built helm with private cache/config dirs."""
    home = _helm_home()
    env = dict(os.environ, HELM_CACHE_HOME=f"{home}/cache", HELM_CONFIG_HOME=f"{home}/config",
               HELM_DATA_HOME=f"{home}/data")
    if kubeconfig:
        env["KUBECONFIG"] = kubeconfig
    result = subprocess.run([generator().helm_binary(), *args], capture_output=True, text=True, env=env)
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
    return result


def template_args(values: dict[str, Any] | None = None, api_versions: Iterable[str] = (),
                  namespace: str = "kuberlhf-system", release: str = "kuberlhf") -> list[str]:
    args = ["template", release, str(CHART), "--namespace", namespace,
            "--kube-version", generator().RENDER_KUBE_VERSION]
    for api in api_versions:
        args += ["--api-versions", api]
    if values:
        handle = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False)
        with handle:
            yaml.safe_dump(values, handle)
        args += ["--values", handle.name]
    return args


def render(values: dict[str, Any] | None = None, api_versions: Iterable[str] = (), **kwargs: Any) -> list[dict]:
    """The chart's objects for these values (helm template must succeed)."""
    out = helm(*template_args(values, api_versions, **kwargs)).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def render_error(values: dict[str, Any] | None = None, api_versions: Iterable[str] = ()) -> str:
    """helm template's error output for values that must be refused."""
    result = helm(*template_args(values, api_versions), check=False)
    assert result.returncode != 0, f"rendered although it should fail:\n{result.stdout[:2000]}"
    return result.stderr


def of_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict], kind: str, name: str | None = None) -> dict:
    found = [d for d in of_kind(docs, kind) if name is None or d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {[d['metadata']['name'] for d in found]}"
    return found[0]


def pinned_tools() -> dict[str, str]:
    """hack/test-tools.env as a dict (pinned versions of Prometheus, its CRDs, hadolint)."""
    pairs = (line.split("=", 1) for line in TEST_TOOLS_ENV.read_text().splitlines()
             if line and not line.startswith("#"))
    return {key.strip(): value.strip() for key, value in pairs}


def monitoring_crds() -> list[Path]:
    """The ServiceMonitor and PodMonitor CRDs from the prometheus-operator module in the Go module
    cache (hack/install-test-tools.sh downloads it)."""
    gomodcache = subprocess.run(["go", "env", "GOMODCACHE"], capture_output=True, text=True, check=True).stdout.strip()
    version = pinned_tools()["PROMETHEUS_OPERATOR_VERSION"]
    crd_dir = Path(gomodcache) / "github.com" / "prometheus-operator" / f"prometheus-operator@{version}" / \
        "example" / "prometheus-operator-crd"
    paths = [crd_dir / "monitoring.coreos.com_servicemonitors.yaml", crd_dir / "monitoring.coreos.com_podmonitors.yaml"]
    missing = [str(p) for p in paths if not p.exists()]
    assert not missing, f"monitoring CRDs missing: {missing}; run hack/install-test-tools.sh"
    return paths
