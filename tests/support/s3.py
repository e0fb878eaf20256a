"""A real S3-compatible server on 127.0.0.1 for tests: moto's standalone server (``moto_server``), spoken to
over HTTP by boto3/s3fs exactly as AWS, MinIO or Ceph would be. A server that does not start raises."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .kube import free_port, stop_process

ACCESS_KEY, SECRET_KEY, REGION = "prefops-test", "prefops-test-secret", "us-east-1"


@dataclass
class S3Server:
    endpoint: str
    process: subprocess.Popen

    @classmethod
    def start(cls, log: Path, host: str = "127.0.0.1") -> S3Server:
        """Start moto_server on ``host`` (loopback, or a test node's bridge address for pods to reach)."""
        port = free_port(host)
        exe = shutil.which("moto_server") or str(Path(sys.executable).parent / "moto_server")
        proc = subprocess.Popen([exe, "-H", host, "-p", str(port)], stdout=log.open("w"), stderr=subprocess.STDOUT)
        server = cls(f"http://{host}:{port}", proc)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"moto_server exited with {proc.returncode}: {log.read_text()[-2000:]}")
            try:
                urllib.request.urlopen(server.endpoint, timeout=1)
                return server
            except OSError:
                time.sleep(0.1)
        proc.kill()
        raise RuntimeError(f"moto_server did not answer on {server.endpoint} within 30 s")

    @property
    def env(self) -> dict[str, str]:
        """The standard AWS variables that point any S3 client (boto3, s3fs, the trainer) at this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
        }

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=ACCESS_KEY,
                            aws_secret_access_key=SECRET_KEY, region_name=REGION)  # fmt: skip

    def create_bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))

    def get(self, bucket: str, key: str) -> bytes:
        return self.client().get_object(Bucket=bucket, Key=key)["Body"].read()

    def stop(self) -> None:
        stop_process(self.process)


def use_env(server: S3Server) -> None:
    """Point this process's S3 clients at ``server`` (tests that call the trainer in-process)."""
    os.environ.update(server.env)


try:
    import pytest
except ImportError:  # pragma: no cover - tests always have pytest
    pytest = None

if pytest is not None:

    @pytest.fixture(scope="session")
    def s3_server(tmp_path_factory):
        """A real S3-compatible server (moto_server) on 127.0.0.1 for the whole session."""
        server = S3Server.start(tmp_path_factory.mktemp("s3") / "moto.log")
        yield server
        server.stop()
