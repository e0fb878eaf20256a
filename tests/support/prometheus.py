"""A real Prometheus server (Debian's ``prometheus``) on 127.0.0.1 scraping given targets every second, with
helpers over its HTTP query API. A server that does not start raises."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

from .kube import free_port, stop_process


@dataclass
class Prometheus:
    url: str
    process: subprocess.Popen

    @classmethod
    def start(cls, workdir: Path, targets: dict[str, list[str]], file_sd: dict[str, Path] | None = None) -> Prometheus:
        """``targets``: scrape job name → ["host:port", ...]; ``file_sd``: scrape job name → a file_sd JSON file
        (targets discovered while Prometheus runs, as a PodMonitor's are)."""
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
            ],
        }
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        port = free_port()
        log = (workdir / "prometheus.log").open("w")
        proc = subprocess.Popen(
            [exe, f"--config.file={workdir / 'prometheus.yml'}", f"--storage.tsdb.path={workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=1h"],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        server = cls(f"http://127.0.0.1:{port}", proc)
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
