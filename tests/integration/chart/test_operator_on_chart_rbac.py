"""The operator, with exactly the permissions the chart grants, takes RLHFJobs through every stage.

The chart is installed into the test cluster (the session's `kube_cluster`: the real Kubeflow
controllers make the stages' pods, the scheduler places them on KWOK's nodes, the garbage
collector deletes what a job owned); the operator runs as a local process with the arguments and
environment of the installed Deployment and a token of the chart's ServiceAccount (TokenRequest
API), so every request it makes, its watch of the pods and its reads of a child's events
included, is authorised by the chart's RBAC alone. A scripted trainer ends the pods.

The cluster already has the RLHFJob CRD (the session installs it before kube-controller-manager
starts), so both releases leave it alone (`crds.enabled=false`); test_helm_install.py covers the
chart's CRD on a control plane of its own.
"""

from __future__ import annotations

import re
import urllib.request

import pytest
import yaml
from chart_helm import CHART
from chart_cluster import ChartOperator, token_kubeconfig
from kubernetes import client

from tests.support.rlhfjobs import SHARED_CLAIM, TINY_CONFIG, Cluster, manifest, wait_for
from tests.support.scripted_trainer import RUNS_UNTIL_ENDED, ScriptedTrainer

pytestmark = pytest.mark.k8s

MODES = {"cluster-wide": {"release": "cw", "namespaced": False}, "namespaced": {"release": "ns", "namespaced": True}}


def install(kube_cluster, release: str, watch: list[str]) -> dict:
    namespace = kube_cluster.create_namespace(f"kuberlhf-{release}")
    sets = ["--set", f"watchNamespaces={{{','.join(watch)}}}"] if watch else []
    kube_cluster.helm("install", release, str(CHART), "--namespace", namespace, "--set", f"fullnameOverride={release}",
                      "--set", "crds.enabled=false", *sets)
    return yaml.safe_load(kube_cluster.kubectl("get", "deployment", "-n", namespace, release, "-o", "yaml").stdout)


def can_i(kube_cluster, service_account: str, *args: str) -> bool:
    result = kube_cluster.kubectl("auth", "can-i", f"--as={service_account}", *args, check=False)
    return result.stdout.strip() == "yes"


def starved(name: str) -> dict:
    """A job whose pods the namespace's GPU quota refuses to the training-operator."""
    return manifest(name, config={**TINY_CONFIG, "device": "cuda"}, podAnnotations=RUNS_UNTIL_ENDED,
                    stages={s: {"gpusPerNode": 1} for s in ("sft", "reward", "ppo")})


@pytest.fixture
def cluster(kube_cluster):
    """The namespace the operator watches, with the claim `shared` the jobs mount; GPUs there are
    rationed to none by a ResourceQuota."""
    namespace = kube_cluster.create_namespace("team")
    kube_cluster.create_claim(namespace, SHARED_CLAIM)
    api = kube_cluster.api_client()
    client.CoreV1Api(api).create_namespaced_resource_quota(namespace, {
        "metadata": {"name": "gpus"}, "spec": {"hard": {"requests.nvidia.com/gpu": "0"}}})
    yield Cluster(api, namespace)
    api.close()
    kube_cluster.delete_namespace(namespace)


@pytest.mark.parametrize("mode_name", list(MODES))
def test_the_operator_runs_every_stage_on_the_charts_rbac(kube_cluster, cluster, tmp_path, mode_name):
    mode = MODES[mode_name]
    unwatched = kube_cluster.create_namespace("elsewhere") if mode["namespaced"] else None
    deployment = install(kube_cluster, mode["release"], [cluster.namespace] if mode["namespaced"] else [])
    namespace = deployment["metadata"]["namespace"]
    service_account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
    kubeconfig = token_kubeconfig(kube_cluster, namespace, service_account, tmp_path / "sa.kubeconfig")
    admin = cluster.custom.api_client
    try:
        with ChartOperator(deployment, kubeconfig, tmp_path / "operator.log") as operator, \
                ScriptedTrainer(admin, cluster.namespace):
            chat = manifest("chat", podAnnotations=RUNS_UNTIL_ENDED)
            # As an earlier operator version left it: the operator removes it (and deletes the children).
            chat["metadata"]["finalizers"] = ["kuberlhf.io/finalizer"]
            cluster.create(chat)
            cluster.create(manifest("chat-mpi", launcher="mpijob", podAnnotations=RUNS_UNTIL_ENDED))
            cluster.create(starved("starved"))
            if unwatched:
                Cluster(admin, unwatched).create(manifest("stray"))
            for name in ("chat", "chat-mpi"):
                wait_for(f"{name} to succeed", lambda n=name: cluster.phase(n) == "Succeeded", timeout=60)
            assert cluster.child_names("PyTorchJob") == ["chat-ppo-1", "chat-reward-1", "chat-sft-1", "starved-sft-1"]
            assert cluster.child_names("MPIJob") == ["chat-mpi-ppo-1", "chat-mpi-reward-1", "chat-mpi-sft-1"]
            wait_for("the job's events", lambda: {"StageStarting", "Succeeded"} <= {r for _, r, _ in cluster.events("chat")})
            # Read from the child's events, which the chart's role lets the operator list.
            wait_for("the quota shown", lambda: "exceeded quota: gpus" in cluster.stage("starved", "sft").get("message", ""))

            cluster.delete("chat")
            wait_for("chat and its children gone", lambda: not cluster.exists("chat") and
                     cluster.child_names("PyTorchJob") == ["starved-sft-1"], timeout=30)
            if unwatched:
                assert not Cluster(admin, unwatched).job("stray").get("status"), "an unwatched job was touched"
            metrics = urllib.request.urlopen(f"http://127.0.0.1:{operator.metrics_port}/metrics", timeout=5).read().decode()

        # No more than needed: what a compromised operator still could not do.
        sa = f"system:serviceaccount:{namespace}:{service_account}"
        assert not can_i(kube_cluster, sa, "get", "secrets", "-n", cluster.namespace)
        assert not can_i(kube_cluster, sa, "create", "pods", "-n", cluster.namespace)
        assert not can_i(kube_cluster, sa, "delete", "rlhfjobs.kuberlhf.io", "-n", cluster.namespace)
        assert can_i(kube_cluster, sa, "create", "pytorchjobs.kubeflow.org", "-n", cluster.namespace)
        if unwatched:
            assert not can_i(kube_cluster, sa, "create", "pytorchjobs.kubeflow.org", "-n", unwatched)
            assert not can_i(kube_cluster, sa, "list", "rlhfjobs.kuberlhf.io", "--all-namespaces")
    finally:
        kube_cluster.helm("uninstall", mode["release"], "--namespace", namespace)
        if unwatched:
            kube_cluster.delete_namespace(unwatched)
        kube_cluster.delete_namespace(namespace)

    log = operator.log()
    messages = re.sub(r"^\[[^]]*\]", "", log, flags=re.MULTILINE)  # not the timestamps: "12:30:56,403" is no refusal
    messages = messages.replace("is forbidden: exceeded quota", "")  # the quota's refusal of the starved job's pods
    assert not re.search(r"\b403\b|[Ff]orbidden", messages), f"the operator was refused something:\n{log[-4000:]}"
    assert 'kuberlhf_operator_children_created_total{kind="PyTorchJob"} 4.0' in metrics
    assert "kuberlhf_operator_reconcile_errors_total{" not in metrics
