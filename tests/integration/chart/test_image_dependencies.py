"""What the images' `pip install` lines would install, resolved by pip against the package index
(`pip install --dry-run --report`, no container engine needed).

The operator image must stay free of torch and CUDA; the trainer image's pins must resolve
together, and torch's CUDA runtime must be the CUDA of the image's base (DeepSpeed's ops are
compiled with that toolkit against that torch). Needs the package index (or pip's cache).
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys

import pytest
from chart_helm import REPO

DOCKERFILES = {"operator": REPO / "images" / "operator" / "Dockerfile",
               "trainer": REPO / "images" / "trainer" / "Dockerfile"}


def pip_arguments(dockerfile) -> list[str]:
    """The arguments of every `pip install` in the Dockerfile's RUN lines, in order, as one install."""
    text = re.sub(r"\\\n", " ", "\n".join(l for l in dockerfile.read_text().splitlines() if not l.lstrip().startswith("#")))
    arguments: list[str] = []
    for line in text.splitlines():
        if not line.startswith("RUN "):
            continue
        for command in line[4:].split("&&"):
            words = shlex.split(command)
            if words and words[0].endswith("pip") and "install" in words:
                arguments += [w for w in words[words.index("install") + 1:] if w != "--no-build-isolation"]
    return arguments


def resolve(image: str, tmp_path) -> dict[str, str]:
    report = tmp_path / f"{image}.json"
    result = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
                             "--report", str(report), *pip_arguments(DOCKERFILES[image])],
                            cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{image}: pip cannot resolve the image's installs:\n{result.stderr[-3000:]}"
    installed = json.loads(report.read_text())["install"]
    return {item["metadata"]["name"].lower().replace("_", "-"): item["metadata"]["version"] for item in installed}


def test_the_operator_image_installs_no_torch_and_no_cuda(tmp_path):
    packages = resolve("operator", tmp_path)
    heavy = {name for name in packages if name in {"torch", "deepspeed", "transformers", "triton"}
             or name.startswith("nvidia-")}
    assert not heavy, f"the operator image would install {sorted(heavy)}"
    assert {"kopf", "kubernetes", "prometheus-client", "pydantic"} <= packages.keys()


@pytest.mark.timeout(900)
def test_the_trainer_image_pins_resolve_and_torch_matches_the_base_images_cuda(tmp_path):
    packages = resolve("trainer", tmp_path)
    base = re.search(r"ARG CUDA_IMAGE=nvidia/cuda:(\d+)\.(\d+)\.", DOCKERFILES["trainer"].read_text())
    runtime = next(v for name, v in packages.items() if name.startswith("nvidia-cuda-runtime"))
    assert runtime.split(".")[:2] == [base[1], base[2]], f"torch uses CUDA {runtime}, the base image {base[0]}"
    for name in ("torch", "deepspeed", "transformers", "mpi4py"):
        assert name in packages, name
