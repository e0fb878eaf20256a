"""``python -m prefops_operator``: run the operator (flags: ``--help``)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import kopf

from .config import OperatorConfig


def main(argv: Sequence[str] | None = None) -> None:
    config = OperatorConfig.from_args(argv)
    kopf.configure(verbose=config.verbose, log_format=kopf.LogFormat.PLAIN)
    if not config.verbose:  # kopf logs every handled event at INFO; transitions are logged by the reconciler
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    from . import handlers, sweep_handlers, watch_outages  # after the flags: --help stays quick

    registry = kopf.OperatorRegistry()  # both controllers, named here: importing a module registers nothing
    handlers.register(registry)
    sweep_handlers.register(registry)
    if config.webhook_port:  # kopf refuses webhook handlers without a webhook server
        sweep_handlers.register_webhook(registry, config)
    liveness = f"http://{config.bind_address}:{config.health_port}/healthz" if config.health_port else None
    watch_outages.install()
    kopf.run(
        registry=registry,
        standalone=True,
        clusterwide=not config.namespaces,
        namespaces=config.namespaces,
        liveness_endpoint=liveness,
        memo=kopf.Memo(config=config),
    )


if __name__ == "__main__":
    main()
