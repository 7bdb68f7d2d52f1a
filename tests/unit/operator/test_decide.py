"""decide(): the pipeline's behaviour as a user sees it in status, events and child jobs."""

from __future__ import annotations

from dataclasses import replace

import pytest

from kuberlhf_operator.decide import CreateChild, DeleteChild, SuspendChild, attempt_creation_failed, decide
from kuberlhf_operator.lookups import failures_to_explain, missing_children
from kuberlhf_operator.job import Job
from kuberlhf_operator.names import RESTART_ANNOTATION
from kuberlhf_operator.observe import FailureDetail, child_state
from rlhfjob_factories import NOW, child, job_body, make_job

LATER = "2026-01-01T01:00:00Z"


def run(job: Job, children=(), now: str = NOW, pods=()):
    """decide(), then feed its status back like the API server would, for the next pass."""
    decision = decide(job, list(children), now, pods)
    body = job_body(spec=job.spec.model_dump(by_alias=True), status=decision.status.model_dump(by_alias=True),
                    labels=dict(job.labels), annotations=dict(job.annotations))
    return decision, Job.from_body(body)


def states(job: Job) -> dict[str, str]:
    return {s.name: s.state for s in job.status.stages}


def reasons(decision) -> list[str]:
    return [e.reason for e in decision.events]


def test_a_new_job_starts_sft_only():
    decision, job = run(make_job())
    assert decision.actions == [CreateChild("sft", 1)]
    assert states(job) == {"sft": "Starting", "reward": "Pending", "ppo": "Pending"}
    assert job.status.phase == "Running" and job.status.stage == "sft"
    sft = job.status.stage_status("sft")
    assert sft.child_ref.name == "demo-sft-1" and sft.checkpoint_path == "/mnt/kuberlhf/demo/sft"
    assert "StageStarting" in reasons(decision)


def test_no_finalizer_holds_the_job_its_children_are_the_garbage_collectors():
    body = job_body()
    body["metadata"]["finalizers"] = []
    decision, job = run(Job.from_body(body))
    assert decision.actions == [CreateChild("sft", 1)]  # and nothing that adds a finalizer


def test_starting_stage_whose_child_is_not_seen_yet_asks_again_for_the_same_child():
    _, job = run(make_job())
    decision, _ = run(job)  # e.g. the status write came back before the child's watch event
    assert decision.actions == [CreateChild("sft", 1)]
    assert decision.events == []


def test_a_created_child_that_has_not_started_changes_nothing():
    _, job = run(make_job())
    decision, after = run(job, [child("sft", state="Starting")])
    assert decision.actions == [] and decision.events == []
    assert after.status == job.status  # no status write until the child runs


def test_the_stages_run_in_order_and_the_job_succeeds():
    _, job = run(make_job())
    decision, job = run(job, [child("sft", state="Running")])
    assert decision.actions == [] and states(job)["sft"] == "Running"
    decision, job = run(job, [child("sft", state="Succeeded")])
    assert decision.actions == [CreateChild("reward", 1)]
    assert "StageSucceeded" in reasons(decision)
    done = [child("sft", state="Succeeded"), child("reward", state="Succeeded")]
    decision, job = run(job, done)
    assert decision.actions == [CreateChild("ppo", 1)]
    decision, job = run(job, [*done, child("ppo", state="Succeeded")], now=LATER)
    assert decision.actions == []
    assert job.status.phase == "Succeeded" and job.status.stage == ""
    assert job.status.completion_time == LATER
    assert {c.type: c.status for c in job.status.conditions} == {
        "Ready": "True", "Reconciling": "False", "Stalled": "False",
        "Running": "False", "Suspended": "False", "Succeeded": "True", "Failed": "False"}
    assert "Succeeded" in reasons(decision)


def test_steps_select_a_subset_of_stages():
    decision, job = run(make_job(spec={"config": {"steps": ["reward", "ppo"]}}))
    assert decision.actions == [CreateChild("reward", 1)]
    assert states(job)["sft"] == "Skipped"
    decision, job = run(job, [child("reward", state="Succeeded")])
    assert decision.actions == [CreateChild("ppo", 1)]  # not waiting on the skipped sft


def test_parallel_sft_and_reward_then_ppo_after_both():
    decision, job = run(make_job(spec={"parallelSFTAndReward": True}))
    assert decision.actions == [CreateChild("sft", 1), CreateChild("reward", 1)]
    assert job.status.stage == "sft,reward"
    decision, job = run(job, [child("sft", state="Succeeded"), child("reward", state="Running")])
    assert decision.actions == []  # ppo waits for the reward model too
    decision, job = run(job, [child("sft", state="Succeeded"), child("reward", state="Succeeded")])
    assert decision.actions == [CreateChild("ppo", 1)]


def test_a_failed_attempt_is_retried_under_a_new_name():
    _, job = run(make_job(spec={"stages": {"sft": {"retryLimit": 2}}}))
    failed = child("sft", state="Failed", reason="PyTorchJobFailed", message="pod OOMKilled")
    decision, job = run(job, [failed])
    assert decision.actions == [CreateChild("sft", 2)]
    sft = job.status.stage_status("sft")
    assert (sft.state, sft.attempt, sft.failed_attempts) == ("Starting", 2, 1)
    assert "pod OOMKilled" in sft.message and "retrying as attempt 2" in sft.message
    assert [e.type for e in decision.events if e.reason == "StageRetrying"] == ["Warning"]
    decision, job = run(job, [failed, child("sft", 2, state="Running")])
    assert decision.actions == [] and states(job)["sft"] == "Running"


def test_retries_exhausted_fail_the_job_with_the_childs_reason():
    _, job = run(make_job(spec={"stages": {"sft": {"retryLimit": 0}}}))
    failed = child("sft", state="Failed", reason="PyTorchJobFailed", message="PyTorchJob demo-sft-1 is failed")
    decision, job = run(job, [failed])
    assert decision.actions == []
    assert job.status.phase == "Failed"
    failed_condition = next(c for c in job.status.conditions if c.type == "Failed")
    assert failed_condition.status == "True" and "PyTorchJobFailed" in failed_condition.message
    assert "stage sft failed" in job.status.message and "is failed" in job.status.message
    assert {e.reason: e.type for e in decision.events}["StageFailed"] == "Warning"
    decision, job = run(job, [failed])
    assert decision.actions == [] and decision.events == []  # a failed job stays put


def test_bad_input_reported_by_the_trainer_fails_at_once_with_its_message():
    _, job = run(make_job(spec={"stages": {"sft": {"retryLimit": 3}}}))
    report = FailureDetail(1, "InvalidConfig", "sft.learning_rate: Input should be greater than 0", retryable=False)
    failed = replace(child("sft", state="Failed", reason="PyTorchJobFailed"), failure=report)
    assert failures_to_explain(job, [failed]) == [failed]
    decision, job = run(job, [failed])
    assert decision.actions == [] and job.status.phase == "Failed"
    assert "sft.learning_rate: Input should be greater than 0" in job.status.message
    assert job.status.stage_status("sft").reason == "InvalidConfig"


def test_a_crash_reported_by_the_pod_is_retried_with_the_log_tail_shown():
    _, job = run(make_job())
    crash = FailureDetail(137, "OOMKilled", "", retryable=True)
    failed = replace(child("sft", state="Failed", message="PyTorchJob demo-sft-1 is failed."), failure=crash)
    decision, job = run(job, [failed])
    assert decision.actions == [CreateChild("sft", 2)]
    assert "OOMKilled" in job.status.stage_status("sft").message


def test_a_deleted_running_child_counts_as_a_failed_attempt():
    _, job = run(make_job())
    _, job = run(job, [child("sft", state="Running")])
    assert missing_children(job, []) == [("PyTorchJob", "demo-sft-1")]  # the caller looks once more
    assert missing_children(job, [child("sft", state="Running")]) == []
    decision, job = run(job, [])
    assert decision.actions == [CreateChild("sft", 2)]
    assert job.status.stage_status("sft").reason == "ChildDeleted"


def test_suspend_passes_to_the_running_child_and_holds_later_stages():
    _, job = run(make_job())
    _, job = run(job, [child("sft", state="Running")])
    held = Job.from_body(job_body(spec={"suspend": True}, status=job.status.model_dump(by_alias=True)))
    decision, job = run(held, [child("sft", state="Running")])
    assert decision.actions == [SuspendChild("PyTorchJob", "demo-sft-1", True)]
    assert job.status.phase == "Suspended"
    decision, job = run(job, [child("sft", state="Suspended", suspend=True)])
    assert decision.actions == [] and states(job)["sft"] == "Suspended"
    decision, job = run(job, [child("sft", state="Succeeded", suspend=True)])
    assert decision.actions == []  # no new stage while suspended
    resumed = Job.from_body(job_body(spec={"suspend": False}, status=job.status.model_dump(by_alias=True)))
    decision, job = run(resumed, [child("sft", state="Succeeded", suspend=True)])
    assert decision.actions == [CreateChild("reward", 1)]
    assert "Resumed" in reasons(decision)


def test_resume_unsuspends_the_child():
    _, job = run(make_job())
    body = job_body(status=job.status.model_dump(by_alias=True))
    decision, _ = run(Job.from_body(body), [child("sft", state="Suspended", suspend=True)])
    assert decision.actions == [SuspendChild("PyTorchJob", "demo-sft-1", False)]


def test_a_child_kueue_manages_is_queued_and_never_suspended_by_us():
    _, job = run(make_job(labels={"kueue.x-k8s.io/queue-name": "q"}))
    queued = child("sft", state="Suspended", suspend=True, kueue=True)
    decision, job = run(job, [queued])
    assert decision.actions == [] and states(job)["sft"] == "Queued"
    held = Job.from_body(job_body(spec={"suspend": True}, status=job.status.model_dump(by_alias=True)))
    decision, _ = run(held, [child("sft", state="Running", kueue=True)])
    assert decision.actions == []


def test_restart_from_a_stage_reruns_it_and_what_follows():
    _, job = run(make_job())
    done = [child("sft", state="Succeeded"), child("reward", state="Succeeded"), child("ppo", state="Succeeded")]
    for _ in range(3):
        _, job = run(job, done)
    assert job.status.phase == "Succeeded"
    asked = Job.from_body(job_body(status=job.status.model_dump(by_alias=True),
                                   annotations={RESTART_ANNOTATION: "reward"}))
    decision, job = run(asked, done)
    # The trainer would reuse its result for an unchanged config: a restart asks it to train again.
    assert decision.actions == [CreateChild("reward", 2, overwrite=True)]
    assert states(job) == {"sft": "Succeeded", "reward": "Starting", "ppo": "Pending"}
    assert job.status.restart_request == "reward" and job.status.phase == "Running"
    decision, job = run(job, done)  # the same request is not acted on twice
    assert decision.actions == [CreateChild("reward", 2, overwrite=True)]
    rerun = [*done, child("reward", 2, state="Succeeded")]
    decision, job = run(job, rerun)
    assert decision.actions == [CreateChild("ppo", 2, overwrite=True)]


def test_restart_while_running_deletes_the_running_child():
    _, job = run(make_job())
    _, job = run(job, [child("sft", state="Running")])
    asked = Job.from_body(job_body(status=job.status.model_dump(by_alias=True),
                                   annotations={RESTART_ANNOTATION: "sft@again"}))
    decision, job = run(asked, [child("sft", state="Running")])
    assert decision.actions == [DeleteChild("PyTorchJob", "demo-sft-1"), CreateChild("sft", 2, overwrite=True)]


def test_restart_naming_no_stage_is_ignored_with_a_warning():
    _, job = run(make_job())
    asked = Job.from_body(job_body(status=job.status.model_dump(by_alias=True),
                                   annotations={RESTART_ANNOTATION: "rm"}))
    decision, job = run(asked)
    assert [e.reason for e in decision.events if e.type == "Warning"] == ["RestartIgnored"]
    assert job.status.restart_request == "rm"


def test_children_owned_by_another_object_are_ignored():
    _, job = run(make_job())
    decision, job = run(job, [child("sft", state="Succeeded", owner="someone-else")])
    assert states(job)["sft"] == "Starting" and decision.actions == [CreateChild("sft", 1)]


def test_a_child_newer_than_the_status_is_adopted_not_duplicated():
    decision, job = run(make_job(), [child("sft", 1, state="Running")])
    assert decision.actions == [] and job.status.stage_status("sft").attempt == 1


def test_a_refused_child_creation_fails_the_attempt():
    _, job = run(make_job(spec={"stages": {"sft": {"retryLimit": 0}}}))
    decision = attempt_creation_failed(job, job.status, "sft", "ChildCreationFailed", "422 Unprocessable", NOW)
    assert decision.status.phase == "Failed"
    assert decision.events[0].reason == "ChildCreationFailed" and decision.events[0].type == "Warning"


def test_conditions_keep_their_transition_time_while_unchanged():
    _, job = run(make_job(), now=NOW)
    _, job = run(job, [child("sft", state="Running")], now=LATER)
    running = next(c for c in job.status.conditions if c.type == "Running")
    assert running.status == "True" and running.last_transition_time == NOW


def test_observed_generation_is_recorded():
    _, job = run(make_job())
    assert job.status.observed_generation == 1


# -- reading Kubeflow JobConditions ------------------------------------------------------------


def test_terminal_conditions_win_over_stale_running_entries():
    conditions = [
        {"type": "Created", "status": "True", "reason": "PyTorchJobCreated"},
        {"type": "Running", "status": "False", "reason": "PyTorchJobRunning"},
        {"type": "Failed", "status": "True", "reason": "PyTorchJobFailed", "message": "backoff limit"},
    ]
    assert child_state(conditions) == ("Failed", "PyTorchJobFailed", "backoff limit")
    assert child_state([{"type": "Created", "status": "True"}])[0] == "Starting"
    assert child_state([{"type": "Restarting", "status": "True"}])[0] == "Running"
    assert child_state([{"type": "Suspended", "status": "True"}, {"type": "Running", "status": "False"}])[0] == "Suspended"


# -- what the API server cannot check: objects that could not exist ---------------------------


def _failed_condition(job: Job):
    return next(c for c in job.status.conditions if c.type == "Failed")


def test_a_config_too_large_for_its_configmap_fails_the_job_before_anything_is_created():
    big = {"actor_model": {"name_or_path": "m", "lora": {"target_modules": ["q" * 4000] * 300}}}
    body = job_body(spec={"config": big})
    body["metadata"]["finalizers"] = []
    decision, job = run(Job.from_body(body))
    assert decision.actions == []  # no finalizer, no ConfigMap, no child
    assert states(job) == {"sft": "Failed", "reward": "Pending", "ppo": "Pending"}
    assert job.status.phase == "Failed" and job.status.message.startswith("stage sft failed: spec.config: is ")
    condition = _failed_condition(job)
    assert (condition.status, condition.reason) == ("True", "InvalidSpec") and "spec.config" in condition.message
    invalid = [e for e in decision.events if e.reason == "InvalidSpec"]
    assert invalid and invalid[0].type == "Warning" and "spec.config" in invalid[0].message
    decision, _ = run(job)  # and it stays so, quietly
    assert decision.actions == [] and decision.events == []


def test_env_copied_into_every_pod_template_past_the_object_limit_names_spec_env():
    env = [{"name": f"V{i}", "value": "x" * 30000} for i in range(20)]  # 600 kB, in 2 templates
    decision, job = run(make_job(spec={"env": env, "stages": {"sft": {"nodes": 2}}}))
    assert decision.actions == [] and job.status.phase == "Failed"
    sft = job.status.stage_status("sft")
    assert sft.reason == "InvalidSpec" and sft.message.startswith("spec.env: the PyTorchJob of stage sft would be")
    assert "holds 2 copies of it" in sft.message
    # One node: one copy, under the limit.
    decision, _ = run(make_job(spec={"env": env}))
    assert decision.actions == [CreateChild("sft", 1)]


def test_an_attempt_whose_child_name_would_be_too_long_fails_the_stage_naming_metadata_name():
    name = "a" * 40  # the longest the CRD allows: '<name>-reward-9999' is the longest child name
    status = {"stages": [{"name": "sft", "state": "Succeeded", "attempt": 1},
                         {"name": "reward", "state": "Starting", "attempt": 9999, "failedAttempts": 0},
                         {"name": "ppo", "state": "Pending"}]}
    body = job_body(name=name, spec={"stages": {"reward": {"retryLimit": 3}}}, status=status)
    failed = child("reward", 9999, state="Failed", reason="PyTorchJobFailed", job=name)
    decision = decide(Job.from_body(body), [failed], NOW)
    reward = decision.status.stage_status("reward")
    assert decision.actions == [] and reward.state == "Failed" and reward.attempt == 10000
    assert reward.message.startswith("metadata.name: the child of attempt 10000 would be named")


def test_a_job_the_operator_cannot_read_is_failed_naming_the_fields():
    from kuberlhf_operator.decide import unreadable
    from kuberlhf_operator.job import InvalidSpec

    body = job_body(spec={"stages": {"sft": {"nodes": 0}}, "env": [{"value": "no name"}]})
    with pytest.raises(InvalidSpec) as raised:
        Job.from_body(body)
    error = raised.value
    decision = unreadable(body, error, NOW)
    status = decision.status
    assert status.phase == "Failed" and status.message.startswith("invalid spec: ")
    assert "spec.stages.sft.nodes" in status.message and "spec.env[0].name" in status.message
    failed = next(c for c in status.conditions if c.type == "Failed")
    assert (failed.status, failed.reason) == ("True", "InvalidSpec")
    assert [(e.type, e.reason) for e in decision.events] == [("Warning", "InvalidSpec")]
    body["status"] = status.model_dump(by_alias=True, exclude_none=True)
    assert unreadable(body, error, LATER).events == []  # said once
