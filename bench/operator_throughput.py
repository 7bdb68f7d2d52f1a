#!/usr/bin/env python3
"""Operator throughput: N RLHFJobs at once through all three stages, on a real kube-apiserver.

    .venv/bin/python bench/operator_throughput.py [--jobs 200] [--train-seconds 0.5 1.5]

What runs: etcd + kube-apiserver (tests/support/controlplane.py), the operator as a process
(`python -m kuberlhf_operator`, talking through a counting proxy), and the simulated
training-operator, which ends each child after a random "training" time. It prints

- the time from a child's success (its status write returning) to the creation of the next
  stage's child (seen by a separate watch), p50 / p99 / max over all 2N handovers;
- API requests per RLHFJob, counted at the wire, by verb and resource;
- the operator's peak and final resident memory;
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
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from kubernetes import client, watch  # noqa: E402

from bench.counting_proxy import CountingProxy, proxy_kubeconfig  # noqa: E402
from tests.support.controlplane import ControlPlane, locate_tools  # noqa: E402
from tests.support.operator_process import OperatorProcess  # noqa: E402
from tests.support.rlhfjobs import CRD_PATH, Cluster, manifest  # noqa: E402
from tests.support.simulated_training_operator import Outcome, SimulatedTrainingOperator  # noqa: E402

NAMESPACE = "bench"


class CreationWatcher:
    """When each PyTorchJob first appeared on a watch of our own (monotonic seconds)."""

    def __init__(self, api: client.ApiClient):
        self.custom = client.CustomObjectsApi(api)
        self.seen: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> "CreationWatcher":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        resource_version = None
        while not self._stop.is_set():
            stream = watch.Watch()
            for event in stream.stream(self.custom.list_namespaced_custom_object, "kubeflow.org", "v1",
                                       NAMESPACE, "pytorchjobs", timeout_seconds=2,
                                       resource_version=resource_version):
                self.seen.setdefault(event["object"]["metadata"]["name"], time.monotonic())
            resource_version = stream.resource_version
            stream.stop()


def memory_mib(pid: int) -> dict[str, float]:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {key: int(fields[key].split()[0]) / 1024 for key in ("VmHWM", "VmRSS")}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return round((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), 1)


def operator_figures(text: str) -> dict[str, float]:
    """Reconciles, their mean duration, conflicts and errors, from the operator's /metrics."""
    sums: dict[str, float] = {}
    for line in text.splitlines():
        for name in ("reconcile_duration_seconds_count", "reconcile_duration_seconds_sum",
                     "status_conflicts_total", "reconcile_errors_total"):
            if line.startswith(f"kuberlhf_operator_{name}"):
                sums[name] = sums.get(name, 0.0) + float(line.split()[-1])
    count = sums.get("reconcile_duration_seconds_count", 0.0)
    return {"reconciles": count, "mean_reconcile_ms": round(1000 * sums.get("reconcile_duration_seconds_sum", 0.0)
                                                             / max(count, 1), 1),
            "status_conflicts": sums.get("status_conflicts_total", 0.0),
            "reconcile_errors": sums.get("reconcile_errors_total", 0.0)}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def run(args: argparse.Namespace, cp: ControlPlane, workdir: Path) -> dict:
    api = cp.api_client()
    client.CoreV1Api(api).create_namespace({"metadata": {"name": NAMESPACE}})
    cluster = Cluster(api, NAMESPACE)
    proxy = CountingProxy(cp.server, str(cp.certs["ca_crt"])).start()
    kubeconfig = proxy_kubeconfig(cp.token, proxy.port, workdir / "kubeconfig") if args.count_requests else cp.kubeconfig
    operator = OperatorProcess(kubeconfig, workdir / "operator.log",
                               env={"KUBERLHF_OPERATOR_WORKERS": str(args.workers)} if args.workers else None)
    operator.start()
    creations = CreationWatcher(api).start()
    rng = random.Random(0)
    sim = SimulatedTrainingOperator(api, namespace=NAMESPACE,
                                    script=lambda child: Outcome(after=rng.uniform(*args.train_seconds))).start()
    try:
        time.sleep(2)  # let every watch settle: startup requests are not per-job work
        baseline = proxy.snapshot()
        started = time.monotonic()
        submitted: dict[str, float] = {}

        def create(i: int) -> None:
            cluster.create(manifest(f"job{i:03d}"))
            submitted[f"job{i:03d}"] = time.monotonic()

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(create, range(args.jobs)))
        created_all = time.monotonic() - started
        phases = wait_all(cluster, sim, args.jobs, args.timeout)
        wall = time.monotonic() - started
        requests = proxy.snapshot() - baseline
        memory = memory_mib(operator.pid)
        result = report(args.jobs, cluster, sim, creations, phases, requests, memory, wall)
        result["seconds_to_create_all_rlhfjobs"] = round(created_all, 1)
        starts = [creations.seen[f"{job}-sft-1"] - t for job, t in submitted.items() if f"{job}-sft-1" in creations.seen]
        result["first_child_seconds"] = {"p50": round(statistics.median(starts), 3),
                                         "p99": round(percentile(starts, 0.99), 3)}
        result["operator_metrics"] = operator_figures(operator.get("/metrics"))
        result["cpu_seconds"] = {"operator": cpu_seconds(operator.pid), "kube-apiserver": cpu_seconds(
            cp.apiserver.popen.pid), "etcd": cpu_seconds(cp.etcd.popen.pid), "bench+simulator": cpu_seconds(os.getpid())}
        print(json.dumps(result, indent=2), flush=True)
        return result
    finally:
        sim.stop()
        creations.stop()
        operator.stop()
        proxy.stop()


def wait_all(cluster: Cluster, sim: SimulatedTrainingOperator, jobs: int, timeout: float) -> dict[str, int]:
    """Phases once every job is done: wait on the simulator first, so that polling (a list of
    every RLHFJob) does not load the apiserver while the operator is measured."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and sum(name.endswith("-ppo-1") for name in list(sim.finished)) < jobs:
        time.sleep(0.5)
    while True:
        items = cluster.custom.list_namespaced_custom_object("kuberlhf.io", "v1alpha1", NAMESPACE, "rlhfjobs")["items"]
        phases: dict[str, int] = {}
        for item in items:
            phase = (item.get("status") or {}).get("phase", "None")
            phases[phase] = phases.get(phase, 0) + 1
        if phases.get("Succeeded") == jobs or time.monotonic() > deadline:
            return phases
        time.sleep(1)


def report(jobs, cluster, sim, creations, phases, requests, memory, wall) -> dict:
    handovers, by_pair = [], {}
    for i in range(jobs):
        for before, after in (("sft", "reward"), ("reward", "ppo")):
            done, created = sim.finished.get(f"job{i:03d}-{before}-1"), creations.seen.get(f"job{i:03d}-{after}-1")
            if done is not None and created is not None:
                handovers.append(created - done)
                by_pair.setdefault(f"{before}->{after}", []).append(created - done)
    names = cluster.child_names()
    total = sum(requests.values())
    return {
        "jobs": jobs,
        "phases": phases,
        "wall_seconds": round(wall, 1),
        "handover_seconds": {"count": len(handovers), "p50": round(statistics.median(handovers), 3),
                             "p99": round(percentile(handovers, 0.99), 3), "max": round(max(handovers), 3),
                             **{f"p99 {pair}": round(percentile(v, 0.99), 3) for pair, v in by_pair.items()}},
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
                        help="each child 'trains' for a uniform random time in this range")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--workers", type=int, default=None, help="KUBERLHF_OPERATOR_WORKERS (default: the operator's)")
    parser.add_argument("--no-count-requests", dest="count_requests", action="store_false",
                        help="connect the operator straight to the apiserver (the proxy sits in this "
                        "process, which also runs the simulator, and adds latency)")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the operator log here")
    args = parser.parse_args()
    workdir = args.workdir or Path(__import__("tempfile").mkdtemp(prefix="kuberlhf-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    with ControlPlane(locate_tools()) as cp:
        cp.install_crds([*locate_tools().crds, CRD_PATH])
        result = run(args, cp, workdir)
    print(f"operator log: {workdir / 'operator.log'}", file=sys.stderr)
    ok = result["phases"].get("Succeeded") == args.jobs and result["children"] == 3 * args.jobs
    return 0 if ok and result["duplicated_or_retried_children"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
