"""Which RLHFJobs need a pass, and the threads that run the passes.

Watch events only *mark* a job, in kopf's event loop and without waiting; a fixed set of
threads runs the passes. As in controller-runtime's workqueue:

- one pass per job at a time; marks that arrive while a job is being passed coalesce into one
  more pass, which reads the job and its children as the indexes hold them by then;
- a job whose child has just ended (a handover to the next stage, or a retry) goes before other
  work, so that the next child is not created behind, say, a burst of new RLHFJobs;
- a failed pass (an API error, the API server restarting, a conflict retried too often) is
  retried after 0.5 s, 1 s, 2 s, ... (at most `Backoff.cap`);
- every job is passed again once per `interval` after its last pass (the level-triggered
  resync), so that a missed event or a lost watch costs at most that; sooner when the pass says
  a deadline passes before then (a stage's pods that must run by a given time).

One queue serves every job, instead of a `kopf.timer` per job: kopf puts a finalizer and
bookkeeping annotations on every object a timer serves, PATCH requests that also collide with
the operator's own status writes.
"""

from __future__ import annotations

import contextvars
import heapq
import itertools
import logging
import random
import threading
import time
from dataclasses import dataclass
from typing import Callable, Hashable

log = logging.getLogger(__name__)
Key = Hashable
URGENT, NORMAL, IDLE = 0, 1, 2


@dataclass(frozen=True)
class Mark:
    priority: int
    triggers: frozenset[str]


@dataclass(frozen=True)
class Passed:
    """How a pass ended: whether the job still exists, and whether a deadline passes before the
    next resync (then the job is passed again that much sooner)."""

    exists: bool = True
    again_in: float | None = None


@dataclass(frozen=True)
class Backoff:
    """Delay before the n-th retry (n >= 1): base * factor**(n-1), at most cap, +-jitter."""

    base: float = 0.5
    factor: float = 2.0
    cap: float = 30.0
    jitter: float = 0.2

    def delay(self, failures: int, rng: Callable[[], float] = random.random) -> float:
        plain = min(self.cap, self.base * self.factor ** max(failures - 1, 0))
        return plain * (1 + self.jitter * (2 * rng() - 1))


class WorkQueue:
    """Thread-safe; `add` never blocks for long, so kopf's event loop may call it."""

    def __init__(self, interval: float, backoff: Backoff = Backoff(),
                 clock: Callable[[], float] = time.monotonic, rng: Callable[[], float] = random.random):
        self.interval, self.backoff = interval, backoff
        self._clock, self._rng = clock, rng
        self._cond = threading.Condition()
        self._seq = itertools.count()
        self._ready: list[tuple[int, int, Key]] = []         # heap of (priority, seq, key)
        self._queued: dict[Key, Mark] = {}                   # jobs in _ready, and why
        self._running: set[Key] = set()
        self._again: dict[Key, Mark] = {}                    # marked while running: the pass to follow
        self._delayed: list[tuple[float, int, Key, bool]] = []  # heap of (due, seq, key, periodic)
        self._resync_at: dict[Key, float] = {}
        self._failures: dict[Key, int] = {}
        self._closed = False

    def add(self, key: Key, trigger: str, urgent: bool = False) -> None:
        """Mark a job for a pass; `trigger` says why (the pass gets every reason it was marked for)."""
        self._add(key, URGENT if urgent else NORMAL, trigger)

    def _add(self, key: Key, priority: int, trigger: str) -> None:
        with self._cond:
            marks = self._again if key in self._running else self._queued
            old = marks.get(key)
            marks[key] = Mark(min(priority, old.priority) if old else priority,
                              (old.triggers if old else frozenset()) | {trigger})
            if key not in self._running and (old is None or priority < old.priority):
                heapq.heappush(self._ready, (priority, next(self._seq), key))
                self._cond.notify()

    def get(self, block: bool = True) -> tuple[Key, frozenset[str]] | None:
        """(key, triggers) of the next job due, blocking until there is one; the job is then
        running until `done`. None once closed (or, not blocking, when none is due)."""
        with self._cond:
            while not self._closed:
                self._promote_due()
                while self._ready:
                    priority, _, key = heapq.heappop(self._ready)
                    mark = self._queued.get(key)
                    if mark is None or mark.priority != priority:
                        continue  # superseded by a more urgent mark
                    del self._queued[key]
                    self._running.add(key)
                    return key, mark.triggers
                if not block:
                    return None
                wait = self._delayed[0][0] - self._clock() if self._delayed else None
                self._cond.wait(timeout=None if wait is None else max(wait, 0.0))
            return None

    def done(self, key: Key, ok: bool, exists: bool = True, again_in: float | None = None) -> float | None:
        """The pass over `key` ended. Returns the delay before a retry when it failed. `again_in`:
        a successful pass wants the next one sooner than the resync interval."""
        with self._cond:
            self._running.discard(key)
            delay = None
            if not exists:
                self._resync_at.pop(key, None)
                self._failures.pop(key, None)
            elif ok:
                self._failures.pop(key, None)
                self._schedule(key, self.interval, periodic=True)
                if again_in is not None and again_in < self.interval:
                    # Its own entry: a later pass moves the resync, never this.
                    self._schedule(key, again_in, periodic=False)
            else:
                failures = self._failures[key] = self._failures.get(key, 0) + 1
                delay = self.backoff.delay(failures, self._rng)
                self._schedule(key, delay, periodic=False)
            if key in self._again:
                mark = self._again.pop(key)
                for trigger in mark.triggers:  # the condition's lock is reentrant
                    self._add(key, mark.priority, trigger)
            return delay

    def failures(self, key: Key) -> int:
        with self._cond:
            return self._failures.get(key, 0)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _schedule(self, key: Key, delay: float, periodic: bool) -> None:
        due = self._clock() + delay
        if periodic:
            self._resync_at[key] = due
        heapq.heappush(self._delayed, (due, next(self._seq), key, periodic))
        self._cond.notify()

    def _promote_due(self) -> None:
        now = self._clock()
        while self._delayed and self._delayed[0][0] <= now:
            due, _, key, periodic = heapq.heappop(self._delayed)
            if periodic and self._resync_at.get(key) != due:
                continue  # a later pass moved this job's resync (or the job is gone)
            self._add(key, IDLE, "resync")


def start_workers(queue: WorkQueue, run_pass: Callable[[Key, frozenset[str]], Passed], threads: int,
                  on_failure: Callable[[Key, BaseException, float], None]) -> list[threading.Thread]:
    """`threads` daemon threads taking jobs from `queue`. `run_pass(key, triggers)` says how the
    pass ended. Each thread runs in a copy of the caller's context (kopf's event posting needs the
    context its own handlers run in)."""

    def work() -> None:
        while (item := queue.get()) is not None:
            key, triggers = item
            try:
                passed = run_pass(key, triggers)
            except Exception as error:  # noqa: BLE001 - every failure is retried the same way
                on_failure(key, error, queue.done(key, ok=False) or 0.0)
            else:
                queue.done(key, ok=True, exists=passed.exists, again_in=passed.again_in)

    out = []
    for i in range(threads):
        thread = threading.Thread(target=contextvars.copy_context().run, args=(work,), daemon=True,
                                  name=f"pass-{i}")
        thread.start()
        out.append(thread)
    return out
