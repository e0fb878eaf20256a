"""The API calls of the sweep controller, on the operator's one apiserver session (operator/rbac/ grants them):
create trial jobs (dry-run first, to have the job schema check every trial), set a trial's ``spec.suspend``,
patch a sweep's status, record Events on sweeps; with ``--check-sweep-creators``, ask whether a sweep's creator may
create jobs (operator/rbac/sweep-creators/ grants it). Errors follow :mod:`.kube`'s taxonomy."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from ..core.spec import JobMeta
from ..core.sweep_spec import SWEEP_KIND
from .kube import GROUP, MERGE_PATCH, PLURAL, VERSION, Conflict, Gone, KubeApi

log = logging.getLogger(__name__)

SWEEP_PLURAL = "preferencetrainingsweeps"
ACCESS_REVIEWS = "/apis/authorization.k8s.io/v1/subjectaccessreviews"


class SweepKubeApi(KubeApi):
    """:class:`KubeApi` plus the calls on sweeps and their trial jobs."""

    async def create_job(self, manifest: Mapping[str, Any], dry_run: bool = False) -> dict[str, Any] | None:
        """Create a PreferenceTrainingJob; the object as the apiserver stored it (or would, with ``dry_run``),
        or ``None`` when one of that name exists (409). :class:`Rejected` when the job schema refuses it."""
        ns, name = manifest["metadata"]["namespace"], manifest["metadata"]["name"]
        path = f"/apis/{GROUP}/{VERSION}/namespaces/{ns}/{PLURAL}" + ("?dryRun=All" if dry_run else "")
        try:
            served = await self._call("POST", path, f"create job {ns}/{name}", manifest)
        except Conflict:
            return None
        return dict(served)

    async def set_job_suspend(self, namespace: str, name: str, suspend: bool) -> None:
        """Set a trial job's ``spec.suspend``; a job already gone is fine."""
        path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/{name}"
        with contextlib.suppress(Gone):
            await self._call(
                "PATCH", path, f"suspend={suspend} {namespace}/{name}", {"spec": {"suspend": suspend}}, MERGE_PATCH
            )

    async def patch_sweep_status(self, meta: JobMeta, patch: Mapping[str, Any]) -> str:
        """Merge-patch the sweep's status, only if the sweep is still at ``meta.resource_version``."""
        body = {"metadata": {"resourceVersion": meta.resource_version}, "status": patch}
        path = f"/apis/{GROUP}/{VERSION}/namespaces/{meta.namespace}/{SWEEP_PLURAL}/{meta.name}/status"
        answer = await self._call(
            "PATCH", path, f"patch status of sweep {meta.namespace}/{meta.name}", body, MERGE_PATCH
        )
        return str(answer["metadata"]["resourceVersion"])

    async def post_sweep_event(self, meta: JobMeta, reason: str, message: str, warning: bool, now: datetime) -> None:
        """Record a Kubernetes Event on the sweep (``kubectl describe ptsweep`` shows it). Best effort."""
        await self.post_event(meta, reason, message, warning, now, kind=SWEEP_KIND)

    async def review_access(self, review: Mapping[str, Any]) -> dict[str, Any]:
        """Create a SubjectAccessReview (:func:`..core.creators.access_review`); its ``status``: ``allowed``,
        ``denied``, ``reason``. :class:`Forbidden` when the operator may not create reviews."""
        user = review["spec"]["user"]
        answer = await self._call("POST", ACCESS_REVIEWS, f"review the access of {user!r}", review)
        status = answer.get("status") if isinstance(answer, Mapping) else None
        return dict(status) if isinstance(status, Mapping) else {}
