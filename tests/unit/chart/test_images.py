"""images/operator and images/trainer, checked without a container engine (none runs here).

What can go wrong before anyone builds them: a COPY of a file that is not there (or that the
build's .dockerignore hides), an entrypoint or pod command that does not exist, versions that
drift from the ones the tests run with, and what hadolint finds.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from fnmatch import fnmatch
from importlib.metadata import requires, version
from pathlib import Path

import pytest
from chart_helm import REPO
from packaging.requirements import Requirement

IMAGES = REPO / "images"
DOCKERFILES = {"operator": IMAGES / "operator" / "Dockerfile", "trainer": IMAGES / "trainer" / "Dockerfile"}
EXTRAS = {"operator": "operator", "trainer": "trainer"}
CONSTRAINTS = [REPO / "hack" / "constraints.txt", IMAGES / "constraints.txt"]
VENV_BIN = Path(sys.executable).parent


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments), with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", "\n".join(line for line in dockerfile.read_text().splitlines()
                                          if not line.lstrip().startswith("#")))
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in text.splitlines() if line.strip()]


def copied_sources(dockerfile: Path) -> list[str]:
    sources = []
    for instruction, args in instructions(dockerfile):
        if instruction != "COPY" or "--from=" in args:
            continue
        words = [w for w in shlex.split(args) if not w.startswith("--")]
        sources += words[:-1]
    return sources


def ignored(path: str, dockerignore: Path) -> bool:
    """Whether BuildKit's <Dockerfile>.dockerignore rules exclude a path (last match wins)."""
    excluded = False
    for rule in dockerignore.read_text().splitlines():
        rule = rule.strip()
        if not rule or rule.startswith("#"):
            continue
        negate, pattern = rule.startswith("!"), rule.lstrip("!")
        matches = fnmatch(path, pattern) or fnmatch(path, pattern.removesuffix("/**") + "/*") or \
            (pattern.endswith("/**") and path.startswith(pattern.removesuffix("**")))
        if pattern == "**":
            matches = True
        if matches:
            excluded = not negate
    return excluded


def pins() -> dict[str, str]:
    found = {}
    for path in CONSTRAINTS:
        for line in path.read_text().splitlines():
            line = line.split("#")[0].strip()
            if line:
                req = Requirement(line)
                found[req.name.lower().replace("_", "-")] = str(req.specifier).removeprefix("==")
    return found


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_every_file_the_image_copies_exists_and_is_in_the_build_context(image):
    dockerfile = DOCKERFILES[image]
    dockerignore = dockerfile.with_name("Dockerfile.dockerignore")
    sources = copied_sources(dockerfile)
    assert "pyproject.toml" in sources and "hack/constraints.txt" in sources
    for source in sources:
        path = REPO / source
        assert path.exists(), f"{image}: COPY {source}: no such file"
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
        for file in files:
            relative = str(file.relative_to(REPO))
            assert not ignored(relative, dockerignore), f"{image}: {relative} is excluded by {dockerignore.name}"


def test_the_operator_image_has_no_torch_and_runs_as_a_numeric_non_root_user():
    steps = instructions(DOCKERFILES["operator"])
    users = [args for instruction, args in steps if instruction == "USER"]
    assert users and re.fullmatch(r"[1-9][0-9]*:[1-9][0-9]*", users[-1])
    run = " ".join(args for instruction, args in steps if instruction == "RUN")
    assert '".[operator]"' in run and "torch" not in run.replace("'torch' not in sys.modules", "")
    assert ["python", "-m", "kuberlhf_operator"] == _exec_form(steps, "ENTRYPOINT")


def test_the_operator_image_python_is_the_tested_python():
    image = next(args for instruction, args in instructions(DOCKERFILES["operator"]) if instruction == "ARG")
    tag = image.split(":", 1)[1]
    assert tag.startswith(f"{sys.version_info.major}.{sys.version_info.minor}."), tag


def test_the_trainer_image_prebuilds_the_deepspeed_ops_the_hybrid_engine_uses():
    # The CUDA accelerator's builders (imported from their modules: here the accelerator is the CPU).
    from deepspeed.ops.op_builder.cpu.cpu_adam import CPUAdamBuilder  # ZeRO offload; shared with the CPU
    from deepspeed.ops.op_builder.fused_adam import FusedAdamBuilder
    from deepspeed.ops.op_builder.transformer_inference import InferenceBuilder  # the hybrid engine's kernels
    from deepspeed.ops.op_builder.utils import UtilsBuilder

    text = DOCKERFILES["trainer"].read_text()
    for builder in (InferenceBuilder, FusedAdamBuilder, CPUAdamBuilder, UtilsBuilder):
        assert f"{builder.BUILD_VAR}=1" in text, builder.BUILD_VAR
    assert "ds_report" in text and "--no-build-isolation" in text
    user = [args for instruction, args in instructions(DOCKERFILES["trainer"]) if instruction == "USER"][-1]
    assert user == "1000:1000"  # the RLHFJob's default securityContext (spec.securityContext)


def test_the_trainer_image_serves_the_mpijob_defaults():
    from kuberlhf_operator.api import MPISpec

    defaults = MPISpec()
    text = DOCKERFILES["trainer"].read_text()
    sshd = (IMAGES / "trainer" / "sshd_config").read_text()
    config_path = defaults.sshd_command[defaults.sshd_command.index("-f") + 1]
    assert defaults.sshd_command[0] == "/usr/sbin/sshd" and "openssh-server" in text
    assert "/home/mpiuser/.sshd_config" == config_path and config_path in text
    assert f"HostKey {defaults.ssh_auth_mount_path}/id_rsa" in sshd
    assert "openmpi-bin" in text and "mpi4py" in text


def _exec_form(steps: list[tuple[str, str]], name: str) -> list[str]:
    import json

    return json.loads([args for instruction, args in steps if instruction == name][-1])


@pytest.mark.parametrize("command", [
    [sys.executable, "-m", "kuberlhf_operator", "--help"],   # the operator image's entrypoint
    [sys.executable, "-m", "kuberlhf_trainer", "--help"],    # what torchrun / deepspeed start
    [str(VENV_BIN / "kuberlhf"), "--help"],                  # the trainer image's CMD
    [str(VENV_BIN / "torchrun"), "--help"],                  # PyTorchJob pods
    [str(VENV_BIN / "deepspeed"), "--help"],                 # the MPIJob launcher
], ids=["operator", "trainer-module", "kuberlhf", "torchrun", "deepspeed"])
def test_the_commands_the_images_run_exist_and_start(command):
    result = subprocess.run(command, capture_output=True, text=True, timeout=120,
                            env={"PATH": str(VENV_BIN) + ":/usr/bin:/bin", "DS_ACCELERATOR": "cpu"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert "usage" in result.stdout.lower()


@pytest.mark.parametrize("image", sorted(EXTRAS))
def test_every_dependency_the_image_installs_is_pinned_to_the_tested_version(image):
    pinned = pins()
    extra = EXTRAS[image]
    wanted = [Requirement(r) for r in requires("kuberlhf")]
    direct = [r for r in wanted if r.marker is None or r.marker.evaluate({"extra": extra})]
    for req in direct:
        name = req.name.lower().replace("_", "-")
        assert name in pinned, f"{image}: {name} is not pinned in {[str(c.relative_to(REPO)) for c in CONSTRAINTS]}"
        assert req.specifier.contains(pinned[name]), f"{name}=={pinned[name]} breaks pyproject's {req}"
        assert version(req.name) == pinned[name], f"{name}: pinned {pinned[name]}, tests run {version(req.name)}"


def test_hadolint_passes():
    hadolint = VENV_BIN / "hadolint"
    assert hadolint.exists(), "hadolint is missing: run hack/install-test-tools.sh"
    result = subprocess.run([str(hadolint), *map(str, DOCKERFILES.values())], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_every_package_a_dockerfile_names_is_pinned(image):
    """`pip install NAME` in a RUN line: pinned, and at the tested version where the tests use it."""
    from importlib.metadata import PackageNotFoundError

    pinned = pins()
    runs = " ".join(args for instruction, args in instructions(DOCKERFILES[image]) if instruction == "RUN")
    named, installs = set(), 0
    for command in runs.split("&&"):
        words = shlex.split(command)
        if "pip" not in " ".join(words[:1]) or "install" not in words:
            continue
        installs += 1
        named |= {w.strip('"') for w in words[words.index("install") + 1:]
                  if not w.startswith("-") and not w.endswith(".txt") and not w.startswith('".')
                  and not w.startswith(".")}
    assert installs, "no pip install found"
    for name in sorted(named):
        assert name.lower() in pinned, f"{image}: {name} is not pinned"
        try:
            assert version(name) == pinned[name.lower()], f"{name}: pinned {pinned[name.lower()]}, tests run {version(name)}"
        except PackageNotFoundError:
            pass  # only the image uses it (mpi4py)
