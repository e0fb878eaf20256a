"""The combinations: algorithm family x {LoRA, full} x {no DeepSpeed, ZeRO-2, ZeRO-3} x {1, 2 processes} x {random
batches, ``training.groupByLength``}, a pairwise cover of them, each job run whole (``prefops-trainer run``: precompute, train for two steps, export) on the tiny model.

Each factor was tested on its own and the faults were where they met (DeepSpeed in one process, Online DPO's full
fine-tuning under ZeRO-3). The jobs share one storage folder, so the reference-based ones share one precompute per
algorithm.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.pairwise import pairs_of, pairwise
from support.trainer_jobs import TINY, job_doc, run_cli

#: One algorithm per TRL trainer prefops drives (``core.algorithms``' families): reference-based DPO and KTO (a
#: precompute phase), reference-free CPO-SimPO and ORPO, Online DPO (generations judged by a reward model).
FACTORS: dict[str, tuple[Any, ...]] = {
    "algorithm": ("dpo", "kto", "cpo-simpo", "orpo", "online-dpo"),
    "weights": ("lora", "full"),
    "zero": (None, 2, 3),
    "processes": (1, 2),
    "batches": ("random", "by-length"),
}


def runs(case: dict[str, Any]) -> bool:
    """Whether validation lets the combination run: Online DPO's full fine-tuning under ZeRO-3 it refuses
    (``test_kto_online_dpo``)."""
    return not (case["algorithm"] == "online-dpo" and case["weights"] == "full" and case["zero"] == 3)


COVER = pairwise(FACTORS, runs)


def case_id(case: dict[str, Any]) -> str:
    zero = f"zero{case['zero']}" if case["zero"] else "nozero"
    return f"{case['algorithm']}-{case['weights']}-{zero}-{case['processes']}proc-{case['batches']}"


def test_the_cover_holds_every_pair_of_values_a_runnable_job_can_have():
    every_case = pairwise(FACTORS, lambda case: True)
    assert len(COVER) == 15, "as few as the largest two factors allow (5 x 3)"
    held = set().union(*map(pairs_of, COVER))
    possible = {pair for case in every_case for pair in pairs_of(case)}
    assert held == possible, "the refused combination's pairs too: each is in some other job"
    assert all(runs(case) for case in COVER)


def job_for(case: dict[str, Any], storage: Path, out: Path) -> dict[str, Any]:
    name = case_id(case)
    spec: dict[str, Any] = {
        "model": {"lora": {"r": 4, "alpha": 8, "dropout": 0.0} if case["weights"] == "lora" else None},
        "dataset": {"maxSamples": 16},
        "algorithm": {"name": case["algorithm"]},
        "training": {"maxSteps": 2, "perDeviceBatchSize": 2, "groupByLength": case["batches"] == "by-length"},
        "resources": {"gpusPerNode": 0, "processesPerNode": case["processes"]},
        "output": {"uri": str(out / "out" / name)},
        "storage": {"uri": str(storage)},
    }
    if case["zero"]:
        spec["training"]["deepspeed"] = {"stage": case["zero"]}
    if case["algorithm"] == "online-dpo":
        spec |= {"rewardModel": {"source": str(TINY / "reward-model")}, "generation": {"maxNewTokens": 8}}
    return job_doc(out, name, **spec)


@pytest.fixture(scope="module")
def shared_storage(tmp_path_factory):
    """One storage folder for every job of the cover: one precompute per reference-based algorithm."""
    return tmp_path_factory.mktemp("combinations") / "work"


@pytest.mark.distributed
@pytest.mark.parametrize("case", COVER, ids=case_id)
def test_each_combination_trains_two_steps_and_exports(tmp_path, shared_storage, case):
    doc = job_for(case, shared_storage, tmp_path)
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(doc, sort_keys=False))
    result = run_cli("run", job)
    assert result.returncode == 0, result.stderr[-4000:]
    if case["processes"] == 2:
        assert "[rank 1]" in result.stderr, "a second rank really ran"
    report = json.loads(
        next(shared_storage.rglob(f"jobs/*/{doc['metadata']['name']}/**/phases/train.json")).read_text()
    )
    assert report["worldSize"] == case["processes"] and report["steps"] == 2
    assert all(math.isfinite(h["loss"]) for h in report["logHistory"])
    manifest = json.loads((tmp_path / "out" / case_id(case) / "prefops.json").read_text())
    assert manifest["model"]["loraMerged"] is (case["weights"] == "lora")
