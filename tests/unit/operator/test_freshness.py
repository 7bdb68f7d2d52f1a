"""Freshness: a pass starts from what this process last wrote, and our own echoes cost nothing."""

from __future__ import annotations

from kuberlhf_operator.freshness import Freshness


def body(version: str, phase: str = "Pending") -> dict:
    return {"metadata": {"uid": "u", "resourceVersion": version}, "status": {"phase": phase}}


def test_the_version_our_write_replaced_is_swapped_for_what_we_wrote():
    fresh = Freshness()
    fresh.wrote(body("10"), "11", {"phase": "Running"})
    latest = fresh.freshest(body("10"))  # the index has not seen our write yet
    assert latest["metadata"]["resourceVersion"] == "11" and latest["status"] == {"phase": "Running"}
    assert fresh.freshest(body("12"))["metadata"]["resourceVersion"] == "12"  # someone else's newer version
    fresh.wrote(fresh.freshest(body("10")), "13", {"phase": "Succeeded"})
    assert fresh.freshest(body("10"))["metadata"]["resourceVersion"] == "13"  # two writes behind
    assert fresh.freshest(body("11"))["status"] == {"phase": "Succeeded"}


def test_only_versions_our_writes_covered_are_skipped_and_not_after_a_refusal():
    fresh = Freshness()
    fresh.wrote(body("10"), "11", {})
    assert fresh.already_handled(body("11")) and not fresh.already_handled(body("12"))
    assert fresh.already_handled(body("10"))  # the version our write was based on
    fresh.refused("u")
    assert not fresh.already_handled(body("11"))
    fresh.settled("u")
    assert fresh.already_handled(body("11"))
    fresh.forget("u")
    assert not fresh.already_handled(body("11")) and fresh.freshest(body("10"))["metadata"]["resourceVersion"] == "10"


def test_a_pod_event_is_news_only_if_what_a_pass_reads_of_the_pod_changed():
    from kuberlhf_operator.freshness import PodNews
    from rlhfjob_factories import pod, running, scheduled, unschedulable

    news = PodNews()
    pending = pod("demo-sft-1", conditions=unschedulable("0/3 nodes are available"))
    assert news.changed("p1", pending)
    assert not news.changed("p1", pod("demo-sft-1", conditions=unschedulable("0/3 nodes are available")))
    ran = pod("demo-sft-1", phase="Running", conditions=scheduled(), containers=[running()])
    assert news.changed("p1", ran) and not news.changed("p1", ran)
    assert news.changed("p1", None)  # deleted
    assert news.changed("p1", ran)   # seen again (a relist): news once more
