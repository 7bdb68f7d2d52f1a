"""A real etcd + kube-apiserver on loopback, for integration tests.

The binaries come from ``hack/build-control-plane.sh`` (built from the Go module
proxy into a cache outside the repository); this module never builds anything.
Where the cache is and which versions it holds is defined once, in
``hack/tools-env.sh`` / ``hack/control-plane/versions.env``; we run that script
and read its exports rather than re-deriving the paths here.

What runs: etcd and kube-apiserver only (like controller-runtime's envtest). No
controller-manager, scheduler or kubelet: no garbage collection, no pods run. The
test cluster with those parts (and the Kubeflow controllers, and KWOK for the
kubelet) builds on this class: tests/support/kube_cluster.py.

    cp = ControlPlane().start()
    try:
        cp.install_crds(cp.tools.crds)
        cp.kubectl("get", "namespaces")
    finally:
        cp.stop()
"""

from __future__ import annotations

import datetime
import json
import os
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

REPO_ROOT = Path(__file__).resolve().parents[2]
TOOLS_ENV_SCRIPT = REPO_ROOT / "hack" / "tools-env.sh"
BUILD_HINT = "Build them with: hack/build-control-plane.sh (about 10 minutes the first time)"
BINARIES = ("etcd", "kube-apiserver", "kubectl", "helm")
# The rest of the test cluster (tests/support/kube_cluster.py), built by the same script.
CLUSTER_BINARIES = ("kube-controller-manager", "kube-scheduler", "kwok", "training-operator", "mpi-operator")
# The issuer is only a name that tokens carry and the apiserver checks.
SA_ISSUER = "https://kubernetes.default.svc.cluster.local"
START_TIMEOUT_S = 90  # ~3 s here; generous for a loaded 2-core CI machine


class ToolsMissing(RuntimeError):
    """The control-plane binaries or CRDs have not been built."""


class ControlPlaneError(RuntimeError):
    """A process did not start or did not become healthy."""


class CommandFailed(subprocess.CalledProcessError):
    """CalledProcessError whose message includes the command's stderr."""

    def __str__(self) -> str:
        return f"{super().__str__()}\nstderr:\n{self.stderr}"


# --------------------------------------------------------------------- tools


@dataclass(frozen=True)
class Tools:
    """Paths and pinned versions of the built control plane."""

    bin_dir: Path
    crds_dir: Path
    kubernetes_version: str
    etcd_version: str
    helm_version: str

    def binary(self, name: str) -> Path:
        return self.bin_dir / name

    @property
    def pytorchjob_crd(self) -> Path:
        return self.crds_dir / "pytorchjobs.yaml"

    @property
    def mpijob_crd(self) -> Path:
        return self.crds_dir / "mpijobs.yaml"

    @property
    def crds(self) -> list[Path]:
        return [self.pytorchjob_crd, self.mpijob_crd]

    @property
    def kwok_stage_crd(self) -> Path:
        """KWOK's Stage CRD (kwok.x-k8s.io/v1alpha1), for the test cluster."""
        return self.crds_dir / "kwok-stages.yaml"


def _tools_env() -> dict[str, str]:
    """The `export KEY=VALUE` lines printed by hack/tools-env.sh, as a dict."""
    out = subprocess.run(
        ["bash", str(TOOLS_ENV_SCRIPT)], check=True, capture_output=True, text=True
    ).stdout
    env = {}
    for line in out.splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        if key != "PATH":
            env[key] = shlex.split(value)[0]
    return env


def locate_tools(binaries: Sequence[str] = BINARIES, files: Sequence[str] = ()) -> Tools:
    """Find the built binaries and CRDs, or raise ToolsMissing saying how to build them.

    `binaries` and `files` (paths relative to the crds directory) are what the caller needs
    beyond the Kubeflow CRDs; by default the control plane's."""
    env = _tools_env()
    tools = Tools(
        bin_dir=Path(env["KUBERLHF_TOOLS_BIN"]),
        crds_dir=Path(env["KUBERLHF_CRDS_DIR"]),
        kubernetes_version=env["KUBERNETES_VERSION"],
        etcd_version=env["ETCD_VERSION"],
        helm_version=env["HELM_VERSION"],
    )
    wanted = [tools.binary(b) for b in binaries] + tools.crds + [tools.crds_dir / f for f in files]
    missing = [str(p) for p in wanted if not p.exists()]
    if missing:
        raise ToolsMissing(
            "The test control plane is not built; missing:\n  "
            + "\n  ".join(missing)
            + f"\n{BUILD_HINT}"
        )
    return tools


# ------------------------------------------------------------------- helpers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_pem(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    path.chmod(0o600)
    return path


def make_certs(cert_dir: Path) -> dict[str, Path]:
    """A CA, a serving cert for 127.0.0.1/localhost signed by it, and an RSA
    key for signing service-account tokens. Clients verify TLS against the CA."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    def key_pem(key) -> bytes:
        return key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def sign(builder, key, ca_key, ca: bool) -> bytes:
        # Key identifiers and key usage: strict verifiers (Python >= 3.13) need them.
        now = datetime.datetime.now(datetime.timezone.utc)
        usage = dict.fromkeys(
            ["digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
             "key_agreement", "key_cert_sign", "crl_sign", "encipher_only", "decipher_only"], False)
        usage.update(key_cert_sign=ca, crl_sign=ca, digital_signature=True)
        builder = (
            builder.public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=7))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(**usage), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        )
        return builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_crt = sign(x509.CertificateBuilder().subject_name(name("kuberlhf-test-ca"))
                  .issuer_name(name("kuberlhf-test-ca")), ca_key, ca_key, ca=True)
    serving_key = ec.generate_private_key(ec.SECP256R1())
    sans = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    serving_crt = sign(
        x509.CertificateBuilder().subject_name(name("kube-apiserver")).issuer_name(name("kuberlhf-test-ca"))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False),
        serving_key, ca_key, ca=False)
    # Service-account tokens are signed RS256 by default: use an RSA key.
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert_dir.mkdir(parents=True, exist_ok=True)
    return {
        "ca_crt": _write_pem(cert_dir / "ca.crt", ca_crt),
        "serving_crt": _write_pem(cert_dir / "apiserver.crt", serving_crt),
        "serving_key": _write_pem(cert_dir / "apiserver.key", key_pem(serving_key)),
        "sa_key": _write_pem(cert_dir / "sa-signer.key", key_pem(sa_key)),
    }


class _Process:
    """A child process in its own process group, logging to a file."""

    def __init__(self, name: str, args: Sequence[str], log_path: Path, env: dict[str, str] | None = None):
        self.name, self.args, self.log_path = name, list(args), log_path
        self.env = env  # None: inherit this process's environment
        self.popen: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== start {time.strftime('%H:%M:%S')}: {shlex.join(self.args)}\n".encode())
            log.flush()
            self.popen = subprocess.Popen(
                self.args, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True, env=self.env,
            )

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM the whole group, SIGKILL what is left after `timeout`."""
        if self.popen is None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.popen.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.popen.wait(timeout=timeout)
                break
            except subprocess.TimeoutExpired:
                continue
        self.popen.wait()
        self.popen = None

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""


# -------------------------------------------------------------- control plane


class ControlPlane:
    """etcd + kube-apiserver on 127.0.0.1, with token auth and RBAC.

    After start(): `kubeconfig` (path), `server` (URL), `token` (admin, group
    system:masters), `workdir` (temp dir with logs/, certs/, etcd data).
    """

    def __init__(self, tools: Tools | None = None, workdir: Path | None = None):
        self.tools = tools or locate_tools()
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="kuberlhf-cp-"))
        self.log_dir = self.workdir / "logs"
        self.token = os.urandom(16).hex()
        self.etcd_port = self.etcd_peer_port = self.port = 0
        self.server = ""
        self.kubeconfig = str(self.workdir / "kubeconfig")
        self.certs: dict[str, Path] = {}
        self.etcd: _Process | None = None
        self.apiserver: _Process | None = None

    # ---- lifecycle

    def start(self) -> "ControlPlane":
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.certs = make_certs(self.workdir / "certs")
        try:
            self._start_etcd()
            self.port = free_port()
            self.server = f"https://127.0.0.1:{self.port}"
            self.apiserver = _Process("kube-apiserver", self._apiserver_args(), self.log_dir / "kube-apiserver.log")
            self._start_apiserver()
            self._write_kubeconfig()
        except BaseException:
            self.stop()
            raise
        return self

    def restart_apiserver(self) -> None:
        """Stop and start the apiserver on the same port against the same etcd
        (for chaos tests: clients see connection errors, then the same data)."""
        assert self.apiserver is not None, "start() first"
        self.apiserver.stop()
        self._start_apiserver()

    def stop(self) -> None:
        """Stop both processes and remove the temp dir (if we created it)."""
        for proc in (self.apiserver, self.etcd):
            if proc is not None:
                proc.stop()
        if self._own_workdir and os.environ.get("KUBERLHF_KEEP_CONTROL_PLANE_DIR") != "1":
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> "ControlPlane":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def logs(self, lines: int = 40) -> str:
        """The last lines of each process's log, for printing on failure."""
        parts = []
        for proc in (self.etcd, self.apiserver):
            if proc is not None:
                parts.append(f"----- {proc.name} ({proc.log_path}) -----\n{proc.tail(lines)}")
        return "\n".join(parts)

    # ---- etcd

    def _start_etcd(self) -> None:
        self.etcd_port, self.etcd_peer_port = free_port(), free_port()
        client = f"http://127.0.0.1:{self.etcd_port}"
        peer = f"http://127.0.0.1:{self.etcd_peer_port}"
        args = [
            str(self.tools.binary("etcd")),
            "--name=test",
            f"--data-dir={self.workdir / 'etcd'}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=test={peer}",
            "--unsafe-no-fsync=true",  # test data: durability is not worth the fsyncs
            "--log-level=warn",
        ]
        self.etcd = _Process("etcd", args, self.log_dir / "etcd.log")
        self.etcd.start()
        self._wait_healthy(self.etcd, f"{client}/health", ssl_context=None)

    # ---- kube-apiserver

    def _apiserver_args(self) -> list[str]:
        tokens = self.workdir / "tokens.csv"
        tokens.write_text(f'{self.token},admin,admin-uid,"system:masters"\n')
        tokens.chmod(0o600)
        return [
            str(self.tools.binary("kube-apiserver")),
            "--bind-address=127.0.0.1",
            f"--secure-port={self.port}",
            f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
            f"--tls-cert-file={self.certs['serving_crt']}",
            f"--tls-private-key-file={self.certs['serving_key']}",
            f"--token-auth-file={tokens}",
            "--authorization-mode=RBAC",
            # ServiceAccount tokens: TokenRequest needs issuer + signing key.
            f"--service-account-issuer={SA_ISSUER}",
            f"--service-account-key-file={self.certs['sa_key']}",
            f"--service-account-signing-key-file={self.certs['sa_key']}",
            # No controller-manager creates default ServiceAccounts, so the
            # admission plugin that requires them would reject every pod.
            "--disable-admission-plugins=ServiceAccount",
            "--service-cluster-ip-range=10.0.0.0/24",
            "--allow-privileged=true",
            # Only one apiserver, on loopback: the `kubernetes` Service endpoint
            # reconciler has nothing useful to do (and dislikes 127.0.0.1).
            "--endpoint-reconciler-type=none",
        ]

    def _start_apiserver(self) -> None:
        assert self.apiserver is not None
        self.apiserver.start()
        ctx = ssl.create_default_context(cafile=str(self.certs["ca_crt"]))
        self._wait_healthy(self.apiserver, f"{self.server}/readyz", ssl_context=ctx)

    def _wait_healthy(self, proc: _Process, url: str, ssl_context) -> None:
        """Poll `url` until it answers 200, failing fast if the process exits."""
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {self.token}"})
        deadline = time.monotonic() + START_TIMEOUT_S
        last_error = ""
        while time.monotonic() < deadline:
            if not proc.running():
                raise ControlPlaneError(f"{proc.name} exited during start-up\n{self.logs()}")
            try:
                with urllib.request.urlopen(request, timeout=5, context=ssl_context) as resp:
                    if resp.status == 200:
                        return
            except OSError as e:  # URLError/HTTPError (e.g. 500 while hooks run) are OSErrors
                last_error = str(e)
            time.sleep(0.3)
        raise ControlPlaneError(
            f"{proc.name} not healthy at {url} after {START_TIMEOUT_S}s ({last_error})\n{self.logs()}"
        )

    def _write_kubeconfig(self) -> None:
        # JSON is valid YAML, and kubectl, helm and the Python client read it.
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "test", "cluster": {
                "server": self.server, "certificate-authority": str(self.certs["ca_crt"])}}],
            "users": [{"name": "admin", "user": {"token": self.token}}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "admin"}}],
            "current-context": "test",
        }
        Path(self.kubeconfig).write_text(json.dumps(config, indent=2))

    # ---- clients

    def api_client(self, token: str | None = None):
        """A kubernetes.client.ApiClient for the admin, or for `token` (e.g. a
        ServiceAccount's, from the TokenRequest API)."""
        from kubernetes import client

        config = client.Configuration()
        config.host = self.server
        config.ssl_ca_cert = str(self.certs["ca_crt"])
        config.api_key = {"authorization": f"Bearer {token or self.token}"}
        return client.ApiClient(config)

    def _run(self, argv: list[str], check: bool, env: dict | None, input: str | None):
        result = subprocess.run(argv, capture_output=True, text=True, env=env, input=input)
        if check and result.returncode != 0:
            raise CommandFailed(result.returncode, argv, result.stdout, result.stderr)
        return result

    def kubectl(self, *args: str, check: bool = True, input: str | None = None):
        """Run the built kubectl against this control plane."""
        argv = [str(self.tools.binary("kubectl")), f"--kubeconfig={self.kubeconfig}", *args]
        return self._run(argv, check, None, input)

    def helm(self, *args: str, check: bool = True, input: str | None = None):
        """Run the built helm against this control plane, with its caches in the temp dir."""
        home = self.workdir / "helm"
        env = dict(
            os.environ,
            KUBECONFIG=self.kubeconfig,
            HELM_CACHE_HOME=str(home / "cache"),
            HELM_CONFIG_HOME=str(home / "config"),
            HELM_DATA_HOME=str(home / "data"),
        )
        return self._run([str(self.tools.binary("helm")), *args], check, env, input)

    def install_crds(self, paths: Sequence[Path | str], timeout_s: int = 60) -> list[str]:
        """Server-side apply CRD files and wait until they are Established.

        Server-side because the upstream CRDs (~600 KB) exceed the 256 KB
        last-applied annotation that client-side apply would write."""
        files = [arg for path in paths for arg in ("-f", str(path))]  # one kubectl: each costs ~0.5 s
        names = self.kubectl("apply", "--server-side", "--force-conflicts", "-o", "name", *files).stdout.split()
        self.kubectl("wait", "--for=condition=Established", f"--timeout={timeout_s}s", *names)
        return names
