"""The sweep's pure core: parsing, the grid's trials and their jobs, the reference groups, the checks before the
first trial, and ``decide`` (scheduling under parallelism and reference sharing, the best trial, suspension,
failures). No server."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from support.operator_core import at
from support.sweeps import sweep_manifest

from prefops_operator.core.algorithms import DPO_LOSS_TYPES
from prefops_operator.core.evaluation import Evaluation
from prefops_operator.core.naming import MAX_NAME
from prefops_operator.core.refusals import forbidden
from prefops_operator.core.spec import InvalidSpec, parse_job
from prefops_operator.core.sweep_machine import SweepObserved, decide, trials_to_check
from prefops_operator.core.sweep_spec import parse_sweep
from prefops_operator.core.sweep_status import SweepPhase, SweepStatus, TrialView, trial_view
from prefops_operator.core.sweep_trials import (
    LABEL_SWEEP,
    LABEL_TRIAL,
    dropped_overrides,
    expand,
    reference_group,
    sweep_problems,
    trial_manifest,
)

UID = "sweep-uid"


def make_sweep(name="beta", spec=None, template=None):
    manifest = sweep_manifest(name, spec, template)
    manifest["metadata"].update(namespace="team-a", uid=UID, generation=1, resourceVersion="7")
    return parse_sweep(manifest)


def view(name, phase="Pending", *, owner=UID, **kw):
    return TrialView(name=name, owner_uid=owner, phase=phase, suspend=kw.pop("suspend", False),
                     precompute_done=kw.pop("precompute_done", False), **kw)  # fmt: skip


def step(sweep, status, trials=(), now=0, **observed):
    return decide(status, SweepObserved(sweep, trials={t.name: t for t in trials}, **observed), at(now))


# -- trials and their jobs ---------------------------------------------------------------------------------------


def test_a_grid_expands_like_nested_loops_into_trials_named_after_the_sweep():
    sweep = make_sweep(spec={"parameters": [{"path": "algorithm.beta", "values": [0.1, 0.3]},
                                            {"path": "algorithm.lossType", "values": [["sigmoid"], ["ipo"]]}]})  # fmt: skip
    trials = expand(sweep)
    assert [(t.name, t.parameters) for t in trials] == [
        ("beta-0", {"algorithm.beta": 0.1, "algorithm.lossType": ["sigmoid"]}),
        ("beta-1", {"algorithm.beta": 0.1, "algorithm.lossType": ["ipo"]}),
        ("beta-2", {"algorithm.beta": 0.3, "algorithm.lossType": ["sigmoid"]}),
        ("beta-3", {"algorithm.beta": 0.3, "algorithm.lossType": ["ipo"]}),
    ]
    assert trials[1].origins == ("spec.parameters[0].values[0]", "spec.parameters[1].values[1]")


def test_a_trial_job_is_the_template_with_its_overrides_owned_and_labelled_by_the_sweep():
    sweep = make_sweep(
        template={"ttlSecondsAfterFinished": 60, "suspend": True, "algorithm": {"name": "dpo", "beta": 9}}
    )
    job = trial_manifest(sweep, expand(sweep)[2], suspend=False)
    assert job["metadata"]["name"] == "beta-2"
    assert job["metadata"]["labels"] == {LABEL_SWEEP: "beta", LABEL_TRIAL: "2"}
    assert job["metadata"]["ownerReferences"] == [{"apiVersion": "prefops.dev/v1alpha1", "kind": "PreferenceTrainingSweep",
                                                   "name": "beta", "uid": UID, "controller": True,
                                                   "blockOwnerDeletion": True}]  # fmt: skip
    spec = job["spec"]
    assert spec["algorithm"] == {"name": "dpo", "beta": 0.3}
    assert spec["output"]["uri"] == "s3://models/beta/beta-2"
    assert spec["suspend"] is False and "ttlSecondsAfterFinished" not in spec
    assert spec["dataset"] == sweep.spec.template["dataset"]
    assert parse_job(job).spec.algorithm.beta == 0.3


def test_an_explicit_trial_list_sets_each_trials_paths_and_creates_missing_objects():
    sweep = make_sweep(spec={"parameters": None, "trials": [{"algorithm.beta": 0.2}, {"model.lora.r": 8}]})
    first, second = expand(sweep)
    assert first.origins == ("spec.trials[0].algorithm.beta",)
    assert trial_manifest(sweep, second, False)["spec"]["model"]["lora"] == {"r": 8}


def test_trial_names_stay_63_characters_and_distinct_for_a_long_sweep_name():
    name = "a-very-long-sweep-name-that-goes-on-and-on-and-on-until-it-is-63"[:63]
    names = [t.name for t in expand(make_sweep(name, spec={"parameters": [{"path": "training.seed",
                                                                            "values": list(range(12))}]}))]  # fmt: skip
    assert all(len(n) <= MAX_NAME for n in names) and len(set(names)) == 12
    assert names[11].endswith("-11") and names[11].startswith("a-very-long")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"parameters": [{"path": "output.uri", "values": ["s3://x/y"]}]}, r"spec\.parameters\[0\]\.path: 'output\.uri' is set by the sweep"),
        ({"parameters": [{"path": "suspend", "values": [True]}]}, r"spec\.parameters\[0\]\.path: 'suspend' is set by the sweep"),
        ({"parameters": [{"path": "algorithm..beta", "values": [1]}]}, r"spec\.parameters\[0\]\.path: 'algorithm\.\.beta' is not a dotted path"),
        ({"trials": [{"x": 1}]}, r"spec: set exactly one of parameters \(a grid\) and trials"),
        ({"parameters": None}, r"spec: set exactly one of parameters"),
        ({"objective": {"metric": "loss", "goal": "up"}}, r"spec\.objective\.goal: must be maximize or minimize, got 'up'"),
        ({"parallelism": 0}, r"spec\.parallelism: must be an integer >= 1, got 0"),
        ({"parameters": [{"path": "training.seed", "values": list(range(20))},
                         {"path": "algorithm.beta", "values": [0.1 * i for i in range(1, 15)]}]},
         r"spec\.parameters: the grid has 280 combinations; a sweep runs at most 256"),
    ],
)  # fmt: skip
def test_a_sweep_the_parser_rejects_names_the_field(spec, message):
    with pytest.raises(InvalidSpec, match=message):
        expand(make_sweep(spec=spec))


# -- reference groups --------------------------------------------------------------------------------------------


def group(**template):
    sweep = make_sweep(template=template)
    return reference_group(trial_manifest(sweep, expand(sweep)[0], False)["spec"])


def test_fields_the_reference_cache_key_ignores_keep_trials_in_one_group():
    base = group()
    assert base is not None
    assert group(algorithm={"name": "dpo", "lossType": ["ipo"]}) == base
    assert group(training={"learningRate": 1e-5, "seed": 3, "perDeviceBatchSize": 16}) == base
    assert group(model={"source": "hf://Qwen/Qwen2.5-0.5B-Instruct", "lora": {"r": 64}}) == base
    assert group(dataset={"maxLength": 1024, "split": "train"}) == base  # the defaults, written out


@pytest.mark.parametrize(
    "template",
    [
        {"model": {"source": "hf://Qwen/Qwen2.5-1.5B-Instruct"}},
        {"model": {"source": "hf://Qwen/Qwen2.5-0.5B-Instruct", "revision": "abc"}},
        {"model": {"source": "hf://Qwen/Qwen2.5-0.5B-Instruct", "dtype": "bfloat16"}},
        {"dataset": {"source": "s3://prefs/other.jsonl"}},
        {"dataset": {"maxLength": 512}},
        {"dataset": {"truncationMode": "keep_end"}},
        {"dataset": {"maxSamples": 100}},
        {"dataset": {"split": "train_prefs"}},
        {"dataset": {"evalSplit": "validation"}},
        {"algorithm": {"name": "kto"}},
    ],
    ids=lambda t: json.dumps(t)[:60],
)
def test_fields_the_reference_cache_key_reads_separate_groups(template):
    assert group(**template) != group()


def test_kto_groups_also_by_its_kl_batch_and_reference_free_jobs_have_no_group():
    kto = group(algorithm={"name": "kto"})
    assert group(algorithm={"name": "kto"}, training={"perDeviceBatchSize": 8}) != kto
    assert group(algorithm={"name": "kto", "lossType": ["apo_zero_unpaired"]}) != kto
    assert group(algorithm={"name": "simpo"}) is None
    assert group(reference={"precompute": False}) is None


# -- checks before the first trial -------------------------------------------------------------------------------


def problems(spec=None, template=None):
    sweep = make_sweep(spec=spec, template=template)
    return sweep_problems(sweep, expand(sweep))


def test_a_parameter_value_the_operator_rejects_is_named_by_its_place_in_the_sweep():
    found = problems(spec={"parameters": [{"path": "algorithm.lossType", "values": [["sigmoid"], ["simpo"]]}]})
    assert found == [
        'spec.parameters[0].values[1] (algorithm.lossType=["simpo"], trial beta-1): spec.algorithm.lossType: '
        "'simpo' not valid for algorithm 'dpo'; valid: " + ", ".join(DPO_LOSS_TYPES)
    ]


def test_an_objective_a_trials_algorithm_does_not_report_is_rejected_naming_the_parameter():
    found = problems(spec={"parameters": [{"path": "algorithm.name", "values": ["dpo", "kto"]}]})
    assert len(found) == 1
    assert found[0].startswith(
        'spec.parameters[0].values[1] (algorithm.name="kto", trial beta-1): spec.algorithm.name:'
    )
    assert "does not report the objective's metric 'rewards/accuracies' (spec.objective.metric)" in found[0]


def test_a_sweep_without_an_eval_split_is_rejected_naming_the_templates_field():
    template = sweep_manifest("beta")["spec"]["template"]
    del template["dataset"]["evalSplit"]
    assert problems(spec={"template": template}) == [
        "spec.template.dataset.evalSplit: a sweep ranks its trials by an evaluation on this split; set it"
    ]


def test_a_template_the_operator_rejects_is_named_once_in_the_template():
    found = problems(template={"output": {"uri": "/local/out"}})
    assert len(found) == 1
    assert found[0].startswith("spec.template.output.uri: must be an s3://bucket/prefix URI on a cluster")


def test_overlapping_paths_and_paths_through_a_value_are_rejected():
    overlap = problems(spec={"parameters": [{"path": "algorithm", "values": [{"name": "dpo"}]},
                                            {"path": "algorithm.beta", "values": [0.1]}]})  # fmt: skip
    assert overlap[0] == "spec.parameters[1]: 'algorithm.beta' overlaps 'algorithm': set each field once"
    through = problems(spec={"parameters": [{"path": "algorithm.name.low", "values": [0.1]}]})
    assert through == [
        'spec.parameters[0].values[0]: cannot set algorithm.name.low: algorithm.name is "dpo", not an object'
    ]


def test_overrides_the_apiserver_pruned_are_unknown_fields_named_by_their_place():
    sweep = make_sweep(spec={"parameters": [{"path": "algorithm.betta", "values": [0.1]},
                                            {"path": "model.lora", "values": [{"r": 8, "rank": 8}]}]})  # fmt: skip
    trial = expand(sweep)[0]
    served = trial_manifest(sweep, trial, False)["spec"]
    del served["algorithm"]["betta"]
    served["model"]["lora"] = {"r": 8, "alpha": 32}  # pruned "rank", defaulted "alpha"
    assert dropped_overrides(trial, served) == [
        "spec.parameters[0].values[0]: 'algorithm.betta' is not a field of the PreferenceTrainingJob spec",
        'spec.parameters[1].values[0]: model.lora: the job schema keeps {"r": 8, "alpha": 32} of {"r": 8, "rank": 8}',
    ]
    served["model"]["lora"] = {"r": 8, "rank": 8, "alpha": 32}
    assert dropped_overrides(trial, served)[1:] == []


def test_only_a_sweep_without_problems_of_its_own_has_its_trials_dry_run():
    assert [t.name for t in trials_to_check(make_sweep())] == ["beta-0", "beta-1", "beta-2"]
    assert trials_to_check(make_sweep(template={"output": {"uri": "/local"}})) == ()


# -- decide ------------------------------------------------------------------------------------------------------


def running(sweep):
    decision = step(sweep, SweepStatus())
    assert decision.status.phase == SweepPhase.RUNNING
    return decision


def test_trials_sharing_a_reference_start_after_the_first_finished_its_precompute_within_parallelism():
    sweep = make_sweep()  # 3 trials, one reference group, parallelism 2
    d = running(sweep)
    assert [t.name for t in d.create] == ["beta-0"]
    assert [(r.phase, r.message) for r in d.status.trials] == [
        ("Pending", None),
        ("Waiting", "waiting for trial beta-0 to finish the reference pass"),
        ("Waiting", "waiting for trial beta-0 to finish the reference pass"),
    ]
    assert [e.reason for e in d.events] == ["Started", "TrialStarted"]

    computing = [view("beta-0", "Precomputing")]
    d = step(sweep, d.status, computing, 1)
    assert d.create == () and d.status.counts.running == 1

    cached = [view("beta-0", "Training", precompute_done=True, cache_hit=False)]
    d = step(sweep, d.status, cached, 2)
    assert [t.name for t in d.create] == ["beta-1"]
    assert d.status.trials[2].message == "waiting for a free slot (parallelism 2)"
    assert d.status.trials[0].cache_hit is False

    both = [*cached, view("beta-1", "Precomputing")]
    assert step(sweep, d.status, both, 3).create == ()
    done = [view("beta-0", "Succeeded", precompute_done=True), view("beta-1", "Training", precompute_done=True)]
    d = step(sweep, d.status, done, 4)
    assert [t.name for t in d.create] == ["beta-2"]
    assert d.status.counts.running == 2


def test_a_trial_of_another_group_or_without_reference_uses_a_free_slot_while_the_first_computes():
    sweep = make_sweep(spec={"parameters": [{"path": "algorithm.name", "values": ["dpo", "dpo", "simpo"]}],
                             "objective": {"metric": "loss", "goal": "minimize"}})  # fmt: skip
    d = running(sweep)
    assert [t.name for t in d.create] == ["beta-0", "beta-2"]


def test_when_the_computing_trial_fails_before_its_reference_pass_the_next_one_computes():
    sweep = make_sweep()
    d = running(sweep)
    failed = [view("beta-0", "Failed", message="pod beta-0-precompute-0 failed (OOMKilled)")]
    d = step(sweep, d.status, failed, 1)
    assert [t.name for t in d.create] == ["beta-1"]
    assert d.status.trials[0].message == "pod beta-0-precompute-0 failed (OOMKilled)"
    assert ("TrialFailed", True) in [(e.reason, e.warning) for e in d.events]
    assert d.status.trials[2].message == "waiting for trial beta-1 to finish the reference pass"


def finished(sweep, objectives, phases=None):
    status = SweepStatus(
        phase=SweepPhase.RUNNING,
        trials=tuple(replace(r, phase="Training") for r in running(sweep).status.trials),
    )
    views = [
        view(f"beta-{i}", (phases or {}).get(i, "Succeeded"), precompute_done=True,
             evaluation=Evaluation(200, {"rewards/accuracies": v}, final=True) if v is not None else None)
        for i, v in enumerate(objectives)
    ]  # fmt: skip
    return step(sweep, status, views, 10)


def test_the_best_trial_is_the_succeeded_one_with_the_best_objective_and_the_sweep_succeeds():
    d = finished(make_sweep(), [0.7, 0.8, 0.75])
    assert d.status.phase == SweepPhase.SUCCEEDED
    assert (d.status.best.trial, d.status.best.objective, d.status.best.parameters) == (
        "beta-1",
        0.8,
        {"algorithm.beta": 0.1},
    )
    assert d.status.best.output == "s3://models/beta/beta-1"
    assert d.status.condition("Succeeded").message == (
        "3 of 3 trial(s) succeeded; best: beta-1 with eval rewards/accuracies 0.8"
    )
    assert d.status.completion_time == at(10)
    assert [e.reason for e in d.events] == ["TrialSucceeded"] * 3 + ["BestTrialFound"]
    assert d.events[1].message == "trial beta-1 succeeded (algorithm.beta=0.1): eval rewards/accuracies 0.8"


def test_minimize_picks_the_lowest_ties_go_to_the_first_trial_and_failed_trials_never_win():
    minimize = make_sweep(spec={"objective": {"metric": "rewards/accuracies", "goal": "minimize"}})
    assert finished(minimize, [0.7, 0.6, 0.6]).status.best.trial == "beta-1"
    assert finished(make_sweep(), [0.7, 0.9, 0.6], phases={1: "Failed"}).status.best.trial == "beta-0"


def test_a_sweep_whose_trials_all_failed_or_reported_no_objective_fails_saying_why():
    failed = finished(make_sweep(), [0.7, 0.9, 0.6], phases={0: "Failed", 1: "Failed", 2: "Failed"}).status
    assert (failed.phase, failed.condition("Failed").reason) == (SweepPhase.FAILED, "NoTrialSucceeded")
    silent = finished(make_sweep(), [None, None, None]).status
    assert (silent.phase, silent.condition("Failed").reason) == (SweepPhase.FAILED, "NoObjectiveValue")
    assert silent.condition("Failed").message == "3 trial(s) succeeded but none reported eval rewards/accuracies"


def test_suspending_suspends_the_running_trials_starts_none_and_resuming_resumes_them():
    sweep = make_sweep(spec={"parameters": [{"path": "algorithm.name", "values": ["simpo", "simpo", "simpo"]}],
                             "objective": {"metric": "loss", "goal": "minimize"}})  # fmt: skip
    d = running(sweep)
    assert len(d.create) == 2
    trials = [view("beta-0", "Training"), view("beta-1", "Pending")]
    paused = make_sweep(spec={**sweep_manifest("beta")["spec"], "parameters": [{"path": "algorithm.name", "values": ["simpo"] * 3}],
                              "objective": {"metric": "loss", "goal": "minimize"}, "suspend": True})  # fmt: skip
    d = step(paused, d.status, trials, 1)
    assert (d.status.phase, d.suspend, d.create) == (SweepPhase.SUSPENDED, ("beta-0", "beta-1"), ())
    assert [e.reason for e in d.events] == ["Suspended"]
    trials = [view("beta-0", "Suspended", suspend=True), view("beta-1", "Suspended", suspend=True)]
    d = step(paused, d.status, trials, 2)
    assert (d.suspend, d.status.counts.suspended) == ((), 2)
    d = step(sweep, d.status, trials, 3)
    assert (d.status.phase, d.resume, d.create) == (SweepPhase.RUNNING, ("beta-0", "beta-1"), ())
    assert [e.reason for e in d.events] == ["Resumed"]
    assert d.status.condition("Suspended").status == "False"


def test_a_trial_job_deleted_while_running_is_created_again_but_a_finished_one_is_not():
    sweep = make_sweep(spec={"parallelism": 3, "parameters": [{"path": "algorithm.name", "values": ["simpo"] * 3}],
                             "objective": {"metric": "loss", "goal": "minimize"}})  # fmt: skip
    d = running(sweep)
    d = step(sweep, d.status, [view("beta-0", "Succeeded"), view("beta-1", "Training"), view("beta-2", "Training")], 1)
    again = step(sweep, d.status, [view("beta-2", "Training")], 2)  # beta-0 (finished) and beta-1 gone
    assert [t.name for t in again.create] == ["beta-1"]
    assert again.status.trials[0].phase == "Succeeded"


def test_a_job_holding_a_trials_name_that_the_sweep_does_not_own_is_waited_for_and_left_alone():
    sweep = make_sweep()
    d = running(sweep)
    d = step(sweep, d.status, [view("beta-0", "Training", owner="an-older-sweep")], 1)
    assert (d.status.trials[0].phase, d.create, d.suspend) == ("Pending", (), ())
    assert d.status.trials[0].message == "waiting for the PreferenceTrainingJob beta-0, not this sweep's, to go"


def test_a_hand_made_job_holding_a_trials_name_is_named_with_what_to_do_and_left_alone():
    sweep = make_sweep()
    d = running(sweep)
    d = step(sweep, d.status, [view("beta-0", "Succeeded", owner=None)], 1)
    trial = d.status.trials[0]
    assert (trial.phase, trial.objective, d.create, d.suspend) == ("Pending", None, (), ())
    assert "PreferenceTrainingJob beta-0 exists that no sweep owns" in trial.message
    assert "delete that job, or rename this sweep" in trial.message
    assert [t.name for t in step(sweep, d.status, (), 2).create] == ["beta-0"]  # gone: created again


def test_a_trial_job_the_apiserver_refused_fails_that_trial_and_the_next_one_starts():
    sweep = make_sweep()
    d = running(sweep)
    d = step(sweep, d.status, (), 1, refused={"beta-0": "spec.algorithm.beta: Invalid value"})
    assert d.status.trials[0].phase == "Failed"
    assert d.status.trials[0].message == "the apiserver refused the trial's job: spec.algorithm.beta: Invalid value"
    assert [t.name for t in d.create] == ["beta-1"]


def test_a_sweep_the_apiserver_rejects_a_trial_of_fails_with_invalid_spec_and_creates_nothing():
    d = step(make_sweep(), SweepStatus(), rejections=("spec.parameters[0].values[2]: the job schema rejects it",))
    assert (d.status.phase, d.create) == (SweepPhase.FAILED, ())
    assert d.status.condition("Failed").reason == "InvalidSpec"
    assert [(e.reason, e.warning) for e in d.events] == [("InvalidSpec", True)]


def test_an_unparsable_sweep_fails_with_invalid_spec():
    d = decide(SweepStatus(), SweepObserved(None, spec_error="spec.objective: required"), at(0))
    assert (d.status.phase, d.status.condition("Failed").message) == (SweepPhase.FAILED, "spec.objective: required")


def test_the_status_round_trips_through_its_json():
    status = finished(make_sweep(), [0.7, 0.8, 0.75]).status
    assert SweepStatus.from_dict(json.loads(json.dumps(status.to_dict()))) == status
    assert status.to_dict()["counts"] == {"total": 3, "waiting": 0, "running": 0, "suspended": 0, "succeeded": 3,
                                          "failed": 0}  # fmt: skip


def test_a_trial_view_reads_the_jobs_status_evaluation_cache_hit_and_failure():
    body = {
        "metadata": {"name": "beta-1", "labels": {LABEL_TRIAL: "1"},
                     "ownerReferences": [{"uid": UID, "controller": True}]},
        "spec": {"suspend": True},
        "status": {"phase": "Failed", "phases": {"precompute": {"completionTime": "2026-01-01T12:00:00Z",
                                                                "cacheHit": True}},
                   "evaluation": {"step": 5, "metrics": {"loss": 0.5}, "final": True},
                   "conditions": [{"type": "Failed", "status": "True", "reason": "GateNotMet", "message": "too low"}]},
    }  # fmt: skip
    assert trial_view(body) == TrialView("beta-1", UID, "Failed", True, True, True, Evaluation(5, {"loss": 0.5}, True),
                                         "too low", False, 1)  # fmt: skip


# -- credentials in an override ----------------------------------------------------------------------------------

SECRET = "wJalrXUtnFEMIEXAMPLESECRET"
CREDENTIAL_URIS = [  # as written, and mistyped past a strict URI pattern
    f"s3://AKIAEXAMPLEKEY:{SECRET}@bucket/m",
    f"s3:///AKIAEXAMPLEKEY:{SECRET}@bucket/m",
    f"s3:/AKIAEXAMPLEKEY:{SECRET}@bucket/m",
    f"s3://AKIAEXAMPLEKEY:{SECRET[:8]}/{SECRET[8:]}@bucket/m",  # an AWS secret key may hold '/'
]


def test_a_credential_in_an_override_is_refused_naming_its_place_and_never_repeated():
    sweep = make_sweep(spec={"parameters": [{"path": "model.source", "values": CREDENTIAL_URIS}]})
    d = step(sweep, SweepStatus())
    message = d.status.condition("Failed").message
    for i in range(len(CREDENTIAL_URIS)):
        assert f"spec.parameters[0].values[{i}] (model.source=" in message
    assert "spec.model.source: must not carry credentials" in message
    for text in (message, *(e.message for e in d.events)):
        assert SECRET[8:] not in text and "AKIAEXAMPLEKEY" not in text


def test_a_trials_parameters_a_pruned_override_and_the_apiservers_refusal_never_repeat_a_credential():
    sweep = make_sweep(spec={"parameters": None, "trials": [{"model.lora": {"uri": CREDENTIAL_URIS[2]}}]})
    (trial,) = expand(sweep)
    served = trial_manifest(sweep, trial, False)["spec"]
    served["model"]["lora"] = {}
    shown = [trial.describe(), *dropped_overrides(trial, served)]
    assert shown[0] == 'model.lora={"uri":"s3:/***@bucket/m"}'
    plain = make_sweep()
    refusal = f'spec.model.source: Invalid value: "{CREDENTIAL_URIS[0]}"'
    d = step(plain, running(plain).status, (), 1, refused={"beta-0": refusal})
    shown += [d.status.trials[0].message, *(e.message for e in d.events)]
    assert 'Invalid value: "s3://***@bucket/m"' in d.status.trials[0].message
    for text in shown:
        assert SECRET[8:] not in text and "AKIAEXAMPLEKEY" not in text


# -- refused by the apiserver (403) ------------------------------------------------------------------------------

QUOTA = forbidden("exceeded quota: jobs, requested: count/preferencetrainingjobs.prefops.dev=1, used: 1, limited: 1")


def test_a_sweep_whose_trial_jobs_cannot_be_checked_waits_pending_showing_why_with_one_warning():
    sweep = make_sweep()
    d = step(sweep, SweepStatus(), forbidden=QUOTA)
    assert (d.status.phase, d.create) == (SweepPhase.PENDING, ())
    held = d.status.condition("ReplicaFailure")
    assert (held.status, held.reason) == ("True", "QuotaExceeded") and "exceeded quota: jobs" in held.message
    assert [(e.reason, e.warning) for e in d.events] == [("QuotaExceeded", True)]
    assert step(sweep, d.status, forbidden=QUOTA).events == ()  # the same refusal again: no second Event
    started = step(sweep, d.status)
    assert started.status.phase == SweepPhase.RUNNING and started.status.condition("ReplicaFailure") is None


def test_a_running_sweep_refused_a_trial_job_shows_it_until_a_create_passes():
    sweep = make_sweep()
    d = running(sweep)
    webhook = forbidden('admission webhook "policy.example.com" denied the request: no jobs on Fridays')
    held = step(sweep, d.status, (view("beta-0"),), 1, forbidden=webhook)
    assert held.status.phase == SweepPhase.RUNNING
    assert held.status.condition("ReplicaFailure").reason == "CreateForbidden"
    assert [(e.reason, e.warning) for e in held.events] == [("CreateForbidden", True)]
    cured = step(sweep, held.status, (view("beta-0"), view("beta-1")), 2)
    assert cured.status.condition("ReplicaFailure") is None
