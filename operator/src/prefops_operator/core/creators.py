"""Who created a sweep, and whether they may create the jobs the sweep makes the operator create. Pure.

A sweep's trials are PreferenceTrainingJobs the operator creates under its own identity: without a check, whoever
may create sweeps but not jobs gets jobs (and with them pods, any image, any Secret of the namespace) through the
operator, a confused deputy. With ``--check-sweep-creators`` the operator creates trials only for a sweep whose
creator may create jobs: its admission webhook records the creator (the admission request's ``userInfo``) in the
annotation :data:`CREATOR_ANNOTATION` when the sweep is created, overwriting whatever the request carried, and
refuses any update that changes it (:func:`annotation_change`). The record is signed (HMAC-SHA256 under a key only
the operator reads, over the record and the sweep's namespace: :func:`signed_record`), so a record written by hand
on a sweep created where the webhook did not see it (before it was installed, in a namespace outside its selector)
counts as none, and so does one copied from another namespace. Before creating trials the reconciler asks the
apiserver, with the SubjectAccessReview :func:`access_review`, whether that user may create PreferenceTrainingJobs
in the sweep's namespace, and :func:`creator_refusal` turns the answer into a refusal the sweep shows (a
``ReplicaFailure`` condition and a Warning Event) or none.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .conditions import SweepReason
from .spec import API_VERSION

CREATOR_ANNOTATION = "prefops.dev/creator"
#: what the creator must be allowed: the trials the sweep makes the operator create
JOB_GROUP, JOB_RESOURCE, JOB_VERB = API_VERSION.split("/")[0], "preferencetrainingjobs", "create"
MAX_REASON = 300  # characters of the authorizer's reason kept in the message


@dataclass(frozen=True)
class Creator:
    """The user who created a sweep, as the apiserver authenticated them (an admission request's ``userInfo``)."""

    username: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def from_userinfo(cls, info: Mapping[str, Any]) -> Creator:
        extra = info.get("extra") or {}
        return cls(
            username=str(info.get("username") or ""),
            uid=str(info.get("uid") or ""),
            groups=tuple(str(g) for g in info.get("groups") or ()),
            extra={str(k): tuple(str(v) for v in vs or ()) for k, vs in extra.items()},
        )

    def fields(self) -> dict[str, Any]:
        """The user as ``userInfo``'s keys."""
        doc: dict[str, Any] = {"username": self.username, "uid": self.uid, "groups": list(self.groups)}
        if self.extra:
            doc["extra"] = {k: list(v) for k, v in sorted(self.extra.items())}
        return doc


def _signature(fields: Mapping[str, Any], namespace: str, key: bytes) -> str:
    text = namespace + "\n" + json.dumps(fields, sort_keys=True, separators=(",", ":"))
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()


def signed_record(creator: Creator, namespace: str, key: bytes) -> str:
    """The value of :data:`CREATOR_ANNOTATION` on a sweep in ``namespace``: the user as JSON (``userInfo``'s keys)
    and ``signature``, an HMAC-SHA256 under ``key`` of them and the namespace."""
    fields = creator.fields()
    record = {**fields, "signature": _signature(fields, namespace, key)}
    return json.dumps(record, sort_keys=True, separators=(",", ":"))


def recorded_creator(raw: str | None, namespace: str, key: bytes) -> Creator | None:
    """The creator the webhook recorded (``raw``: the value of :data:`CREATOR_ANNOTATION`) on a sweep in
    ``namespace``; ``None`` when there is none, or the record is not the webhook's (not its JSON, or not signed with
    ``key`` for this namespace)."""
    try:
        doc = json.loads(raw) if raw else None
    except ValueError:
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("username"), str) or not doc["username"]:
        return None
    if not isinstance(doc.get("groups", []), list) or not isinstance(doc.get("extra", {}), dict):
        return None
    creator = Creator.from_userinfo(doc)
    signature = doc.get("signature")
    expected = _signature(creator.fields(), namespace, key)
    return creator if isinstance(signature, str) and hmac.compare_digest(signature, expected) else None


def annotation_change(old: Mapping[str, str] | None, new: Mapping[str, str] | None) -> str | None:
    """Why an update of a sweep is refused: it changes (sets, edits or removes) :data:`CREATOR_ANNOTATION`;
    ``None`` when it leaves it as it was."""
    before, after = (old or {}).get(CREATOR_ANNOTATION), (new or {}).get(CREATOR_ANNOTATION)
    if before == after:
        return None
    return (
        f"metadata.annotations[{CREATOR_ANNOTATION}] records who created the sweep and cannot change "
        "(the operator checks that user's permissions before creating trials)"
    )


def access_review(creator: Creator, namespace: str) -> dict[str, Any]:
    """The SubjectAccessReview (authorization.k8s.io/v1) asking whether ``creator`` may create PreferenceTrainingJobs
    in ``namespace``."""
    spec: dict[str, Any] = {
        "user": creator.username,
        "groups": list(creator.groups),
        "resourceAttributes": {
            "namespace": namespace,
            "verb": JOB_VERB,
            "group": JOB_GROUP,
            "resource": JOB_RESOURCE,
        },
    }
    if creator.uid:
        spec["uid"] = creator.uid
    if creator.extra:
        spec["extra"] = {k: list(v) for k, v in creator.extra.items()}
    return {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": spec}


@dataclass(frozen=True)
class CreatorRefusal:
    """Why no trial of a sweep is created: its creator is unknown or may not create jobs. Checked again with
    backoff (RBAC may be granted meanwhile)."""

    reason: SweepReason
    message: str
    permanent: bool = False


def creator_refusal(creator: Creator | None, namespace: str, review: Mapping[str, Any] | None) -> CreatorRefusal | None:
    """The refusal the SubjectAccessReview's ``status`` (``review``) means for a sweep of ``creator`` in
    ``namespace``; ``None`` when the creator may create the trials' jobs. No creator: the sweep was created
    while the operator's webhook was not in the way (before it was installed, or around it)."""
    if creator is None:
        return CreatorRefusal(
            SweepReason.CREATOR_UNKNOWN,
            f"the sweep has no {CREATOR_ANNOTATION} annotation signed by the operator's webhook: it was created "
            "where the webhook did not see it (before it was installed, or in a namespace outside its selector), so "
            "who created it is unknown and no trial is created; create it again",
        )
    if review is not None and review.get("allowed") is True and review.get("denied") is not True:
        return None
    why = str((review or {}).get("reason") or (review or {}).get("evaluationError") or "")[:MAX_REASON]
    return CreatorRefusal(
        SweepReason.CREATOR_FORBIDDEN,
        f'the sweep\'s creator "{creator.username}" may not {JOB_VERB} {JOB_RESOURCE}.{JOB_GROUP} in namespace '
        f"{namespace}, and a sweep's trials are such jobs: grant that user (or a group of theirs) both, e.g. the "
        "prefops-edit role" + (f" (the authorizer: {why})" if why else ""),
    )
