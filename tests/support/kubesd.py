"""Kubernetes service discovery for a test Prometheus, served over HTTP SD.

Debian's Prometheus 2.42 is built without ``kubernetes_sd_configs``. :class:`KubernetesDiscovery` serves what that
discovery would find, read from the API with the caller's (read-only) client: for role ``pod`` one target per
container port, for role ``endpoints`` one per endpoint address and port, each with the ``__meta_kubernetes_*``
labels Prometheus' own Kubernetes discovery sets. Prometheus reads them through ``http_sd_configs`` (URL
``<url>/?role=pod&namespaces=a,b``), and the relabeling generated from a PodMonitor or ServiceMonitor
(``support.prometheus.monitor_scrape_configs``) applies to them unchanged.
"""

from __future__ import annotations

import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .kube import free_port

META = "__meta_kubernetes_"


def _name(label: str) -> str:
    """A Kubernetes label name as Prometheus writes it in a meta label (``prefops.dev/job-name`` → ``prefops_dev_job_name``)."""
    return "".join(c if c.isalnum() else "_" for c in label)


def _labels(prefix: str, labels: dict[str, str] | None) -> dict[str, str]:
    out = {}
    for key, value in (labels or {}).items():
        out[f"{META}{prefix}_label_{_name(key)}"] = value
        out[f"{META}{prefix}_labelpresent_{_name(key)}"] = "true"
    return out


def _pod_labels(pod: Any) -> dict[str, str]:
    ready = any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])
    return {
        f"{META}namespace": pod.metadata.namespace,
        f"{META}pod_name": pod.metadata.name,
        f"{META}pod_ip": pod.status.pod_ip or "",
        f"{META}pod_node_name": pod.spec.node_name or "",
        f"{META}pod_phase": pod.status.phase or "",
        f"{META}pod_ready": str(ready).lower(),
        f"{META}pod_uid": pod.metadata.uid,
        **_labels("pod", pod.metadata.labels),
    }


def pod_targets(pods: list[Any]) -> list[dict[str, Any]]:
    """Role ``pod``: a target per container port of every pod with an IP (a port-less target per portless container)."""
    groups = []
    for pod in pods:
        if not pod.status.pod_ip:
            continue
        for container in pod.spec.containers:
            base = {**_pod_labels(pod), f"{META}pod_container_name": container.name,
                    f"{META}pod_container_image": container.image, f"{META}pod_container_init": "false"}  # fmt: skip
            for port in container.ports or [None]:
                labels = dict(base)
                address = pod.status.pod_ip
                if port is not None:
                    address = f"{address}:{port.container_port}"
                    labels |= {f"{META}pod_container_port_name": port.name or "",
                               f"{META}pod_container_port_number": str(port.container_port),
                               f"{META}pod_container_port_protocol": port.protocol or "TCP"}  # fmt: skip
                groups.append({"targets": [address], "labels": labels})
    return groups


def endpoints_targets(endpoints: list[Any], services: dict[tuple[str, str], Any], pods: dict[tuple[str, str], Any]):
    """Role ``endpoints``: a target per address and port, with its Service's and (when one backs it) pod's labels."""
    groups = []
    for ep in endpoints:
        key = (ep.metadata.namespace, ep.metadata.name)
        service = services.get(key)
        common = {f"{META}namespace": ep.metadata.namespace, f"{META}endpoints_name": ep.metadata.name}
        if service is not None:
            common |= {f"{META}service_name": service.metadata.name, **_labels("service", service.metadata.labels)}
        for subset in ep.subsets or []:
            addresses = [(a, "true") for a in subset.addresses or []]
            addresses += [(a, "false") for a in subset.not_ready_addresses or []]
            for address, ready in addresses:
                ref = address.target_ref
                pod = pods.get((ref.namespace, ref.name)) if ref is not None and ref.kind == "Pod" else None
                for port in subset.ports or []:
                    labels = {**common, f"{META}endpoint_port_name": port.name or "",
                              f"{META}endpoint_port_protocol": port.protocol or "TCP", f"{META}endpoint_ready": ready,
                              **(_pod_labels(pod) if pod is not None else {})}  # fmt: skip
                    groups.append({"targets": [f"{address.ip}:{port.port}"], "labels": labels})
    return groups


class KubernetesDiscovery:
    """An HTTP SD endpoint on 127.0.0.1 answering ``/?role=pod|endpoints[&namespaces=a,b]`` from the API."""

    def __init__(self, core: Any) -> None:
        self.core = core
        discovery = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                query = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
                namespaces = [n for n in query.get("namespaces", [""])[0].split(",") if n]
                body = json.dumps(discovery.targets(query.get("role", ["pod"])[0], namespaces)).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True, name="kubesd")

    def _list(self, kind: str, namespaces: list[str]) -> list[Any]:
        if not namespaces:
            return list(getattr(self.core, f"list_{kind}_for_all_namespaces")().items)
        return [item for ns in namespaces for item in getattr(self.core, f"list_namespaced_{kind}")(ns).items]

    def targets(self, role: str, namespaces: list[str]) -> list[dict[str, Any]]:
        pods = self._list("pod", namespaces)
        if role == "pod":
            return pod_targets(pods)
        services = {(s.metadata.namespace, s.metadata.name): s for s in self._list("service", namespaces)}
        by_name = {(p.metadata.namespace, p.metadata.name): p for p in pods}
        return endpoints_targets(self._list("endpoints", namespaces), services, by_name)

    def __enter__(self) -> KubernetesDiscovery:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
