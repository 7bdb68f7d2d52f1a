"""Which version of an RLHFJob a pass should start from, and which passes have nothing to do.

Passes read RLHFJobs from kopf's index, which a watch fills: right after this process writes a
status, the index still holds the version that write replaced, until the watch delivers the
new one. A pass started from that stale version would be refused (409) and wasted; worse, under
load every write would cost a refused write of the next pass. This remembers, per job, the
version our last write replaced and the object as written, and hands out the latter instead.

It also recognises the echo of our own write: the watch event carrying exactly the version we
wrote. The pass that wrote it had already acted on everything it knew, and every change of a
child triggers a pass of its own, so an echo needs no pass, unless a pass was refused since
(then the job is marked dirty and the next event of any kind runs in full).

Only a shortcut: correctness rests on the resourceVersion precondition of every status write.
"""

from __future__ import annotations

import threading
from typing import Any, Mapping


class Freshness:
    def __init__(self) -> None:
        self._written: dict[str, tuple[str, str, Mapping[str, Any]]] = {}
        self._dirty: set[str] = set()
        self._lock = threading.Lock()

    def freshest(self, body: Mapping[str, Any]) -> Mapping[str, Any]:
        uid, version = body["metadata"]["uid"], body["metadata"]["resourceVersion"]
        with self._lock:
            replaced, _, written = self._written.get(uid, ("", "", body))
        return written if version == replaced else body

    def is_own_echo(self, body: Mapping[str, Any]) -> bool:
        uid, version = body["metadata"]["uid"], body["metadata"]["resourceVersion"]
        with self._lock:
            return uid not in self._dirty and self._written.get(uid, ("", "", None))[1] == version

    def wrote(self, body: Mapping[str, Any], version: str, status: Mapping[str, Any]) -> None:
        uid = body["metadata"]["uid"]
        written = {**body, "metadata": {**body["metadata"], "resourceVersion": version}, "status": status}
        with self._lock:
            self._written[uid] = (body["metadata"]["resourceVersion"], version, written)

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
