"""Reading children and their pods the way the real controllers, the scheduler and the kubelet leave
them: why a pod does not run, whether it is being disrupted, which pod failed first and why."""

from __future__ import annotations

import json

from kuberlhf_operator.observe import Child, FailureDetail, pod_failure
from rlhfjob_factories import (disruption_target, kubeflow_body, pod, running, scheduled, terminated, unschedulable,
                               waiting)

GPU_MESSAGE = "0/3 nodes are available: 3 Insufficient nvidia.com/gpu. preemption: 0/3 nodes are available: " \
              "3 No preemption victims found for incoming pod."
REPORT = json.dumps({"reason": "InvalidConfig", "message": "ppo.kl_coef: must be >= 0", "retryable": False})


def test_a_pod_the_scheduler_cannot_place_says_so_in_its_words():
    stuck = pod("demo-sft-1", conditions=unschedulable(GPU_MESSAGE))
    assert stuck.short_name == "master-0"
    assert stuck.waiting == ("Unschedulable", GPU_MESSAGE)
    unbound = pod("demo-sft-1", conditions=unschedulable(
        "0/3 nodes are available: pod has unbound immediate PersistentVolumeClaims."))
    assert "unbound immediate PersistentVolumeClaims" in unbound.waiting[1]


def test_a_scheduled_pod_waits_on_its_containers_init_containers_first():
    pulling = pod("demo-sft-1", conditions=scheduled(), containers=[
        waiting("pytorch", "ImagePullBackOff", 'Back-off pulling image "registry.example/kuberlhf-trainer:1"')])
    assert pulling.waiting == ("ImagePullBackOff", 'Back-off pulling image "registry.example/kuberlhf-trainer:1"')
    assert pulling.scheduled_at is not None
    init = pod("demo-sft-1", conditions=scheduled(),
               init_containers=[waiting("fetch", "ErrImagePull", "manifest unknown")],
               containers=[waiting("pytorch", "PodInitializing")])
    assert init.waiting == ("ErrImagePull", "init container fetch: manifest unknown")
    secret = pod("demo-sft-1", conditions=scheduled(), containers=[
        waiting("pytorch", "CreateContainerConfigError", 'secret "hf" not found')])
    assert secret.waiting == ("CreateContainerConfigError", 'secret "hf" not found')
    assert pod("demo-sft-1", phase="Running", conditions=scheduled(), containers=[running()]).waiting is None


def test_a_disrupted_pod_is_recognised_by_its_condition_or_the_kubelets_reason():
    preempted = pod("demo-sft-1", phase="Running", deleting=True, containers=[running()], conditions=[
        *scheduled(), disruption_target("PreemptionByScheduler", "default-scheduler: preempting to accommodate a "
                                                                   "higher priority pod")])
    assert preempted.disruption[0] == "PreemptionByScheduler"
    evicted = pod("demo-sft-1", "worker", 1, phase="Failed", reason="Evicted",
                  message="The node was low on resource: memory.")
    assert evicted.disruption == ("Evicted", "The node was low on resource: memory.")
    assert pod("demo-sft-1", phase="Running", containers=[running()]).disruption is None


def test_the_pod_that_failed_first_explains_a_multi_node_failure():
    """The master failed because a worker died: the worker's cause is the one to show."""
    pods = [
        pod("demo-ppo-1", "master", phase="Failed", containers=[terminated(
            "pytorch", 1, message="torch.distributed.elastic...ChildFailedError: worker-1 lost", finished="2026-01-01T00:05:09Z")]),
        pod("demo-ppo-1", "worker", 0, phase="Failed", containers=[terminated(
            "pytorch", 1, message="NCCL timeout", finished="2026-01-01T00:05:08Z")]),
        pod("demo-ppo-1", "worker", 1, phase="Failed", containers=[terminated(
            "pytorch", 137, reason="OOMKilled", finished="2026-01-01T00:05:01Z")]),
    ]
    detail = pod_failure(pods)
    assert (detail.exit_code, detail.reason, detail.retryable) == (137, "OOMKilled", True)
    assert detail.message == "worker-1 exited with code 137"


def test_the_trainers_report_is_read_from_whichever_pod_failed_first_and_the_leader_wins_a_tie():
    same_time = "2026-01-01T00:05:00Z"
    pods = [pod("demo-ppo-1", "worker", 0, phase="Failed", containers=[terminated("pytorch", 1, finished=same_time,
                                                                                  message="Traceback ...")]),
            pod("demo-ppo-1", "master", phase="Failed", containers=[terminated(
                "pytorch", 1, finished=same_time, message="torchrun noise\n" + REPORT)])]
    assert pod_failure(pods) == FailureDetail(1, "InvalidConfig", "ppo.kl_coef: must be >= 0", False)


def test_an_mpijob_launcher_carries_the_ranks_report_while_the_workers_sshd_runs_on():
    """mpi-operator v0.8.0: the workers' sshd never exits, so only the launcher's termination log
    (where its command copied the first rank's report) says what went wrong."""
    pods = [pod("demo-sft-1", "worker", 0, kind="MPIJob", phase="Running", containers=[running("worker")]),
            pod("demo-sft-1", "launcher", kind="MPIJob", phase="Failed",
                containers=[terminated("launcher", 2, message=REPORT)])]
    assert pods[1].short_name == "launcher-x7k2p" and pods[1].role == "launcher"
    assert pod_failure(pods) == FailureDetail(2, "InvalidConfig", "ppo.kl_coef: must be >= 0", False)


def test_without_a_report_the_log_tail_is_kept_and_exit_code_2_still_means_bad_input():
    assert pod_failure([pod("demo-sft-1", phase="Failed", containers=[terminated(
        "pytorch", 2, message="kuberlhf: config file not found")])]) == FailureDetail(
        2, "Error", "kuberlhf: config file not found", False)
    assert pod_failure([pod("demo-sft-1", phase="Failed", containers=[
        terminated("pytorch", 1, message="Traceback ...")])]).retryable is True
    assert pod_failure([pod("demo-sft-1", phase="Running", containers=[running()])]) is None


def test_an_evicted_pod_makes_the_failure_a_disruption():
    pods = [pod("demo-sft-1", "master", phase="Failed", containers=[terminated("pytorch", 1, message="lost peer")]),
            pod("demo-sft-1", "worker", 0, phase="Failed", reason="Evicted", message="The node was low on memory.")]
    detail = pod_failure(pods)
    assert detail.disruption == "worker-0 Evicted: The node was low on memory."
    alone = pod_failure([pod("demo-sft-1", phase="Failed", reason="Evicted", message="low on memory")])
    assert alone.disruption == "master-0 Evicted: low on memory" and alone.retryable


def test_a_child_resumed_or_admitted_by_kueue_starts_its_clock_again():
    created = kubeflow_body("sft", 1, [{"type": "Created", "status": "True"}])
    created["metadata"]["creationTimestamp"] = "2026-01-01T00:00:00Z"
    assert Child.from_body(created).since == "2026-01-01T00:00:00Z"
    admitted = kubeflow_body("sft", 1, [
        {"type": "Created", "status": "True"},
        {"type": "Suspended", "status": "False", "reason": "PyTorchJobResumed",
         "lastTransitionTime": "2026-01-01T02:00:00Z"}])
    admitted["metadata"]["creationTimestamp"] = "2026-01-01T00:00:00Z"
    child = Child.from_body(admitted)
    assert child.state == "Starting" and child.since == "2026-01-01T02:00:00Z"


def test_a_pod_deleted_while_disrupted_is_remembered_for_its_job_for_a_while():
    from kuberlhf_operator.observe import Departed

    now = [0.0]
    departed = Departed(keep_s=600, clock=lambda: now[0])
    drained = pod("demo-sft-1", phase="Running", conditions=[
        disruption_target("EvictionByEvictionAPI", "Eviction API: evicting")])
    departed.add(("team", "demo"), drained)
    assert departed.of(("team", "demo")) == [drained] and departed.of(("team", "other")) == []
    now[0] = 599
    assert departed.of(("team", "demo")) == [drained]
    now[0] = 600
    assert departed.of(("team", "demo")) == []
