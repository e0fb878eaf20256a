"""A real Kubernetes control plane on 127.0.0.1 for tests and benchmarks: etcd, kube-apiserver and
kube-controller-manager (garbage collection, namespaces, service accounts, resource quotas). No scheduler, no kubelet: tests
drive pod status themselves (see ``support.kubelet``).

Usage::

    with KubeCluster.start(workdir) as cluster:
        admin = cluster.admin_client()                      # kubernetes.client.ApiClient, system:masters
        cluster.apply_crds(Path("crds"))
        kubeconfig = cluster.service_account_kubeconfig("prefops-system", "prefops-operator")

Binaries: ``PREFOPS_KUBE_APISERVER`` (default ``~/.cache/prefops/kube-1.20.2/bin/kube-apiserver``),
``PREFOPS_KUBE_CONTROLLER_MANAGER`` (default ``~/.cache/prefops/kube-1.20.2/bin/kube-controller-manager``; built
on first use by ``scripts/build-kube.sh kube-controller-manager`` when missing), ``PREFOPS_ETCD`` (default ``etcd``
on PATH). A server that does not start raises :class:`ClusterError` (tests fail, never skip).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import yaml

from .scripts import load_script

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("PREFOPS_CACHE", Path.home() / ".cache" / "prefops"))
KUBE_BIN = CACHE / "kube-1.20.2" / "bin"  # scripts/build-kube.sh
APISERVER = Path(os.environ.get("PREFOPS_KUBE_APISERVER", KUBE_BIN / "kube-apiserver"))
CONTROLLER_MANAGER = Path(os.environ.get("PREFOPS_KUBE_CONTROLLER_MANAGER", KUBE_BIN / "kube-controller-manager"))
ADMIN_TOKEN = "prefops-test-admin-token"
SERVICE_CIDR = "10.96.0.0/16"
T = TypeVar("T")


def cluster_script(name: str) -> ModuleType:
    """A stdlib-only module of scripts/cluster/ (:func:`.scripts.load_script`)."""
    return load_script(f"cluster/{name}")


#: the node cluster's admission plugins (scripts/cluster/layout.py): the operator tests meet the same checks
ADMISSION_PLUGINS: tuple[str, ...] = cluster_script("layout").ADMISSION_PLUGINS


class ClusterError(RuntimeError):
    """The control plane could not be started or did not answer in time."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_for(check: Callable[[], T], timeout: float, what: str, interval: float = 0.1) -> T:
    """Call ``check`` until it returns something truthy (returned) or ``timeout`` seconds pass (AssertionError)."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            value = check()
            if value:
                return value
        except Exception as e:  # the condition may not be checkable yet (object absent, server starting)
            last_error = e
        if time.monotonic() > deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}{detail}")
        time.sleep(interval)


def stop_process(popen: subprocess.Popen, timeout: float = 10) -> None:
    """SIGTERM, then SIGKILL after ``timeout`` seconds; returns once the process is gone."""
    if popen.poll() is None:
        popen.terminate()
        try:
            popen.wait(timeout)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait()


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def stop(self, timeout: float = 10) -> None:
        stop_process(self.popen, timeout)

    def tail(self, lines: int = 30) -> str:
        return tail(self.log, lines)


def tail(log: Path, lines: int = 30) -> str:
    """The last ``lines`` lines of a server's log file (empty when there is none yet)."""
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _spawn(name: str, argv: list[str], workdir: Path, env: dict[str, str] | None = None) -> Process:
    log = workdir / f"{name}.log"
    with log.open("wb") as out:
        popen = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    return Process(name, popen, log)


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def _make_pki(pki: Path) -> None:
    """A CA, an apiserver serving certificate for 127.0.0.1/localhost, and the service-account signing key."""
    pki.mkdir(parents=True, exist_ok=True)
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=prefops-test-ca",
        "-keyout",
        str(pki / "ca.key"),
        "-out",
        str(pki / "ca.crt"),
    )
    _openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=kube-apiserver",
        "-keyout",
        str(pki / "apiserver.key"),
        "-out",
        str(pki / "apiserver.csr"),
    )
    ext = pki / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc\n")
    _openssl(
        "x509",
        "-req",
        "-in",
        str(pki / "apiserver.csr"),
        "-CA",
        str(pki / "ca.crt"),
        "-CAkey",
        str(pki / "ca.key"),
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        str(ext),
        "-out",
        str(pki / "apiserver.crt"),
    )
    _openssl("genrsa", "-out", str(pki / "sa.key"), "2048")


def kubeconfig_document(server: str, ca_file: Path, user: str, token: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "test", "cluster": {"server": server, "certificate-authority": str(ca_file)}}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": user}}],
        "current-context": "test",
    }


@dataclass
class KubeCluster:
    """etcd + kube-apiserver (+ kube-controller-manager) on loopback ports, all state under ``workdir``."""

    workdir: Path
    controller_manager: bool = True
    audit: bool = True
    audit_mode: str = "blocking"  # "batch" writes asynchronously: less latency per request (benchmarks)
    processes: list[Process] = field(default_factory=list)
    port: int = 0
    etcd_url: str = ""

    # -- lifecycle -------------------------------------------------------------------------------------------

    @classmethod
    @contextlib.contextmanager
    def start(
        cls,
        workdir: Path | None = None,
        controller_manager: bool = True,
        audit: bool = True,
        audit_mode: str = "blocking",
    ) -> Iterator[KubeCluster]:
        """Start the control plane, yield it, stop it (apiserver before etcd). ``audit`` keeps an audit log of
        every request (who, verb, resource, response code): :meth:`audit_events` reads it."""
        owned = workdir is None
        wd = Path(tempfile.mkdtemp(prefix="prefops-kube-", dir=_fast_tmp())) if workdir is None else workdir
        cluster = cls(wd, controller_manager=controller_manager, audit=audit, audit_mode=audit_mode)
        try:
            cluster.boot()
            yield cluster
        finally:
            cluster.stop()
            if owned:
                shutil.rmtree(wd, ignore_errors=True)

    def boot(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        _make_pki(self.pki)
        (self.workdir / "tokens.csv").write_text(f'{ADMIN_TOKEN},admin,admin,"system:masters"\n')
        self.etcd_url = self._start_etcd()
        self._start_apiserver(self.etcd_url)
        self._write_kubeconfig(self.admin_kubeconfig, "admin", ADMIN_TOKEN)
        if self.controller_manager:
            self._start_controller_manager()

    def stop(self) -> None:
        for proc in reversed(self.processes):  # controller-manager, apiserver, then etcd
            proc.stop()
        self.processes.clear()

    def __enter__(self) -> KubeCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def pki(self) -> Path:
        return self.workdir / "pki"

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def ca_file(self) -> Path:
        return self.pki / "ca.crt"

    @property
    def admin_kubeconfig(self) -> Path:
        return self.workdir / "admin.kubeconfig"

    def logs(self) -> str:
        return "\n".join(f"--- {p.name} ({p.log})\n{p.tail()}" for p in self.processes)

    def _start_etcd(self) -> str:
        etcd = os.environ.get("PREFOPS_ETCD", shutil.which("etcd") or "/usr/bin/etcd")
        client, peer = free_port(), free_port()
        url, peer_url = f"http://127.0.0.1:{client}", f"http://127.0.0.1:{peer}"
        proc = _spawn(
            "etcd",
            [
                etcd,
                "--name",
                "test",
                "--data-dir",
                str(self.workdir / "etcd"),
                "--listen-client-urls",
                url,
                "--advertise-client-urls",
                url,
                "--listen-peer-urls",
                peer_url,
                "--initial-advertise-peer-urls",
                peer_url,
                "--initial-cluster",
                f"test={peer_url}",
                "--log-level",
                "warn",
            ],
            self.workdir,
        )
        self.processes.append(proc)
        self._await(proc, lambda: _http_ok(f"{url}/health"), 30)
        return url

    def restart_apiserver(self) -> None:
        """Stop the kube-apiserver (SIGTERM, as a rolling control-plane upgrade does) and start a new one on the same
        port over the same etcd; returns once it is ready again. Clients see refused connections meanwhile."""
        old = next(p for p in self.processes if p.name == "kube-apiserver")
        old.stop()
        old.log.rename(old.log.with_suffix(f".{time.monotonic_ns()}.log"))  # kept; the new one starts a fresh log
        self._start_apiserver(self.etcd_url, port=self.port)
        self.processes.remove(old)
        new = self.processes.pop()
        self.processes.insert(1, new)  # stop order stays controller-manager, apiserver, etcd

    def _start_apiserver(self, etcd_url: str, port: int = 0) -> None:
        if not APISERVER.is_file():
            raise ClusterError(
                f"kube-apiserver not found at {APISERVER}: run scripts/install-servers.sh (make servers)"
            )
        self.port = port or free_port()
        pki = self.pki
        proc = _spawn(
            "kube-apiserver",
            [
                str(APISERVER),
                f"--etcd-servers={etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={self.port}",
                "--insecure-port=0",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                f"--token-auth-file={self.workdir / 'tokens.csv'}",
                "--authorization-mode=RBAC",
                f"--enable-admission-plugins={','.join(ADMISSION_PLUGINS)}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--service-account-issuer=https://kubernetes.default.svc",
                f"--service-account-key-file={pki / 'sa.key'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                "--enable-priority-and-fairness=false",
                "--watch-cache=true",
                "--v=1",
                *self._audit_flags(),
            ],
            self.workdir,
        )
        self.processes.append(proc)
        self._await(proc, self._apiserver_ready, 60)

    @property
    def audit_log(self) -> Path:
        return self.workdir / "audit.log"

    def _audit_flags(self) -> list[str]:
        if not self.audit:
            return []
        policy = self.workdir / "audit-policy.yaml"
        policy.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "audit.k8s.io/v1",
                    "kind": "Policy",
                    "omitStages": ["RequestReceived"],
                    "rules": [{"level": "Metadata"}],
                }
            )
        )
        return [
            f"--audit-policy-file={policy}",
            f"--audit-log-path={self.audit_log}",
            "--audit-log-format=json",
            f"--audit-log-mode={self.audit_mode}",
            "--audit-log-maxsize=0",
        ]

    def audit_mark(self) -> int:
        """A position in the audit log: :meth:`audit_events` with ``since=`` this sees only later requests."""
        return len(self.audit_log.read_text().splitlines()) if self.audit_log.exists() else 0

    def audit_events(self, user: str | None = None, since: int = 0) -> list[dict[str, Any]]:
        """Every request the apiserver answered (once each), optionally only those of ``user``."""
        import json

        if not self.audit_log.exists():
            return []
        events, seen = [], set()
        for line in self.audit_log.read_text().splitlines()[since:]:
            event = json.loads(line)
            # a watch logs ResponseStarted when it opens and ResponseComplete when it ends: count it once
            if event.get("stage") not in ("ResponseStarted", "ResponseComplete") or event["auditID"] in seen:
                continue
            seen.add(event["auditID"])
            if user is None or event.get("user", {}).get("username") == user:
                events.append(event)
        return events

    def _apiserver_ready(self) -> bool:
        return self.get("/readyz") == b"ok"

    def get(self, path: str, accept: str = "application/json") -> bytes:
        """A raw GET as admin (e.g. ``/metrics``, or a Table with ``accept``)."""
        import ssl
        import urllib.request

        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}", "Accept": accept}
        with urllib.request.urlopen(
            urllib.request.Request(f"{self.server}{path}", headers=headers), context=ctx, timeout=10
        ) as resp:
            return bytes(resp.read())

    def table(self, path: str) -> tuple[list[str], list[list[Any]]]:
        """Column names and rows of a list as ``kubectl get`` shows it (server-side printing, printer columns)."""
        import json

        doc = json.loads(self.get(path, "application/json;as=Table;v=v1;g=meta.k8s.io"))
        return [c["name"] for c in doc["columnDefinitions"]], [r["cells"] for r in doc["rows"]]

    def _start_controller_manager(self) -> None:
        binary = _controller_manager_binary()
        proc = _spawn(
            "kube-controller-manager",
            [
                str(binary),
                f"--kubeconfig={self.admin_kubeconfig}",
                "--leader-elect=false",
                "--port=0",
                "--secure-port=0",
                "--use-service-account-credentials=false",
                "--controllers=garbagecollector,namespace,serviceaccount,serviceaccount-token,resourcequota,"
                "clusterrole-aggregation",
                f"--service-account-private-key-file={self.pki / 'sa.key'}",
                f"--root-ca-file={self.ca_file}",
                "--concurrent-gc-syncs=5",
                "--resource-quota-sync-period=2s",  # count a quota of custom objects soon after its CRD is found
                "--v=1",
            ],
            self.workdir,
        )
        self.processes.append(proc)
        # ready when the service-account controller has given the default namespace its ServiceAccount
        core = self.core()
        self._await(proc, lambda: core.read_namespaced_service_account("default", "default"), 60)

    def _await(self, proc: Process, check: Callable[[], Any], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if proc.popen.poll() is not None:
                raise ClusterError(f"{proc.name} exited with {proc.popen.returncode}:\n{proc.tail()}")
            with contextlib.suppress(Exception):
                if check():
                    return
            if time.monotonic() > deadline:
                proc.stop()
                raise ClusterError(f"{proc.name} not ready after {timeout}s:\n{proc.tail()}")
            time.sleep(0.2)

    def _write_kubeconfig(self, path: Path, user: str, token: str) -> Path:
        path.write_text(yaml.safe_dump(kubeconfig_document(self.server, self.ca_file, user, token)))
        return path

    # -- clients ---------------------------------------------------------------------------------------------

    def admin_client(self) -> Any:
        """A ``kubernetes.client.ApiClient`` authenticated as a cluster admin (system:masters)."""
        return self.client_for(self.admin_kubeconfig)

    @staticmethod
    def client_for(kubeconfig: Path) -> Any:
        import kubernetes

        return kubernetes.config.new_client_from_config(config_file=str(kubeconfig))

    def core(self) -> Any:
        import kubernetes

        return kubernetes.client.CoreV1Api(self.admin_client())

    def custom(self) -> Any:
        import kubernetes

        return kubernetes.client.CustomObjectsApi(self.admin_client())

    # -- setup helpers ---------------------------------------------------------------------------------------

    def apply_manifests(self, path: Path) -> list[dict[str, Any]]:
        """Create (or replace) every document of a YAML file or of the YAML files in a folder, as admin."""
        import kubernetes

        files = sorted(path.glob("*.yaml")) if path.is_dir() else [path]
        docs = [d for f in files for d in yaml.safe_load_all(f.read_text()) if d]
        client = self.admin_client()
        for doc in docs:
            try:
                kubernetes.utils.create_from_dict(client, doc)
            except kubernetes.utils.FailToCreateError as e:
                if not all(getattr(x, "status", None) == 409 for x in e.api_exceptions):
                    raise
                _replace(client, doc)
        return docs

    def apply_crds(self, path: Path = ROOT / "crds") -> None:
        """Create the CRDs under ``path`` and wait until the apiserver serves them."""
        import kubernetes

        docs = self.apply_manifests(path)
        ext = kubernetes.client.ApiextensionsV1Api(self.admin_client())
        for doc in docs:
            name = doc["metadata"]["name"]
            wait_for(lambda n=name: _established(ext.read_custom_resource_definition(n)), 30, f"CRD {name}")

    def create_namespace(self, name: str) -> str:
        """Create a namespace and wait for its default ServiceAccount (pods need it to be admitted)."""
        import kubernetes

        core = self.core()
        with contextlib.suppress(kubernetes.client.ApiException):
            core.create_namespace({"metadata": {"name": name}})
        if self.controller_manager:
            wait_for(lambda: core.read_namespaced_service_account("default", name), 30, f"default SA in {name}")
        else:
            with contextlib.suppress(kubernetes.client.ApiException):
                core.create_namespaced_service_account(name, {"metadata": {"name": "default"}})
        return name

    def client_certificate_kubeconfig(self, user: str, path: Path) -> Path:
        """A kubeconfig that authenticates as ``user`` with a client certificate signed by the cluster's CA, the
        certificate and its key inline (``client-certificate-data``/``client-key-data``), as cloud CLIs write them."""
        import base64

        key, csr, crt = (self.workdir / f"{user}.{ext}" for ext in ("key", "csr", "crt"))
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={user}", "-keyout", str(key), "-out", str(csr))
        _openssl("x509", "-req", "-in", str(csr), "-CA", str(self.ca_file), "-CAkey", str(self.pki / "ca.key"),
                 "-CAcreateserial", "-days", "1", "-out", str(crt))  # fmt: skip
        doc = kubeconfig_document(self.server, self.ca_file, user, "")
        doc["users"][0]["user"] = {
            "client-certificate-data": base64.b64encode(crt.read_bytes()).decode(),
            "client-key-data": base64.b64encode(key.read_bytes()).decode(),
        }
        key.unlink()
        path.write_text(yaml.safe_dump(doc))
        return path

    def serving_certificate(self, folder: Path, host: str = "127.0.0.1") -> Path:
        """``folder`` with ``tls.crt`` and ``tls.key``: a serving certificate for ``host`` (an IP address) signed by
        the cluster's CA (:attr:`ca_file`), as a kubernetes.io/tls Secret mounts them; for a webhook the apiserver
        calls on loopback."""
        folder.mkdir(parents=True, exist_ok=True)
        key, csr, crt, ext = (folder / n for n in ("tls.key", "tls.csr", "tls.crt", "san.ext"))
        ext.write_text(f"subjectAltName=IP:{host}\n")
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={host}", "-keyout", str(key), "-out", str(csr))
        _openssl("x509", "-req", "-in", str(csr), "-CA", str(self.ca_file), "-CAkey", str(self.pki / "ca.key"),
                 "-CAcreateserial", "-days", "1", "-extfile", str(ext), "-out", str(crt))  # fmt: skip
        return folder

    def service_account_kubeconfig(
        self, namespace: str, name: str, path: Path | None = None, bound_to_secret: str | None = None
    ) -> Path:
        """A kubeconfig that authenticates as ServiceAccount ``namespace/name`` with a token from the
        TokenRequest API (the ServiceAccount is created when absent). With ``bound_to_secret``, the token is bound
        to a Secret of that name (created here): deleting the Secret revokes the token, as rotation does."""
        import kubernetes

        core = self.core()
        self.create_namespace(namespace)
        with contextlib.suppress(kubernetes.client.ApiException):
            core.create_namespaced_service_account(namespace, {"metadata": {"name": name}})
        spec: dict[str, Any] = {"audiences": ["https://kubernetes.default.svc"], "expirationSeconds": 86400}
        if bound_to_secret:
            secret = core.create_namespaced_secret(namespace, {"metadata": {"name": bound_to_secret}})
            spec["boundObjectRef"] = {"apiVersion": "v1", "kind": "Secret", "name": bound_to_secret,
                                      "uid": secret.metadata.uid}  # fmt: skip
        request = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec}
        token = core.create_namespaced_service_account_token(name, namespace, request).status.token
        target = path or self.workdir / f"sa-{namespace}-{name}.kubeconfig"
        return self._write_kubeconfig(target, f"system:serviceaccount:{namespace}:{name}", token)


def _fast_tmp() -> str | None:
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None


def _http_ok(url: str) -> bool:
    import urllib.request

    with urllib.request.urlopen(url, timeout=2) as resp:
        return resp.status == 200


def _established(crd: Any) -> bool:
    return any(c.type == "Established" and c.status == "True" for c in (crd.status.conditions or []))


def _replace(client: Any, doc: dict[str, Any]) -> None:
    import kubernetes

    dyn = kubernetes.dynamic.DynamicClient(client)
    api = dyn.resources.get(api_version=doc["apiVersion"], kind=doc["kind"])
    ns = doc["metadata"].get("namespace")
    current = api.get(name=doc["metadata"]["name"], namespace=ns)
    body = dict(doc, metadata=dict(doc["metadata"], resourceVersion=current.metadata.resourceVersion))
    api.replace(body=body, namespace=ns)


def _controller_manager_binary() -> Path:
    if CONTROLLER_MANAGER.is_file():
        return CONTROLLER_MANAGER
    script = ROOT / "scripts" / "build-kube.sh"
    env = {**os.environ, "PREFOPS_CACHE": str(CACHE)}
    result = subprocess.run([str(script), "kube-controller-manager"], capture_output=True, text=True, env=env)
    if result.returncode != 0 or not CONTROLLER_MANAGER.is_file():
        raise ClusterError(f"could not build kube-controller-manager with {script}:\n{result.stderr[-2000:]}")
    return CONTROLLER_MANAGER
