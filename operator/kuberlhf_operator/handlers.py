"""kopf glue: watch events mark RLHFJobs for a pass; the work queue's threads run the passes.

    kopf run -m kuberlhf_operator.handlers --all-namespaces --liveness=http://0.0.0.0:8080/healthz

(`python -m kuberlhf_operator` does the same with the project's defaults.)

Four things mark a job for the same level-triggered pass: any change of the RLHFJob (its
deletion included), any change of one of its children or of one of their pods, and the work queue
itself (a failed pass after a backoff, every job once per resync interval, sooner when a stage's
start deadline passes before that). A pass reads the job, its children and their pods from
in-memory indexes fed by the watches, so it costs no API reads; kopf fills the indexes before any
handler runs, so a restarted operator sees every existing child before it decides anything.

Pods are watched with a server-side label selector: only the operator's own training pods (the
pod templates carry its labels), never every pod of the cluster; the index keeps a small summary
of each (observe.Pod), not the pod.

Handlers and indexes are `async` and never wait (events are posted by a thread of their own): they run in kopf's event loop, which stays
free to keep the indexes current while passes wait on the API server. Only watch-event
handlers and indexes are registered: no change-detecting handler (on.create, on.update,
on.delete) and no per-object timer, so kopf keeps no state on RLHFJobs (no finalizer, no
bookkeeping annotations, no requests of its own). The operator's finalizer is added and removed
by its own passes.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

import kopf

from . import metrics, posting
from .freshness import PodNews
from .kube import Kube, api_client, describe_error
from .names import CHILD_KINDS, GROUP, LABEL_JOB, LABEL_MANAGED_BY, MANAGED_BY, PLURAL, VERSION
from .observe import Child, Departed, Pod
from .posting import EventPoster
from .reconciler import Reconciler
from .settings import OperatorConfig
from .workqueue import Passed, WorkQueue, start_workers

log = logging.getLogger(__name__)
CONFIG = OperatorConfig.from_env()
OURS = {LABEL_MANAGED_BY: MANAGED_BY, LABEL_JOB: kopf.PRESENT}
PYTORCHJOBS = ("kubeflow.org", CHILD_KINDS["pytorchjob"][0].split("/")[1], CHILD_KINDS["pytorchjob"][2])
MPIJOBS = ("kubeflow.org", CHILD_KINDS["mpijob"][0].split("/")[1], CHILD_KINDS["mpijob"][2])
PODS = ("v1", "pods")
# Asked of the API server for pods and children: it sends only ours (kopf's `labels=` filters are
# applied on this side, to what the watch delivers).
OURS_SELECTOR = f"{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_JOB}"
# kopf's own finalizer name. No registered handler needs one, so kopf never adds it; it must not
# be ours (kuberlhf.io/finalizer), or kopf would remove ours as one that no handler needs.
KOPF_FINALIZER = f"{GROUP}/kopf-unused"
TRIGGERS = ("child", "pod", "resync", "rlhfjob")  # why a pass runs, most telling first (a metrics label)


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **indexes: Any) -> None:
    settings.persistence.finalizer = KOPF_FINALIZER
    for resource in (PODS, PYTORCHJOBS, MPIJOBS):
        settings.watching.label_selectors[resource] = OURS_SELECTOR
    settings.posting.level = logging.INFO
    # kopf logs every handler call at INFO, one line per watch event of every child: keep the
    # operator's own transition lines and kopf's warnings.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    kube = Kube(api_client(CONFIG.workers + posting.THREADS))
    memo.events = EventPoster(kube.core).start()
    memo.reconciler = Reconciler(kube, post_event=memo.events.post)
    memo.queue = WorkQueue(CONFIG.resync_seconds)
    memo.pod_news = PodNews()
    memo.departed = Departed()
    metrics.serve(CONFIG.metrics_port)
    start_workers(memo.queue, lambda key, triggers: _pass(memo, indexes, key, triggers), CONFIG.workers, _failed)


@kopf.on.cleanup()
async def stop_workers(memo: kopf.Memo, **_: Any) -> None:
    memo.queue.close()
    memo.events.stop()


@kopf.index(GROUP, VERSION, PLURAL)
async def rlhfjobs(namespace: str, name: str, body: kopf.Body, **_: Any) -> dict:
    return {(namespace, name): dict(body)}


@kopf.index(*PYTORCHJOBS, labels=OURS)
async def pytorchjob_children(namespace: str, labels: kopf.Labels, body: kopf.Body, **_: Any) -> dict:
    return {(namespace, labels[LABEL_JOB]): Child.from_body(body)}


@kopf.index(*MPIJOBS, labels=OURS)
async def mpijob_children(namespace: str, labels: kopf.Labels, body: kopf.Body, **_: Any) -> dict:
    return {(namespace, labels[LABEL_JOB]): Child.from_body(body)}


@kopf.index(*PODS, labels=OURS)
async def child_pods(namespace: str, labels: kopf.Labels, body: kopf.Body, **_: Any) -> dict:
    return {(namespace, labels[LABEL_JOB]): Pod.from_body(body)}


@kopf.on.event(GROUP, VERSION, PLURAL)
async def rlhfjob_changed(type: str, body: kopf.Body, uid: str, namespace: str, name: str, memo: kopf.Memo,
                          **_: Any) -> None:
    if type == "DELETED":
        memo.reconciler.forget(uid)
    elif memo.reconciler.is_news(body):  # not the echo of our own status write
        memo.queue.add((namespace, name), "rlhfjob")


@kopf.on.event(*PYTORCHJOBS, labels=OURS)
@kopf.on.event(*MPIJOBS, labels=OURS)
async def child_changed(namespace: str, labels: kopf.Labels, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    ended = Child.from_body(body).state in ("Succeeded", "Failed")  # the next stage, or a retry, waits
    memo.queue.add((namespace, labels[LABEL_JOB]), "child", urgent=ended)


@kopf.on.event(*PODS, labels=OURS)
async def pod_changed(type: str, uid: str, namespace: str, labels: kopf.Labels, body: kopf.Body, memo: kopf.Memo,
                      **_: Any) -> None:
    pod, key = Pod.from_body(body), (namespace, labels[LABEL_JOB])
    if type == "DELETED" and pod.disruption is not None:
        memo.departed.add(key, pod)
    if memo.pod_news.changed(uid, None if type == "DELETED" else pod):
        memo.queue.add(key, "pod")


@kopf.on.probe(id="rlhfjobs")
async def phase_counts(memo: kopf.Memo, **_: Any) -> dict:
    return memo.reconciler.phases.counts()


def _pass(memo: kopf.Memo, indexes: dict[str, Any], key: tuple[str, str], triggers: frozenset[str]) -> Passed:
    """A pass over the job as the index holds it now (a job being deleted too: its pass removes
    the finalizer of an earlier operator version). Passed(exists=False) if the job is gone."""
    trigger = next(t for t in TRIGGERS if t in triggers)  # "rlhfjob" only if nothing else asked
    bodies = list(indexes["rlhfjobs"].get(key, []))
    again_in = None
    for body in bodies:
        again_in = memo.reconciler.reconcile(body, _children(key, indexes), trigger=trigger,
                                             pods=lambda: [*indexes["child_pods"].get(key, []),
                                                           *memo.departed.of(key)])
    return Passed(exists=bool(bodies), again_in=again_in)


def _failed(key: tuple[str, str], error: BaseException, retry_in: float) -> None:
    log.warning("RLHFJob %s/%s: pass failed, retrying in %.1f s: %s", *key, retry_in, describe_error(error))


def _children(key: tuple[str, str], indexes: dict[str, Any]) -> Callable[[], list[Child]]:
    """The job's children as the indexes hold them when called: read under the job's lock, so a
    pass never sees fewer children than a pass before it."""
    by_kind = (indexes["pytorchjob_children"], indexes["mpijob_children"])
    return lambda: [child for index in by_kind for child in index.get(key, [])]
