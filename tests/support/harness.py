"""The operator's reconciler in the test's own process, on a :class:`~support.clock.ManualClock`, against the real
apiserver as the operator's ServiceAccount: the exact cases (every deadline, every grace, the backoff schedule)
without waiting for them.

The test is the reconciler's watch: :meth:`Harness.reconcile` reads the job, its pods and every node from the
apiserver (as the operator's kopf indices would hold them) and reconciles once; the test moves pods and nodes with
the kubelet stand-in and time with ``harness.clock.advance``. Everything the reconciler writes (status, pods,
Events) goes through the apiserver, so the test reads it back as a user would.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path
from typing import Any

import yaml

from prefops_operator.adapters.kube import Credentials, KubeApi
from prefops_operator.config import OperatorConfig
from prefops_operator.core.nodes import node_view
from prefops_operator.core.pods import pod_view
from prefops_operator.core.restarts import RestartSettings
from prefops_operator.reconciler import Reconciler

from .clock import ManualClock
from .kube import KubeCluster


def _credentials(kubeconfig: Path) -> Any:
    doc = yaml.safe_load(kubeconfig.read_text())
    cluster, user = doc["clusters"][0]["cluster"], doc["users"][0]["user"]

    async def provide() -> Credentials:
        return Credentials(server=cluster["server"], token=user["token"], ca_path=cluster["certificate-authority"])

    return provide


class Harness:
    def __init__(
        self,
        cluster: KubeCluster,
        kubeconfig: Path,
        namespace: str,
        restarts: RestartSettings | None = None,
        **children: Any,
    ) -> None:
        self.cluster, self.namespace = cluster, namespace
        self.clock = ManualClock()
        # Scrape on every reconcile: the operator paces scrapes in real seconds (progressWritesPerSecond), the
        # harness moves a manual clock, so pacing would make a step the test shows miss a settle it meant to see.
        base = OperatorConfig(progress_interval=0.001, progress_writes_per_second=1e6)
        config = dataclasses.replace(
            base,
            restarts=restarts or RestartSettings(),
            children=dataclasses.replace(base.children, **children),
        )
        self.loop = asyncio.new_event_loop()
        self.reconciler = Reconciler(KubeApi(_credentials(kubeconfig)), config, clock=self.clock)

    def _get(self, path: str) -> Any:
        return json.loads(self.cluster.get(path))

    def reconcile(self, name: str) -> float | None:
        """One reconcile of job ``name`` over what the apiserver holds now; the seconds it asks to wait."""
        ns = self.namespace
        body = self._get(f"/apis/prefops.dev/v1alpha1/namespaces/{ns}/preferencetrainingjobs/{name}")
        items = self._get(f"/api/v1/namespaces/{ns}/pods?labelSelector=prefops.dev/job-name%3D{name}")["items"]
        pods = tuple(v for v in map(pod_view, items) if v is not None)
        nodes = {n["metadata"]["name"]: node_view(n) for n in self._get("/api/v1/nodes")["items"]}
        return self.loop.run_until_complete(self.reconciler.reconcile((ns, name), body, pods, nodes))

    def settle(self, name: str, rounds: int = 3) -> None:
        """Reconcile until the status and the pods stop changing (a decision, then the actions it planned)."""
        for _ in range(rounds):
            self.reconcile(name)

    def metrics(self) -> str:
        from prometheus_client import generate_latest

        return str(generate_latest(self.reconciler.metrics.registry).decode())

    def close(self) -> None:
        self.loop.run_until_complete(self.reconciler.close())
        self.loop.close()
