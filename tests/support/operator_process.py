"""The real operator (`python -m kuberlhf_operator`) as a child process, for tests and benchmarks.

A separate process, not an in-thread KopfRunner, so that a test can kill it mid-stage the way a
node failure would and start a fresh one with empty memory.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.support.controlplane import free_port

READY_TIMEOUT_S = 60


class OperatorProcess:
    def __init__(self, kubeconfig: str, log_path: Path, env: dict[str, str] | None = None):
        self.kubeconfig = kubeconfig
        self.log_path = log_path
        self.extra_env = env or {}
        self.metrics_port = free_port()
        self.liveness_port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, wait: bool = True) -> "OperatorProcess":
        """Start the operator; unless `wait` is False, return once its liveness endpoint answers."""
        env = dict(os.environ, KUBECONFIG=self.kubeconfig,
                   KUBERLHF_OPERATOR_METRICS_PORT=str(self.metrics_port), **self.extra_env)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kuberlhf_operator", "--log-format", "full",
             "--liveness", f"http://127.0.0.1:{self.liveness_port}/healthz"],
            stdout=log, stderr=subprocess.STDOUT, env=env,
        )
        log.close()
        if wait:
            self._wait_live()
        return self

    def stop(self, kill: bool = False) -> None:
        """SIGTERM and wait (a clean shutdown), or SIGKILL (a crash: nothing gets to clean up)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def restart(self, kill: bool = True) -> None:
        self.stop(kill=kill)
        self.start()

    def get(self, path: str) -> str:
        port = self.metrics_port if path == "/metrics" else self.liveness_port
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.read().decode()

    def logs(self, lines: int = 80) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def _wait_live(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"operator exited with {self.proc.returncode}:\n{self.logs()}")
            try:
                self.get("/healthz")
                return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"operator not live after {READY_TIMEOUT_S}s:\n{self.logs()}")
