"""The scheduling policy: which ready workset goes to which cluster, and why. Pure: worksets and clusters in,
decisions out.

The policy, in the order it is applied to each tick's ready worksets:

1. **Dependencies.** A workset whose `depends_on` names a workset that is not `complete` waits; the reason names
   each missing one and its state.
2. **Order.** Effective priority first: the priority's rank (urgent 0, normal 1, low 2) less one rank for every
   `Policy.aging` the workset has waited (never below urgent), so nothing starves. Within a rank, worksets whose
   deadline is near (their latest start, the deadline less the estimated run time, is within
   `Policy.deadline_horizon`) go first, soonest latest start first, and are raised to urgent; then the oldest. A
   workset that can no longer make its deadline gets no raise, and is still scheduled: its reason says so.
3. **Size.** `RunModel.estimate` gives each workset's vCPU-hours (samples x coverage x the pipeline's factor) and
   the vCPUs it takes of a cluster while it holds it.
4. **Placement.** Among the clusters that are live, match its affinity (the work file's `cluster_name`, `region`,
   `availability_zone`), have room (concurrent worksets, and vCPUs when the cluster declares them) and whose estimated
   cost (vCPU-hours x cost per vCPU-hour) is within its budget, the cheapest; ties go to the less utilized, then to
   the name, so the plan is deterministic.
5. **Holds.** A workset at the top rank (urgent, or raised there by waiting or a near deadline) that waits because
   no cluster with a free place has its vCPUs free *holds* the cheapest such cluster: nothing later in the plan is
   placed there, so smaller worksets cannot keep taking the vCPUs it waits for, and it starts as soon as enough of
   them free up. Without holds a large workset could starve behind a stream of small ones whatever its rank.
6. **Cluster needed.** When no live cluster could take the workset even empty (affinity, size), the decision says
   which cluster is needed (`ClusterNeed`), for an operator's automation.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any

from .models import Cluster, ClusterStatus, State, Workset

CLUSTER_STALE_AFTER = timedelta(minutes=5)
"""A cluster whose agent has not heartbeated for this long gets no new work."""


@dataclass(frozen=True)
class Estimate:
    vcpu_hours: float
    vcpus: int
    """vCPUs the workset takes of its cluster's capacity while it holds the cluster."""

    @property
    def hours(self) -> float:
        """Estimated wall time, if the run keeps its vCPUs busy."""
        return self.vcpu_hours / self.vcpus


@dataclass(frozen=True)
class RunModel:
    """How big a run is, from what registration knows of a workset: the one place the estimate is made and tuned.

    vCPU-hours = samples x coverage (x) x the pipeline's vCPU-hours per sample and x of coverage. The pipeline and
    coverage come from the work file (`pipeline`, `coverage`), else the defaults; samples are the sample sheet's
    distinct SAMPLE_IDs (at least 1). The vCPUs a run takes are the work file's `vcpus`, else `vcpus_per_sample` per
    sample up to `max_vcpus`.

    Limitations: the factors are rough figures for a BWA-MEM2 + DeepVariant style pipeline on current x86 instances,
    not measurements of this deployment's runs; SUBSAMPLE_PCT and the data sizes are not read.
    """

    vcpu_hours_per_sample_x: Mapping[str, float] = field(
        default_factory=lambda: MappingProxyType({"wgs": 4.0, "wes": 0.3, "panel": 0.05, "rna": 0.5})
    )
    default_coverage: Mapping[str, float] = field(
        default_factory=lambda: MappingProxyType({"wgs": 30.0, "wes": 100.0, "panel": 500.0, "rna": 50.0})
    )
    default_pipeline: str = "wgs"
    vcpus_per_sample: int = 32
    max_vcpus: int = 192

    def estimate(self, workset: Workset) -> Estimate:
        work = workset.work
        pipeline = (work.pipeline if work and work.pipeline else self.default_pipeline).lower()
        factor = self.vcpu_hours_per_sample_x.get(pipeline, self.vcpu_hours_per_sample_x[self.default_pipeline])
        coverage = work.coverage if work and work.coverage else self.default_coverage.get(pipeline, 30.0)
        samples = max(workset.sample_count, 1)

        vcpus = work.vcpus if work and work.vcpus else min(self.vcpus_per_sample * samples, self.max_vcpus)
        return Estimate(vcpu_hours=round(samples * coverage * factor, 3), vcpus=vcpus)


@dataclass(frozen=True)
class Policy:
    """The knobs of the policy; the schedule function builds one from its settings."""

    aging: timedelta = timedelta(hours=4)
    """Waiting this long raises a workset one priority rank (low -> normal -> urgent)."""
    deadline_horizon: timedelta = timedelta(hours=12)
    """A workset whose latest start is this close goes before the others of its rank, raised to urgent."""
    run_model: RunModel = field(default_factory=RunModel)


DEFAULT_POLICY = Policy()


@dataclass(frozen=True)
class ClusterLoad:
    cluster: Cluster
    active: int
    """Worksets the cluster holds now: assigned to it, locked on it, or running on it."""
    vcpus_used: int = 0
    """vCPUs those worksets take."""

    @property
    def room(self) -> int:
        return max(self.cluster.max_worksets - self.active, 0)


@dataclass(frozen=True)
class ClusterNeed:
    """The cluster a workset needs when no registered live cluster could take it."""

    vcpus: int
    region: str | None = None
    availability_zone: str | None = None
    cluster_name: str | None = None


@dataclass(frozen=True)
class Decision:
    workset_id: str
    cluster: str | None
    reason: str
    vcpus: int = field(default=0, compare=False)
    """vCPUs the workset takes of the cluster: what the assignment reserves."""
    estimated_cost: float | None = field(default=None, compare=False)
    need: ClusterNeed | None = field(default=None, compare=False)


@dataclass(frozen=True)
class _Queued:
    workset: Workset
    estimate: Estimate
    rank: int
    deadline_first: bool
    note: str


def plan(
    ready: Sequence[Workset],
    loads: Sequence[ClusterLoad],
    now: datetime,
    *,
    dependencies: Mapping[str, State | None] | None = None,
    policy: Policy = DEFAULT_POLICY,
) -> list[Decision]:
    """Decide, for each unassigned ready workset, the cluster it goes to or why it waits (see the module's doc).

    `dependencies` maps each workset id named in a `depends_on` to its state (None: not registered); a dependency
    missing from it counts as not registered. Decisions come in the order the worksets were considered.

    Limitations: only `complete` satisfies a dependency (an archived one does not, even if it completed); the plan
    knows each cluster's load as read, so the store's capacity guard has the last word.
    """
    known = dependencies or {}
    decisions: list[Decision] = []
    queue: list[_Queued] = []
    cycles = _dependency_cycles(ready)

    for workset in ready:
        if workset.assigned_cluster:
            continue
        missing = _missing_dependencies(workset, known)
        if missing:
            reason = "waits: depends on " + ", ".join(missing)
            if workset.workset_id in cycles:
                reason += f"; a dependency cycle ({cycles[workset.workset_id]}) that never ends: fix their depends_on"
            decisions.append(Decision(workset.workset_id, None, reason))
            continue
        queue.append(_queued(workset, now, policy))
    queue.sort(key=_order)

    board = _Board(loads, now)
    for queued in queue:
        decisions.append(board.place(queued))
    return decisions


def clusters_needed(decisions: Sequence[Decision], shown: int = 20) -> list[dict[str, Any]]:
    """The clusters the waiting worksets need, one per place (cluster name, region, zone): the most vCPUs any of its
    worksets needs, how many worksets wait for it, and the first `shown` of their ids."""
    groups: dict[tuple[str | None, str | None, str | None], list[Decision]] = {}
    for decision in decisions:
        if decision.need is not None:
            need = decision.need
            groups.setdefault((need.cluster_name, need.region, need.availability_zone), []).append(decision)

    needed = []
    for (name, region, zone), waiting in groups.items():
        detail: dict[str, Any] = {
            "vcpus": max(decision.vcpus for decision in waiting),
            "worksets": len(waiting),
            "workset_ids": [decision.workset_id for decision in waiting[:shown]],
        }
        for key, value in (("cluster_name", name), ("region", region), ("availability_zone", zone)):
            if value is not None:
                detail[key] = value
        needed.append(detail)
    return needed


def is_live(cluster: Cluster, now: datetime) -> bool:
    """Whether a cluster may get work: active, and its agent heartbeated within CLUSTER_STALE_AFTER."""
    return cluster.status is ClusterStatus.ACTIVE and now - cluster.last_heartbeat_at <= CLUSTER_STALE_AFTER


def budget_cap(budget: str | None) -> float | None:
    """The budget's cap in USD: '250', '250.5', '$250', 'USD 250', '250 USD'; None for a label such as a cost center's
    name, which caps nothing."""
    if budget is None:
        return None
    match = re.fullmatch(r"\s*(?:\$|USD\s*)?\s*(\d+(?:\.\d+)?)\s*(?:USD)?\s*", budget, flags=re.IGNORECASE)
    return float(match.group(1)) if match else None


def _missing_dependencies(workset: Workset, known: Mapping[str, State | None]) -> list[str]:
    names = workset.work.depends_on if workset.work else ()
    missing = []
    for name in names:
        state = known.get(name)
        if state is not State.COMPLETE:
            missing.append(f"{name} ({state if state is not None else 'not registered'})")
    return missing


def _dependency_cycles(ready: Sequence[Workset]) -> dict[str, str]:
    """The ready worksets whose `depends_on` lead back to themselves through other ready worksets (a workset that
    names itself included), each with the worksets of its cycle (`a, b`): they would wait for each other forever.

    The cycles are the strongly connected components of the ready worksets' dependency graph (Tarjan's algorithm,
    without recursion), in time linear in the worksets and their dependencies.

    Limitations: only ready worksets' work files are known to the plan, so a cycle through a workset in another state
    is not named (that workset is not ready, so its dependents wait for it with its state in their reason).
    """
    edges = {workset.workset_id: list(workset.work.depends_on if workset.work else ()) for workset in ready}
    index: dict[str, int] = {}
    lowest: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: dict[str, str] = {}

    for root in edges:
        if root in index:
            continue
        work: list[tuple[str, int]] = [(root, 0)]
        while work:
            node, position = work.pop()
            if position == 0:
                index[node] = lowest[node] = len(index)
                stack.append(node)
                on_stack.add(node)
            successors = [name for name in edges[node] if name in edges]
            if position < len(successors):
                work.append((node, position + 1))
                successor = successors[position]
                if successor not in index:
                    work.append((successor, 0))
                elif successor in on_stack:
                    lowest[node] = min(lowest[node], index[successor])
                continue
            if lowest[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or node in edges[node]:
                    names = ", ".join(sorted(component))
                    cycles.update(dict.fromkeys(component, names))
            if work:
                parent = work[-1][0]
                lowest[parent] = min(lowest[parent], lowest[node])
    return cycles


def _queued(workset: Workset, now: datetime, policy: Policy) -> _Queued:
    estimate = policy.run_model.estimate(workset)
    raised = int((now - workset.created_at) / policy.aging) if policy.aging > timedelta(0) else 0
    rank = max(workset.priority.rank - raised, 0)
    notes = [f"priority {workset.priority}"]
    if rank < workset.priority.rank:
        notes.append(f"raised to rank {rank} after waiting {_hours(now - workset.created_at)}")

    deadline = workset.work.deadline if workset.work else None
    deadline_first = False
    if deadline is not None:
        latest_start = deadline - timedelta(hours=estimate.hours)
        if latest_start < now:
            notes.append(f"cannot finish before its deadline {deadline.isoformat()} (needs ~{estimate.hours:.1f} h)")
        elif latest_start - now <= policy.deadline_horizon:
            rank, deadline_first = 0, True
            notes.append(f"deadline {deadline.isoformat()} is near: must start within {_hours(latest_start - now)}")
    return _Queued(workset, estimate, rank, deadline_first, "; ".join(notes))


def _order(queued: _Queued) -> tuple[int, int, datetime, str]:
    workset = queued.workset
    if queued.deadline_first:
        assert workset.work is not None and workset.work.deadline is not None
        latest_start = workset.work.deadline - timedelta(hours=queued.estimate.hours)
        return (queued.rank, 0, latest_start, workset.workset_id)
    return (queued.rank, 1, workset.created_at, workset.workset_id)


class _Board:
    """The clusters' load as the plan fills them, with what stays the same for every workset of one shape."""

    def __init__(self, loads: Sequence[ClusterLoad], now: datetime) -> None:
        self.live = {load.cluster.name: load for load in loads if is_live(load.cluster, now)}
        self.clusters = {load.cluster.name: load.cluster for load in loads}
        self.active = {name: load.active for name, load in self.live.items()}
        self.used = {name: load.vcpus_used for name, load in self.live.items()}
        self.open = {name for name, load in self.live.items() if load.active < load.cluster.max_worksets}
        self.held: dict[str, str] = {}
        """Clusters held for a top-rank workset short of vCPUs there (cluster -> workset id): closed to the rest."""
        self._fitting: dict[tuple[str | None, str | None, str | None, int], list[Cluster]] = {}

    def fitting(self, workset: Workset, estimate: Estimate) -> list[Cluster]:
        """The live clusters that could take the workset if they were empty (affinity and size), cached by shape:
        a plan of 100,000 worksets of a few shapes checks each cluster a few times, not 100,000 times."""
        work = workset.work
        shape = (
            work.cluster_name if work else None,
            work.region if work else None,
            work.availability_zone if work else None,
            estimate.vcpus,
        )
        if shape not in self._fitting:
            self._fitting[shape] = [
                load.cluster for load in self.live.values() if _fits(load.cluster, workset, estimate)
            ]
        return self._fitting[shape]

    def place(self, queued: _Queued) -> Decision:
        workset, estimate = queued.workset, queued.estimate
        work = workset.work
        cap = budget_cap(work.budget if work else None)

        fitting = self.fitting(workset, estimate)
        if not fitting:
            return _needs_a_cluster(workset, estimate, self.clusters, self.live)

        affordable = fitting if cap is None else [c for c in fitting if _cost(estimate, c) <= cap]
        if not affordable:
            cheapest = min(fitting, key=lambda c: (_cost(estimate, c), c.name))
            reason = (
                f"waits: its cheapest estimate, ${_cost(estimate, cheapest):.2f} on {cheapest.name} "
                f"({estimate.vcpu_hours:g} vCPU-h), exceeds its budget of ${cap:g}"
            )
            return Decision(workset.workset_id, None, reason, estimate.vcpus, _cost(estimate, cheapest))

        active, used = self.active, self.used
        with_room = [
            c for c in affordable if c.name in self.open and _has_room(c, estimate, active[c.name], used[c.name])
        ]
        if not with_room:
            return self._wait_for_room(queued, affordable)

        best = min(with_room, key=lambda c: (_cost(estimate, c), active[c.name] / c.max_worksets, c.name))
        active[best.name] += 1
        used[best.name] += estimate.vcpus
        if active[best.name] >= best.max_worksets:
            self.open.discard(best.name)
        cost = _cost(estimate, best)
        vcpus = f", {used[best.name]}/{best.vcpus} vCPUs" if best.vcpus else ""
        budget = f", within its budget of ${cap:g}" if cap is not None else ""
        reason = (
            f"{queued.note}; {best.name} is the cheapest live cluster with room: est. {estimate.vcpu_hours:g} vCPU-h "
            f"x {best.cost_per_vcpu_hour:g}/vCPU-h = ${cost:.2f}{budget} ({active[best.name]}/{best.max_worksets} "
            f"worksets{vcpus})"
        )
        return Decision(workset.workset_id, best.name, reason, estimate.vcpus, cost)

    def _wait_for_room(self, queued: _Queued, affordable: Sequence[Cluster]) -> Decision:
        """The decision for a workset that no affordable cluster has room for now: it waits for a place, or for
        vCPUs on a cluster that has a place, and then, at the top rank, holds that cluster (see the module's doc)."""
        workset, estimate = queued.workset, queued.estimate
        short_of_vcpus = [cluster for cluster in affordable if cluster.name in self.open]
        if not short_of_vcpus:
            held_for = sorted({self.held[cluster.name] for cluster in affordable if cluster.name in self.held})
            return Decision(workset.workset_id, None, _full(workset, held_for), estimate.vcpus)

        best = min(short_of_vcpus, key=lambda c: (_cost(estimate, c), -(c.vcpus - self.used[c.name]), c.name))
        free = best.vcpus - self.used[best.name]
        if len(short_of_vcpus) == 1:
            reason = f"waits: {best.name} has {free} of its {best.vcpus} vCPUs free, it needs {estimate.vcpus}"
        else:
            reason = (
                f"waits: no live cluster with a free place has the {estimate.vcpus} vCPUs it needs free (the "
                f"cheapest, {best.name}, has {free} of {best.vcpus})"
            )
        if queued.rank == 0:
            self.open.discard(best.name)
            self.held[best.name] = workset.workset_id
            reason += f"; {best.name} is held for it, so smaller worksets do not take the vCPUs it waits for"
        return Decision(workset.workset_id, None, reason, estimate.vcpus)


def _fits(cluster: Cluster, workset: Workset, estimate: Estimate) -> bool:
    """Whether the cluster could take the workset if it were empty: affinity and size."""
    work = workset.work
    if work is not None:
        if work.cluster_name not in (None, cluster.name):
            return False
        if work.region not in (None, cluster.region):
            return False
        if work.availability_zone not in (None, cluster.availability_zone):
            return False
    return cluster.vcpus == 0 or estimate.vcpus <= cluster.vcpus


def _has_room(cluster: Cluster, estimate: Estimate, active: int, used: int) -> bool:
    """Room for one more workset, and for its vCPUs when the cluster declares how many it has (0: not declared)."""
    return active < cluster.max_worksets and (cluster.vcpus == 0 or used + estimate.vcpus <= cluster.vcpus)


def _cost(estimate: Estimate, cluster: Cluster) -> float:
    return round(estimate.vcpu_hours * cluster.cost_per_vcpu_hour, 6)


def _full(workset: Workset, held_for: Sequence[str] = ()) -> str:
    work = workset.work
    held = f" or held for {', '.join(held_for)}, ahead of it" if held_for else ""
    if work is not None and work.cluster_name is not None:
        return f"waits: its cluster {work.cluster_name} is full{held}"
    return f"waits: every live cluster{_where(workset)} is full{held}"


def _needs_a_cluster(
    workset: Workset, estimate: Estimate, clusters: Mapping[str, Cluster], live: Mapping[str, ClusterLoad]
) -> Decision:
    work = workset.work
    wanted = work.cluster_name if work else None
    need = ClusterNeed(
        vcpus=estimate.vcpus,
        region=work.region if work else None,
        availability_zone=work.availability_zone if work else None,
        cluster_name=wanted,
    )
    if wanted is not None and wanted not in clusters:
        reason = f"waits: its work file asks for cluster {wanted}, which is not registered"
    elif wanted is not None and wanted not in live:
        reason = f"waits: its cluster {wanted} is not live"
    elif wanted is not None:
        reason = f"waits: its cluster {wanted} has {clusters[wanted].vcpus} vCPUs, it needs {estimate.vcpus}"
    elif not live:
        reason = "waits: no live cluster is registered"
    else:
        # The clusters of its place, whatever their size: none at all, or none large enough.
        placed = [load.cluster for load in live.values() if _fits(load.cluster, workset, Estimate(0, 0))]
        if not placed:
            reason = f"waits: no live cluster{_where(workset)}"
        else:
            largest = max(placed, key=lambda c: (c.vcpus, c.name))
            reason = (
                f"waits: no live cluster{_where(workset)} has the {estimate.vcpus} vCPUs it needs "
                f"(the largest, {largest.name}, has {largest.vcpus})"
            )
    return Decision(
        workset.workset_id, None, f"{reason}; cluster needed: {_describe(need)}", estimate.vcpus, None, need
    )


def _where(workset: Workset) -> str:
    work = workset.work
    parts = []
    if work is not None and work.region:
        parts.append(f" in region {work.region}")
    if work is not None and work.availability_zone:
        parts.append(f" in zone {work.availability_zone}")
    return "".join(parts)


def _describe(need: ClusterNeed) -> str:
    parts = [f"{need.vcpus} vCPUs"]
    if need.cluster_name:
        parts.append(f"named {need.cluster_name}")
    if need.region:
        parts.append(f"in {need.region}")
    if need.availability_zone:
        parts.append(f"zone {need.availability_zone}")
    return " ".join(parts)


def _hours(span: timedelta) -> str:
    hours = span.total_seconds() / 3600
    return f"{math.floor(hours * 10) / 10:g} h"
