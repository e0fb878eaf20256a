"""``prefops-trainer sweep sweep.yaml``: a PreferenceTrainingSweep run on this machine (docs/contract.md §9).

The trials are the operator's (``core.sweep``: the same expansion, names and overrides) and run one after another,
each as ``prefops-trainer run`` of its own job in a child process, so a trial that fails or misses its gate does not
stop the others. They share the template's storage: the first trial computes the reference cache, the others find
it (``cacheHit``). Then the comparison table is printed with the best trial marked (the operator's ranking), and
``sweep.json`` and ``sweep.png`` (the objective per trial, the trials' eval curves overlaid) are written beside the
trials' models, under the template's ``output.uri``.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .adapters import interrupt, storage
from .adapters.jobfile import load_sweep
from .adapters.plots import plot_sweep
from .adapters.sources import cache_dir
from .core.errors import Interrupted
from .core.reports import EvalPoint, TrainReport
from .core.rules.trials import TrialRow
from .core.spec import Job
from .core.sweep import Sweep, Trial, best, trial_job, trial_manifest
from .core.uris import Uri, parse_uri
from .core.workspace import Workspace
from .phases import reports

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    """How one trial ended: ``phase`` is ``Succeeded`` or ``Failed``; ``objective`` the final evaluation's value of
    the sweep's metric; ``evaluations`` every evaluation (``{"step", "metrics"}``) for the curves."""

    trial: Trial
    phase: str
    objective: float | None
    step: int | None
    cache_hit: bool | None
    output: str
    message: str | None
    evaluations: list[EvalPoint]

    def row(self, best: bool) -> dict[str, Any]:
        """The trial's entry in ``sweep.json``."""
        t = self.trial
        at = (self.phase, self.output, self.objective, self.step, self.cache_hit, self.message)
        row = TrialRow(t.name, t.index, t.parameters, *at)
        return {**row.to_dict(), "best": best}


def run(path: Path) -> int:
    """Run every trial of the sweep in ``path``; 0 when a best trial was found, 1 when no trial has a value."""
    sweep = load_sweep(path)
    if sweep.suspend:
        print(f"prefops: sweep {sweep.name}: spec.suspend is true, no trial starts")  # noqa: T201
        return 0
    outcomes = []
    with tempfile.TemporaryDirectory(prefix="prefops-sweep-") as tmp:
        for trial in sweep.trials:
            print(f"prefops: sweep {sweep.name}: trial {trial.index + 1}/{len(sweep.trials)} {trial.name}: "  # noqa: T201
                  f"{trial.describe()}", flush=True)  # fmt: skip
            outcomes.append(_run_trial(sweep, trial, Path(tmp)))
    winner = best([(o.phase, o.objective) for o in outcomes], sweep.objective)
    print(_table(sweep, outcomes, winner))  # noqa: T201
    _write_results(sweep, outcomes, winner)
    return 0 if winner is not None else 1


def _run_trial(sweep: Sweep, trial: Trial, tmp: Path) -> Outcome:
    """``prefops-trainer run`` of the trial's job in a child process; its outcome read from its work storage."""
    job = trial_job(sweep, trial)
    manifest, term = tmp / f"{trial.name}.yaml", tmp / f"{trial.name}.termination-log"
    manifest.write_text(yaml.safe_dump(trial_manifest(sweep, trial), sort_keys=False))
    term.write_text("")
    env = {**os.environ, "PREFOPS_TERMINATION_LOG": str(term)}
    with interrupt.forwarding() as child:  # a SIGTERM stops the trial (resumable) and then the sweep
        code = child.started(
            subprocess.Popen([sys.executable, "-m", "prefops_trainer", "run", str(manifest)], env=env)
        ).wait()
    if interrupt.requested():
        raise Interrupted(f"stopped on SIGTERM during trial {trial.name}; run the sweep again to resume")
    return _outcome(sweep, trial, job, code, term.read_text())


def _outcome(sweep: Sweep, trial: Trial, job: Job, code: int, termination: str) -> Outcome:
    ws = Workspace.for_job(job, cache_dir())
    fresh = code in (0, 3)  # the train phase finished in this run (3: export missed the gate)
    train: TrainReport = (reports.read_train(ws) or {}) if fresh else {}
    final = train.get("evaluation")
    value = final["metrics"].get(sweep.objective.metric) if final else None
    precompute = reports.gathered(ws, job.spec.precompute).get("precompute", {})
    return Outcome(
        trial=trial,
        phase="Succeeded" if code == 0 else "Failed",
        objective=value,
        step=final["step"] if final and value is not None else None,
        cache_hit=precompute.get("cacheHit") if job.spec.precompute else None,
        output=job.spec.output.uri.as_written,
        message=None if code == 0 else _failure(code, termination),
        evaluations=train.get("evalHistory", []),
    )


def _failure(code: int, termination: str) -> str:
    """What a failed trial's termination message says, in one line."""
    try:
        gate = json.loads(termination).get("gate")
    except (ValueError, AttributeError):
        gate = None
    if isinstance(gate, dict):
        kind = "min" if "min" in gate else "max"
        value, bound = gate.get("value"), gate.get(kind)
        return f"exit {code}: spec.output.gate not met: eval {gate.get('metric')} {value} ({kind} {bound})"
    return f"exit {code}: {termination.strip()[:300] or 'no message'}"


def _table(sweep: Sweep, outcomes: list[Outcome], winner: int | None) -> str:
    metric = sweep.objective.metric
    header = ("", "trial", "parameters", "phase", f"eval {metric}", "cacheHit", "output")
    rows = [
        (
            "*" if i == winner else "",
            o.trial.name,
            o.trial.describe(),
            o.phase,
            "-" if o.objective is None else f"{o.objective:.4f}",
            "-" if o.cache_hit is None else str(o.cache_hit).lower(),
            o.output,
        )
        for i, o in enumerate(outcomes)
    ]
    widths = [max(len(r[c]) for r in (header, *rows)) for c in range(len(header))]
    lines = [f"prefops: sweep {sweep.name} ({sweep.objective.goal} eval {metric})"]
    for r in (header, *rows):
        lines.append("  " + "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
    for o in outcomes:
        if o.message:
            lines.append(f"  {o.trial.name}: {o.message}")
    if winner is not None:
        w = outcomes[winner]
        lines.append(f"  best: {w.trial.name} ({w.trial.describe()}) with eval {metric} {w.objective:g}")
    else:
        succeeded = sum(o.phase == "Succeeded" for o in outcomes)
        reason = f"all {len(outcomes)} trial(s) failed" if not succeeded else f"no trial reported eval {metric}"
        lines.append(f"  no best trial: {reason}")
    return "\n".join(lines)


def _write_results(sweep: Sweep, outcomes: list[Outcome], winner: int | None) -> None:
    """``sweep.json`` and ``sweep.png`` under the template's ``output.uri``."""
    base = _base(sweep)
    doc = {
        "sweep": sweep.name,
        "objective": {"metric": sweep.objective.metric, "goal": sweep.objective.goal},
        "trials": [o.row(i == winner) for i, o in enumerate(outcomes)],
        "best": outcomes[winner].trial.name if winner is not None else None,
    }
    storage.write_json(base.join("sweep.json"), doc)
    trials = [{"name": o.trial.name, "objective": o.objective, "best": i == winner, "evaluations": o.evaluations}
              for i, o in enumerate(outcomes)]  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="prefops-sweep-plot-") as tmp:
        png = Path(tmp) / "sweep.png"
        title = f"sweep {sweep.name}: {len(outcomes)} trials, {sweep.objective.goal} eval {sweep.objective.metric}"
        plot_sweep(trials, sweep.objective.metric, sweep.objective.goal, png, title)
        storage.upload_file(png, base.join("sweep.png"))
    print(f"  results: {base.join('sweep.json')}, {base.join('sweep.png')}")  # noqa: T201


def _base(sweep: Sweep) -> Uri:
    return parse_uri(str((sweep.template.get("output") or {}).get("uri")).rstrip("/"))
