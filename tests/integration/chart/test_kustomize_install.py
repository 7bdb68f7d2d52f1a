"""The static install (manifests/install, rendered from the chart) with kubectl's kustomize, on a
real API server: apply, and the uninstall docs/install.md gives, which keeps the CRD and the jobs.
"""

from __future__ import annotations

import pytest
import yaml
from chart_helm import REPO

pytestmark = pytest.mark.k8s

INSTALL = REPO / "manifests" / "install"


def test_kubectl_apply_k_installs_the_operator_and_the_documented_uninstall_keeps_the_crd(cluster):
    applied = cluster.kubectl("apply", "--server-side", "-k", str(INSTALL))
    assert "customresourcedefinition.apiextensions.k8s.io/rlhfjobs.kuberlhf.io serverside-applied" in applied.stdout
    cluster.kubectl("wait", "--for=condition=Established", "crd/rlhfjobs.kuberlhf.io", "--timeout=60s")
    cluster.kubectl("apply", "--server-side", "-k", str(INSTALL / "monitoring"))
    for kind, name in [("deployment", "kuberlhf"), ("serviceaccount", "kuberlhf"), ("service", "kuberlhf-metrics"),
                       ("servicemonitor", "kuberlhf"), ("podmonitor", "kuberlhf-trainer"),
                       ("configmap", "kuberlhf-dashboard")]:
        cluster.kubectl("get", "-n", "kuberlhf-system", kind, name)
    cluster.kubectl("get", "clusterrolebinding", "kuberlhf")

    # Re-applying (an upgrade to the same version) changes nothing.
    again = cluster.kubectl("apply", "--server-side", "-k", str(INSTALL)).stdout
    assert all(line.endswith("serverside-applied") for line in again.splitlines())

    cluster.kubectl("create", "namespace", "research")
    example = REPO / "manifests" / "examples" / "opt-1.3b-single-gpu.yaml"
    cluster.kubectl("apply", "-n", "research", "-f", str(example))

    # docs/install.md, "Uninstall (kustomize)": everything but the CRD.
    cluster.kubectl("delete", "-k", str(INSTALL / "monitoring"))
    cluster.kubectl("delete", "-n", "kuberlhf-system", "deployment,serviceaccount,service",
                    "-l", "app.kubernetes.io/instance=kuberlhf")
    cluster.kubectl("delete", "clusterrole,clusterrolebinding", "-l", "app.kubernetes.io/instance=kuberlhf")
    cluster.kubectl("delete", "namespace", "kuberlhf-system", "--wait=false")
    left = cluster.kubectl("get", "clusterrole,clusterrolebinding", "-l", "app.kubernetes.io/instance=kuberlhf",
                           "-o", "name").stdout
    assert left == ""
    assert cluster.kubectl("get", "-n", "kuberlhf-system", "deployment", "kuberlhf", check=False).returncode != 0
    cluster.kubectl("get", "crd", "rlhfjobs.kuberlhf.io")
    cluster.kubectl("get", "-n", "research", "rlhfjob", "opt-1-3b-single-gpu")


def test_the_kustomization_builds_one_namespace_and_the_charts_objects(cluster):
    built = cluster.kubectl("kustomize", str(INSTALL)).stdout
    kinds = sorted(d["kind"] for d in yaml.safe_load_all(built) if d)
    assert kinds == ["ClusterRole", "ClusterRole", "ClusterRole", "ClusterRole", "ClusterRoleBinding",
                     "ClusterRoleBinding", "CustomResourceDefinition", "Deployment", "Namespace", "Service",
                     "ServiceAccount"]
