"""Stand-in for DeepSpeed's launcher, mpirun and the MPIJob workers' sshd, for an MPIJob's launcher
run on this machine (local_pods.LocalProcessKubelet.run_mpijob).

The launcher the operator builds runs `deepspeed --hostfile=/etc/mpi/hostfile --launcher=openmpi
... --launcher_args="-x NAME ..." --module kuberlhf_trainer step ...` under a shell of its own. On a
cluster, DeepSpeed's runner calls mpirun, which starts one process per slot of the hostfile on the
workers over SSH; those processes see the workers' volumes and, of the launcher's environment,
only the variables forwarded by name. This script, installed as `deepspeed` on the launcher's PATH,
does the same here: it reads the hostfile through the launcher's mounts, starts one process per
slot with the worker's mounts (arguments rewritten to the local directories), this machine's
environment (what an SSH session has), the forwarded variables as the worker's container sees
them, and the rank variables mpirun would set; and exits with the first failing rank's code, as
mpirun does. The trainer, the launcher's shell and the report they pass on are the real ones.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

PLAN_ENV = "KUBERLHF_FAKE_MPIRUN_PLAN"
REPO = Path(__file__).resolve().parents[2]


def plan(launcher: Any, worker: Any) -> dict[str, Any]:
    """What the script needs to know of the two pods (local_pods.LocalContainer each)."""
    return {"launcher_mounts": launcher.mounts, "launcher_env": sorted(launcher.env),
            "worker_mounts": worker.mounts, "worker_env": worker.env}


def install(directory: Path) -> Path:
    """Write the `deepspeed` executable (this module, under this interpreter) into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    shim = directory / "deepspeed"
    shim.write_text(f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(REPO)!r})\n"
                    "from tests.support.fake_mpirun import main\nsys.exit(main(sys.argv[1:]))\n")
    shim.chmod(0o755)
    return directory


def main(argv: list[str]) -> int:
    from tests.support.controlplane import free_port
    from tests.support.local_pods import local_path

    settings = json.loads(Path(os.environ[PLAN_ENV]).read_text())
    options, module, args = _parse(argv)
    slots = _slots(local_path(options["hostfile"], settings["launcher_mounts"]))
    forwarded = shlex.split(options.get("launcher_args", ""))[1::2]  # "-x A -x B" -> [A, B]
    # An SSH session's environment: this machine's, not the launcher container's.
    base = {k: v for k, v in os.environ.items() if k not in settings["launcher_env"] and k != PLAN_ENV}
    base.update({name: settings["worker_env"][name] for name in forwarded if name in settings["worker_env"]})
    command = [sys.executable, "-u", "-m", module, *(local_path(a, settings["worker_mounts"]) for a in args)]
    port = str(free_port())
    ranks = [subprocess.Popen(command, env={**base, **_rank_env(rank, slots, port)}) for rank in range(slots)]
    codes = [rank.wait() for rank in ranks]
    return next((code for code in codes if code != 0), 0)


def _parse(argv: list[str]) -> tuple[dict[str, str], str, list[str]]:
    """DeepSpeed's options (`--name=value` or flags), the module after --module, and its arguments."""
    options: dict[str, str] = {}
    for i, arg in enumerate(argv):
        if arg == "--module":
            return options, argv[i + 1], argv[i + 2:]
        name, _, value = arg.removeprefix("--").partition("=")
        options[name] = value
    raise SystemExit("fake deepspeed: only --module launches are run here")


def _slots(hostfile: str) -> int:
    """Total slots of mpi-operator's hostfile (`<host> slots=N` per worker)."""
    lines = [line.split() for line in Path(hostfile).read_text().splitlines() if line.strip()]
    return sum(int(word.split("=", 1)[1]) for words in lines for word in words[1:] if word.startswith("slots="))


def _rank_env(rank: int, size: int, port: str) -> dict[str, str]:
    """What mpirun (OpenMPI) and DeepSpeed's MPI discovery give each process; on one machine."""
    return {"OMPI_COMM_WORLD_RANK": str(rank), "OMPI_COMM_WORLD_SIZE": str(size),
            "OMPI_COMM_WORLD_LOCAL_RANK": str(rank), "RANK": str(rank), "WORLD_SIZE": str(size),
            "LOCAL_RANK": str(rank), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}
