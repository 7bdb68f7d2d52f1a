"""The operator, with exactly the permissions the chart grants, takes RLHFJobs through every stage.

The chart is installed into a real API server; the operator runs as a local process with the
arguments and environment of the installed Deployment and a token of the chart's ServiceAccount
(TokenRequest API), so every request it makes is authorised by the chart's RBAC alone. The
simulated training-operator (the test double for Kubeflow's controllers) runs the child jobs.
"""

from __future__ import annotations

import re
import urllib.request

import pytest
import yaml
from chart_helm import CHART
from chart_cluster import ChartOperator, token_kubeconfig

from tests.support.rlhfjobs import Cluster, manifest, wait_for
from tests.support.simulated_training_operator import SimulatedTrainingOperator

pytestmark = pytest.mark.k8s

MODES = {
    "cluster-wide": {"release": "cw", "values": [], "watched": "team-cw", "unwatched": None},
    "namespaced": {"release": "ns", "values": ["--set", "watchNamespaces={team-ns}"], "watched": "team-ns",
                   "unwatched": "elsewhere"},
}


def install(cluster, mode: dict) -> dict:
    namespace = f"kuberlhf-{mode['release']}"
    for ns in filter(None, (mode["watched"], mode["unwatched"])):
        cluster.kubectl("create", "namespace", ns)
    # One release manages the CRD; the second installs only the operator.
    crds = "true" if mode["release"] == "cw" else "false"
    cluster.helm("install", mode["release"], str(CHART), "--namespace", namespace, "--create-namespace",
                 "--set", f"fullnameOverride=kuberlhf-{mode['release']}", "--set", f"crds.enabled={crds}",
                 *mode["values"])
    cluster.kubectl("wait", "--for=condition=Established", "crd/rlhfjobs.kuberlhf.io", "--timeout=60s")
    return yaml.safe_load(cluster.kubectl("get", "deployment", "-n", namespace, f"kuberlhf-{mode['release']}",
                                          "-o", "yaml").stdout)


def can_i(cluster, service_account: str, *args: str) -> bool:
    result = cluster.kubectl("auth", "can-i", f"--as={service_account}", *args, check=False)
    return result.stdout.strip() == "yes"


@pytest.mark.parametrize("mode_name", list(MODES))
def test_the_operator_runs_every_stage_on_the_charts_rbac(cluster, tmp_path, mode_name):
    mode = MODES[mode_name]
    deployment = install(cluster, mode)
    namespace = deployment["metadata"]["namespace"]
    service_account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
    kubeconfig = token_kubeconfig(cluster, namespace, service_account, tmp_path / "sa.kubeconfig")
    admin = cluster.api_client()
    watched = Cluster(admin, mode["watched"])

    with ChartOperator(deployment, kubeconfig, tmp_path / "operator.log") as operator, \
            SimulatedTrainingOperator(admin, namespace=mode["watched"]):
        chat = manifest("chat")
        # As an earlier operator version left it: its removal deletes the children (the chart's
        # permissions must allow that; this control plane has no garbage collector to do it).
        chat["metadata"]["finalizers"] = ["kuberlhf.io/finalizer"]
        watched.create(chat)
        watched.create(manifest("chat-mpi", launcher="mpijob"))
        if mode["unwatched"]:
            Cluster(admin, mode["unwatched"]).create(manifest("stray"))
        for name in ("chat", "chat-mpi"):
            wait_for(f"{name} to succeed", lambda n=name: watched.phase(n) == "Succeeded", timeout=60)
        assert watched.child_names("PyTorchJob") == ["chat-ppo-1", "chat-reward-1", "chat-sft-1"]
        assert watched.child_names("MPIJob") == ["chat-mpi-ppo-1", "chat-mpi-reward-1", "chat-mpi-sft-1"]
        wait_for("the job's events", lambda: {"StageStarting", "Succeeded"} <= {r for _, r, _ in watched.events("chat")})

        watched.delete("chat")  # the operator deletes the children, with the chart's permissions
        wait_for("chat and its children gone", lambda: not watched.exists("chat") and
                 not watched.child_names("PyTorchJob"), timeout=30)
        if mode["unwatched"]:
            assert not Cluster(admin, mode["unwatched"]).job("stray").get("status"), "an unwatched job was touched"
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{operator.metrics_port}/metrics", timeout=5).read().decode()

    log = operator.log()
    messages = re.sub(r"^\[[^]]*\]", "", log, flags=re.MULTILINE)  # not the timestamps: "12:30:56,403" is no refusal
    assert not re.search(r"\b403\b|[Ff]orbidden", messages), f"the operator was refused something:\n{log[-4000:]}"
    assert 'kuberlhf_operator_children_created_total{kind="PyTorchJob"} 3.0' in metrics
    assert "kuberlhf_operator_reconcile_errors_total{" not in metrics

    # No more than needed: what a compromised operator still could not do.
    sa = f"system:serviceaccount:{namespace}:{service_account}"
    assert not can_i(cluster, sa, "get", "secrets", "-n", mode["watched"])
    assert not can_i(cluster, sa, "create", "pods", "-n", mode["watched"])
    assert not can_i(cluster, sa, "delete", "rlhfjobs.kuberlhf.io", "-n", mode["watched"])
    assert can_i(cluster, sa, "create", "pytorchjobs.kubeflow.org", "-n", mode["watched"])
    if mode["unwatched"]:
        assert not can_i(cluster, sa, "create", "pytorchjobs.kubeflow.org", "-n", mode["unwatched"])
        assert not can_i(cluster, sa, "list", "rlhfjobs.kuberlhf.io", "--all-namespaces")
