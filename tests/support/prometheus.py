"""A real Prometheus server (Debian's ``prometheus``) on 127.0.0.1 scraping given targets every second, with
helpers over its HTTP query API. A server that does not start raises.

:func:`monitor_scrape_configs` turns Prometheus Operator PodMonitors and ServiceMonitors (as the chart renders
them) into the scrape configurations the Prometheus Operator would generate from them (selection, port, labels by
relabeling), over the Kubernetes discovery of ``support.kubesd`` (Debian's Prometheus has no kubernetes_sd), so a
plain Prometheus finds pods and Services exactly as they describe."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .kube import free_port, stop_process


@dataclass
class Prometheus:
    url: str
    process: subprocess.Popen

    @classmethod
    def start(
        cls,
        workdir: Path,
        targets: dict[str, list[str]],
        file_sd: dict[str, Path] | None = None,
        scrape_configs: tuple[dict[str, Any], ...] = (),
        host: str = "127.0.0.1",
    ) -> Prometheus:
        """``targets``: scrape job name → ["host:port", ...]; ``file_sd``: scrape job name → a file_sd JSON file
        (targets discovered while Prometheus runs); ``scrape_configs``: more jobs as Prometheus configures them;
        ``host``: the address it listens on."""
        exe = shutil.which("prometheus")
        if exe is None:
            raise RuntimeError("prometheus is not installed (make servers installs Debian's package)")
        workdir.mkdir(parents=True, exist_ok=True)
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "900ms", "evaluation_interval": "1s"},
            "scrape_configs": [
                *({"job_name": name, "static_configs": [{"targets": addrs}]} for name, addrs in targets.items()),
                *(
                    {"job_name": name, "file_sd_configs": [{"files": [str(path)], "refresh_interval": "1s"}]}
                    for name, path in (file_sd or {}).items()
                ),
                *scrape_configs,
            ],
        }
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        port = free_port(host)
        log = (workdir / "prometheus.log").open("w")
        proc = subprocess.Popen(
            [exe, f"--config.file={workdir / 'prometheus.yml'}", f"--storage.tsdb.path={workdir / 'data'}",
             f"--web.listen-address={host}:{port}", "--storage.tsdb.retention.time=1h"],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        server = cls(f"http://{host}:{port}", proc)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"prometheus exited with {proc.returncode}: {(workdir / 'prometheus.log').read_text()[-2000:]}"
                )
            try:
                with urllib.request.urlopen(f"{server.url}/-/ready", timeout=1) as r:
                    if r.status == 200:
                        return server
            except OSError:
                time.sleep(0.2)
        proc.kill()
        raise RuntimeError("prometheus did not become ready within 30 s")

    def query(self, expr: str) -> list[dict]:
        """Instant query; the result vector (each item has ``metric`` labels and ``value`` [t, "v"])."""
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
        with urllib.request.urlopen(url, timeout=10) as r:
            body = json.load(r)
        if body["status"] != "success":
            raise AssertionError(f"query {expr!r} failed: {body}")
        return body["data"]["result"]

    def values(self, expr: str) -> list[float]:
        return [float(item["value"][1]) for item in self.query(expr)]

    def wait_for(self, expr: str, timeout: float = 60, what: str = "") -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = self.query(expr)
            if result:
                return result
            time.sleep(0.5)
        raise AssertionError(f"prometheus: no result for {expr!r} within {timeout}s {what}")

    def stop(self) -> None:
        stop_process(self.process)


def _label(name: str) -> str:
    """A Kubernetes label name as a Prometheus meta label suffix (``prefops.dev/job-name`` → ``prefops_dev_job_name``)."""
    return "".join(c if c.isalnum() else "_" for c in name)


def _selector_relabels(selector: dict[str, Any], role: str) -> list[dict[str, Any]]:
    """``keep`` rules for a label selector (matchLabels, and matchExpressions with In/NotIn/Exists/DoesNotExist)."""
    meta = f"__meta_kubernetes_{role}_label"
    rules = [
        {
            "action": "keep",
            "source_labels": [f"{meta}_{_label(k)}", f"{meta}present_{_label(k)}"],
            "regex": f"({v});true",
        }
        for k, v in sorted((selector.get("matchLabels") or {}).items())
    ]
    for e in selector.get("matchExpressions") or []:
        key, op = _label(e["key"]), e["operator"]
        if op in ("Exists", "DoesNotExist"):
            action = "keep" if op == "Exists" else "drop"
            rules.append({"action": action, "source_labels": [f"{meta}present_{key}"], "regex": "true"})
        else:
            action = "keep" if op == "In" else "drop"
            values = "|".join(e["values"])
            rules.append({"action": action, "source_labels": [f"{meta}_{key}", f"{meta}present_{key}"],
                          "regex": f"({values});true"})  # fmt: skip
    return rules


def _namespaces(monitor: dict[str, Any]) -> list[str]:
    """The namespaces a monitor looks in; empty: all (``namespaceSelector.any``)."""
    selector = monitor["spec"].get("namespaceSelector") or {}
    if selector.get("any"):
        return []
    return list(selector.get("matchNames") or [monitor["metadata"]["namespace"]])


def _endpoint_settings(endpoint: dict[str, Any]) -> dict[str, Any]:
    settings = {"metrics_path": endpoint.get("path", "/metrics")}
    for key, prom_key in (("interval", "scrape_interval"), ("scrapeTimeout", "scrape_timeout")):
        if endpoint.get(key):
            settings[prom_key] = endpoint[key]
    return settings


def monitor_scrape_configs(monitors: list[dict[str, Any]], discovery_url: str) -> list[dict[str, Any]]:
    """Scrape configurations for PodMonitors and ServiceMonitors, as the Prometheus Operator generates them: the
    Kubernetes targets (role ``pod`` or ``endpoints``, from ``support.kubesd`` at ``discovery_url``) of the
    monitor's namespaces, kept by its selector and port name, labelled ``namespace``, ``pod`` (and ``service``)
    and ``job`` ``<namespace>/<name>``."""
    configs = []
    for monitor in monitors:
        kind, meta, spec = monitor["kind"], monitor["metadata"], monitor["spec"]
        pods = kind == "PodMonitor"
        role = "pod" if pods else "service"
        endpoints = spec["podMetricsEndpoints"] if pods else spec["endpoints"]
        for i, endpoint in enumerate(endpoints):
            port_label = "__meta_kubernetes_pod_container_port_name" if pods else "__meta_kubernetes_endpoint_port_name"
            relabels = [
                *_selector_relabels(spec.get("selector") or {}, role),
                {"action": "keep", "source_labels": [port_label], "regex": endpoint["port"]},
                {"action": "drop", "source_labels": ["__meta_kubernetes_pod_phase"], "regex": "(Failed|Succeeded)"},
                {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
                {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
                *([] if pods else [{"source_labels": ["__meta_kubernetes_service_name"], "target_label": "service"}]),
                {"target_label": "job", "replacement": f"{meta['namespace']}/{meta['name']}"},
                {"target_label": "endpoint", "replacement": endpoint["port"]},
            ]
            query = urllib.parse.urlencode({"role": "pod" if pods else "endpoints",
                                            "namespaces": ",".join(_namespaces(monitor))})  # fmt: skip
            configs.append({
                "job_name": f"{kind[0].lower()}{kind[1:]}/{meta['namespace']}/{meta['name']}/{i}",
                "http_sd_configs": [{"url": f"{discovery_url}/?{query}", "refresh_interval": "1s"}],
                "relabel_configs": relabels,
                **_endpoint_settings(endpoint),
            })  # fmt: skip
    return configs
