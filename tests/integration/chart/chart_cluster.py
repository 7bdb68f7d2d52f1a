"""Helpers for the chart's and the monitoring integration tests (imported by name, like chart_helm)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

from tests.support.controlplane import ControlPlane, free_port
from tests.support.rlhfjobs import wait_for


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


class ChartOperator:
    """`python -m kuberlhf_operator` with a chart Deployment's args and env (installed or rendered),
    authenticated by the given kubeconfig (e.g. a token of the chart's ServiceAccount)."""

    def __init__(self, deployment: dict, kubeconfig: Path, log_path: Path):
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        self.health_port = free_port()
        self.metrics_port = next(p for p in iter(free_port, None) if p != self.health_port)
        # The ports are the pod's; here they must be free ones on this machine.
        self.args = [re.sub(r"^--liveness=http://0\.0\.0\.0:\d+/", f"--liveness=http://127.0.0.1:{self.health_port}/", a)
                     for a in container["args"]]
        env = {e["name"]: e["value"] for e in container["env"]}
        env["KUBERLHF_OPERATOR_METRICS_PORT"] = str(self.metrics_port)
        self.env = {**os.environ, **env, "KUBECONFIG": str(kubeconfig)}
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "ChartOperator":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> "ChartOperator":
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "kuberlhf_operator", *self.args],
                                         stdout=log, stderr=subprocess.STDOUT, env=self.env)
        wait_for("the operator's /healthz", self._live, timeout=60, interval=0.2)
        return self

    def _live(self) -> bool:
        assert self.proc.poll() is None, f"operator exited:\n{self.log()}"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/healthz", timeout=2):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
