"""Who created a sweep, and what the SubjectAccessReview of that user means for its trials (``core.creators``), down
to the sweep's condition and Event (``decide``). Pure: no server (the apiserver test is
test_sweep_creator_webhook.py)."""

from __future__ import annotations

import json

import pytest
from support.operator_core import at
from support.sweeps import sweep_manifest

from prefops_operator.config import OperatorConfig
from prefops_operator.core.creators import (
    CREATOR_ANNOTATION,
    Creator,
    access_review,
    annotation_change,
    creator_refusal,
    recorded_creator,
    signed_record,
)
from prefops_operator.core.sweep_machine import SweepObserved, decide
from prefops_operator.core.sweep_spec import parse_sweep, slim_sweep
from prefops_operator.core.sweep_status import SweepPhase, SweepStatus

ALICE = Creator("alice", "u-1", ("team-a", "system:authenticated"))
KEY = b"k" * 32
ALLOWED = {"allowed": True}
DENIED = {"allowed": False, "reason": ""}


def sweep_by(annotations):
    manifest = sweep_manifest("beta")
    manifest["metadata"].update(namespace="team-a", uid="sweep-uid", generation=1, annotations=annotations)
    return manifest


def test_the_recorded_creator_is_the_admission_requests_user_and_reads_back_the_same():
    info = {"username": "alice", "uid": "u-1", "groups": ["team-a", "system:authenticated"],
            "extra": {"scopes": ["jobs"]}}  # fmt: skip
    creator = Creator.from_userinfo(info)
    record = signed_record(creator, "team-a", KEY)
    assert {k: v for k, v in json.loads(record).items() if k != "signature"} == info
    assert recorded_creator(record, "team-a", KEY) == creator


def test_a_sweep_keeps_its_creators_record_through_the_operators_slim_copy():
    record = signed_record(ALICE, "team-a", KEY)
    body = sweep_by({CREATOR_ANNOTATION: record, "other": "x"})
    assert parse_sweep(slim_sweep(body)).creator_record == record
    assert slim_sweep(body)["metadata"]["annotations"] == {CREATOR_ANNOTATION: record}


def test_no_annotation_or_one_that_is_not_the_webhooks_json_is_no_creator():
    for written in (None, "", "alice", '{"username": ""}', '{"username": "a", "groups": "g"}'):
        assert recorded_creator(written, "team-a", KEY) is None


def test_a_record_not_signed_by_the_operators_key_for_this_namespace_is_no_creator():
    record = signed_record(ALICE, "team-a", KEY)
    assert recorded_creator(record, "team-b", KEY) is None  # copied onto a sweep of another namespace
    assert recorded_creator(record, "team-a", b"other" * 8) is None
    forged = json.dumps({**json.loads(record), "username": "admin", "groups": ["system:masters"]})
    assert recorded_creator(forged, "team-a", KEY) is None  # edited after signing
    unsigned = json.dumps({k: v for k, v in json.loads(record).items() if k != "signature"})
    assert recorded_creator(unsigned, "team-a", KEY) is None


def test_the_review_asks_whether_the_creator_may_create_jobs_in_the_sweeps_namespace():
    review = access_review(ALICE, "team-a")
    assert review["kind"] == "SubjectAccessReview" and review["apiVersion"] == "authorization.k8s.io/v1"
    assert review["spec"] == {
        "user": "alice",
        "uid": "u-1",
        "groups": ["team-a", "system:authenticated"],
        "resourceAttributes": {
            "namespace": "team-a",
            "verb": "create",
            "group": "prefops.dev",
            "resource": "preferencetrainingjobs",
        },
    }


def test_an_allowed_review_refuses_nothing_and_a_denied_one_names_the_creator_and_the_permission():
    assert creator_refusal(ALICE, "team-a", ALLOWED) is None
    refusal = creator_refusal(ALICE, "team-a", DENIED)
    assert refusal is not None and refusal.reason == "CreatorForbidden"
    assert '"alice" may not create preferencetrainingjobs.prefops.dev in namespace team-a' in refusal.message
    explicit = creator_refusal(ALICE, "team-a", {"allowed": True, "denied": True, "reason": "policy says no"})
    assert explicit is not None and "(the authorizer: policy says no)" in explicit.message


def test_a_sweep_without_a_recorded_creator_is_refused_as_created_around_the_webhook():
    refusal = creator_refusal(None, "team-a", None)
    assert refusal is not None and refusal.reason == "CreatorUnknown"
    assert f"no {CREATOR_ANNOTATION} annotation signed" in refusal.message and "create it again" in refusal.message


def test_an_update_may_not_set_change_or_remove_the_creator():
    kept = {CREATOR_ANNOTATION: signed_record(ALICE, "team-a", KEY)}
    assert annotation_change(kept, {**kept, "note": "x"}) is None
    assert annotation_change(None, None) is None
    bob = {CREATOR_ANNOTATION: signed_record(Creator("bob"), "team-a", KEY)}
    for old, new in ((kept, bob), (kept, {}), (None, bob)):
        assert "cannot change" in (annotation_change(old, new) or "")


def test_a_refused_creator_holds_the_pending_sweep_with_a_condition_and_one_warning_and_no_trial():
    sweep = parse_sweep(sweep_by({CREATOR_ANNOTATION: signed_record(ALICE, "team-a", KEY)}))
    refusal = creator_refusal(ALICE, "team-a", DENIED)
    d = decide(SweepStatus(), SweepObserved(sweep, forbidden=refusal), at(0))
    assert (d.status.phase, d.create) == (SweepPhase.PENDING, ())
    held = d.status.condition("ReplicaFailure")
    assert (held.status, held.reason) == ("True", "CreatorForbidden")
    assert held.message.startswith('no trial is created (checked again with backoff): the sweep\'s creator "alice"')
    assert [(e.reason, e.warning) for e in d.events] == [("CreatorForbidden", True)]
    assert decide(d.status, SweepObserved(sweep, forbidden=refusal), at(1)).events == ()  # no Event per retry
    allowed = decide(d.status, SweepObserved(sweep), at(2))
    assert allowed.status.phase == SweepPhase.RUNNING and allowed.create
    assert allowed.status.condition("ReplicaFailure") is None


def test_the_signing_key_is_read_from_its_file_and_a_missing_or_short_one_stops_the_operator_naming_the_flag(tmp_path):
    key = tmp_path / "creator.key"
    key.write_text("s" * 64 + "\n")
    assert OperatorConfig.from_args([f"--creator-key-file={key}"], env={}).creator_key() == b"s" * 64
    key.write_text("short")
    with pytest.raises(SystemExit, match=r"--creator-key-file: .* holds 5 bytes, need >= 32"):
        OperatorConfig.from_args([f"--creator-key-file={key}"], env={}).creator_key()
    with pytest.raises(SystemExit, match=r"--creator-key-file: cannot read .*missing"):
        OperatorConfig.from_args([f"--creator-key-file={tmp_path / 'missing'}"], env={}).creator_key()


def test_a_webhook_without_its_certificate_stops_the_operator_naming_the_flag_and_the_file(tmp_path):
    (tmp_path / "tls.crt").write_text("x")
    config = OperatorConfig.from_args([f"--webhook-cert-dir={tmp_path}"], env={})
    with pytest.raises(SystemExit, match=f"--webhook-cert-dir: no {tmp_path / 'tls.key'}"):
        config.webhook_certificate()
    (tmp_path / "tls.key").write_text("x")
    assert config.webhook_certificate() == (str(tmp_path / "tls.crt"), str(tmp_path / "tls.key"))
