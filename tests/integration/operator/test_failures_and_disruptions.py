"""Stage attempts that end badly in the test cluster, and what the RLHFJob then says and does.

- an MPIJob whose trainer (on a worker) finds bad input: the real trainer writes its report on the
  shared storage, the launcher's real shell hands it on in the launcher's termination log, the real
  mpi-operator fails the MPIJob, and the stage fails with the trainer's words, not retried;
- a multi-node PyTorchJob whose worker failed first: its cause is shown, not the master's echo;
- evictions and drains mid-stage: a new attempt that resumes, without using a retry.
"""

from __future__ import annotations

import copy
import json
import time

import pytest

from tests.support.local_pods import LocalProcessKubelet
from tests.support.rlhfjobs import TINY_CONFIG, Cluster, manifest, wait_for

pytestmark = pytest.mark.k8s
STAGES = ("sft", "reward", "ppo")
SFT_ONLY = {**copy.deepcopy(TINY_CONFIG), "steps": ["sft"]}
ALL_CPU = {s: {"gpusPerNode": 0, "retryLimit": 0} for s in STAGES}


def stages(**sft) -> dict:
    return {**copy.deepcopy(ALL_CPU), "sft": {"gpusPerNode": 0, "retryLimit": 0, **sft}}


def event_messages(cluster: Cluster, name: str, reason: str) -> list[str]:
    return wait_for(f"a {reason} event of {name}", lambda: [m for _, r, m in cluster.events(name) if r == reason])


def container_command(child: dict) -> list[str]:
    replicas = child["spec"].get("pytorchReplicaSpecs") or child["spec"]["mpiReplicaSpecs"]
    first = replicas.get("Master") or replicas["Launcher"]
    return first["template"]["spec"]["containers"][0]["command"]


def test_bad_input_found_by_the_trainer_on_an_mpijob_worker_fails_the_stage_through_the_launcher(
        operator, cluster, api, tmp_path):
    """The trainer runs on a worker; only the launcher's exit reaches mpi-operator."""
    missing = "/mnt/kuberlhf/data/preferences.jsonl"  # never copied onto the claim
    config = {**copy.deepcopy(SFT_ONLY), "data": {"datasets": [f"pairwise:{missing}"]}}
    # The launcher stays running until its command has run here (KWOK would end a Job's pod at once).
    cluster.create(manifest("bad", launcher="mpijob", config=config, stages=stages(retryLimit=2), metricsPort=0,
                            podAnnotations={"kwok.kuberlhf.io/run-for": "10m"}))
    kubelet = LocalProcessKubelet(api, tmp_path)

    code = kubelet.run_mpijob(cluster.namespace, "bad-sft-1")

    assert code == 2, kubelet.log(next(iter(kubelet.pods.exit_codes)))
    job = wait_for("the job to fail", lambda: cluster.phase("bad") == "Failed" and cluster.job("bad"), timeout=30)
    sft = cluster.stage("bad", "sft")
    assert (sft["reason"], sft["attempt"]) == ("InvalidData", 1)  # retryLimit 2, yet not retried
    assert f"dataset file or directory not found: {missing}" in job["status"]["message"]
    assert "not retried: the trainer reported bad input" in job["status"]["message"]
    # How it got there: the report the trainer wrote on the claim, in the launcher's termination log.
    report = tmp_path / "claims" / "shared" / "bad" / ".reports" / "sft-1" / "rank-0.json"
    launcher = next(p for p in cluster.pods("bad-sft-1") if "launcher" in p.metadata.name)
    terminated = launcher.status.container_statuses[0].state.terminated
    assert json.loads(terminated.message) == json.loads(report.read_text())
    assert [p.status.phase for p in cluster.pods("bad-sft-1") if "worker" in p.metadata.name] in ([], ["Running"])


OOM = ("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 GiB. GPU 0 has a total capacity of "
       "79.19 GiB of which 3.12 GiB is free.")
PEER_LOST = "torch.distributed.DistBackendError: [rank0]: Connection reset by peer"


def test_a_multi_node_attempt_shows_the_cause_of_the_worker_that_failed_first(operator, kube_cluster, cluster):
    cluster.create(manifest("multi", config=SFT_ONLY, stages=stages(nodes=3, retryLimit=1)))
    cluster.running("multi-sft-1", 3)

    # worker-1 runs out of memory; a second later the master and worker-0 lose their peer. All three
    # end before the training-operator looks, as on a cluster where it reacts after the kubelets.
    with kube_cluster.paused("training-operator"):
        kube_cluster.finish_pod(cluster.namespace, "multi-sft-1-worker-1", 1, OOM)
        time.sleep(1.2)  # container end times are reported to the second
        for pod in ("multi-sft-1-master-0", "multi-sft-1-worker-0"):
            kube_cluster.finish_pod(cluster.namespace, pod, 1, PEER_LOST)
        wait_for("all three pods Failed", lambda: [p.status.phase for p in cluster.pods("multi-sft-1")] == ["Failed"] * 3)

    retried = event_messages(cluster, "multi", "StageRetrying")
    assert retried == [f"Stage sft: attempt 1 failed: Error: {OOM}; retrying as attempt 2 (1 of 1 retries)"]
    sft = cluster.stage("multi", "sft")
    assert (sft["attempt"], sft["failedAttempts"]) == (2, 1)


@pytest.mark.parametrize("launcher,kind", [("pytorchjob", "PyTorchJob"), ("mpijob", "MPIJob")])
def test_an_attempt_past_its_active_deadline_fails_the_stage_without_a_retry(operator, cluster, launcher, kind):
    cluster.create(manifest("slow", launcher=launcher, config=SFT_ONLY, stages=stages(activeDeadlineSeconds=2,
                                                                                     retryLimit=2),
                            podAnnotations={"kwok.kuberlhf.io/run-for": "10m"}))  # it would train for 10 minutes
    job = wait_for("the job to fail", lambda: cluster.phase("slow") == "Failed" and cluster.job("slow"), timeout=30)
    sft = cluster.stage("slow", "sft")
    assert (sft["reason"], sft["attempt"]) == ("DeadlineExceeded", 1)
    assert "not retried: the attempt ran past activeDeadlineSeconds" in job["status"]["message"]
    # training-operator v1.9.4 lets a quiet PyTorchJob run on past its deadline: the operator ends
    # it (its child deleted). An MPIJob's launcher Job is failed by kube-controller-manager.
    wait_for("no pod of the attempt still running", lambda: not any(
        p.status.phase in ("Pending", "Running") for p in cluster.pods("slow-sft-1")), timeout=30)


@pytest.mark.parametrize("launcher,disrupted,how", [
    ("pytorchjob", "worker-0", "kubelet"),   # node pressure: the kubelet evicts a worker
    ("pytorchjob", "master-0", "drain"),     # kubectl drain: the Eviction API takes the master
    ("mpijob", "worker-0", "kubelet"),       # mpi-operator fails the MPIJob: MPIJobEvicted
    ("mpijob", "launcher", "kubelet"),       # the launcher's batch Job fails: BackoffLimitExceeded/Evicted
])
def test_an_eviction_mid_stage_starts_a_new_attempt_that_resumes_without_using_a_retry(
        operator, kube_cluster, cluster, launcher, disrupted, how):
    # retryLimit 0: were the eviction counted as a failure, the job would fail.
    cluster.create(manifest("ev", launcher=launcher, config=SFT_ONLY, stages=stages(nodes=2),
                            podAnnotations={"kwok.kuberlhf.io/run-for": "10m"}))  # keeps the launcher running
    kind = "MPIJob" if launcher == "mpijob" else "PyTorchJob"
    cluster.running("ev-sft-1", 3 if launcher == "mpijob" else 2)
    wait_for("sft Running", lambda: cluster.stage("ev", "sft").get("state") == "Running")

    pod = next(p.metadata.name for p in cluster.pods("ev-sft-1") if disrupted in p.metadata.name)
    if how == "kubelet":
        kube_cluster.evict_pod(cluster.namespace, pod)
    else:
        cluster.core.create_namespaced_pod_eviction(pod, cluster.namespace,
                                                    {"metadata": {"name": pod, "namespace": cluster.namespace}})

    wait_for("attempt 2 running", lambda: (s := cluster.stage("ev", "sft")).get("attempt") == 2
             and s.get("state") == "Running", timeout=30)
    sft = cluster.stage("ev", "sft")
    assert (sft["failedAttempts"], sft["disruptions"]) == (0, 1)
    assert cluster.phase("ev") == "Running"
    disrupted_event = event_messages(cluster, "ev", "StageDisrupted")[0]
    assert f"attempt 1 was disrupted: {disrupted}" in disrupted_event and "attempt 2 resumes" in disrupted_event
    first, second = (c for c in cluster.children(kind) if c["metadata"]["name"] in ("ev-sft-1", "ev-sft-2"))
    # The trainer resumes from its checkpoint by itself: the new attempt runs exactly the same command
    # (the report folder aside), and in particular without --overwrite.
    assert "--overwrite" not in container_command(second)
    assert [a.replace("sft-1", "sft-2") for a in container_command(first)] == container_command(second)

    leader = "ev-sft-2-master-0" if launcher == "pytorchjob" else next(
        p.metadata.name for p in cluster.pods("ev-sft-2") if "launcher" in p.metadata.name)
    kube_cluster.finish_pod(cluster.namespace, leader, 0)
    wait_for("the job to succeed", lambda: cluster.phase("ev") == "Succeeded", timeout=30)
