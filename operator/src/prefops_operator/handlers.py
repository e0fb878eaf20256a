"""kopf glue: watch jobs, their pods and the nodes into kopf indices, and turn every event into a work-queue key.

The decisions live in :mod:`.core` and the API calls in :mod:`.adapters`; these handlers only wire them up.
No change handlers, timers or daemons: nothing here needs kopf's finalizers or progress annotations, so jobs
carry no kopf state and stay deletable while the operator is down. Every handler is async and tiny: kopf would
run sync handlers in threads, one hop per event. Importing this module registers nothing: ``python -m
prefops_operator`` calls :func:`register` (and :func:`.sweep_handlers.register`) on the registry it runs.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import kopf

from . import sweep_handlers
from .adapters.kube import Credentials, CredentialsProvider
from .adapters.sweeps import SweepKubeApi
from .config import OperatorConfig
from .core.naming import LABEL_JOB
from .core.nodes import NodeView, node_view
from .core.pods import PodView, pod_view
from .core.spec import slim_job
from .reconciler import Reconciler
from .runtime import Key, NodeChanges, Nodes, Runtime

JOBS = ("prefops.dev", "v1alpha1", "preferencetrainingjobs")
PODS = ("v1", "pods")
NODES = ("v1", "nodes")
OURS = {LABEL_JOB: kopf.PRESENT}
Logger = logging.Logger | logging.LoggerAdapter[Any]


class NoDiffBase(kopf.DiffBaseStorage):
    """kopf diffs every event against a stored "last handled" copy, for change handlers. This operator has none,
    so the diff is never read; skipping it saves a deep copy of every job and pod body per event (the largest
    CPU cost of the operator under a burst of jobs, measured with bench/operator_scale.py)."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        pass


def _login(settings: kopf.OperatorSettings, logger: Logger) -> kopf.ConnectionInfo | None:
    """kopf's minimal logins: the pod's ServiceAccount, else $KUBECONFIG (or ~/.kube/config)."""
    return kopf.login_with_service_account(settings=settings, logger=logger) or kopf.login_with_kubeconfig(
        settings=settings, logger=logger
    )


async def login(*, settings: kopf.OperatorSettings, logger: Logger, **_: Any) -> kopf.ConnectionInfo | None:
    """kopf's watches log in as the reconciler does, whatever else is installed: kopf would otherwise prefer the
    ``kubernetes`` client's login, which keeps a kubeconfig's client key in a temporary file for the process's
    lifetime (kopf's own writes it only while building the TLS context)."""
    return _login(settings, logger)


def _credentials(settings: kopf.OperatorSettings, logger: Logger) -> CredentialsProvider:
    """The reconciler's API credentials, from the same login. Called again whenever the apiserver answers 401
    (rotated tokens)."""

    async def provide() -> Credentials:
        info = _login(settings, logger)
        if info is None:
            raise kopf.PermanentError("no credentials: neither a ServiceAccount token nor a kubeconfig")
        return Credentials(
            server=info.server,
            token=info.token,
            scheme=info.scheme or "Bearer",
            ca_path=_str(info.ca_path),
            ca_data=_str(info.ca_data),
            insecure=bool(info.insecure),
            certificate_path=_str(info.certificate_path),
            certificate_data=_str(info.certificate_data),
            private_key_path=_str(info.private_key_path),
            private_key_data=_str(info.private_key_data),
        )

    return provide


def _str(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


async def start(*, settings: kopf.OperatorSettings, memo: kopf.Memo, logger: Logger, **kwargs: Any) -> None:
    config = memo.get("config") or OperatorConfig.from_args([])
    settings.peering.standalone = True
    settings.scanning.disabled = True  # no CRD/namespace scanning: fewer permissions
    settings.posting.enabled = False  # the reconciler writes its own Events, on jobs only
    settings.persistence.diffbase_storage = NoDiffBase()
    settings.queueing.idle_timeout = 1.0  # per-object kopf workers (and the event bodies they hold) go sooner
    settings.watching.label_selectors[PODS] = LABEL_JOB  # server-side: only our pods reach the operator
    if config.webhook_port:
        sweep_handlers.serve_webhook(settings, config)
    api = SweepKubeApi(_credentials(settings, logger), connections=config.workers * 2)
    reconciler = Reconciler(api, config)
    reconciler.metrics.serve(config.metrics_port, config.bind_address)
    memo.runtime = _jobs(reconciler, config, kwargs)
    memo.nodes = NodeChanges(memo.runtime)
    memo.runtime.start()
    memo.sweeps = sweep_handlers.start(api, config, reconciler.metrics.registry, kwargs)
    scope = ", ".join(config.namespaces) or "all namespaces"
    logger.info("prefops operator started: %s, default image %s", scope, config.children.default_image)


def _jobs(reconciler: Reconciler, config: OperatorConfig, indices: Mapping[str, Any]) -> Runtime[PodView]:
    """The job controller; kopf passes each index to the startup handler as a keyword argument named after its id."""
    nodes = Nodes(indices["nodes_index"])  # kopf's index is falsy while empty: kept, not replaced

    async def reconcile(key: Key, body: Mapping[str, Any] | None, pods: tuple[PodView, ...]) -> float | None:
        return await reconciler.reconcile(key, body, pods, nodes)

    return Runtime(reconcile, indices["jobs_index"], indices["pods_index"], config.workers, reconciler.close)


async def stop(*, memo: kopf.Memo, **_: Any) -> None:
    if "sweeps" in memo:
        await memo.sweeps.stop()
    if "runtime" in memo:
        await memo.runtime.stop()


async def jobs_index(*, namespace: str | None, name: str, body: kopf.Body, **_: Any) -> dict[Key, dict[str, Any]]:
    return {(str(namespace), name): slim_job(body)}


async def pods_index(*, namespace: str | None, body: kopf.Body, **_: Any) -> dict[Key, PodView] | None:
    view = pod_view(body)
    return {(str(namespace), view.job): view} if view else None


async def nodes_index(*, name: str, body: kopf.Body, **_: Any) -> dict[str, NodeView]:
    return {name: node_view(body)}


async def job_event(*, namespace: str | None, name: str, memo: kopf.Memo, **_: Any) -> None:
    memo.runtime.queue.add((str(namespace), name))


async def pod_event(*, namespace: str | None, labels: Mapping[str, str], memo: kopf.Memo, **_: Any) -> None:
    memo.runtime.queue.add((str(namespace), labels[LABEL_JOB]))


async def node_event(*, name: str, type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    memo.nodes.changed(None if type == "DELETED" else node_view(body), name)


async def work_queue(*, memo: kopf.Memo, **_: Any) -> dict[str, int]:
    runtime = memo.get("runtime")
    return {"queued": len(runtime.queue), "scheduled": runtime.queue.scheduled} if runtime else {}


def register(registry: kopf.OperatorRegistry) -> None:
    """The job controller's handlers, and the operator's login, startup, cleanup and probe, on ``registry``."""
    kopf.on.login(id="prefops-login", registry=registry)(login)
    kopf.on.startup(id="prefops-startup", registry=registry)(start)
    kopf.on.cleanup(id="prefops-cleanup", registry=registry)(stop)
    kopf.index(*JOBS, id="jobs_index", registry=registry)(jobs_index)
    kopf.index(*PODS, labels=OURS, id="pods_index", registry=registry)(pods_index)
    kopf.index(*NODES, id="nodes_index", registry=registry)(nodes_index)
    kopf.on.event(*JOBS, id="job-event", registry=registry)(job_event)
    kopf.on.event(*PODS, labels=OURS, id="pod-event", registry=registry)(pod_event)
    kopf.on.event(*NODES, id="node-event", registry=registry)(node_event)
    kopf.on.probe(id="work-queue", registry=registry)(work_queue)
