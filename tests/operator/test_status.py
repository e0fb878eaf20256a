"""The status document: a lossless round trip, the phase keys, and the names it speaks (condition types and
reasons) documented where users read them."""

from __future__ import annotations

from support.kube import ROOT
from support.operator_core import at

from prefops_operator.core.conditions import (
    ConditionType,
    DisruptionReason,
    FailureReason,
    Reason,
    RestartKind,
)
from prefops_operator.core.patch import merge_patch
from prefops_operator.core.phases import PHASES
from prefops_operator.core.status import PHASE_KEYS, Phase, PhaseTimes, Status

CRD = (ROOT / "crds" / "prefops.dev_preferencetrainingjobs.yaml").read_text()
DOCS = (ROOT / "docs" / "operator.md").read_text()


def test_status_phases_are_keyed_like_the_trainer_phases_and_the_phase_label():
    assert PHASE_KEYS == {Phase.PRECOMPUTING: "precompute", Phase.TRAINING: "train", Phase.EXPORTING: "export"}


def test_a_status_written_by_operator_0_1_keeps_its_training_times_and_the_next_write_renames_the_key():
    old = {
        "phase": "Exporting",
        "phases": {
            "training": {"startTime": "2026-01-01T12:00:01Z", "completionTime": "2026-01-01T12:00:02Z"},
            "export": {"startTime": "2026-01-01T12:00:02Z"},
        },
    }
    status = Status.from_dict(old)
    assert status.times(Phase.TRAINING) == PhaseTimes(at(1), at(2))
    patch = merge_patch(old, status.to_dict())
    assert patch["phases"] == {"training": None, "train": {"startTime": "2026-01-01T12:00:01Z",
                                                            "completionTime": "2026-01-01T12:00:02Z"}}  # fmt: skip


def test_the_current_key_wins_over_the_legacy_one():
    both = {
        "phases": {"train": {"startTime": "2026-01-01T12:00:05Z"}, "training": {"startTime": "2026-01-01T12:00:01Z"}}
    }
    assert Status.from_dict(both).times(Phase.TRAINING).start_time == at(5)


def test_the_crd_and_the_docs_name_every_condition_type_and_reason():
    started = [row.started_reason for row in PHASES]  # Events only
    names = [*ConditionType, *Reason, *FailureReason, *DisruptionReason, *RestartKind, *(r.reason for r in PHASES)]
    assert [str(n) for n in [*names, *started] if str(n) not in DOCS] == []
    events_only = {Reason.RESTARTING, Reason.DISRUPTED, Reason.RECOVERED}
    in_conditions = [*ConditionType, *(r for r in Reason if r not in events_only), *(r.reason for r in PHASES)]
    assert [str(n) for n in in_conditions if str(n) not in CRD] == []


def test_the_constants_format_as_their_values():
    assert f"{Reason.RESTARTING}" == str(Reason.RESTARTING) == "Restarting"
    assert ConditionType.FAILED == "Failed"
