"""Helpers for the chart's integration tests (imported by name, like chart_helm)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.controlplane import ControlPlane


def token_kubeconfig(cp: ControlPlane, namespace: str, service_account: str, path: Path) -> Path:
    """A kubeconfig that authenticates as a ServiceAccount, with a token from the TokenRequest API."""
    token = cp.kubectl("create", "token", service_account, "-n", namespace, "--duration=1h").stdout.strip()
    config = {
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "test", "cluster": {"server": cp.server, "certificate-authority": str(cp.certs["ca_crt"])}}],
        "users": [{"name": service_account, "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "test", "user": service_account}}],
        "current-context": "sa",
    }
    path.write_text(json.dumps(config))
    return path
