"""Deleting an RLHFJob in the test cluster: kube-controller-manager's garbage collector takes what it
owns, down to the pods and Services the Kubeflow controllers made, and its claim if the job says so.

No finalizer holds the job (docs/operator.md, "Deletion"); a job an earlier operator version left
with one is still deleted, with its children.
"""

from __future__ import annotations

import pytest

from tests.support.rlhfjobs import Cluster, manifest, wait_for
from tests.support.scripted_trainer import RUNS_UNTIL_ENDED, Hold, ScriptedTrainer

pytestmark = pytest.mark.k8s
SELECTOR = "kuberlhf.io/rlhfjob={}"


def owned(cluster: Cluster, name: str, child: str) -> dict[str, list[str]]:
    """What exists of the job: its children, their pods and Services, its ConfigMaps, and (for an
    MPIJob) the launcher's batch Job and the ConfigMap and Secret mpi-operator made."""
    core, ns = cluster.core, cluster.namespace
    kubeflow = f"training.kubeflow.org/job-name={child}"
    return {
        "children": cluster.child_names("PyTorchJob") + cluster.child_names("MPIJob"),
        "pods": [p.metadata.name for p in cluster.pods(child)],
        "services": [s.metadata.name for s in core.list_namespaced_service(ns, label_selector=kubeflow).items],
        "configmaps": [c.metadata.name for c in core.list_namespaced_config_map(ns).items
                       if c.metadata.name.startswith(name)],
        "secrets": [s.metadata.name for s in core.list_namespaced_secret(ns).items if s.metadata.name.startswith(name)],
    }


@pytest.mark.parametrize("launcher,retention", [("pytorchjob", "Delete"), ("mpijob", "Retain")])
def test_the_garbage_collector_takes_the_children_their_pods_and_a_claim_the_job_owns(
        operator, kube_cluster, cluster, launcher, retention):
    kube_cluster.provide_volume(cluster.namespace, "gone-storage")  # what a provisioner would do
    storage = {"claimTemplate": {"size": "1Gi", "retentionPolicy": retention}}
    cluster.create(manifest("gone", launcher=launcher, storage=storage,
                            stages={"sft": {"gpusPerNode": 0, "nodes": 2}, "reward": {"gpusPerNode": 0},
                                    "ppo": {"gpusPerNode": 0}},
                            podAnnotations=RUNS_UNTIL_ENDED))
    wait_for("sft running", lambda: cluster.stage("gone", "sft").get("state") == "Running", timeout=30)
    before = owned(cluster, "gone", "gone-sft-1")
    assert before["children"] == ["gone-sft-1"] and len(before["pods"]) == (3 if launcher == "mpijob" else 2)
    assert before["configmaps"] and (launcher == "mpijob" or before["services"])
    assert not cluster.job("gone")["metadata"].get("finalizers")

    cluster.delete("gone")

    wait_for("the RLHFJob to go", lambda: not cluster.exists("gone"), timeout=5)  # no finalizer holds it
    left = wait_for("everything it owned to go", lambda: (o := owned(cluster, "gone", "gone-sft-1"))
                    and not any(o.values()) and o, timeout=60)
    assert left == {"children": [], "pods": [], "services": [], "configmaps": [], "secrets": []}
    claims = [c.metadata.name for c in cluster.core.list_namespaced_persistent_volume_claim(cluster.namespace).items]
    if retention == "Delete":
        wait_for("the claim to go", lambda: "gone-storage" not in [
            c.metadata.name for c in cluster.core.list_namespaced_persistent_volume_claim(cluster.namespace).items])
    else:
        assert "gone-storage" in claims  # retained: the trained models outlive the job


def test_a_job_carrying_an_earlier_versions_finalizer_is_still_deleted_with_its_children(operator, cluster):
    body = manifest("legacy", podAnnotations=RUNS_UNTIL_ENDED)
    body["metadata"]["finalizers"] = ["kuberlhf.io/finalizer"]  # as earlier operator versions left it
    cluster.create(body)
    wait_for("sft child", lambda: cluster.child_names() == ["legacy-sft-1"])
    cluster.delete("legacy")
    wait_for("the RLHFJob to go", lambda: not cluster.exists("legacy"))
    wait_for("its children and their pods to go", lambda: not cluster.child_names() and not cluster.pods("legacy-sft-1"))
    assert cluster.core.list_namespaced_config_map(cluster.namespace, label_selector=SELECTOR.format("legacy")).items == []


def test_a_job_deleted_and_created_again_at_once_waits_for_the_old_children_to_go(operator, kube_cluster,
                                                                                   cluster, api):
    """`kubectl delete -f job.yaml && kubectl apply -f job.yaml`: the new job's first child has the
    old one's name until the garbage collector has deleted it; the new job waits for the name."""
    with ScriptedTrainer(api, cluster.namespace, lambda child: Hold()) as trainer:
        cluster.create(manifest("again", podAnnotations=RUNS_UNTIL_ENDED))
        first = wait_for("the first job's child", lambda: cluster.children() and cluster.children()[0])
        with kube_cluster.paused("kube-controller-manager"):  # a garbage collector slower than the user
            cluster.delete("again")
            wait_for("the RLHFJob to go", lambda: not cluster.exists("again"), timeout=5)
            uid = cluster.create(manifest("again", podAnnotations=RUNS_UNTIL_ENDED))["metadata"]["uid"]
            waiting = wait_for("the new job to wait for the name", lambda: [
                m for _, r, m in cluster.events("again") if r == "NameInUse"])
            assert "belongs to an earlier RLHFJob named again; waiting for the garbage collector" in waiting[0]
            assert cluster.stage("again", "sft")["reason"] == "NameInUse"

        child = wait_for("a child of the new job", lambda: (c := cluster.children()) and c[0]["metadata"]["uid"] !=
                         first["metadata"]["uid"] and c[0], timeout=30)
        assert child["metadata"]["ownerReferences"][0]["uid"] == uid
        trainer.finish("again-sft-1")
        wait_for("sft to succeed", lambda: cluster.stage("again", "sft").get("state") == "Succeeded")
    sft = cluster.stage("again", "sft")
    assert (sft["attempt"], sft["failedAttempts"]) == (1, 0)  # the name was waited for, no attempt failed
