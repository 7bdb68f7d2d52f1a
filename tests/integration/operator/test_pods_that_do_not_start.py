"""Pods that do not start, in the test cluster: the real scheduler leaves them Pending, KWOK's
kubelet keeps their containers waiting on an image, a ResourceQuota refuses them.

The Kubeflow controllers then leave the child with nothing but `Created`; what a user sees is the
RLHFJob: `kubectl get rlhf -o wide` says why the stage waits, in the pods' own words, and the
attempt fails at its deadline with those words, in the status, the conditions and a Warning event.
"""

from __future__ import annotations

import copy

import pytest
from kubernetes import client

from tests.support.kube_cluster import pod_pending
from tests.support.rlhfjobs import TINY_CONFIG, Cluster, manifest, printed_columns, wait_for

pytestmark = pytest.mark.k8s
STAGES = ("sft", "reward", "ppo")
GPU_CONFIG = {**copy.deepcopy(TINY_CONFIG), "device": "cuda"}


def wide_row(kube_cluster, cluster: Cluster, name: str) -> dict[str, str]:
    return printed_columns(kube_cluster.kubectl("get", "rlhf", name, "-n", cluster.namespace, "-o", "wide").stdout)[0]


def shown(kube_cluster, cluster: Cluster, name: str, text: str) -> dict[str, str]:
    """Wait until `kubectl get rlhf -o wide` shows `text` in the job's MESSAGE; returns the row."""
    return wait_for(f"{name}'s message to show {text!r}", lambda: text in (
        row := wide_row(kube_cluster, cluster, name))["MESSAGE"] and row, timeout=30, interval=0.3)


def conditions(job: dict) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in job["status"]["conditions"]}


def warnings(cluster: Cluster, name: str, reason: str) -> list[str]:
    return wait_for(f"a {reason} event of {name}", lambda: [m for t, r, m in cluster.events(name)
                                                            if t == "Warning" and r == reason])


def test_pods_no_node_can_take_are_shown_waiting_then_fail_the_attempt_at_its_start_deadline(
        operator, kube_cluster, cluster):
    stages = {s: {"gpusPerNode": 1} for s in STAGES}
    stages["sft"] = {"gpusPerNode": 16, "startDeadlineSeconds": 6, "retryLimit": 0}  # the nodes have 8 each
    cluster.create(manifest("big", config=GPU_CONFIG, stages=stages))

    row = shown(kube_cluster, cluster, "big", "Insufficient nvidia.com/gpu")
    assert (row["PHASE"], row["STAGE"], row["STATE"], row["ATTEMPT"]) == ("Running", "sft", "Starting", "1")
    assert "waiting for pods: master-0 Unschedulable: 0/3 nodes are available" in row["MESSAGE"]

    job = wait_for("the job to fail", lambda: cluster.phase("big") == "Failed" and cluster.job("big"), timeout=30)
    sft = cluster.stage("big", "sft")
    assert (sft["reason"], sft["failedAttempts"]) == ("StartDeadlineExceeded", 1)
    assert "pods not running after 6 s (startDeadlineSeconds): master-0 Unschedulable" in job["status"]["message"]
    assert "Insufficient nvidia.com/gpu" in job["status"]["message"]
    assert conditions(job)["Stalled"] == ("True", "StageFailed") and conditions(job)["Ready"][0] == "False"
    assert any("Insufficient nvidia.com/gpu" in m for m in warnings(cluster, "big", "StageFailed"))
    # Its pods would have gone on waiting for GPUs: the attempt's child is deleted, pods and all.
    wait_for("the child and its pod gone", lambda: not cluster.child_names() and not cluster.pods("big-sft-1"))


@pytest.mark.parametrize("launcher,kind", [("pytorchjob", "PyTorchJob"), ("mpijob", "MPIJob")])
def test_an_image_that_cannot_exist_fails_the_stage_at_once_without_a_retry(operator, kube_cluster, cluster,
                                                                             launcher, kind):
    stages = {s: {"gpusPerNode": 0, "retryLimit": 2} for s in STAGES}
    cluster.create(manifest("typo", launcher=launcher, stages=stages, podAnnotations=pod_pending("InvalidImageName")))

    job = wait_for("the job to fail", lambda: cluster.phase("typo") == "Failed" and cluster.job("typo"), timeout=30)
    assert "ImagePullFailed" in job["status"]["message"] and "InvalidImageName" in job["status"]["message"]
    assert "not retried: the image reference cannot be pulled" in job["status"]["message"]
    assert cluster.stage("typo", "sft")["attempt"] == 1  # retryLimit 2, yet no second attempt


def test_an_image_pull_that_keeps_failing_fails_the_attempt_at_its_pull_deadline(operator, kube_cluster, cluster):
    stages = {s: {"gpusPerNode": 0} for s in STAGES}
    stages["sft"] = {"gpusPerNode": 0, "nodes": 2, "imagePullDeadlineSeconds": 4, "retryLimit": 0}
    cluster.create(manifest("pull", stages=stages, podAnnotations=pod_pending("ImagePullBackOff")))

    # Both pods wait for the same reason: named together, in the kubelet's words.
    row = shown(kube_cluster, cluster, "pull", "master-0, worker-0 ImagePullBackOff")
    assert 'Back-off pulling image "kuberlhf-trainer:test"' in row["MESSAGE"]
    job = wait_for("the job to fail", lambda: cluster.phase("pull") == "Failed" and cluster.job("pull"), timeout=30)
    sft = cluster.stage("pull", "sft")
    assert sft["reason"] == "ImagePullFailed"
    assert "(no image after 4 s: imagePullDeadlineSeconds)" in job["status"]["message"]


def raise_quota(core: client.CoreV1Api, namespace: str, name: str, hard: dict[str, str]) -> None:
    core.patch_namespaced_resource_quota(name, namespace, {"spec": {"hard": hard}})


@pytest.mark.parametrize("quota,refused", [
    # What most clusters ration: GPUs. The training-operator's pods are refused, not our child.
    ({"requests.nvidia.com/gpu": "1"}, 'pods "full-sft-1-master-0" is forbidden: exceeded quota: team'),
    # A count of jobs: the operator's own create of the child is refused.
    ({"count/pytorchjobs.kubeflow.org": "0"}, 'pytorchjobs.kubeflow.org "full-sft-1" is forbidden: exceeded quota'),
], ids=["gpus", "jobs"])
def test_a_full_quota_is_waited_for_and_shown_then_the_stage_runs_once_it_is_raised(
        operator, kube_cluster, cluster, quota, refused):
    core = cluster.core
    core.create_namespaced_resource_quota(cluster.namespace, {"metadata": {"name": "team"}, "spec": {"hard": quota}})
    stages = {s: {"gpusPerNode": 2, "retryLimit": 0} for s in STAGES}
    cluster.create(manifest("full", config=GPU_CONFIG, stages=stages))

    row = shown(kube_cluster, cluster, "full", refused)
    assert (row["STATE"], row["ATTEMPT"]) == ("Starting", "1")
    assert any(refused in m for m in warnings(cluster, "full", "QuotaExceeded"))

    raise_quota(core, cluster.namespace, "team", {k: "8" for k in quota})
    wait_for("sft to run", lambda: cluster.stage("full", "sft").get("state") == "Running", timeout=60, interval=0.5)
    sft = cluster.stage("full", "sft")
    assert (sft["attempt"], sft["failedAttempts"]) == (1, 0)  # a wait, not a failed attempt
    assert "exceeded quota" not in cluster.job("full")["status"]["message"]


def test_pods_an_admission_plugin_refuses_are_shown_in_the_training_operators_words(operator, kube_cluster, cluster):
    """A priorityClassName that does not exist: the API server's Priority admission refuses every pod
    the training-operator makes; only the PyTorchJob's events say so, and the stage shows them."""
    stages = {s: {"gpusPerNode": 0} for s in STAGES}
    stages["sft"] = {"gpusPerNode": 0, "startDeadlineSeconds": 15, "retryLimit": 0}
    cluster.create(manifest("prio", stages=stages, priorityClassName="gpu-urgent"))

    row = shown(kube_cluster, cluster, "prio", "no PriorityClass with name gpu-urgent was found")
    assert (row["STATE"], row["ATTEMPT"]) == ("Starting", "1")
    assert "waiting for pods: no pod was created; the PyTorchJob warns: FailedCreatePod" in row["MESSAGE"]
    job = wait_for("the job to fail", lambda: cluster.phase("prio") == "Failed" and cluster.job("prio"), timeout=30)
    assert "StartDeadlineExceeded" in job["status"]["message"]
    assert "no PriorityClass with name gpu-urgent was found" in job["status"]["message"]
