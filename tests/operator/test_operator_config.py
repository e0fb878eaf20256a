"""The operator's flags and their PREFOPS_OPERATOR_* environment defaults."""

from __future__ import annotations

import pytest

from prefops_operator.config import OperatorConfig


def test_defaults_watch_all_namespaces_with_the_documented_ports():
    config = OperatorConfig.from_args([], env={})
    assert config.namespaces == ()
    assert (config.metrics_port, config.health_port, config.trainer_metrics_port) == (8080, 8081, 9400)
    assert config.children.default_image == config.default_image


def test_environment_sets_defaults_and_flags_override_them():
    env = {
        "PREFOPS_OPERATOR_DEFAULT_IMAGE": "reg/trainer:env",
        "PREFOPS_OPERATOR_NAMESPACES": "a,b",
        "PREFOPS_OPERATOR_WORKERS": "3",
    }
    config = OperatorConfig.from_args(["--default-image", "reg/trainer:flag"], env=env)
    assert config.default_image == "reg/trainer:flag"
    assert config.namespaces == ("a", "b")
    assert config.workers == 3


def test_nonsense_settings_stop_the_operator_at_startup():
    with pytest.raises(SystemExit):
        OperatorConfig.from_args(["--workers", "0"], env={})
