#!/usr/bin/env python3
"""The operator's chaos run at the issue's full size: 50 RLHFJobs in the test cluster (the real
training-operator, mpi-operator, scheduler and garbage collector, KWOK's nodes) while the
operator is SIGKILLed at random moments and restarted, the API server restarts once, a proxy
injects API errors, conflicts and expired watches, and child jobs fail at random.

    .venv/bin/python bench/operator_chaos.py [--jobs 50] [--seed 1] [--runs 1]

Prints the figures of each run (JSON): what was injected, how long it took, and `problems`,
which lists every job that ended wrong (wrong phase, a missing or extra child, retries beyond
the limit). tests/integration/operator/test_operator_chaos.py runs the same at CI size. Exits 1
if any run had a problem.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.chaos import ChaosPlan, ChaosRun  # noqa: E402
from tests.support.kube_cluster import KubeCluster, locate_cluster_tools  # noqa: E402
from tests.support.rlhfjobs import CRD_PATH, SHARED_CLAIM  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1, help="seed of the first run; each further run adds 1")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--workdir", type=Path, default=None, help="keep the operator logs here")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="kuberlhf-chaos-"))
    bad = 0
    tools = locate_cluster_tools()
    for run in range(args.runs):
        seed = args.seed + run
        run_dir = workdir / f"seed{seed}"
        run_dir.mkdir(parents=True, exist_ok=True)
        with KubeCluster(tools, workdir=run_dir / "cluster", crds=[CRD_PATH]) as cluster:
            namespace = cluster.create_namespace("chaos")
            cluster.create_claim(namespace, SHARED_CLAIM)
            figures = ChaosRun(cluster, namespace, run_dir, ChaosPlan(jobs=args.jobs, seed=seed, timeout=900)).run()
        figures["seed"] = seed
        print(json.dumps(figures, indent=2), flush=True)
        bad += bool(figures["problems"]) or not figures["settled"]
    print(f"operator logs: {workdir}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
