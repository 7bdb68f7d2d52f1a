"""The hub token stays in its Secret: a job that uses one runs through its stages, a retry
included, and the token's value is nowhere else — not in the RLHFJob, an Event, a ConfigMap, a
child job or the operator's log. Children carry a secretKeyRef, and their pods get no
service-account token and run as non-root without privilege escalation.

(That the chart's RBAC has no wildcard and no access to Secrets is tests/unit/chart's; that
every pod template of both launchers is locked down, tests/unit/operator/test_builders.py's.)
"""

from __future__ import annotations

import base64
import json
import uuid

import pytest
from kubernetes import client

from tests.support.rlhfjobs import Cluster, manifest, wait_for
from tests.support.scripted_trainer import RUNS_UNTIL_ENDED, Outcome, ScriptedTrainer

pytestmark = pytest.mark.k8s


@pytest.mark.parametrize("launcher,kind", [("pytorchjob", "PyTorchJob"), ("mpijob", "MPIJob")])
def test_the_hub_token_never_leaves_its_secret(operator, cluster: Cluster, api, launcher, kind):
    token = f"hf_kuberlhfFAKE{uuid.uuid4().hex}"
    forms = [token, base64.b64encode(token.encode()).decode()]  # as written, and as a Secret stores it
    cluster.core.create_namespaced_secret(cluster.namespace, {"metadata": {"name": "hub"},
                                                               "stringData": {"hf-token": token}})
    # One failed attempt on the way, so that failure messages and retry events are covered too.
    script = lambda child: Outcome(1, "NCCL timeout") if child.endswith("-reward-1") else Outcome()  # noqa: E731
    with ScriptedTrainer(api, cluster.namespace, script):
        cluster.create(manifest("secretive", launcher=launcher, hubTokenSecret={"name": "hub", "key": "hf-token"},
                                stages={s: {"gpusPerNode": 0, "retryLimit": 1} for s in ("sft", "reward", "ppo")},
                                podAnnotations=RUNS_UNTIL_ENDED))
        wait_for("the job to succeed", lambda: cluster.phase("secretive") == "Succeeded", timeout=60)
    wait_for("its events", lambda: {"StageRetrying", "Succeeded"} <= {r for _, r, _ in cluster.events("secretive")})

    children = cluster.children(kind)
    assert [c["metadata"]["name"] for c in children] == [
        "secretive-ppo-1", "secretive-reward-1", "secretive-reward-2", "secretive-sft-1"]
    places = {
        "the RLHFJob": cluster.job("secretive"),
        "the events": _dump(cluster.core.list_namespaced_event(cluster.namespace)),
        "the ConfigMaps": _dump(cluster.core.list_namespaced_config_map(cluster.namespace)),
        "the child jobs": children,
        "the pods": _dump(cluster.core.list_namespaced_pod(cluster.namespace)),
        "the operator's log": operator.log_path.read_text(errors="replace"),
    }
    stored = cluster.core.read_namespaced_secret("hub", cluster.namespace).data["hf-token"]
    assert stored in forms  # the check below would see the token as the Secret holds it
    for where, content in places.items():
        text = content if isinstance(content, str) else json.dumps(content)
        assert not any(form in text for form in forms), f"the token is in {where}"

    for child in children:
        for replica, spec in child["spec"][f"{'pytorch' if kind == 'PyTorchJob' else 'mpi'}ReplicaSpecs"].items():
            pod = spec["template"]["spec"]
            where = f"{child['metadata']['name']} {replica}"
            assert pod["automountServiceAccountToken"] is False, where
            assert pod["securityContext"]["runAsNonRoot"] is True, where
            for container in pod["containers"]:
                assert container["securityContext"]["allowPrivilegeEscalation"] is False, where
                env = [e for e in container["env"] if e["name"] == "HF_TOKEN"]
                assert env == [{"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hub", "key": "hf-token"}}}]


def _dump(listed) -> list:
    return client.ApiClient().sanitize_for_serialization(listed.items)
