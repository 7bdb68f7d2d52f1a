"""Run a PyTorchJob's master container as a local process: the stand-in for kubelet and runtime.

Used with the simulated training-operator in the end-to-end test, so that what the operator
wrote into the child job (command, arguments, environment, volumes) is what really runs:

- the ConfigMap volume becomes a directory holding the ConfigMap's keys, read from the API;
- each PersistentVolumeClaim becomes one directory per claim, shared by every stage;
- every argument and environment value under a mount path is rewritten to the local directory;
- `torchrun` is this interpreter's `torch.distributed.run`, and the PET_* variables are the
  ones the training-operator injects (master address 127.0.0.1, as there is no cluster DNS);
- the process inherits this machine's environment under the container's (a container would
  not, but PATH and the CPU settings CI relies on live there).
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from kubernetes import client

from tests.support.controlplane import free_port


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
        container = pod["containers"][0]
        mounts = self._mounts(namespace, name, pod["volumes"], container["volumeMounts"])
        mounts["/dev/termination-log"] = str(self.root / f"{name}.termination-log")
        command = [self._local(arg, mounts) for arg in container["command"]]
        if command[0] == "torchrun":
            command = [sys.executable, "-m", "torch.distributed.run", *command[1:]]
        env = {**os.environ, **self._env(namespace, container.get("env", []), mounts),
               **self._kubeflow_env(child)}
        with open(self.root / f"{name}.log", "wb") as log:
            result = subprocess.run(command, env=env, cwd=self.root, stdout=log, stderr=subprocess.STDOUT,
                                    timeout=self.timeout)
        self.exit_codes[name] = result.returncode
        return result.returncode == 0

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

    def _env(self, namespace: str, env: list[dict], mounts: dict[str, str]) -> dict[str, str]:
        out = {}
        for var in env:
            if "valueFrom" in var:
                ref = var["valueFrom"]["secretKeyRef"]
                secret = self.core.read_namespaced_secret(ref["name"], namespace)
                out[var["name"]] = base64.b64decode(secret.data[ref["key"]]).decode()
            else:
                out[var["name"]] = self._local(var.get("value", ""), mounts)
        return out

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
