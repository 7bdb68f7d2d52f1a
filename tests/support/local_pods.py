"""Run a pod's container as a local process: the stand-in for kubelet and container runtime.

In the test cluster (tests/support/kube_cluster.py) the real training-operator and mpi-operator
make the pods and KWOK plays their kubelet, which runs nothing. `LocalProcessKubelet` runs a
pod's own container here instead, with the environment its controller injected, and then ends the
pod with the process's exit code and termination message. So what the operator wrote (command,
arguments, environment, volumes) is what really runs:

- a ConfigMap volume becomes a directory holding the ConfigMap's keys, read from the API;
- each PersistentVolumeClaim becomes one directory per claim, shared by every pod;
- every argument and environment value under a mount path is rewritten to the local directory;
- `torchrun` is this interpreter's `torch.distributed.run`, and the master address the
  training-operator injects is 127.0.0.1 (there is no cluster DNS), on a free port;
- the process inherits this machine's environment under the container's (a container would
  not, but PATH and the CPU settings CI relies on live there).

For an MPIJob the launcher runs here and `deepspeed` on its PATH is tests/support/fake_mpirun.py,
which runs the trainer as the workers' SSH sessions would (their mounts, the variables the
launcher forwards by name).

How a pod is ended: it is annotated with the exit code and termination message
(kube_cluster.pod_exits), and KWOK's kuberlhf-pod-exit Stage writes the terminated container
state and the phase. Not a status patch of our own: KWOK is the test cluster's kubelet and owns pod
status; a second writer would race with its stages, and through the Stage a locally run pod ends
exactly like every other pod a test ends.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from kubernetes import client

from tests.support import fake_mpirun
from tests.support.controlplane import free_port
from tests.support.kube_cluster import ends_now, pod_exits

# The kubelet keeps at most this much of a termination message, and with
# FallbackToLogsOnError the last 80 lines / 2048 bytes of the log (pkg/kubelet/kuberuntime).
MAX_TERMINATION_MESSAGE = 4096
FALLBACK_LOG_LINES, FALLBACK_LOG_BYTES = 80, 2048
LAUNCHER_SELECTOR = "training.kubeflow.org/job-name={},training.kubeflow.org/job-role=launcher"


@dataclass
class LocalContainer:
    """A pod's first container as it runs here: command, environment and mounts made local."""

    command: list[str]
    env: dict[str, str]             # the container's own variables (not this machine's)
    mounts: dict[str, str]          # mount path in the pod -> local directory or file


class LocalPods:
    def __init__(self, api: client.ApiClient, root: Path, timeout: float = 600):
        self.core = client.CoreV1Api(api)
        self.root = root
        self.timeout = timeout
        self.exit_codes: dict[str, int] = {}

    def run_pod(self, pod: dict[str, Any], extra_env: dict[str, str] | None = None) -> int:
        """Run a pod's first container with the environment in its spec (the training-operator's
        PET_* and MASTER_* included) and `extra_env`; returns the exit code."""
        name = pod["metadata"]["name"]
        local = self.container(pod)
        command = local.command
        if command[0] == "torchrun":
            command = [sys.executable, "-m", "torch.distributed.run", *command[1:]]
        env = _loopback_master({**os.environ, **local.env, **(extra_env or {})})
        with open(self.root / f"{name}.log", "wb") as log:
            result = subprocess.run(command, env=env, cwd=self.root, stdout=log, stderr=subprocess.STDOUT,
                                    timeout=self.timeout)
        self.exit_codes[name] = result.returncode
        return result.returncode

    def container(self, pod: dict[str, Any]) -> LocalContainer:
        """The pod's first container with its volumes made local (ConfigMaps read from the API)."""
        name, namespace, spec = pod["metadata"]["name"], pod["metadata"]["namespace"], pod["spec"]
        container = spec["containers"][0]
        mounts = self._mounts(namespace, name, spec.get("volumes") or [], container.get("volumeMounts") or [])
        termination_log = container.get("terminationMessagePath") or "/dev/termination-log"
        mounts[termination_log] = str(self.root / f"{name}.termination-log")
        command = [local_path(arg, mounts) for arg in [*container.get("command", []), *container.get("args", [])]]
        return LocalContainer(command, self._env(namespace, container.get("env") or [], mounts, pod), mounts)

    def termination_message(self, name: str, container: dict[str, Any], exit_code: int) -> str:
        """What the kubelet would report: the termination log, or with FallbackToLogsOnError and
        a failure, the tail of the container's log."""
        path = self.root / f"{name}.termination-log"
        message = path.read_bytes()[:MAX_TERMINATION_MESSAGE].decode(errors="replace") if path.exists() else ""
        if not message and exit_code != 0 and container.get("terminationMessagePolicy") == "FallbackToLogsOnError":
            tail = "\n".join(self.log(name).splitlines()[-FALLBACK_LOG_LINES:])
            message = tail.encode()[-FALLBACK_LOG_BYTES:].decode(errors="replace")
        return message

    def log(self, name: str) -> str:
        path = self.root / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def claim_dir(self, claim: str) -> Path:
        return self.root / "claims" / claim

    def _mounts(self, namespace: str, pod: str, volumes: list[dict], mounts: list[dict]) -> dict[str, str]:
        local: dict[str, str] = {}
        by_name = {v["name"]: v for v in volumes}
        for mount in mounts:
            volume = by_name[mount["name"]]
            if "configMap" in volume:
                path = self._config_map(namespace, volume["configMap"])
            elif "persistentVolumeClaim" in volume:
                path = self.claim_dir(volume["persistentVolumeClaim"]["claimName"])
            else:
                path = self.root / "emptydir" / pod / mount["name"]
            path.mkdir(parents=True, exist_ok=True)
            local[mount["mountPath"]] = str(path)
        return local

    def _config_map(self, namespace: str, source: dict) -> Path:
        data = self.core.read_namespaced_config_map(source["name"], namespace).data or {}
        path = self.root / "configmaps" / source["name"]
        path.mkdir(parents=True, exist_ok=True)
        items = source.get("items") or [{"key": k, "path": k} for k in data]
        for item in items:
            (path / item["path"]).write_text(data[item["key"]])
        return path

    def _env(self, namespace: str, env: list[dict], mounts: dict[str, str], pod: dict) -> dict[str, str]:
        out = {}
        for var in env:
            source = var.get("valueFrom")
            if source and "secretKeyRef" in source:
                ref = source["secretKeyRef"]
                secret = self.core.read_namespaced_secret(ref["name"], namespace)
                out[var["name"]] = base64.b64decode(secret.data[ref["key"]]).decode()
            elif source and "fieldRef" in source:
                out[var["name"]] = _field(pod, source["fieldRef"]["fieldPath"])
            elif source:
                raise NotImplementedError(f"env {var['name']}: only secretKeyRef and fieldRef are run locally")
            else:
                out[var["name"]] = local_path(var.get("value", ""), mounts)
        return out


def local_path(value: str, mounts: dict[str, str]) -> str:
    """`value` with a leading mount path replaced by its local directory (else unchanged)."""
    for mount_path in sorted(mounts, key=len, reverse=True):
        if value == mount_path or value.startswith(mount_path.rstrip("/") + "/"):
            return mounts[mount_path] + value[len(mount_path):]
    return value


def _field(pod: dict, path: str) -> str:
    """The downward API's value for fieldPath `path` (metadata.name, status.podIP, ...)."""
    value: Any = pod
    for part in path.split("."):
        value = (value or {}).get(part)
    return "" if value is None else str(value)


def _loopback_master(env: dict[str, str]) -> dict[str, str]:
    """The master address on this machine and a free port: no cluster DNS, and runs must not collide."""
    port = str(free_port())
    for key, value in (("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", port)):
        for var in (key, f"PET_{key}"):
            if var in env:
                env[var] = value
    return env


class LocalProcessKubelet:
    """The kubelet test double for end-to-end runs in the test cluster: runs a scheduled pod's
    container as a local process, then ends the pod with its exit code and termination message
    (through KWOK's Stage, see the module docstring)."""

    def __init__(self, api: client.ApiClient, root: Path, timeout: float = 600):
        self.api = api
        self.core = client.CoreV1Api(api)
        self.pods = LocalPods(api, root, timeout)

    def run(self, namespace: str, name: str, start_timeout: float = 60) -> int:
        """Wait for the pod to run on a node, run its container here, end the pod; returns the exit code."""
        pod = self._wait_running(namespace, name, start_timeout)
        return self._end(pod, self.pods.run_pod(pod))

    def run_master(self, namespace: str, pytorchjob: str, start_timeout: float = 60) -> int:
        """Run a PyTorchJob's master (pod `<job>-master-0`, as the training-operator names it)."""
        return self.run(namespace, f"{pytorchjob}-master-0", start_timeout)

    def run_mpijob(self, namespace: str, mpijob: str, start_timeout: float = 60) -> int:
        """Run an MPIJob's launcher pod here, its own command (the launcher's shell around DeepSpeed's
        launcher), with fake_mpirun standing in for DeepSpeed's launcher, mpirun and the workers'
        sshd; then end the launcher pod. The workers' pods stay as they are (their sshd runs on)."""
        worker = self._wait_running(namespace, f"{mpijob}-worker-0", start_timeout)
        launcher = self._wait_running(namespace, self._launcher_name(namespace, mpijob, start_timeout), start_timeout)
        plan = self.pods.root / f"{mpijob}.fake-mpirun.json"
        plan.write_text(json.dumps(fake_mpirun.plan(self.pods.container(launcher), self.pods.container(worker))))
        shims = fake_mpirun.install(self.pods.root / "fake-mpirun-bin")
        env = {"PATH": f"{shims}{os.pathsep}{os.environ.get('PATH', '')}", fake_mpirun.PLAN_ENV: str(plan)}
        return self._end(launcher, self.pods.run_pod(launcher, extra_env=env))

    def log(self, name: str) -> str:
        return self.pods.log(name)

    def _end(self, pod: dict[str, Any], code: int) -> int:
        name, namespace = pod["metadata"]["name"], pod["metadata"]["namespace"]
        message = self.pods.termination_message(name, pod["spec"]["containers"][0], code)
        self.core.patch_namespaced_pod(name, namespace, {"metadata": {"annotations": ends_now(pod_exits(code, message))}})
        return code

    def _launcher_name(self, namespace: str, mpijob: str, timeout: float) -> str:
        """mpi-operator's launcher is a pod of the batch Job `<mpijob>-launcher`: its name is random."""
        def named() -> str | None:
            pods = self.core.list_namespaced_pod(namespace, label_selector=LAUNCHER_SELECTOR.format(mpijob)).items
            return pods[0].metadata.name if pods else None
        return _poll(f"the launcher pod of {namespace}/{mpijob}", named, timeout)

    def _wait_running(self, namespace: str, name: str, timeout: float) -> dict[str, Any]:
        def running() -> dict[str, Any] | None:
            try:
                pod = self.core.read_namespaced_pod(name, namespace)
            except client.ApiException as e:
                if e.status != 404:
                    raise
                return None
            return self.api.sanitize_for_serialization(pod) if pod.status.phase == "Running" else None
        return _poll(f"pod {namespace}/{name} Running", running, timeout)


def _poll(what: str, check: Callable[[], Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"{what}: not after {timeout}s")
