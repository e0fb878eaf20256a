"""The whole loop of the end-to-end tests, on the cluster of :mod:`support.node`: the operator installed from
``charts/prefops`` (its Deployment runs ``prefops/operator:dev`` under the chart's RBAC; trainer pods run
``prefops/trainer:dev``), an S3 server (moto) holding ``examples/tiny`` and Prometheus finding the trainer pods and
the operator's metrics Service as the chart's PodMonitor and ServiceMonitor describe, all in one namespace.

:func:`open_loop` sets it up and tears it down (tests/e2e/conftest.py's ``loop`` fixture, shared by the e2e modules);
:class:`Loop` applies variants of ``examples/tiny-dpo-s3.yaml`` and follows them; :class:`StepLog` follows the
steps a training pod logs, with the container runtime's timestamps.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from kubernetes.client.exceptions import ApiException

from .kube import ROOT
from .kubesd import KubernetesDiscovery
from .node import NODE_IP, Cluster, PodWatch, pod_logs, pod_summary
from .prometheus import Prometheus, monitor_scrape_configs
from .s3 import S3Server

BUCKET = "prefops-demo"
EXAMPLE = ROOT / "examples" / "tiny-dpo-s3.yaml"
JOB_TIMEOUT = 600
OPERATOR_NAMESPACE = "prefops-system"
CHART_VALUES = {
    "image": {"repository": "prefops/operator", "tag": "dev", "pullPolicy": "Never"},
    "trainer": {"image": {"repository": "prefops/trainer", "tag": "dev", "pullPolicy": "Never"}},
    "operator": {"progressInterval": 1},
    "podMonitor": {"enabled": True, "interval": "1s", "scrapeTimeout": "900ms"},
    "serviceMonitor": {"enabled": True, "interval": "1s", "scrapeTimeout": "900ms"},
}
MONITOR_KINDS = ("PodMonitor", "ServiceMonitor")
#: a training step as rank 0 logs it: ``step 5/16 loss=...``
STEP_LINE = re.compile(r"\bstep (\d+)/\d+ loss=")
RESUMED_LINE = re.compile(r"resuming from checkpoint-(\d+)")


def timestamp(value: str) -> datetime:
    """An RFC 3339 time as the apiserver or the container runtime writes it (``Z``, up to nanoseconds)."""
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


class Loop:
    def __init__(self, node: Cluster, namespace: str, s3: S3Server, pods: PodWatch, prom: Prometheus, tmp: Path):
        self.node, self.namespace, self.s3, self.pods, self.prom, self.tmp = node, namespace, s3, pods, prom, tmp

    def kubectl(self, *args: str, timeout: float = 120) -> str:
        return self.node.kubectl(*args, namespace=self.namespace, timeout=timeout)

    def apply(self, name: str, **spec_changes: Any) -> None:
        """Apply ``examples/tiny-dpo-s3.yaml`` as ``name`` with ``spec_changes`` (dotted paths under ``spec``; a
        value of None removes the field)."""
        if not spec_changes and name == "tiny-dpo":
            self.kubectl("apply", "-f", str(EXAMPLE))
            return
        doc = yaml.safe_load(EXAMPLE.read_text())
        doc["metadata"]["name"] = name
        doc["spec"]["output"]["uri"] = f"s3://{BUCKET}/models/{name}"
        for path, value in spec_changes.items():
            node = doc["spec"]
            *parents, leaf = path.split(".")
            for key in parents:
                node = node.setdefault(key, {})
            if value is None:
                node.pop(leaf, None)
            else:
                node[leaf] = value
        manifest = self.tmp / f"{name}.yaml"
        manifest.write_text(yaml.safe_dump(doc))
        self.kubectl("apply", "-f", str(manifest))

    def job(self, name: str) -> dict:
        return self.node.custom().get_namespaced_custom_object(
            "prefops.dev", "v1alpha1", self.namespace, "preferencetrainingjobs", name
        )

    def follow(self, name: str, while_running: Callable[[dict], None] | None = None) -> list[str]:
        """Poll the job until it finishes; return the phases seen, in order."""
        seen: list[str] = []
        deadline = time.monotonic() + JOB_TIMEOUT
        while time.monotonic() < deadline:
            try:
                status = self.job(name).get("status", {})
            except ApiException as e:  # an apiserver starved on a shared machine answers 504: ask again
                if e.status is None or e.status < 500:
                    raise
                continue
            phase = status.get("phase")
            if phase and (not seen or seen[-1] != phase):
                seen.append(phase)
            if phase in ("Succeeded", "Failed"):
                return seen
            if while_running is not None:
                while_running(status)
            time.sleep(0.5)
        raise AssertionError(f"{name} did not finish in {JOB_TIMEOUT}s; phases {seen}; {self.diagnose(name)}")

    def diagnose(self, name: str) -> str:
        logs = "\n".join(
            f"--- {p}\n{pod_logs(self.node, self.namespace, p)[-1500:]}" for p in sorted(set(self.pods.names(name)))
        )
        try:
            operator = self.node.kubectl("logs", "deployment/prefops", "--tail=60", namespace=OPERATOR_NAMESPACE)
        except subprocess.CalledProcessError as e:
            operator = f"(no log: {e.stderr.strip()})"
        pods = pod_summary(self.node, self.namespace)
        events = self.node.kubectl("get", "events", "--sort-by=.lastTimestamp", namespace=self.namespace)
        return f"status={self.job(name).get('status')}\n{pods}\n--- events\n{events}\n{logs}\n--- operator\n{operator}"

    def manifest(self, name: str) -> dict:
        return json.loads(self.s3.get(BUCKET, f"models/{name}/prefops.json"))

    def pod_phase(self, name: str) -> str | None:
        try:
            return self.node.core().read_namespaced_pod(name, self.namespace).status.phase
        except Exception:
            return None

    def running_on(self, pod: str) -> str | None:
        """The node a pod runs on once its container started (phase Running); None before."""
        found = self.node.core().read_namespaced_pod(pod, self.namespace)
        return found.spec.node_name if found.status.phase == "Running" else None

    def steps(self, pod: str) -> StepLog:
        """Follow the steps ``pod`` logs (it must exist); stop it with ``close``, or use it as a context."""
        return StepLog.follow(self.node, self.namespace, pod)

    def logged_steps(self, pod: str) -> list[tuple[datetime, int]]:
        """The steps a pod logged, each with the time its line was written (the pod's log, read once)."""
        return parse_steps(self.kubectl("logs", "--timestamps", pod))

    def resumed_from(self, pod: str) -> int | None:
        """The checkpoint step a training pod resumed from, as it logged it; None when it started afresh."""
        found = RESUMED_LINE.search(self.kubectl("logs", pod))
        return int(found.group(1)) if found else None

    def checkpoints(self, name: str) -> list[int]:
        """The complete checkpoints of a job in the work bucket (every attempt), as steps, in order."""
        keys = self.s3.keys(BUCKET, f"work/jobs/{self.namespace}/{name}/")
        found = [re.search(r"/checkpoint-(\d+)/prefops-complete\.json$", k) for k in keys]
        return sorted({int(m.group(1)) for m in found if m})


def parse_steps(log: str) -> list[tuple[datetime, int]]:
    """``(time, step)`` of each training step in a log read with ``--timestamps``."""
    steps = []
    for line in log.splitlines():
        stamp, _, text = line.partition(" ")
        found = STEP_LINE.search(text)
        if found:
            steps.append((timestamp(stamp), int(found.group(1))))
    return steps


@dataclass
class StepLog:
    """The steps one pod logs, as ``kubectl logs -f --timestamps`` streams them (a thread). The stream ends with the
    container, or when its node dies (the kubelet serving it is gone): what it saw before stays."""

    process: subprocess.Popen
    seen: list[tuple[datetime, int]] = field(default_factory=list)

    @classmethod
    def follow(cls, cluster: Cluster, namespace: str, pod: str) -> StepLog:
        cmd = ["kubectl", f"--kubeconfig={cluster.kubeconfig}", "-n", namespace, "logs", "-f", "--timestamps", pod]
        found = cls(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True))
        threading.Thread(target=found._read, daemon=True, name=f"steps-{pod}").start()
        return found

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.seen.extend(parse_steps(line))

    @property
    def last(self) -> int:
        """The last step seen; 0 before the first."""
        return self.seen[-1][1] if self.seen else 0

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()

    def __enter__(self) -> StepLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def install_chart(node: Cluster) -> list[dict]:
    """Apply charts/prefops as `helm install` would (the CRD first); return the monitors it rendered."""
    from .chart_rendering import render

    rendered = render(CHART_VALUES)
    monitors = [o for o in rendered.objects if o["kind"] in MONITOR_KINDS]
    node.kubectl("create", "namespace", OPERATOR_NAMESPACE)
    crds = [o for o in rendered.objects if o["kind"] == "CustomResourceDefinition"]
    node.apply(crds)
    for crd in crds:
        node.kubectl("wait", "--for=condition=Established", f"crd/{crd['metadata']['name']}", "--timeout=60s")
    node.apply([o for o in rendered.objects if o["kind"] not in ("CustomResourceDefinition", *MONITOR_KINDS)])
    node.kubectl("rollout", "status", "deployment/prefops", "--timeout=180s", namespace=OPERATOR_NAMESPACE)
    return monitors


def uninstall_chart(node: Cluster) -> None:
    """Delete what install_chart made, waiting for it to go (a node that stays up is used again)."""
    node.kubectl("delete", "namespace", OPERATOR_NAMESPACE, "--ignore-not-found", "--timeout=180s", timeout=200)
    for kind in ("ClusterRoleBinding", "ClusterRole", "CustomResourceDefinition"):
        node.kubectl("delete", kind, "-l", "app.kubernetes.io/instance=prefops", "--ignore-not-found", timeout=200)


def discovery(node: Cluster) -> KubernetesDiscovery:
    """Kubernetes discovery for Prometheus, reading the API as Prometheus' own ServiceAccount (read-only)."""
    rbac = ROOT / "tests" / "e2e" / "prometheus-rbac.yaml"
    node.apply(list(yaml.safe_load_all(rbac.read_text())))
    return KubernetesDiscovery(node.core_as(node.service_account_token(OPERATOR_NAMESPACE, "e2e-prometheus")))


@contextlib.contextmanager
def open_loop(node: Cluster, tmp: Path) -> Iterator[Loop]:
    """The operator, S3 (with examples/tiny and the credentials Secret), Prometheus and a namespace of their own;
    all of it gone afterwards."""
    namespace = f"e2e-{secrets.token_hex(3)}"
    with contextlib.ExitStack() as stack:
        s3 = S3Server.start(tmp / "moto.log", host=NODE_IP)
        stack.callback(s3.stop)
        node.kubectl("create", "namespace", namespace)
        stack.callback(node.kubectl, "delete", "namespace", namespace, "--wait=false")
        stack.callback(uninstall_chart, node)
        monitors = install_chart(node)
        sd = stack.enter_context(discovery(node))
        prom = Prometheus.start(tmp / "prom", {}, scrape_configs=tuple(monitor_scrape_configs(monitors, sd.url)),
                                host=NODE_IP)  # fmt: skip
        stack.callback(prom.stop)
        upload_tiny(s3)
        secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s3-creds"}, "stringData": s3.env}
        node.apply([secret], namespace=namespace)
        pods = stack.enter_context(PodWatch(node.core(), namespace))
        yield Loop(node, namespace, s3, pods, prom, tmp)


def upload_tiny(s3: S3Server) -> None:
    """``examples/tiny`` to ``s3://prefops-demo/tiny`` (the bucket created)."""
    client = s3.client()
    client.create_bucket(Bucket=BUCKET)
    tiny = ROOT / "examples" / "tiny"
    for path in sorted(p for p in tiny.rglob("*") if p.is_file()):
        client.upload_file(str(path), BUCKET, f"tiny/{path.relative_to(tiny).as_posix()}")
