"""The operator dies in the middle of a stage and a fresh process takes over: never a second child.

The operator is SIGKILLed (no clean shutdown, nothing flushed); the stage's pods end and the
training-operator marks its child Succeeded while no operator runs; a new process with empty
memory must carry on from what the API server holds.
"""

from __future__ import annotations

import pytest

from tests.support.rlhfjobs import manifest, wait_for
from tests.support.scripted_trainer import RUNS_UNTIL_ENDED, Hold, Outcome, ScriptedTrainer

pytestmark = pytest.mark.k8s


def scripted(name: str, **spec) -> dict:
    return manifest(name, podAnnotations=RUNS_UNTIL_ENDED, **spec)


@pytest.mark.parametrize("stage", ["sft", "reward", "ppo"])
def test_operator_killed_mid_stage_carries_on_without_duplicates(operator, cluster, api, stage):
    held = f"mid-{stage}-1"
    script = lambda child: Hold() if child == held else Outcome()  # noqa: E731
    with ScriptedTrainer(api, cluster.namespace, script) as trainer:
        cluster.create(scripted("mid"))
        wait_for(f"{stage} running", lambda: cluster.stage("mid", stage).get("state") == "Running")

        operator.stop(kill=True)
        trainer.finish(held)  # the stage ends while nobody watches
        wait_for("the child to succeed", lambda: any(
            c["type"] == "Succeeded" and c["status"] == "True"
            for c in next(c for c in cluster.children() if c["metadata"]["name"] == held)["status"]["conditions"]))
        operator.start()

        wait_for("the job to succeed", lambda: cluster.phase("mid") == "Succeeded")
    assert cluster.child_names() == ["mid-ppo-1", "mid-reward-1", "mid-sft-1"]
    stages = {s["name"]: (s["state"], s["attempt"], s["failedAttempts"]) for s in cluster.job("mid")["status"]["stages"]}
    assert stages == {name: ("Succeeded", 1, 0) for name in ("sft", "reward", "ppo")}


def test_operator_killed_between_claiming_an_attempt_and_creating_its_child(operator, cluster, api):
    """The status already names attempt 1 of sft, but the child was never created (the crash
    came between the two writes): the next operator creates exactly that child."""
    operator.stop(kill=True)
    cluster.create(scripted("gap"))
    claimed = {"status": {"phase": "Running", "stage": "sft", "stages": [
        {"name": "sft", "state": "Starting", "attempt": 1, "failedAttempts": 0},
        {"name": "reward", "state": "Pending", "attempt": 0, "failedAttempts": 0},
        {"name": "ppo", "state": "Pending", "attempt": 0, "failedAttempts": 0}]}}
    cluster.custom.patch_namespaced_custom_object_status(
        "kuberlhf.io", "v1alpha1", cluster.namespace, "rlhfjobs", "gap", claimed)
    with ScriptedTrainer(api, cluster.namespace):
        operator.start()
        wait_for("the job to succeed", lambda: cluster.phase("gap") == "Succeeded")
    assert cluster.child_names() == ["gap-ppo-1", "gap-reward-1", "gap-sft-1"]


def test_two_operators_at_once_still_create_one_child_per_attempt(operator, cluster, api, kube_cluster, tmp_path):
    """Even a misconfigured second replica (two standalone operators) cannot duplicate a stage:
    attempt numbers are claimed in status under optimistic concurrency and named into children."""
    from tests.support.operator_process import OperatorProcess

    second = OperatorProcess(kube_cluster.kubeconfig, tmp_path / "second.log").start()
    try:
        with ScriptedTrainer(api, cluster.namespace):
            for i in range(3):
                cluster.create(scripted(f"twin{i}", parallelSFTAndReward=True))
            for i in range(3):
                wait_for(f"twin{i} to succeed", lambda i=i: cluster.phase(f"twin{i}") == "Succeeded")
    finally:
        second.stop()
    names = cluster.child_names()
    assert len(names) == len(set(names)) == 9
    assert all(name.endswith("-1") for name in names)
