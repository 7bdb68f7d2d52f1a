"""Fixtures for the operator against the real control plane (helper fixture `control_plane`).

- `operator`: `python -m kuberlhf_operator` as a process, one per test module;
- `namespace` / `cluster`: a fresh namespace per test, and read/write helpers on it;
- `sim`: the simulated training-operator, watching only that namespace.
"""

from __future__ import annotations

import uuid

import pytest
from kubernetes import client

from tests.support.operator_process import OperatorProcess
from tests.support.rlhfjobs import CRD_PATH, Cluster
from tests.support.simulated_training_operator import SimulatedTrainingOperator


@pytest.fixture(scope="session")
def rlhf_crd(control_plane):
    """Our CRD, exactly as committed (the unit tests check it is what the generator writes)."""
    control_plane.install_crds([CRD_PATH])


@pytest.fixture(scope="module")
def operator(control_plane, rlhf_crd, tmp_path_factory):
    proc = OperatorProcess(control_plane.kubeconfig, tmp_path_factory.mktemp("operator") / "operator.log")
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture
def api(control_plane):
    api_client = control_plane.api_client()
    yield api_client
    api_client.close()


@pytest.fixture
def namespace(api, rlhf_crd) -> str:
    # Namespaces are never deleted: that needs kube-controller-manager, which does not run here.
    name = f"t-{uuid.uuid4().hex[:8]}"
    client.CoreV1Api(api).create_namespace({"metadata": {"name": name}})
    return name


@pytest.fixture
def cluster(api, namespace) -> Cluster:
    return Cluster(api, namespace)


@pytest.fixture
def sim(api, namespace):
    with SimulatedTrainingOperator(api, namespace=namespace) as simulated:
        yield simulated


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call):
    """A failing test shows the operator's last log lines."""
    report = yield
    proc = getattr(item, "funcargs", {}).get("operator")
    if report.failed and isinstance(proc, OperatorProcess):
        report.sections.append(("operator log", proc.logs(lines=80)))
    return report
