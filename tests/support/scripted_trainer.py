"""The trainer's part in the test cluster: decides how each stage attempt's pods end.

The Kubeflow controllers, the scheduler and KWOK are real (tests/support/kube_cluster.py); what
they cannot know is what training does. `ScriptedTrainer` watches the operator's pods in a
namespace and, once a child's leader pod runs (a PyTorchJob's master, an MPIJob's launcher),
ends it after a while with the exit code and termination message `script(child)` returns
(`Hold()`: leave it running until the test calls `finish`). The real controllers then turn
that into the child's conditions, as they would for a real trainer.

The pods must not end on their own: RLHFJobs run under it carry `RUNS_UNTIL_ENDED` as
podAnnotations (an MPIJob's launcher is a batch Job's pod, which KWOK would otherwise end at once).
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from kubernetes import client, watch

from tests.support.kube_cluster import RUN_FOR, ends_now, pod_exits

RUNS_UNTIL_ENDED = {RUN_FOR: "24h"}
OURS = "app.kubernetes.io/managed-by=kuberlhf-operator"
JOB_NAME, REPLICA, ROLE = ("training.kubeflow.org/job-name", "training.kubeflow.org/replica-type",
                           "training.kubeflow.org/job-role")
LEADERS = ("master", "launcher")


@dataclass(frozen=True)
class Outcome:
    code: int = 0
    message: str = ""
    after: float = 0.05  # seconds the leader runs before it ends


class Hold(Outcome):
    """Leave the pod running: the test ends it with `finish`."""


Script = Callable[[str], Outcome]


def succeed(child: str) -> Outcome:
    return Outcome()


class ScriptedTrainer:
    def __init__(self, api: client.ApiClient, namespace: str, script: Script = succeed):
        self.core = client.CoreV1Api(api)
        self.namespace = namespace
        self.script = script
        self.running: dict[str, float] = {}   # child -> monotonic time its leader was first seen running
        self.ended: dict[str, float] = {}     # child -> monotonic time its leader's end was asked for
        self.leaders: dict[str, str] = {}     # child -> its leader pod's name (the latest one)
        self._handled: set[str] = set()       # uids of leader pods the script was asked about
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._due: list[tuple[float, int, str, Outcome]] = []
        self._wake = threading.Condition(self._lock)
        self._seq = itertools.count()
        self._threads = [threading.Thread(target=self._watch, daemon=True, name="scripted-trainer-watch"),
                         threading.Thread(target=self._end_when_due, daemon=True, name="scripted-trainer-end")]

    def __enter__(self) -> "ScriptedTrainer":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        with self._wake:
            self._wake.notify_all()
        self._threads[1].join(timeout=10)  # the watch thread ends with its stream (within 2 s): not waited for

    def finish(self, child: str, code: int = 0, message: str = "", timeout: float = 30) -> None:
        """End a held child's leader now (waiting for it to run first)."""
        deadline = time.monotonic() + timeout
        while child not in self.running:
            if time.monotonic() > deadline:
                raise AssertionError(f"the leader pod of {child} did not run within {timeout}s")
            time.sleep(0.05)
        self._end(child, Outcome(code, message))

    # -- watching ------------------------------------------------------------------------

    def _watch(self) -> None:
        resource_version = None  # None: start with every existing pod, as a controller's list does
        while not self._stop.is_set():
            stream = watch.Watch()
            try:
                for event in stream.stream(self.core.list_namespaced_pod, self.namespace, label_selector=OURS,
                                           timeout_seconds=2, resource_version=resource_version):
                    if self._stop.is_set():
                        break
                    if event["type"] in ("ADDED", "MODIFIED"):  # not BOOKMARK, ERROR (410: list again) or DELETED
                        self._seen(event["object"])
                    elif event["type"] == "ERROR":
                        raise RuntimeError(f"watch error: {event['raw_object']}")
                resource_version = stream.resource_version
            except Exception:  # noqa: BLE001 - e.g. 410 Gone, or the apiserver restarting: list again
                resource_version = None
                time.sleep(0.2)
            finally:
                stream.stop()

    def _seen(self, pod: client.V1Pod) -> None:
        labels = pod.metadata.labels or {}
        child = labels.get(JOB_NAME)
        leader = (labels.get(REPLICA) or labels.get(ROLE)) in LEADERS
        if not child or not leader or pod.status.phase != "Running" or pod.metadata.deletion_timestamp:
            return
        with self._wake:
            if pod.metadata.uid in self._handled:
                return
            self._handled.add(pod.metadata.uid)  # a resumed child's leader is a new pod: scripted again
            self.running.setdefault(child, time.monotonic())
            self.leaders[child] = pod.metadata.name
            outcome = self.script(child)
            if not isinstance(outcome, Hold):
                heapq.heappush(self._due, (time.monotonic() + outcome.after, next(self._seq), child, outcome))
                self._wake.notify()

    # -- ending --------------------------------------------------------------------------

    def _end_when_due(self) -> None:
        with self._wake:
            while not self._stop.is_set():
                if not self._due or self._due[0][0] > time.monotonic():
                    self._wake.wait(0.5 if not self._due else self._due[0][0] - time.monotonic())
                    continue
                _, _, child, outcome = heapq.heappop(self._due)
                self._wake.release()
                try:
                    self._end(child, outcome)
                finally:
                    self._wake.acquire()

    def _end(self, child: str, outcome: Outcome) -> None:
        """Annotate the leader (KWOK's exit Stage ends it); retried while the apiserver is away."""
        body = {"metadata": {"annotations": ends_now(pod_exits(outcome.code, outcome.message))}}
        while not self._stop.is_set():
            try:
                self.core.patch_namespaced_pod(self.leaders[child], self.namespace, body)
            except client.ApiException as error:
                if error.status != 404:  # 404: deleted meanwhile (a restart, a deleted job)
                    time.sleep(0.5)
                    continue
            except Exception:  # noqa: BLE001 - connection refused while the apiserver restarts
                time.sleep(0.5)
                continue
            self.ended.setdefault(child, time.monotonic())
            return
