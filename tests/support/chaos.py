"""The operator's chaos run: many RLHFJobs while everything around the operator goes wrong.

It runs in the test cluster (tests/support/kube_cluster.py): the real training-operator and
mpi-operator make each child's pods, the scheduler places them on KWOK's nodes, and a scripted
trainer (tests/support/scripted_trainer.py) ends each child's leader pod after a short "training".

- the operator is killed with SIGKILL at random moments and started again (empty memory);
- the API server is restarted once, in the middle (every controller of the cluster sees it too;
  the cluster starts again one that exits, as a kubelet would);
- child jobs fail at random: whether a child's pod fails is a pure function of the child's name
  and the seed, so the right outcome of every RLHFJob (its phase and the exact set of children) is
  known in advance, whatever the timing;
- between the operator and the API server sits a proxy that injects errors (before and after
  a request took effect), 409 conflicts and expired watches (410 Gone). The Kubeflow
  controllers and the scripted trainer talk to the API server directly.

Used by tests/integration/operator/test_operator_chaos.py (sized for CI) and by
bench/operator_chaos.py (the full 50 jobs). `ChaosRun.run()` returns the figures; `problems()`
lists everything that ended wrong.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.counting_proxy import CountingProxy, Faults, proxy_kubeconfig
from tests.support.kube_cluster import KubeCluster
from tests.support.operator_process import OperatorProcess
from tests.support.rlhfjobs import Cluster, manifest
from tests.support.scripted_trainer import RUNS_UNTIL_ENDED, Outcome, ScriptedTrainer

STAGES = ("sft", "reward", "ppo")
ACTIVE = ("Starting", "Queued", "Running", "Suspended")
KINDS = {"pytorchjob": "PyTorchJob", "mpijob": "MPIJob"}


@dataclass
class ChaosPlan:
    jobs: int = 16
    seed: int = 1
    child_failure: float = 0.3              # probability that a child fails
    train_seconds: tuple[float, float] = (0.2, 1.0)
    kill_every: tuple[float, float] = (0.2, 1.5)  # seconds the operator lives between kills
    kill_while_starting: float = 0.4         # probability that a restarted operator is killed again at once
    restart_apiserver_after: float = 0.4    # of the children expected, this share exist first
    faults: Faults = field(default_factory=lambda: Faults(error_before=0.03, error_after=0.03, conflict=0.03,
                                                          watch_expiry=(3.0, 10.0)))
    timeout: float = 300


def fails(plan: ChaosPlan, child: str) -> bool:
    return random.Random(f"{plan.seed}:{child}").random() < plan.child_failure


def job_manifests(plan: ChaosPlan) -> list[dict[str, Any]]:
    """A mix: both launchers, parallel SFT and reward, retry limits 0 to 2."""
    rng = random.Random(plan.seed)
    out = []
    for i in range(plan.jobs):
        limits = {s: rng.choice((0, 1, 2)) for s in STAGES}
        out.append(manifest(f"chaos{i:02d}", launcher="mpijob" if i % 5 == 4 else "pytorchjob",
                            parallelSFTAndReward=i % 3 == 2, podAnnotations=RUNS_UNTIL_ENDED,
                            stages={s: {"gpusPerNode": 0, "retryLimit": limits[s]} for s in STAGES}))
    return out


def expected(plan: ChaosPlan, body: dict[str, Any]) -> tuple[str, set[str]]:
    """(phase, child names) of a job once everything has settled."""
    spec, name = body["spec"], body["metadata"]["name"]
    succeeded, failed, children = set(), False, set()
    for stage in STAGES:
        parallel = spec.get("parallelSFTAndReward") and stage in ("sft", "reward")
        needs = () if parallel else STAGES[: STAGES.index(stage)]
        if any(s not in succeeded for s in needs):
            continue  # never started: an earlier stage failed
        for attempt in range(1, spec["stages"][stage]["retryLimit"] + 2):
            children.add(f"{name}-{stage}-{attempt}")
            if not fails(plan, f"{name}-{stage}-{attempt}"):
                succeeded.add(stage)
                break
        else:
            failed = True
    return ("Failed" if failed else "Succeeded"), children


class ChaosRun:
    def __init__(self, cp: KubeCluster, namespace: str, workdir: Path, plan: ChaosPlan):
        self.cp, self.namespace, self.workdir, self.plan = cp, namespace, workdir, plan
        self.api = cp.api_client()
        self.cluster = Cluster(self.api, namespace)
        self.manifests = job_manifests(plan)
        self.expected = {m["metadata"]["name"]: expected(plan, m) for m in self.manifests}
        self.kills = 0
        self.kills_while_starting = 0
        self.apiserver_restarts = 0
        self.unexpected_exits: list[int] = []
        self._done = threading.Event()
        self._rng = random.Random(plan.seed)

    # -- the run -------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        plan = self.plan
        proxy = CountingProxy(self.cp.server, str(self.cp.certs["ca_crt"]), faults=plan.faults).start()
        kubeconfig = proxy_kubeconfig(self.cp.token, proxy.port, self.workdir / "proxy.kubeconfig")
        self.operator = OperatorProcess(kubeconfig, self.workdir / "operator.log")
        rng = random.Random(plan.seed + 1)
        script = lambda child: Outcome(  # noqa: E731
            1 if fails(plan, child) else 0, "injected failure" if fails(plan, child) else "",
            after=rng.uniform(*plan.train_seconds))
        self.trainer = ScriptedTrainer(self.api, self.namespace, script)
        restarts_before = dict(self.cp.restarts)
        started = time.monotonic()
        try:
            self.operator.start()
            self.trainer.__enter__()
            for body in self.manifests:
                self.cluster.create(body)
            killer = threading.Thread(target=self._kill_at_random, daemon=True)
            killer.start()
            settled = self._wait_until_settled(started + plan.timeout)
            self._done.set()
            killer.join(timeout=60)
            plan.faults.enabled = False  # the final reads and the operator's last checks see the truth
            self._ensure_operator()
            quiet = self._quiet_period()
        finally:
            self._done.set()
            self.trainer.__exit__(None, None, None)
            self.operator.stop()
            proxy.stop()
        self.component_restarts = {k: v - restarts_before.get(k, 0) for k, v in self.cp.restarts.items()
                                   if v != restarts_before.get(k, 0)}
        self.duration = time.monotonic() - started
        return self.figures(settled, quiet)

    def _kill_at_random(self) -> None:
        restart_after = self.plan.restart_apiserver_after * sum(len(c) for _, c in self.expected.values())
        while not self._done.wait(self._rng.uniform(*self.plan.kill_every)):
            if not self.apiserver_restarts and len(self.trainer.running) >= restart_after:
                self.cp.restart_apiserver()
                self.apiserver_restarts += 1
                continue
            if self.operator.proc.poll() is not None:
                self.unexpected_exits.append(self.operator.proc.returncode)
            self.operator.stop(kill=True)
            self.kills += 1
            if self._rng.random() < self.plan.kill_while_starting:
                # Again before it is up: while kopf lists and indexes, or the first passes run.
                self.operator.start(wait=False)
                time.sleep(self._rng.uniform(0.3, 2.0))
                self.operator.stop(kill=True)
                self.kills += 1
                self.kills_while_starting += 1
            self.operator.start()

    def _ensure_operator(self) -> None:
        if self.operator.proc.poll() is not None:
            self.unexpected_exits.append(self.operator.proc.returncode)
            self.operator.start()

    def _wait_until_settled(self, deadline: float) -> bool:
        """Every job in its final phase with all its children ended (or the deadline passed)."""
        while time.monotonic() < deadline:
            try:
                if self._settled():
                    return True
            except Exception:  # noqa: BLE001 - the apiserver may be restarting
                pass
            time.sleep(1)
        return False

    def _settled(self) -> bool:
        """Every job Succeeded or Failed with no stage left active, and every child ended. (Not
        "as expected": a wrong outcome ends the wait too, and problems() says what is wrong.)"""
        for job in self._jobs():
            status = job.get("status") or {}
            if status.get("phase") not in ("Succeeded", "Failed") or any(
                    s["state"] in ACTIVE for s in status.get("stages") or []):
                return False
        return all(_ended(child) for child in self._children())

    def _quiet_period(self, seconds: float = 5.0) -> bool:
        """With faults off and no more kills, nothing may change any more: no late child."""
        before = self._child_names()
        time.sleep(seconds)
        return self._child_names() == before

    # -- what it shows -------------------------------------------------------------------

    def _jobs(self) -> list[dict[str, Any]]:
        return self.cluster.custom.list_namespaced_custom_object("kuberlhf.io", "v1alpha1", self.namespace,
                                                                 "rlhfjobs")["items"]

    def _children(self) -> list[dict[str, Any]]:
        return self.cluster.children("PyTorchJob") + self.cluster.children("MPIJob")

    def _child_names(self) -> list[str]:
        return sorted(c["metadata"]["name"] for c in self._children())

    def problems(self) -> list[str]:
        out = [f"the operator exited on its own (codes {self.unexpected_exits})"] if self.unexpected_exits else []
        children = set(self._child_names())
        for job in self._jobs():
            name = job["metadata"]["name"]
            status = job.get("status") or {}
            want_phase, want_children = self.expected[name]
            have = {c for c in children if c.rsplit("-", 2)[0] == name}
            if status.get("phase") != want_phase:
                out.append(f"{name}: phase {status.get('phase')}, expected {want_phase}: {status.get('message')}")
            if have != want_children:
                out.append(f"{name}: children {sorted(have)}, expected {sorted(want_children)}")
            limits = job["spec"]["stages"]
            for stage in status.get("stages") or []:
                limit = limits[stage["name"]]["retryLimit"]
                allowed = limit + 1 if stage["state"] == "Failed" else limit
                if stage.get("failedAttempts", 0) > allowed:
                    out.append(f"{name}: stage {stage['name']} failed {stage['failedAttempts']} times (limit {limit})")
        return out

    def figures(self, settled: bool, quiet: bool) -> dict[str, Any]:
        phases: dict[str, int] = {}
        for phase, _ in self.expected.values():
            phases[phase] = phases.get(phase, 0) + 1
        children = self._child_names()
        return {
            "jobs": self.plan.jobs,
            "expected_phases": phases,
            "settled": settled,
            "quiet_afterwards": quiet,
            "duration_seconds": round(self.duration, 1),
            "operator_kills_sigkill": self.kills,
            "of_which_while_starting": self.kills_while_starting,
            "apiserver_restarts": self.apiserver_restarts,
            "children": len(children),
            "children_failed_on_purpose": sum(fails(self.plan, n) for n in children),
            "api_faults_injected": dict(sorted(self.plan.faults.injected.items())),
            "api_faults_total": sum(self.plan.faults.injected.values()),
            "cluster_components_restarted": self.component_restarts,
            "problems": self.problems(),
        }


def _ended(child: dict[str, Any]) -> bool:
    """The Kubeflow controller has marked the child Succeeded or Failed."""
    return any(c["type"] in ("Succeeded", "Failed") and c["status"] == "True"
               for c in (child.get("status") or {}).get("conditions") or [])
