"""S3 and S3-compatible stores as a :class:`~.Store`, on s3fs (botocore underneath).

Endpoint, region and credentials come from the standard AWS environment variables (``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``...), so MinIO, Ceph and the like work too. A single
PUT is atomic; a file of two parts or more goes up as a multipart upload, which S3 assembles only when it completes.
The sha256 a file was put with is its user metadata ``x-amz-meta-sha256``. Failures: s3fs turns a 404 into
``FileNotFoundError`` and a 403 into ``PermissionError``; :func:`..retry.is_transient` tells an outage (connection
errors, 5xx, 429, ``SlowDown``) from the rest. botocore retries quickly first (``AWS_MAX_ATTEMPTS``, default 8).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Literal

from ..retry import is_transient
from . import RemoteFile

log = logging.getLogger(__name__)

#: Part size of multipart uploads (files of two parts or more go up in parts); S3's minimum is 5 MiB.
PART_SIZE = max(5 * 2**20, int(os.environ.get("PREFOPS_S3_PART_SIZE", 16 * 2**20)))


def _remote_file(info: dict[str, Any]) -> RemoteFile:
    version = info.get("ETag") or info.get("etag") or info.get("mtime") or ""
    return RemoteFile(int(info.get("size") or 0), str(version).strip('"'))


class S3Store:
    """One s3fs filesystem, with no listing cache (other processes write the same prefixes)."""

    def __init__(self) -> None:
        import s3fs

        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        self.fs: Any = s3fs.S3FileSystem(
            endpoint_url=endpoint,
            default_block_size=PART_SIZE,
            config_kwargs={"retries": {"max_attempts": int(os.environ.get("AWS_MAX_ATTEMPTS", 8)), "mode": "adaptive"}},
            use_listings_cache=False,
            skip_instance_cache=True,
        )

    def exists(self, path: str) -> bool:
        return bool(self.fs.exists(path))

    def read(self, path: str) -> bytes:
        return bytes(self.fs.cat_file(path))

    def write(self, path: str, data: bytes) -> None:
        self.fs.pipe_file(path, data)

    def names(self, path: str) -> list[str]:
        try:
            entries = self.fs.ls(path, detail=False)
        except FileNotFoundError:
            return []
        return sorted({Path(e).name for e in entries})

    def files(self, path: str) -> dict[str, RemoteFile]:
        """Zero-byte keys ending in ``/`` (the folder markers some consoles create) are not files and are left out."""
        try:
            found = self.fs.find(path, detail=True)
        except FileNotFoundError:
            return {}
        root = path.rstrip("/") + "/"
        files = {p[len(root) :]: _remote_file(info) for p, info in found.items() if p.startswith(root)}
        return {rel: f for rel, f in files.items() if not (rel.endswith("/") and f.size == 0)}

    def kind(self, path: str) -> Literal["file", "directory"] | None:
        try:
            info = self.fs.info(path)
        except FileNotFoundError:
            return None
        return "directory" if info.get("type") == "directory" else "file"

    def stat(self, path: str) -> RemoteFile:
        return _remote_file(self.fs.info(path))

    def put(self, local: Path, path: str, sha256: str | None) -> None:
        meta = {"Metadata": {"sha256": sha256}} if sha256 else {}
        self.fs.put_file(str(local), path, chunksize=PART_SIZE, **meta)

    def stored_sha256(self, path: str) -> str | None:
        try:
            found: dict[str, str] = self.fs.metadata(path)
        except FileNotFoundError:
            return None
        return found.get("sha256")

    def fetch(self, path: str, dest: Path) -> None:
        self.fs.get_file(path, str(dest))

    def abort_multipart(self, path: str) -> int:
        bucket, _, prefix = path.partition("/")
        found = self.fs.call_s3("list_multipart_uploads", Bucket=bucket, Prefix=prefix).get("Uploads", [])
        for upload in found:
            self.fs.call_s3("abort_multipart_upload", Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
        return len(found)

    def remove(self, path: str) -> None:
        if self.fs.exists(path):
            self.fs.rm(path, recursive=True)

    def transient(self, error: BaseException) -> bool:
        return is_transient(error)
