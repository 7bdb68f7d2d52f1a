"""Bad input gets a clear answer and harms nothing.

The corpus (tests/support/invalid_rlhfjobs.py) holds over a hundred invalid RLHFJobs. Most are
refused by the API server at `kubectl create`, the error naming the field: the CRD's schema and
CEL rules do that, no operator involved. The few it cannot tell are stored, and the running
operator fails each one at once — condition and Warning event naming the field — without
creating anything, while valid jobs next to them run through their stages as usual.
"""

from __future__ import annotations

import copy
import json
import re

import pytest
import yaml

from tests.support.invalid_rlhfjobs import CORPUS, FAILED_BY_OPERATOR, REJECTED_BY_APISERVER, Invalid
from tests.support.rlhfjobs import REPO_ROOT, Cluster, manifest, wait_for
from tests.support.scripted_trainer import RUNS_UNTIL_ENDED, ScriptedTrainer

pytestmark = pytest.mark.k8s
EXAMPLES = REPO_ROOT / "manifests" / "examples"


@pytest.fixture(scope="module")
def refusals(kube_cluster):
    """One namespace for the refusals below: nothing they send is stored."""
    name = kube_cluster.create_namespace()
    yield name
    kube_cluster.delete_namespace(name)


def test_the_corpus_has_over_50_distinct_cases_and_says_who_refuses_each():
    assert len(CORPUS) >= 50
    assert len({c.id for c in CORPUS}) == len(CORPUS)
    assert len({json.dumps(c.body, sort_keys=True) for c in CORPUS}) == len(CORPUS)
    assert REJECTED_BY_APISERVER and FAILED_BY_OPERATOR
    assert all(c.field.split("[")[0].split(".")[0] in ("spec", "metadata") for c in CORPUS)


def test_the_job_every_case_changes_is_valid(kube_cluster, refusals):
    result = kube_cluster.kubectl("create", "--dry-run=server", "-n", refusals, "-f", "-",
                                   input=yaml.safe_dump(manifest("bad")), check=False)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("case", REJECTED_BY_APISERVER, ids=lambda c: c.id)
def test_kubectl_create_refuses_an_invalid_rlhfjob_naming_the_field(kube_cluster, refusals, case: Invalid):
    result = kube_cluster.kubectl("create", "-n", refusals, "-f", "-", input=yaml.safe_dump(case.body), check=False)
    assert result.returncode != 0, f"accepted: {result.stdout}"
    assert case.expected in result.stderr


@pytest.mark.parametrize("example", sorted(p.name for p in EXAMPLES.glob("*.yaml")))
def test_the_shipped_examples_are_accepted(kube_cluster, refusals, example):
    result = kube_cluster.kubectl("apply", "--dry-run=server", "-n", refusals, "-f", str(EXAMPLES / example),
                                   check=False)
    assert result.returncode == 0, result.stderr


def test_config_cannot_change_while_a_stage_runs(kube_cluster, api, namespace):
    cluster = Cluster(api, namespace)
    cluster.create(manifest("frozen"))
    status = {"status": {"phase": "Running"}}
    cluster.custom.patch_namespaced_custom_object_status("kuberlhf.io", "v1alpha1", namespace, "rlhfjobs", "frozen", status)
    changed = copy.deepcopy(cluster.job("frozen"))
    changed["spec"]["config"]["seed"] = 7
    result = kube_cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(changed), check=False)
    assert result.returncode != 0 and "spec.config cannot change while a stage is running" in result.stderr
    cluster.patch("frozen", {"spec": {"image": "kuberlhf-trainer:v2"}})  # the rest of spec may change

    done = {"status": {"phase": "Failed"}}
    cluster.custom.patch_namespaced_custom_object_status("kuberlhf.io", "v1alpha1", namespace, "rlhfjobs", "frozen", done)
    cluster.patch("frozen", {"spec": {"config": {"seed": 7}}})  # between runs it may
    assert cluster.job("frozen")["spec"]["config"]["seed"] == 7


# Last in this module: the `operator` fixture starts the operator here, and the tests above must
# see the API server alone.
# A valid job whose free-text fields carry what would be hostile if anything ran them through a
# shell: they reach the trainer's environment verbatim and nothing else.
HOSTILE_VALUE = "$(rm -rf /); `reboot` && echo 'x' \"y\" | cat\nsecond line\tünïcødé 🚀 \\ %s ${HOME}"


def _hostile_but_valid() -> dict:
    body = manifest("ok-hostile", env=[{"name": "NOTE", "value": HOSTILE_VALUE}], podAnnotations=RUNS_UNTIL_ENDED)
    body["metadata"]["annotations"] = {"kuberlhf.io/restart-from": "ppo; rm -rf /\n$(id)"}
    body["metadata"]["labels"] = {"team": "a-b.c_d"}
    return body


def test_operator_fails_what_the_api_server_cannot_check_naming_the_field_and_harms_nothing(
        operator, cluster: Cluster, api):
    valid = [manifest("ok-plain", podAnnotations=RUNS_UNTIL_ENDED),
             manifest("ok-mpijob", launcher="mpijob", parallelSFTAndReward=True, podAnnotations=RUNS_UNTIL_ENDED),
             _hostile_but_valid()]
    bodies = [copy.deepcopy(c.body) for c in FAILED_BY_OPERATOR]
    names = [b["metadata"]["name"] for b in bodies]
    valid_names = [b["metadata"]["name"] for b in valid]
    with ScriptedTrainer(api, cluster.namespace):
        for body in [*valid[:1], *bodies[:2], *valid[1:2], *bodies[2:], *valid[2:]]:  # all at once, interleaved
            cluster.create(body)  # stored: the API server has nothing against them
        phases = wait_for("every job to finish", lambda: (
            p := {n: cluster.phase(n) for n in names + valid_names})
            and all(v in ("Succeeded", "Failed") for v in p.values()) and p, timeout=90, interval=0.5)
    assert phases == {**{n: "Failed" for n in names}, **{n: "Succeeded" for n in valid_names}}

    children = cluster.child_names("PyTorchJob") + cluster.child_names("MPIJob")
    for case in FAILED_BY_OPERATOR:
        name = case.body["metadata"]["name"]
        status = cluster.job(name)["status"]
        failed = next(c for c in status["conditions"] if c["type"] == "Failed")
        assert (failed["status"], failed["reason"]) == ("True", "InvalidSpec"), case.id
        assert f"{case.field}: " in failed["message"] and f"{case.field}: " in status["message"], case.id
        warnings = wait_for(f"{name}'s events", lambda: [m for t, r, m in cluster.events(name)
                                                          if t == "Warning" and r == "InvalidSpec"])
        assert any(f"{case.field}: " in m for m in warnings), case.id
        # Nothing was created for it: no child, no ConfigMap, no finalizer holding it.
        assert not [c for c in children if c.startswith(f"{name}-")], case.id
        selector = f"kuberlhf.io/rlhfjob={name}"
        assert cluster.core.list_namespaced_config_map(cluster.namespace, label_selector=selector).items == []
        assert not cluster.job(name)["metadata"].get("finalizers")

    for name in valid_names:
        stages = {s["name"]: (s["state"], s["attempt"]) for s in cluster.job(name)["status"]["stages"]}
        assert stages == {"sft": ("Succeeded", 1), "reward": ("Succeeded", 1), "ppo": ("Succeeded", 1)}, name
        assert sorted(c for c in children if c.startswith(f"{name}-")) == [
            f"{name}-ppo-1", f"{name}-reward-1", f"{name}-sft-1"]
    hostile = next(c for c in cluster.children() if c["metadata"]["name"] == "ok-hostile-sft-1")
    container = hostile["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]
    assert {"name": "NOTE", "value": HOSTILE_VALUE} in container["env"]
    assert not any("rm -rf" in arg for arg in container["command"])
    assert any(r == "RestartIgnored" for _, r, _ in cluster.events("ok-hostile"))

    # The operator is alive and healthy, counts the jobs right, and logged no unhandled error.
    assert operator.proc.poll() is None
    assert "rlhfjobs" in json.loads(operator.get("/healthz"))
    gauges = dict(re.findall(r'^kuberlhf_operator_rlhfjobs\{phase="(\w+)"\} ([0-9.]+)$', operator.get("/metrics"), re.M))
    assert float(gauges["Failed"]) >= len(names) and float(gauges["Succeeded"]) >= len(valid_names)
    assert "Traceback" not in operator.log_path.read_text(errors="replace")
