"""Is a pod's node still there? Pure judgements over a pod, the nodes and the clock.

- A pod is in *trouble* while its node is (Ready not True, or an unreachable/not-ready taint: :mod:`.nodes`) or
  while it runs with ``Ready=False`` (how the node lifecycle controller marks the pods of a node it lost); the
  trouble started at the earliest of those signs.
- A pod of the running group is *lost* once its trouble has lasted ``spec.nodeLostGraceSeconds``: the group
  restarts on healthy nodes.
- A pod of an earlier group is *abandoned* when nothing will stop it in time: its trouble has lasted the grace, or
  it is still ``Terminating`` :data:`STUCK_AFTER` seconds past its ``deletionTimestamp`` (which already includes its
  grace period). The next group does not wait for it, and the ``PodsStuck`` condition names it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from .nodes import NodeView
from .pods import PodView

STUCK_AFTER = timedelta(seconds=30)  # a kubelet reports a killed pod within seconds of its grace period's end


@dataclass(frozen=True)
class Trouble:
    since: datetime
    what: str  # "node n2 Ready=Unknown (NodeStatusUnknown)", "pod not ready on node n2"


def trouble(pod: PodView, nodes: Mapping[str, NodeView]) -> Trouble | None:
    """Since when, and why, the pod's node looks gone; ``None`` while it looks fine."""
    signs: list[Trouble] = []
    node = nodes.get(pod.node) if pod.node else None
    if node is not None and node.trouble_since is not None:
        signs.append(Trouble(node.trouble_since, f"node {node.name} {node.trouble}"))
    if pod.not_ready_since is not None and not pod.terminating:
        signs.append(Trouble(pod.not_ready_since, f"pod not ready on node {pod.node or '(none)'}"))
    return min(signs, key=lambda t: t.since, default=None)


def lost_at(pod: PodView, nodes: Mapping[str, NodeView], grace: int) -> datetime | None:
    """When the pod counts as lost (its trouble plus ``grace`` seconds); ``None`` while it is in no trouble."""
    found = trouble(pod, nodes)
    return found.since + timedelta(seconds=grace) if found else None


def is_lost(pod: PodView, nodes: Mapping[str, NodeView], grace: int, now: datetime) -> bool:
    at = lost_at(pod, nodes, grace)
    return at is not None and now >= at


def abandoned_at(pod: PodView, nodes: Mapping[str, NodeView], grace: int) -> datetime | None:
    """When an earlier group's unfinished pod stops being waited for: lost, or stuck past its deletion."""
    times = [t for t in (lost_at(pod, nodes, grace), _stuck_at(pod)) if t is not None]
    return min(times, default=None)


def is_abandoned(pod: PodView, nodes: Mapping[str, NodeView], grace: int, now: datetime) -> bool:
    at = abandoned_at(pod, nodes, grace)
    return at is not None and now >= at


def _stuck_at(pod: PodView) -> datetime | None:
    return pod.deleted + STUCK_AFTER if pod.terminating and pod.deleted is not None else None
