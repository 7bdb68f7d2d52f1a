"""kopf glue: every handler hands an RLHFJob and its observed children to the Reconciler.

    kopf run -m kuberlhf_operator.handlers --all-namespaces --liveness=http://0.0.0.0:8080/healthz

(`python -m kuberlhf_operator` does the same with the project's defaults.)

Three things trigger the same level-triggered pass: any change of an RLHFJob, any change of
one of its children, and a resync timer. Children are known from in-memory indexes fed by
watches, so a pass costs no API reads; kopf fills the indexes before any handler runs, so a
restarted operator sees every existing child before it decides anything.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

import kopf

from . import metrics
from .kube import Kube, api_client
from .names import CHILD_KINDS, FINALIZER, GROUP, LABEL_JOB, LABEL_MANAGED_BY, MANAGED_BY, PLURAL, VERSION
from .observe import Child
from .reconciler import Reconciler
from .settings import OperatorConfig

log = logging.getLogger(__name__)
CONFIG = OperatorConfig.from_env()
OURS = {LABEL_MANAGED_BY: MANAGED_BY, LABEL_JOB: kopf.PRESENT}
PYTORCHJOBS = ("kubeflow.org", CHILD_KINDS["pytorchjob"][0].split("/")[1], CHILD_KINDS["pytorchjob"][2])
MPIJOBS = ("kubeflow.org", CHILD_KINDS["mpijob"][0].split("/")[1], CHILD_KINDS["mpijob"][2])


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=GROUP)
    settings.posting.level = logging.INFO
    # kopf logs every handler call at INFO, one line per watch event of every child: keep the
    # operator's own transition lines and kopf's warnings.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    settings.execution.max_workers = CONFIG.workers
    memo.reconciler = Reconciler(Kube(api_client(CONFIG.workers)), post_event=_post_event)
    metrics.serve(CONFIG.metrics_port)


@kopf.index(GROUP, VERSION, PLURAL)
def rlhfjobs(namespace: str, name: str, body: kopf.Body, **_: Any) -> dict:
    return {(namespace, name): dict(body)}


@kopf.index(*PYTORCHJOBS, labels=OURS)
def pytorchjob_children(namespace: str, labels: kopf.Labels, body: kopf.Body, **_: Any) -> dict:
    return {(namespace, labels[LABEL_JOB]): Child.from_body(body)}


@kopf.index(*MPIJOBS, labels=OURS)
def mpijob_children(namespace: str, labels: kopf.Labels, body: kopf.Body, **_: Any) -> dict:
    return {(namespace, labels[LABEL_JOB]): Child.from_body(body)}


@kopf.on.event(GROUP, VERSION, PLURAL)
def rlhfjob_changed(type: str, body: kopf.Body, memo: kopf.Memo, **indexes: Any) -> None:
    if type != "DELETED" and not body.metadata.get("deletionTimestamp"):
        memo.reconciler.reconcile(body, _children(body, indexes), trigger="rlhfjob")


@kopf.timer(GROUP, VERSION, PLURAL, interval=CONFIG.resync_seconds, initial_delay=CONFIG.resync_seconds)
def resync(body: kopf.Body, memo: kopf.Memo, **indexes: Any) -> None:
    if not body.metadata.get("deletionTimestamp"):
        memo.reconciler.reconcile(body, _children(body, indexes), trigger="resync")


@kopf.on.event(*PYTORCHJOBS, labels=OURS)
@kopf.on.event(*MPIJOBS, labels=OURS)
def child_changed(namespace: str, labels: kopf.Labels, memo: kopf.Memo, rlhfjobs: kopf.Index, **indexes: Any) -> None:
    for parent in rlhfjobs.get((namespace, labels[LABEL_JOB]), []):
        if not parent["metadata"].get("deletionTimestamp"):
            memo.reconciler.reconcile(parent, _children(parent, indexes), trigger="child")


@kopf.on.delete(GROUP, VERSION, PLURAL)
def delete_children(namespace: str, name: str, uid: str, memo: kopf.Memo, **_: Any) -> None:
    deleted = memo.reconciler.kube.delete_owned(namespace, name, uid)
    memo.reconciler.forget(uid)
    log.info("Deleted objects of RLHFJob %s/%s: %s", namespace, name, ", ".join(deleted) or "none")


@kopf.on.probe(id="rlhfjobs")
def phase_counts(memo: kopf.Memo, **_: Any) -> dict:
    return memo.reconciler.phases.counts()


def _children(body: Any, indexes: dict[str, Any]) -> Callable[[], list[Child]]:
    """The job's children as the indexes hold them when called: read under the job's lock, so a
    pass never sees fewer children than a pass before it."""
    key = (body["metadata"]["namespace"], body["metadata"]["name"])
    by_kind = (indexes["pytorchjob_children"], indexes["mpijob_children"])
    return lambda: [child for index in by_kind for child in index.get(key, [])]


def _post_event(ref: dict, event: Any) -> None:
    kopf.event(ref, type=event.type, reason=event.reason, message=event.message)
