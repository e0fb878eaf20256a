"""kopf glue of the sweep controller: watch sweeps and their trial jobs (PreferenceTrainingJobs labelled
``prefops.dev/sweep``) into kopf indices, and turn every event into a work-queue key of the sweep. Registered by
``python -m prefops_operator`` (:func:`register`), started and stopped with the job controller by :mod:`.handlers`;
like it, no change handlers and no kopf state on objects.

With ``--webhook-port``, also the admission webhook that records each sweep's creator (:func:`register_webhook`,
served by kopf's webhook server, :func:`serve_webhook`; the webhook configuration is the Helm chart's)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import kopf
from prometheus_client import CollectorRegistry

from .adapters.sweeps import SweepKubeApi
from .config import OperatorConfig
from .core.creators import CREATOR_ANNOTATION, Creator, annotation_change, signed_record
from .core.sweep_spec import slim_sweep
from .core.sweep_status import TrialView, trial_view
from .core.sweep_trials import LABEL_SWEEP
from .runtime import Key, Runtime
from .sweep_reconciler import SweepReconciler

SWEEPS = ("prefops.dev", "v1alpha1", "preferencetrainingsweeps")
JOBS = ("prefops.dev", "v1alpha1", "preferencetrainingjobs")
TRIALS = {LABEL_SWEEP: kopf.PRESENT}
WEBHOOK_ID = "sweep-creator"  # the webhook's URL path: https://<host>:<port>/sweep-creator


def start(
    api: SweepKubeApi, config: OperatorConfig, registry: CollectorRegistry, indices: Mapping[str, Any]
) -> Runtime[TrialView]:
    """The sweep controller, started; ``indices`` are the keyword arguments kopf passes the startup handler."""
    key = config.creator_key() if config.check_sweep_creators else None
    reconciler = SweepReconciler(api, registry, creator_key=key)
    runtime = Runtime(reconciler.reconcile, indices["sweeps_index"], indices["trials_index"], config.workers)
    runtime.start()
    return runtime


async def sweeps_index(*, namespace: str | None, name: str, body: kopf.Body, **_: Any) -> dict[Key, dict[str, Any]]:
    return {(str(namespace), name): slim_sweep(body)}


async def trials_index(
    *, namespace: str | None, labels: Mapping[str, str], body: kopf.Body, **_: Any
) -> dict[Key, TrialView]:
    return {(str(namespace), labels[LABEL_SWEEP]): trial_view(body)}


async def sweep_event(*, namespace: str | None, name: str, memo: kopf.Memo, **_: Any) -> None:
    if "sweeps" in memo:
        memo.sweeps.queue.add((str(namespace), name))


async def trial_event(*, namespace: str | None, labels: Mapping[str, str], memo: kopf.Memo, **_: Any) -> None:
    if "sweeps" in memo:
        memo.sweeps.queue.add((str(namespace), labels[LABEL_SWEEP]))


def creator_webhook(key: bytes) -> Any:
    """The admission webhook of sweeps: at CREATE, record who creates the sweep (whatever the request wrote there),
    signed with ``key``; refuse an UPDATE that changes that record."""

    async def record_creator(*, userinfo: kopf.UserInfo, patch: kopf.Patch, **kwargs: Any) -> None:
        # kopf passes ``operation``, ``namespace``, ``old`` and ``new`` among ``kwargs``
        if kwargs.get("operation") == "CREATE":
            creator, namespace = Creator.from_userinfo(userinfo), str(kwargs.get("namespace") or "")
            patch.meta.annotations[CREATOR_ANNOTATION] = signed_record(creator, namespace, key)
            return
        old, new = kwargs.get("old"), kwargs.get("new")
        problem = annotation_change(old.meta.annotations if old else None, new.meta.annotations if new else None)
        if problem:
            raise kopf.AdmissionError(problem, code=403)

    return record_creator


class WebhookServer(kopf.WebhookServer):
    """kopf's webhook server, handing handlers the object with its namespace: the apiserver (1.20 at least) sends a
    CREATE's object as the client wrote it, often without ``metadata.namespace``, which only the request carries."""

    async def __call__(self, fn: kopf.WebhookFn) -> AsyncIterator[kopf.WebhookClientConfig]:
        async def with_namespace(request: Any, **kwargs: Any) -> Any:  # kopf.Request -> Response (not exported)
            payload = request.get("request") or {}
            obj, namespace = payload.get("object"), payload.get("namespace")
            if isinstance(obj, dict) and namespace:
                obj.setdefault("metadata", {})["namespace"] = namespace  # the one the object is stored in
            return await fn(request, **kwargs)

        async for client_config in super().__call__(with_namespace):
            yield client_config


def serve_webhook(settings: kopf.OperatorSettings, config: OperatorConfig) -> None:
    """Serve the admission webhook over HTTPS on ``--webhook-port`` with the certificate in ``--webhook-cert-dir``
    (kopf reloads it when the files change); the webhook configuration is left to the installer."""
    certfile, pkeyfile = config.webhook_certificate()
    settings.admission.server = WebhookServer(
        addr=config.bind_address, port=config.webhook_port, certfile=certfile, pkeyfile=pkeyfile
    )


def register_webhook(registry: kopf.OperatorRegistry, config: OperatorConfig) -> None:
    """The admission webhook on sweeps (CREATE and UPDATE), at the URL path :data:`WEBHOOK_ID`; exits naming the
    flag when its certificate or key is missing."""
    config.webhook_certificate()
    handler = creator_webhook(config.creator_key())
    kopf.on.mutate(*SWEEPS, id=WEBHOOK_ID, operations=["CREATE", "UPDATE"], registry=registry)(handler)


def register(registry: kopf.OperatorRegistry) -> None:
    """The sweep controller's indices and event handlers, on ``registry``."""
    kopf.index(*SWEEPS, id="sweeps_index", registry=registry)(sweeps_index)
    kopf.index(*JOBS, labels=TRIALS, id="trials_index", registry=registry)(trials_index)
    kopf.on.event(*SWEEPS, id="sweep-event", registry=registry)(sweep_event)
    kopf.on.event(*JOBS, labels=TRIALS, id="trial-event", registry=registry)(trial_event)
