"""Status writes are minimal JSON merge patches (RFC 7386)."""

from prefops_operator.core.patch import merge_patch


def test_only_changed_keys_are_sent_and_removed_keys_become_null():
    old = {"phase": "Training", "progress": {"step": 1, "loss": 0.5}, "lastFailure": {"pod": "x"}, "restarts": 0}
    new = {"phase": "Training", "progress": {"step": 2, "loss": 0.5}, "restarts": 1}
    assert merge_patch(old, new) == {"progress": {"step": 2}, "restarts": 1, "lastFailure": None}


def test_lists_are_replaced_whole():
    assert merge_patch({"conditions": [1, 2]}, {"conditions": [1, 3]}) == {"conditions": [1, 3]}
    assert merge_patch({"conditions": [1]}, {"conditions": [1]}) == {}
