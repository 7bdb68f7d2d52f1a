"""A test cluster with the real parts, on loopback: what a kuberlhf stage meets in a real cluster.

On top of etcd + kube-apiserver (`ControlPlane`, tests/support/controlplane.py) it runs

- kube-controller-manager: garbage collector, Job controller (the MPIJob launcher is a batch
  Job), namespaces, service accounts, resource quotas, claims and volumes, disruption budgets;
- kube-scheduler: binds pods to nodes, or leaves them Pending with FailedScheduling;
- KWOK, the one test double: it plays the kubelet of a few fake nodes (GPU and CPU capacity)
  and moves pods through the lives the KWOK Stages in kwok_stages.yaml describe, chosen per pod
  by annotations (see `pod_exits`, `pod_pending`, `KubeCluster.finish_pod`, `.evict_pod`);
- the real Kubeflow training-operator (PyTorchJob only: its MPIJob v1 CRD conflicts with
  mpi-operator's v2beta1) with its validating webhook, and the real mpi-operator.

All binaries are built from the Go module proxy by hack/build-control-plane.sh; this module
never builds anything and fails (never skips) when one is missing.

Start-up wiring, each for a reason found in the components' source:

- The training-operator registers its controllers only after its certificate rotator is ready
  (cmd/training-operator.v1/main.go, v1.9.4). The rotator (open-policy-agent/cert-controller
  v0.16.0) keeps a Secret's CA and serving certificate if they are valid for the names it checks,
  injects the CA into the ValidatingWebhookConfiguration we create (pointing at 127.0.0.1, which
  the certificate also covers), and waits for `tls.crt` in its hard-coded cert dir — which a
  kubelet would fill by mounting the Secret. We write the files ourselves: the webhook server
  reads them from $TMPDIR/k8s-webhook-server/serving-certs (a dir of this cluster's own), the
  rotator only checks that /tmp/k8s-webhook-server/serving-certs/tls.crt exists.
- mpi-operator always takes a leader Lease (in the namespace `mpi-operator`, created here) and
  serves its health check on a hard-coded :8080, so two clusters on one machine would collide:
  a machine-wide lock file makes a second test session wait for the first one's mpi-operator.
- The garbage collector learns resource types by discovery every 30 s, so every CRD whose
  objects own or are owned by others is installed before kube-controller-manager starts.
- With kube-controller-manager creating each namespace's `default` ServiceAccount, the
  apiserver runs the ServiceAccount admission plugin as real clusters do (`ControlPlane` turns
  it off); `create_namespace` waits for that ServiceAccount, as pods are refused without it.

    with KubeCluster() as cluster:
        ns = cluster.create_namespace()
        cluster.kubectl("-n", ns, "get", "pods")
"""

from __future__ import annotations

import base64
import datetime
import fcntl
import ipaddress
import json
import os
import signal
import socket
import ssl
import threading
import time
import urllib.request
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import yaml

from tests.support.controlplane import (
    BINARIES,
    CLUSTER_BINARIES,
    ControlPlane,
    ControlPlaneError,
    Tools,
    _Process,
    free_port,
    locate_tools,
)

STAGES_FILE = Path(__file__).with_name("kwok_stages.yaml")
START_TIMEOUT_S = 120  # 10-20 s here; generous for a loaded 2-core CI machine
SUPERVISE_EVERY_S = 1.0

# Pod annotations the KWOK Stages act on (kwok_stages.yaml says what each does).
EXIT_CODE = "kwok.kuberlhf.io/exit-code"
TERMINATION_MESSAGE = "kwok.kuberlhf.io/termination-message"
TERMINATED_REASON = "kwok.kuberlhf.io/reason"
RUN_FOR = "kwok.kuberlhf.io/run-for"
PENDING_REASON = "kwok.kuberlhf.io/pending-reason"
PENDING_MESSAGE = "kwok.kuberlhf.io/pending-message"
EVICT = "kwok.kuberlhf.io/evict"
# The message the kubelet's eviction manager writes (pkg/kubelet/eviction/helpers.go).
NODE_PRESSURE_MESSAGE = "The node was low on resource: memory. "

# PersistentVolumes made for a test's namespace carry it (they are cluster-wide).
VOLUME_NAMESPACE_LABEL = "kuberlhf.io/test-namespace"

# Nodes KWOK manages carry this annotation (and kwok runs with the matching selector).
KWOK_NODE_ANNOTATION = ("kwok.x-k8s.io/node", "fake")

# Controllers of kube-controller-manager that a stage's life touches; the rest (deployments,
# daemonsets, node IPAM, ...) would only cost CPU.
KCM_CONTROLLERS = (
    "garbage-collector-controller",          # ownerReferences: deleting an owner deletes dependents
    "job-controller",                        # batch Jobs get pods (the MPIJob launcher)
    "ttl-after-finished-controller",
    "namespace-controller",                  # deleting a namespace deletes its contents
    "serviceaccount-controller",             # each namespace's `default` ServiceAccount
    "serviceaccount-token-controller",
    "root-ca-certificate-publisher-controller",
    "resourcequota-controller",              # quota usage: without it every quota'd create is refused
    "pod-garbage-collector-controller",
    "node-lifecycle-controller",             # lifts the not-ready taint admission puts on new nodes
    "disruption-controller",                 # PodDisruptionBudgets, read by the Eviction API
    "persistentvolume-binder-controller",    # claims bind to volumes
    "persistentvolumeclaim-protection-controller",  # deleted claims go away once unused
    "persistentvolume-protection-controller",
)

# training-operator names it uses (cmd/training-operator.v1/main.go, pkg/cert/cert.go, v1.9.4).
TRAINING_OPERATOR_NAMESPACE = "kubeflow"
WEBHOOK_SECRET = "training-operator-webhook-cert"
WEBHOOK_CONFIGURATION = "validator.training-operator.kubeflow.org"
WEBHOOK_DNS_NAME = "training-operator.kubeflow.svc"  # <--webhook-service-name>.<namespace>.svc
WEBHOOK_CA_NAME = "training-operator-ca"             # the rotator checks the CA is valid for it
ROTATOR_CERT_DIR = Path("/tmp/k8s-webhook-server/serving-certs")
# Upstream's Deployment runs it with its defaults: one reconcile at a time and 20 requests/s
# (burst 30). Each PyTorchJob pass makes several writes (pod, Service, status, events), so at those
# settings a test with a dozen jobs waits seconds for pods; bench/operator_throughput.py measures both.
TRAINING_OPERATOR_TUNING = ("--controller-threads=4", "--kube-api-qps=100", "--kube-api-burst=200")
# mpi-operator (cmd/mpi-operator/app/server.go, v0.8.0).
MPI_OPERATOR_LOCK_NAMESPACE = "mpi-operator"
MPI_OPERATOR_HEALTH_PORT = 8080
PORT_LOCK_TIMEOUT_S = 15 * 60
PORT_LOCK_DIR = Path("/tmp")  # machine-wide, like the port (not $TMPDIR, which may differ per session)


@dataclass(frozen=True)
class FakeNode:
    """A node KWOK plays the kubelet for. Capacity is what the scheduler fits pods into."""

    name: str
    cpu: str = "32"
    memory: str = "256Gi"
    gpus: int = 0
    labels: dict[str, str] = field(default_factory=dict)

    def manifest(self) -> dict[str, Any]:
        capacity = {"cpu": self.cpu, "memory": self.memory, "pods": "110"}
        if self.gpus:
            capacity["nvidia.com/gpu"] = str(self.gpus)
        key, value = KWOK_NODE_ANNOTATION
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.name,
                "annotations": {key: value},
                "labels": {"kubernetes.io/hostname": self.name, "kubernetes.io/os": "linux",
                           "kubernetes.io/arch": "amd64", "type": "kwok", **self.labels},
            },
            # A kubelet registers its node with its capacity; so do we (KWOK keeps it).
            "status": {"capacity": capacity, "allocatable": capacity},
        }


# Two GPU nodes (8 GPUs each) and a CPU node: a multi-node stage fits, 9+ GPUs per pod does not.
DEFAULT_NODES = (
    FakeNode("kwok-gpu-0", gpus=8),
    FakeNode("kwok-gpu-1", gpus=8),
    FakeNode("kwok-cpu-0", cpu="16", memory="64Gi"),
)


def pod_exits(code: int = 0, message: str = "", after: str | None = None,
              reason: str | None = None) -> dict[str, str]:
    """Annotations that make a pod run, then end with exit code `code` (Succeeded if 0, else
    Failed) and termination message `message`; `after` is how long it runs (a Go duration)."""
    annotations = {EXIT_CODE: str(code)}
    if message:
        annotations[TERMINATION_MESSAGE] = message
    if after:
        annotations[RUN_FOR] = after
    if reason:
        annotations[TERMINATED_REASON] = reason
    return annotations


def ends_now(annotations: dict[str, str]) -> dict[str, str | None]:
    """`annotations` as a merge patch for a running pod that also removes a `run-for` its template
    set (KWOK would otherwise wait that long before ending it)."""
    return {RUN_FOR: None, **annotations}


def pod_pending(reason: str = "ImagePullBackOff", message: str = "") -> dict[str, str]:
    """Annotations that keep a scheduled pod Pending, its containers waiting with `reason`."""
    return {PENDING_REASON: reason, **({PENDING_MESSAGE: message} if message else {})}


def webhook_certs(cert_dir: Path) -> dict[str, bytes]:
    """CA and serving certificate for the training-operator's webhook, in the rotator's format.

    cert-controller accepts a Secret when its CA is valid for the DNS name `training-operator-ca`
    and its certificate for `training-operator.kubeflow.svc`, both beyond its 90-day look-ahead,
    and it parses the CA key as PKCS#1 RSA. The certificate also covers 127.0.0.1, where the
    apiserver calls the webhook. Returns the Secret's data and writes tls.crt/tls.key."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def build(subject: str, sans: list, key, issuer: str, signer, ca: bool) -> bytes:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=3650 if ca else 730))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        return builder.sign(signer, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)

    def pkcs1(key) -> bytes:
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                 serialization.NoEncryption())

    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_crt = build(WEBHOOK_CA_NAME, [x509.DNSName(WEBHOOK_CA_NAME)], ca_key, WEBHOOK_CA_NAME, ca_key, ca=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    sans = [x509.DNSName(WEBHOOK_DNS_NAME), x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    crt = build(WEBHOOK_DNS_NAME, sans, key, WEBHOOK_CA_NAME, ca_key, ca=False)
    data = {"ca.crt": ca_crt, "ca.key": pkcs1(ca_key), "tls.crt": crt, "tls.key": pkcs1(key)}
    cert_dir.mkdir(parents=True, exist_ok=True)
    for name in ("tls.crt", "tls.key"):
        (cert_dir / name).write_bytes(data[name])
        (cert_dir / name).chmod(0o600)
    return data


def _ensure_rotator_cert_file(tls_crt: bytes) -> None:
    """The rotator waits for a tls.crt at its hard-coded path; another session's is as good."""
    target = ROTATOR_CERT_DIR / "tls.crt"
    if target.exists():
        return
    ROTATOR_CERT_DIR.mkdir(parents=True, exist_ok=True)
    tmp = ROTATOR_CERT_DIR / f".tls.crt.{os.getpid()}"
    tmp.write_bytes(tls_crt)
    os.replace(tmp, target)


class KubeCluster(ControlPlane):
    """ControlPlane plus kube-controller-manager, kube-scheduler, KWOK, training-operator and
    mpi-operator. The Kubeflow CRDs, KWOK's Stage CRD and `crds` are installed before the
    controllers start; `nodes` are the fake nodes."""

    def __init__(self, tools: Tools | None = None, workdir: Path | None = None,
                 nodes: Sequence[FakeNode] = DEFAULT_NODES, crds: Sequence[Path] = (),
                 controllers: Sequence[str] = KCM_CONTROLLERS,
                 training_operator_args: Sequence[str] = TRAINING_OPERATOR_TUNING):
        super().__init__(tools or locate_cluster_tools(), workdir)
        self.training_operator_args = list(training_operator_args)
        self.nodes = list(nodes)
        self.extra_crds = list(crds)
        self.kcm_controllers = list(controllers)
        self.components: dict[str, _Process] = {}
        self.started_in_s = 0.0
        self._ports: dict[str, int] = {}
        self._port_lock: Any = None
        self._api: Any = None  # kubernetes.client.ApiClient, made on first use
        self.restarts: dict[str, int] = {}  # components started again after they exited (see _supervise)
        self._stopping = threading.Event()
        self._supervisor: threading.Thread | None = None

    # ---- lifecycle

    def start(self) -> "KubeCluster":
        began = time.monotonic()
        self._ports = {name: free_port() for name in
                       ("kube-controller-manager", "kube-scheduler", "training-operator-probe", "webhook")}
        super().start()  # etcd + kube-apiserver
        try:
            self._start_components(["kube-scheduler"])  # needs nothing more: start it meanwhile
            self._prepare_api_objects()
            self._start_components()
            self._wait_until_ready()
        except BaseException:
            self.stop()
            raise
        self.started_in_s = time.monotonic() - began
        self._supervisor = threading.Thread(target=self._supervise, daemon=True, name="kube-cluster-supervisor")
        self._supervisor.start()
        return self

    def _supervise(self) -> None:
        """Start again a component that exited, as the kubelet restarts a crashed controller's pod.
        mpi-operator, for one, exits when it cannot renew its leader lease for 5 s (an apiserver
        restart in a chaos test); `restarts` counts what was started again."""
        while not self._stopping.wait(SUPERVISE_EVERY_S):
            for name, proc in list(self.components.items()):
                if not proc.running() and not self._stopping.is_set():
                    self.restarts[name] = self.restarts.get(name, 0) + 1
                    proc.start()

    def stop(self) -> None:
        """Stop the controllers (all at once: each may take a moment), then the control plane."""
        self._stopping.set()
        if self._supervisor is not None:
            self._supervisor.join(timeout=10)
        procs = [p for p in self.components.values() if p.popen is not None]
        for proc in procs:
            try:
                os.killpg(proc.popen.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for proc in procs:
            proc.stop(timeout=10)
        if self._api is not None:
            self._api.close()
            self._api = None
        if self._port_lock is not None:
            self._port_lock.close()  # releases the flock
            self._port_lock = None
        super().stop()

    def logs(self, lines: int = 40) -> str:
        parts = [super().logs(lines)]
        for proc in self.components.values():
            parts.append(f"----- {proc.name} ({proc.log_path}) -----\n{proc.tail(lines)}")
        return "\n".join(parts)

    def _apiserver_args(self) -> list[str]:
        # ServiceAccount admission back on: kube-controller-manager creates the accounts.
        return [a for a in super()._apiserver_args() if not a.startswith("--disable-admission-plugins=")]

    # ---- API objects the components expect to find

    def _prepare_api_objects(self) -> None:
        self.install_crds([*self.tools.crds, self.tools.kwok_stage_crd, *self.extra_crds])
        stages = list(yaml.safe_load_all(STAGES_FILE.read_text()))
        namespaces = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}
                      for ns in (TRAINING_OPERATOR_NAMESPACE, MPI_OPERATOR_LOCK_NAMESPACE)]
        # One kubectl call for the lot (each costs ~0.5 s). KWOK is not running yet, so it
        # never sees a node or pod it has no stage for.
        self._apply(*stages, *namespaces, *[node.manifest() for node in self.nodes], *self._webhook_objects())

    def _webhook_objects(self) -> list[dict[str, Any]]:
        tmpdir = self.workdir / "training-operator-tmp"
        data = webhook_certs(tmpdir / "k8s-webhook-server" / "serving-certs")
        _ensure_rotator_cert_file(data["tls.crt"])
        secret = {
            "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": WEBHOOK_SECRET, "namespace": TRAINING_OPERATOR_NAMESPACE},
            "data": {k: base64.b64encode(v).decode() for k, v in data.items()},
        }
        # Upstream's manifest (manifests/base/webhook/manifests.yaml) with only PyTorchJob's
        # webhook (the only scheme enabled) and a URL instead of a Service: there is no
        # kube-proxy. The rotator fills in caBundle.
        url = f"https://127.0.0.1:{self._ports['webhook']}/validate-kubeflow-org-v1-pytorchjob"
        return [secret, {
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": WEBHOOK_CONFIGURATION},
            "webhooks": [{
                "name": "validator.pytorchjob.training-operator.kubeflow.org",
                "admissionReviewVersions": ["v1"], "sideEffects": "None", "failurePolicy": "Fail",
                "clientConfig": {"url": url},
                "rules": [{"apiGroups": ["kubeflow.org"], "apiVersions": ["v1"],
                           "operations": ["CREATE", "UPDATE"], "resources": ["pytorchjobs"]}],
            }],
        }]

    def _apply(self, *objs: dict[str, Any]) -> None:
        # kubectl applies a List's items in order: namespaces before what lives in them.
        self.kubectl("apply", "--server-side", "-f", "-",
                     input=json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objs)}))

    # ---- components

    def _start_components(self, names: Sequence[str] | None = None) -> None:
        """Start the named components (default: all not yet started)."""
        env = dict(os.environ, KUBECONFIG=self.kubeconfig)  # mpi-operator prefers $KUBECONFIG to flags
        for name, args, extra_env in self._component_commands():
            if name in self.components or (names is not None and name not in names):
                continue
            if name == "mpi-operator":
                self._claim_mpi_operator_port()
            proc = _Process(name, args, self.log_dir / f"{name}.log", env={**env, **extra_env})
            self.components[name] = proc
            proc.start()

    def _component_commands(self) -> list[tuple[str, list[str], dict[str, str]]]:
        bin_ = self.tools.binary
        kcfg = f"--kubeconfig={self.kubeconfig}"
        kwok_config = self.workdir / "kwok.yaml"
        # An explicit, empty config (kwok's defaults; the stages are Stage objects in the API):
        # kwok would otherwise read ~/.kwok/kwok.yaml.
        kwok_config.write_text("")
        key, value = KWOK_NODE_ANNOTATION
        return [
            ("kube-controller-manager", [
                str(bin_("kube-controller-manager")), kcfg,
                "--bind-address=127.0.0.1", f"--secure-port={self._ports['kube-controller-manager']}",
                "--leader-elect=false",
                f"--controllers={','.join(self.kcm_controllers)}",
                f"--service-account-private-key-file={self.certs['sa_key']}",
                f"--root-ca-file={self.certs['ca_crt']}",
                "--use-service-account-credentials=false",
                "--kube-api-qps=100", "--kube-api-burst=200",  # default 20/30 throttles busy tests
                "--node-monitor-period=1s",  # default 5s: how soon a Ready node loses its taint
            ], {}),
            ("kube-scheduler", [
                str(bin_("kube-scheduler")), kcfg,
                "--bind-address=127.0.0.1", f"--secure-port={self._ports['kube-scheduler']}",
                "--leader-elect=false",
            ], {}),
            ("kwok", [
                str(bin_("kwok")), kcfg, f"--config={kwok_config}",
                f"--manage-nodes-with-annotation-selector={key}={value}",
                "--enable-crds=Stage",  # pod and node lives come from Stage objects in the API
                "--node-lease-duration-seconds=40",
                # Addresses the nodes and pods report (nothing routes to them).
                "--node-ip=10.240.0.1", "--cidr=10.244.0.1/16",
            ], {}),
            ("training-operator", [
                str(bin_("training-operator")),
                "--enable-scheme=pytorchjob",
                f"--webhook-server-port={self._ports['webhook']}",
                f"--health-probe-bind-address=127.0.0.1:{self._ports['training-operator-probe']}",
                "--metrics-bind-address=0",  # off: its default :8080 is mpi-operator's fixed port
                "--zap-log-level=info",
                *self.training_operator_args,
            ], {
                # The webhook server reads its certificate from $TMPDIR/k8s-webhook-server/...
                "TMPDIR": str(self.workdir / "training-operator-tmp"),
                "MY_POD_NAMESPACE": TRAINING_OPERATOR_NAMESPACE,
            }),
            ("mpi-operator", [
                str(bin_("mpi-operator")),
                f"--lock-namespace={MPI_OPERATOR_LOCK_NAMESPACE}",
                "--kube-api-qps=50", "--kube-api-burst=100",  # default 5/10
            ], {}),
        ]

    def _claim_mpi_operator_port(self) -> None:
        """Hold the machine-wide lock on mpi-operator's fixed health port, waiting for another
        session's cluster if need be, then check nothing else listens there."""
        lock_path = PORT_LOCK_DIR / f"kuberlhf-mpi-operator-port-{MPI_OPERATOR_HEALTH_PORT}.lock"
        self._port_lock = open(lock_path, "a+")
        deadline = time.monotonic() + PORT_LOCK_TIMEOUT_S
        while True:
            try:
                fcntl.flock(self._port_lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise ControlPlaneError(
                        f"waited {PORT_LOCK_TIMEOUT_S}s for {lock_path}: another test session's "
                        f"mpi-operator holds port {MPI_OPERATOR_HEALTH_PORT} (hard-coded upstream)") from None
                time.sleep(1)
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("0.0.0.0", MPI_OPERATOR_HEALTH_PORT))
            except OSError as e:
                raise ControlPlaneError(
                    f"port {MPI_OPERATOR_HEALTH_PORT} is in use by another program; mpi-operator "
                    f"v0.8.0 serves its health check there and cannot be told otherwise ({e})") from None

    # ---- readiness

    def _wait_until_ready(self) -> None:
        """Poll every component's readiness check together; fail fast if one exits."""
        checks: dict[str, Callable[[], bool]] = {
            "kube-controller-manager": lambda: (self._https_ok("kube-controller-manager", "/healthz")
                                                and self._default_service_account("default")),
            "kube-scheduler": lambda: self._https_ok("kube-scheduler", "/readyz"),
            "kwok": self._nodes_ready,
            "training-operator": self._training_operator_ready,
            "mpi-operator": self._mpi_operator_leading,
        }
        deadline = time.monotonic() + START_TIMEOUT_S
        last: dict[str, str] = {}
        while checks:
            for name, proc in self.components.items():
                if not proc.running():
                    raise ControlPlaneError(f"{name} exited during start-up\n{self.logs()}")
            for name in list(checks):
                try:
                    if checks[name]():
                        del checks[name]
                except Exception as e:  # not up yet: connection refused, 404, ...
                    last[name] = repr(e)
            if not checks:
                return
            if time.monotonic() > deadline:
                waiting = "; ".join(f"{n} ({last.get(n, 'not yet')})" for n in sorted(checks))
                raise ControlPlaneError(f"not ready after {START_TIMEOUT_S}s: {waiting}\n{self.logs()}")
            time.sleep(0.2)

    def _https_ok(self, component: str, path: str) -> bool:
        # Their serving certificates are self-signed at start; only the status matters here.
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        url = f"https://127.0.0.1:{self._ports[component]}{path}"
        with urllib.request.urlopen(url, timeout=2, context=ctx) as resp:
            return resp.status == 200

    def _training_operator_ready(self) -> bool:
        # 200 once the certificates are in place and the webhook server listens; the
        # controllers are registered at the same moment (both wait on certsReady).
        url = f"http://127.0.0.1:{self._ports['training-operator-probe']}/readyz"
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200

    def _client(self):
        if self._api is None:
            self._api = self.api_client()
        return self._api

    def _core(self):
        from kubernetes import client

        return client.CoreV1Api(self._client())

    def _default_service_account(self, namespace: str) -> bool:
        return any(sa.metadata.name == "default"
                   for sa in self._core().list_namespaced_service_account(namespace).items)

    def _nodes_ready(self) -> bool:
        """Every fake node Ready (KWOK) and without the not-ready taint (node lifecycle)."""
        names = {n.name for n in self.nodes}
        ready = {n.metadata.name for n in self._core().list_node().items
                 if any(c.type == "Ready" and c.status == "True" for c in (n.status.conditions or []))
                 and not any(t.key.startswith("node.kubernetes.io/") for t in (n.spec.taints or []))}
        return names <= ready

    def _mpi_operator_leading(self) -> bool:
        from kubernetes import client

        leases = client.CoordinationV1Api(self._client())
        return bool(leases.read_namespaced_lease("mpi-operator", MPI_OPERATOR_LOCK_NAMESPACE).spec.holder_identity)

    # ---- helpers for tests

    def create_namespace(self, prefix: str = "t") -> str:
        """A fresh namespace, returned once its `default` ServiceAccount exists (pods need it)."""
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        self._core().create_namespace({"metadata": {"name": name}})
        deadline = time.monotonic() + 30
        while not self._default_service_account(name):
            if time.monotonic() > deadline:
                raise ControlPlaneError(f"no default ServiceAccount in {name} after 30s\n{self.logs()}")
            time.sleep(0.05)
        return name

    def delete_namespace(self, namespace: str) -> None:
        """Delete a test's namespace and the volumes made for it, without waiting: the namespace
        controller deletes what is in it, and the pods stop holding the fake nodes' capacity."""
        from kubernetes import client

        core = self._core()
        try:
            core.delete_namespace(namespace)
        except client.ApiException as e:
            if e.status != 404:
                raise
        core.delete_collection_persistent_volume(label_selector=f"{VOLUME_NAMESPACE_LABEL}={namespace}")

    def provide_volume(self, namespace: str, claim: str, size: str = "1Gi",
                       access_modes: Sequence[str] = ("ReadWriteMany",)) -> str:
        """A PersistentVolume reserved for the claim `claim` (which may not exist yet, e.g. one the
        operator makes from a claimTemplate), as a provisioner would make one: the claim binds to it.
        A hostPath under this cluster's work dir; nothing mounts it (KWOK runs no containers)."""
        name = f"{namespace}-{claim}"[:253]
        self._core().create_persistent_volume({
            "metadata": {"name": name, "labels": {VOLUME_NAMESPACE_LABEL: namespace}},
            "spec": {"capacity": {"storage": size}, "accessModes": list(access_modes), "storageClassName": "",
                     "persistentVolumeReclaimPolicy": "Retain",  # delete_namespace removes it
                     "hostPath": {"path": str(self.workdir / "volumes" / name)},
                     "claimRef": {"namespace": namespace, "name": claim}},
        })
        return name

    def create_claim(self, namespace: str, claim: str, size: str = "1Gi",
                     access_modes: Sequence[str] = ("ReadWriteMany",)) -> None:
        """A claim bound to a volume of its own (see provide_volume)."""
        self.provide_volume(namespace, claim, size, access_modes)
        self._core().create_namespaced_persistent_volume_claim(namespace, {
            "metadata": {"name": claim},
            "spec": {"accessModes": list(access_modes), "storageClassName": "", "resources": {"requests": {"storage": size}}},
        })

    def finish_pod(self, namespace: str, name: str, code: int, message: str = "") -> None:
        """End a running pod now with exit code `code` and termination message `message`: the
        kuberlhf-pod-exit Stage writes the status, as the kubelet would when its container exits."""
        annotations = ends_now(pod_exits(code, message))
        self._core().patch_namespaced_pod(name, namespace, {"metadata": {"annotations": annotations}})

    @contextmanager
    def paused(self, component: str) -> Iterator[None]:
        """Freeze a component (SIGSTOP) for the block, e.g. the training-operator while several pods
        end: on a real cluster the kubelets report exits from many nodes within the moment the
        controller takes to react; here KWOK and the controller share one machine and would race."""
        pid = self.components[component].popen.pid
        os.kill(pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(pid, signal.SIGCONT)

    def evict_pod(self, namespace: str, name: str, message: str = NODE_PRESSURE_MESSAGE) -> None:
        """The kubelet evicts a running pod under node pressure (phase Failed, reason Evicted,
        DisruptionTarget). For a drain or preemption use the real Eviction API instead:
        `CoreV1Api.create_namespaced_pod_eviction`."""
        self._core().patch_namespaced_pod(name, namespace, {"metadata": {"annotations": {EVICT: message}}})


def locate_cluster_tools() -> Tools:
    """The tools the test cluster needs, or ToolsMissing naming what to build."""
    return locate_tools(binaries=(*BINARIES, *CLUSTER_BINARIES), files=("kwok-stages.yaml",))
