"""Integration fixtures: a real kube-apiserver + etcd with the upstream Kubeflow CRDs
(`control_plane`), and the test cluster with the real controllers, scheduler and KWOK
(`kube_cluster`).

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
from tests.support.kube_cluster import KubeCluster, locate_cluster_tools  # noqa: E402

# Our CRD goes in before kube-controller-manager starts: its garbage collector discovers
# resource types only every 30 s, and RLHFJobs own the stages' children.
RLHFJOB_CRD = _REPO_ROOT / "manifests" / "crds" / "kuberlhf.io_rlhfjobs.yaml"
_started_in: dict[str, float] = {}


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


@pytest.fixture(scope="session")
def kube_cluster():
    """One test cluster per session, beside (not instead of) `control_plane`, which stays as
    cheap as it is: etcd, kube-apiserver, kube-controller-manager, kube-scheduler, KWOK with
    fake GPU nodes, training-operator (PyTorchJob) and mpi-operator, the Kubeflow CRDs, KWOK's
    Stage CRD and ours. It does not set KUBECONFIG (that is `control_plane`'s); use
    `.kubeconfig`, `.api_client()`, `.kubectl()`. How a test makes a pod succeed, fail, stay
    Pending or be evicted: tests/support/kube_cluster.py and kwok_stages.yaml."""
    tools = locate_cluster_tools()  # raises ToolsMissing with the build command
    cluster = KubeCluster(tools, crds=[RLHFJOB_CRD]).start()
    _started_in["kube_cluster"] = cluster.started_in_s
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call):
    """Attach the control plane's / test cluster's log tails to failing tests that used it."""
    report = yield
    if report.failed:
        for name in ("control_plane", "kube_cluster"):
            cp = getattr(item, "funcargs", {}).get(name)
            if isinstance(cp, ControlPlane):
                report.sections.append((f"{name} logs", cp.logs(lines=60)))
    return report


def pytest_terminal_summary(terminalreporter) -> None:
    for name, seconds in _started_in.items():
        terminalreporter.write_line(f"{name} started in {seconds:.1f}s")
