"""Fixtures for the dashboard tests: the dashboard JSON, and the metrics the code exports."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from dashboard_exports import Catalogue, operator_everything, trainer_everything


@pytest.fixture(scope="session")
def exported() -> Catalogue:
    """Every metric name the trainer and the operator export, with their labels and label values."""
    return Catalogue.of(trainer_everything() + operator_everything())
