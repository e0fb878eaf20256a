"""Shared test configuration: quiet, deterministic settings for every test (``tests/`` is importable through
pytest.ini's ``pythonpath``, so the helpers in ``tests/support`` are ``support.*``)."""

import os

# one real control plane per session, shared by operator, contract, chart and e2e tests
pytest_plugins = ["support.fixtures", "support.s3"]

# 2-core CI machines run servers beside the trainer; spinning OpenMP threads then stall (measured 30x slower)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
