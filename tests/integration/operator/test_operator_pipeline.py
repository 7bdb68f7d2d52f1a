"""The operator in the test cluster: the real training-operator and mpi-operator run each stage's
child, kube-scheduler places its pods on KWOK's nodes, and a scripted trainer decides how each
attempt's pods end (tests/support/scripted_trainer.py).

Each test is a user story: apply an RLHFJob, watch what `kubectl get` shows and which child jobs
appear, in which order.
"""

from __future__ import annotations

import json
import time

import pytest

from tests.support.rlhfjobs import Cluster, manifest, printed_columns, wait_for
from tests.support.scripted_trainer import RUNS_UNTIL_ENDED, Hold, Outcome, ScriptedTrainer

pytestmark = pytest.mark.k8s

RESTART = "kuberlhf.io/restart-from"


def hold(child: str) -> Outcome:
    return Hold()


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


def cpu_stages(**settings: dict) -> dict:
    """Every stage on the CPU, with `settings` of some."""
    return {s: {"gpusPerNode": 0, **settings.get(s, {})} for s in ("sft", "reward", "ppo")}


def scripted(name: str, **spec) -> dict:
    """An RLHFJob whose pods run until the scripted trainer ends them."""
    return manifest(name, podAnnotations=RUNS_UNTIL_ENDED, **spec)


@pytest.mark.parametrize("launcher,kind", [("pytorchjob", "PyTorchJob"), ("mpijob", "MPIJob")])
def test_stages_run_one_after_another_and_the_job_succeeds(operator, kube_cluster, cluster, api, launcher, kind):
    with ScriptedTrainer(api, cluster.namespace) as trainer:
        cluster.create(scripted("chat", launcher=launcher))
        job = phase_is(cluster, "chat", "Succeeded")

    assert cluster.child_names(kind) == ["chat-ppo-1", "chat-reward-1", "chat-sft-1"]
    assert trainer.running["chat-reward-1"] >= trainer.ended["chat-sft-1"]  # each stage waits for the one before
    assert trainer.running["chat-ppo-1"] >= trainer.ended["chat-reward-1"]
    stages = {s["name"]: s for s in job["status"]["stages"]}
    assert {(s["state"], s["attempt"]) for s in stages.values()} == {("Succeeded", 1)}
    assert stages["reward"]["checkpointPath"] == "/mnt/kuberlhf/chat/reward"
    assert stages["ppo"]["childRef"]["kind"] == kind and stages["ppo"]["childRef"]["uid"]
    assert {c["type"]: c["status"] for c in job["status"]["conditions"]}["Succeeded"] == "True"
    assert job["status"]["observedGeneration"] == job["metadata"]["generation"]
    owner = cluster.children(kind)[0]["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["uid"]) == ("RLHFJob", "chat", job["metadata"]["uid"])

    table = kube_cluster.kubectl("get", "rlhf", "chat", "-n", cluster.namespace).stdout
    assert table.split("\n")[0].split() == ["NAME", "PHASE", "PROGRESS", "STAGE", "STATE", "ATTEMPT", "STARTED",
                                            "COMPLETED", "AGE"]
    row = printed_columns(table)[0]
    assert (row["NAME"], row["PHASE"], row["PROGRESS"], row["STAGE"]) == ("chat", "Succeeded", "3/3", "")
    assert row["STARTED"] and row["COMPLETED"]  # ages, e.g. "12s"
    wait_for("transition events", lambda: {"StageStarting", "StageSucceeded", "Succeeded"}
             <= event_reasons(cluster, "chat"))


def test_kubectl_get_shows_the_running_stage_its_state_and_attempt(operator, kube_cluster, cluster, api):
    with ScriptedTrainer(api, cluster.namespace, hold) as trainer:
        cluster.create(scripted("seen"))
        trainer.finish("seen-sft-1")
        stage_is(cluster, "seen", "reward", "Running")
        row = printed_columns(kube_cluster.kubectl("get", "rlhf", "seen", "-n", cluster.namespace).stdout)[0]
    assert (row["PHASE"], row["PROGRESS"], row["STAGE"], row["STATE"], row["ATTEMPT"]) == (
        "Running", "2/3", "reward", "Running", "1")
    assert row["STARTED"] and row["COMPLETED"] == ""


@pytest.mark.parametrize("launcher", ["pytorchjob", "mpijob"])
def test_scheduling_settings_reach_every_pod_and_the_scheduler_honours_them(operator, cluster, api, launcher):
    """Affinity, tolerations, pod labels and annotations, on every pod of the stage (the MPIJob's
    launcher too), placed by the real kube-scheduler."""
    only_cpu_node = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["kwok-cpu-0"]}]}]}}}
    with ScriptedTrainer(api, cluster.namespace, hold):
        cluster.create(manifest("placed", launcher=launcher, affinity=only_cpu_node,
                                tolerations=[{"key": "team", "operator": "Equal", "value": "rl", "effect": "NoSchedule"}],
                                podLabels={"team": "rl"}, podAnnotations={**RUNS_UNTIL_ENDED, "team.example/cost": "7"},
                                stages=cpu_stages(sft={"nodes": 2})))
        pods = cluster.running("placed-sft-1", 3 if launcher == "mpijob" else 2)
    assert {p.spec.node_name for p in pods} == {"kwok-cpu-0"}
    assert all(p.metadata.labels["team"] == "rl" and p.metadata.annotations["team.example/cost"] == "7" for p in pods)
    assert all(any(t.key == "team" for t in p.spec.tolerations) for p in pods)


def test_sft_and_reward_run_in_parallel_and_ppo_waits_for_both(operator, cluster, api):
    with ScriptedTrainer(api, cluster.namespace, hold) as trainer:
        cluster.create(scripted("par", parallelSFTAndReward=True))
        wait_for("both children", lambda: cluster.child_names() == ["par-reward-1", "par-sft-1"])
        assert wait_for("two active stages", lambda: cluster.job("par")["status"]["stage"] == "sft,reward")

        trainer.finish("par-sft-1")
        stage_is(cluster, "par", "sft", "Succeeded")
        time.sleep(1)  # give the operator every chance to start ppo too early
        assert cluster.child_names() == ["par-reward-1", "par-sft-1"]

        trainer.finish("par-reward-1")
        wait_for("ppo child", lambda: "par-ppo-1" in cluster.child_names())
        trainer.finish("par-ppo-1")
        phase_is(cluster, "par", "Succeeded")


def test_a_failed_stage_is_retried_as_a_new_child(operator, cluster, api):
    nccl = "torch.distributed.DistBackendError: NCCL error: unhandled system error, NCCL version 2.21.5"
    script = lambda child: Outcome(1, nccl) if child == "rt-reward-1" else Outcome()  # noqa: E731
    with ScriptedTrainer(api, cluster.namespace, script):
        cluster.create(scripted("rt"))
        job = phase_is(cluster, "rt", "Succeeded")
    assert cluster.child_names() == ["rt-ppo-1", "rt-reward-1", "rt-reward-2", "rt-sft-1"]
    reward = next(s for s in job["status"]["stages"] if s["name"] == "reward")
    assert (reward["attempt"], reward["failedAttempts"]) == (2, 1)
    wait_for("a retry warning", lambda: any(t == "Warning" and r == "StageRetrying" and nccl in m
                                            for t, r, m in cluster.events("rt")))


def test_retries_used_up_fail_the_job_with_the_trainers_words(operator, cluster, api):
    script = lambda child: Outcome(1, "RuntimeError: loss is NaN") if "-reward-" in child else Outcome()  # noqa: E731
    with ScriptedTrainer(api, cluster.namespace, script):
        cluster.create(scripted("ex", stages=cpu_stages(reward={"retryLimit": 1})))
        job = phase_is(cluster, "ex", "Failed")
    assert cluster.child_names() == ["ex-reward-1", "ex-reward-2", "ex-sft-1"]  # no PPO
    assert job["status"]["message"] == ("stage reward failed: attempt 2 failed: Error: RuntimeError: loss is NaN; "
                                        "no retries left (retryLimit 1)")
    failed = next(c for c in job["status"]["conditions"] if c["type"] == "Failed")
    assert failed["status"] == "True" and "loss is NaN" in failed["message"]


def test_bad_input_reported_by_the_trainer_fails_the_stage_without_retries(operator, cluster, api):
    report = {"reason": "InvalidConfig", "retryable": False,
              "message": "sft.learning_rate: Input should be greater than 0 (got -1)"}
    # torchrun exits 1 whatever the trainer's code: the report is what says "bad input".
    script = lambda child: Outcome(1, json.dumps(report))  # noqa: E731
    with ScriptedTrainer(api, cluster.namespace, script):
        cluster.create(scripted("bad", stages=cpu_stages(sft={"retryLimit": 3})))
        job = phase_is(cluster, "bad", "Failed")
    assert job["status"]["message"] == ("stage sft failed: attempt 1 failed: InvalidConfig: sft.learning_rate: Input "
                                        "should be greater than 0 (got -1); not retried: the trainer reported bad input")
    assert cluster.child_names() == ["bad-sft-1"]


@pytest.mark.parametrize("launcher,kind", [("pytorchjob", "PyTorchJob"), ("mpijob", "MPIJob")])
def test_suspend_suspends_the_running_child_and_resume_continues(operator, cluster, api, launcher, kind):
    with ScriptedTrainer(api, cluster.namespace, hold) as trainer:
        cluster.create(scripted("sus", launcher=launcher))
        stage_is(cluster, "sus", "sft", "Running")

        cluster.patch("sus", {"spec": {"suspend": True}})
        wait_for("child suspended", lambda: cluster.children(kind)[0]["spec"]["runPolicy"].get("suspend") is True)
        stage_is(cluster, "sus", "sft", "Suspended")
        job = phase_is(cluster, "sus", "Suspended")
        assert {c["type"]: c["status"] for c in job["status"]["conditions"]}["Suspended"] == "True"
        wait_for("the Kubeflow operator to delete its pods", lambda: not [
            p for p in cluster.pods("sus-sft-1") if p.status.phase in ("Pending", "Running")])

        trainer.script = lambda child: Outcome()  # from now on every stage trains and succeeds
        cluster.patch("sus", {"spec": {"suspend": False}})
        wait_for("child resumed", lambda: cluster.children(kind)[0]["spec"]["runPolicy"].get("suspend") is False)
        phase_is(cluster, "sus", "Succeeded")  # sft's leader ran again (a new pod), then the rest
    assert cluster.child_names(kind) == ["sus-ppo-1", "sus-reward-1", "sus-sft-1"]


def test_a_child_kueue_manages_is_queued_and_left_to_kueue(operator, cluster, api):
    body = scripted("kq")
    body["metadata"]["labels"] = {"kueue.x-k8s.io/queue-name": "team-a", "kueue.x-k8s.io/priority-class": "high"}
    with ScriptedTrainer(api, cluster.namespace, hold):
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


def test_restart_from_a_stage_reruns_it_and_every_stage_after_it(operator, cluster, api):
    with ScriptedTrainer(api, cluster.namespace):
        cluster.create(scripted("again"))
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


def test_metrics_and_liveness(operator, cluster, api):
    with ScriptedTrainer(api, cluster.namespace):
        cluster.create(scripted("counted"))
        phase_is(cluster, "counted", "Succeeded")
    text = wait_for("metrics of the finished job", lambda: (
        t := operator.get("/metrics")) and 'kuberlhf_operator_stage_transitions_total{stage="ppo",state="Succeeded"}' in t
        and t)
    assert "kuberlhf_operator_reconcile_duration_seconds_count" in text
    succeeded = next(line for line in text.splitlines() if line.startswith('kuberlhf_operator_rlhfjobs{phase="Succeeded"}'))
    assert float(succeeded.split()[-1]) >= 1
    health = json.loads(operator.get("/healthz"))
    assert health["rlhfjobs"]["Succeeded"] >= 1
