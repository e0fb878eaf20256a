"""The end-to-end tests' cluster: two real nodes by default (``PREFOPS_E2E_NODES``), started once for every e2e
module. One started here is taken down (and the host checked) before the session ends. The ``loop`` on it (the
operator from the chart, S3, Prometheus and a namespace: support/loop.py) is shared by the modules that run jobs."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support.loop import Loop, open_loop
from support.node import Cluster, node_cluster


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with node_cluster(tmp_path_factory.mktemp("cluster")) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def loop(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loop]:
    with open_loop(cluster, tmp_path_factory.mktemp("e2e")) as opened:
        yield opened
