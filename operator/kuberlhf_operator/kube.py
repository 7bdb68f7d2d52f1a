"""The few API calls the operator makes, on the official `kubernetes` client.

Every write here is safe to repeat: creates treat AlreadyExists as "already done" after
checking who owns the object, deletes treat NotFound as done, and the status write carries
the resourceVersion it was computed from, so a stale decision is refused (409) instead of
overwriting a newer one.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Iterable

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from .names import CHILD_KINDS, FINALIZER, GROUP, KUBEFLOW_GROUP, PLURAL, VERSION, job_labels
from .observe import KUBEFLOW_JOB_NAME_LABEL, FailureDetail, Pod, controller_ref, controller_uid, pod_failure

log = logging.getLogger(__name__)
CONFLICT, NOT_FOUND, FORBIDDEN = 409, 404, 403
STRICT = "Strict"
REQUEST_TIMEOUT = (5.0, 30.0)
"""(connect, read) seconds for every request: one that hangs (a network partition, a stalled
connection) fails its pass, which is retried, instead of holding a worker thread forever."""


class _ApiClient(client.ApiClient):
    def call_api(self, *args: Any, _request_timeout: Any = None, **kwargs: Any) -> Any:
        return super().call_api(*args, _request_timeout=_request_timeout or REQUEST_TIMEOUT, **kwargs)


def api_client(pool_size: int) -> client.ApiClient:
    """In-cluster credentials in a pod, else the kubeconfig (KUBECONFIG or ~/.kube/config)."""
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    configuration = client.Configuration.get_default_copy()
    # One connection per worker thread, or threads queue for a connection.
    configuration.connection_pool_maxsize = pool_size
    return _ApiClient(configuration)


def _plural(kind: str) -> tuple[str, str]:
    """(version, plural) of a Kubeflow kind."""
    for api_version, child_kind, plural in CHILD_KINDS.values():
        if child_kind == kind:
            return api_version.split("/")[1], plural
    raise ValueError(f"not a child kind: {kind}")


class Kube:
    def __init__(self, api: client.ApiClient):
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)

    # -- creating ------------------------------------------------------------------------

    def create(self, manifest: dict[str, Any]) -> bool:
        """Create; False if it already existed. Raises if it exists and someone else owns it."""
        meta = manifest["metadata"]
        try:
            self._create(manifest)
            return True
        except ApiException as error:
            if error.status != CONFLICT:
                raise
        existing = self.get_child(manifest["kind"], meta["namespace"], meta["name"])
        if existing is None:  # deleted again since: the next pass creates it
            raise RuntimeError(f"{manifest['kind']} {meta['namespace']}/{meta['name']} already existed, then not")
        wanted = controller_uid(meta)
        owner = controller_ref(existing["metadata"])
        if wanted is not None and owner.get("uid") != wanted:
            where = f"{manifest['kind']} {meta['namespace']}/{meta['name']}"
            ours = controller_ref(meta)
            if (owner.get("kind"), owner.get("name")) == (ours.get("kind"), ours.get("name")):
                # A deleted RLHFJob of the same name: the garbage collector deletes its children soon.
                raise LeftBehind(f"{where} belongs to an earlier {owner['kind']} named {owner['name']}; waiting "
                                 "for the garbage collector to delete it")
            raise ForeignObject(f"{where} exists and another object controls it")
        return False

    def _create(self, manifest: dict[str, Any]) -> None:
        """Strict: a field the API's schema does not know is refused, naming it, instead of being
        dropped without a word (the Kubeflow CRDs would prune it from a pod template)."""
        ns, kind = manifest["metadata"]["namespace"], manifest["kind"]
        if kind == "ConfigMap":
            self.core.create_namespaced_config_map(ns, manifest, field_validation=STRICT)
        elif kind == "PersistentVolumeClaim":
            self.core.create_namespaced_persistent_volume_claim(ns, manifest, field_validation=STRICT)
        else:
            version, plural = _plural(kind)
            self.custom.create_namespaced_custom_object(KUBEFLOW_GROUP, version, ns, plural, manifest,
                                                        field_validation=STRICT)

    def get_child(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self.get(kind, namespace, name)
        except ApiException as error:
            if error.status == NOT_FOUND:
                return None
            raise

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any]:
        if kind in ("ConfigMap", "PersistentVolumeClaim"):
            read = (self.core.read_namespaced_config_map if kind == "ConfigMap"
                    else self.core.read_namespaced_persistent_volume_claim)
            return self.core.api_client.sanitize_for_serialization(read(name, namespace))  # camelCase, like CRs
        version, plural = _plural(kind)
        return self.custom.get_namespaced_custom_object(KUBEFLOW_GROUP, version, namespace, plural, name)

    def failure_detail(self, namespace: str, child: str) -> FailureDetail | None:
        """Why a failed child's pods failed, or None where no pod says (e.g. deleted already).
        One list per failed attempt: the watched pods may not have caught up with the child."""
        pods = self.core.list_namespaced_pod(namespace, label_selector=f"{KUBEFLOW_JOB_NAME_LABEL}={child}").items
        return pod_failure([Pod.from_body(self.core.api_client.sanitize_for_serialization(p)) for p in pods])

    def latest_warning(self, namespace: str, uid: str) -> tuple[str, str] | None:
        """(reason, message) of the newest Warning event about the object with this uid, if any."""
        events = self.core.list_namespaced_event(namespace, field_selector=f"involvedObject.uid={uid},type=Warning").items
        if not events:
            return None
        newest = max(events, key=lambda e: str(e.last_timestamp or e.event_time or e.metadata.creation_timestamp))
        return newest.reason or "", (newest.message or "").strip()

    # -- changing ------------------------------------------------------------------------

    def patch_status(self, namespace: str, name: str, resource_version: str, status: dict[str, Any]) -> str | None:
        """Write the RLHFJob's status unless the object changed since it was read (then raise
        StaleObject). Returns the new resourceVersion, or None if the job is gone."""
        body = {"metadata": {"resourceVersion": resource_version}, "status": status}
        return self._patch_job(self.custom.patch_namespaced_custom_object_status, namespace, name, body)

    def remove_finalizer(self, namespace: str, name: str, resource_version: str, current: Iterable[str]) -> str | None:
        """Remove our finalizer from the RLHFJob's list as read at `resource_version` (StaleObject if
        the list may have changed since). Returns the new resourceVersion, or None if the job is gone."""
        body = {"metadata": {"resourceVersion": resource_version,
                             "finalizers": [f for f in current if f != FINALIZER]}}
        return self._patch_job(self.custom.patch_namespaced_custom_object, namespace, name, body)

    @staticmethod
    def _patch_job(patch, namespace: str, name: str, body: dict[str, Any]) -> str | None:
        """Apply `patch` to the RLHFJob if it is still at the body's resourceVersion (else raise
        StaleObject). Returns the new resourceVersion, or None if the job is gone."""
        try:
            out = patch(GROUP, VERSION, namespace, PLURAL, name, body)
        except ApiException as error:
            if error.status == CONFLICT:
                version = body["metadata"]["resourceVersion"]
                raise StaleObject(f"RLHFJob {namespace}/{name} changed since version {version}") from None
            if error.status == NOT_FOUND:
                return None
            raise
        return out["metadata"]["resourceVersion"]

    def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        except ApiException as error:
            if error.status == NOT_FOUND:
                return None
            raise

    def suspend_child(self, kind: str, namespace: str, name: str, suspend: bool) -> None:
        version, plural = _plural(kind)
        body = {"spec": {"runPolicy": {"suspend": suspend}}}
        self._ignore_missing(self.custom.patch_namespaced_custom_object,
                             KUBEFLOW_GROUP, version, namespace, plural, name, body, field_validation=STRICT)

    def delete_child(self, kind: str, namespace: str, name: str) -> None:
        version, plural = _plural(kind)
        self._ignore_missing(self.custom.delete_namespaced_custom_object,
                             KUBEFLOW_GROUP, version, namespace, plural, name, propagation_policy="Background")

    # -- cleaning up ---------------------------------------------------------------------

    def delete_owned(self, namespace: str, job: str, uid: str) -> list[str]:
        """Delete what the job controls: children, ConfigMaps, and a claim it owns (retention
        Delete). Needed where no garbage collector runs; harmless where one does."""
        selector = ",".join(f"{k}={v}" for k, v in job_labels(job).items())
        deleted = []
        for kind, items in self._owned_lists(namespace, selector):
            for item in items:
                meta = item["metadata"]
                if controller_uid(meta) == uid:  # a retained claim has no owner and stays
                    self._delete(kind, namespace, meta["name"])
                    deleted.append(f"{kind}/{meta['name']}")
        return deleted

    def _owned_lists(self, namespace: str, selector: str) -> Iterable[tuple[str, list[dict[str, Any]]]]:
        for api_version, kind, plural in CHILD_KINDS.values():
            try:
                listed = self.custom.list_namespaced_custom_object(
                    KUBEFLOW_GROUP, api_version.split("/")[1], namespace, plural, label_selector=selector)
            except ApiException as error:
                if error.status == NOT_FOUND:  # that Kubeflow CRD is not installed
                    continue
                raise
            yield kind, listed["items"]
        client_ = self.core.api_client
        for kind, lister in (("ConfigMap", self.core.list_namespaced_config_map),
                             ("PersistentVolumeClaim", self.core.list_namespaced_persistent_volume_claim)):
            items = lister(namespace, label_selector=selector).items
            yield kind, [client_.sanitize_for_serialization(i) for i in items]

    def _delete(self, kind: str, namespace: str, name: str) -> None:
        if kind == "ConfigMap":
            self._ignore_missing(self.core.delete_namespaced_config_map, name, namespace)
        elif kind == "PersistentVolumeClaim":
            self._ignore_missing(self.core.delete_namespaced_persistent_volume_claim, name, namespace)
        else:
            self.delete_child(kind, namespace, name)

    @staticmethod
    def _ignore_missing(call, *args, **kwargs) -> None:
        try:
            call(*args, **kwargs)
        except ApiException as error:
            if error.status != NOT_FOUND:
                raise


def describe_error(error: BaseException) -> str:
    """One line for a log: an API error's status and the server's message (not its headers),
    or the exception's type and first line."""
    if isinstance(error, ApiException):
        message = ""
        try:
            message = json.loads(error.body or "{}").get("message", "")
        except (ValueError, AttributeError):
            pass
        return f"{error.status} {error.reason}: {message or str(error.body or '')[:200]}".rstrip(": ")
    first = (str(error).splitlines() or [""])[0]
    return f"{type(error).__name__}: {first[:300]}".rstrip(": ")


class StaleObject(RuntimeError):
    """A write was refused: the object changed since the version it was computed from."""


class ForeignObject(RuntimeError):
    """An object with the name we need exists but belongs to someone else."""


class LeftBehind(RuntimeError):
    """An object with the name we need belongs to a deleted RLHFJob of the same name (deleted and
    created again): the garbage collector will delete it, so the name is waited for, not given up."""


def is_quota_refusal(error: ApiException) -> bool:
    """A ResourceQuota refused the object ('403 ... exceeded quota'): often temporary, as other
    jobs finish."""
    return error.status == FORBIDDEN and "exceeded quota" in str(error.body or "")

