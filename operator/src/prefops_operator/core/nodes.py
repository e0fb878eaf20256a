"""What the operator keeps of each node: whether it is healthy, since when, and whether it is cordoned. Pure.

A node is *in trouble* from the moment its ``Ready`` condition stops being ``True`` (the node lifecycle controller
sets it ``Unknown`` once the kubelet has been silent for its grace, 40 s by default) or it carries the
``node.kubernetes.io/unreachable`` or ``not-ready`` ``NoExecute`` taint (the one taint-based eviction counts from;
the ``NoSchedule`` ones carry no time), whichever came first. Pods on such a node are lost once
the trouble has lasted the job's ``spec.nodeLostGraceSeconds`` (:mod:`.health`).

A node whose kubelet came back is ``Ready=True`` some seconds before the controller lifts the taint it put on the
node while it was gone (its next monitor period). Such a taint, older than the ``Ready=True`` transition, is stale:
a pod scheduled there in those seconds (every pod tolerates ``unreachable`` for 300 s) is not lost.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .timefmt import parse_time

#: the taints the node lifecycle controller puts on a node whose kubelet is silent or reports not ready
TROUBLE_TAINTS = ("node.kubernetes.io/unreachable", "node.kubernetes.io/not-ready")


@dataclass(frozen=True, slots=True)
class NodeView:
    """One node, as last observed. ``ready`` is its ``Ready`` condition's status (``True``, ``False``,
    ``Unknown``; ``None`` before the kubelet first reported); ``trouble_since`` when it stopped being healthy
    (``None`` while it is); ``unschedulable`` is true while it is cordoned (``kubectl cordon``/``drain``)."""

    name: str
    ready: str | None = "True"
    trouble_since: datetime | None = None
    trouble: str = ""
    unschedulable: bool = False

    @property
    def healthy(self) -> bool:
        return self.trouble_since is None


def node_view(node: Mapping[str, Any]) -> NodeView:
    meta, spec, status = (node.get(k) or {} for k in ("metadata", "spec", "status"))
    ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
    signs: list[tuple[datetime, str]] = []
    ready_since = parse_time(ready.get("lastTransitionTime")) if ready is not None else None
    back_since = ready_since if ready is not None and ready.get("status") == "True" else None
    if ready is not None and ready_since is not None and back_since is None:
        signs.append((ready_since, f"Ready={ready.get('status')} ({ready.get('reason') or 'no reason'})"))
    for taint in spec.get("taints") or []:
        since = parse_time(taint.get("timeAdded"))
        if _trouble_taint(taint) and since is not None and (back_since is None or since >= back_since):
            signs.append((since, f"taint {taint['key']}:{taint.get('effect')}"))
    first = min(signs, default=None, key=lambda s: s[0])
    return NodeView(
        name=str(meta.get("name")),
        ready=str(ready.get("status")) if ready else None,
        trouble_since=first[0] if first else None,
        trouble=first[1] if first else "",
        unschedulable=bool(spec.get("unschedulable")),
    )


def _trouble_taint(taint: Mapping[str, Any]) -> bool:
    return taint.get("key") in TROUBLE_TAINTS and taint.get("effect") == "NoExecute"
