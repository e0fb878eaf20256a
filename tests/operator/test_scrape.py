"""The operator reads trainer pods' /metrics (the job author's code) as untrusted, against real HTTP servers on
loopback: no redirect is followed, an answer over 256 KiB is dropped without being parsed, and what is kept is
numbers, not text (a precompute shard's pair counts, forgotten once the phase ends)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from aiohttp import web
from support.harness import Harness
from support.jobs import job_manifest
from support.trainer_metrics import TrainerMetricsServer

from prefops_operator.adapters.scrape import MAX_BYTES, Scraper

METRICS = 'prefops_trainer_step{phase="train"} 120\nprefops_trainer_total_steps{phase="train"} 1000\n'
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def serve(handler: Handler) -> tuple[web.AppRunner, int]:
    app = web.Application()
    app.router.add_get("/metrics", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]


def scrape_through(handler: Handler, with_target: bool = False) -> tuple[object, list[str]]:
    """What the operator's scraper makes of a pod answering with ``handler`` (given the URL of a second server, the
    target, when ``with_target``); and the requests the target got."""
    hits: list[str] = []

    async def target(request: web.Request) -> web.StreamResponse:
        hits.append(request.path)
        return web.Response(text=METRICS)

    async def run() -> object:
        target_runner, target_port = await serve(target)
        pod = (lambda r: handler(r, f"http://127.0.0.1:{target_port}/metrics")) if with_target else handler
        pod_runner, pod_port = await serve(pod)  # type: ignore[arg-type]
        scraper = Scraper(timeout=5)
        try:
            return await scraper.fetch("127.0.0.1", pod_port)
        finally:
            await scraper.close()
            await pod_runner.cleanup()
            await target_runner.cleanup()

    return asyncio.run(run()), hits


def test_a_pods_metrics_are_read_as_numbers():
    async def pod(request: web.Request) -> web.StreamResponse:
        return web.Response(text=METRICS)

    samples, _ = scrape_through(pod)
    assert samples == [("prefops_trainer_step", {"phase": "train"}, 120.0),
                       ("prefops_trainer_total_steps", {"phase": "train"}, 1000.0)]  # fmt: skip


def test_a_redirect_is_not_followed():
    async def pod(request: web.Request, elsewhere: str) -> web.StreamResponse:
        raise web.HTTPFound(elsewhere)  # e.g. the apiserver, or a cloud metadata service

    samples, hits = scrape_through(pod, with_target=True)  # type: ignore[arg-type]
    assert samples is None and hits == []


def test_an_answer_of_5_mib_is_dropped_unparsed():
    async def pod(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        chunk = METRICS.encode() * (64 * 1024 // len(METRICS))
        for _ in range(5 * 1024 * 1024 // len(chunk)):
            await resp.write(chunk)
        return resp

    samples, _ = scrape_through(pod)
    assert samples is None
    assert MAX_BYTES == 256 * 1024


@pytest.mark.integration
def test_the_precompute_shards_counts_are_kept_as_numbers_and_forgotten_when_the_phase_ends(
    jobs, kubelet, namespace, kube_cluster, operator_kubeconfig
):
    with TrainerMetricsServer() as metrics:
        harness = Harness(kube_cluster, operator_kubeconfig, namespace, metrics_port=metrics.port)
        try:
            jobs.create(job_manifest("shards", {"reference": {"workers": 2}}))
            harness.settle("shards")
            shards = sorted(jobs.wait_pods("shards", "precompute", 2, timeout=10))
            metrics.show("shards", namespace, "precompute", precompute_pairs_done=100, precompute_pairs_total=500)
            for pod in shards:
                kubelet.run(namespace, pod)
            harness.settle("shards")
            memory = harness.reconciler._memory[(namespace, "shards")]
            assert memory.shard_metrics == {pod: {"pairs_done": 100.0, "pairs_total": 500.0} for pod in shards}
            assert jobs.status("shards")["progress"]["display"] == "200/1000 pairs"
            for pod in shards:
                kubelet.exit(namespace, pod, 0)
            harness.settle("shards")
            assert jobs.status("shards")["phase"] == "Training"
            assert memory.shard_metrics == {}
        finally:
            harness.close()
