"""Events about RLHFJobs, and the one-line form of API errors in the operator's log."""

from __future__ import annotations

import json

from kubernetes.client.exceptions import ApiException

from kuberlhf_operator.events import Event
from kuberlhf_operator.kube import describe_error
from kuberlhf_operator.posting import MESSAGE_LIMIT, EventPoster, event_body

REF = {"apiVersion": "kuberlhf.io/v1alpha1", "kind": "RLHFJob", "metadata": {"name": "chat", "namespace": "team",
                                                                            "uid": "u-1"}}


def test_an_event_names_the_job_and_our_component_and_keeps_a_bounded_message():
    body = event_body(REF, Event("Warning", "StageFailed", "x" * 5000), "2026-01-01T00:00:00Z", "pod-1")
    assert body["involvedObject"] == {"apiVersion": "kuberlhf.io/v1alpha1", "kind": "RLHFJob", "name": "chat",
                                      "namespace": "team", "uid": "u-1"}
    assert (body["type"], body["reason"], body["source"]["component"]) == ("Warning", "StageFailed", "kuberlhf-operator")
    assert len(body["message"]) == MESSAGE_LIMIT and body["message"].endswith("…")
    assert body["metadata"] == {"generateName": "chat.", "namespace": "team"}


class FlakyCore:
    """Refuses the first `failures` posts, as an API server that is restarting would."""

    def __init__(self, failures: int):
        self.failures, self.posted = failures, []

    def create_namespaced_event(self, namespace, body):
        if self.failures:
            self.failures -= 1
            raise ConnectionRefusedError("connection refused")
        self.posted.append(body["reason"])


def test_a_refused_event_is_posted_again_and_a_job_keeps_its_order():
    core = FlakyCore(failures=2)
    poster = EventPoster(core, threads=1, backoff=lambda n: 0.0).start()
    for reason in ("StageStarting", "StageSucceeded"):
        poster.post(REF, Event("Normal", reason, "m"))
    poster.stop()
    poster._threads[0].join(5)
    assert core.posted == ["StageStarting", "StageSucceeded"]


def test_api_errors_are_one_line_with_the_servers_message_and_no_headers():
    error = ApiException(status=409, reason="Conflict")
    error.body = json.dumps({"message": "the object has been modified"})
    error.headers = {"Audit-Id": "secret-ish"}
    assert describe_error(error) == "409 Conflict: the object has been modified"
    assert describe_error(ConnectionResetError("reset by peer\nmore")) == "ConnectionResetError: reset by peer"
