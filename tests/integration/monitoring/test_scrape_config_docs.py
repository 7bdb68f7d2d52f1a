"""The plain-Prometheus scrape configuration in docs/monitoring.md keeps exactly the right targets.

Debian's Prometheus is built without Kubernetes service discovery, so the discovery step is
played here: each pod the operator's own builder makes (and a few that must not be scraped)
becomes a static target carrying the `__meta_kubernetes_*` labels that discovery documents for
role pod (one target per container port, label names sanitised to [a-zA-Z0-9_]) and role
endpoints. The documentation's relabelling rules then run in a real Prometheus, which reports
which targets it kept and with which labels.
"""

from __future__ import annotations

import re
import time

import yaml
from chart_helm import REPO, one, render
from prometheus import Prometheus

from kuberlhf_operator.builders import build_child
from kuberlhf_operator.job import Job

DOCS = REPO / "docs" / "monitoring.md"
DEAD = 9  # the discard port: nothing answers, the targets stay down (only their labels matter)


def documented_scrape_configs() -> list[dict]:
    section = DOCS.read_text().split("## Without the Prometheus operator", 1)[1]
    block = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    return yaml.safe_load(block)["scrape_configs"]


def _sanitise(name: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


def pod_targets(pod_name: str, namespace: str, template: dict) -> list[dict]:
    """What role pod discovers for a pod made from `template`: one target per container port (or
    per container without ports)."""
    labels = {f"__meta_kubernetes_pod_label_{_sanitise(k)}": v for k, v in template["metadata"]["labels"].items()}
    base = {"__meta_kubernetes_namespace": namespace, "__meta_kubernetes_pod_name": pod_name, **labels}
    targets = []
    for container in template["spec"]["containers"]:
        ports = container.get("ports") or [{}]
        for port in ports:
            meta = dict(base, __meta_kubernetes_pod_container_name=container["name"])
            if port:
                meta["__meta_kubernetes_pod_container_port_name"] = port["name"]
            targets.append(meta)
    return targets


def trainer_pods(namespace: str) -> dict[str, dict]:
    """pod name -> template, for a two-node PyTorchJob stage and a one-node MPIJob stage."""
    pods = {}
    for launcher, job_name in (("pytorchjob", "chat"), ("mpijob", "chat-mpi")):
        job = Job.from_body({"metadata": {"name": job_name, "namespace": namespace, "uid": "u"},
                             "spec": {"image": "trainer", "launcher": launcher, "storage": {"claimName": "c"},
                                      "stages": {"ppo": {"nodes": 2}},
                                      "config": {"actor_model": {"name_or_path": "m"}}}})
        child = build_child(job, "ppo", 1, "cfg", "c")
        replicas = child["spec"].get("pytorchReplicaSpecs") or child["spec"]["mpiReplicaSpecs"]
        for replica, spec in replicas.items():
            for index in range(spec["replicas"]):
                pods[f"{child['metadata']['name']}-{replica.lower()}-{index}"] = spec["template"]
    return pods


def test_the_documented_scrape_config_keeps_trainer_pods_and_the_operator_only():
    namespace = "team-a"
    metas: list[tuple[str, dict]] = []  # (job_name, meta labels)
    for pod, template in trainer_pods(namespace).items():
        metas += [("kuberlhf-trainer", m) for m in pod_targets(pod, namespace, template)]
    decoy = {"metadata": {"labels": {"app": "web"}},
             "spec": {"containers": [{"name": "web", "ports": [{"name": "metrics", "containerPort": 9090}]}]}}
    metas += [("kuberlhf-trainer", m) for m in pod_targets("web-0", namespace, decoy)]
    service = one(render(), "Service")
    for name, port in ((service["metadata"]["name"], service["spec"]["ports"][0]["name"]), ("web", "http")):
        metas.append(("kuberlhf-operator", {"__meta_kubernetes_namespace": "kuberlhf-system",
                                            "__meta_kubernetes_service_name": name,
                                            "__meta_kubernetes_endpoint_port_name": port}))

    configs = documented_scrape_configs()
    for index, config in enumerate(configs):
        assert "kubernetes_sd_configs" in config
        del config["kubernetes_sd_configs"]
        config["static_configs"] = [{"targets": [f"127.0.{index}.{i + 1}:{DEAD}"], "labels": meta}
                                    for i, (job, meta) in enumerate(metas) if job == config["job_name"]]
    with Prometheus(configs) as prometheus:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            data = prometheus.api("targets", state="any")
            if len(data["activeTargets"]) + len(data["droppedTargets"]) == len(metas):
                break
            time.sleep(0.2)
    kept = {(t["labels"]["job"], t["labels"].get("pod", ""), t["labels"]["namespace"]) for t in data["activeTargets"]}
    assert kept == {
        ("kuberlhf-trainer", "chat-ppo-1-master-0", namespace),
        ("kuberlhf-trainer", "chat-ppo-1-worker-0", namespace),
        ("kuberlhf-trainer", "chat-mpi-ppo-1-worker-0", namespace),   # MPIJob workers train,
        ("kuberlhf-trainer", "chat-mpi-ppo-1-worker-1", namespace),   # the launcher does not
        ("kuberlhf-operator", "", "kuberlhf-system"),
    }
    trainer = next(c for c in documented_scrape_configs() if c["job_name"] == "kuberlhf-trainer")
    assert trainer["honor_labels"] is True  # the trainer's job label is the RLHFJob's name
