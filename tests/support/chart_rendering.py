"""Render charts/prefops with the real Helm engine (Helm 4's SDK from PyPI ``helm-python-sdk``, no helm binary)
and read the result as Kubernetes objects; the value sets the chart tests share."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import helm_python
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "prefops"
RELEASE, NAMESPACE = "prefops", "prefops-system"


class Yaml12Loader(yaml.SafeLoader):
    """PyYAML reads YAML 1.1, where ``1e-06`` (no dot) is a string; Helm's ``toYaml`` writes floats that way and
    Kubernetes reads them as numbers (YAML 1.2), so read them as Kubernetes does."""


Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def load_all(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.load_all(text, Loader=Yaml12Loader) if doc]


@functools.cache
def chart() -> helm_python.Chart:
    return helm_python.Chart.load(CHART)


@dataclass(frozen=True)
class Rendered:
    objects: list[dict[str, Any]]
    notes: str

    def all(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def one(self, kind: str) -> dict[str, Any]:
        found = self.all(kind)
        assert len(found) == 1, f"expected one {kind}, rendered {len(found)}"
        return found[0]

    def kinds(self) -> set[str]:
        return {o["kind"] for o in self.objects}


def render(values: dict[str, Any] | None = None, name: str = RELEASE, namespace: str = NAMESPACE) -> Rendered:
    """The chart's manifests as objects (NOTES.txt apart), as `helm template` would print them."""
    out = chart().render(values or {}, name=name, namespace=namespace)
    notes = out.pop(f"{chart().name}/templates/NOTES.txt", "")
    objects = [obj for path in sorted(out) for obj in load_all(out[path])]
    return Rendered(objects, notes)


def container(rendered: Rendered) -> dict[str, Any]:
    (operator,) = rendered.one("Deployment")["spec"]["template"]["spec"]["containers"]
    return dict(operator)


def args(rendered: Rendered) -> dict[str, list[str]]:
    """The operator's flags: ``{"--flag": [values...]}`` (``[""]`` for a switch)."""
    flags: dict[str, list[str]] = {}
    for arg in container(rendered)["args"]:
        flag, _, value = arg.partition("=")
        flags.setdefault(flag, []).append(value)
    return flags


def crd_file_spec(name: str = "prefops.dev_preferencetrainingjobs.yaml") -> dict[str, Any]:
    (crd,) = load_all((ROOT / "crds" / name).read_text())
    return dict(crd)


def crd_file_specs() -> dict[str, dict[str, Any]]:
    """Every CRD of the repository's crds/ by its metadata.name: the jobs' and the sweeps'."""
    specs = [crd_file_spec(p.name) for p in sorted((ROOT / "crds").glob("*.yaml"))]
    return {s["metadata"]["name"]: s for s in specs}


# Value sets rendered by the unit tests and applied to the apiserver by the integration tests: the defaults and
# every switch off its default at least once.
VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "namespaced": {"watchNamespaces": ["chart-team-a", "chart-team-b"]},
    "monitoring": {
        "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}, "interval": "1m"},
        "podMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}, "scrapeTimeout": ""},
        "metrics": {"service": {"port": 9090, "annotations": {"prometheus.io/scrape": "true"}}},
    },
    "namespaced-monitoring": {
        "watchNamespaces": ["chart-team-a"],
        "podMonitor": {"enabled": True},
        "serviceMonitor": {"enabled": True},
    },
    "dashboards": {
        "dashboards": {"enabled": True, "namespace": "chart-monitoring", "annotations": {"grafana_folder": "prefops"}}
    },
    "crd-not-kept": {"crds": {"keep": False}},
    "no-crd": {"crds": {"enabled": False}},
    "images": {
        "image": {
            "repository": "registry.example.com/ml/prefops-operator",
            "digest": "sha256:" + "a" * 64,
            "pullPolicy": "Always",
        },
        "imagePullSecrets": [{"name": "regcred"}],
        "trainer": {
            "image": {
                "repository": "registry.example.com/ml/prefops-trainer",
                "tag": "0.1.0-cu128",
                "pullPolicy": "Always",
            },
            "metricsPort": 9500,
            "runAsUser": 2000,
        },
    },
    "tuned": {
        "fullnameOverride": "ptj-operator",
        "operator": {
            "metricsPort": 9080,
            "healthPort": 9081,
            "workers": 4,
            "progressInterval": 30,
            "scrapeTimeout": 5,
            "verbose": True,
            "extraArgs": ["--bind-address=0.0.0.0"],
        },
        "resources": {"requests": {"cpu": "200m", "memory": "256Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}},
        "podAnnotations": {"example.com/team": "ml"},
        "podLabels": {"team": "ml"},
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}],
        "affinity": {
            "nodeAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "weight": 1,
                        "preference": {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["cpu"]}]},
                    }
                ]
            }
        },
        "priorityClassName": "system-cluster-critical",
        "serviceAccount": {"annotations": {"example.com/role": "prefops"}},
    },
    "network-policy": {
        "networkPolicy": {"enabled": True, "metricsFrom": ["kubernetes.io/metadata.name=monitoring", "team=ml-ops"]},
        "trainer": {"shmSizeLimit": "8Gi", "cacheSizeLimit": "1Ti"},
    },
    "sweep-creators": {
        "sweepCreators": {
            "enabled": True,
            "port": 9444,
            "certificateDays": 30,
            "namespaceSelector": {"matchLabels": {"prefops.dev/sweeps": "checked"}},
        },
        "networkPolicy": {"enabled": True},
    },
    "bring-your-own-account": {
        "serviceAccount": {"create": False, "name": "existing-operator"},
        "rbac": {"create": False},
        "metrics": {"service": {"enabled": False}},
    },
}
