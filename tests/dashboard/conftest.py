"""Fixtures for the dashboard tests: the dashboard JSON, and the metrics the code exports."""

from __future__ import annotations

import pytest
from support.dashboard_exports import Catalogue, operator_everything, trainer_everything


@pytest.fixture(scope="session")
def exported() -> Catalogue:
    """Every metric name the trainer and the operator export, with their labels and label values."""
    return Catalogue.of(trainer_everything() + operator_everything())
