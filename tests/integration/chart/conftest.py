"""Fixtures for the chart against a real kube-apiserver.

Each test module gets its own control plane (etcd + kube-apiserver, ~5 s to start), so that
installing, upgrading and uninstalling the chart — CRD included — starts from an empty cluster
and never disturbs the session's shared one. It has the Kubeflow CRDs (PyTorchJob, MPIJob) and
the Prometheus operator's ServiceMonitor/PodMonitor CRDs, as a cluster with kube-prometheus-stack
would. Nothing runs pods here: the operator runs as a local process (chart_cluster.ChartOperator).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

_REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(_REPO / "tests" / "unit" / "chart"))  # chart_helm

from chart_helm import monitoring_crds  # noqa: E402

from tests.support.controlplane import ControlPlane, locate_tools  # noqa: E402


@pytest.fixture(scope="module")
def cluster():
    tools = locate_tools()
    cp = ControlPlane(tools).start()
    try:
        cp.install_crds([*tools.crds, *monitoring_crds()])
        yield cp
    finally:
        cp.stop()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call):
    """Attach the module's control-plane logs to a failing test."""
    report = yield
    cp = getattr(item, "funcargs", {}).get("cluster")
    if report.failed and isinstance(cp, ControlPlane):
        report.sections.append(("control plane logs", cp.logs(lines=60)))
    return report
