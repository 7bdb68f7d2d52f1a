"""Fixtures for the operator in the test cluster (helper fixture `kube_cluster`): the real
training-operator and mpi-operator make the stages' pods, kube-scheduler places them on KWOK's
fake nodes, kube-controller-manager runs the launcher's batch Job and the garbage collector.

- `operator`: `python -m kuberlhf_operator` as a process, one per test module;
- `namespace`: a fresh namespace per test holding the claim `shared` that the tests' RLHFJobs
  mount (bound to a volume of its own), deleted afterwards so that its pods free the nodes;
- `cluster`: read/write helpers on that namespace; `api`: an admin client.

How a test makes a stage's pods run, exit, wait or be evicted: tests/support/kube_cluster.py.
"""

from __future__ import annotations

import pytest

from tests.support.operator_process import OperatorProcess
from tests.support.rlhfjobs import SHARED_CLAIM, Cluster


@pytest.fixture(scope="module")
def operator(kube_cluster, tmp_path_factory):
    proc = OperatorProcess(kube_cluster.kubeconfig, tmp_path_factory.mktemp("operator") / "operator.log")
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture
def api(kube_cluster):
    api_client = kube_cluster.api_client()
    yield api_client
    api_client.close()


@pytest.fixture
def namespace(kube_cluster) -> str:
    name = kube_cluster.create_namespace()
    kube_cluster.create_claim(name, SHARED_CLAIM)
    yield name
    kube_cluster.delete_namespace(name)


@pytest.fixture
def cluster(api, namespace) -> Cluster:
    return Cluster(api, namespace)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call):
    """A failing test shows the operator's last log lines."""
    report = yield
    proc = getattr(item, "funcargs", {}).get("operator")
    if report.failed and isinstance(proc, OperatorProcess):
        report.sections.append(("operator log", proc.logs(lines=80)))
    return report
