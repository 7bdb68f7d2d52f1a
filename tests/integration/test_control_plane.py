"""What later integration tests rely on from the `control_plane` fixture."""

from __future__ import annotations

import json
import time
import uuid

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

pytestmark = pytest.mark.k8s

GROUP = "kubeflow.org"


def container(name: str) -> dict:
    return {"name": name, "image": "example.invalid/trainer:test", "command": ["python", "-c", "pass"]}


def replica(kind: str, replicas: int = 1) -> dict:
    return {"replicas": replicas, "restartPolicy": "OnFailure",
            "template": {"spec": {"containers": [container(kind.lower())]}}}


def pytorchjob(name: str) -> dict:
    return {
        "apiVersion": f"{GROUP}/v1", "kind": "PyTorchJob", "metadata": {"name": name},
        "spec": {"pytorchReplicaSpecs": {"Master": replica("pytorch"), "Worker": replica("pytorch", 2)}},
    }


def mpijob(name: str) -> dict:
    return {
        "apiVersion": f"{GROUP}/v2beta1", "kind": "MPIJob", "metadata": {"name": name},
        "spec": {"slotsPerWorker": 1,
                 "mpiReplicaSpecs": {"Launcher": replica("launcher"), "Worker": replica("worker", 2)}},
    }


@pytest.fixture
def namespace(control_plane):
    """A fresh namespace per test (nothing deletes its contents: no controller-manager)."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(control_plane.api_client())
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    return name


def test_server_reports_pinned_version(control_plane):
    info = client.VersionApi(control_plane.api_client()).get_code()
    assert info.git_version == control_plane.tools.kubernetes_version
    assert info.major == "1"

    out = control_plane.kubectl("version", "-o", "json").stdout
    versions = json.loads(out)
    assert versions["clientVersion"]["gitVersion"] == control_plane.tools.kubernetes_version
    assert versions["serverVersion"]["gitVersion"] == control_plane.tools.kubernetes_version


def test_namespace_can_be_created(control_plane, namespace):
    core = client.CoreV1Api(control_plane.api_client())
    assert core.read_namespace(namespace).status.phase == "Active"
    assert namespace in control_plane.kubectl("get", "namespaces", "-o", "name").stdout


def test_kubeflow_crds_are_established(control_plane):
    out = control_plane.kubectl("api-resources", f"--api-group={GROUP}", "-o", "name").stdout
    assert set(out.split()) >= {"pytorchjobs.kubeflow.org", "mpijobs.kubeflow.org"}


@pytest.mark.parametrize("make, version, plural", [
    (pytorchjob, "v1", "pytorchjobs"),
    (mpijob, "v2beta1", "mpijobs"),
])
def test_training_job_can_be_created(control_plane, namespace, make, version, plural):
    api = client.CustomObjectsApi(control_plane.api_client())
    api.create_namespaced_custom_object(GROUP, version, namespace, plural, make("job-a"))
    got = api.get_namespaced_custom_object(GROUP, version, namespace, plural, "job-a")
    assert got["metadata"]["uid"]
    # What we sent comes back; the CRD's schema may add defaults beside it.
    for key, value in make("job-a")["spec"].items():
        assert got["spec"][key] == value


@pytest.mark.parametrize("make, version, plural, specs", [
    (pytorchjob, "v1", "pytorchjobs", "pytorchReplicaSpecs"),
    (mpijob, "v2beta1", "mpijobs", "mpiReplicaSpecs"),
])
def test_invalid_training_job_is_rejected_by_schema(control_plane, namespace, make, version, plural, specs):
    api = client.CustomObjectsApi(control_plane.api_client())
    bad = make("job-bad")
    bad["spec"][specs]["Worker"]["replicas"] = "two"  # the schema says int32
    with pytest.raises(ApiException) as err:
        api.create_namespaced_custom_object(GROUP, version, namespace, plural, bad)
    assert err.value.status == 422
    assert f"spec.{specs}.Worker.replicas" in err.value.body

    missing = make("job-empty")
    del missing["spec"][specs]  # required by the schema
    with pytest.raises(ApiException) as err:
        api.create_namespaced_custom_object(GROUP, version, namespace, plural, missing)
    assert err.value.status == 422


def test_status_subresource_patch(control_plane, namespace):
    """A child job's status is written through its status subresource, as the training-operator does."""
    api = client.CustomObjectsApi(control_plane.api_client())
    api.create_namespaced_custom_object(GROUP, "v1", namespace, "pytorchjobs", pytorchjob("job-s"))
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    status = {"status": {
        "conditions": [{"type": "Succeeded", "status": "True", "reason": "PyTorchJobSucceeded",
                        "message": "simulated", "lastTransitionTime": now, "lastUpdateTime": now}],
        "replicaStatuses": {"Master": {"succeeded": 1}},
        "completionTime": now,
    }}
    api.patch_namespaced_custom_object_status(GROUP, "v1", namespace, "pytorchjobs", "job-s", status)

    got = api.get_namespaced_custom_object(GROUP, "v1", namespace, "pytorchjobs", "job-s")
    assert got["status"]["conditions"][0]["type"] == "Succeeded"
    assert got["status"]["replicaStatuses"]["Master"]["succeeded"] == 1

    # With a status subresource, status written through the main resource is ignored.
    api.patch_namespaced_custom_object(GROUP, "v1", namespace, "pytorchjobs", "job-s",
                                       {"status": {"conditions": []}})
    got = api.get_namespaced_custom_object(GROUP, "v1", namespace, "pytorchjobs", "job-s")
    assert got["status"]["conditions"][0]["type"] == "Succeeded"


def test_helm_reports_pinned_version(control_plane):
    out = control_plane.helm("version", "--template", "{{ .Version }}").stdout
    assert out.strip() == control_plane.tools.helm_version
    # helm talks to the API server through the same kubeconfig.
    assert control_plane.helm("list", "--all-namespaces").returncode == 0


def test_service_account_token_authenticates_and_rbac_applies(control_plane, namespace):
    admin = control_plane.api_client()
    core, rbac = client.CoreV1Api(admin), client.RbacAuthorizationV1Api(admin)
    core.create_namespaced_service_account(namespace, client.V1ServiceAccount(
        metadata=client.V1ObjectMeta(name="robot")))
    request = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(
        audiences=[], expiration_seconds=600))
    token = core.create_namespaced_service_account_token("robot", namespace, request).status.token

    robot = control_plane.api_client(token=token)
    review = client.AuthenticationV1Api(robot).create_self_subject_review(
        client.V1SelfSubjectReview())
    assert review.status.user_info.username == f"system:serviceaccount:{namespace}:robot"

    with pytest.raises(ApiException) as err:
        client.CoreV1Api(robot).list_namespaced_secret(namespace)
    assert err.value.status == 403  # authenticated, but not authorized

    rbac.create_namespaced_role(namespace, client.V1Role(
        metadata=client.V1ObjectMeta(name="read-secrets"),
        rules=[client.V1PolicyRule(api_groups=[""], resources=["secrets"], verbs=["list"])]))
    rbac.create_namespaced_role_binding(namespace, client.V1RoleBinding(
        metadata=client.V1ObjectMeta(name="robot-reads-secrets"),
        role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="Role", name="read-secrets"),
        subjects=[client.RbacV1Subject(kind="ServiceAccount", name="robot", namespace=namespace)]))
    deadline = time.monotonic() + 10  # the RBAC authorizer's informer catches up asynchronously
    while True:
        try:
            client.CoreV1Api(robot).list_namespaced_secret(namespace)
            break
        except ApiException as e:
            if e.status != 403 or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_apiserver_restart_keeps_data(control_plane, namespace):
    control_plane.restart_apiserver()
    core = client.CoreV1Api(control_plane.api_client())
    assert core.read_namespace(namespace).metadata.name == namespace
