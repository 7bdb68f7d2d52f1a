"""A stage attempt as a Kubeflow job: PyTorchJob (kubeflow.org/v1) or MPIJob (kubeflow.org/v2beta1).

Both run the same trainer command, `kuberlhf_trainer step <stage> ...`, under a different
launcher:

- PyTorchJob: every pod runs torchrun. The training-operator injects PET_NODE_RANK,
  PET_MASTER_ADDR and PET_MASTER_PORT, which torchrun reads; we pass --nnodes and
  --nproc-per-node explicitly so the command says what it runs.
- MPIJob: workers run an SSH daemon; the launcher runs DeepSpeed's launcher with its OpenMPI
  runner over the hostfile mpi-operator mounts at /etc/mpi/hostfile (`host slots=N`, the
  format DeepSpeed parses). Ranks come from DeepSpeed's MPI discovery in the trainer
  processes, so the image needs OpenMPI, an SSH server and mpi4py. Processes started over SSH
  do not inherit the worker pod's environment, so the launcher forwards each trainer
  variable by name with `mpirun -x NAME` (names only: the hub token's value never appears on
  a command line).

Both use restartPolicy Never and backoffLimit 0: a failed pod fails the child, and the retry
is a new child attempt that the RLHFJob counts against the stage's retryLimit.
"""

from __future__ import annotations

from typing import Any

from ..job import Job
from ..names import CHILD_KINDS, KUEUE_LABELS, MAX_CHILD_NAME, child_name, stage_labels
from . import pod

MPI_HOSTFILE = "/etc/mpi/hostfile"
RUN_POLICY = {"cleanPodPolicy": "Running", "backoffLimit": 0}


class ChildNameTooLong(ValueError):
    """Only reachable after thousands of attempts; the CRD bounds the job's name."""


def child_metadata(job: Job, stage: str, attempt: int) -> dict[str, Any]:
    name = child_name(job.name, stage, attempt)
    if len(name) > MAX_CHILD_NAME:
        raise ChildNameTooLong(f"child name {name!r} is longer than {MAX_CHILD_NAME} characters")
    labels = stage_labels(job.name, stage, attempt)
    # Kueue reads these from the job object: each stage queues like the RLHFJob it belongs to.
    labels.update({k: job.labels[k] for k in KUEUE_LABELS if k in job.labels})
    return {"name": name, "namespace": job.namespace, "labels": labels, "ownerReferences": [job.owner_reference]}


def build_pytorchjob(job: Job, stage: str, attempt: int, config_map: str, claim: str,
                     overwrite: bool = False) -> dict[str, Any]:
    spec = job.spec.stages.of(stage)
    procs = spec.processes
    command = ["torchrun", f"--nnodes={spec.nodes}", f"--nproc-per-node={procs}",
               "-m", "kuberlhf_trainer", *pod.trainer_args(job, stage, overwrite)]
    trainer = pod.container(job, "pytorch", command, resources_=pod.resources(spec, spec.gpus_per_node),
                            training=True)
    template = pod.pod_template(job, stage, attempt, [trainer], pod.volumes(job, spec, config_map, claim))
    replicas = {"Master": {"replicas": 1, "restartPolicy": "Never", "template": template}}
    if spec.nodes > 1:
        replicas["Worker"] = {"replicas": spec.nodes - 1, "restartPolicy": "Never", "template": template}
    api_version, kind, _ = CHILD_KINDS["pytorchjob"]
    return {
        "apiVersion": api_version,
        "kind": kind,
        "metadata": child_metadata(job, stage, attempt),
        "spec": {"runPolicy": dict(RUN_POLICY), "nprocPerNode": str(procs), "pytorchReplicaSpecs": replicas},
    }


def deepspeed_command(job: Job, stage: str, name: str, overwrite: bool) -> list[str]:
    forwarded = [e["name"] for e in pod.trainer_env(job)]
    return [
        "deepspeed",
        f"--hostfile={MPI_HOSTFILE}",
        "--launcher=openmpi",
        # One worker is still a remote host: without this DeepSpeed would train on the launcher.
        "--force_multi",
        # Worker 0 is known, so DeepSpeed needs no SSH probe (`hostname -I`) to find it.
        "--no_ssh_check",
        f"--master_addr={name}-worker-0.{name}.{job.namespace}.svc",
        "--launcher_args=" + " ".join(f"-x {var}" for var in forwarded),
        "--module",
        "kuberlhf_trainer",
        *pod.trainer_args(job, stage, overwrite),
    ]


def build_mpijob(job: Job, stage: str, attempt: int, config_map: str, claim: str,
                 overwrite: bool = False) -> dict[str, Any]:
    spec = job.spec.stages.of(stage)
    metadata = child_metadata(job, stage, attempt)
    launcher = pod.container(job, "launcher", deepspeed_command(job, stage, metadata["name"], overwrite),
                             resources_={}, training=False)
    worker = pod.container(job, "worker", list(job.spec.mpi.sshd_command),
                           resources_=pod.resources(spec, spec.gpus_per_node), training=True)
    api_version, kind, _ = CHILD_KINDS["mpijob"]
    return {
        "apiVersion": api_version,
        "kind": kind,
        "metadata": metadata,
        "spec": {
            "slotsPerWorker": spec.processes,
            "runLauncherAsWorker": False,
            "sshAuthMountPath": job.spec.mpi.ssh_auth_mount_path,
            "launcherCreationPolicy": "WaitForWorkersReady",
            "mpiImplementation": "OpenMPI",
            "runPolicy": dict(RUN_POLICY),
            "mpiReplicaSpecs": {
                "Launcher": {"replicas": 1, "restartPolicy": "Never",
                             "template": pod.pod_template(job, stage, attempt, [launcher], [])},
                "Worker": {"replicas": spec.nodes, "restartPolicy": "Never",
                           "template": pod.pod_template(job, stage, attempt, [worker],
                                                        pod.volumes(job, spec, config_map, claim))},
            },
        },
    }


def build_child(job: Job, stage: str, attempt: int, config_map: str, claim: str,
                overwrite: bool = False) -> dict[str, Any]:
    """The child job for one stage attempt, of the kind spec.launcher names."""
    build = build_mpijob if job.spec.launcher == "mpijob" else build_pytorchjob
    return build(job, stage, attempt, config_map, claim, overwrite)
