"""Kubernetes Events about RLHFJobs, posted from background threads so that no pass waits for one.

A few threads post in parallel; a job's events always go through the same thread, in order.
Events are a courtesy (the API server drops them after about an hour; the status is the lasting
record), so one the API server keeps refusing is dropped after a few tries, with a log line.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from typing import Any, Callable, Mapping

from kubernetes import client

from .clock import utc_now
from .events import Event
from .kube import describe_error

log = logging.getLogger(__name__)
COMPONENT = "kuberlhf-operator"
MESSAGE_LIMIT = 1024  # what the API server keeps of an event's message
TRIES = 4
THREADS = 4


def event_body(ref: Mapping[str, Any], event: Event, now: str, instance: str) -> dict[str, Any]:
    """A core/v1 Event about `ref` (an object's apiVersion, kind and metadata)."""
    meta = ref["metadata"]
    message = event.message if len(event.message) <= MESSAGE_LIMIT else event.message[: MESSAGE_LIMIT - 1] + "…"
    return {
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {"apiVersion": ref["apiVersion"], "kind": ref["kind"], "name": meta["name"],
                           "namespace": meta["namespace"], "uid": meta["uid"]},
        "type": event.type,
        "reason": event.reason,
        "message": message,
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "reportingInstance": instance,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }


class EventPoster:
    def __init__(self, core: client.CoreV1Api, threads: int = THREADS,
                 backoff: Callable[[int], float] = lambda n: 0.5 * 2 ** n):
        self.core = core
        self.backoff = backoff
        self.instance = os.environ.get("HOSTNAME") or COMPONENT
        self._queues: list[queue.Queue[dict[str, Any] | None]] = [queue.Queue() for _ in range(threads)]
        self._threads = [threading.Thread(target=self._run, args=(q,), daemon=True, name=f"event-poster-{i}")
                         for i, q in enumerate(self._queues)]

    def start(self) -> "EventPoster":
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        for q in self._queues:
            q.put(None)

    def post(self, ref: Mapping[str, Any], event: Event) -> None:
        body = event_body(ref, event, utc_now(), self.instance)
        self._queues[hash(ref["metadata"]["uid"]) % len(self._queues)].put(body)

    def _run(self, q: queue.Queue[dict[str, Any] | None]) -> None:
        while (body := q.get()) is not None:
            for tries in range(TRIES):
                try:
                    self.core.create_namespaced_event(body["metadata"]["namespace"], body)
                    break
                except Exception as error:  # noqa: BLE001 - an event is never worth more than a log line
                    if tries + 1 == TRIES:
                        log.warning("Dropped event %s for %s/%s: %s", body["reason"], body["metadata"]["namespace"],
                                    body["involvedObject"]["name"], describe_error(error))
                    else:  # the API server is likely away: the next event would fail too
                        time.sleep(self.backoff(tries))
