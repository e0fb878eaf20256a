"""Admission, pure: the memory plan's verdict as the Feasible condition, WontFit before any pod, and pods sized by
the plan of their own phase. No server."""

from __future__ import annotations

import json
from pathlib import Path

from support.operator_core import at, make_job

from prefops_operator.core.admission import FLOOR, PlanSources, admit, pod_sizing
from prefops_operator.core.children import ChildSettings
from prefops_operator.core.conditions import ConditionType, Reason
from prefops_operator.core.machine import Observed, decide
from prefops_operator.core.plan import plan
from prefops_operator.core.status import Phase, Status

CONFIGS = Path(__file__).resolve().parents[1] / "fixtures" / "model-configs"
QWEN_7B = json.loads((CONFIGS / "Qwen--Qwen2.5-7B-Instruct.json").read_text())
FULL_8X80 = {"resources": {"nodes": 1, "gpusPerNode": 8, "gpuMemory": "80Gi"}, "reference": {"precompute": False},
             "training": {"deepspeed": {"stage": 3}, "gradientCheckpointing": True}}  # fmt: skip


def admitted(spec: dict, sources: PlanSources | None = None):
    job = make_job(spec=spec)
    admission = admit(job.spec.raw, sources or PlanSources(QWEN_7B))
    return job, admission, decide(Status(), Observed(job, admission=admission), at(0))


def test_a_job_that_fits_starts_with_feasible_true_naming_its_largest_components():
    _, _, decision = admitted(FULL_8X80)
    assert decision.status.phase == Phase.TRAINING
    feasible = decision.status.condition(ConditionType.FEASIBLE)
    assert (feasible.status, feasible.reason) == ("True", Reason.FITS)
    assert "of 80.0Gi (spec.resources.gpuMemory): fits" in feasible.message
    plan_status = decision.status.plan
    assert plan_status["fits"] is True and plan_status["peakPhase"] == "train"
    assert len(plan_status["largest"]) == 3 and plan_status["perDevice"].endswith("Gi")
    assert set(plan_status["phases"]) == {"train", "export"}


def test_a_job_that_cannot_fit_fails_wont_fit_before_any_pod_naming_the_suggestions():
    job, _, decision = admitted({**FULL_8X80, "resources": {"gpusPerNode": 1, "gpuMemory": "24Gi"}})
    status = decision.status
    assert status.phase == Phase.FAILED
    assert status.condition(ConditionType.FAILED).reason == Reason.WONT_FIT
    feasible = status.condition(ConditionType.FEASIBLE)
    assert (feasible.status, feasible.reason) == ("False", Reason.WONT_FIT)
    assert "more than 24.0Gi (spec.resources.gpuMemory)" in feasible.message
    assert "To make it fit: " in feasible.message and "per device)" in feasible.message
    assert status.plan["fits"] is False and status.plan["suggestions"]
    assert plan(job, status, [], ChildSettings(), at(0)).create_pods == ()


def test_fit_check_warn_runs_the_job_with_a_warning_event():
    spec = {**FULL_8X80, "resources": {"gpusPerNode": 1, "gpuMemory": "24Gi", "fitCheck": "warn"}}
    _, _, decision = admitted(spec)
    assert decision.status.phase == Phase.TRAINING
    assert decision.status.condition(ConditionType.FEASIBLE).status == "False"
    assert [(n.reason, n.warning) for n in decision.notices] == [(Reason.WONT_FIT, True)]
    assert "(fitCheck: warn)" in decision.notices[0].message


def test_without_a_config_the_check_is_skipped_and_the_condition_says_why():
    why = "spec.model.source 's3://b/m' is not read by the operator (it holds no storage credentials)"
    _, _, decision = admitted(FULL_8X80, PlanSources(None, missing=why))
    assert decision.status.phase == Phase.TRAINING
    feasible = decision.status.condition(ConditionType.FEASIBLE)
    assert (feasible.status, feasible.reason) == ("Unknown", Reason.PLAN_SKIPPED)
    assert why in feasible.message
    assert decision.status.plan == {"skipped": why}


def test_without_a_device_memory_the_plan_sizes_pods_but_gives_no_verdict():
    spec = {**FULL_8X80, "resources": {"nodes": 1, "gpusPerNode": 8}}
    why = "no spec.resources.gpuMemory, and no node the job may run on has the label nvidia.com/gpu.memory"
    _, _, decision = admitted(spec, PlanSources(QWEN_7B, memory_missing=why))
    feasible = decision.status.condition(ConditionType.FEASIBLE)
    assert (feasible.status, feasible.reason) == ("Unknown", Reason.PLAN_SKIPPED)
    assert feasible.message.endswith(f"no verdict: {why}")
    assert "fits" not in decision.status.plan and decision.status.plan["phases"]["train"]["memory"].endswith("Gi")


def test_a_node_label_s_memory_is_named_as_the_source():
    spec = {**FULL_8X80, "resources": {"nodes": 1, "gpusPerNode": 8}}
    source = "node label nvidia.com/gpu.memory (node gpu-a, the smallest of 2)"
    _, _, decision = admitted(spec, PlanSources(QWEN_7B, memory=81559 * 2**20, memory_source=source))
    assert decision.status.plan["deviceMemorySource"] == source
    assert source in decision.status.condition(ConditionType.FEASIBLE).message


def test_each_phase_s_pods_request_their_own_phase_s_memory_and_cache_unless_the_spec_sets_them():
    spec = {**FULL_8X80, "reference": {}, "model": {"lora": {"r": 16}}, "resources": {"nodes": 2, "gpusPerNode": 8}}
    job, _, decision = admitted(spec)
    status = decision.status
    assert status.phase == Phase.PRECOMPUTING
    planned = status.plan["phases"]
    pods = {}
    for phase in (Phase.PRECOMPUTING, Phase.TRAINING, Phase.EXPORTING):
        new = plan(job, status.__class__(**{**vars(status), "phase": phase}), [], ChildSettings(), at(0)).create_pods
        pods[phase] = new[0].manifest
    for phase, key in ((Phase.PRECOMPUTING, "precompute"), (Phase.TRAINING, "train"), (Phase.EXPORTING, "export")):
        container = pods[phase]["spec"]["containers"][0]
        assert container["resources"]["requests"]["memory"] == planned[key]["memory"]
        assert container["resources"]["requests"]["cpu"] == planned[key]["cpu"]
        cache = next(v for v in pods[phase]["spec"]["volumes"] if v["name"] == "cache")
        assert cache["emptyDir"]["sizeLimit"] == planned[key]["cache"]
    assert planned["export"]["memory"] != planned["train"]["memory"]  # sized for the merge, not for training
    own = make_job(
        spec={**spec, "resources": {**spec["resources"], "requests": {"memory": "1Ti"}, "limits": {"cpu": 9}}}
    )
    manifest = plan(own, status, [], ChildSettings(), at(0)).create_pods[0].manifest
    assert manifest["spec"]["containers"][0]["resources"]["requests"] == {"memory": "1Ti", "nvidia.com/gpu": "8"}


def test_without_a_plan_pods_request_the_floor_and_never_run_best_effort():
    assert pod_sizing(None, "train").requests == FLOOR
    assert pod_sizing({"skipped": "why"}, "export").cache is None
    job = make_job(spec={"resources": {"gpusPerNode": 0}})
    status = decide(Status(), Observed(job), at(0)).status
    manifest = plan(job, status, [], ChildSettings(), at(0)).create_pods[0].manifest
    assert manifest["spec"]["containers"][0]["resources"]["requests"] == FLOOR
