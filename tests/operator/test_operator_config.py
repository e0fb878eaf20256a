"""The operator's flags and their PREFOPS_OPERATOR_* environment defaults, all built from the setting fields."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from support.kube import ROOT

from prefops_operator.config import OperatorConfig, build_parser
from prefops_operator.core.children import ChildSettings
from prefops_operator.core.settings import settings_of

#: every flag and environment variable the operator has ever had: the chart and users pass them, so none may go
PUBLISHED = {
    "--namespace": "PREFOPS_OPERATOR_NAMESPACES",
    "--default-image": "PREFOPS_OPERATOR_DEFAULT_IMAGE",
    "--image-pull-policy": "PREFOPS_OPERATOR_IMAGE_PULL_POLICY",
    "--trainer-metrics-port": "PREFOPS_OPERATOR_TRAINER_METRICS_PORT",
    "--run-as-user": "PREFOPS_OPERATOR_RUN_AS_USER",
    "--metrics-port": "PREFOPS_OPERATOR_METRICS_PORT",
    "--health-port": "PREFOPS_OPERATOR_HEALTH_PORT",
    "--bind-address": "PREFOPS_OPERATOR_BIND_ADDRESS",
    "--workers": "PREFOPS_OPERATOR_WORKERS",
    "--progress-interval": "PREFOPS_OPERATOR_PROGRESS_INTERVAL",
    "--scrape-timeout": "PREFOPS_OPERATOR_SCRAPE_TIMEOUT",
    "--verbose": "PREFOPS_OPERATOR_VERBOSE",
}


def test_defaults_watch_all_namespaces_with_the_documented_ports():
    config = OperatorConfig.from_args([], env={})
    assert config.namespaces == ()
    assert (config.metrics_port, config.health_port, config.children.metrics_port) == (8080, 8081, 9400)
    assert config == OperatorConfig()


def test_environment_sets_defaults_and_flags_override_them():
    env = {
        "PREFOPS_OPERATOR_DEFAULT_IMAGE": "reg/trainer:env",
        "PREFOPS_OPERATOR_NAMESPACES": "a,b",
        "PREFOPS_OPERATOR_WORKERS": "3",
        "PREFOPS_OPERATOR_RUN_AS_USER": "2000",
        "PREFOPS_OPERATOR_VERBOSE": "1",
    }
    config = OperatorConfig.from_args(["--default-image", "reg/trainer:flag"], env=env)
    assert config.children.default_image == "reg/trainer:flag"
    assert config.namespaces == ("a", "b")
    assert config.workers == 3
    assert (config.children.run_as_user, config.verbose) == (2000, True)


def test_every_published_flag_and_environment_variable_still_works():
    declared = {meta.flag: meta.env_name for _, _, meta in settings_of(OperatorConfig)}
    assert declared.items() >= PUBLISHED.items()
    parser_flags = {opt for action in build_parser({})._actions for opt in action.option_strings} - {"-h", "--help"}
    assert parser_flags == set(declared)


def test_the_childrens_settings_are_the_ones_trainer_pods_are_built_with():
    config = OperatorConfig.from_args(
        ["--default-image", "r/t:1", "--image-pull-policy", "Always", "--trainer-metrics-port", "9500",
         "--run-as-user", "4242"], env={},
    )  # fmt: skip
    assert config.children == ChildSettings(
        default_image="r/t:1", image_pull_policy="Always", metrics_port=9500, run_as_user=4242
    )


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["--workers", "0"], {}, r"--workers: must be >= 1, got 0"),
        (["--progress-interval", "0"], {}, r"--progress-interval: must be > 0, got 0.0"),
        (["--run-as-user", "0"], {}, r"--run-as-user: must be > 0 \(non-root\), got 0"),
        (["--trainer-metrics-port", "70000"], {}, r"--trainer-metrics-port: must be a port number, got 70000"),
        ([], {"PREFOPS_OPERATOR_WORKERS": "many"}, r"argument --workers: invalid int value: 'many'"),
        (["--image-pull-policy", "Sometimes"], {}, r"argument --image-pull-policy: invalid choice: 'Sometimes'"),
    ],
)
def test_nonsense_settings_stop_the_operator_at_startup_naming_the_flag(argv, env, message, capsys):
    with pytest.raises(SystemExit) as exited:
        OperatorConfig.from_args(argv, env=env)
    assert exited.value.code == 2
    assert re.search(message, capsys.readouterr().err)


def test_the_settings_table_in_the_docs_is_generated_from_the_fields():
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_operator_files.py"), "--check"],
                            capture_output=True, text=True, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr
