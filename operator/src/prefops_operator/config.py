"""The operator's own settings: command-line flags, each with a ``PREFOPS_OPERATOR_*`` environment default.

Every setting is declared once, as a field with :func:`~prefops_operator.core.settings.setting` metadata (help,
flag, environment name, default, rule): here, in :class:`~prefops_operator.core.children.ChildSettings` for
the ones that shape trainer pods, or in :class:`~prefops_operator.core.restarts.RestartSettings` for restarts.
The parser below is built from those fields; ``python -m prefops_operator --help`` lists them.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .core.children import ChildSettings
from .core.restarts import RestartSettings
from .core.settings import Setting, setting, settings_of

MIN_KEY_BYTES = 32


@dataclass(frozen=True)
class OperatorConfig:
    namespaces: tuple[str, ...] = setting(
        (),
        "watch only this namespace (repeatable; the environment variable takes a comma-separated list); default: "
        "all namespaces",
        "--namespace",
        "NAMESPACES",  # comma-separated
    )
    children: ChildSettings = dataclasses.field(default_factory=ChildSettings)
    restarts: RestartSettings = dataclasses.field(default_factory=RestartSettings)
    metrics_port: int = setting(
        8080, "port of the operator's own /metrics; 0 disables", "--metrics-port", "METRICS_PORT",
        rule=lambda p: 0 <= p < 65536, rule_text="a port number or 0",
    )  # fmt: skip
    health_port: int = setting(
        8081, "port of the liveness endpoint /healthz; 0 disables", "--health-port", "HEALTH_PORT",
        rule=lambda p: 0 <= p < 65536, rule_text="a port number or 0",
    )  # fmt: skip
    bind_address: str = setting(
        "0.0.0.0", "address the metrics and health endpoints bind", "--bind-address", "BIND_ADDRESS"
    )
    workers: int = setting(
        16, "jobs reconciled concurrently", "--workers", "WORKERS", rule=lambda n: n >= 1, rule_text=">= 1"
    )
    progress_interval: float = setting(
        15.0, "seconds between scrapes of a running job's rank-0 /metrics", "--progress-interval",
        "PROGRESS_INTERVAL", rule=lambda s: s > 0, rule_text="> 0",
    )  # fmt: skip
    progress_writes_per_second: float = setting(
        10.0, "scrapes of running jobs (each may write a job's status.progress) per second, all jobs together: "
        "beyond progressInterval x this many running jobs, each is scraped less often, evenly spread",
        "--progress-writes-per-second", "PROGRESS_WRITES_PER_SECOND", rule=lambda s: s > 0, rule_text="> 0",
    )  # fmt: skip
    scrape_timeout: float = setting(
        2.0, "seconds a progress scrape may take", "--scrape-timeout", "SCRAPE_TIMEOUT",
        rule=lambda s: s > 0, rule_text="> 0",
    )  # fmt: skip
    hub_endpoint: str = setting(
        "https://huggingface.co",
        "the Hugging Face Hub the admission plan reads an hf:// model's config.json from (one HTTPS GET: no "
        "redirects, no credentials, at most 1 MiB, JSON only); empty: never (such jobs are planned only from "
        "spec.model.configMap)",
        "--hub-endpoint",
        "HUB_ENDPOINT",
        rule=lambda url: url == "" or url.startswith(("https://", "http://")),
        rule_text="an http(s):// URL or empty",
    )
    gpu_memory_label: str = setting(
        "nvidia.com/gpu.memory",
        "node label (MiB, set by GPU feature discovery) the admission plan takes each GPU's memory from when a job "
        "sets no spec.resources.gpuMemory: the smallest among the nodes its pods may run on; empty: never list nodes",
        "--gpu-memory-label",
        "GPU_MEMORY_LABEL",
    )
    check_sweep_creators: bool = setting(
        False,
        "create a sweep's trials only when the sweep's creator may create PreferenceTrainingJobs in its namespace "
        "(a SubjectAccessReview of the creator the admission webhook recorded, --webhook-port); a sweep with no "
        "recorded creator gets none",
        "--check-sweep-creators",
        "CHECK_SWEEP_CREATORS",
    )
    webhook_port: int = setting(
        0, "port of the admission webhook (HTTPS) that records each sweep's creator; 0 disables",
        "--webhook-port", "WEBHOOK_PORT", rule=lambda p: 0 <= p < 65536, rule_text="a port number or 0",
    )  # fmt: skip
    webhook_cert_dir: str = setting(
        "/etc/prefops/webhook",
        "folder of the webhook's serving certificate and key, tls.crt and tls.key (a kubernetes.io/tls Secret)",
        "--webhook-cert-dir",
        "WEBHOOK_CERT_DIR",
    )
    creator_key_file: str = setting(
        "/etc/prefops/webhook/creator.key",
        "file of the secret key (at least 32 bytes) the webhook signs each sweep's creator record with and "
        "--check-sweep-creators checks it with: a record not signed with it counts as none",
        "--creator-key-file",
        "CREATOR_KEY_FILE",
    )
    verbose: bool = setting(False, "debug logging", "--verbose", "VERBOSE")  # the environment says 1

    @classmethod
    def from_args(cls, argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> OperatorConfig:
        """Parse flags over ``PREFOPS_OPERATOR_*`` defaults; exits (status 2, naming the flag) on a bad value."""
        parser = build_parser(os.environ if env is None else env)
        args = vars(parser.parse_args(argv))
        own: dict[str, Any] = {}
        groups: dict[str, dict[str, Any]] = {}
        for path, f, meta in settings_of(cls):
            value = args[_dest(path)]
            if isinstance(f.default, tuple):
                value = tuple(value or ())
            problem = meta.problem(value)
            if problem:
                parser.error(problem)
            (own if len(path) == 1 else groups.setdefault(path[0], {}))[path[-1]] = value
        nested = {f.name: f.default_factory(**groups.get(f.name, {})) for f in _groups(cls)}  # type: ignore[operator]
        return cls(**nested, **own)

    def webhook_certificate(self) -> tuple[str, str]:
        """``tls.crt`` and ``tls.key`` of ``--webhook-cert-dir``; exits (status 2, naming the flag) when one is not a
        file."""
        files = tuple(Path(self.webhook_cert_dir) / name for name in ("tls.crt", "tls.key"))
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise SystemExit(f"--webhook-cert-dir: no {' and no '.join(missing)}")
        return str(files[0]), str(files[1])

    def creator_key(self) -> bytes:
        """The key of ``--creator-key-file``; exits (status 2, naming the flag) when it cannot be read or is short."""
        try:
            key = Path(self.creator_key_file).read_bytes().strip()
        except OSError as e:
            raise SystemExit(f"--creator-key-file: cannot read {self.creator_key_file}: {e.strerror}") from e
        if len(key) < MIN_KEY_BYTES:
            raise SystemExit(f"--creator-key-file: {self.creator_key_file} holds {len(key)} bytes, need >= 32")
        return key


def _groups(cls: type) -> list[dataclasses.Field[Any]]:
    """The fields of ``cls`` that are nested settings dataclasses (children, restarts)."""
    return [f for f in dataclasses.fields(cls) if dataclasses.is_dataclass(f.default_factory)]


def build_parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    """The command line: one flag per setting field, its default from the environment, else the field's."""
    parser = argparse.ArgumentParser(
        prog="python -m prefops_operator",
        description="Run PreferenceTrainingJobs as phases of pods (prefops.dev/v1alpha1).",
    )
    for path, f, meta in settings_of(OperatorConfig):
        parser.add_argument(meta.flag, dest=_dest(path), **_kind(f.default, meta, env))
    return parser


def _dest(path: tuple[str, ...]) -> str:
    return "__".join(path)


def _kind(default: Any, meta: Setting, env: Mapping[str, str]) -> dict[str, Any]:
    """How argparse reads the setting: a switch, a repeatable flag (comma-separated in the environment), or one
    value of the default's type."""
    raw = env.get(meta.env_name)
    if isinstance(default, bool):
        return {"action": "store_true", "default": raw == "1" if raw is not None else default,
                "help": f"{meta.help} [{meta.env_name}=1]"}  # fmt: skip
    if isinstance(default, tuple):
        return {"action": "append", "default": [n for n in (raw or "").split(",") if n] or None, "metavar": "NS",
                "help": f"{meta.help} [{meta.env_name}, comma-separated]"}  # fmt: skip
    # argparse converts a string default with ``type`` and names the flag when it cannot
    kind: dict[str, Any] = {"type": type(default), "default": default if raw is None else raw, "metavar": meta.env,
                            "help": f"{meta.help} (default: %(default)s) [{meta.env_name}]"}  # fmt: skip
    if meta.choices:
        kind.update(choices=list(meta.choices), metavar=None)
    return kind
