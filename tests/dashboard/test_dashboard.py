"""The Grafana dashboard the chart ships (charts/prefops/dashboards/prefops.json), checked against the code.

- every PromQL expression (panel targets and template variables) parses: the real ``promtool check rules``;
- every metric name in them is one the trainer or the operator exports, every label they select or group by is
  one that metric carries, and a closed-set label value (a phase, a memory kind, a result) is one the code
  writes: ``support.dashboard_exports`` exercises the real metrics objects and reads what ``generate_latest`` serves;
- every panel shows data, and the numbers a user reads first (phase, progress, ETA, throughput, cluster counts)
  are right, against series made from those same exports: the real PromQL engine of ``promtool test rules``;
- the structure a user notices: the datasource variable everywhere, ids, layout, per-job filtering, units;
- (integration) a real Prometheus scraping real ``prefops-trainer run``s of DPO, KTO and Online DPO on the tiny
  model answers every per-job panel's query.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from support.dashboard_exports import (
    FREE_LABELS,
    Catalogue,
    Sample,
    operator_registry,
    samples,
    sweep_status,
    trainer_registry,
)
from support.dashboard_promql import read

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD_FILE = ROOT / "charts" / "prefops" / "dashboards" / "prefops.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}

JOB, NAMESPACE = "qwen7b-dpo", "team-a"
#: a sweep over algorithm.name ranked by eval loss (which every algorithm reports): trial 0 is JOB (dpo, training),
#: trial 1 orpo (succeeded), trial 2 kto (training), trial 3 waits; each trial serves its own algorithm's eval gauges
SWEEP, OTHER_TRIAL, KTO_TRIAL, WAITING_TRIAL = "qwen-beta", "qwen-beta-1", "qwen-beta-2", "qwen-beta-3"
#: test values of the dashboard's query variables
QUERY_VARIABLES = {"job_namespace": NAMESPACE, "job_name": JOB, "sweep_namespace": NAMESPACE, "sweep": SWEEP}
#: what Grafana puts in place of its own variables when it sends a query
BUILTINS = {
    "__rate_interval": "1m",
    "__interval": "15s",
    "__interval_ms": "15000",
    "__range": "1h",
    "__range_s": "3600",
    "__range_ms": "3600000",
}
ALGORITHM_METRICS = {  # the issue: the dashboard must show the KTO and Online DPO metrics
    "kto": {"prefops_trainer_kl"},
    "online-dpo": {"prefops_trainer_reward_score", "prefops_trainer_reward_score_margin",
                   "prefops_trainer_completion_length", "prefops_trainer_kl"},
}  # fmt: skip


# ---------------------------------------------------------------------------------------------------- the model
def load() -> dict:
    return json.loads(DASHBOARD_FILE.read_text())


def all_panels(dashboard: dict) -> list[dict]:
    """Every panel, rows included, with the panels of collapsed rows."""
    out = []
    for p in dashboard["panels"]:
        out.append(p)
        out += p.get("panels", [])
    return out


def sections(dashboard: dict) -> dict[str, list[dict]]:
    """Row title → its panels (Grafana's flat layout: a row holds the panels below it, up to the next row)."""
    out: dict[str, list[dict]] = {}
    current = None
    for p in sorted(dashboard["panels"], key=lambda p: (p["gridPos"]["y"], p["gridPos"]["x"])):
        if p["type"] == "row":
            current = p["title"]
            out[current] = list(p.get("panels", []))
        else:
            assert current is not None, f"panel {p['title']!r} is above the first row"
            out[current].append(p)
    return out


@dataclass(frozen=True)
class Query:
    row: str
    panel: str
    panel_id: int
    ref: str
    raw: str
    instant: bool

    @property
    def key(self) -> str:
        return f"{self.panel} [{self.ref}]"

    def expr(self, **values: str) -> str:
        return substitute(self.raw, {**VARIABLES, **values})


def queries(dashboard: dict) -> list[Query]:
    return [
        Query(row, p["title"], p["id"], t["refId"], t["expr"], bool(t.get("instant")) and not t.get("range"))
        for row, panels in sections(dashboard).items()
        for p in panels
        for t in p.get("targets", [])
        if t.get("expr")
    ]


def variables(dashboard: dict) -> dict[str, str]:
    """Template variable → the value a query gets: custom ones their current value, query ones a test value."""
    out = dict(BUILTINS)
    for v in dashboard["templating"]["list"]:
        if v["type"] == "query":
            assert v["name"] in QUERY_VARIABLES, f"query variable {v['name']!r} needs a test value in QUERY_VARIABLES"
            out[v["name"]] = QUERY_VARIABLES[v["name"]]
        elif v["type"] in ("custom", "interval", "constant", "textbox"):
            out[v["name"]] = v["current"]["value"] if v.get("current") else v["query"].split(",")[0]
    return out


_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)(?::\w+)?\]\]")


def substitute(expr: str, values: dict[str, str]) -> str:
    def one(m: re.Match) -> str:
        name = next(g for g in m.groups() if g)
        if name not in values:
            raise AssertionError(f"undefined variable ${name} in {expr!r}")
        return values[name]

    return _VARIABLE.sub(one, expr)


def variable_selectors(dashboard: dict) -> list[tuple[str, str, str]]:
    """(variable, series selector, label) of every ``label_values(selector, label)`` query variable."""
    out = []
    for v in dashboard["templating"]["list"]:
        if v["type"] != "query":
            continue
        q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
        m = re.fullmatch(r"\s*label_values\((.+),\s*(\w+)\s*\)\s*", q, re.DOTALL)
        assert m, f"variable {v['name']}: {q!r} is not label_values(selector, label)"
        out.append((v["name"], m.group(1), m.group(2)))
    return out


DASHBOARD = load()
VARIABLES = variables(DASHBOARD)
QUERIES = queries(DASHBOARD)


# ---------------------------------------------------------------------------------------------------- promtool
def promtool() -> str:
    exe = shutil.which("promtool")
    if exe is None:
        pytest.fail("promtool is not installed: it comes with Debian's prometheus package (make servers)")
    return exe


def check_rules(exprs: dict[str, str], workdir: Path) -> subprocess.CompletedProcess:
    """``promtool check rules`` on a file with one recording rule per expression, one group per key."""
    groups = [
        {"name": key, "rules": [{"record": f"prefops_dashboard:query_{i}", "expr": expr}]}
        for i, (key, expr) in enumerate(exprs.items())
    ]
    path = workdir / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    return subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True, text=True, timeout=60)


def test_promtool_check_rules_rejects_a_broken_expression(tmp_path):
    """The check below would pass vacuously if promtool accepted anything."""
    result = check_rules({"ok": "sum(up)", "broken": "sum by (job_name) (rate(prefops_trainer_step[5m])"}, tmp_path)
    assert result.returncode != 0
    assert "broken" in result.stdout + result.stderr


def test_every_expression_parses(tmp_path):
    exprs = {q.key: q.expr() for q in QUERIES}
    exprs |= {f"variable {name}": substitute(sel, VARIABLES) for name, sel, _ in variable_selectors(DASHBOARD)}
    assert len(exprs) == len(QUERIES) + len(variable_selectors(DASHBOARD)), "two targets share a panel title and refId"
    result = check_rules(exprs, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in result.stdout


# ---------------------------------------------------------------------------------------------------- names, labels
def readings() -> list[tuple[str, object]]:
    out = [(q.key, read(q.expr())) for q in QUERIES]
    out += [(f"variable {n}", read(substitute(sel, VARIABLES))) for n, sel, _ in variable_selectors(DASHBOARD)]
    return out


def test_every_metric_name_is_exported_by_the_code(exported: Catalogue):
    unknown = {
        (key, name) for key, reading in readings() for name in reading.metric_names if name not in exported.names
    }
    assert not unknown, f"metrics no code exports: {sorted(unknown)}\nexported: {sorted(exported.names)}"


def test_every_label_exists_on_the_metric_it_is_used_with(exported: Catalogue):
    problems = []
    for key, reading in readings():
        every_label = {lb for s in reading.selectors for n in s.names for lb in exported.labels.get(n, {})}
        for s in reading.selectors:
            for name in s.names:
                labels = exported.labels.get(name, {})
                for m in s.matchers:
                    if m.label == "__name__":
                        continue
                    if m.label not in labels:
                        problems.append(f"{key}: {name} has no label {m.label!r} (it has {sorted(labels)})")
                    elif m.label not in FREE_LABELS and "$" not in m.value and m.op in ("=", "!=", "=~", "!~"):
                        wanted = _literal_values(m.op, m.value)
                        if wanted is None:
                            problems.append(f"{key}: {name}{{{m.label}{m.op}{m.value!r}}}: use = or a plain a|b regex")
                        elif unknown := wanted - labels[m.label]:
                            problems.append(f"{key}: {name}{{{m.label}}} is never {sorted(unknown)} "
                                            f"(the code writes {sorted(labels[m.label])})")  # fmt: skip
        for agg in reading.aggregations:
            inside = {lb for s in reading.selectors_in(agg) for n in s.names for lb in exported.labels.get(n, {})}
            for label in agg.grouping:
                if label not in inside:
                    problems.append(f"{key}: {agg.op} by ({label}) over series without it (they have {sorted(inside)})")
        for keyword, labels in reading.matchings:
            problems += [
                f"{key}: {keyword}({label}): no metric here has it" for label in labels if label not in every_label
            ]
    for name, selector, label in variable_selectors(DASHBOARD):
        for metric in read(substitute(selector, VARIABLES)).metric_names:
            if label not in exported.labels.get(metric, {}):
                problems.append(f"variable {name}: label_values over {metric}, which has no label {label!r}")
    assert not problems, "\n".join(problems)


def _literal_values(op: str, value: str) -> set[str] | None:
    if op in ("=", "!="):
        return {value}
    if re.fullmatch(r"[\w\-.|]+", value):
        return set(value.split("|"))
    return None


# ---------------------------------------------------------------------------------------------------- structure
def test_the_dashboard_model():
    d = DASHBOARD
    assert 36 <= d["schemaVersion"] <= 41
    assert d["uid"] == "prefops" and d["title"] and d["id"] is None and "__inputs" not in d
    by_name = {v["name"]: v for v in d["templating"]["list"]}
    assert by_name["datasource"]["type"] == "datasource" and by_name["datasource"]["query"] == "prometheus"
    for name in ("job_namespace", "job_name"):
        v = by_name[name]
        assert v["type"] == "query" and v["datasource"] == DATASOURCE
        assert "prefops_trainer_step" in json.dumps(v["query"]) and name in json.dumps(v["query"])
    assert "$job_namespace" in json.dumps(by_name["job_name"]["query"]), "job names follow the namespace"
    rows = [p["title"] for p in sorted(d["panels"], key=lambda p: p["gridPos"]["y"]) if p["type"] == "row"]
    assert rows == ["Job", "Sweep", "Cluster", "Failures and disruptions"]
    for name, of in (("sweep_namespace", None), ("sweep", "$sweep_namespace")):
        v = by_name[name]
        assert v["type"] == "query" and "prefops_operator_sweep_trial_info" in json.dumps(v["query"])
        assert of is None or of in json.dumps(v["query"])
    assert DASHBOARD_FILE.stat().st_size < 1 << 20, "fits in a ConfigMap"


def test_every_panel_queries_through_the_datasource_variable():
    for p in all_panels(DASHBOARD):
        if p["type"] == "row":
            continue
        assert p.get("datasource") == DATASOURCE, p["title"]
        assert p.get("targets"), f"{p['title']}: no query"
        for t in p["targets"]:
            assert t.get("datasource") == DATASOURCE, f"{p['title']} [{t['refId']}]"
        assert len({t["refId"] for t in p["targets"]}) == len(p["targets"]), p["title"]


def test_panel_ids_are_unique_and_the_layout_has_no_overlaps():
    panels = all_panels(DASHBOARD)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), sorted(ids)
    titles = [p["title"] for p in panels if p["type"] != "row"]
    assert len(titles) == len(set(titles)), "titles name panels in these tests and in Grafana's search"
    cells: dict[tuple[int, int], str] = {}
    for p in DASHBOARD["panels"]:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["w"] > 0 and g["h"] > 0 and g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']!r} overlaps {cells[(x, y)]!r} at {(x, y)}"
                cells[(x, y)] = p["title"]


def test_job_panels_show_the_selected_jobs_and_cluster_panels_every_job():
    for q in QUERIES:
        for s in read(q.raw).selectors:  # variables sit in strings and ranges only
            matchers = {m.label: m for m in s.matchers}
            if q.row == "Job":
                for label in ("job_namespace", "job_name"):
                    m = matchers.get(label)
                    assert m and m.op == "=~" and m.value == f"${label}", f"{q.key}: {s.name} not filtered by ${label}"
            else:
                assert "$job" not in q.raw, f"{q.key}: a cluster or sweep panel filtered by the job variables"


def test_sweep_panels_show_the_selected_sweeps_trials_and_cluster_panels_every_sweep():
    for q in QUERIES:
        reading = read(q.raw)
        filtered = [s for s in reading.selectors if {m.label: m.value for m in s.matchers}.get("sweep") == "$sweep"]
        if q.row == "Sweep":
            assert filtered, f"{q.key}: not filtered by $sweep"
            assert all(m.op == "=~" for s in filtered for m in s.matchers if m.label in ("sweep", "sweep_namespace"))
            trainer = [s for s in reading.selectors if s.name and s.name.startswith("prefops_trainer_")]
            if trainer:  # trainer series are the sweep's trials: joined with the trial info on the job labels
                assert ("on", ("job_namespace", "job_name")) in [(k, tuple(v)) for k, v in reading.matchings], q.key
        else:
            assert "$sweep" not in q.raw, q.key


def test_every_exported_metric_has_a_panel_including_kto_and_online_dpo(exported: Catalogue):
    used = {name for q in QUERIES for name in read(q.expr()).metric_names}
    for algorithm, metrics in ALGORITHM_METRICS.items():
        assert metrics <= used, f"{algorithm}: no panel shows {sorted(metrics - used)}"
    families = {re.sub(r"_(total|bucket|sum|count|created)$", "", n) for n in exported.names}
    shown = {re.sub(r"_(total|bucket|sum|count|created)$", "", n) for n in used}
    assert families - shown == set(), "exported metrics no panel shows: add a panel"


UNITS = {  # panel → (unit, min, max): what a user reads off it
    "Training progress": ("percentunit", 0, 1),
    "Reward accuracy": ("percentunit", 0, 1),
    "Reference pass progress": ("percentunit", 0, 1),
    "Training progress by job": ("percentunit", 0, 1),
    "ETA": ("dtdurations", None, None),
    "Time per step": ("s", None, None),
    "Memory": ("bytes", 0, None),
    "Tokens per second": ("count:tok/s", 0, None),
    "Throughput by job": ("count:tok/s", 0, None),
    "Completion length (Online DPO)": ("count:tokens", 0, None),
    "Eval reward accuracy per trial": ("percentunit", 0, 1),
    "Job duration": ("dtdurations", None, None),
    "Reconcile duration": ("s", 0, None),
    "Recovery after a restart": ("s", 0, None),
}


def test_units_are_the_ones_a_user_reads():
    panels = {p["title"]: p for p in all_panels(DASHBOARD)}
    for title, (unit, lo, hi) in UNITS.items():
        d = panels[title]["fieldConfig"]["defaults"]
        assert (d.get("unit"), d.get("min"), d.get("max")) == (unit, lo, hi), title
    for p in all_panels(DASHBOARD):
        exprs = " ".join(t["expr"] for t in p.get("targets", []))
        if "_bytes" in exprs:
            assert p["fieldConfig"]["defaults"]["unit"] == "bytes", p["title"]


# ---------------------------------------------------------------------------------------------------- data
SLOTS = 240  # samples 15 s apart: one hour of data, evaluated at its end
INTERVAL_S = 15
EVAL = f"{SLOTS * INTERVAL_S // 60}m"
TRAIN_LOGS = {  # one TRL log entry with every key the trainer maps (prefops_trainer.adapters.metrics.TRAIN_GAUGES)
    "loss": 0.42, "rewards/chosen": 0.8, "rewards/rejected": -0.6, "rewards/accuracies": 0.75,
    "rewards/margins": 1.4, "logps/chosen": -80.0, "logps/rejected": -95.0, "learning_rate": 5e-6,
    "grad_norm": 3.2, "epoch": 0.24, "kl": 0.05, "objective/scores": 1.5, "objective/scores_margin": 0.9,
    "completion_length": 57.0,
}  # fmt: skip


def eval_values(algorithm: str, **given: float) -> dict[str, float]:
    """An evaluation of ``algorithm``: every metric it reports (TRL's names), 0.5 unless ``given``."""
    from prefops_trainer.core.algorithms import ALGORITHMS

    values = dict.fromkeys(ALGORITHMS[algorithm].eval_metrics, 0.5)
    return values | {name.replace("__", "/"): value for name, value in given.items()}


EVALUATIONS = {  # trial → (its latest evaluation, the step it belongs to)
    JOB: (eval_values("dpo", loss=0.55, rewards__accuracies=0.7, rewards__margins=0.9), 200),
    OTHER_TRIAL: (eval_values("orpo", loss=0.5, rewards__accuracies=0.6), 200),
    KTO_TRIAL: (eval_values("kto", loss=0.65), 100),
}


def scenario() -> list[tuple[Sample, dict[str, str]]]:
    """A cluster at one moment, made of the real metrics objects: two precompute shards of a job (their series
        not yet stale), its two training ranks at step 240 of 1000 with its last evaluation (it is trial 0 of a sweep
        whose trial 1 succeeded and trial 2 trains), and the operator after a restart and a failure; each with the target
        labels a scrape adds. The operator restarted one group after an OOM kill and another after a lost node (which
    recovered in 42 s)."""
    trainer = "prefops-trainer"
    processes = [
        (trainer_registry(JOB, NAMESPACE, phase="precompute", precompute=(40, 100), memory=False), "10.0.0.1:9400", trainer),
        (trainer_registry(JOB, NAMESPACE, phase="precompute", precompute=(60, 100), memory=False), "10.0.0.2:9400", trainer),
        (trainer_registry(JOB, NAMESPACE, rank=0, logs=TRAIN_LOGS, step=SLOTS, total_steps=1000,
                          tokens_per_second=1500.0, cuda=True, evaluation=EVALUATIONS[JOB]), "10.0.1.1:9400", trainer),
        (trainer_registry(JOB, NAMESPACE, rank=1, step=0, total_steps=1000, tokens_per_second=1400.0, cuda=True),
         "10.0.1.1:9401", trainer),
        (trainer_registry(OTHER_TRIAL, NAMESPACE, memory=False, evaluation=EVALUATIONS[OTHER_TRIAL]), "10.0.2.1:9400",
         trainer),
        (trainer_registry(KTO_TRIAL, NAMESPACE, memory=False, evaluation=EVALUATIONS[KTO_TRIAL]), "10.0.3.1:9400",
         trainer),
        (operator_registry(
            {(NAMESPACE, JOB): "Training", (NAMESPACE, "next"): "Pending", ("team-b", "a"): "Failed",
             ("team-b", "b"): "Succeeded", ("team-b", "c"): "Precomputing"},
            transitions=[("Pending", "Precomputing"), ("Precomputing", "Training"), ("Training", "Training"),
                         ("Training", "Failed")],
            restarts=[("Training", "Failure", "OOMKilled", "node-a"), ("Training", "Disruption", "NodeLost", "node-b")],
            recoveries=[("Training", "Disruption", 42.0)], reconciles=[("ok", 0.02), ("ok", 0.3), ("conflict", 0.01)],
            durations=[("Failed", 1800.0), ("Succeeded", 3600.0)], api_errors=["conflict"],
            sweeps={(NAMESPACE, SWEEP): (sweep_status({JOB: "Training", OTHER_TRIAL: "Succeeded", KTO_TRIAL: "Training",
                                                       WAITING_TRIAL: "Waiting"},
                                                      {t: e[0]["loss"] for t, e in EVALUATIONS.items()}), "loss"),
                    ("team-b", "other"): (sweep_status({"x-0": "Failed"}, {}, "Failed"), "loss")},
        ), "10.0.9.9:8080", "prefops-operator"),
    ]  # fmt: skip
    return [(s, {"instance": instance, "job": job}) for registry, instance, job in processes for s in samples(registry)]


def values(s: Sample) -> str:
    """Counters and the step climb from 0 to their value over the hour; everything else holds its value."""
    climbing = s.name == "prefops_trainer_step" or (
        s.type in ("counter", "histogram") and not s.name.endswith("_created")
    )
    if climbing:
        return f"0+{s.value / SLOTS!r}x{SLOTS}"
    return f"{s.value!r}+0x{SLOTS}"


def promtool_test(expr_tests: list[dict], workdir: Path) -> subprocess.CompletedProcess:
    """``promtool test rules``: the scenario's series as input, PromQL expectations evaluated by the real engine."""
    spec = {
        "rule_files": [],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": f"{INTERVAL_S}s",
            "input_series": [{"series": s.series(**extra), "values": values(s)} for s, extra in scenario()],
            "promql_expr_test": expr_tests,
        }],
    }  # fmt: skip
    path = workdir / "dashboard-test.yml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return subprocess.run([promtool(), "test", "rules", str(path)], capture_output=True, text=True, timeout=120)


def test_every_panel_shows_data_for_a_training_job(tmp_path):
    tests = [{"expr": f"absent({q.expr()})", "eval_time": EVAL, "exp_samples": []} for q in QUERIES]
    result = promtool_test(tests, tmp_path)
    out = result.stdout + result.stderr
    empty = [q.key for q in QUERIES if f"absent({q.expr()})" in out]
    assert result.returncode == 0, f"panels without data: {empty}\n{out[-4000:]}"


def _labels(**labels: str) -> str:
    return "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"


PER_JOB = _labels(job_name=JOB, job_namespace=NAMESPACE)
EXPECTED = {  # (panel, refId) → [(labels, value)]: the numbers a user reads first, at step 240 of 1000
    ("Phase", "A"): [(PER_JOB, 2)],  # the value mapping's "train"
    ("Training progress", "A"): [(PER_JOB, 0.24)],
    ("Step", "A"): [(PER_JOB, SLOTS)],
    ("Step", "B"): [(PER_JOB, 1000)],
    ("Time per step", "A"): [(PER_JOB, INTERVAL_S)],
    ("ETA", "A"): [(PER_JOB, (1000 - SLOTS) * INTERVAL_S)],
    ("Loss", "A"): [(PER_JOB, 0.42)],
    ("Reward accuracy", "A"): [(PER_JOB, 0.75)],
    ("Tokens per second", "A"): [(PER_JOB, 2900)],
    ("Reference pass progress", "A"): [(PER_JOB, 0.5)],
    ("KL to reference (KTO, Online DPO)", "A"): [(PER_JOB, 0.05)],
    ("Reward-model score margin (Online DPO)", "A"): [(PER_JOB, 0.9)],
    ("Running jobs", "A"): [("{}", 2)],
    ("Pending / suspended", "A"): [("{}", 1)],
    ("Pending / suspended", "B"): [("{}", 0)],
    ("Failed", "A"): [("{}", 1)],
    ("Restarts in time range", "A"): [("{}", 2)],
    ("Disruptions in time range", "A"): [("{}", 1)],
    ("Restarts by node", "A"): [
        (_labels(kind="Failure", node="node-a"), 1),
        (_labels(kind="Disruption", node="node-b"), 1),
    ],
    ("Failures in time range", "A"): [("{}", 1)],
    ("Failures by phase", "A"): [(_labels(from_phase="Training"), 1 / 60)],  # one an hour, in a 1m window
    ("Job duration", "C"): [(_labels(result="failed"), 1800), (_labels(result="succeeded"), 3600)],
    ("Training progress by job", "A"): [(PER_JOB, 0.24)],
    ("Trial objective", "A"): [
        (_labels(job_name=JOB, metric="loss"), 0.55),
        (_labels(job_name=OTHER_TRIAL, metric="loss"), 0.5),
        (_labels(job_name=KTO_TRIAL, metric="loss"), 0.65),
    ],
    ("Trials by phase", "A"): [
        (_labels(phase="Training"), 2),
        (_labels(phase="Succeeded"), 1),
        (_labels(phase="Waiting"), 1),
    ],
    # kto reports no reward accuracy: no line for its trial
    ("Eval reward accuracy per trial", "A"): [(_labels(job_name=JOB), 0.7), (_labels(job_name=OTHER_TRIAL), 0.6)],
    ("Eval loss per trial", "A"): [
        (_labels(job_name=JOB), 0.55),
        (_labels(job_name=OTHER_TRIAL), 0.5),
        (_labels(job_name=KTO_TRIAL), 0.65),
    ],
    ("Eval step per trial", "A"): [
        (_labels(job_name=JOB), 200),
        (_labels(job_name=OTHER_TRIAL), 200),
        (_labels(job_name=KTO_TRIAL), 100),
    ],
    ("Sweeps by phase", "A"): [
        (_labels(phase=p), {"Running": 1, "Failed": 1}.get(p, 0))
        for p in ("Pending", "Running", "Suspended", "Succeeded", "Failed")
    ],
}


def test_the_first_numbers_a_user_reads_are_right(tmp_path):
    by_key = {(q.panel, q.ref): q for q in QUERIES}
    assert set(EXPECTED) <= set(by_key), sorted(set(EXPECTED) - set(by_key))
    tests = [  # in millionths: promtool compares floats exactly
        {"expr": f"round(({by_key[key].expr()}) * 1e6)", "eval_time": EVAL,
         "exp_samples": [{"labels": labels, "value": round(value * 1e6)} for labels, value in expected]}
        for key, expected in EXPECTED.items()
    ]  # fmt: skip
    result = promtool_test(tests, tmp_path)
    assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]


# ---------------------------------------------------------------------------------------------------- live
ONLINE = {
    "rewardModel": {"source": str(ROOT / "examples" / "tiny" / "reward-model")},
    "generation": {"maxNewTokens": 8},
}
RUNS = {  # job name → spec over the tiny job of tests/support/trainer_jobs.py: long enough for a few scrapes
    "dash-dpo": {"training": {"maxSteps": 100, "perDeviceBatchSize": 2, "gradientAccumulation": 2,
                              "checkpointEverySteps": 1000}},
    "dash-kto": {"algorithm": {"name": "kto"},
                 "training": {"maxSteps": 150, "perDeviceBatchSize": 4, "checkpointEverySteps": 1000}},
    "dash-online-dpo": {"algorithm": {"name": "online-dpo"}, **ONLINE,
                        "training": {"maxSteps": 24, "perDeviceBatchSize": 4, "checkpointEverySteps": 1000}},
}  # fmt: skip
GENERAL = {"prefops_trainer_kl", "prefops_trainer_reward_score", "prefops_trainer_reward_score_margin",
           "prefops_trainer_completion_length"}  # fmt: skip
#: job → panels that must show data for it (by the metrics they read)
MUST_SHOW = {
    "dash-dpo": lambda names: not names & GENERAL,  # every panel but the KTO / Online DPO ones
    "dash-kto": lambda names: names <= {"prefops_trainer_kl", "prefops_trainer_loss", "prefops_trainer_step",
                                        "prefops_trainer_total_steps", "prefops_trainer_phase"},
    "dash-online-dpo": lambda names: names <= ALGORITHM_METRICS["online-dpo"] | {"prefops_trainer_loss"},
}  # fmt: skip


def query_range(url: str, expr: str, start: float, end: float) -> list[dict]:
    params = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": "1"})
    with urllib.request.urlopen(f"{url}/api/v1/query_range?{params}", timeout=10) as r:
        body = json.load(r)
    assert body["status"] == "success", body
    return body["data"]["result"]


@pytest.mark.integration
def test_job_panels_show_real_runs_of_dpo_kto_and_online_dpo(tmp_path):
    from support.kube import free_port
    from support.prometheus import Prometheus
    from support.trainer_jobs import CLI, write_job

    ports = {name: free_port() for name in RUNS}
    prom = Prometheus.start(tmp_path / "prom", {"prefops-trainer": [f"127.0.0.1:{p}" for p in ports.values()]})
    try:
        started, procs = time.time(), {}
        for name, spec in RUNS.items():
            (tmp_path / name).mkdir()
            job = write_job(tmp_path / name, name, **spec)
            env = {**os.environ, "PREFOPS_METRICS_PORT": str(ports[name]), "PREFOPS_METRICS_ADDR": "127.0.0.1"}
            log = (tmp_path / f"{name}.log").open("w")
            procs[name] = subprocess.Popen([*CLI, "run", str(job)], env=env, stdout=log, stderr=subprocess.STDOUT)
        for name, proc in procs.items():
            assert proc.wait(timeout=600) == 0, (tmp_path / f"{name}.log").read_text()[-3000:]
        time.sleep(2)  # the last scrape
        ended = time.time()

        missing = []
        for name in RUNS:
            values = {"job_name": name, "job_namespace": "default", "window": "1m"}
            for q in QUERIES:
                if q.row != "Job" or not MUST_SHOW[name](read(q.expr()).metric_names):
                    continue
                if not query_range(prom.url, q.expr(**values), started, ended):
                    missing.append(f"{name}: {q.key}")
            phases = query_range(
                prom.url, next(q for q in QUERIES if q.panel == "Phase").expr(**values), started, ended
            )
            assert "2" in {v for _, v in phases[0]["values"]}, f"{name}: the timeline never showed train"
        assert not missing, "panels without data for a real run:\n" + "\n".join(missing)
    finally:
        prom.stop()
