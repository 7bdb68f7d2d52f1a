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
  a command line). The trainer's failure report would be lost on the workers (their sshd never
  exits, and mpi-operator neither reads nor keeps them): each rank also writes it to a folder of
  the attempt on the shared storage, and the launcher copies the first one written into its own
  termination log, where the operator reads it.

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
# The launcher's shell: run "$@" (DeepSpeed's launcher, mpirun underneath); if it failed, copy the
# earliest report a rank wrote into the launcher's termination log; exit with mpirun's code.
# Without a report the termination log stays empty and the kubelet takes the log's tail instead.
LAUNCHER_SCRIPT = (
    f'"$@"; code=$?; if [ "$code" -ne 0 ]; then '
    f'report=$(ls -1tr "${pod.REPORT_DIR_ENV}"/*.json 2>/dev/null | head -n 1); '
    f'if [ -n "$report" ]; then cp "$report" "$KUBERLHF_TERMINATION_LOG"; fi; '
    f'fi; exit "$code"'
)


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
    trainer = pod.container(job, "pytorch", command, resources_=pod.resources(spec.resources, spec.gpus_per_node),
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
        "spec": {"runPolicy": run_policy(job, stage), "nprocPerNode": str(procs), "pytorchReplicaSpecs": replicas},
    }


def run_policy(job: Job, stage: str) -> dict[str, Any]:
    deadline = job.spec.stages.of(stage).active_deadline_seconds
    return {**RUN_POLICY, **({"activeDeadlineSeconds": deadline} if deadline else {})}


def deepspeed_command(job: Job, stage: str, name: str, overwrite: bool, reports: str) -> list[str]:
    forwarded = [e["name"] for e in pod.trainer_env(job, reports)]
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


def launcher_command(job: Job, stage: str, name: str, overwrite: bool, reports: str) -> list[str]:
    """DeepSpeed's launcher under a shell that hands on the ranks' failure report (LAUNCHER_SCRIPT).
    The arguments stay separate words ("$@"): nothing of the spec is parsed by the shell."""
    return ["/bin/sh", "-c", LAUNCHER_SCRIPT, "kuberlhf-launcher",
            *deepspeed_command(job, stage, name, overwrite, reports)]


def build_mpijob(job: Job, stage: str, attempt: int, config_map: str, claim: str,
                 overwrite: bool = False) -> dict[str, Any]:
    spec = job.spec.stages.of(stage)
    metadata = child_metadata(job, stage, attempt)
    reports = pod.report_dir(job, stage, attempt)
    launcher = pod.container(job, "launcher", launcher_command(job, stage, metadata["name"], overwrite, reports),
                             resources_=pod.resources(job.spec.mpi.launcher_resources, 0), training=False,
                             reports=reports)
    # The launcher reads the ranks' reports from the storage, and writes nothing there.
    launcher["volumeMounts"] = [{"name": "storage", "mountPath": job.spec.storage.mount_path, "readOnly": True}]
    worker = pod.container(job, "worker", list(job.spec.mpi.sshd_command),
                           resources_=pod.resources(spec.resources, spec.gpus_per_node), training=True,
                           reports=reports)
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
            "runPolicy": run_policy(job, stage),
            "mpiReplicaSpecs": {
                "Launcher": {"replicas": 1, "restartPolicy": "Never",
                             "template": pod.pod_template(job, stage, attempt, [launcher],
                                                          [pod.storage_volume(claim)])},
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
