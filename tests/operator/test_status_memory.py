"""The reconcilers' memory of one object: a watch event older than our own status write is stale until the write
is delivered (or a grace period passes), and a new object under an old name is remembered afresh."""

from __future__ import annotations

from prefops_operator.core.memory import STALE_GRACE, WrittenStatus, remember


def body(uid: str, status: dict | None = None) -> dict:
    return {"metadata": {"uid": uid}, "status": status}


def test_an_event_older_than_our_write_is_stale_until_the_write_is_delivered():
    mem = WrittenStatus("u1")
    assert not mem.stale(body("u1", {"phase": "Pending"}), now=0.0)
    mem.wrote({"phase": "Training"}, now=10.0)
    assert mem.stale(body("u1", {"phase": "Pending"}), now=11.0)
    assert not mem.stale(body("u1", {"phase": "Training"}), now=12.0)
    assert not mem.stale(body("u1", {"phase": "Pending"}), now=13.0), "the write was delivered: forgotten"


def test_a_write_that_never_comes_back_is_forgotten_after_the_grace_period():
    mem = WrittenStatus("u1")
    mem.wrote({"phase": "Training"}, now=10.0)
    assert mem.stale(body("u1"), now=10.0 + STALE_GRACE)
    assert not mem.stale(body("u1"), now=10.1 + STALE_GRACE)


def test_a_new_object_under_an_old_name_is_remembered_afresh():
    memory: dict[str, WrittenStatus] = {}
    first = remember(memory, "ns/job", body("u1"), WrittenStatus)
    first.wrote({"phase": "Training"}, now=1.0)
    assert remember(memory, "ns/job", body("u1"), WrittenStatus) is first
    second = remember(memory, "ns/job", body("u2"), WrittenStatus)
    assert second is not first and second.written is None and memory["ns/job"] is second
