"""decide() against what real clusters do to a stage: children that only reach `Created` because
their pods cannot run, pods evicted or preempted mid-stage, failures that start on one pod of many,
activeDeadlineSeconds, quotas; and the status kstatus and `kubectl get` read."""

from __future__ import annotations

from dataclasses import replace

from kuberlhf_operator.decide import CreateChild, DeleteChild, creation_waiting, decide
from kuberlhf_operator.lookups import children_without_pods
from kuberlhf_operator.job import Job
from kuberlhf_operator.names import RESTART_ANNOTATION
from kuberlhf_operator.observe import FailureDetail, pod_failure
from rlhfjob_factories import (NOW, child, disruption_target, job_body, make_job, pod, running, scheduled, terminated,
                               unschedulable, waiting)
from test_decide import run, states
from test_observe import GPU_MESSAGE, REPORT


def at(seconds: int) -> str:
    return f"2026-01-01T{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}Z"


def started(spec=None, **kwargs):
    """A job whose sft attempt 1 has been asked for (its child is what the test observes next)."""
    _, job = run(make_job(spec=spec or {}, **kwargs))
    return job


def stage(job: Job, name: str = "sft"):
    return job.status.stage_status(name)


def warnings(decision) -> dict[str, str]:
    return {e.reason: e.message for e in decision.events if e.type == "Warning"}


# -- pods that do not start ------------------------------------------------------------------------


def test_unschedulable_pods_are_shown_while_waiting_and_fail_the_attempt_at_the_start_deadline():
    job = started({"stages": {"sft": {"startDeadlineSeconds": 600}}})
    created = child("sft", state="Starting")  # the PyTorchJob has only Created: its master does not run
    pending = [pod("demo-sft-1", conditions=unschedulable(GPU_MESSAGE))]

    decision, job = run(job, [created], now=at(60))
    assert decision.actions == [] and decision.events == []
    assert stage(job).state == "Starting" and stage(job).reason == "Starting"  # no pods seen yet: nothing to say
    decision = decide(job, [created], at(60), pending)
    assert decision.status.stage_status("sft").message == f"waiting for pods: master-0 Unschedulable: {GPU_MESSAGE}"
    assert "master-0 Unschedulable" in decision.status.message  # kubectl get -o wide shows it too
    assert decision.recheck_in == 540  # the deadline is noticed without an event
    assert decision.actions == [] and decision.events == []

    decision = decide(job, [created], at(600), pending)
    assert decision.actions == [DeleteChild("PyTorchJob", "demo-sft-1"), CreateChild("sft", 2)]
    sft = decision.status.stage_status("sft")
    assert (sft.state, sft.attempt, sft.failed_attempts, sft.reason) == ("Starting", 2, 1, "StartDeadlineExceeded")
    assert sft.message.startswith("attempt 1 failed: StartDeadlineExceeded: pods not running after 600 s "
                                  f"(startDeadlineSeconds): master-0 Unschedulable: {GPU_MESSAGE}")
    assert "master-0 Unschedulable" in warnings(decision)["StageRetrying"]


def test_pods_on_their_usual_way_to_running_are_named_only_if_they_stay_there():
    """Pending (not scheduled yet, or scheduled with nothing to say) and ContainerCreating are where
    every pod passes: naming them costs a status write each; after 30 s they may say something."""
    job = started()
    fresh = child("sft", state="Starting", since=at(0))
    unplaced, creating = pod("demo-sft-1"), pod("demo-sft-1", conditions=scheduled(), containers=[
        waiting("pytorch", "ContainerCreating")])
    for usual in (unplaced, creating):
        decision = decide(job, [fresh], at(10), [usual])
        assert stage(Job.from_body(job_body(status=decision.status.model_dump(by_alias=True)))).reason == "Starting"
        assert decision.recheck_in == 20
    assert decide(job, [fresh], at(30), [unplaced]).status.stage_status("sft").message == \
        "waiting for pods: master-0 Pending: not scheduled yet"
    stuck = pod("demo-sft-1", "worker", 0, conditions=unschedulable(GPU_MESSAGE))
    assert decide(job, [fresh], at(10), [unplaced, stuck]).status.stage_status("sft").message == \
        f"waiting for pods: worker-0 Unschedulable: {GPU_MESSAGE}"  # the telling reason at once, alone


def test_workers_waiting_for_one_reason_are_named_together():
    job = started({"stages": {"sft": {"nodes": 3}}})
    pods = [pod("demo-sft-1", "master", phase="Running", conditions=scheduled(), containers=[running()]),
            *(pod("demo-sft-1", "worker", i, conditions=unschedulable(GPU_MESSAGE)) for i in (0, 1))]
    # The master runs, so the PyTorchJob says Running; torchrun waits for the workers: still starting.
    decision = decide(job, [child("sft", state="Running")], at(30), pods)
    sft = decision.status.stage_status("sft")
    assert sft.state == "Starting"
    assert sft.message == f"waiting for pods: worker-0, worker-1 Unschedulable: {GPU_MESSAGE}"
    decision = decide(job, [child("sft", state="Running")], at(1200), pods)
    assert decision.actions[0] == DeleteChild("PyTorchJob", "demo-sft-1")


def test_an_image_that_cannot_exist_fails_at_once_without_a_retry():
    job = started({"stages": {"sft": {"retryLimit": 3}}})
    bad = [pod("demo-sft-1", conditions=scheduled(), containers=[
        waiting("pytorch", "InvalidImageName", 'Failed to apply default image tag "Registry/x:1"')])]
    decision = decide(job, [child("sft", state="Starting")], at(5), bad)
    sft = decision.status.stage_status("sft")
    assert decision.actions == [DeleteChild("PyTorchJob", "demo-sft-1")]
    assert (sft.state, sft.reason) == ("Failed", "ImagePullFailed")
    assert "master-0 InvalidImageName" in sft.message and "not retried" in sft.message
    assert decision.status.phase == "Failed" and "StageFailed" in warnings(decision)


def test_a_pull_that_keeps_failing_fails_the_attempt_sooner_than_the_start_deadline():
    job = started({"stages": {"sft": {"imagePullDeadlineSeconds": 300}}})
    backoff = [pod("demo-sft-1", conditions=scheduled(at(20)), containers=[
        waiting("pytorch", "ImagePullBackOff", 'Back-off pulling image "registry.example/kuberlhf-trainer:1"')])]
    decision = decide(job, [child("sft", state="Starting")], at(120), backoff)
    assert decision.actions == [] and decision.recheck_in == 200  # 300 s after it was scheduled
    assert "master-0 ImagePullBackOff: Back-off pulling image" in decision.status.stage_status("sft").message
    decision = decide(job, [child("sft", state="Starting")], at(320), backoff)
    assert decision.actions == [DeleteChild("PyTorchJob", "demo-sft-1"), CreateChild("sft", 2)]
    assert "ImagePullFailed: master-0 ImagePullBackOff" in decision.status.stage_status("sft").message
    assert "imagePullDeadlineSeconds" in decision.status.stage_status("sft").message


def test_an_init_container_that_cannot_pull_and_a_missing_secret_are_named():
    job = started()
    pods = [pod("demo-sft-1", "master", conditions=scheduled(), init_containers=[
                waiting("fetch", "ErrImagePull", "manifest unknown")], containers=[waiting("pytorch", "PodInitializing")]),
            pod("demo-sft-1", "worker", 0, conditions=scheduled(), containers=[
                waiting("pytorch", "CreateContainerConfigError", 'secret "hf" not found')])]
    message = decide(job, [child("sft", state="Starting")], at(10), pods).status.stage_status("sft").message
    assert "master-0 ErrImagePull: init container fetch: manifest unknown" in message
    assert 'worker-0 CreateContainerConfigError: secret "hf" not found' in message


def test_a_child_whose_pods_never_appear_fails_at_the_deadline_pointing_at_its_events():
    job = started({"stages": {"sft": {"startDeadlineSeconds": 300}}})
    decision = decide(job, [child("sft", state="Starting")], at(300), [])
    assert "no pod was created; the PyTorchJob's events say why (e.g. a quota)" in \
           decision.status.stage_status("sft").message


QUOTA_ON_PODS = ('Error creating: pods "demo-sft-1-master-0" is forbidden: exceeded quota: team, requested: '
                 'requests.nvidia.com/gpu=1, used: requests.nvidia.com/gpu=8, limited: requests.nvidia.com/gpu=8')


def test_pods_a_quota_refused_to_the_kubeflow_operator_are_waited_for_in_its_own_words():
    """A quota on GPUs refuses the training-operator's pods, not our child: the child's Warning
    event is the only place that says so, so it is read once the child has been podless a while."""
    job = started({"stages": {"sft": {"startDeadlineSeconds": 600}}})
    fresh = child("sft", state="Starting", since=at(0))
    assert children_without_pods(job, [fresh], [], at(2)) == []  # the operator may not have made them yet
    assert decide(job, [fresh], at(2), []).recheck_in == 3  # ... so look again when it should have
    assert children_without_pods(job, [fresh], [], at(5)) == [fresh]
    assert children_without_pods(job, [fresh], [pod("demo-sft-1", conditions=scheduled())], at(5)) == []

    refused = replace(fresh, warning=("FailedCreatePod", QUOTA_ON_PODS))
    decision, job = run(job, [refused], now=at(10))
    sft = stage(job)
    assert (sft.state, sft.attempt, sft.failed_attempts, sft.reason) == ("Starting", 1, 0, "QuotaExceeded")
    assert sft.message == f"waiting for pods: no pod was created; the PyTorchJob warns: FailedCreatePod: {QUOTA_ON_PODS}"
    assert warnings(decision) == {"QuotaExceeded": f"Stage sft: {sft.message}"}
    assert decide(job, [refused], at(70), []).events == []  # said once

    failed = decide(job, [refused], at(600), []).status.stage_status("sft")
    assert failed.reason == "StartDeadlineExceeded" and f"FailedCreatePod: {QUOTA_ON_PODS}" in failed.message


def test_a_podless_child_whose_events_say_nothing_still_waits_quietly():
    job = started()
    decision = decide(job, [child("sft", state="Starting", since=at(0), warning=None)], at(30), [])
    assert stage(Job.from_body(job_body(status=decision.status.model_dump(by_alias=True)))).reason == "Starting"
    assert decision.events == [] and decision.actions == []


def test_the_clock_starts_when_kueue_admits_the_child_not_when_it_was_created():
    job = started({"stages": {"sft": {"startDeadlineSeconds": 600}}}, labels={"kueue.x-k8s.io/queue-name": "q"})
    _, job = run(job, [child("sft", state="Suspended", suspend=True, kueue=True)], now=at(10))
    assert stage(job).state == "Queued"
    admitted = child("sft", state="Starting", kueue=True, since=at(3600))  # an hour in the queue
    decision, job = run(job, [admitted], now=at(3610))
    assert decision.actions == [] and stage(job).state == "Starting"
    assert [(e.type, e.reason) for e in decision.events] == [("Normal", "StageAdmitted")]
    decision = decide(job, [admitted], at(3600 + 599), [pod("demo-sft-1", conditions=unschedulable(GPU_MESSAGE))])
    assert decision.actions == [] and decision.recheck_in == 1


def test_a_pod_pending_after_the_stage_ran_is_not_a_start_failure():
    job = started()
    _, job = run(job, [child("sft", state="Running")], now=at(30))
    assert stage(job).state == "Running"
    replacement = [pod("demo-sft-1", "worker", 0, conditions=unschedulable(GPU_MESSAGE))]
    decision = decide(job, [child("sft", state="Running")], at(86400 - 1), replacement)
    assert decision.actions == [] and decision.status.stage_status("sft").state == "Running"


# -- disruptions --------------------------------------------------------------------------------


def test_a_preempted_pod_starts_a_new_attempt_that_resumes_without_using_a_retry():
    job = started({"stages": {"sft": {"retryLimit": 0}}})
    _, job = run(job, [child("sft", state="Running")])
    preempted = pod("demo-sft-1", phase="Running", deleting=True, containers=[running()], conditions=[
        *scheduled(), disruption_target("PreemptionByScheduler", "default-scheduler: preempting")])
    decision, job = run(job, [child("sft", state="Running")], at(60), [preempted])
    assert decision.actions == [] and stage(job).disruption.startswith("master-0 PreemptionByScheduler")
    # The pod is gone by the time the PyTorchJob fails (the trainer saved a checkpoint on SIGTERM).
    failed = replace(child("sft", state="Failed", reason="PyTorchJobFailed"),
                     failure=FailureDetail(143, "Error", "kuberlhf: stopped; run the step again to resume", True))
    decision, job = run(job, [failed], now=at(120))
    assert decision.actions == [CreateChild("sft", 2, overwrite=False)]  # resumes, does not retrain
    sft = stage(job)
    assert (sft.state, sft.attempt, sft.failed_attempts, sft.disruptions) == ("Starting", 2, 0, 1)
    assert sft.disruption is None and sft.reason == "Disrupted"
    assert "attempt 2 resumes from the last checkpoint (1 of 10 disruptions)" in sft.message
    assert "master-0 PreemptionByScheduler" in warnings(decision)["StageDisrupted"]
    assert job.status.phase == "Running"


def test_an_eviction_seen_only_in_the_failed_childs_pods_is_a_disruption_too():
    job = started({"stages": {"sft": {"retryLimit": 0}}})
    detail = pod_failure([pod("demo-sft-1", phase="Failed", reason="Evicted", message="The node was low on memory.")])
    decision, job = run(job, [replace(child("sft", state="Failed", reason="PyTorchJobFailed"), failure=detail)])
    assert decision.actions == [CreateChild("sft", 2)] and stage(job).disruptions == 1


def test_an_mpijob_failed_for_evicted_workers_is_a_disruption():
    job = started({"launcher": "mpijob", "stages": {"sft": {"retryLimit": 0}}})
    evicted = child("sft", state="Failed", kind="MPIJob", reason="MPIJobEvicted", message="1/2 workers are evicted")
    decision, job = run(job, [evicted])
    assert decision.actions == [CreateChild("sft", 2)]
    assert "MPIJobEvicted: 1/2 workers are evicted" in stage(job).message


def test_disruptions_past_the_limit_count_against_retry_limit():
    job = started({"stages": {"sft": {"retryLimit": 0, "disruptionLimit": 1}}})
    evicted = lambda n: child("sft", n, state="Failed", kind="PyTorchJob", reason="BackoffLimitExceeded/Evicted")  # noqa: E731
    decision, job = run(job, [evicted(1)])
    assert decision.actions == [CreateChild("sft", 2)]
    decision, job = run(job, [evicted(1), evicted(2)])
    assert decision.actions == [] and job.status.phase == "Failed"
    assert "disruptionLimit 1 reached" in stage(job).message


def test_a_restarted_stage_keeps_overwrite_after_a_disruption():
    """--overwrite only stops the trainer from reusing the result from before the restart; it
    resumes from its in-step checkpoints either way."""
    job = started()
    done = [child("sft", state="Succeeded"), child("reward", state="Succeeded"), child("ppo", state="Succeeded")]
    for _ in range(3):
        _, job = run(job, done)
    asked = Job.from_body(job_body(status=job.status.model_dump(by_alias=True),
                                   annotations={RESTART_ANNOTATION: "ppo"}))
    _, job = run(asked, done)
    evicted = child("ppo", 2, state="Failed", reason="MPIJobEvicted")
    decision, _ = run(job, [*done, evicted])
    assert decision.actions == [CreateChild("ppo", 3, overwrite=True)]


# -- failures the trainer or the Kubeflow operator report -------------------------------------


def test_a_configuration_error_reported_by_an_mpijob_launcher_is_not_retried():
    job = started({"launcher": "mpijob", "stages": {"sft": {"retryLimit": 3}}})
    detail = pod_failure([pod("demo-sft-1", "launcher", kind="MPIJob", phase="Failed",
                              containers=[terminated("launcher", 1, message=REPORT)])])
    failed = child("sft", state="Failed", kind="MPIJob", reason="BackoffLimitExceeded/Error",
                   message="Job has reached the specified backoff limit")
    decision, job = run(job, [replace(failed, failure=detail)])
    assert decision.actions == [] and job.status.phase == "Failed"
    assert stage(job).reason == "InvalidConfig" and "ppo.kl_coef: must be >= 0" in job.status.message


def test_a_worker_that_failed_first_is_the_reason_shown_for_a_multi_node_attempt():
    job = started({"stages": {"sft": {"nodes": 2}}})
    detail = pod_failure([
        pod("demo-sft-1", "master", phase="Failed", containers=[terminated(
            "pytorch", 1, message="ChildFailedError", finished="2026-01-01T00:09:00Z")]),
        pod("demo-sft-1", "worker", 0, phase="Failed", containers=[terminated(
            "pytorch", 137, reason="OOMKilled", finished="2026-01-01T00:08:00Z")])])
    decision, job = run(job, [replace(child("sft", state="Failed", reason="PyTorchJobFailed"), failure=detail)])
    assert decision.actions == [CreateChild("sft", 2)]
    assert "attempt 1 failed: OOMKilled: worker-0 exited with code 137" in stage(job).message


def test_an_attempt_past_active_deadline_seconds_is_not_retried():
    job = started({"stages": {"sft": {"activeDeadlineSeconds": 3600, "retryLimit": 2}}})
    over = child("sft", state="Failed", reason="PyTorchJobFailed",
                 message="Job demo-sft-1 has failed because it was active longer than specified deadline")
    decision, job = run(job, [over])
    assert decision.actions == [] and stage(job).state == "Failed" and stage(job).reason == "DeadlineExceeded"
    assert "not retried: the attempt ran past activeDeadlineSeconds" in stage(job).message


def test_an_attempt_still_running_at_active_deadline_seconds_is_ended_by_the_operator():
    """training-operator v1.9.4 does not fail a quietly running PyTorchJob at its deadline (the
    requeue it asks for goes to a no-op queue): the operator ends the attempt itself."""
    job = started({"stages": {"sft": {"activeDeadlineSeconds": 600, "retryLimit": 2}}})
    running_child = child("sft", state="Running", since=at(0))
    decision, job = run(job, [running_child], now=at(200))
    assert decision.actions == [] and decision.recheck_in == 400 and stage(job).state == "Running"

    decision = decide(job, [running_child], at(600))
    sft = decision.status.stage_status("sft")
    assert decision.actions == [DeleteChild("PyTorchJob", "demo-sft-1")]
    assert (sft.state, sft.reason, sft.attempt) == ("Failed", "DeadlineExceeded", 1)
    assert sft.message == ("attempt 1 failed: DeadlineExceeded: PyTorchJob demo-sft-1 was still running after "
                           "activeDeadlineSeconds (600 s); not retried: the attempt ran past activeDeadlineSeconds")


def test_a_suspended_or_finished_child_or_one_without_a_deadline_is_past_no_deadline():
    job = started({"stages": {"sft": {"activeDeadlineSeconds": 600}}})
    for quiet in (child("sft", state="Suspended", suspend=True, since=at(0)), child("sft", state="Succeeded")):
        assert DeleteChild("PyTorchJob", "demo-sft-1") not in decide(job, [quiet], at(7200)).actions
    unlimited = decide(started(), [child("sft", state="Running", since=at(0))], at(86400))
    assert unlimited.actions == [] and unlimited.recheck_in is None


# -- quota -----------------------------------------------------------------------------------------


def test_a_quota_refusal_is_waited_for_and_shown_not_a_failed_attempt():
    job = started({"stages": {"sft": {"retryLimit": 0}}})
    refusal = ('pytorchjobs.kubeflow.org "demo-sft-1" is forbidden: exceeded quota: team-jobs, requested: '
               'count/pytorchjobs.kubeflow.org=1, used: count/pytorchjobs.kubeflow.org=4, limited: '
               'count/pytorchjobs.kubeflow.org=4')
    decision = creation_waiting(job, job.status, "sft", "QuotaExceeded", refusal, NOW)
    sft = decision.status.stage_status("sft")
    assert (sft.state, sft.attempt, sft.failed_attempts, sft.reason) == ("Starting", 1, 0, "QuotaExceeded")
    assert sft.message == f"waiting to create demo-sft-1: {refusal}"
    assert decision.status.phase == "Running" and "exceeded quota" in decision.status.message
    assert [e.reason for e in decision.events] == ["QuotaExceeded"]
    assert creation_waiting(job, decision.status, "sft", "QuotaExceeded", refusal, NOW).events == []  # said once
    then = Job.from_body(job_body(spec=job.spec.model_dump(by_alias=True),
                                  status=decision.status.model_dump(by_alias=True)))
    assert decide(then, [], NOW).actions == [CreateChild("sft", 1)]  # and asked for again


# -- what kstatus and kubectl get read -------------------------------------------------------


def conditions(job: Job) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status, c.reason) for c in job.status.conditions}


def test_kstatus_reads_reconciling_while_running_stalled_once_failed_ready_once_succeeded():
    job = started({"stages": {"sft": {"retryLimit": 0}}})
    assert conditions(job)["Reconciling"] == ("True", "StagesRunning")
    assert conditions(job)["Ready"] == ("False", "Running") and conditions(job)["Stalled"][0] == "False"
    assert all(c.observed_generation == 1 for c in job.status.conditions)
    _, failed = run(job, [child("sft", state="Failed", reason="PyTorchJobFailed")])
    assert conditions(failed)["Stalled"] == ("True", "StageFailed")
    assert conditions(failed)["Reconciling"][0] == "False" and conditions(failed)["Ready"][0] == "False"
    done = started({"config": {"steps": ["sft"]}})
    _, done = run(done, [child("sft", state="Succeeded")])
    assert conditions(done)["Ready"] == ("True", "AllStagesSucceeded")
    assert conditions(done)["Reconciling"][0] == conditions(done)["Stalled"][0] == "False"


def test_the_columns_of_kubectl_get_show_stage_k_of_n_its_state_and_attempt():
    job = started({"stages": {"sft": {"retryLimit": 1}}})
    assert (job.status.progress, job.status.stage, job.status.stage_state, job.status.attempt) == \
           ("1/3", "sft", "Starting", "1")
    _, job = run(job, [child("sft", state="Failed")])
    _, job = run(job, [child("sft", state="Failed"), child("sft", 2, state="Succeeded")])
    _, job = run(job, [child("sft", 2, state="Succeeded"), child("reward", state="Running")])
    assert (job.status.progress, job.status.stage, job.status.stage_state, job.status.attempt) == \
           ("2/3", "reward", "Running", "1")
    assert states(job)["ppo"] == "Pending"
    assert job.status.start_time == NOW and job.status.completion_time is None
