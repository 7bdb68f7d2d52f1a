"""Carry out a decision: write the status (guarded), post events, then act on children.

The order matters for idempotency: the status write claims the attempt numbers and is
refused if the object changed since it was read. Nothing else happens after a refused write;
the pass starts again from the current version.

Deleting a job is the garbage collector's work (everything the operator creates carries a
controller ownerReference to the job). A job that still carries the finalizer of an earlier
operator version gets the other kind of pass: what it owns is deleted, then the finalizer comes off
and the API server lets the job go.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import replace
from typing import Any, Callable, Iterator, Mapping, Sequence

from kubernetes.client.exceptions import ApiException

from . import metrics
from .api import RLHFJobStatus
from .builders import build_child, build_config_map, build_pvc, claim_for
from .clock import seconds_between, utc_now
from .decide import (CreateChild, Decision, DeleteChild, SuspendChild, attempt_creation_failed, creation_waiting,
                     decide, unreadable)
from .events import Event, stage_transitions
from .freshness import Freshness
from .job import InvalidSpec, Job
from .kube import ForeignObject, Kube, LeftBehind, StaleObject, is_quota_refusal
from .lookups import children_without_pods, failures_to_explain, missing_children
from .names import CHILD_KINDS, FINALIZER, child_name
from .observe import Child, Pod
from .starting import QUOTA_EXCEEDED

log = logging.getLogger(__name__)
CONFLICT_RETRIES = 3
REMEMBERED_DELETIONS = 10_000
REMEMBERED_WARNINGS = 10_000
WARNINGS_TTL_S = 15.0
"""A podless child's events are read again at most this often: at 200 jobs the training-operator took
over 10 s to make pods, and every pass in between read them again (2.9 reads per job)."""
# Refusals to create a child that the API server would repeat: the attempt fails instead. (413:
# too large; validate.problems keeps that from happening, this is the fallback.) A 403 from a full
# ResourceQuota is the exception: it is waited out (CreationWaits).
PERMANENT = (400, 403, 404, 413, 422)
PostEvent = Callable[[Mapping[str, Any], Event], None]
Pods = Callable[[], Sequence[Pod]]


class CreationWaits(RuntimeError):
    """A child could not be created yet, for a reason that passes (a full quota, a name still held by
    the child of a deleted job of the same name): the stage says so, and the work queue passes the
    job again after a growing delay."""


def status_patch(status: RLHFJobStatus) -> dict[str, Any]:
    """The whole status as a merge patch: absent fields become null (deleted), lists are replaced."""
    fields = status.model_dump(by_alias=True, mode="json", exclude_none=True)
    for name, info in RLHFJobStatus.model_fields.items():
        fields.setdefault(info.alias or name, None)
    return fields


class Reconciler:
    def __init__(self, kube: Kube, post_event: PostEvent, clock: Callable[[], str] = utc_now):
        self.kube = kube
        self.post_event = post_event
        self.clock = clock
        self.phases = metrics.PhaseTracker()
        self.freshness = Freshness()
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        # Objects this process has created (or found created), per job uid: children, ConfigMaps
        # and claims. The watch that reports a new child can lag behind our own status write;
        # without this a pass in between would ask again (a harmless AlreadyExists, but two
        # extra requests), and a pass on a just-deleted job's stale body could re-create a
        # child nobody then owns. Lost on restart, when kopf's indexes are complete instead.
        self._created: dict[str, set[str]] = {}
        # Jobs whose deletion this process finished: a late event (a child's, or a stale body in
        # an index) must not act on them again.
        self._deleted: OrderedDict[str, None] = OrderedDict()
        # The latest Warning event of podless children, by child uid, with when it was read.
        self._warnings: OrderedDict[str, tuple[str, tuple[str, str] | None]] = OrderedDict()

    def is_news(self, body: Mapping[str, Any]) -> bool:
        """Whether an RLHFJob's watch event may need a pass: not the echo of our own write, nor a
        version one of our writes was based on (see Freshness)."""
        return not self.freshness.already_handled(body)

    def reconcile(self, body: Mapping[str, Any], children: Callable[[], Sequence[Child]], trigger: str,
                  pods: Pods = lambda: ()) -> float | None:
        """One level-triggered pass over an RLHFJob and its children (and their pods), as observed
        once its lock is held. Returns in how many seconds a deadline passes, if one does before the
        next resync. Raises what the API server raised (the caller retries the job later)."""
        uid = body["metadata"]["uid"]
        with self._serialized(uid):
            if uid in self._deleted or (trigger == "rlhfjob" and self.freshness.already_handled(body)):
                return None  # gone, or only marked by an echo of our own write
            with self._measured(trigger):
                return self._retrying(self.freshness.freshest(body), children, pods)

    def _retrying(self, body: Mapping[str, Any] | None, children: Callable[[], Sequence[Child]],
                  pods: Pods) -> float | None:
        """A pass; if a write is refused (the job changed meanwhile, e.g. a user's edit), again at
        once from the current version rather than waiting for an event. Raises StaleObject when
        refused every time (the caller retries the job later)."""
        for _ in range(CONFLICT_RETRIES):
            if body is None:
                return None
            try:
                if body["metadata"].get("deletionTimestamp"):
                    self._finalize(body)
                    return None
                return self._pass(body, children(), pods())
            except StaleObject:
                metrics.STATUS_CONFLICTS.inc()
                body = self.kube.get_job(body["metadata"]["namespace"], body["metadata"]["name"])
        if body is not None:
            self.freshness.refused(body["metadata"]["uid"])
            raise StaleObject(f"RLHFJob {body['metadata']['namespace']}/{body['metadata']['name']} changed "
                              f"{CONFLICT_RETRIES} times during one pass")
        return None

    def _finalize(self, body: Mapping[str, Any]) -> None:
        """The job is being deleted. If it carries the finalizer an earlier operator version put on
        every job, delete what it owns (as that version promised) and remove the finalizer. Both
        are safe to repeat; StaleObject if the job changed."""
        meta = body["metadata"]
        namespace, name, uid = meta["namespace"], meta["name"], meta["uid"]
        if FINALIZER in (meta.get("finalizers") or ()):
            deleted = self.kube.delete_owned(namespace, name, uid)
            self.kube.remove_finalizer(namespace, name, meta["resourceVersion"], meta["finalizers"])
            log.info("Deleted objects of RLHFJob %s/%s: %s", namespace, name, ", ".join(deleted) or "none")
        with self._locks_guard:
            self._deleted[uid] = None
            while len(self._deleted) > REMEMBERED_DELETIONS:
                self._deleted.popitem(last=False)
        self.forget(uid)

    def _pass(self, body: Mapping[str, Any], children: Sequence[Child], pods: Sequence[Pod]) -> float | None:
        try:
            job = Job.from_body(body)
        except InvalidSpec as error:
            self._unreadable(body, error)
            return None
        now = self.clock()
        decision = decide(job, self._explained(job, children, pods, now), now, pods)
        resource_version = body["metadata"]["resourceVersion"]
        if decision.status != job.status:
            patch = status_patch(decision.status)
            resource_version = self.kube.patch_status(job.namespace, job.name, resource_version, patch)
            if resource_version is None:
                return None  # the job is gone
            self.freshness.wrote(body, resource_version, patch)
            self._record(job, job.status, decision)
        self.freshness.settled(job.uid)
        self.phases.set(job.uid, decision.status.phase)
        self._act(job, decision, resource_version)
        return decision.recheck_in

    def _unreadable(self, body: Mapping[str, Any], error: InvalidSpec) -> None:
        """A job that does not parse: say so in its status (once) and do nothing else. Retrying
        cannot help, and no other job may wait for it."""
        meta = body["metadata"]
        decision = unreadable(body, error, self.clock())
        patch = status_patch(decision.status)
        if patch != {**{k: None for k in patch}, **(body.get("status") or {})}:
            version = self.kube.patch_status(meta["namespace"], meta["name"], meta["resourceVersion"], patch)
            if version is None:
                return
            self.freshness.wrote(body, version, patch)
            for event in decision.events:
                log.warning("RLHFJob %s/%s: %s: %s", meta["namespace"], meta["name"], event.reason, event.message)
                self.post_event(_ref(meta["namespace"], meta["name"], meta["uid"]), event)
        self.freshness.settled(meta["uid"])
        self.phases.set(meta["uid"], "Failed")

    def _explained(self, job: Job, children: Sequence[Child], pods: Sequence[Pod], now: str) -> list[Child]:
        """Children, with the failed ones about to be judged carrying their pods' reason, those that
        have no pod yet their latest Warning event, and the ones about to be judged deleted looked
        up once more: a watch can lag, a GET does not."""
        failed = {c.name for c in failures_to_explain(job, children)}
        podless = {c.name for c in children_without_pods(job, children, pods, now)}
        out = [replace(c, failure=self.kube.failure_detail(job.namespace, c.name)) if c.name in failed
               else replace(c, warning=self._latest_warning(job.namespace, c.uid, now)) if c.name in podless
               else c for c in children]
        for kind, name in missing_children(job, children):
            found = self.kube.get_child(kind, job.namespace, name)
            if found is not None:
                out.append(Child.from_body(found))
        return out

    def _latest_warning(self, namespace: str, child_uid: str, now: str) -> tuple[str, str] | None:
        """A podless child's latest Warning event, read at most every WARNINGS_TTL_S."""
        with self._locks_guard:
            cached = self._warnings.get(child_uid)
        if cached is not None and seconds_between(cached[0], now) < WARNINGS_TTL_S:
            return cached[1]
        warning = self.kube.latest_warning(namespace, child_uid)
        with self._locks_guard:
            self._warnings[child_uid] = (now, warning)
            self._warnings.move_to_end(child_uid)
            while len(self._warnings) > REMEMBERED_WARNINGS:
                self._warnings.popitem(last=False)
        return warning

    def forget(self, uid: str) -> None:
        self.phases.set(uid, None)
        self.freshness.forget(uid)
        with self._locks_guard:
            self._locks.pop(uid, None)
            self._created.pop(uid, None)

    def _record(self, job: Job, old: RLHFJobStatus, decision: Decision) -> None:
        for transition in stage_transitions(old, decision.status):
            metrics.STAGE_TRANSITIONS.labels(stage=transition.stage, state=transition.new).inc()
        for event in decision.events:
            log.info("RLHFJob %s/%s: %s: %s", job.namespace, job.name, event.reason, event.message)
            self.post_event(_ref(job.namespace, job.name, job.uid), event)

    def _act(self, job: Job, decision: Decision, resource_version: str) -> None:
        for action in decision.actions:
            if isinstance(action, CreateChild):
                if not self._still_missing(job, action):
                    continue
                refused = self._create_child(job, action)
                if refused is not None:
                    self._creation_refused(job, decision.status, action, *refused, resource_version)
            elif isinstance(action, DeleteChild):
                self.kube.delete_child(action.kind, job.namespace, action.name)
            elif isinstance(action, SuspendChild):
                self.kube.suspend_child(action.kind, job.namespace, action.name, action.suspend)

    def _create_child(self, job: Job, action: CreateChild) -> tuple[str, str, bool] | None:
        """Create the child (and what it mounts). A refusal is returned as (reason, message, waits):
        one that passes is waited for, one the API server would repeat fails the attempt visibly
        instead of looping."""
        try:
            pvc = build_pvc(job)
            if pvc is not None:
                self._ensure(job, pvc)
            config_map = build_config_map(job)
            self._ensure(job, config_map)
            child = build_child(job, action.stage, action.attempt, config_map["metadata"]["name"], claim_for(job),
                                action.overwrite)
            if self._ensure(job, child):
                metrics.CHILDREN_CREATED.labels(kind=child["kind"]).inc()
                log.info("Created %s %s/%s", child["kind"], job.namespace, child["metadata"]["name"])
        except ForeignObject as error:
            return "ChildNameTaken", str(error), False
        except LeftBehind as error:
            return "NameInUse", str(error), True
        except ApiException as error:
            if is_quota_refusal(error):
                return QUOTA_EXCEEDED, _api_message(error), True
            if error.status in PERMANENT:
                hint = f" (is the Kubeflow API for launcher {job.spec.launcher} installed?)" if error.status == 404 else ""
                return "ChildCreationFailed", f"{error.status} {error.reason}: {_api_message(error)}{hint}", False
            raise
        return None

    def _still_missing(self, job: Job, action: CreateChild) -> bool:
        """decide asks for a child its observation lacks. One this process created is most likely
        only not yet in the index: a GET tells (and a child deleted before it started is made again)."""
        kind = CHILD_KINDS[job.spec.launcher][1]
        key = f"{kind}/{child_name(job.name, action.stage, action.attempt)}"
        created = self._created.get(job.uid, set())
        if key not in created:
            return True
        if self.kube.get_child(kind, job.namespace, key.split("/", 1)[1]) is not None:
            return False
        created.discard(key)
        return True

    def _ensure(self, job: Job, manifest: dict[str, Any]) -> bool:
        """Create unless this process already has; True if it was created now."""
        created = self._created.setdefault(job.uid, set())
        key = f"{manifest['kind']}/{manifest['metadata']['name']}"
        if key in created:
            return False
        new = self.kube.create(manifest)
        created.add(key)
        return new

    def _creation_refused(self, job: Job, status: RLHFJobStatus, action: CreateChild, reason: str, message: str,
                          waits: bool, resource_version: str) -> None:
        """Say so in the stage: a failed attempt, or (`waits`) a wait, after which CreationWaits
        makes the work queue pass the job again with a growing delay. Refused (StaleObject): the
        pass starts again from the current version, creation included."""
        now = self.clock()
        decide_ = creation_waiting if waits else attempt_creation_failed
        decision = decide_(job, status, action.stage, reason, message, now)
        if decision.status != status and self.kube.patch_status(job.namespace, job.name, resource_version,
                                                                status_patch(decision.status)):
            self._record(job, status, decision)
        if waits:
            raise CreationWaits(f"RLHFJob {job.namespace}/{job.name}: stage {action.stage}: {reason}: {message}")

    @contextmanager
    def _serialized(self, uid: str) -> Iterator[None]:
        """One pass per RLHFJob at a time: its own events, its children's and the resync timer
        run on different kopf workers. (Correctness does not depend on it; efficiency does.)"""
        with self._locks_guard:
            lock = self._locks.setdefault(uid, threading.Lock())
        with lock:
            yield

    @contextmanager
    def _measured(self, trigger: str) -> Iterator[None]:
        start = time.monotonic()
        try:
            yield
        except Exception as error:
            metrics.RECONCILE_ERRORS.labels(reason=type(error).__name__).inc()
            raise
        finally:
            metrics.RECONCILE_DURATION.labels(trigger=trigger).observe(time.monotonic() - start)


def _ref(namespace: str, name: str, uid: str) -> dict[str, Any]:
    return {"apiVersion": "kuberlhf.io/v1alpha1", "kind": "RLHFJob",
            "metadata": {"name": name, "namespace": namespace, "uid": uid}}


def _api_message(error: ApiException) -> str:
    try:
        return json.loads(error.body or "{}").get("message", "") or str(error.body)
    except ValueError:
        return str(error.body)
