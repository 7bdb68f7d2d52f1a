"""charts/kuberlhf rendered by the real helm, no cluster: what each value does to the objects.

One test per thing an installer would notice: the operator's pod is locked down and probed, the
RBAC is what the operator needs and no wildcard, the CRD survives an uninstall, misspelt values
are refused, monitors fail loudly without the Prometheus operator, the PodMonitor selects the
pods the operator really makes.
"""

from __future__ import annotations

import json

import pytest
from chart_helm import CHART, MONITORING_APIS, of_kind, one, render, render_error

from kuberlhf_operator.__main__ import parse_args


@pytest.fixture(scope="module")
def defaults() -> list[dict]:
    return render()


def operator_container(docs: list[dict]) -> dict:
    return one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]


def test_defaults_install_the_crd_operator_rbac_and_metrics_service_only(defaults):
    kinds = sorted((d["kind"], d["metadata"]["name"]) for d in defaults)
    assert kinds == [
        ("ClusterRole", "kuberlhf"), ("ClusterRole", "kuberlhf-cluster"), ("ClusterRole", "kuberlhf-rlhfjob-editor"),
        ("ClusterRole", "kuberlhf-rlhfjob-viewer"), ("ClusterRoleBinding", "kuberlhf"),
        ("ClusterRoleBinding", "kuberlhf-cluster"), ("CustomResourceDefinition", "rlhfjobs.kuberlhf.io"),
        ("Deployment", "kuberlhf"), ("Service", "kuberlhf-metrics"), ("ServiceAccount", "kuberlhf"),
    ]


def test_the_operator_pod_is_non_root_read_only_without_privileges_and_bounded(defaults):
    pod = one(defaults, "Deployment")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    assert {m["mountPath"] for m in container["volumeMounts"]} == {"/tmp"}  # the only writable path
    assert pod["serviceAccountName"] == "kuberlhf"


def test_liveness_and_readiness_probe_the_operators_healthz_port(defaults):
    container = operator_container(defaults)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "healthz"}, probe
    liveness = parse_args(container["args"]).liveness
    assert liveness == f"http://0.0.0.0:{ports['healthz']}/healthz"
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["KUBERLHF_OPERATOR_METRICS_PORT"] == str(ports["http-metrics"]) == "8000"


def test_one_replica_replaced_not_rolled(defaults):
    deployment = one(defaults, "Deployment")["spec"]
    assert deployment["replicas"] == 1 and deployment["strategy"] == {"type": "Recreate"}


def test_the_image_defaults_to_the_app_version_and_a_digest_wins():
    assert operator_container(render())["image"] == "ghcr.io/kuberlhf/kuberlhf-operator:0.1.0"
    digest = "sha256:" + "a" * 64
    image = operator_container(render({"image": {"registry": "", "repository": "me/op", "digest": digest}}))["image"]
    assert image == f"me/op@{digest}"


def test_the_crd_is_kept_on_uninstall_unless_told_otherwise(defaults):
    crd = one(defaults, "CustomResourceDefinition")
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert "helm.sh/resource-policy" not in one(render({"crds": {"keep": False}}), "CustomResourceDefinition")[
        "metadata"]["annotations"]
    assert not of_kind(render({"crds": {"enabled": False}}), "CustomResourceDefinition")


def test_the_chart_crd_is_the_generated_crd(defaults):
    import yaml

    from chart_helm import REPO

    generated = yaml.safe_load((REPO / "manifests" / "crds" / "kuberlhf.io_rlhfjobs.yaml").read_text())
    chart = one(defaults, "CustomResourceDefinition")
    assert chart["spec"] == generated["spec"]
    assert chart["metadata"]["name"] == generated["metadata"]["name"]


# ----------------------------------------------------------------------------------- RBAC


def rules(docs: list[dict]) -> list[tuple[str, dict]]:
    return [(d["metadata"]["name"], rule) for d in docs if d["kind"] in ("Role", "ClusterRole")
            for rule in d.get("rules", [])]


@pytest.mark.parametrize("values", [{}, {"watchNamespaces": ["team-a", "team-b"]}], ids=["cluster-wide", "namespaced"])
def test_no_role_grants_a_wildcard(values):
    for role, rule in rules(render(values)):
        for key in ("verbs", "resources", "apiGroups", "resourceNames", "nonResourceURLs"):
            assert not any("*" in item for item in rule.get(key, [])), f"{role}: {key} {rule.get(key)}"


def test_the_operator_may_not_touch_secrets_or_delete_rlhfjobs(defaults):
    operator = [rule for role, rule in rules(defaults) if role in ("kuberlhf", "kuberlhf-cluster")]
    granted = {(group, resource, verb) for rule in operator for group in rule["apiGroups"]
               for resource in rule["resources"] for verb in rule["verbs"]}
    assert not {g for g in granted if g[1] == "secrets"}
    assert ("kuberlhf.io", "rlhfjobs", "delete") not in granted
    assert ("kuberlhf.io", "rlhfjobs", "update") not in granted
    assert ("", "pods", "create") not in granted


def test_cluster_wide_by_default(defaults):
    binding = one(defaults, "ClusterRoleBinding", "kuberlhf")
    assert binding["roleRef"]["name"] == "kuberlhf"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "kuberlhf", "namespace": "kuberlhf-system"}]
    assert not parse_args(operator_container(defaults)["args"]).namespace
    assert not of_kind(defaults, "RoleBinding")


def test_watch_namespaces_binds_the_role_in_each_and_tells_the_operator():
    docs = render({"watchNamespaces": ["team-a", "team-b"]})
    bindings = of_kind(docs, "RoleBinding")
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    assert {b["roleRef"]["name"] for b in bindings} == {"kuberlhf"}
    assert [b["metadata"]["name"] for b in of_kind(docs, "ClusterRoleBinding")] == ["kuberlhf-cluster"]
    assert parse_args(operator_container(docs)["args"]).namespace == ["team-a", "team-b"]
    cluster_rules = one(docs, "ClusterRole", "kuberlhf-cluster")["rules"]
    assert {r for rule in cluster_rules for r in rule["resources"]} == {"customresourcedefinitions", "namespaces"}


def test_user_roles_aggregate_into_the_built_in_roles(defaults):
    editor = one(defaults, "ClusterRole", "kuberlhf-rlhfjob-editor")["metadata"]["labels"]
    viewer = one(defaults, "ClusterRole", "kuberlhf-rlhfjob-viewer")["metadata"]["labels"]
    assert editor["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"
    assert viewer["rbac.authorization.k8s.io/aggregate-to-view"] == "true"
    assert not of_kind(render({"rbac": {"aggregateToDefaultRoles": False}}), "ClusterRole")[2:]


def test_an_existing_service_account_must_be_named():
    assert "serviceAccount.name must be set" in render_error({"serviceAccount": {"create": False}})
    docs = render({"serviceAccount": {"create": False, "name": "ops"}})
    assert not of_kind(docs, "ServiceAccount")
    assert one(docs, "ClusterRoleBinding", "kuberlhf")["subjects"][0]["name"] == "ops"


# ----------------------------------------------------------------------------- the schema


@pytest.mark.parametrize("values,named", [
    ({"imagee": {"tag": "x"}}, "imagee"),
    ({"image": {"tagg": "x"}}, "tagg"),
    ({"metrics": {"serviceMonitor": {"enabeld": True}}}, "enabeld"),
    ({"operator": {"logFormat": "yaml"}}, "logFormat"),
    ({"operator": {"workers": "many"}}, "workers"),
    ({"watchNamespaces": ["Team_A"]}, "watchNamespaces"),
    ({"trainerMetrics": {"podMonitor": {"interval": "soon"}}}, "interval"),
])
def test_a_misspelt_or_mistyped_value_is_refused_naming_it(values, named):
    error = render_error(values)
    assert "values don't meet the specifications of the schema" in error and named in error


def test_cross_value_mistakes_fail_with_the_fix():
    error = render_error({"metrics": {"port": 8080}})
    assert "metrics.port and healthPort are both 8080" in error
    error = render_error({"metrics": {"enabled": False, "serviceMonitor": {"enabled": True}}}, MONITORING_APIS)
    assert "metrics.serviceMonitor.enabled needs metrics.enabled" in error


# ----------------------------------------------------------------------- metrics, monitors


def test_metrics_can_be_turned_off():
    docs = render({"metrics": {"enabled": False}})
    assert not of_kind(docs, "Service")
    env = {e["name"]: e["value"] for e in operator_container(docs)["env"]}
    assert env["KUBERLHF_OPERATOR_METRICS_PORT"] == "0"


@pytest.mark.parametrize("key,kind", [("metrics.serviceMonitor.enabled", "ServiceMonitor"),
                                      ("trainerMetrics.podMonitor.enabled", "PodMonitor")])
def test_a_monitor_without_the_prometheus_operator_api_fails_the_install(key, kind):
    section, *middle, leaf = key.split(".")
    values: dict = {section: {}}
    node = values[section]
    for part in middle:
        node = node.setdefault(part, {})
    node[leaf] = True
    error = render_error(values)
    assert f"{key} is true but the cluster does not serve monitoring.coreos.com/v1 {kind}" in error
    assert one(render(values, MONITORING_APIS), kind)


def test_the_service_monitor_scrapes_the_metrics_service():
    docs = render({"metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}}}, MONITORING_APIS)
    monitor, service = one(docs, "ServiceMonitor"), one(docs, "Service")
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["kuberlhf-system"]}
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
    pod_ports = {p["name"] for p in operator_container(docs)["ports"]}
    assert service["spec"]["ports"][0]["targetPort"] in pod_ports


@pytest.mark.parametrize("launcher", ["pytorchjob", "mpijob"])
def test_the_pod_monitor_selects_the_trainer_pods_the_operator_builds(launcher):
    from kuberlhf_operator.builders import build_child
    from kuberlhf_operator.job import Job

    monitor = one(render({"trainerMetrics": {"podMonitor": {"enabled": True}}}, MONITORING_APIS), "PodMonitor")
    job = Job.from_body({"metadata": {"name": "chat", "namespace": "team-a", "uid": "u1"},
                         "spec": {"image": "trainer", "launcher": launcher, "storage": {"claimName": "c"},
                                  "config": {"actor_model": {"name_or_path": "m"}}}})
    child = build_child(job, "ppo", 1, "cfg", "c")
    replicas = child["spec"].get("pytorchReplicaSpecs") or child["spec"]["mpiReplicaSpecs"]
    selector = monitor["spec"]["selector"]["matchLabels"]
    endpoint = monitor["spec"]["podMetricsEndpoints"][0]
    scraped = []
    for name, replica in replicas.items():
        template = replica["template"]
        assert selector.items() <= template["metadata"]["labels"].items(), name
        ports = [p for c in template["spec"]["containers"] for p in c.get("ports", [])]
        scraped += [name for p in ports if p["name"] == endpoint["port"] and p["containerPort"] == 9090]
    assert scraped == (["Master"] if launcher == "pytorchjob" else ["Worker"])  # the MPI launcher trains nothing
    assert endpoint["honorLabels"] is True  # the trainer's job label is the RLHFJob's name
    assert monitor["spec"]["namespaceSelector"] == {"any": True}
    namespaced = one(render({"watchNamespaces": ["team-a"], "trainerMetrics": {"podMonitor": {"enabled": True}}},
                            MONITORING_APIS), "PodMonitor")
    assert namespaced["spec"]["namespaceSelector"] == {"matchNames": ["team-a"]}


def test_the_dashboard_config_map_is_labelled_for_the_sidecar_and_embeds_the_dashboard():
    docs = render({"grafanaDashboard": {"enabled": True, "namespace": "monitoring",
                                        "annotations": {"k8s-sidecar-target-directory": "kuberlhf"}}})
    config_map = one(docs, "ConfigMap", "kuberlhf-dashboard")
    assert config_map["metadata"]["namespace"] == "monitoring"
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["annotations"] == {"k8s-sidecar-target-directory": "kuberlhf"}
    embedded = json.loads(config_map["data"]["kuberlhf.json"])
    assert embedded == json.loads((CHART / "dashboards" / "kuberlhf.json").read_text())



def test_every_operator_setting_is_set_by_the_chart(defaults):
    from kuberlhf_operator.settings import PREFIX, OperatorConfig

    env = {e["name"] for e in operator_container(defaults)["env"]}
    wanted = {PREFIX + name.upper() for name in OperatorConfig.model_fields}
    assert wanted <= env, f"operator settings the chart cannot set: {sorted(wanted - env)}"
    values = {"operator": {"resyncSeconds": 5, "workers": 4, "extraEnv": [{"name": "EXTRA", "value": "1"}]}}
    env = {e["name"]: e["value"] for e in operator_container(render(values))["env"]}
    assert OperatorConfig.from_env(env).model_dump() == {"resync_seconds": 5.0, "metrics_port": 8000, "workers": 4}
    assert env["EXTRA"] == "1"
