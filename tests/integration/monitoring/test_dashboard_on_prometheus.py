"""Prometheus scrapes a real RLHFJob run and the operator; every dashboard query returns data.

The whole path a cluster would take, in the test cluster (the real training-operator makes each
stage's master pod, kube-scheduler places it on a KWOK node): the operator (a real process) runs
an RLHFJob, and LocalProcessKubelet runs each master pod's own command — torchrun and the real
trainer on the CPU, serving metrics on the job's spec.metricsPort. A real Prometheus
(Debian's) scrapes the trainer as the chart's PodMonitor says (honorLabels, path, namespace and
pod labels as the Prometheus operator adds them) and the operator as its ServiceMonitor says.
A ValidatingAdmissionPolicy refuses the status writes of a second job, so the operator's error
counter has something real to count. Then each panel's queries run over the run's time range,
with the variables filled in as Grafana does.

    KUBERLHF_DASHBOARD_PNG=docs/images/dashboard.png pytest tests/integration/monitoring

also draws the panels from that Prometheus into the PNG the docs show.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from chart_cluster import ChartOperator
from chart_helm import MONITORING_APIS, one, render
from grafana import Selection, load, panels, render_png, run_panel, variable_values
from prometheus import Prometheus

from tests.support.controlplane import free_port
from tests.support.local_pods import LocalProcessKubelet
from tests.support.rlhfjobs import SHARED_CLAIM, Cluster, manifest, wait_for

pytestmark = [pytest.mark.k8s, pytest.mark.slow]

JOB = "tiny-chat"
REFUSED = "refused-by-policy"
SCRAPE_S = 0.2  # a stage's metrics live from its first step to its exit: maybe only a second here
# Tiny models on the CPU, but enough optimizer steps (several epochs of a small split) that each
# stage serves its metrics for several seconds: the whole run takes 1-2 minutes on 2 cores, most of
# it starting the three trainer processes. (docs/images/dashboard.png came from a longer run:
# sft/reward max_steps 150, ppo max_steps 100.)
TINY_RUN = {
    "actor_model": {"name_or_path": "builtin:llama-tiny", "zero_stage": 0},
    "reward_model": {"name_or_path": "builtin:llama-tiny", "zero_stage": 0},
    "data": {"datasets": ["builtin:sort"], "synthetic": {"num_examples": 200, "min_digits": 3, "max_digits": 4}},
    "sft": {"per_device_train_batch_size": 8, "per_device_eval_batch_size": 8, "num_train_epochs": 100,
            "max_steps": 60, "max_seq_len": 32, "eval_iters": 1},
    "reward": {"per_device_train_batch_size": 8, "per_device_eval_batch_size": 8, "num_train_epochs": 100,
               "max_steps": 60, "max_seq_len": 32, "eval_iters": 1},
    "ppo": {"per_device_generation_batch_size": 4, "per_device_training_batch_size": 4, "max_prompt_seq_len": 48,
            "max_answer_seq_len": 6, "num_train_epochs": 20, "max_steps": 20, "num_warmup_steps": 0,
            "eval_prompts": 4},
    "device": "cpu",
}
POLICY = "kuberlhf-test-refuse-status"


@dataclass
class MonitoredRun:
    prometheus: Prometheus
    namespace: str
    start: float
    end: float

    @property
    def selection(self) -> Selection:
        return Selection(namespaces=(self.namespace,), jobs=(JOB,))


def scrape_configs(namespace: str, trainer_port: int, operator_port: int) -> list[dict]:
    """Prometheus jobs equivalent to what the Prometheus operator makes of the chart's monitors."""
    docs = render({"metrics": {"serviceMonitor": {"enabled": True}}, "trainerMetrics": {"podMonitor": {"enabled": True}}},
                  MONITORING_APIS)
    pod_endpoint = one(docs, "PodMonitor")["spec"]["podMetricsEndpoints"][0]
    service_endpoint = one(docs, "ServiceMonitor")["spec"]["endpoints"][0]
    service = one(docs, "Service")["metadata"]
    return [
        {"job_name": "podMonitor/kuberlhf-trainer", "metrics_path": pod_endpoint["path"],
         "honor_labels": pod_endpoint.get("honorLabels", False), "scrape_interval": f"{int(SCRAPE_S * 1000)}ms", "scrape_timeout": f"{int(SCRAPE_S * 1000)}ms",
         "static_configs": [{"targets": [f"127.0.0.1:{trainer_port}"],
                             "labels": {"namespace": namespace, "pod": f"{JOB}-master-0", "container": "pytorch",
                                        "endpoint": pod_endpoint["port"]}}]},
        {"job_name": service["name"], "metrics_path": service_endpoint["path"],
         "honor_labels": service_endpoint.get("honorLabels", False), "scrape_interval": f"{int(SCRAPE_S * 1000)}ms", "scrape_timeout": f"{int(SCRAPE_S * 1000)}ms",
         "static_configs": [{"targets": [f"127.0.0.1:{operator_port}"],
                             "labels": {"namespace": service["namespace"], "service": service["name"],
                                        "endpoint": service_endpoint["port"]}}]},
    ]


def distinct_free_ports(count: int, taken: set[int]) -> list[int]:
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in taken and port not in ports:
            ports.append(port)
    return ports


def refuse_status_writes(kube_cluster) -> None:
    """A cluster policy that refuses the operator's status writes of one RLHFJob (the errors panel)."""
    policy = f"""
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {{name: {POLICY}}}
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
    - {{apiGroups: [kuberlhf.io], apiVersions: [v1alpha1], operations: [UPDATE], resources: [rlhfjobs/status]}}
  validations:
  - expression: "object.metadata.name != '{REFUSED}'"
    message: status writes of this RLHFJob are refused by a test policy
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {{name: {POLICY}}}
spec: {{policyName: {POLICY}, validationActions: [Deny]}}
"""
    kube_cluster.kubectl("apply", "-f", "-", input=policy)


@pytest.fixture(scope="module")
def run(kube_cluster, tmp_path_factory) -> MonitoredRun:
    api = kube_cluster.api_client()
    namespace = kube_cluster.create_namespace("mon")
    kube_cluster.create_claim(namespace, SHARED_CLAIM)
    cluster = Cluster(api, namespace)
    root = tmp_path_factory.mktemp("monitoring")
    # The operator as the chart runs it, watching only this namespace (other tests' jobs stay
    # out of its counts), resyncing often so the refused job's errors recur within the run.
    deployment = one(render({"watchNamespaces": [namespace], "operator": {"resyncSeconds": 2}}), "Deployment")
    operator = ChartOperator(deployment, Path(kube_cluster.kubeconfig), root / "operator.log")
    # Ports chosen now but bound later must not coincide (the trainer's is bound by each stage).
    trainer_port, prometheus_port = distinct_free_ports(2, taken={operator.metrics_port, operator.health_port})
    kubelet = LocalProcessKubelet(api, root)
    refuse_status_writes(kube_cluster)
    operator.start()
    prometheus = Prometheus(scrape_configs(namespace, trainer_port, operator.metrics_port), port=prometheus_port,
                            scrape_interval=f"{int(SCRAPE_S * 1000)}ms").start()
    try:
        start = time.time()
        cluster.create(manifest(REFUSED, config=TINY_RUN, stages={s: {"gpusPerNode": 0, "retryLimit": 0}
                                                                 for s in ("sft", "reward", "ppo")}))
        cluster.create(manifest(JOB, config=TINY_RUN, metricsPort=trainer_port,
                                env=[{"name": "TOKENIZERS_PARALLELISM", "value": "false"}]))
        for stage in ("sft", "reward", "ppo"):  # each master pod appears once the stage before succeeded
            if kubelet.run_master(namespace, f"{JOB}-{stage}-1", start_timeout=120) != 0:
                break
        wait_for(f"{JOB} to finish", lambda: cluster.phase(JOB) in ("Succeeded", "Failed"), timeout=60, interval=1)
        job = cluster.job(JOB)
        assert job["status"]["phase"] == "Succeeded", (job["status"].get("message"),
                                                       {n: kubelet.log(n)[-6000:] for n in kubelet.pods.exit_codes})
        time.sleep(4 * SCRAPE_S)  # the operator's last counts and a few more scrapes
        monitored = MonitoredRun(prometheus, namespace, start, time.time())
        if os.environ.get("KUBERLHF_DASHBOARD_PNG"):
            render_png(prometheus, load(), monitored.selection, monitored.start, monitored.end, SCRAPE_S, SCRAPE_S,
                       Path(os.environ["KUBERLHF_DASHBOARD_PNG"]))
        yield monitored
    finally:
        kube_cluster.kubectl("delete", "validatingadmissionpolicybinding,validatingadmissionpolicy", POLICY,
                             "--ignore-not-found")
        prometheus.stop()
        operator.stop()
        api.close()
        kube_cluster.delete_namespace(namespace)


def test_prometheus_scraped_the_trainer_and_the_operator(run):
    up = run.prometheus.query_range("up", run.start, run.end, SCRAPE_S)
    healthy = {s["metric"]["job"] for s in up if any(v == "1" for _, v in s["values"])}
    assert healthy == {"podMonitor/kuberlhf-trainer", "kuberlhf-metrics"}
    stages = run.prometheus.query_range(f'count by (stage) (kuberlhf_step_progress{{job="{JOB}"}})',
                                        run.start, run.end, SCRAPE_S)
    assert {s["metric"]["stage"] for s in stages} == {"sft", "reward", "ppo"}


def test_every_dashboard_query_returns_data(run):
    empty = []
    for panel in panels(load()):
        for expr, result in run_panel(run.prometheus, panel, run.selection, run.start, run.end, SCRAPE_S, SCRAPE_S):
            if not result:
                empty.append(f"{panel['title']}: {expr}")
    assert not empty, "queries without data:\n" + "\n".join(empty)


def test_the_variables_offer_the_jobs_namespace_and_the_job(run):
    dashboard = load()
    everything = Selection(namespaces=(), jobs=())
    assert run.namespace in variable_values(run.prometheus, dashboard, "namespace", everything, run.start, run.end)
    jobs = variable_values(run.prometheus, dashboard, "job", Selection((run.namespace,), ()), run.start, run.end)
    assert jobs == [JOB]


def test_the_panels_show_the_run_as_it_happened(run):
    def series(title: str, target: int = 0) -> list[dict]:
        panel = next(p for p in panels(load()) if p["title"] == title)
        return run_panel(run.prometheus, panel, run.selection, run.start, run.end, SCRAPE_S, SCRAPE_S)[target][1]

    def peak(s: dict) -> float:
        return max(float(v) for _, v in s["values"])

    tokens = {(s["metric"]["stage"], s["metric"]["phase"]): peak(s) for s in series("Tokens per second by phase")}
    assert tokens[("ppo", "generation")] > 0 and tokens[("ppo", "training")] > 0 and tokens[("sft", "training")] > 0
    progress = {s["metric"]["stage"]: peak(s) for s in series("Stage progress")}
    # A stage can end between two scrapes, so its last fraction may not be seen (docs/monitoring.md).
    assert progress.keys() == {"sft", "reward", "ppo"} and all(0 < p <= 1 for p in progress.values())
    split = {s["metric"]["phase"] for s in series("Seconds per PPO iteration by phase")}
    assert split == {"generation", "training"}
    phases = {s["metric"]["phase"]: peak(s) for s in series("RLHFJobs by phase")}
    assert phases["Succeeded"] >= 1 and phases["Running"] >= 1
    transitions = {(s["metric"]["stage"], s["metric"]["state"]) for s in series("Stage transitions") if peak(s) > 0}
    assert {("sft", "Succeeded"), ("reward", "Succeeded"), ("ppo", "Succeeded")} <= transitions
    errors = {s["metric"]["reason"] for s in series("Reconcile errors and status conflicts (since the operator started)")
              if peak(s) > 0}
    assert errors == {"UnprocessableEntityException"}  # the status writes the policy refused (422), nothing else
    created = {s["metric"]["kind"]: peak(s) for s in series("Child jobs created")}
    assert created["PyTorchJob"] >= 1  # the first child is seen too: the operator starts its counters at zero
