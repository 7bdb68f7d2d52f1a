"""The chart and the static manifests against a real kube-apiserver: what an installer runs.

helm lint; helm template accepted by the API server (server-side dry run); helm install, upgrade
and uninstall; the examples against the CRD the chart installed.
"""

from __future__ import annotations

import pytest
import yaml
from chart_helm import CHART, MONITORING_APIS, REPO, helm, template_args

pytestmark = pytest.mark.k8s

EXAMPLES = sorted((REPO / "manifests" / "examples").glob("*.yaml"))
MONITORED = {"metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}}},
             "trainerMetrics": {"podMonitor": {"enabled": True}},
             "grafanaDashboard": {"enabled": True}}


@pytest.mark.parametrize("sets", [[], ["--set", "watchNamespaces={team-a,team-b}"]], ids=["defaults", "namespaced"])
def test_helm_lint_is_clean(sets):
    result = helm("lint", "--strict", str(CHART), *sets)
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout
    assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout


@pytest.mark.parametrize("values", [{}, {"watchNamespaces": ["team-a", "team-b"], **MONITORED}],
                         ids=["defaults", "namespaced-with-monitoring"])
def test_the_rendered_chart_passes_a_server_side_dry_run(cluster, values):
    for namespace in ("kuberlhf-system", "team-a", "team-b"):
        cluster.kubectl("create", "namespace", namespace, check=False)
    rendered = helm(*template_args(values, MONITORING_APIS)).stdout
    result = cluster.kubectl("apply", "--server-side", "--dry-run=server", "-f", "-", input=rendered, check=False)
    assert result.returncode == 0, result.stderr
    applied = [line for line in result.stdout.splitlines() if "serverside-applied (server dry run)" in line]
    assert len(applied) == len([d for d in yaml.safe_load_all(rendered) if d])


def test_install_upgrade_and_uninstall_keep_the_crd_and_the_jobs(cluster):
    values = ["--set", "metrics.serviceMonitor.enabled=true", "--set", "trainerMetrics.podMonitor.enabled=true",
              "--set", "grafanaDashboard.enabled=true"]
    installed = cluster.helm("install", "kuberlhf", str(CHART), "--namespace", "kuberlhf", "--create-namespace",
                             *values)
    assert "STATUS: deployed" in installed.stdout and "reconciles RLHFJobs in every namespace" in installed.stdout
    cluster.kubectl("wait", "--for=condition=Established", "crd/rlhfjobs.kuberlhf.io", "--timeout=60s")
    for kind, name in [("deployment", "kuberlhf"), ("serviceaccount", "kuberlhf"), ("service", "kuberlhf-metrics"),
                       ("servicemonitor", "kuberlhf"), ("podmonitor", "kuberlhf-trainer"),
                       ("configmap", "kuberlhf-dashboard")]:
        cluster.kubectl("get", "-n", "kuberlhf", kind, name)

    # Every example is accepted by the CRD the chart installed.
    cluster.kubectl("create", "namespace", "research")
    for example in EXAMPLES:
        result = cluster.kubectl("apply", "--dry-run=server", "-n", "research", "-f", str(example), check=False)
        assert result.returncode == 0, f"{example.name}: {result.stderr}"
    cluster.kubectl("apply", "-n", "research", "-f", str(REPO / "manifests" / "examples" / "opt-1.3b-single-gpu.yaml"))

    upgraded = cluster.helm("upgrade", "kuberlhf", str(CHART), "--namespace", "kuberlhf", *values,
                            "--set", "operator.resyncSeconds=30", "--set", "watchNamespaces={research}")
    assert "REVISION: 2" in upgraded.stdout
    deployment = yaml.safe_load(cluster.kubectl("get", "-n", "kuberlhf", "deployment", "kuberlhf", "-o", "yaml").stdout)
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "KUBERLHF_OPERATOR_RESYNC_SECONDS", "value": "30"} in container["env"]
    assert "--namespace=research" in container["args"]
    cluster.kubectl("get", "-n", "research", "rolebinding", "kuberlhf")
    assert cluster.kubectl("get", "clusterrolebinding", "kuberlhf", check=False).returncode != 0

    cluster.helm("uninstall", "kuberlhf", "--namespace", "kuberlhf")
    assert cluster.kubectl("get", "-n", "kuberlhf", "deployment", "kuberlhf", check=False).returncode != 0
    assert cluster.kubectl("get", "clusterrole", "kuberlhf", check=False).returncode != 0
    cluster.kubectl("get", "crd", "rlhfjobs.kuberlhf.io")  # kept ...
    cluster.kubectl("get", "-n", "research", "rlhfjob", "opt-1-3b-single-gpu")  # ... and with it the job

    # The kept CRD still names its release: installing that release again takes it back; another
    # release that would manage CRDs is refused rather than silently taking it over.
    other = cluster.helm("install", "other", str(CHART), "--namespace", "other", "--create-namespace",
                         "--set", "fullnameOverride=other", check=False)
    assert other.returncode != 0 and "rlhfjobs.kuberlhf.io" in other.stderr
    cluster.helm("install", "other", str(CHART), "--namespace", "other", "--create-namespace",
                 "--set", "fullnameOverride=other", "--set", "crds.enabled=false")
    cluster.helm("install", "kuberlhf", str(CHART), "--namespace", "kuberlhf")
    cluster.kubectl("get", "-n", "research", "rlhfjob", "opt-1-3b-single-gpu")
    for release, namespace in (("other", "other"), ("kuberlhf", "kuberlhf")):
        cluster.helm("uninstall", release, "--namespace", namespace)
