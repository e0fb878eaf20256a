"""The phase state machine, ``decide(previous, observed, now)``: pure, no server."""

from __future__ import annotations

from dataclasses import replace

import pytest
from support.operator_core import at, group, make_job, pod

from prefops_operator.core.conditions import ConditionType, DisruptionReason, FailureReason, Reason, RestartKind
from prefops_operator.core.machine import TRANSITIONS, Happening, Observed, decide, phase_plan
from prefops_operator.core.naming import PodPhase
from prefops_operator.core.refusals import classify_refusal
from prefops_operator.core.spec import Job
from prefops_operator.core.status import RUNNING_PHASES, Phase, Progress, Status

PRE, TRAIN, EXPORT = PodPhase.PRECOMPUTE, PodPhase.TRAIN, PodPhase.EXPORT


T0 = at(0)


def step(job: Job, status: Status, pods=(), now=T0, **observed):
    return decide(status, Observed(job, tuple(pods), **observed), now)


def run_to(job: Job, phase: Phase) -> Status:
    """Drive a job from nothing to ``phase`` by succeeding every earlier group."""
    status = step(job, Status()).status
    t = 1
    while status.phase != phase:
        size = {PRE: job.spec.reference.workers, TRAIN: job.spec.resources.nodes, EXPORT: 1}[status.phase.pod_phase]
        status = step(job, status, group(job, status.phase.pod_phase, size, "Succeeded", status.attempt), at(t)).status
        t += 1
    return status


def test_a_dpo_job_runs_precompute_then_training_then_export_and_succeeds():
    job = make_job(spec={"reference": {"workers": 2}, "resources": {"nodes": 2, "gpusPerNode": 8}})
    seen = []
    status = Status()
    for t, (pods_phase, size) in enumerate([(None, 0), (PRE, 2), (TRAIN, 2), (EXPORT, 1)]):
        pods = group(job, pods_phase, size, "Succeeded") if pods_phase else []
        decision = step(job, status, pods, at(t))
        status = decision.status
        seen.append((status.phase, [(x.source, x.target, x.reason) for x in decision.transitions]))
    assert seen == [
        (Phase.PRECOMPUTING, [(Phase.PENDING, Phase.PRECOMPUTING, "PrecomputingStarted")]),
        (Phase.TRAINING, [(Phase.PRECOMPUTING, Phase.TRAINING, "TrainingStarted")]),
        (Phase.EXPORTING, [(Phase.TRAINING, Phase.EXPORTING, "ExportingStarted")]),
        (Phase.SUCCEEDED, [(Phase.EXPORTING, Phase.SUCCEEDED, Reason.SUCCEEDED)]),
    ]
    assert status.output_uri == "s3://models/qwen-dpo"
    assert (status.start_time, status.completion_time) == (at(0), at(3))
    assert {k: (v.start_time, v.completion_time) for k, v in status.phases.items()} == {
        "precompute": (at(0), at(1)),
        "train": (at(1), at(2)),
        "export": (at(2), at(3)),
    }
    assert status.condition(ConditionType.SUCCEEDED).status == "True"
    assert status.condition(ConditionType.RUNNING).status == "False"
    assert status.shape == "2x8"


@pytest.mark.parametrize("algorithm", ["cpo", "simpo", "cpo-simpo", "alphapo", "orpo"])
def test_a_reference_free_algorithm_skips_the_precompute_phase(algorithm):
    job = make_job(spec={"algorithm": {"name": algorithm}})
    status = step(job, Status()).status
    assert status.phase == Phase.TRAINING
    assert "precompute" not in status.phases


def test_kto_is_reference_based_and_precomputes_while_online_dpo_generates_and_does_not():
    assert step(make_job(spec={"algorithm": {"name": "kto"}}), Status()).status.phase == Phase.PRECOMPUTING
    online = make_job(spec={"algorithm": {"name": "online-dpo"}, "rewardModel": {"source": "hf://org/rm"}})
    assert step(online, Status()).status.phase == Phase.TRAINING


def test_dpo_with_reference_precompute_false_skips_the_precompute_phase():
    job = make_job(spec={"reference": {"precompute": False}})
    assert phase_plan(job.spec) == (Phase.TRAINING, Phase.EXPORTING)
    assert step(job, Status()).status.phase == Phase.TRAINING


def test_a_spec_the_schema_accepts_but_the_algorithm_does_not_fails_at_once_with_invalid_spec():
    job = make_job(spec={"algorithm": {"name": "cpo", "lossType": ["sft"]}})
    decision = step(job, Status())
    failed = decision.status.condition(ConditionType.FAILED)
    assert decision.status.phase == Phase.FAILED
    assert (failed.status, failed.reason) == ("True", "InvalidSpec")
    assert failed.message.startswith("spec.algorithm.lossType: 'sft' not valid for algorithm 'cpo'")
    assert decision.transitions[0].warning


def test_an_unparsable_spec_fails_with_invalid_spec_naming_the_field():
    decision = decide(Status(), Observed(None, spec_error="spec.model.source: required field is missing"), at(0))
    assert decision.status.phase == Phase.FAILED
    assert decision.status.condition(ConditionType.FAILED).message == "spec.model.source: required field is missing"


def test_one_failed_rank_restarts_the_whole_training_group_and_records_the_failure():
    job = make_job(spec={"resources": {"nodes": 3}})
    status = run_to(job, Phase.TRAINING)
    pods = group(job, TRAIN, 3)
    pods[1] = replace(pods[1], status="Failed", exit_code=137, reason="OOMKilled", message="killed")
    decision = step(job, status, pods, at(10))
    assert decision.status.phase == Phase.TRAINING
    assert (decision.status.restarts, decision.status.failures, decision.status.attempt) == (1, 1, 2)
    assert decision.status.last_failure.pod == "qwen-dpo-train-a1-1"
    assert (decision.status.last_failure.reason, decision.status.last_failure.exit_code) == ("OOMKilled", 137)
    assert decision.transitions[0].reason == Reason.RESTARTING
    assert "as attempt 2 (failure 1 of backoffLimit 3)" in decision.transitions[0].message


def test_pods_of_an_older_attempt_do_not_count_again():
    job = make_job()
    status = replace(run_to(job, Phase.TRAINING), restarts=1, failures=1, attempt=2)
    old = pod(job, TRAIN, 0, "Failed", attempt=1, exit_code=1)
    assert step(job, status, [old], at(10)).status == step(job, status, [], at(10)).status
    assert step(job, status, [old], at(10)).status.restarts == 1


def test_a_running_rank_deleted_by_someone_else_is_a_disruption_not_a_failure():
    job = make_job(spec={"algorithm": {"name": "simpo"}, "resources": {"nodes": 2}})
    status = run_to(job, Phase.TRAINING)
    pods = [pod(job, TRAIN, 0), pod(job, TRAIN, 1, terminating=True)]
    decision = step(job, status, pods, at(10))
    s = decision.status
    assert (s.restarts, s.disruptions, s.failures, s.attempt, s.last_failure) == (1, 1, 0, 2, None)
    assert (s.last_restart.kind, s.last_restart.reason, s.last_restart.pod) == (
        RestartKind.DISRUPTION,
        DisruptionReason.DELETED,
        "qwen-dpo-train-a1-1",
    )
    assert decision.transitions[0].reason == Reason.DISRUPTED


def test_pods_still_terminating_from_before_a_suspension_are_waited_for_after_resuming_never_lost_ranks():
    job = make_job(spec={"algorithm": {"name": "simpo"}})
    training = run_to(job, Phase.TRAINING)
    suspended = step(make_job(spec={"algorithm": {"name": "simpo"}, "suspend": True}), training, [], at(20)).status
    resumed = step(job, suspended, [], at(30)).status
    assert resumed.attempt == training.attempt + 1  # the suspended pods keep their names: the new ones get others
    old = pod(job, TRAIN, 0, created=at(1), terminating=True, deleted=at(20 + 300))
    after = step(job, resumed, [old], at(31)).status
    assert (after.phase, after.restarts, after.attempt) == (Phase.TRAINING, 0, resumed.attempt)
    assert after.condition(ConditionType.WAITING).reason == Reason.PREVIOUS_ATTEMPT_TERMINATING


def test_when_the_backoff_limit_is_exhausted_the_job_fails_with_the_last_pods_reason_and_exit_code():
    job = make_job(spec={"backoffLimit": 1})
    status = replace(run_to(job, Phase.TRAINING), restarts=1, failures=1, attempt=2)
    failed = pod(job, TRAIN, 0, "Failed", attempt=2, exit_code=1, reason="Error", message="NCCL timeout")
    decision = step(job, status, [failed], at(20))
    cond = decision.status.condition(ConditionType.FAILED)
    assert decision.status.phase == Phase.FAILED
    assert cond.reason == Reason.BACKOFF_LIMIT_EXCEEDED
    assert cond.message == (
        "pod qwen-dpo-train-a2-0 failed (Error, exit code 1): NCCL timeout; backoffLimit (1 failures) exhausted"
    )
    assert decision.status.completion_time == at(20)


def test_exit_code_2_is_permanent_the_job_fails_with_invalid_input_and_no_retry():
    job = make_job(spec={"backoffLimit": 5})
    status = run_to(job, Phase.PRECOMPUTING)
    bad = pod(job, PRE, 0, "Failed", exit_code=2, message="dataset row 7: 'chosen' is missing")
    decision = step(job, status, [bad], at(5))
    cond = decision.status.condition(ConditionType.FAILED)
    assert (decision.status.phase, decision.status.restarts) == (Phase.FAILED, 0)
    assert cond.reason == Reason.INVALID_INPUT
    assert "dataset row 7: 'chosen' is missing" in cond.message


def test_a_pod_not_running_by_the_startup_deadline_fails_the_attempt():
    job = make_job(spec={"startupDeadlineSeconds": 60, "backoffLimit": 0})
    status = run_to(job, Phase.PRECOMPUTING)
    stuck = pod(
        job,
        PRE,
        0,
        "Pending",
        created=at(0),
        waiting_reason="ImagePullBackOff",
        waiting_message="Back-off pulling image",
    )
    before = step(job, status, [stuck], at(59))
    assert before.status.phase == Phase.PRECOMPUTING
    assert before.wake_at == at(60)
    after = step(job, status, [stuck], at(60))
    assert after.status.phase == Phase.FAILED
    assert after.status.last_failure.reason == FailureReason.STARTUP_DEADLINE_EXCEEDED
    assert "ImagePullBackOff: Back-off pulling image" in after.status.condition(ConditionType.FAILED).message


def test_the_active_deadline_fails_a_running_job_and_is_the_wake_up_time():
    job = make_job(spec={"activeDeadlineSeconds": 100})
    status = run_to(job, Phase.TRAINING)
    assert step(job, status, group(job, TRAIN, 1), at(50)).wake_at == status.start_time + (at(100) - at(0))
    decision = step(job, status, group(job, TRAIN, 1), status.start_time + (at(100) - at(0)))
    assert decision.status.phase == Phase.FAILED
    assert decision.status.condition(ConditionType.FAILED).reason == Reason.DEADLINE_EXCEEDED


def test_suspending_keeps_finished_phases_and_resuming_continues_with_the_unfinished_one():
    job = make_job()
    training = run_to(job, Phase.TRAINING)
    suspended = step(make_job(spec={"suspend": True}), training, group(job, TRAIN, 1), at(30)).status
    assert suspended.phase == Phase.SUSPENDED
    assert suspended.condition(ConditionType.SUSPENDED).status == "True"
    assert suspended.phases["precompute"].completion_time is not None
    assert step(make_job(spec={"suspend": True}), suspended, [], at(40)).status == suspended
    resumed = step(job, suspended, [], at(50))
    assert resumed.status.phase == Phase.TRAINING
    assert resumed.transitions[0].reason == Reason.RESUMED
    assert resumed.status.restarts == training.restarts
    assert resumed.status.start_time == at(50)  # the activeDeadlineSeconds clock restarts
    assert resumed.status.condition(ConditionType.SUSPENDED).status == "False"


def test_a_job_created_suspended_starts_only_when_resumed():
    status = step(make_job(spec={"suspend": True}), Status()).status
    assert status.phase == Phase.SUSPENDED
    assert step(make_job(), status, [], at(5)).status.phase == Phase.PRECOMPUTING


def test_a_manifest_the_apiserver_rejects_fails_the_job_with_invalid_spec():
    job = make_job()
    status = run_to(job, Phase.TRAINING)
    refusal = classify_refusal(422, "create Pod: spec.tolerations[0].operator: Invalid value", job.spec)
    decision = step(job, status, [], at(3), refusal=refusal)
    assert decision.status.phase == Phase.FAILED
    assert decision.status.condition(ConditionType.FAILED).reason == Reason.INVALID_SPEC


def test_condition_transition_times_move_only_when_the_condition_status_changes():
    job = make_job()
    precomputing = run_to(job, Phase.PRECOMPUTING)
    training = run_to(job, Phase.TRAINING)
    assert precomputing.condition(ConditionType.RUNNING).last_transition_time == at(0)
    assert training.condition(ConditionType.RUNNING).last_transition_time == at(0)
    assert training.condition(ConditionType.RUNNING).reason == "Training"


def test_progress_samples_update_the_status_but_the_same_numbers_write_nothing():
    job = make_job()
    status = run_to(job, Phase.TRAINING)
    sample = Progress(step=10, total_steps=100, loss=0.5, last_scrape_time=at(5))
    updated = step(job, status, group(job, TRAIN, 1), at(5), progress=sample).status
    assert updated.progress.display == "10/100"
    again = step(job, updated, group(job, TRAIN, 1), at(9), progress=replace(sample, last_scrape_time=at(9)))
    assert again.status == updated


def test_a_precompute_cache_hit_reported_by_replica_0_is_recorded():
    job = make_job()
    status = run_to(job, Phase.PRECOMPUTING)
    done = [pod(job, PRE, 0, "Succeeded", message='{"cacheHit": true}')]
    assert step(job, status, done, at(2)).status.phases["precompute"].cache_hit is True


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ('{"prefixSharing": "off: Mamba: state-space layers mix tokens outside attention"}',
         "off: Mamba: state-space layers mix tokens outside attention"),
        ('{"evaluation": {"step": 4, "metrics": {"loss": 0.5}}, "prefixSharing": "on"}', "on"),
        ('{"prefixSharing": 1}', None),
        ("not json", None),
    ],
)  # fmt: skip
def test_whether_prefix_sharing_ran_is_recorded_from_training_replica_0_and_survives_a_round_trip(message, expected):
    job = make_job()
    status = run_to(job, Phase.TRAINING)
    done = [pod(job, TRAIN, 0, "Succeeded", status.attempt, message=message)]
    after = step(job, status, done, at(5)).status
    assert after.phases["train"].prefix_sharing == expected
    assert Status.from_dict(after.to_dict()) == after


def test_finished_jobs_wake_up_when_their_ttl_expires():
    job = make_job(spec={"ttlSecondsAfterFinished": 60})
    status = run_to(job, Phase.SUCCEEDED)
    assert step(job, status, [], at(10)).wake_at == status.completion_time + (at(60) - at(0))


def test_every_running_phase_reacts_to_the_same_happenings_and_finished_phases_to_none():
    by_phase = {p: {h for (q, h) in TRANSITIONS if q == p} for p in Phase}
    assert all(by_phase[p] == by_phase[Phase.TRAINING] for p in RUNNING_PHASES)
    assert by_phase[Phase.SUCCEEDED] == by_phase[Phase.FAILED] == set()
    assert by_phase[Phase.SUSPENDED] == {Happening.RESUME}


def test_status_survives_a_round_trip_through_the_api_representation():
    job = make_job()
    status = run_to(job, Phase.EXPORTING)
    status = replace(status, progress=Progress(step=3, total_steps=9, epoch=0.5, loss=0.25, last_scrape_time=at(1)))
    assert Status.from_dict(status.to_dict()) == status
