"""A node's containerd seen from this machine: ``ctr`` on its socket, and the images it holds. Stdlib only.

The images (``make images``: prefops/operator:dev and prefops/trainer:dev, plus the pause image) are imported into
every node whose containerd lacks their current image ID, each saved once from the engine that built them; versions
an import replaced are pruned, so a node's store holds one version of each.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import components as c
from layout import NodeLayout
from proc import ClusterError, run, say

IMAGES = ("docker.io/prefops/operator:dev", "docker.io/prefops/trainer:dev")
CONTAINERS_CONF = Path(__file__).resolve().parents[1] / "images" / "containers.conf"


def ctr(node: NodeLayout, *args: str | Path, check: bool = True) -> str:
    return run("ctr", "--address", node.socket, "--namespace", "k8s.io", *args, check=check)


def image_id(node: NodeLayout, ref: str) -> str:
    """The config digest (= image ID) of an image in the node's containerd, empty when absent."""
    lines = ctr(node, "images", "ls", f"name=={ref}", check=False).splitlines()
    if len(lines) < 2:
        return ""
    manifest = ctr(node, "content", "get", lines[1].split()[2])
    return str(json.loads(manifest)["config"]["digest"])


def import_images(nodes: Sequence[NodeLayout]) -> None:
    if not c.PAUSE_TAR.exists():
        raise ClusterError(f"no {c.PAUSE_TAR}: start the cluster with scripts/cluster/cluster.sh up")
    with concurrent.futures.ThreadPoolExecutor(len(nodes)) as pool:
        list(pool.map(_import_pause, nodes))
        for image in IMAGES:
            _import_image(pool, nodes, image)
        list(pool.map(_prune, nodes))


def _import_pause(node: NodeLayout) -> None:
    if not image_id(node, c.PAUSE):
        ctr(node, "images", "import", c.PAUSE_TAR)


def _import_image(pool: concurrent.futures.ThreadPoolExecutor, nodes: Sequence[NodeLayout], image: str) -> None:
    engine, env = _engine()
    found = subprocess.run([*engine, "image", "inspect", "--format", "{{.Id}}", image], capture_output=True,
                           text=True, env=env)  # fmt: skip
    if found.returncode != 0:
        raise ClusterError(f"no image {image}: run make images")
    want = "sha256:" + found.stdout.strip().removeprefix("sha256:")
    stale = [n for n in nodes if image_id(n, image) != want]
    if not stale:
        return
    start = time.monotonic()
    tar = c.CACHE / "node" / f".{image.rsplit('/', 1)[-1].replace(':', '-')}.tar"
    tar.parent.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run([*engine, "save", "-o", str(tar), image], check=True, capture_output=True, env=env)
        list(pool.map(lambda n: _import_into(n, tar), stale))
    finally:
        tar.unlink(missing_ok=True)
    for node in stale:
        if image_id(node, image) != want:
            raise ClusterError(f"importing {image} into {node.name} gave another image ID")
    say(f"imported {image} into {', '.join(n.name for n in stale)} in {time.monotonic() - start:.0f} s")


def _import_into(node: NodeLayout, tar: Path) -> None:
    """Import ``tar``; once more when it fails for a lost snapshot. Seen once in a full run after an image changed:
    "failed to prepare extraction snapshot ...: parent snapshot ... does not exist", and the next import passed. An
    import takes no lease on the lower layers already there, so containerd's garbage collection (the previous version
    was just replaced) can take one between the check and the unpack."""
    try:
        ctr(node, "images", "import", tar)
    except ClusterError as e:
        if "snapshot" not in str(e):
            raise
        say(f"importing {tar.name} into {node.name} lost a snapshot; once more ({str(e)[-160:]})")
        ctr(node, "images", "import", tar)


def _prune(node: NodeLayout) -> None:
    """Versions replaced by an import, held by the kubelet's ID reference only: their layers go."""
    keep = {image_id(node, ref) for ref in (c.PAUSE, *IMAGES)}
    for ref in ctr(node, "images", "ls", "-q").split():
        if ref.startswith("sha256:") and ref not in keep:
            ctr(node, "images", "rm", "--sync", ref, check=False)


def _engine() -> tuple[list[str], dict[str, str]]:
    """The container engine scripts/images.sh built the images with: docker when it answers, else podman."""
    if shutil.which("docker") and subprocess.run(["docker", "info"], capture_output=True).returncode == 0:
        return ["docker"], dict(os.environ)
    return ["podman"], {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)}


def tasks(node: NodeLayout) -> list[str]:
    """The IDs of the tasks (running containers) in the node's containerd."""
    return ctr(node, "tasks", "ls", "-q", check=False).split()
