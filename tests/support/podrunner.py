"""The one stand-in of the e2e loop: a kubelet (and scheduler) that really runs each pod's container command.

There is no container runtime on these machines, so :class:`PodRunner` watches pods through the real apiserver
and, for each new one, does what a kubelet would, with processes instead of containers:

* **image** → the repository's own installation: ``command`` is looked up on the ``.venv``'s PATH, and the
  image's environment is the ``ENV`` of its Dockerfile (``images/trainer/Dockerfile``);
* **network namespace** → a loopback address of its own (``127.0.1.N``; all of 127/8 is local): it becomes
  ``status.podIP``, servers in the pod bind it (``PREFOPS_METRICS_ADDR``), and names under a headless Service
  (``<pod>.<service>``) resolve to the named pod's address — the only "DNS" the trainer needs;
* **volumes** → folders: a ConfigMap's keys are written as files, an emptyDir is a fresh folder, and paths under
  a ``mountPath`` in arguments and environment are rewritten to the folder (``/dev/shm`` stays the host's);
* **env / envFrom** → resolved from the pod spec, Secrets, ConfigMaps and the downward API;
* **terminationMessagePath** → a file per pod (``PREFOPS_TERMINATION_LOG``), its content reported as the
  terminated container's ``message`` (the last log lines with ``FallbackToLogsOnError`` when it is empty);
* **status** → ``pods/status`` patches as a kubelet makes them: Running with the pod IP, then Succeeded or
  Failed with the container's exit code;
* **deletion** → the process group is killed (SIGTERM, then SIGKILL after 5 s).

Pods run as the test's user (the uid in ``securityContext`` is not applied), and all share one filesystem.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .kube import ROOT

VENV_BIN = Path(os.environ.get("VIRTUAL_ENV", ROOT / ".venv")) / "bin"
#: Host settings passed through to pods (what the machine, not the pod, decides).
PASSTHROUGH = ("OMP_WAIT_POLICY", "TORCH_EXTENSIONS_DIR", "TMPDIR", "LANG", "LC_ALL")


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def image_env(dockerfile: Path) -> dict[str, str]:
    """The ``ENV`` an image sets, read from its Dockerfile."""
    from dockerfile_parse import DockerfileParser

    with dockerfile.open("rb") as f:
        return dict(DockerfileParser(fileobj=f).envs)


@dataclass
class RunningPod:
    namespace: str
    name: str
    ip: str
    workdir: Path
    popen: subprocess.Popen[bytes]
    metrics_port: int | None = None
    deleted: bool = False

    @property
    def log(self) -> Path:
        return self.workdir / "container.log"


@dataclass
class PodRunner:
    core: Any  # kubernetes.client.CoreV1Api as admin
    namespace: str
    workdir: Path
    images: dict[str, dict[str, str]] = field(default_factory=dict)  # image env by image name prefix
    file_sd: Path | None = None  # Prometheus file_sd targets of running pods' "metrics" ports
    pods: dict[str, RunningPod] = field(default_factory=dict)
    started: list[str] = field(default_factory=list)  # every pod ever started, in order

    def __post_init__(self) -> None:
        self._next_ip = (f"127.0.{1 + i // 250}.{1 + i % 250}" for i in itertools.count())
        self._ips: dict[str, str] = {}  # pod name → its address, stable across attempts (DNS of the pod name)
        self._services: dict[str, bool] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True, name="podrunner")

    def __enter__(self) -> PodRunner:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for pod in list(self.pods.values()):
            self._kill(pod)

    # -- watching ----------------------------------------------------------------------------------------------

    def _watch(self) -> None:
        from kubernetes import watch

        while not self._stop.is_set():
            try:
                for event in watch.Watch().stream(
                    self.core.list_namespaced_pod, self.namespace, timeout_seconds=5, _request_timeout=10
                ):
                    self._on_event(event["type"], event["object"])
                    if self._stop.is_set():
                        return
            except Exception:  # the apiserver may be restarting; watch again
                time.sleep(0.5)

    def _on_event(self, kind: str, pod: Any) -> None:
        name = pod.metadata.name
        with self._lock:
            known = self.pods.get(name)
            if kind == "DELETED" or pod.metadata.deletion_timestamp:
                if known and known.popen.pid and pod.metadata.uid == known.workdir.name.split("@")[-1]:
                    known.deleted = True
                    self._kill(known)
                    self.pods.pop(name, None)
                    self._write_targets()
                return
            if known is not None and known.workdir.name.endswith(pod.metadata.uid):
                return
            if pod.status.phase not in (None, "Pending") or pod.status.pod_ip:
                return
            self.pods[name] = self._start(pod)
            self.started.append(name)
            self._write_targets()

    # -- one pod -----------------------------------------------------------------------------------------------

    def ip_of(self, name: str) -> str:
        if name not in self._ips:
            self._ips[name] = next(self._next_ip)
        return self._ips[name]

    def _start(self, pod: Any) -> RunningPod:
        ip = self.ip_of(pod.metadata.name)
        workdir = self.workdir / f"{pod.metadata.name}@{pod.metadata.uid}"
        workdir.mkdir(parents=True)
        container = pod.spec.containers[0]
        mounts = self._volumes(pod, container, workdir)
        env = self._env(pod, container, ip, mounts, workdir)
        argv = [self._resolve(c) for c in (container.command or [])] + list(container.args or [])
        argv = [_remap(a, mounts) for a in argv]
        with (workdir / "container.log").open("wb") as log:
            popen = subprocess.Popen(argv, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)  # fmt: skip
        ports = {p.name: p.container_port for p in container.ports or []}
        running = RunningPod(pod.metadata.namespace, pod.metadata.name, ip, workdir, popen, ports.get("metrics"))
        started = _now()
        self._patch(running, {
            "phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}], "hostIP": "127.0.0.1", "startTime": started,
            "conditions": [{"type": t, "status": "True", "lastTransitionTime": started}
                           for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")],
            "containerStatuses": [self._container_status(container, {"running": {"startedAt": started}}, True)],
        })  # fmt: skip
        threading.Thread(target=self._await_exit, args=(running, container, started), daemon=True).start()
        return running

    def _await_exit(self, running: RunningPod, container: Any, started: str) -> None:
        code = running.popen.wait()
        if running.deleted or self._stop.is_set():
            return
        message = _read(running.workdir / "termination-log")
        if not message and code != 0 and container.termination_message_policy == "FallbackToLogsOnError":
            message = "\n".join(_read(running.log).splitlines()[-20:])
        exit_code = 128 - code if code < 0 else code  # killed by signal N: 128 + N, as a container runtime says
        terminated = {"exitCode": exit_code, "reason": "Completed" if code == 0 else "Error", "message": message[-4096:],
                      "startedAt": started, "finishedAt": _now()}  # fmt: skip
        with self._lock:
            self.pods.pop(running.name, None)
            self._write_targets()
        with contextlib.suppress(Exception):  # the pod may be gone already
            self._patch(running, {
                "phase": "Succeeded" if code == 0 else "Failed",
                "conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": _now()}],
                "containerStatuses": [self._container_status(container, {"terminated": terminated}, False)],
            })  # fmt: skip

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Kill a running pod's process, as a crash or an OOM kill would (the pod then reports Failed)."""
        pod = self.pods[name]
        os.killpg(pod.popen.pid, sig)

    def _kill(self, pod: RunningPod) -> None:
        if pod.popen.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pod.popen.pid, signal.SIGTERM)
        try:
            pod.popen.wait(5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pod.popen.pid, signal.SIGKILL)

    # -- what a kubelet assembles ------------------------------------------------------------------------------

    def _resolve(self, command: str) -> str:
        candidate = VENV_BIN / command
        return str(candidate) if candidate.exists() else command

    def _volumes(self, pod: Any, container: Any, workdir: Path) -> dict[str, str]:
        """mountPath → local folder, for every mount but /dev/shm."""
        sources = {v.name: v for v in pod.spec.volumes or []}
        mounts = {}
        for mount in container.volume_mounts or []:
            if mount.mount_path == "/dev/shm":
                continue
            local = workdir / "volumes" / mount.name
            local.mkdir(parents=True, exist_ok=True)
            volume = sources[mount.name]
            if volume.config_map is not None:
                data = self.core.read_namespaced_config_map(volume.config_map.name, pod.metadata.namespace).data
                for key, value in (data or {}).items():
                    (local / key).write_text(value)
            mounts[mount.mount_path.rstrip("/")] = str(local)
        return mounts

    def _env(self, pod: Any, container: Any, ip: str, mounts: dict[str, str], workdir: Path) -> dict[str, str]:
        env = {"PATH": f"{VENV_BIN}:/usr/local/bin:/usr/bin:/bin", "HOME": str(workdir)}
        env |= {k: os.environ[k] for k in PASSTHROUGH if k in os.environ}
        for prefix, values in self.images.items():
            if container.image.startswith(prefix):
                env |= values
        ns = pod.metadata.namespace
        for source in container.env_from or []:
            if source.secret_ref is not None:
                env |= _decode(self.core.read_namespaced_secret(source.secret_ref.name, ns).data)
            if source.config_map_ref is not None:
                env |= self.core.read_namespaced_config_map(source.config_map_ref.name, ns).data or {}
        for var in container.env or []:
            env[var.name] = var.value if var.value_from is None else self._value_from(pod, var.value_from, ip)
        env = {k: self._resolve_names(_remap(v, mounts), ns) for k, v in env.items()}
        # the pod's own network namespace: servers bind the pod IP; the runtime's termination-message file
        env["PREFOPS_METRICS_ADDR"] = ip
        env["PREFOPS_TERMINATION_LOG"] = str(workdir / "termination-log")
        (workdir / "termination-log").write_text("")
        return env

    def _value_from(self, pod: Any, source: Any, ip: str) -> str:
        if source.field_ref is not None:
            path = source.field_ref.field_path
            return {"status.podIP": ip, "metadata.name": pod.metadata.name,
                    "metadata.namespace": pod.metadata.namespace, "metadata.uid": pod.metadata.uid}[path]  # fmt: skip
        if source.secret_key_ref is not None:
            ref = source.secret_key_ref
            return _decode(self.core.read_namespaced_secret(ref.name, pod.metadata.namespace).data)[ref.key]
        ref = source.config_map_key_ref
        return self.core.read_namespaced_config_map(ref.name, pod.metadata.namespace).data[ref.key]

    def _resolve_names(self, value: str, namespace: str) -> str:
        """``<pod>.<headless service>[.<ns>[.svc...]]`` → that pod's loopback address. As with cluster DNS the
        name resolves before the pod listens; clients (torchrun's rendezvous) retry until it does."""
        parts = value.split(".")
        if len(parts) < 2 or not all(parts) or any(c in value for c in "/:= "):
            return value
        if (len(parts) == 2 or parts[2] == namespace) and self._is_service(parts[1], namespace):
            return self.ip_of(parts[0])
        return value

    def _is_service(self, name: str, namespace: str) -> bool:
        if name not in self._services:
            try:
                self.core.read_namespaced_service(name, namespace)
                self._services[name] = True
            except Exception:
                self._services[name] = False
        return self._services[name]

    def _container_status(self, container: Any, state: dict[str, Any], ready: bool) -> dict[str, Any]:
        return {"name": container.name, "image": container.image, "imageID": "", "ready": ready,
                "restartCount": 0, "started": ready, "state": state}  # fmt: skip

    def _patch(self, pod: RunningPod, status: dict[str, Any]) -> None:
        self.core.patch_namespaced_pod_status(pod.name, pod.namespace, {"status": status})

    def _write_targets(self) -> None:
        """Prometheus file_sd targets: the "metrics" port of every running pod, labelled like a PodMonitor's."""
        if self.file_sd is None:
            return
        groups = [
            {"targets": [f"{pod.ip}:{pod.metrics_port}"], "labels": {"namespace": pod.namespace, "pod": pod.name}}
            for pod in self.pods.values()
            if pod.metrics_port
        ]
        tmp = self.file_sd.with_suffix(".tmp")
        tmp.write_text(json.dumps(groups))
        tmp.replace(self.file_sd)

    def log_of(self, name: str) -> str:
        logs = sorted(self.workdir.glob(f"{name}@*/container.log"), key=lambda p: p.stat().st_mtime)
        return logs[-1].read_text(errors="replace") if logs else ""


def _remap(value: str, mounts: dict[str, str]) -> str:
    for path, local in mounts.items():
        if value == path or value.startswith(path + "/"):
            return local + value[len(path) :]
    return value


def _decode(data: dict[str, str] | None) -> dict[str, str]:
    import base64

    return {k: base64.b64decode(v).decode() for k, v in (data or {}).items()}


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace").strip()
    except OSError:
        return ""
