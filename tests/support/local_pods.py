"""Run a PyTorchJob's master container as a local process: the stand-in for kubelet and runtime.

Two users. With the simulated training-operator, `LocalPods.run(child)` runs the command the
operator wrote into the child job. In the test cluster with the real training-operator
(tests/support/kube_cluster.py), `LocalProcessKubelet` runs the master *pod* the training-operator
made, with the environment it injected, and then ends that pod with the process's exit code and
termination message. Either way, what the operator wrote (command, arguments, environment,
volumes) is what really runs:

- the ConfigMap volume becomes a directory holding the ConfigMap's keys, read from the API;
- each PersistentVolumeClaim becomes one directory per claim, shared by every stage;
- every argument and environment value under a mount path is rewritten to the local directory;
- `torchrun` is this interpreter's `torch.distributed.run`, and the PET_* variables are the
  ones the training-operator injects (master address 127.0.0.1, as there is no cluster DNS);
- the process inherits this machine's environment under the container's (a container would
  not, but PATH and the CPU settings CI relies on live there).

How `LocalProcessKubelet` ends the pod: it annotates it with the exit code and termination
message (kube_cluster.pod_exits), and KWOK's kuberlhf-pod-exit Stage writes the terminated
container state and the phase. It does not patch the pod's status itself because KWOK is the
test cluster's kubelet and owns pod status: a second writer would race with KWOK's stages, and
through the Stage a locally run pod ends exactly like every other pod a test ends.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from kubernetes import client

from tests.support.controlplane import free_port
from tests.support.kube_cluster import pod_exits

# The kubelet keeps at most this much of a termination message, and with
# FallbackToLogsOnError the last 80 lines / 2048 bytes of the log (pkg/kubelet/kuberuntime).
MAX_TERMINATION_MESSAGE = 4096
FALLBACK_LOG_LINES, FALLBACK_LOG_BYTES = 80, 2048


class LocalPods:
    def __init__(self, api: client.ApiClient, root: Path, timeout: float = 600):
        self.core = client.CoreV1Api(api)
        self.root = root
        self.timeout = timeout
        self.exit_codes: dict[str, int] = {}

    def run(self, child: dict[str, Any]) -> bool:
        """Run the child's master container to completion; True if it exited 0."""
        name, namespace = child["metadata"]["name"], child["metadata"]["namespace"]
        pod = child["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]
        return self._run(namespace, name, pod, lambda env: {**env, **self._kubeflow_env(child)}) == 0

    def run_pod(self, pod: dict[str, Any]) -> int:
        """Run a pod's first container with the environment in its spec (the training-operator's
        PET_* and MASTER_* included); returns the exit code. The master address becomes
        127.0.0.1 and the port a free one: there is no cluster DNS, and runs must not collide."""
        name, namespace = pod["metadata"]["name"], pod["metadata"]["namespace"]

        def loopback_master(env: dict[str, str]) -> dict[str, str]:
            port = str(free_port())
            for key, value in (("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", port)):
                for var in (key, f"PET_{key}"):
                    if var in env:
                        env[var] = value
            return env

        return self._run(namespace, name, pod["spec"], loopback_master, pod)

    def termination_message(self, name: str, container: dict[str, Any], exit_code: int) -> str:
        """What the kubelet would report: the termination log, or with FallbackToLogsOnError and
        a failure, the tail of the container's log."""
        path = self.root / f"{name}.termination-log"
        message = path.read_bytes()[:MAX_TERMINATION_MESSAGE].decode(errors="replace") if path.exists() else ""
        if not message and exit_code != 0 and container.get("terminationMessagePolicy") == "FallbackToLogsOnError":
            tail = "\n".join(self.log(name).splitlines()[-FALLBACK_LOG_LINES:])
            message = tail.encode()[-FALLBACK_LOG_BYTES:].decode(errors="replace")
        return message

    def _run(self, namespace: str, name: str, pod: dict[str, Any], adjust_env, full_pod: dict | None = None) -> int:
        container = pod["containers"][0]
        mounts = self._mounts(namespace, name, pod.get("volumes") or [], container.get("volumeMounts") or [])
        termination_log = container.get("terminationMessagePath") or "/dev/termination-log"
        mounts[termination_log] = str(self.root / f"{name}.termination-log")
        command = [self._local(arg, mounts) for arg in [*container.get("command", []), *container.get("args", [])]]
        if command[0] == "torchrun":
            command = [sys.executable, "-m", "torch.distributed.run", *command[1:]]
        env = adjust_env({**os.environ, **self._env(namespace, container.get("env") or [], mounts, full_pod)})
        with open(self.root / f"{name}.log", "wb") as log:
            result = subprocess.run(command, env=env, cwd=self.root, stdout=log, stderr=subprocess.STDOUT,
                                    timeout=self.timeout)
        self.exit_codes[name] = result.returncode
        return result.returncode

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

    def _env(self, namespace: str, env: list[dict], mounts: dict[str, str], pod: dict | None = None) -> dict[str, str]:
        out = {}
        for var in env:
            source = var.get("valueFrom")
            if source and "secretKeyRef" in source:
                ref = source["secretKeyRef"]
                secret = self.core.read_namespaced_secret(ref["name"], namespace)
                out[var["name"]] = base64.b64decode(secret.data[ref["key"]]).decode()
            elif source and "fieldRef" in source and pod is not None:
                out[var["name"]] = self._field(pod, source["fieldRef"]["fieldPath"])
            elif source:
                raise NotImplementedError(f"env {var['name']}: only secretKeyRef and fieldRef are run locally")
            else:
                out[var["name"]] = self._local(var.get("value", ""), mounts)
        return out

    @staticmethod
    def _field(pod: dict, path: str) -> str:
        """The downward API's value for fieldPath `path` (metadata.name, status.podIP, ...)."""
        value: Any = pod
        for part in path.split("."):
            value = (value or {}).get(part)
        return "" if value is None else str(value)

    @staticmethod
    def _kubeflow_env(child: dict) -> dict[str, str]:
        port = str(free_port())
        return {"PET_MASTER_ADDR": "127.0.0.1", "PET_MASTER_PORT": port, "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": port, "PET_NODE_RANK": "0", "RANK": "0", "PET_NNODES": "1", "WORLD_SIZE": "1",
                "PET_NPROC_PER_NODE": str(child["spec"].get("nprocPerNode", "1"))}

    @staticmethod
    def _local(value: str, mounts: dict[str, str]) -> str:
        for mount_path in sorted(mounts, key=len, reverse=True):
            if value == mount_path or value.startswith(mount_path.rstrip("/") + "/"):
                return mounts[mount_path] + value[len(mount_path):]
        return value


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
        code = self.pods.run_pod(pod)
        message = self.pods.termination_message(name, pod["spec"]["containers"][0], code)
        self.core.patch_namespaced_pod(name, namespace, {"metadata": {"annotations": pod_exits(code, message)}})
        return code

    def run_master(self, namespace: str, pytorchjob: str, start_timeout: float = 60) -> int:
        """Run a PyTorchJob's master (pod `<job>-master-0`, as the training-operator names it)."""
        return self.run(namespace, f"{pytorchjob}-master-0", start_timeout)

    def log(self, name: str) -> str:
        return self.pods.log(name)

    def _wait_running(self, namespace: str, name: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        phase = None
        while time.monotonic() < deadline:
            try:
                pod = self.core.read_namespaced_pod(name, namespace)
                phase = pod.status.phase
                if phase == "Running":
                    return self.api.sanitize_for_serialization(pod)
            except client.ApiException as e:
                if e.status != 404:
                    raise
            time.sleep(0.1)
        raise AssertionError(f"pod {namespace}/{name} not Running after {timeout}s (phase {phase})")
