"""The work queue: one pass per job at a time, marks coalesce, handovers first, failures retried
with backoff, every job passed again each resync interval."""

from __future__ import annotations

import threading

from kuberlhf_operator.workqueue import Backoff, Passed, WorkQueue, start_workers


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def queue(interval: float = 60.0) -> tuple[WorkQueue, Clock]:
    clock = Clock()
    return WorkQueue(interval, Backoff(base=0.5, factor=2, cap=4, jitter=0), clock=clock, rng=lambda: 0.5), clock


def drain(q: WorkQueue) -> list:
    out = []
    while (item := q.get(block=False)) is not None:
        out.append(item)
        q.done(item[0], ok=True)
    return out


def test_marks_of_a_waiting_job_coalesce_into_one_pass():
    q, _ = queue()
    for trigger in ("rlhfjob", "child", "rlhfjob"):
        q.add("a", trigger)
    assert drain(q) == [("a", {"rlhfjob", "child"})]


def test_a_job_whose_child_ended_goes_first():
    q, _ = queue()
    q.add("new-1", "rlhfjob")
    q.add("new-2", "rlhfjob")
    q.add("handover", "child", urgent=True)
    q.add("new-1", "child", urgent=True)  # more urgent now: moves up, still once
    assert [key for key, _ in drain(q)] == ["handover", "new-1", "new-2"]


def test_a_job_marked_while_its_pass_runs_is_passed_once_more_afterwards():
    q, _ = queue()
    q.add("a", "rlhfjob")
    key, _ = q.get(block=False)
    q.add("a", "child")
    q.add("a", "child")
    assert q.get(block=False) is None  # never two passes of one job at once
    q.done("a", ok=True)
    assert drain(q) == [("a", {"child"})]


def test_a_failed_pass_is_retried_with_growing_delays_and_a_success_resets_them():
    q, clock = queue()
    q.add("a", "rlhfjob")
    delays = []
    for _ in range(5):
        key, _ = q.get(block=False)
        delays.append(q.done(key, ok=False))
        assert q.get(block=False) is None
        clock.now += delays[-1]
    assert delays == [0.5, 1.0, 2.0, 4.0, 4.0] and q.failures("a") == 5
    key, triggers = q.get(block=False)
    assert triggers == {"resync"}
    q.done(key, ok=True)
    assert q.failures("a") == 0


def test_every_job_is_passed_again_one_interval_after_its_last_pass():
    q, clock = queue(interval=60)
    q.add("a", "rlhfjob")
    drain(q)
    clock.now = 30
    q.add("a", "child")
    drain(q)  # this pass moves the resync to 90
    clock.now = 89
    assert drain(q) == []
    clock.now = 90
    assert drain(q) == [("a", {"resync"})]


def test_a_deadline_before_the_resync_brings_the_next_pass_forward_and_later_passes_keep_it():
    q, clock = queue(interval=60)
    q.add("a", "rlhfjob")
    key, _ = q.get(block=False)
    q.done(key, ok=True, again_in=20)  # e.g. a stage's pods must run within 20 s
    clock.now = 5
    q.add("a", "child")
    drain(q)  # a pass in between moves the resync, not the deadline's pass
    clock.now = 19
    assert drain(q) == []
    clock.now = 20
    assert drain(q) == [("a", {"resync"})]
    q.add("a", "child")
    key, _ = q.get(block=False)
    q.done(key, ok=True, again_in=600)  # later than the resync: the resync comes first anyway
    clock.now = 79
    assert drain(q) == []
    clock.now = 80
    assert drain(q) == [("a", {"resync"})]


def test_a_job_that_is_gone_is_not_resynced():
    q, clock = queue(interval=60)
    q.add("a", "rlhfjob")
    key, _ = q.get(block=False)
    q.done(key, ok=True, exists=False)
    clock.now = 1000
    assert drain(q) == []


def test_workers_retry_a_failing_pass_and_report_each_failure():
    q = WorkQueue(60, Backoff(base=0.01, cap=0.01, jitter=0))
    calls, failures, passed = [], [], threading.Event()

    def run_pass(key, triggers):
        calls.append(set(triggers))
        if len(calls) < 3:
            raise ConnectionError("the API server is restarting")
        passed.set()
        return Passed()

    threads = start_workers(q, run_pass, threads=2, on_failure=lambda key, error, delay: failures.append(
        (key, type(error).__name__, delay)))
    q.add("a", "rlhfjob")
    assert passed.wait(5)
    q.close()
    for thread in threads:
        thread.join(5)
    assert calls == [{"rlhfjob"}, {"resync"}, {"resync"}]
    assert failures == [("a", "ConnectionError", 0.01), ("a", "ConnectionError", 0.01)]
