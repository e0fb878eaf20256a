"""Where the admission plan reads the model's config.json and the GPUs' memory, against real servers: a real
kube-apiserver (ConfigMaps, nodes and their labels) and a real HTTP server standing in for the Hub on loopback
(this machine reaches no Hub). Every failure is a reason in words, never an exception or a hang."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest
from aiohttp import web
from support.jobs import job_manifest
from support.kube import ADMIN_TOKEN

from prefops_operator.adapters.kube import Credentials, KubeApi
from prefops_operator.adapters.plan_sources import MAX_CONFIG_BYTES, SourceReader
from prefops_operator.core.spec import parse_job

pytestmark = pytest.mark.integration

CONFIGS = Path(__file__).resolve().parents[1] / "fixtures" / "model-configs"
QWEN = json.loads((CONFIGS / "Qwen--Qwen2.5-0.5B-Instruct.json").read_text())


def gather(kube_cluster: Any, namespace: str, spec: dict, hub: str = "", label: str = "nvidia.com/gpu.memory",
           timeout: float = 10.0):  # fmt: skip
    async def run():
        async def credentials() -> Credentials:
            return Credentials(server=kube_cluster.server, token=ADMIN_TOKEN, ca_path=str(kube_cluster.ca_file))

        api = KubeApi(credentials)
        try:
            job = parse_job({**job_manifest("j", spec), "metadata": {"name": "j", "namespace": namespace}})
            return await SourceReader(api, hub, label, timeout).gather(job)
        finally:
            await api.close()

    return asyncio.run(run())


def test_a_config_map_the_job_names_is_read(kube_cluster, namespace):
    kube_cluster.core().create_namespaced_config_map(
        namespace, {"metadata": {"name": "qwen-config"}, "data": {"config.json": json.dumps(QWEN)}}
    )
    sources = gather(kube_cluster, namespace, {"model": {"configMap": "qwen-config"}})
    assert sources.model_config == QWEN and sources.missing is None


def test_a_missing_config_map_or_key_or_a_non_object_is_named(kube_cluster, namespace):
    core = kube_cluster.core()
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "nokey"}, "data": {"other": "{}"}})
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "list"}, "data": {"config.json": "[1]"}})
    cases = {
        "absent": f"spec.model.configMap: ConfigMap absent does not exist in namespace {namespace}",
        "nokey": "spec.model.configMap: ConfigMap nokey has no key config.json",
        "list": "spec.model.configMap: ConfigMap list's config.json: not a JSON object",
    }
    for name, why in cases.items():
        sources = gather(kube_cluster, namespace, {"model": {"configMap": name}})
        assert (sources.model_config, sources.missing) == (None, why)


def test_an_s3_source_is_not_read_and_the_reason_says_what_to_do(kube_cluster, namespace):
    sources = gather(kube_cluster, namespace, {"model": {"source": "s3://models/qwen"}})
    assert sources.model_config is None
    assert "it holds no storage credentials" in sources.missing and "spec.model.configMap" in sources.missing


def test_the_smallest_gpu_memory_label_among_the_nodes_the_job_may_use_is_taken(kube_cluster, namespace):
    core = kube_cluster.core()
    nodes = {"gpu-a": ("81559", "a100"), "gpu-b": ("40960", "a100"), "gpu-c": ("24576", "a10")}
    for name, (memory, kind) in nodes.items():
        core.create_node({"metadata": {"name": f"{namespace}-{name}",
                                       "labels": {"nvidia.com/gpu.memory": memory, "gpu": kind, "test": namespace}}})  # fmt: skip
    try:
        spec = {"resources": {"gpusPerNode": 8, "nodeSelector": {"gpu": "a100", "test": namespace}}}
        sources = gather(kube_cluster, namespace, spec)
        assert sources.memory == 40960 * 2**20
        assert sources.memory_source == f"node label nvidia.com/gpu.memory (node {namespace}-gpu-b, the smallest of 2)"
        sources = gather(kube_cluster, namespace, {"resources": {"gpusPerNode": 8, "nodeSelector": {"gpu": "h100"}}})
        assert sources.memory is None and "no node the job may run on has the label" in sources.memory_missing
        spec_memory = gather(kube_cluster, namespace, {"resources": {"gpuMemory": "80Gi"}})
        assert (spec_memory.memory, spec_memory.memory_missing) == (None, None)  # the planner reads the spec's
    finally:
        for name in nodes:
            core.delete_node(f"{namespace}-{name}")


# -- the Hub, stood in for by a real HTTP server on loopback --------------------------------------------------------


@pytest.fixture
def hub() -> Iterator[tuple[str, list[str]]]:
    """A server answering the Hub's ``/<repo>/resolve/<revision>/config.json`` paths; returns its URL and the paths
    requested."""
    requested: list[str] = []

    async def handle(request: web.Request) -> web.StreamResponse:
        requested.append(request.path_qs)
        repo = request.match_info["repo"]
        if repo == "Qwen/Qwen2.5-0.5B-Instruct":
            return web.json_response(QWEN)
        if repo == "moved/model":
            raise web.HTTPFound("http://127.0.0.1:9/elsewhere/config.json")
        if repo == "huge/model":
            return web.Response(body=b"{" + b" " * MAX_CONFIG_BYTES + b"}")
        if repo == "html/model":
            return web.Response(text="<html>sign in</html>", content_type="text/html")
        if repo == "slow/model":
            await asyncio.sleep(5)
        raise web.HTTPUnauthorized()

    app = web.Application()
    app.router.add_get("/{repo:.+}/resolve/{rev}/config.json", handle)
    ready, loop_box = threading.Event(), {}

    def serve() -> None:
        loop = asyncio.new_event_loop()
        runner = web.AppRunner(app)
        loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        loop.run_until_complete(site.start())
        loop_box.update(loop=loop, runner=runner, port=site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(10)
    yield f"http://127.0.0.1:{loop_box['port']}", requested
    loop = loop_box["loop"]
    asyncio.run_coroutine_threadsafe(loop_box["runner"].cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


def test_an_hf_source_s_config_is_one_get_of_config_json_at_its_revision(kube_cluster, namespace, hub):
    url, requested = hub
    spec = {"model": {"source": "hf://Qwen/Qwen2.5-0.5B-Instruct", "revision": "v1"}}
    sources = gather(kube_cluster, namespace, spec, hub=url)
    assert sources.model_config == QWEN
    assert requested == ["/Qwen/Qwen2.5-0.5B-Instruct/resolve/v1/config.json"]


@pytest.mark.parametrize(
    ("repo", "why"),
    [
        ("moved/model", "HTTP 302 (gated, private, missing, or a redirect: not followed)"),
        ("gated/model", "HTTP 401 (gated, private, missing, or a redirect: not followed)"),
        ("huge/model", f"larger than {MAX_CONFIG_BYTES} bytes, not a model config"),
        ("html/model", "not JSON"),
    ],
)
def test_what_the_hub_answers_that_is_not_a_small_json_config_is_refused_and_named(
    kube_cluster, namespace, hub, repo, why
):
    sources = gather(kube_cluster, namespace, {"model": {"source": f"hf://{repo}"}}, hub=hub[0])
    assert sources.model_config is None
    assert f"spec.model.source: config.json of hf://{repo} from {hub[0]}" in sources.missing and why in sources.missing


def test_a_hub_that_does_not_answer_costs_the_timeout_and_no_more(kube_cluster, namespace, hub):
    started = time.monotonic()
    sources = gather(kube_cluster, namespace, {"model": {"source": "hf://slow/model"}}, hub=hub[0], timeout=0.5)
    assert time.monotonic() - started < 4
    assert sources.model_config is None and "TimeoutError" in sources.missing


def test_an_empty_hub_endpoint_reads_nothing(kube_cluster, namespace):
    sources = gather(kube_cluster, namespace, {"model": {"source": "hf://Qwen/Qwen2.5-0.5B-Instruct"}}, hub="")
    assert sources.model_config is None and "--hub-endpoint is empty" in sources.missing


def test_the_operator_s_own_rbac_lets_it_read_config_maps_of_any_namespace_it_watches(kube_cluster, namespace):
    """The ConfigMap path needs no new permission: the operator's role already reads ConfigMaps (its children)."""
    rbac = kubernetes.client.RbacAuthorizationV1Api(kube_cluster.admin_client())
    rules = rbac.read_cluster_role("prefops-operator").rules
    assert any("configmaps" in (r.resources or []) and "get" in (r.verbs or []) for r in rules)
    assert not any("secrets" in (r.resources or []) for r in rules)


def test_jobs_admitted_together_share_one_read_of_the_nodes_and_a_later_one_reads_them_again(kube_cluster, namespace):
    core, node = kube_cluster.core(), f"{namespace}-gpu"
    core.create_node({"metadata": {"name": node, "labels": {"nvidia.com/gpu.memory": "40960", "test": namespace}}})
    spec = {"resources": {"gpusPerNode": 8, "nodeSelector": {"test": namespace}}}

    async def run() -> tuple[list[int | None], list[int | None], int]:
        async def credentials() -> Credentials:
            return Credentials(server=kube_cluster.server, token=ADMIN_TOKEN, ca_path=str(kube_cluster.ca_file))

        api, reads = KubeApi(credentials), []
        list_nodes = api.node_labels

        async def counted() -> Any:
            reads.append(1)
            return await list_nodes()

        api.node_labels = counted  # type: ignore[method-assign]
        reader = SourceReader(api, "", "nvidia.com/gpu.memory")
        jobs = [parse_job({**job_manifest(f"j{i}", spec), "metadata": {"name": f"j{i}", "namespace": namespace}})
                for i in range(20)]  # fmt: skip
        try:
            burst = [s.memory for s in await asyncio.gather(*(reader.gather(j) for j in jobs))]
            core.patch_node(node, {"metadata": {"labels": {"nvidia.com/gpu.memory": "81559"}}})
            reader._nodes_until = 0.0  # the burst's read has expired (NODES_TTL later)
            later = [(await reader.gather(jobs[0])).memory]
            return burst, later, len(reads)
        finally:
            await api.close()

    try:
        burst, later, reads = asyncio.run(run())
    finally:
        core.delete_node(node)
    assert burst == [40960 * 2**20] * 20
    assert later == [81559 * 2**20]
    assert reads == 2
