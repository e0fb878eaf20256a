"""``python -m prefops_operator``: run the operator (flags: ``--help``)."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Sequence

import kopf
from kopf._cogs.clients.errors import APINotFoundError  # raised from a watch; kopf exports no name for it

from .config import OperatorConfig

log = logging.getLogger("prefops_operator")
#: A restarted apiserver answers 404 on a custom resource until it has read its CRD again, and kopf ends the operator
#: on a watch's 404. For this long in a row the operator starts its controllers again instead, at once, as a restarted
#: pod would (seconds later, and after CrashLoopBackOff); past it (the CRD is really gone), it ends.
NOT_FOUND_PATIENCE = 120.0


def main(argv: Sequence[str] | None = None) -> None:
    config = OperatorConfig.from_args(argv)
    kopf.configure(verbose=config.verbose, log_format=kopf.LogFormat.PLAIN)
    if not config.verbose:  # kopf logs every handled event at INFO; transitions are logged by the reconciler
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    from . import handlers, sweep_handlers  # after the flags: --help stays quick

    registry = kopf.OperatorRegistry()  # both controllers, named here: importing a module registers nothing
    handlers.register(registry)
    sweep_handlers.register(registry)
    liveness = f"http://{config.bind_address}:{config.health_port}/healthz" if config.health_port else None
    run_through_restarts(
        functools.partial(
            kopf.run,
            registry=registry,
            standalone=True,
            clusterwide=not config.namespaces,
            namespaces=config.namespaces,
            liveness_endpoint=liveness,
            memo=kopf.Memo(config=config),
        )
    )


def run_through_restarts(run: Callable[[], None], patience: float = NOT_FOUND_PATIENCE, pause: float = 1.0) -> None:
    """``run()`` (kopf's operator), again after it ends on a 404 from the apiserver, until such ends have come without
    a break of ``patience`` seconds: then the last one is raised."""
    streak: float | None = None  # when the ends without a break began
    while True:
        started = time.monotonic()
        try:
            run()
            return
        except APINotFoundError as e:
            now = time.monotonic()
            if streak is None or now - started > patience:  # the first end, or one after a run that lasted
                streak = now
            elif now - streak > patience:
                raise
            log.warning("the apiserver answered 404 on a watched resource (%s): the controllers start again", e)
            time.sleep(pause)


if __name__ == "__main__":
    main()
