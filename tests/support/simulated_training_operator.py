"""A simulated training-operator: the test double for Kubeflow's training-operator and mpi-operator.

The test control plane runs a real kube-apiserver with the real PyTorchJob and MPIJob CRDs,
but no Kubeflow controllers, no kubelet and no GPUs. This double stands in for exactly the
controllers: it watches PyTorchJobs (kubeflow.org/v1) and MPIJobs (kubeflow.org/v2beta1) and
writes `status.conditions` through the status subresource the way they do:

- Created=True on first sight; Running=True once "pods run" (here: at once, unless suspended);
- Succeeded=True or Failed=True at the end, with the Running entry rewritten to "False";
  nothing changes after Failed;
- spec.runPolicy.suspend=true: Suspended=True and Running=False (reason <Kind>Suspended); back
  to false: Suspended=False (reason <Kind>Resumed) and Running=True, training starts over;
- reasons are '<Kind><Condition>' and messages '<Kind> <name> is <state>.', as upstream.

What a child does is up to a script: `script(child) -> Outcome`. An Outcome either ends after a
delay (Succeeded, Failed), waits for the test to call `finish()` (Hold), or runs `work` in a
thread and ends Succeeded if it returns True (the end-to-end test runs the child's container
command as a local process there).
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Literal, Optional

from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

KINDS = {"PyTorchJob": ("v1", "pytorchjobs"), "MPIJob": ("v2beta1", "mpijobs")}


@dataclass
class Outcome:
    result: Literal["Succeeded", "Failed", "Hold"] = "Succeeded"
    after: float = 0.05
    message: str = ""
    work: Optional[Callable[[], bool]] = None


Script = Callable[[dict], Outcome]


def succeed(child: dict) -> Outcome:
    return Outcome()


@dataclass
class _Tracked:
    kind: str
    namespace: str
    name: str
    conditions: list[dict[str, Any]] = field(default_factory=list)
    state: str = "Created"
    suspended: bool = False
    epoch: int = 0  # bumped on suspend/resume so a stale scheduled ending is ignored


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class SimulatedTrainingOperator:
    def __init__(self, api: client.ApiClient, namespace: str | None = None, script: Script = succeed):
        self.custom = client.CustomObjectsApi(api)
        self.namespace = namespace
        self.script = script
        self.created: dict[str, float] = {}   # child name -> monotonic time first seen
        self.finished: dict[str, float] = {}  # child name -> monotonic time its ending was written
        self.status_writes = 0
        self.write_retries = 0  # status writes repeated because the apiserver did not take them
        self._children: dict[str, _Tracked] = {}
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._timer_wake = threading.Condition(self._lock)
        self._seq = itertools.count()
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="sim-work")
        self._threads: list[threading.Thread] = []

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> "SimulatedTrainingOperator":
        for kind in KINDS:
            self._spawn(self._watch, kind)
        self._spawn(self._run_timers)
        return self

    def stop(self) -> None:
        self._stop.set()
        with self._timer_wake:
            self._timer_wake.notify_all()
        for thread in self._threads:
            thread.join(timeout=10)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> "SimulatedTrainingOperator":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def finish(self, name: str, succeeded: bool = True, message: str = "") -> None:
        """End a held child now."""
        with self._lock:
            tracked = self._children[name]
            self._end(tracked, tracked.epoch, "Succeeded" if succeeded else "Failed", message)

    def state(self, name: str) -> str | None:
        with self._lock:
            tracked = self._children.get(name)
            return tracked.state if tracked else None

    # -- watching ------------------------------------------------------------------------

    def _spawn(self, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True, name=f"sim-{target.__name__}")
        thread.start()
        self._threads.append(thread)

    def _watch(self, kind: str) -> None:
        version, plural = KINDS[kind]
        if self.namespace:
            call, args = self.custom.list_namespaced_custom_object, ("kubeflow.org", version, self.namespace, plural)
        else:
            call, args = self.custom.list_cluster_custom_object, ("kubeflow.org", version, plural)
        resource_version = None  # None: start with every existing object, as a controller's list does
        while not self._stop.is_set():
            stream = watch.Watch()
            try:
                # Short server timeouts so stop() is prompt; resume where the last stream ended.
                for event in stream.stream(call, *args, timeout_seconds=2, resource_version=resource_version):
                    if self._stop.is_set():
                        break
                    self._on_event(kind, event["type"], event["object"])
                resource_version = stream.resource_version
            except Exception:  # noqa: BLE001 - e.g. 410 Gone, or the apiserver restarting: list again
                resource_version = None
                time.sleep(0.2)
            finally:
                stream.stop()

    def _on_event(self, kind: str, type_: str, body: dict[str, Any]) -> None:
        meta = body["metadata"]
        name = meta["name"]
        with self._lock:
            if type_ == "DELETED":
                self._children.pop(name, None)
                return
            suspend = bool((body.get("spec") or {}).get("runPolicy", {}).get("suspend"))
            tracked = self._children.get(name)
            if tracked is None:
                tracked = self._children[name] = _Tracked(kind, meta["namespace"], name)
                self.created[name] = time.monotonic()
                self._set(tracked, "Created", "True")
                self._begin(tracked, body, suspend)
            elif tracked.state not in ("Succeeded", "Failed") and suspend != tracked.suspended:
                self._begin(tracked, body, suspend, resumed=not suspend)

    # -- the job's life ------------------------------------------------------------------

    def _begin(self, tracked: _Tracked, body: dict[str, Any], suspend: bool, resumed: bool = False) -> None:
        tracked.epoch += 1
        tracked.suspended = suspend
        if suspend:
            tracked.state = "Suspended"
            self._set(tracked, "Suspended", "True")
            self._set(tracked, "Running", "False")
            self._write(tracked)
            return
        if resumed:
            self._set(tracked, "Suspended", "False", reason="Resumed")
        tracked.state = "Running"
        self._set(tracked, "Running", "True")
        self._write(tracked)
        outcome = self.script(body)
        epoch = tracked.epoch
        if outcome.work is not None:
            self._pool.submit(self._work, tracked, epoch, outcome)
        elif outcome.result != "Hold":
            self._after(outcome.after, lambda: self._end(tracked, epoch, outcome.result, outcome.message))

    def _work(self, tracked: _Tracked, epoch: int, outcome: Outcome) -> None:
        ok = outcome.work()
        with self._lock:
            self._end(tracked, epoch, "Succeeded" if ok else "Failed", outcome.message)

    def _end(self, tracked: _Tracked, epoch: int, result: str, message: str) -> None:
        if tracked.epoch != epoch or tracked.state in ("Succeeded", "Failed", "Suspended"):
            return
        if self._children.get(tracked.name) is not tracked:
            return  # deleted meanwhile
        tracked.state = result
        self._set(tracked, "Running", "False")
        self._set(tracked, result, "True", message=message or None)
        self._write(tracked)
        self.finished[tracked.name] = time.monotonic()

    def _set(self, tracked: _Tracked, type_: str, status: str, reason: str | None = None,
             message: str | None = None) -> None:
        state = {"Created": "created", "Running": "running", "Succeeded": "successfully completed",
                 "Failed": "failed", "Suspended": "suspended"}.get(type_, type_.lower())
        entry = {
            "type": type_,
            "status": status,
            "reason": f"{tracked.kind}{reason or type_}",
            "message": message or f"{tracked.kind} {tracked.name} is {state}.",
            "lastUpdateTime": _now(),
            "lastTransitionTime": _now(),
        }
        old = next((c for c in tracked.conditions if c["type"] == type_), None)
        if old is not None and old["status"] == status:
            entry["lastTransitionTime"] = old["lastTransitionTime"]
        tracked.conditions = [c for c in tracked.conditions if c["type"] != type_] + [entry]

    def _write(self, tracked: _Tracked) -> None:
        """Write the tracked conditions; if the apiserver is away (restarting), again in a moment,
        as a controller's requeue would."""
        version, plural = KINDS[tracked.kind]
        body = {"status": {"conditions": list(tracked.conditions)}}
        try:
            self.custom.patch_namespaced_custom_object_status(
                "kubeflow.org", version, tracked.namespace, plural, tracked.name, body)
            self.status_writes += 1
        except ApiException as error:
            if error.status != 404:  # 404: deleted meanwhile
                self._write_later(tracked)
        except Exception:  # noqa: BLE001 - connection refused/reset while the apiserver restarts
            self._write_later(tracked)

    def _write_later(self, tracked: _Tracked) -> None:
        self.write_retries += 1

        def again() -> None:
            with self._lock:
                if self._children.get(tracked.name) is tracked and not self._stop.is_set():
                    self._write(tracked)
        self._after(0.5, again)

    # -- timers --------------------------------------------------------------------------

    def _after(self, delay: float, fn: Callable[[], None]) -> None:
        with self._timer_wake:
            heapq.heappush(self._timers, (time.monotonic() + delay, next(self._seq), fn))
            self._timer_wake.notify()

    def _run_timers(self) -> None:
        with self._timer_wake:
            while not self._stop.is_set():
                if not self._timers:
                    self._timer_wake.wait(0.5)
                    continue
                due, _, fn = self._timers[0]
                wait = due - time.monotonic()
                if wait > 0:
                    self._timer_wake.wait(wait)
                    continue
                heapq.heappop(self._timers)
                try:
                    fn()
                except Exception:  # noqa: BLE001 - writes retry themselves; nothing else may stop the timers
                    pass
