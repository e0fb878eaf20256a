"""The operator's own settings: command-line flags, each with a ``PREFOPS_OPERATOR_*`` environment default.

``python -m prefops_operator --help`` lists them.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .core.children import ChildSettings


@dataclass(frozen=True)
class OperatorConfig:
    namespaces: tuple[str, ...] = ()  # empty: every namespace
    default_image: str = ChildSettings.default_image
    image_pull_policy: str = ChildSettings.image_pull_policy
    trainer_metrics_port: int = ChildSettings.metrics_port
    run_as_user: int = ChildSettings.run_as_user
    metrics_port: int = 8080
    health_port: int = 8081
    bind_address: str = "0.0.0.0"
    workers: int = 16
    progress_interval: float = 15.0
    scrape_timeout: float = 2.0
    verbose: bool = False

    @property
    def children(self) -> ChildSettings:
        return ChildSettings(
            default_image=self.default_image,
            image_pull_policy=self.image_pull_policy,
            metrics_port=self.trainer_metrics_port,
            run_as_user=self.run_as_user,
        )

    @classmethod
    def from_args(cls, argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> OperatorConfig:
        args = _parser(os.environ if env is None else env).parse_args(argv)
        if args.workers < 1 or args.progress_interval <= 0:
            raise SystemExit("--workers must be >= 1 and --progress-interval > 0")
        return cls(
            namespaces=tuple(args.namespace or ()),
            default_image=args.default_image,
            image_pull_policy=args.image_pull_policy,
            trainer_metrics_port=args.trainer_metrics_port,
            run_as_user=args.run_as_user,
            metrics_port=args.metrics_port,
            health_port=args.health_port,
            bind_address=args.bind_address,
            workers=args.workers,
            progress_interval=args.progress_interval,
            scrape_timeout=args.scrape_timeout,
            verbose=args.verbose,
        )


def _parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    d = OperatorConfig()

    def default(name: str, value: object) -> str:
        return env.get(f"PREFOPS_OPERATOR_{name}", str(value))

    p = argparse.ArgumentParser(
        prog="python -m prefops_operator",
        description="Run PreferenceTrainingJobs as phases of pods (prefops.dev/v1alpha1).",
    )
    ns = env.get("PREFOPS_OPERATOR_NAMESPACES", "")
    p.add_argument(
        "--namespace",
        action="append",
        default=[n for n in ns.split(",") if n] or None,
        help="watch only this namespace (repeatable); default: all namespaces [NAMESPACES, comma-separated]",
    )
    p.add_argument(
        "--default-image",
        default=default("DEFAULT_IMAGE", d.default_image),
        help="trainer image for jobs without spec.resources.image [DEFAULT_IMAGE]",
    )
    p.add_argument(
        "--image-pull-policy",
        default=default("IMAGE_PULL_POLICY", d.image_pull_policy),
        choices=["Always", "IfNotPresent", "Never"],
        help="of trainer pods [IMAGE_PULL_POLICY]",
    )
    p.add_argument(
        "--trainer-metrics-port",
        type=int,
        default=default("TRAINER_METRICS_PORT", d.trainer_metrics_port),
        help="PREFOPS_METRICS_PORT of trainer pods, scraped for progress [TRAINER_METRICS_PORT]",
    )
    p.add_argument(
        "--run-as-user",
        type=int,
        default=default("RUN_AS_USER", d.run_as_user),
        help="non-root uid/gid trainer pods run as [RUN_AS_USER]",
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        default=default("METRICS_PORT", d.metrics_port),
        help="port of the operator's own /metrics; 0 disables [METRICS_PORT]",
    )
    p.add_argument(
        "--health-port",
        type=int,
        default=default("HEALTH_PORT", d.health_port),
        help="port of the liveness endpoint /healthz; 0 disables [HEALTH_PORT]",
    )
    p.add_argument(
        "--bind-address",
        default=default("BIND_ADDRESS", d.bind_address),
        help="address the metrics and health endpoints bind [BIND_ADDRESS]",
    )
    p.add_argument(
        "--workers", type=int, default=default("WORKERS", d.workers), help="jobs reconciled concurrently [WORKERS]"
    )
    p.add_argument(
        "--progress-interval",
        type=float,
        default=default("PROGRESS_INTERVAL", d.progress_interval),
        help="seconds between scrapes of a running job's rank-0 /metrics [PROGRESS_INTERVAL]",
    )
    p.add_argument(
        "--scrape-timeout",
        type=float,
        default=default("SCRAPE_TIMEOUT", d.scrape_timeout),
        help="seconds a progress scrape may take [SCRAPE_TIMEOUT]",
    )
    p.add_argument(
        "--verbose",
        action="store_true",
        default=env.get("PREFOPS_OPERATOR_VERBOSE", "") == "1",
        help="debug logging [VERBOSE=1]",
    )
    return p
