"""The end-to-end tests' cluster: two real nodes by default (``PREFOPS_E2E_NODES``), started once for every e2e
module. One started here is taken down (and the host checked) before the session ends."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support.node import Cluster, node_cluster


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with node_cluster(tmp_path_factory.mktemp("cluster")) as cluster:
        yield cluster
