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
