"""Which version of an RLHFJob a pass should start from, and which passes have nothing to do.

(PodNews, at the end, does the same for the watched pods: which of their events can change a pass.)

Passes read RLHFJobs from kopf's index, which a watch fills: right after this process writes a
status, the index still holds an older version, until the watch delivers the new one (under
load, several writes later). A pass started from it would be refused (409) and wasted. This
remembers, per job, the object as our last write left it and every version seen before that
write, and hands out the former for any of the latter.

It also recognises events that bring nothing new: the echo of our own write, or a version one of
our writes was already based on. The pass that wrote had acted on everything it knew, and every
change of a child triggers a pass of its own, so such an event needs no pass, unless a pass was
refused since (then the job is marked dirty and the next event of any kind runs in full).

Only a shortcut: correctness rests on the resourceVersion precondition of every status write.
"""

from __future__ import annotations

import threading
from typing import Any, Mapping

from .observe import Pod


class _Written:
    def __init__(self, older: set[str], body: Mapping[str, Any]):
        self.older = older  # every version this process saw before its last write: all superseded
        self.body = body    # the object as the last write left it

    @property
    def version(self) -> str:
        return self.body["metadata"]["resourceVersion"]


class Freshness:
    def __init__(self) -> None:
        self._written: dict[str, _Written] = {}
        self._dirty: set[str] = set()
        self._lock = threading.Lock()

    def freshest(self, body: Mapping[str, Any]) -> Mapping[str, Any]:
        uid, version = body["metadata"]["uid"], body["metadata"]["resourceVersion"]
        with self._lock:
            written = self._written.get(uid)
        # A watch can lag several of our writes behind; any version we saw before is older.
        return written.body if written is not None and version in written.older else body

    def already_handled(self, body: Mapping[str, Any]) -> bool:
        """The event carries our last write, or a version a later write of ours was based on."""
        uid, version = body["metadata"]["uid"], body["metadata"]["resourceVersion"]
        with self._lock:
            written = self._written.get(uid)
            seen = written is not None and (version == written.version or version in written.older)
            return seen and uid not in self._dirty

    def wrote(self, body: Mapping[str, Any], version: str, status: Mapping[str, Any]) -> None:
        """Our write of `status` onto `body` succeeded and produced `version`."""
        uid = body["metadata"]["uid"]
        new = {**body, "metadata": {**body["metadata"], "resourceVersion": version}, "status": status}
        with self._lock:
            previous = self._written.get(uid)
            older = (previous.older | {previous.version}) if previous else set()
            self._written[uid] = _Written(older | {body["metadata"]["resourceVersion"]}, new)

    def refused(self, uid: str) -> None:
        with self._lock:
            self._dirty.add(uid)

    def settled(self, uid: str) -> None:
        with self._lock:
            self._dirty.discard(uid)

    def forget(self, uid: str) -> None:
        with self._lock:
            self._written.pop(uid, None)
            self._dirty.discard(uid)


class PodNews:
    """Which pod watch events may change what a pass decides. A pass reads pods only through their
    summaries (observe.Pod); an event that leaves a pod's summary as it was (a condition's timestamp,
    an IP, readiness, a resourceVersion) brings nothing. The Kubeflow controllers, the scheduler and
    the kubelet write every pod several times on its way to Running, and at 200 jobs those events
    were the operator's most frequent trigger (bench/operator_throughput.py)."""

    def __init__(self) -> None:
        self._last: dict[str, Pod] = {}

    def changed(self, uid: str, summary: Pod | None) -> bool:
        """Whether the pod's summary differs from the last one seen; `None`: the pod is gone (news).
        Called from kopf's event loop only, so needs no lock."""
        if summary is None:
            self._last.pop(uid, None)
            return True
        old, self._last[uid] = self._last.get(uid), summary
        return old != summary
