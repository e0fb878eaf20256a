"""The Kubernetes API calls the operator makes, and nothing else (the ClusterRole in operator/rbac/ grants exactly
these): create ConfigMaps, Services and Pods; read a ConfigMap back (the spec a job started with); delete Pods
and jobs; patch job status; create Events.

Plain REST over one aiohttp session (kopf's own HTTP stack), not the ``kubernetes`` client: the operator needs
six calls, and the client's import alone costs ~45 MB of memory. Credentials come from a provider (kopf's
service-account/kubeconfig login, wired in by the handlers) and are fetched again after a 401, so rotated
service-account tokens keep working.

Errors are sorted into the taxonomy the reconciler acts on: :class:`Conflict` (a stale read: reconcile again),
:class:`Gone` (404), :class:`Rejected` (400/422: the apiserver refuses a manifest built from the user's spec),
:class:`Forbidden` (403: RBAC or an admission plugin such as a ResourceQuota refuses it; core.refusals says
whether retrying helps) and :class:`TemporaryError` (anything else: retry with backoff).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import ssl
import tempfile
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aiohttp
import yaml

from ..core.children import CONFIG_FILE
from ..core.spec import API_VERSION, KIND, JobMeta
from ..core.timefmt import format_time

log = logging.getLogger(__name__)

GROUP, VERSION = API_VERSION.split("/")
PLURAL = "preferencetrainingjobs"
COMPONENT = "prefops-operator"
MERGE_PATCH = "application/merge-patch+json"
#: where each kind of child lives: API prefix and collection
_COLLECTIONS = {
    "Pod": ("/api/v1", "pods"),
    "ConfigMap": ("/api/v1", "configmaps"),
    "Service": ("/api/v1", "services"),
    "NetworkPolicy": ("/apis/networking.k8s.io/v1", "networkpolicies"),
}


def _collection(kind: str, namespace: str) -> str:
    prefix, plural = _COLLECTIONS[kind]
    return f"{prefix}/namespaces/{namespace}/{plural}"


class TemporaryError(RuntimeError):
    """An API hiccup (timeout, 5xx, a namespace being deleted, ...): retry later."""


class Conflict(TemporaryError):
    """The object changed since it was read (409 on a resourceVersion precondition)."""


class Gone(TemporaryError):
    """The object (or its namespace) no longer exists (404)."""


class Rejected(ValueError):
    """The apiserver refused an object built from the user's spec (400/422): retrying cannot help."""

    status = 422


class Forbidden(TemporaryError):
    """403: the apiserver forbids the call (the operator's RBAC, or an admission plugin: a ResourceQuota, a missing
    ServiceAccount or PriorityClass, a webhook). ``message`` is the apiserver's own."""

    status = 403

    def __init__(self, what: str, message: str) -> None:
        super().__init__(f"{what}: {message}")
        self.message = message


@dataclass(frozen=True)
class Credentials:
    """Where the apiserver is and how to authenticate (the fields of a kubeconfig user and cluster)."""

    server: str
    token: str | None = None
    scheme: str = "Bearer"
    ca_path: str | None = None
    ca_data: str | None = None  # PEM, or base64 of PEM as in kubeconfig's certificate-authority-data
    insecure: bool = False
    certificate_path: str | None = None
    certificate_data: str | None = None
    private_key_path: str | None = None
    private_key_data: str | None = None

    def ssl_context(self) -> ssl.SSLContext:
        """The TLS context: CA, and the client certificate if any. Python's ssl loads a certificate and key only from
        files, so data from a kubeconfig goes through private temporary files that are gone when this returns."""
        ctx = ssl.create_default_context(cafile=self.ca_path, cadata=_pem(self.ca_data))
        if self.insecure:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        with contextlib.ExitStack() as files:
            cert = self.certificate_path or _temp_file(files, self.certificate_data)
            if cert:
                ctx.load_cert_chain(cert, self.private_key_path or _temp_file(files, self.private_key_data))
        return ctx

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"{self.scheme} {self.token}"} if self.token else {}


def _pem(data: str | None) -> str | None:
    if not data or "-----BEGIN" in data:
        return data
    return base64.b64decode(data).decode()


def _temp_file(files: contextlib.ExitStack, data: str | None) -> str | None:
    """A file readable only by this user holding ``data`` as PEM, deleted when ``files`` closes."""
    if not data:
        return None
    f = files.enter_context(tempfile.NamedTemporaryFile("w", suffix=".pem"))  # noqa: SIM115 - mode 0600
    f.write(_pem(data) or "")
    f.flush()
    return f.name


CredentialsProvider = Callable[[], Awaitable[Credentials]]


class KubeApi:
    """One aiohttp session to the apiserver; every public method is one API request (plus one retry after a 401)."""

    def __init__(self, credentials: CredentialsProvider, connections: int = 16, timeout: float = 30.0) -> None:
        self._provider, self._connections, self._timeout = credentials, connections, timeout
        self._session: aiohttp.ClientSession | None = None
        self._lock = asyncio.Lock()

    async def _session_for(self, rejected: aiohttp.ClientSession | None = None) -> aiohttp.ClientSession:
        """The current session; a new one (fresh credentials) when there is none yet or ``rejected`` got a 401.
        Concurrent callers share one login."""
        async with self._lock:
            if self._session is None or self._session is rejected:
                if self._session is not None:
                    await self._session.close()
                creds = await self._provider()
                self._session = aiohttp.ClientSession(
                    base_url=creds.server,
                    connector=aiohttp.TCPConnector(limit=self._connections, ssl=creds.ssl_context()),
                    headers=creds.headers(),
                    timeout=aiohttp.ClientTimeout(total=self._timeout),
                )
            return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _call(self, method: str, path: str, what: str, body: Any = None, content_type: str = "") -> Any:
        """One request; the decoded JSON answer, or a classified exception."""
        data = None if body is None else json.dumps(body)
        headers = {"Content-Type": content_type or "application/json"} if data is not None else {}
        session = await self._session_for()
        for attempt in (1, 2):
            try:
                async with session.request(method, path, data=data, headers=headers) as resp:
                    payload, status = await resp.read(), resp.status
            except (aiohttp.ClientError, TimeoutError, OSError) as e:
                raise TemporaryError(f"{what}: {type(e).__name__}: {e}") from e
            if status == 401 and attempt == 1:
                log.info("credentials rejected (401); logging in again")
                session = await self._session_for(rejected=session)
                continue
            if status < 300:
                return json.loads(payload) if payload else None
            raise _classify(status, payload, what)
        raise TemporaryError(f"{what}: unauthorized")

    async def create(self, manifest: Mapping[str, Any]) -> bool:
        """Create a Pod, ConfigMap, Service or NetworkPolicy; ``False`` when one of that name exists already (409)."""
        kind, ns, name = manifest["kind"], manifest["metadata"]["namespace"], manifest["metadata"]["name"]
        try:
            await self._call("POST", _collection(kind, ns), f"create {kind} {ns}/{name}", manifest)
        except Conflict:
            return False
        return True

    async def controller_uid(self, kind: str, namespace: str, name: str) -> str | None:
        """The uid in the controller owner reference of a ConfigMap, Service or NetworkPolicy (``None``: it has
        none, or it is gone): whose it is, when creating it answered 409."""
        path = f"{_collection(kind, namespace)}/{name}"
        try:
            found = await self._call("GET", path, f"get {kind} {namespace}/{name}")
        except Gone:
            return None
        refs = (found.get("metadata") or {}).get("ownerReferences") or []
        return next((str(r.get("uid")) for r in refs if r.get("controller")), None)

    async def config_map_data(self, namespace: str, name: str) -> Mapping[str, str] | None:
        """A ConfigMap's ``data`` (``None`` when it does not exist): the model config a job names for its plan."""
        try:
            found = await self._call("GET", f"{_collection('ConfigMap', namespace)}/{name}", f"get configmap {name}")
        except Gone:
            return None
        data = found.get("data") if isinstance(found, Mapping) else None
        return data if isinstance(data, Mapping) else {}

    async def node_labels(self) -> list[tuple[str, Mapping[str, str]]]:
        """(name, labels) of every node: where the plan reads the GPUs' memory (raises Forbidden without RBAC)."""
        found = await self._call("GET", "/api/v1/nodes", "list nodes")
        items = found.get("items") if isinstance(found, Mapping) else None
        out: list[tuple[str, Mapping[str, str]]] = []
        for item in items or []:
            meta = item.get("metadata") or {}
            out.append((str(meta.get("name") or ""), dict(meta.get("labels") or {})))
        return out

    async def config_spec(self, namespace: str, name: str, uid: str) -> dict[str, Any] | None:
        """The spec in the trainer config of ConfigMap ``name`` (docs/contract.md §2): the spec the job of ``uid``
        started with. ``None`` when the ConfigMap is absent, is not that job's, or holds no spec."""
        path = f"{_collection('ConfigMap', namespace)}/{name}"
        try:
            found = await self._call("GET", path, f"get ConfigMap {namespace}/{name}")
        except Gone:
            return None
        refs = (found.get("metadata") or {}).get("ownerReferences") or []
        if not any(r.get("controller") and r.get("uid") == uid for r in refs):
            return None
        try:
            doc = yaml.safe_load(((found.get("data") or {}).get(CONFIG_FILE)) or "")
        except yaml.YAMLError:
            return None
        spec = doc.get("spec") if isinstance(doc, dict) else None
        return dict(spec) if isinstance(spec, dict) else None

    async def delete_pod(self, namespace: str, name: str) -> None:
        """Delete a pod (gracefully: the trainer gets SIGTERM); already gone is fine."""
        with contextlib.suppress(Gone):
            await self._call("DELETE", f"/api/v1/namespaces/{namespace}/pods/{name}", f"delete pod {namespace}/{name}")

    async def patch_status(self, meta: JobMeta, patch: Mapping[str, Any]) -> str:
        """Merge-patch the job's status, only if the job is still at ``meta.resource_version``; return the new
        resourceVersion."""
        body = {"metadata": {"resourceVersion": meta.resource_version}, "status": patch}
        path = f"/apis/{GROUP}/{VERSION}/namespaces/{meta.namespace}/{PLURAL}/{meta.name}/status"
        answer = await self._call("PATCH", path, f"patch status of {meta.namespace}/{meta.name}", body, MERGE_PATCH)
        return str(answer["metadata"]["resourceVersion"])

    async def delete_job(self, meta: JobMeta) -> None:
        """Delete the job (its children follow by garbage collection), only if it is still the same object."""
        body = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "preconditions": {"uid": meta.uid},
            "propagationPolicy": "Background",
        }
        path = f"/apis/{GROUP}/{VERSION}/namespaces/{meta.namespace}/{PLURAL}/{meta.name}"
        with contextlib.suppress(Gone, Conflict):  # already deleted, or a new job under the same name
            await self._call("DELETE", path, f"delete job {meta.namespace}/{meta.name}", body)

    async def post_event(
        self, meta: JobMeta, reason: str, message: str, warning: bool, now: datetime, kind: str = KIND
    ) -> None:
        """Record a Kubernetes Event on the job, or on another object of ours of ``kind`` (a sweep), which
        ``kubectl describe`` shows. Best effort: a failure is logged, never raised."""
        stamp = format_time(now)
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta.name}.", "namespace": meta.namespace},
            "involvedObject": {
                "apiVersion": API_VERSION,
                "kind": kind,
                "name": meta.name,
                "namespace": meta.namespace,
                "uid": meta.uid,
            },
            "reason": reason,
            "message": message[:1024],
            "type": "Warning" if warning else "Normal",
            "source": {"component": COMPONENT},
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
        try:
            await self._call("POST", f"/api/v1/namespaces/{meta.namespace}/events", f"event {reason}", event)
        except (TemporaryError, Rejected) as e:
            log.warning("could not record event %s on %s %s/%s: %s", reason, kind, meta.namespace, meta.name, e)


def _classify(status: int, payload: bytes, what: str) -> Exception:
    message = _message(payload)
    if status == 409:
        return Conflict(f"{what}: conflict: {message}")
    if status == 404:
        return Gone(f"{what}: not found")
    if status in (400, 422):
        return Rejected(f"{what}: {message}")
    if status == 403:
        return Forbidden(what, message)
    return TemporaryError(f"{what}: HTTP {status} {message}")


def _message(payload: bytes) -> str:
    try:
        return str(json.loads(payload).get("message") or "")
    except (ValueError, AttributeError):
        return payload[:200].decode(errors="replace")
