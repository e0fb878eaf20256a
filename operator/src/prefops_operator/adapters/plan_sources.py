"""What the admission plan reads besides the spec: the model's ``config.json`` and the GPUs' memory.

The operator holds no storage credentials and may not read the jobs' Secrets (least privilege), so it reads a
model's config from one of two places only:

- a ConfigMap the job names (``spec.model.configMap``, key ``config.json``) in its own namespace: the operator can
  already read ConfigMaps, and the user decides what it sees;
- for an ``hf://`` source, the Hub: one HTTPS GET of ``<hub>/<repo>/resolve/<revision>/config.json`` with no
  credentials (public models only), no redirect followed, a 10 s timeout and a 1 MiB cap, the body parsed as a JSON
  object and nothing else (``--hub-endpoint``; empty turns it off).

``s3://`` and local sources are not read: the plan is skipped and the Feasible condition says why. The GPUs' memory
is ``spec.resources.gpuMemory`` (the planner reads it from the spec), else the smallest ``nvidia.com/gpu.memory``
label (MiB) among the nodes the job's nodeSelector admits (``--gpu-memory-label``; listing nodes needs the RBAC the
chart grants). The node list is read once for every job admitted within :data:`NODES_TTL` seconds: a burst of new
jobs costs one list, not one each.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping
from typing import Any

import aiohttp

from ..core.admission import PlanSources
from ..core.rules.schemes import SCHEMES, split
from ..core.spec import Job
from .capped import read_capped
from .kube import Forbidden, KubeApi

log = logging.getLogger(__name__)

CONFIG_KEY = "config.json"
MAX_CONFIG_BYTES = 1 << 20
HUB_TIMEOUT = 10.0
MIB = 1 << 20
NODES_TTL = 5.0  # seconds one read of the nodes' labels serves every job admitted meanwhile


class SourceReader:
    """Reads :class:`PlanSources` for a job; every failure becomes a reason, never an exception or a hang."""

    def __init__(self, api: KubeApi, hub_endpoint: str, memory_label: str, timeout: float = HUB_TIMEOUT) -> None:
        self.api, self.hub, self.label, self.timeout = api, hub_endpoint.rstrip("/"), memory_label, timeout
        self._nodes: asyncio.Task[list[tuple[str, Mapping[str, str]]]] | None = None
        self._nodes_until = 0.0

    async def gather(self, job: Job) -> PlanSources:
        spec = job.spec.raw
        model, reward = _obj(spec, "model"), _obj(spec, "rewardModel")
        config, missing = await self.config(job.meta.namespace, model, "spec.model")
        reward_config = None
        if reward:
            reward_config, why = await self.config(job.meta.namespace, reward, "spec.rewardModel")
            if why:
                log.info("%s/%s: reward model config not read: %s", job.meta.namespace, job.meta.name, why)
        memory, source, memory_missing = await self.memory(spec)
        return PlanSources(config, reward_config, memory, source, missing, memory_missing)

    async def config(
        self, namespace: str, model: Mapping[str, Any], field: str
    ) -> tuple[dict[str, Any] | None, str | None]:
        """(config.json, None) or (None, why not)."""
        name = model.get("configMap")
        if isinstance(name, str) and name:
            return await self._from_config_map(namespace, name, field)
        source = str(model.get("source") or "")
        scheme, repo = split(source)
        if scheme not in SCHEMES or SCHEMES[scheme].reach != "hub":
            return None, (
                f"{field}.source {source!r} is not read by the operator (it holds no storage credentials); "
                f"name a ConfigMap holding its config.json in {field}.configMap"
            )
        if not self.hub:
            return None, f"the operator reads no Hub (--hub-endpoint is empty); set {field}.configMap"
        return await self._from_hub(repo, model.get("revision"), field)

    async def _from_config_map(self, namespace: str, name: str, field: str) -> tuple[dict[str, Any] | None, str | None]:
        try:
            data = await self.api.config_map_data(namespace, name)
        except Forbidden as e:  # anything else temporary propagates: the reconcile is retried
            return None, f"{field}.configMap: the operator may not read ConfigMap {name} ({e.message})"
        if data is None:
            return None, f"{field}.configMap: ConfigMap {name} does not exist in namespace {namespace}"
        text = data.get(CONFIG_KEY)
        if not isinstance(text, str):
            return None, f"{field}.configMap: ConfigMap {name} has no key {CONFIG_KEY}"
        return _parse(text.encode(), f"{field}.configMap: ConfigMap {name}'s {CONFIG_KEY}")

    async def _from_hub(self, repo: str, revision: Any, field: str) -> tuple[dict[str, Any] | None, str | None]:
        name, _, at_rev = repo.partition("@")
        rev = str(revision or at_rev or "main")
        url = f"{self.hub}/{name}/resolve/{rev}/{CONFIG_KEY}"
        what = f"{field}.source: {CONFIG_KEY} of hf://{repo} from {self.hub}"
        try:
            timeout = aiohttp.ClientTimeout(total=self.timeout)
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.get(url, allow_redirects=False) as resp,
            ):
                if resp.status != 200:
                    return None, f"{what}: HTTP {resp.status} (gated, private, missing, or a redirect: not followed)"
                body = await read_capped(resp.content, MAX_CONFIG_BYTES)
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as e:
            return None, f"{what}: {type(e).__name__}: {e}"
        if body is None:
            return None, f"{what}: larger than {MAX_CONFIG_BYTES} bytes, not a model config"
        return _parse(body, what)

    async def memory(self, spec: Mapping[str, Any]) -> tuple[int | None, str | None, str | None]:
        """(bytes, where from, None), or (None, None, why unknown); (None, None, None) when the spec sets it or the
        job uses no GPU (the planner reads the spec)."""
        res = _obj(spec, "resources")
        if res.get("gpuMemory") is not None or res.get("gpusPerNode", 1) == 0:
            return None, None, None
        if not self.label:
            return None, None, "no spec.resources.gpuMemory (and --gpu-memory-label is empty)"
        try:
            nodes = await self._node_labels()
        except Forbidden:
            return None, None, "no spec.resources.gpuMemory, and the operator may not list nodes to read their labels"
        return _smallest(nodes, _obj(res, "nodeSelector"), self.label)

    def _node_labels(self) -> asyncio.Task[list[tuple[str, Mapping[str, str]]]]:
        """The nodes' labels, read at most once every :data:`NODES_TTL` seconds; jobs admitted at once share the read
        under way (a failed read, too, until it expires)."""
        now = time.monotonic()
        if self._nodes is None or now >= self._nodes_until:
            self._nodes, self._nodes_until = asyncio.ensure_future(self.api.node_labels()), now + NODES_TTL
        return self._nodes


def _smallest(
    nodes: list[tuple[str, Mapping[str, str]]], selector: Mapping[str, Any], label: str
) -> tuple[int | None, str | None, str | None]:
    found = []
    for name, labels in nodes:
        if all(labels.get(k) == str(v) for k, v in selector.items()) and str(labels.get(label, "")).isdigit():
            found.append((int(labels[label]) * MIB, name))
    if not found:
        return None, None, f"no spec.resources.gpuMemory, and no node the job may run on has the label {label}"
    memory, node = min(found)
    return memory, f"node label {label} (node {node}, the smallest of {len(found)})", None


def _parse(body: bytes, what: str) -> tuple[dict[str, Any] | None, str | None]:
    if len(body) > MAX_CONFIG_BYTES:
        return None, f"{what}: larger than {MAX_CONFIG_BYTES} bytes"
    try:
        doc = json.loads(body)
    except ValueError as e:
        return None, f"{what}: not JSON ({e})"
    if not isinstance(doc, dict):
        return None, f"{what}: not a JSON object"
    return doc, None


def _obj(d: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = d.get(key)
    return value if isinstance(value, Mapping) else {}
