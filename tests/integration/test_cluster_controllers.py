"""The test cluster's real parts do what a real cluster does to a training job's pods.

The training-operator and mpi-operator make the pods, kube-scheduler binds them to KWOK's fake
nodes (or leaves them Pending), KWOK runs them as its Stages say, the Job controller runs the
MPIJob launcher and the garbage collector deletes what an owner leaves behind. Later tests of
the operator rely on each of these; these tests are the place to look when one stops working.
"""

from __future__ import annotations

import sys

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.support.kube_cluster import NODE_PRESSURE_MESSAGE, pod_exits, pod_pending
from tests.support.local_pods import LocalProcessKubelet
from tests.support.rlhfjobs import CHILD_PLURALS, wait_for

pytestmark = pytest.mark.k8s

GROUP = "kubeflow.org"
IMAGE = "example.invalid/trainer:test"  # never pulled: KWOK runs no containers


@pytest.fixture
def api(kube_cluster):
    api_client = kube_cluster.api_client()
    yield api_client
    api_client.close()


@pytest.fixture
def ns(kube_cluster) -> str:
    return kube_cluster.create_namespace()


def container(name: str, gpus: int = 0, command: list[str] | None = None, env: dict | None = None) -> dict:
    resources = {"limits": {"nvidia.com/gpu": str(gpus)}} if gpus else {}
    return {"name": name, "image": IMAGE, "command": command or ["python", "-c", "pass"], "resources": resources,
            "env": [{"name": k, "value": v} for k, v in (env or {}).items()]}


def template(name: str, annotations: dict | None = None, **kw) -> dict:
    return {"metadata": {"annotations": annotations or {}}, "spec": {"containers": [container(name, **kw)]}}


def pytorchjob(name: str, master: dict, workers: int = 0) -> dict:
    replicas = {"Master": {"replicas": 1, "restartPolicy": "Never", "template": master}}
    if workers:
        replicas["Worker"] = {"replicas": workers, "restartPolicy": "Never", "template": template("pytorch")}
    return {"apiVersion": f"{GROUP}/v1", "kind": "PyTorchJob", "metadata": {"name": name},
            "spec": {"pytorchReplicaSpecs": replicas}}


def create(api, ns: str, body: dict) -> dict:
    version, plural = CHILD_PLURALS[body["kind"]]
    return client.CustomObjectsApi(api).create_namespaced_custom_object(GROUP, version, ns, plural, body)


def get(api, ns: str, kind: str, name: str) -> dict:
    version, plural = CHILD_PLURALS[kind]
    return client.CustomObjectsApi(api).get_namespaced_custom_object(GROUP, version, ns, plural, name)


def condition(job: dict, type_: str) -> dict | None:
    """The job's condition of this type if it is True (Kubeflow keeps False ones in the list)."""
    return next((c for c in job.get("status", {}).get("conditions", [])
                 if c["type"] == type_ and c["status"] == "True"), None)


def wait_condition(api, ns: str, kind: str, name: str, type_: str, timeout: float = 60) -> dict:
    """Wait until the job has condition `type_`=True; returns the job."""
    def job_if_true():
        job = get(api, ns, kind, name)
        return job if condition(job, type_) else None
    return wait_for(f"{kind} {name} {type_}", job_if_true, timeout=timeout)


def pods(api, ns: str, selector: str) -> list[client.V1Pod]:
    return client.CoreV1Api(api).list_namespaced_pod(ns, label_selector=selector).items


def job_pods(api, ns: str, job: str) -> list[client.V1Pod]:
    return pods(api, ns, f"training.kubeflow.org/job-name={job}")


def running_pods(api, ns: str, job: str) -> list[client.V1Pod]:
    return [p for p in job_pods(api, ns, job) if p.status.phase == "Running"]


def terminated(pod: client.V1Pod) -> client.V1ContainerStateTerminated:
    return pod.status.container_statuses[0].state.terminated


def test_pytorchjob_pods_are_scheduled_on_kwok_nodes_and_the_job_succeeds(kube_cluster, api, ns):
    create(api, ns, pytorchjob("ok", template("pytorch"), workers=1))

    running = wait_for("master and worker Running", lambda: len(r := running_pods(api, ns, "ok")) == 2 and r)
    node_names = {n.name for n in kube_cluster.nodes}
    assert {p.spec.node_name for p in running} <= node_names  # bound by kube-scheduler
    assert {p.metadata.labels["training.kubeflow.org/replica-type"] for p in running} == {"master", "worker"}
    wait_condition(api, ns, "PyTorchJob", "ok", "Running")

    kube_cluster.finish_pod(ns, "ok-master-0", 0)

    job = wait_condition(api, ns, "PyTorchJob", "ok", "Succeeded")
    assert job["status"]["replicaStatuses"]["Master"]["succeeded"] == 1
    master = client.CoreV1Api(api).read_namespaced_pod("ok-master-0", ns)
    assert master.status.phase == "Succeeded" and terminated(master).exit_code == 0


def test_pytorchjob_fails_with_the_masters_exit_code_and_message(kube_cluster, api, ns):
    report = '{"error": "ConfigError", "message": "unknown field ppo.lr"}'
    create(api, ns, pytorchjob("bad", template("pytorch", pod_exits(2, report, after="1s"))))

    failed = condition(wait_condition(api, ns, "PyTorchJob", "bad", "Failed"), "Failed")
    assert failed["message"] == "PyTorchJob bad is failed because 1 Master replica(s) failed."
    master = client.CoreV1Api(api).read_namespaced_pod("bad-master-0", ns)
    assert master.status.phase == "Failed"
    assert (terminated(master).exit_code, terminated(master).reason, terminated(master).message) == (2, "Error", report)


def test_training_operators_webhook_refuses_a_pytorchjob_it_cannot_run(api, ns):
    # Upstream's validating webhook, reached through the configuration the harness made.
    with pytest.raises(ApiException) as refused:
        create(api, ns, pytorchjob("nameless", template("not-pytorch")))
    assert refused.value.status == 403
    assert "pytorch" in refused.value.body and "validator.pytorchjob.training-operator" in refused.value.body


def test_mpijob_launcher_runs_as_a_batch_job_and_the_mpijob_succeeds(kube_cluster, api, ns):
    def replica(n: int, template_: dict) -> dict:
        return {"replicas": n, "restartPolicy": "Never", "template": template_}
    launcher = template("launcher", pod_exits(0, after="2s"))  # long enough to see the job Running
    replicas = {"Launcher": replica(1, launcher), "Worker": replica(2, template("worker"))}
    create(api, ns, {"apiVersion": f"{GROUP}/v2beta1", "kind": "MPIJob", "metadata": {"name": "mpi"},
                     "spec": {"slotsPerWorker": 1, "mpiReplicaSpecs": replicas}})

    wait_condition(api, ns, "MPIJob", "mpi", "Running")  # mpi-operator: launcher and every worker run
    job = wait_condition(api, ns, "MPIJob", "mpi", "Succeeded")
    workers = pods(api, ns, "training.kubeflow.org/job-role=worker")
    assert sorted(p.metadata.name for p in workers) == ["mpi-worker-0", "mpi-worker-1"]
    assert {p.status.phase for p in workers} == {"Running"}  # sshd never exits; cleanPodPolicy None keeps them
    assert {p.spec.node_name for p in workers} <= {n.name for n in kube_cluster.nodes}
    assert job["status"]["replicaStatuses"]["Launcher"]["succeeded"] == 1
    launcher = client.BatchV1Api(api).read_namespaced_job("mpi-launcher", ns)
    assert launcher.metadata.owner_references[0].kind == "MPIJob"
    assert launcher.status.succeeded == 1  # kube-controller-manager's Job controller ran its pod
    launcher_pods = pods(api, ns, "training.kubeflow.org/job-role=launcher")
    assert [p.metadata.owner_references[0].kind for p in launcher_pods] == ["Job"]
    assert launcher_pods[0].status.phase == "Succeeded"


def test_deleting_an_owner_garbage_collects_its_dependents(api, ns):
    owner = create(api, ns, pytorchjob("gc", template("pytorch"), workers=1))
    wait_for("2 pods", lambda: len(job_pods(api, ns, "gc")) == 2)
    core = client.CoreV1Api(api)
    assert core.list_namespaced_service(ns, label_selector="training.kubeflow.org/job-name=gc").items
    # A dependent no controller knows about: only the garbage collector can delete it.
    ref = {"apiVersion": owner["apiVersion"], "kind": "PyTorchJob", "name": "gc", "uid": owner["metadata"]["uid"]}
    core.create_namespaced_config_map(ns, {"metadata": {"name": "gc-notes", "ownerReferences": [ref]}})

    client.CustomObjectsApi(api).delete_namespaced_custom_object(GROUP, "v1", ns, "pytorchjobs", "gc")

    wait_for("pods, services and the config map gone", lambda: not job_pods(api, ns, "gc")
             and not core.list_namespaced_service(ns, label_selector="training.kubeflow.org/job-name=gc").items
             and "gc-notes" not in {c.metadata.name for c in core.list_namespaced_config_map(ns).items}, timeout=60)


def test_a_pod_asking_more_gpus_than_any_node_has_stays_pending(api, ns):
    create(api, ns, pytorchjob("big", template("pytorch", gpus=16)))

    def unschedulable():
        pod = next(iter(job_pods(api, ns, "big")), None)
        scheduled = next((c for c in (pod.status.conditions or []) if c.type == "PodScheduled"), None) if pod else None
        return scheduled if scheduled and scheduled.reason == "Unschedulable" else None

    scheduled = wait_for("PodScheduled=False", unschedulable)
    assert scheduled.status == "False" and "Insufficient nvidia.com/gpu" in scheduled.message
    events = client.CoreV1Api(api).list_namespaced_event(ns, field_selector="involvedObject.name=big-master-0").items
    assert any(e.reason == "FailedScheduling" for e in events)
    job = get(api, ns, "PyTorchJob", "big")
    assert condition(job, "Created") and not condition(job, "Running")  # what a real cluster leaves


def bare_pod(name: str, annotations: dict) -> dict:
    return {"metadata": {"name": name, "annotations": annotations},
            "spec": {"restartPolicy": "Never", "containers": [container("main")]}}


def test_kwok_keeps_a_pod_waiting_until_its_image_can_be_pulled(api, ns):
    core = client.CoreV1Api(api)
    core.create_namespaced_pod(ns, bare_pod("pull", pod_pending("ImagePullBackOff")))

    waiting = wait_for("container waiting", lambda: (s := core.read_namespaced_pod("pull", ns).status)
                       .container_statuses and s.container_statuses[0].state.waiting)
    assert waiting.reason == "ImagePullBackOff" and IMAGE in waiting.message
    assert core.read_namespaced_pod("pull", ns).status.phase == "Pending"

    core.patch_namespaced_pod("pull", ns, {"metadata": {"annotations": {k: None for k in pod_pending()}}})
    wait_for("Running", lambda: core.read_namespaced_pod("pull", ns).status.phase == "Running")


def test_evictions_mark_the_pod_as_a_disruption(kube_cluster, api, ns):
    core = client.CoreV1Api(api)
    for name in ("pressure", "drain"):
        core.create_namespaced_pod(ns, bare_pod(name, {}))
    wait_for("both Running", lambda: all(core.read_namespaced_pod(n, ns).status.phase == "Running"
                                         for n in ("pressure", "drain")))

    kube_cluster.evict_pod(ns, "pressure")  # the kubelet, under node pressure
    status = wait_for("Failed", lambda: (s := core.read_namespaced_pod("pressure", ns).status).phase == "Failed" and s)
    assert (status.reason, status.message) == ("Evicted", NODE_PRESSURE_MESSAGE)
    disruption = next(c for c in status.conditions if c.type == "DisruptionTarget")
    assert (disruption.status, disruption.reason) == ("True", "TerminationByKubelet")

    # A drain: the real Eviction API marks the pod and deletes it; KWOK finishes the deletion.
    core.create_namespaced_pod_eviction("drain", ns, {"metadata": {"name": "drain", "namespace": ns}})
    wait_for("drained pod gone", lambda: "drain" not in {p.metadata.name for p in core.list_namespaced_pod(ns).items})


def test_local_process_kubelet_runs_the_master_and_reports_how_it_ended(api, ns, tmp_path):
    # The trainer finds its termination log through this variable; the helper maps the path.
    command = [sys.executable, "-c", "import os, sys; open(os.environ['KUBERLHF_TERMINATION_LOG'], 'w')"
               ".write('rank ' + os.environ['RANK'] + ' gave up'); sys.exit(3)"]
    env = {"KUBERLHF_TERMINATION_LOG": "/dev/termination-log"}
    create(api, ns, pytorchjob("local", template("pytorch", command=command, env=env)))

    code = LocalProcessKubelet(api, tmp_path).run_master(ns, "local")

    assert code == 3
    wait_condition(api, ns, "PyTorchJob", "local", "Failed")
    master = terminated(client.CoreV1Api(api).read_namespaced_pod("local-master-0", ns))
    assert (master.exit_code, master.message) == (3, "rank 0 gave up")  # RANK from the training-operator
