"""Integration fixtures: a real kube-apiserver + etcd with the upstream Kubeflow CRDs.

The binaries are built beforehand by hack/build-control-plane.sh. If they are
missing the fixture errors (it does not skip): a skipped test would hide a
missing component.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

_REPO_ROOT = Path(__file__).resolve().parents[2]
if str(_REPO_ROOT) not in sys.path:  # so `tests.support` imports without an installed package
    sys.path.insert(0, str(_REPO_ROOT))

from tests.support.controlplane import ControlPlane, locate_tools  # noqa: E402


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "k8s: needs the real test control plane (hack/build-control-plane.sh)"
    )


@pytest.fixture(scope="session")
def control_plane():
    """One etcd + kube-apiserver per test session, PyTorchJob and MPIJob CRDs
    installed, KUBECONFIG pointing at it. See tests/support/controlplane.py for
    the object's API (.kubeconfig, .server, .token, .api_client(), .kubectl(),
    .helm(), .restart_apiserver(), .logs())."""
    tools = locate_tools()  # raises ToolsMissing with the build command
    cp = ControlPlane(tools).start()
    env = pytest.MonkeyPatch()
    try:
        cp.install_crds(tools.crds)
        env.setenv("KUBECONFIG", cp.kubeconfig)
        yield cp
    finally:
        env.undo()
        cp.stop()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call):
    """Attach the control plane's log tails to failing tests that used it."""
    report = yield
    cp = getattr(item, "funcargs", {}).get("control_plane")
    if report.failed and isinstance(cp, ControlPlane):
        report.sections.append(("control plane logs", cp.logs(lines=60)))
    return report
