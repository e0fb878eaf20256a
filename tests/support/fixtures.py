"""pytest fixtures over :mod:`support.kube`: one control plane per test session (with the CRDs and the
operator's RBAC applied), a fresh namespace per test, the operator running as its ServiceAccount.

Import them into a conftest (``from support.fixtures import *``) or list ``support.fixtures`` in
``pytest_plugins`` of the root conftest.
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .jobs import Jobs
from .kube import ROOT, KubeCluster
from .kubelet import Kubelet
from .operator import OperatorProcess
from .sweeps import Sweeps

OPERATOR_NAMESPACE, OPERATOR_ACCOUNT = "prefops-system", "prefops-operator"
OPERATOR_USER = f"system:serviceaccount:{OPERATOR_NAMESPACE}:{OPERATOR_ACCOUNT}"
_counter = itertools.count()
#: restarts after a failure without the Job controller's 10 s backoff, and a rank's exit judged for 1 s instead of
#: 45 s, so lifecycle tests run in seconds; a test of those defaults passes the flags itself
QUICK_RESTARTS = {"PREFOPS_OPERATOR_RESTART_BACKOFF": "0", "PREFOPS_OPERATOR_EXIT_JUDGING_SECONDS": "1"}


@pytest.fixture(scope="session")
def kube_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeCluster]:
    """A real etcd + kube-apiserver + kube-controller-manager, with the CRDs and operator RBAC applied."""
    with KubeCluster.start(tmp_path_factory.mktemp("kube")) as cluster:
        cluster.apply_crds(ROOT / "crds")
        cluster.apply_manifests(ROOT / "operator" / "rbac")
        yield cluster


@pytest.fixture(scope="session")
def operator_kubeconfig(kube_cluster: KubeCluster) -> Path:
    """A kubeconfig of the operator's ServiceAccount (bound to its ClusterRole only)."""
    return kube_cluster.service_account_kubeconfig(OPERATOR_NAMESPACE, OPERATOR_ACCOUNT)


@pytest.fixture
def namespace(kube_cluster: KubeCluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace for one test, deleted afterwards."""
    stem = request.node.name.lower().replace("_", "-")[:40].strip("-")
    name = kube_cluster.create_namespace(f"t{next(_counter)}-{''.join(c for c in stem if c.isalnum() or c == '-')}")
    yield name
    kube_cluster.core().delete_namespace(name)


@pytest.fixture
def jobs(kube_cluster: KubeCluster, namespace: str) -> Jobs:
    return Jobs(kube_cluster.custom(), kube_cluster.core(), namespace)


@pytest.fixture
def sweeps(kube_cluster: KubeCluster, namespace: str) -> Sweeps:
    return Sweeps(kube_cluster.custom(), kube_cluster.core(), namespace)


@pytest.fixture
def kubelet(kube_cluster: KubeCluster) -> Kubelet:
    return Kubelet(kube_cluster.core())


@pytest.fixture
def start_operator(operator_kubeconfig: Path, namespace: str, tmp_path: Path) -> Iterator[Any]:
    """``start_operator(*args, all_namespaces=False, python=None)`` starts the operator (as its ServiceAccount),
    watching the test's namespace by default; every operator started is stopped after the test."""
    started: list[OperatorProcess] = []

    def start(*args: str, all_namespaces: bool = False, python: str | None = None) -> OperatorProcess:
        op = OperatorProcess(
            operator_kubeconfig,
            tmp_path / f"operator-{len(started)}.log",
            namespaces=() if all_namespaces else (namespace,),
            extra_args=args,
            python=python or sys.executable,
            env=dict(QUICK_RESTARTS),
        )
        started.append(op)
        return op.start()

    yield start
    for op in started:
        op.stop()
        print(f"--- {op.log} (tail)\n{op.tail()}")
