"""The scheduling policy: which ready workset goes to which cluster. Pure: worksets and clusters in, decisions out."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from .models import Cluster, ClusterStatus, Workset

CLUSTER_STALE_AFTER = timedelta(minutes=5)
"""A cluster whose agent has not heartbeated for this long gets no new work."""


@dataclass(frozen=True)
class ClusterLoad:
    cluster: Cluster
    active: int
    """Worksets the cluster holds now: assigned to it, locked on it, or running on it."""

    @property
    def room(self) -> int:
        return max(self.cluster.max_worksets - self.active, 0)


@dataclass(frozen=True)
class Decision:
    workset_id: str
    cluster: str | None
    reason: str


def plan(ready: Sequence[Workset], loads: Sequence[ClusterLoad], now: datetime) -> list[Decision]:
    """Assign each unassigned ready workset, most urgent and oldest first, to the cheapest live cluster with room.

    Ties on cost go to the less utilized cluster, then to the name, so the plan is deterministic. A workset whose
    work file names a cluster goes only there.

    Limitations: estimates no run size yet, so cost is the cluster's price per vCPU-hour alone; waiting time does not
    raise priority; deadlines, `depends_on`, vCPU capacity, budgets and region or AZ affinity are not applied yet.
    """
    room = {load.cluster.name: load.room for load in loads if is_live(load.cluster, now)}
    active = {load.cluster.name: load.active for load in loads}
    clusters = {load.cluster.name: load.cluster for load in loads}

    decisions: list[Decision] = []
    for workset in sorted((w for w in ready if not w.assigned_cluster), key=lambda w: w.queue_key):
        wanted = workset.work.cluster_name if workset.work else None
        candidates = [name for name, free in room.items() if free > 0 and wanted in (None, name)]
        if not candidates:
            decisions.append(Decision(workset.workset_id, None, _why_not(wanted, clusters, room, now)))
            continue

        best = min(candidates, key=lambda name: _preference(clusters[name], active[name]))
        room[best] -= 1
        active[best] += 1
        cluster = clusters[best]
        reason = (
            f"priority {workset.priority}; {best} is the cheapest live cluster with room "
            f"({cluster.cost_per_vcpu_hour:g}/vCPU-h, {active[best]}/{cluster.max_worksets} worksets)"
        )
        decisions.append(Decision(workset.workset_id, best, reason))
    return decisions


def _preference(cluster: Cluster, active: int) -> tuple[float, float, str]:
    return (cluster.cost_per_vcpu_hour, active / cluster.max_worksets, cluster.name)


def is_live(cluster: Cluster, now: datetime) -> bool:
    """Whether a cluster may get work: active, and its agent heartbeated within CLUSTER_STALE_AFTER."""
    return cluster.status is ClusterStatus.ACTIVE and now - cluster.last_heartbeat_at <= CLUSTER_STALE_AFTER


def _why_not(wanted: str | None, clusters: dict[str, Cluster], room: dict[str, int], now: datetime) -> str:
    if wanted is not None:
        if wanted not in clusters:
            return f"waits: its work file asks for cluster {wanted}, which is not registered"
        if not is_live(clusters[wanted], now):
            return f"waits: its cluster {wanted} is not live"
        return f"waits: its cluster {wanted} is full"
    if not room:
        return "waits: no live cluster is registered"
    return "waits: every live cluster is full"
