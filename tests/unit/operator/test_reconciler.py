"""The glue around decide(): what reaches the API server when it refuses a child for a quota, and
how children are sent (strict field validation; a name still held by a deleted job's child)."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest
from kubernetes.client import CoreV1Event, CoreV1EventList, V1ObjectMeta, V1ObjectReference
from kubernetes.client.exceptions import ApiException

from kuberlhf_operator.kube import Kube, LeftBehind, is_quota_refusal
from kuberlhf_operator.reconciler import CreationWaits, Reconciler
from rlhfjob_factories import NOW, UID, child, job_body

QUOTA = ('pytorchjobs.kubeflow.org "demo-sft-1" is forbidden: exceeded quota: team-jobs, requested: '
         'count/pytorchjobs.kubeflow.org=1, used: count/pytorchjobs.kubeflow.org=4, limited: '
         'count/pytorchjobs.kubeflow.org=4')


def api_error(status: int, message: str) -> ApiException:
    error = ApiException(status=status, reason={403: "Forbidden", 409: "Conflict"}.get(status, "Error"))
    error.body = json.dumps({"kind": "Status", "message": message, "code": status})
    return error


class FakeKube:
    """Kube's interface, answering like an API server whose quota refuses PyTorchJobs."""

    def __init__(self, refusal: ApiException | None = None):
        self.refusal = refusal
        self.statuses: list[dict] = []
        self.created: list[str] = []

    def patch_status(self, namespace, name, resource_version, status):
        self.statuses.append(status)
        return str(int(resource_version) + 1)

    def create(self, manifest):
        if manifest["kind"] == "PyTorchJob" and self.refusal is not None:
            raise self.refusal
        self.created.append(f"{manifest['kind']}/{manifest['metadata']['name']}")
        return True

    def get_child(self, kind, namespace, name):
        return None


def test_a_full_quota_is_shown_in_the_stage_and_retried_with_backoff_not_counted_as_a_failure():
    kube, events = FakeKube(api_error(403, QUOTA)), []
    reconciler = Reconciler(kube, post_event=lambda ref, event: events.append(event), clock=lambda: NOW)
    body = job_body(spec={"stages": {"sft": {"retryLimit": 0}}})
    with pytest.raises(CreationWaits):  # the work queue passes the job again after a growing delay
        reconciler.reconcile(body, lambda: [], trigger="rlhfjob")
    sft = next(s for s in kube.statuses[-1]["stages"] if s["name"] == "sft")
    assert (sft["state"], sft["attempt"], sft["failedAttempts"], sft["reason"]) == ("Starting", 1, 0, "QuotaExceeded")
    assert sft["message"] == f"waiting to create demo-sft-1: {QUOTA}"
    assert kube.statuses[-1]["phase"] == "Running"
    assert [e.reason for e in events if e.type == "Warning"] == ["QuotaExceeded"]
    assert kube.created[0].startswith("ConfigMap/")  # what it mounts was made; the child waits

    kube.refusal = None  # a job elsewhere finished: the next pass creates the child
    after = job_body(spec=body["spec"], status=kube.statuses[-1])
    after["metadata"]["resourceVersion"] = "9"
    reconciler.reconcile(after, lambda: [], trigger="resync")
    assert "PyTorchJob/demo-sft-1" in kube.created


def test_a_refusal_that_would_repeat_still_fails_the_attempt():
    kube = FakeKube(api_error(403, 'pytorchjobs.kubeflow.org is forbidden: User "x" cannot create resource'))
    assert not is_quota_refusal(kube.refusal)
    reconciler = Reconciler(kube, post_event=lambda ref, event: None, clock=lambda: NOW)
    reconciler.reconcile(job_body(spec={"stages": {"sft": {"retryLimit": 0}}}), lambda: [], trigger="rlhfjob")
    sft = next(s for s in kube.statuses[-1]["stages"] if s["name"] == "sft")
    assert (sft["state"], sft["reason"]) == ("Failed", "ChildCreationFailed")


class RecordingApi:
    """A client API class that records its calls and answers with `answers` (or raises them)."""

    def __init__(self, **answers):
        self.calls: list[tuple[str, tuple, dict]] = []
        self.answers = answers

    def __getattr__(self, method):
        def call(*args, **kwargs):
            self.calls.append((method, args, kwargs))
            answer = self.answers.get(method)
            if isinstance(answer, Exception):
                raise answer
            return answer
        return call


def kube_with(custom: RecordingApi, core: RecordingApi | None = None) -> Kube:
    kube = Kube.__new__(Kube)
    kube.custom, kube.core = custom, core or RecordingApi()
    return kube


def child_manifest(owner_uid: str = UID) -> dict:
    return {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob",
            "metadata": {"name": "demo-sft-1", "namespace": "team", "ownerReferences": [
                {"apiVersion": "kuberlhf.io/v1alpha1", "kind": "RLHFJob", "name": "demo", "uid": owner_uid,
                 "controller": True}]}}


def test_children_are_created_and_patched_with_strict_field_validation():
    custom = RecordingApi()
    kube = kube_with(custom)
    assert kube.create(child_manifest()) is True
    kube.suspend_child("PyTorchJob", "team", "demo-sft-1", True)
    assert [(m, k.get("field_validation")) for m, _, k in custom.calls] == [
        ("create_namespaced_custom_object", "Strict"), ("patch_namespaced_custom_object", "Strict")]


def test_a_name_held_by_the_child_of_a_deleted_job_of_the_same_name_is_waited_for():
    earlier = child_manifest(owner_uid="uid-of-the-deleted-job")
    custom = RecordingApi(create_namespaced_custom_object=api_error(409, "already exists"),
                          get_namespaced_custom_object=earlier)
    with pytest.raises(LeftBehind, match="belongs to an earlier RLHFJob named demo"):
        kube_with(custom).create(child_manifest())
    foreign = {**earlier, "metadata": {**earlier["metadata"], "ownerReferences": []}}
    custom.answers["get_namespaced_custom_object"] = foreign
    with pytest.raises(Exception, match="another object controls it"):
        kube_with(custom).create(child_manifest())


class FakeKubeWithEvents(FakeKube):
    """An API server where the child exists, has no pod, and the training-operator's pod creation was
    refused by a quota (its Warning event says so)."""

    def __init__(self, warning: tuple[str, str] | None):
        super().__init__()
        self.warning = warning
        self.event_reads: list[str] = []

    def latest_warning(self, namespace, uid):
        self.event_reads.append(uid)
        return self.warning


def test_a_child_without_pods_is_explained_by_its_latest_warning_event_read_only_then():
    kube = FakeKubeWithEvents(("FailedCreatePod", 'pods "demo-sft-1-master-0" is forbidden: exceeded quota: team'))
    clock = {"now": NOW}
    reconciler = Reconciler(kube, post_event=lambda ref, event: None, clock=lambda: clock["now"])
    reconciler.reconcile(job_body(), lambda: [], trigger="rlhfjob")  # claims sft attempt 1
    body = job_body(status=kube.statuses[-1])
    body["metadata"]["resourceVersion"] = "8"
    created = child("sft", state="Starting", since=NOW)
    reconciler.reconcile(body, lambda: [created], trigger="child")  # fresh: its pods may yet come
    assert kube.event_reads == []

    clock["now"] = "2026-01-01T00:00:10Z"
    body["metadata"]["resourceVersion"] = "9"
    reconciler.reconcile(body, lambda: [created], trigger="resync")
    assert kube.event_reads == [created.uid]
    sft = next(s for s in kube.statuses[-1]["stages"] if s["name"] == "sft")
    assert (sft["state"], sft["reason"]) == ("Starting", "QuotaExceeded")
    assert "the PyTorchJob warns: FailedCreatePod: pods \"demo-sft-1-master-0\" is forbidden" in sft["message"]


def test_a_podless_childs_events_are_read_again_only_after_a_while():
    kube = FakeKubeWithEvents(("FailedCreatePod", "exceeded quota"))
    clock = {"now": "2026-01-01T00:00:10Z"}
    reconciler = Reconciler(kube, post_event=lambda ref, event: None, clock=lambda: clock["now"])
    reconciler.reconcile(job_body(), lambda: [], trigger="rlhfjob")
    created = child("sft", state="Starting", since=NOW)
    for second, version in ((10, "8"), (12, "9"), (20, "10"), (26, "11")):
        clock["now"] = f"2026-01-01T00:00:{second}Z"
        body = job_body(status=kube.statuses[-1])
        body["metadata"]["resourceVersion"] = version
        reconciler.reconcile(body, lambda: [created], trigger="resync")
    assert kube.event_reads == [created.uid, created.uid]  # at 10 s and 26 s: 15 s apart at least


def test_the_latest_warning_is_read_by_the_childs_uid_newest_first():
    old = CoreV1Event(involved_object=V1ObjectReference(), metadata=V1ObjectMeta(), reason="FailedCreatePod",
                  message="exceeded quota (old)", last_timestamp=datetime(2026, 1, 1, 0, 0, 1, tzinfo=timezone.utc))
    new = CoreV1Event(involved_object=V1ObjectReference(), metadata=V1ObjectMeta(), reason="FailedCreatePod",
                  message="exceeded quota (new) ", last_timestamp=datetime(2026, 1, 1, 0, 0, 9, tzinfo=timezone.utc))
    core = RecordingApi(list_namespaced_event=CoreV1EventList(items=[new, old]))
    assert kube_with(RecordingApi(), core).latest_warning("team", "uid-1") == ("FailedCreatePod", "exceeded quota (new)")
    assert core.calls[0][2]["field_selector"] == "involvedObject.uid=uid-1,type=Warning"
    core.answers["list_namespaced_event"] = CoreV1EventList(items=[])
    assert kube_with(RecordingApi(), core).latest_warning("team", "uid-1") is None
