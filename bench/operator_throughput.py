#!/usr/bin/env python3
"""Operator throughput: N RLHFJobs at once through all three stages, in the test cluster.

    .venv/bin/python bench/operator_throughput.py [--jobs 200] [--train-seconds 0.5 1.5]

What runs (tests/support/kube_cluster.py): etcd, kube-apiserver, kube-controller-manager,
kube-scheduler, KWOK with three fake nodes, the real training-operator; the operator as a process
(`python -m kuberlhf_operator`, talking through a counting proxy). Each RLHFJob's pods "train" for
a random time (KWOK ends them: podAnnotations `kwok.kuberlhf.io/run-for`, exit code 0), and the
training-operator marks each child Succeeded from its master pod. Two watches of the benchmark's
own see every PyTorchJob and pod change. It prints

- handover: from the training-operator marking a child Succeeded to the operator creating the next
  stage's child, p50 / p99 / max over all 2N handovers (the operator's part);
- the rest of the way from one stage's master pod ending to the next one running: pod end ->
  child Succeeded (training-operator), child created -> its master pod Running (training-operator,
  scheduler, KWOK);
- API requests per RLHFJob made by the operator, counted at the wire, by verb and resource;
- the operator's peak and final resident memory, and CPU seconds of every process;
- checks: every job Succeeded, exactly one child per stage, all at attempt 1.

A benchmark prints figures; it asserts nothing about time.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from kubernetes import client, watch  # noqa: E402

from bench.counting_proxy import CountingProxy, proxy_kubeconfig  # noqa: E402
from tests.support.kube_cluster import (TRAINING_OPERATOR_TUNING, KubeCluster, locate_cluster_tools,  # noqa: E402
                                        pod_exits)
from tests.support.operator_process import OperatorProcess  # noqa: E402
from tests.support.rlhfjobs import CRD_PATH, SHARED_CLAIM, Cluster, manifest  # noqa: E402

PAIRS = (("sft", "reward"), ("reward", "ppo"))


class Timeline:
    """When the benchmark's own watches first saw each PyTorchJob created and Succeeded, and each
    master pod Running and Succeeded (monotonic seconds)."""

    def __init__(self, api: client.ApiClient, namespace: str):
        self.custom, self.core = client.CustomObjectsApi(api), client.CoreV1Api(api)
        self.namespace = namespace
        self.child_created: dict[str, float] = {}
        self.child_succeeded: dict[str, float] = {}
        self.pod_running: dict[str, float] = {}
        self.pod_ended: dict[str, float] = {}
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._watch, args=(self._children, self._child), daemon=True),
                         threading.Thread(target=self._watch, args=(self._pods, self._pod), daemon=True)]

    def start(self) -> "Timeline":
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)

    def _children(self, **kw):
        return self.custom.list_namespaced_custom_object("kubeflow.org", "v1", self.namespace, "pytorchjobs", **kw)

    def _pods(self, **kw):
        return self.core.list_namespaced_pod(self.namespace, label_selector="training.kubeflow.org/replica-type=master", **kw)

    def _watch(self, lister: Callable, seen: Callable[[object], None]) -> None:
        resource_version = None
        while not self._stop.is_set():
            stream = watch.Watch()
            for event in stream.stream(lister, timeout_seconds=2, resource_version=resource_version):
                if event["type"] == "ERROR":  # e.g. 410 Gone: list again
                    resource_version = None
                    break
                if event["type"] in ("ADDED", "MODIFIED"):  # not BOOKMARK
                    seen(event["object"])
            else:
                resource_version = stream.resource_version
            stream.stop()

    def _child(self, body: dict) -> None:
        now, name = time.monotonic(), body["metadata"]["name"]
        self.child_created.setdefault(name, now)
        if any(c["type"] == "Succeeded" and c["status"] == "True" for c in body.get("status", {}).get("conditions", [])):
            self.child_succeeded.setdefault(name, now)

    def _pod(self, pod: dict) -> None:  # a dict: the watch is of a wrapper, whose return type it cannot tell
        now, child = time.monotonic(), pod["metadata"]["labels"]["training.kubeflow.org/job-name"]
        phase = pod.get("status", {}).get("phase")
        if phase == "Running":
            self.pod_running.setdefault(child, now)
        elif phase == "Succeeded":
            self.pod_ended.setdefault(child, now)


def memory_mib(pid: int) -> dict[str, float]:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {key: int(fields[key].split()[0]) / 1024 for key in ("VmHWM", "VmRSS")}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (its children included once they ended)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return round(sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK"), 1)


def operator_figures(text: str) -> dict:
    """Reconciles (by what triggered them), their mean duration, conflicts and errors, from the
    operator's /metrics."""
    sums: dict[str, float] = {}
    by_trigger: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("kuberlhf_operator_reconcile_duration_seconds_count{"):
            by_trigger[line.split('trigger="')[1].split('"')[0]] = float(line.split()[-1])
        for name in ("reconcile_duration_seconds_count", "reconcile_duration_seconds_sum",
                     "status_conflicts_total", "reconcile_errors_total"):
            if line.startswith(f"kuberlhf_operator_{name}"):
                sums[name] = sums.get(name, 0.0) + float(line.split()[-1])
    count = sums.get("reconcile_duration_seconds_count", 0.0)
    return {"reconciles": count, "mean_reconcile_ms": round(1000 * sums.get("reconcile_duration_seconds_sum", 0.0)
                                                             / max(count, 1), 1),
            "reconciles_by_trigger": by_trigger,
            "status_conflicts": sums.get("status_conflicts_total", 0.0),
            "reconcile_errors": sums.get("reconcile_errors_total", 0.0)}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def spread(values: list[float]) -> dict[str, float]:
    if not values:
        return {"count": 0}
    return {"count": len(values), "p50": round(statistics.median(values), 3), "p99": round(percentile(values, 0.99), 3),
            "max": round(max(values), 3)}


def job(i: int, rng: random.Random, train: tuple[float, float]) -> dict:
    """A three-stage job whose pods train for a random time, then exit 0 (KWOK ends them)."""
    return manifest(f"job{i:03d}", podAnnotations=pod_exits(0, after=f"{rng.uniform(*train):.2f}s"))


def run(args: argparse.Namespace, kc: KubeCluster, workdir: Path) -> dict:
    api = kc.api_client()
    namespace = kc.create_namespace("bench")
    kc.create_claim(namespace, SHARED_CLAIM)
    cluster = Cluster(api, namespace)
    proxy = CountingProxy(kc.server, str(kc.certs["ca_crt"])).start()
    kubeconfig = proxy_kubeconfig(kc.token, proxy.port, workdir / "kubeconfig") if args.count_requests else kc.kubeconfig
    operator = OperatorProcess(kubeconfig, workdir / "operator.log",
                               env={"KUBERLHF_OPERATOR_WORKERS": str(args.workers)} if args.workers else None)
    operator.start()
    timeline = Timeline(api, namespace).start()
    rng = random.Random(0)
    bodies = [job(i, rng, args.train_seconds) for i in range(args.jobs)]
    cpu_before = cpu_by_process(kc, operator)
    try:
        time.sleep(2)  # let every watch settle: startup requests are not per-job work
        baseline = proxy.snapshot()
        started = time.monotonic()
        submitted: dict[str, float] = {}

        def create(body: dict) -> None:
            cluster.create(body)
            submitted[body["metadata"]["name"]] = time.monotonic()

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(create, bodies))
        created_all = time.monotonic() - started
        phases = wait_all(cluster, timeline, args.jobs, args.timeout)
        wall = time.monotonic() - started
        requests = proxy.snapshot() - baseline
        result = report(args.jobs, cluster, timeline, phases, requests, memory_mib(operator.pid), wall)
        result["seconds_to_create_all_rlhfjobs"] = round(created_all, 1)
        result["first_child_seconds"] = spread([timeline.child_created[f"{j}-sft-1"] - t for j, t in submitted.items()
                                                if f"{j}-sft-1" in timeline.child_created])
        result["operator_metrics"] = operator_figures(operator.get("/metrics"))
        after = cpu_by_process(kc, operator)
        result["cpu_seconds"] = {k: round(after[k] - cpu_before.get(k, 0.0), 1) for k in after}
        result["cluster_components_restarted"] = dict(kc.restarts)
        result["training_operator_args"] = kc.training_operator_args
        print(json.dumps(result, indent=2), flush=True)
        return result
    finally:
        timeline.stop()
        operator.stop()
        proxy.stop()


def cpu_by_process(kc: KubeCluster, operator: OperatorProcess) -> dict[str, float]:
    pids = {"operator": operator.pid, "kube-apiserver": kc.apiserver.popen.pid, "etcd": kc.etcd.popen.pid,
            "benchmark (watches, proxy)": os.getpid()}
    pids.update({name: proc.popen.pid for name, proc in kc.components.items() if proc.popen is not None})
    return {name: cpu_seconds(pid) for name, pid in pids.items()}


def wait_all(cluster: Cluster, timeline: Timeline, jobs: int, timeout: float) -> dict[str, int]:
    """Phases once every job is done: wait on the watches first, so that polling (a list of every
    RLHFJob) does not load the apiserver while the operator is measured."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and sum(n.endswith("-ppo-1") for n in list(timeline.child_succeeded)) < jobs:
        time.sleep(0.5)
    while True:
        items = cluster.custom.list_namespaced_custom_object("kuberlhf.io", "v1alpha1", cluster.namespace,
                                                             "rlhfjobs")["items"]
        phases: dict[str, int] = {}
        for item in items:
            phase = (item.get("status") or {}).get("phase", "None")
            phases[phase] = phases.get(phase, 0) + 1
        if phases.get("Succeeded") == jobs or time.monotonic() > deadline:
            return phases
        time.sleep(1)


def gaps(jobs: int, start: dict[str, float], end: dict[str, float], same_child: bool) -> dict[str, list[float]]:
    """end - start per handover: from stage `before`'s event to stage `after`'s (or, `same_child`,
    from one event of a child to another of the same child)."""
    out: dict[str, list[float]] = {}
    for i in range(jobs):
        for before, after in PAIRS:
            a, b = f"job{i:03d}-{before}-1", f"job{i:03d}-{after}-1"
            t0, t1 = (start.get(b), end.get(b)) if same_child else (start.get(a), end.get(b))
            if t0 is not None and t1 is not None:
                out.setdefault(f"{before}->{after}", []).append(t1 - t0)
    return out


def report(jobs, cluster, timeline, phases, requests, memory, wall) -> dict:
    handover = gaps(jobs, timeline.child_succeeded, timeline.child_created, same_child=False)
    names = cluster.child_names()
    total = sum(requests.values())
    flat = [v for values in handover.values() for v in values]
    return {
        "jobs": jobs,
        "phases": phases,
        "wall_seconds": round(wall, 1),
        "handover_seconds": {**spread(flat), **{f"p99 {pair}": round(percentile(v, 0.99), 3)
                                                for pair, v in handover.items()}},
        "pod_end_to_child_succeeded_seconds": spread(
            [timeline.child_succeeded[c] - t for c, t in timeline.pod_ended.items() if c in timeline.child_succeeded]),
        "child_created_to_master_running_seconds": spread(
            [v for values in gaps(jobs, timeline.child_created, timeline.pod_running, same_child=True).values()
             for v in values]),
        "master_end_to_next_master_running_seconds": spread(
            [v for values in gaps(jobs, timeline.pod_ended, timeline.pod_running, same_child=False).values()
             for v in values]),
        "children": len(names),
        "duplicated_or_retried_children": sum(1 for n in names if not n.endswith("-1")),
        "api_requests_per_rlhfjob": round(total / jobs, 1),
        "api_requests_by_kind_per_rlhfjob": {k: round(v / jobs, 2) for k, v in sorted(requests.items())},
        "operator_memory_mib": {"peak": round(memory["VmHWM"], 1), "end": round(memory["VmRSS"], 1)},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--train-seconds", type=float, nargs=2, default=(0.5, 1.5),
                        help="each job's pods 'train' for a uniform random time in this range")
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--workers", type=int, default=None, help="KUBERLHF_OPERATOR_WORKERS (default: the operator's)")
    parser.add_argument("--no-count-requests", dest="count_requests", action="store_false",
                        help="connect the operator straight to the apiserver (the proxy sits in this "
                        "process, which also runs the watches, and adds latency)")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the operator log and the cluster's logs here")
    parser.add_argument("--training-operator-defaults", action="store_true",
                        help="run the training-operator as upstream's Deployment does (1 thread, 20 requests/s) "
                        "instead of the test cluster's settings")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="kuberlhf-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    tuning = () if args.training_operator_defaults else TRAINING_OPERATOR_TUNING
    with KubeCluster(locate_cluster_tools(), workdir=workdir / "cluster", crds=[CRD_PATH],
                     training_operator_args=tuning) as kc:
        result = run(args, kc, workdir)
    print(f"operator log: {workdir / 'operator.log'}; cluster logs: {workdir / 'cluster' / 'logs'}", file=sys.stderr)
    ok = result["phases"].get("Succeeded") == args.jobs and result["children"] == 3 * args.jobs
    return 0 if ok and result["duplicated_or_retried_children"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
