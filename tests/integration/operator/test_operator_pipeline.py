"""The operator against a real kube-apiserver, with the simulated training-operator running children.

Each test is a user story: apply an RLHFJob, watch what `kubectl get` shows and which child jobs
appear, in which order.
"""

from __future__ import annotations

import json
import time

import pytest
from kubernetes import client

from tests.support.rlhfjobs import Cluster, manifest, wait_for
from tests.support.simulated_training_operator import Outcome

pytestmark = pytest.mark.k8s

RESTART = "kuberlhf.io/restart-from"


def hold(child: dict) -> Outcome:
    return Outcome(result="Hold")


def phase_is(cluster: Cluster, name: str, phase: str, timeout: float = 30) -> dict:
    return wait_for(f"{name} in phase {phase}",
                    lambda: (job := cluster.job(name)).get("status", {}).get("phase") == phase and job,
                    timeout=timeout)


def stage_is(cluster: Cluster, name: str, stage: str, state: str, attempt: int = 1) -> dict:
    def check():
        found = cluster.stage(name, stage)
        return found.get("state") == state and found.get("attempt") == attempt and found
    return wait_for(f"{name} stage {stage} {state} (attempt {attempt})", check)


def event_reasons(cluster: Cluster, name: str) -> set[str]:
    return {reason for _, reason, _ in cluster.events(name)}


@pytest.mark.parametrize("launcher,kind", [("pytorchjob", "PyTorchJob"), ("mpijob", "MPIJob")])
def test_stages_run_one_after_another_and_the_job_succeeds(operator, cluster, sim, control_plane, launcher, kind):
    cluster.create(manifest("chat", launcher=launcher))
    job = phase_is(cluster, "chat", "Succeeded")

    assert cluster.child_names(kind) == ["chat-ppo-1", "chat-reward-1", "chat-sft-1"]
    assert sim.created["chat-reward-1"] >= sim.finished["chat-sft-1"]  # each stage waits for the one before
    assert sim.created["chat-ppo-1"] >= sim.finished["chat-reward-1"]
    stages = {s["name"]: s for s in job["status"]["stages"]}
    assert {(s["state"], s["attempt"]) for s in stages.values()} == {("Succeeded", 1)}
    assert stages["reward"]["checkpointPath"] == "/mnt/kuberlhf/chat/reward"
    assert stages["ppo"]["childRef"]["kind"] == kind and stages["ppo"]["childRef"]["uid"]
    assert {c["type"]: c["status"] for c in job["status"]["conditions"]}["Succeeded"] == "True"
    assert job["status"]["observedGeneration"] == job["metadata"]["generation"]
    owner = cluster.children(kind)[0]["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["uid"]) == ("RLHFJob", "chat", job["metadata"]["uid"])

    table = control_plane.kubectl("get", "rlhf", "chat", "-n", cluster.namespace).stdout
    header, row = table.split("\n")[:2]
    assert header.split() == ["NAME", "PHASE", "PROGRESS", "STAGE", "STATE", "ATTEMPT", "STARTED", "COMPLETED", "AGE"]
    assert row.split()[:3] == ["chat", "Succeeded", "3/3"]
    wait_for("transition events", lambda: {"StageStarting", "StageSucceeded", "Succeeded"}
             <= event_reasons(cluster, "chat"))


def test_sft_and_reward_run_in_parallel_and_ppo_waits_for_both(operator, cluster, sim):
    sim.script = hold
    cluster.create(manifest("par", parallelSFTAndReward=True))
    wait_for("both children", lambda: cluster.child_names() == ["par-reward-1", "par-sft-1"])
    assert wait_for("two active stages", lambda: cluster.job("par")["status"]["stage"] == "sft,reward")

    sim.finish("par-sft-1")
    stage_is(cluster, "par", "sft", "Succeeded")
    time.sleep(1)  # give the operator every chance to start ppo too early
    assert cluster.child_names() == ["par-reward-1", "par-sft-1"]

    sim.finish("par-reward-1")
    wait_for("ppo child", lambda: "par-ppo-1" in cluster.child_names())
    sim.finish("par-ppo-1")
    phase_is(cluster, "par", "Succeeded")


def test_a_failed_stage_is_retried_as_a_new_child(operator, cluster, sim):
    sim.script = lambda child: (Outcome("Failed", message="NCCL timeout")
                                if child["metadata"]["name"] == "rt-reward-1" else Outcome())
    cluster.create(manifest("rt"))
    job = phase_is(cluster, "rt", "Succeeded")
    assert cluster.child_names() == ["rt-ppo-1", "rt-reward-1", "rt-reward-2", "rt-sft-1"]
    reward = next(s for s in job["status"]["stages"] if s["name"] == "reward")
    assert (reward["attempt"], reward["failedAttempts"]) == (2, 1)
    wait_for("a retry warning", lambda: any(t == "Warning" and r == "StageRetrying" and "NCCL timeout" in m
                                            for t, r, m in cluster.events("rt")))


def test_retries_used_up_fail_the_job_with_the_childs_reason(operator, cluster, sim):
    sim.script = lambda child: (Outcome("Failed", message="loss is NaN")
                                if "-reward-" in child["metadata"]["name"] else Outcome())
    cluster.create(manifest("ex", stages={"reward": {"gpusPerNode": 0, "retryLimit": 1}}))
    job = phase_is(cluster, "ex", "Failed")
    assert cluster.child_names() == ["ex-reward-1", "ex-reward-2", "ex-sft-1"]  # no PPO
    assert "stage reward failed" in job["status"]["message"] and "loss is NaN" in job["status"]["message"]
    failed = next(c for c in job["status"]["conditions"] if c["type"] == "Failed")
    assert failed["status"] == "True" and "PyTorchJobFailed" in failed["message"]


def test_bad_input_reported_by_the_trainer_fails_the_stage_without_retries(operator, cluster, sim, api):
    sim.script = hold
    cluster.create(manifest("bad", stages={"sft": {"gpusPerNode": 0, "retryLimit": 3}}))
    wait_for("sft child", lambda: cluster.child_names() == ["bad-sft-1"])
    report = {"reason": "InvalidConfig", "retryable": False,
              "message": "sft.learning_rate: Input should be greater than 0 (got -1)"}
    _failed_master_pod(api, cluster.namespace, "bad-sft-1", exit_code=1, message=json.dumps(report))
    sim.finish("bad-sft-1", succeeded=False, message="PyTorchJob bad-sft-1 is failed because 1 Master replica(s) failed.")
    job = phase_is(cluster, "bad", "Failed")
    assert "sft.learning_rate: Input should be greater than 0" in job["status"]["message"]
    assert cluster.child_names() == ["bad-sft-1"]


def _failed_master_pod(api: client.ApiClient, namespace: str, child: str, exit_code: int, message: str) -> None:
    """What the training-operator and the kubelet leave behind: a master pod whose container ended."""
    core = client.CoreV1Api(api)
    labels = {"training.kubeflow.org/job-name": child, "training.kubeflow.org/replica-type": "master"}
    name = f"{child}-master-0"
    core.create_namespaced_pod(namespace, {"metadata": {"name": name, "labels": labels},
                                           "spec": {"containers": [{"name": "pytorch", "image": "trainer"}]}})
    terminated = {"exitCode": exit_code, "reason": "Error", "message": message,
                  "startedAt": "2026-01-01T00:00:00Z", "finishedAt": "2026-01-01T00:01:00Z"}
    core.patch_namespaced_pod_status(name, namespace, {"status": {"phase": "Failed", "containerStatuses": [
        {"name": "pytorch", "image": "trainer", "imageID": "", "ready": False, "restartCount": 0,
         "state": {"terminated": terminated}}]}})


def test_suspend_suspends_the_running_child_and_resume_continues(operator, cluster, sim):
    sim.script = hold
    cluster.create(manifest("sus"))
    stage_is(cluster, "sus", "sft", "Running")

    cluster.patch("sus", {"spec": {"suspend": True}})
    wait_for("child suspended", lambda: cluster.children()[0]["spec"]["runPolicy"].get("suspend") is True)
    stage_is(cluster, "sus", "sft", "Suspended")
    job = phase_is(cluster, "sus", "Suspended")
    assert {c["type"]: c["status"] for c in job["status"]["conditions"]}["Suspended"] == "True"

    cluster.patch("sus", {"spec": {"suspend": False}})
    wait_for("child resumed", lambda: cluster.children()[0]["spec"]["runPolicy"].get("suspend") is False)
    stage_is(cluster, "sus", "sft", "Running")
    sim.script = lambda child: Outcome()
    sim.finish("sus-sft-1")
    phase_is(cluster, "sus", "Succeeded")
    assert cluster.child_names() == ["sus-ppo-1", "sus-reward-1", "sus-sft-1"]


def test_a_child_kueue_manages_is_queued_and_left_to_kueue(operator, cluster, sim):
    sim.script = hold
    body = manifest("kq")
    body["metadata"]["labels"] = {"kueue.x-k8s.io/queue-name": "team-a", "kueue.x-k8s.io/priority-class": "high"}
    cluster.create(body)
    child = wait_for("sft child", lambda: cluster.children() and cluster.children()[0])
    assert child["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    assert child["metadata"]["labels"]["kueue.x-k8s.io/priority-class"] == "high"

    # Kueue holds the job until its workload is admitted (its webhook sets suspend at creation).
    cluster.patch_child("PyTorchJob", "kq-sft-1", {"spec": {"runPolicy": {"suspend": True}}})
    stage_is(cluster, "kq", "sft", "Queued")
    time.sleep(1)
    assert cluster.children()[0]["spec"]["runPolicy"]["suspend"] is True  # the operator does not unsuspend

    cluster.patch_child("PyTorchJob", "kq-sft-1", {"spec": {"runPolicy": {"suspend": False}}})  # admitted
    stage_is(cluster, "kq", "sft", "Running")
    cluster.patch("kq", {"spec": {"suspend": True}})
    phase_is(cluster, "kq", "Suspended")
    time.sleep(1)
    assert cluster.children()[0]["spec"]["runPolicy"]["suspend"] is False  # Kueue's to suspend, not ours


def test_restart_from_a_stage_reruns_it_and_every_stage_after_it(operator, cluster, sim):
    cluster.create(manifest("again"))
    phase_is(cluster, "again", "Succeeded")
    cluster.patch("again", {"metadata": {"annotations": {RESTART: "reward"}}})
    stage_is(cluster, "again", "ppo", "Succeeded", attempt=2)
    job = phase_is(cluster, "again", "Succeeded")

    assert cluster.child_names() == ["again-ppo-1", "again-ppo-2", "again-reward-1", "again-reward-2", "again-sft-1"]
    assert {s["name"]: s["attempt"] for s in job["status"]["stages"]} == {"sft": 1, "reward": 2, "ppo": 2}
    assert job["status"]["restartRequest"] == "reward"
    rerun = next(c for c in cluster.children() if c["metadata"]["name"] == "again-reward-2")
    command = rerun["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["command"]
    assert command[-1] == "--overwrite"  # the trainer trains again instead of reusing its result


def controller_uid(obj: dict) -> str | None:
    return next((r["uid"] for r in obj["metadata"].get("ownerReferences") or [] if r.get("controller")), None)


@pytest.mark.parametrize("retention", ["Retain", "Delete"])
def test_a_deleted_job_goes_at_once_leaving_what_it_owns_to_the_garbage_collector(operator, cluster, sim, retention):
    """No finalizer holds the job: its children, ConfigMaps and (retention Delete) its claim carry
    a controller ownerReference, which kube-controller-manager's garbage collector follows. This
    control plane runs no garbage collector, so they stay here, owned by the deleted job."""
    sim.script = hold
    storage = {"claimTemplate": {"size": "1Gi", "retentionPolicy": retention}}
    cluster.create(manifest("gone", storage=storage))
    wait_for("sft child", lambda: cluster.child_names() == ["gone-sft-1"])
    job = cluster.job("gone")
    assert not job["metadata"].get("finalizers")
    uid = job["metadata"]["uid"]

    cluster.delete("gone")
    wait_for("the RLHFJob to go", lambda: not cluster.exists("gone"), timeout=5)
    selector = "kuberlhf.io/rlhfjob=gone"
    owned = [*cluster.children(), *(cluster.core.api_client.sanitize_for_serialization(c) for c in
                                    cluster.core.list_namespaced_config_map(cluster.namespace, label_selector=selector).items)]
    assert len(owned) == 2 and all(controller_uid(o) == uid for o in owned)
    claim = cluster.core.api_client.sanitize_for_serialization(
        cluster.core.read_namespaced_persistent_volume_claim("gone-storage", cluster.namespace))
    assert controller_uid(claim) == (uid if retention == "Delete" else None)  # retained: it outlives the job


def test_a_job_carrying_an_earlier_versions_finalizer_is_still_deleted_with_its_children(operator, cluster, sim):
    sim.script = hold
    body = manifest("legacy")
    body["metadata"]["finalizers"] = ["kuberlhf.io/finalizer"]  # as earlier operator versions left it
    cluster.create(body)
    wait_for("sft child", lambda: cluster.child_names() == ["legacy-sft-1"])
    cluster.delete("legacy")
    wait_for("the RLHFJob to go", lambda: not cluster.exists("legacy"))
    assert cluster.child_names() == []
    assert cluster.core.list_namespaced_config_map(cluster.namespace, label_selector="kuberlhf.io/rlhfjob=legacy").items == []


def test_metrics_and_liveness(operator, cluster, sim):
    cluster.create(manifest("seen"))
    phase_is(cluster, "seen", "Succeeded")
    text = wait_for("metrics of the finished job", lambda: (
        t := operator.get("/metrics")) and 'kuberlhf_operator_stage_transitions_total{stage="ppo",state="Succeeded"}' in t
        and t)
    assert "kuberlhf_operator_reconcile_duration_seconds_count" in text
    succeeded = next(line for line in text.splitlines() if line.startswith('kuberlhf_operator_rlhfjobs{phase="Succeeded"}'))
    assert float(succeeded.split()[-1]) >= 1
    health = json.loads(operator.get("/healthz"))
    assert health["rlhfjobs"]["Succeeded"] >= 1
