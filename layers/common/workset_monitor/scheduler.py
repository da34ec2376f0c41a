"""One tick of the schedule function: release expired leases, start due retries, take back assignments that are no
longer good, then assign ready worksets to clusters by the policy (scheduling.py) and say which clusters are needed.

What a tick reads, by key or index only, so its cost grows with the live worksets (ready, locked, running, due to
retry) and the clusters, never with the finished ones: the by-state index for `locked`, `in_progress` and `ready`,
the by-retry index for due retries, the by-entity index for the clusters and their load counters, and the
dependencies' states by key (BatchGetItem).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from .errors import ConcurrentUpdate, TransitionRefused
from .models import Cluster, ErrorCategory, State, Workset, utcnow
from .observability import logger
from .scheduling import DEFAULT_POLICY, ClusterLoad, Decision, Policy, clusters_needed, is_live, plan
from .store import WorksetStore

ACTOR = "scheduler"
TICK_DECISIONS_SHOWN = 50
"""Decisions of each kind kept with the tick's summary; the item stays far below DynamoDB's 400 KB."""
DEFAULT_ASSIGNMENT_TIMEOUT = timedelta(minutes=10)
"""An assignment its cluster has not claimed for this long goes back to the queue."""

Announce = Callable[[Sequence[Mapping[str, Any]]], None]


@dataclass
class TickReport:
    at: datetime = field(default_factory=utcnow)
    expired: list[str] = field(default_factory=list)
    retried: list[str] = field(default_factory=list)
    unassigned: list[str] = field(default_factory=list)
    assigned: list[Decision] = field(default_factory=list)
    waiting: list[Decision] = field(default_factory=list)
    refused: list[Decision] = field(default_factory=list)
    """Assignments the store refused: the workset changed, or another tick filled the cluster first."""
    needed: list[dict[str, Any]] = field(default_factory=list)
    conflicts: int = 0
    queue: dict[State, int] = field(default_factory=dict)
    """Worksets per live state (ready, locked, in_progress) as the tick left them, from what it read."""
    ready: list[Workset] = field(default_factory=list)
    """The ready worksets the tick planned with (for the queue's metrics)."""
    loads: list[ClusterLoad] = field(default_factory=list)
    """The clusters and their load as the tick planned with them."""

    def summary(self, at: datetime, shown: int = TICK_DECISIONS_SHOWN) -> dict[str, Any]:
        """What `GET /scheduler/stats` shows of this tick: counts, and the first `shown` decisions of each kind."""
        return {
            "at": at.isoformat(),
            "expired": len(self.expired),
            "retried": len(self.retried),
            "unassigned": len(self.unassigned),
            "assigned": len(self.assigned),
            "waiting": len(self.waiting),
            "conflicts": self.conflicts,
            "assignments": [_shown(decision) for decision in self.assigned[:shown]],
            "waits": [_shown(decision) for decision in self.waiting[:shown]],
            "clusters_needed": self.needed[:shown],
        }


def recent_decisions(ticks: Iterable[Mapping[str, Any]], limit: int) -> list[dict[str, Any]]:
    """The decisions of tick summaries (newest first), newest first, each with its tick's time (`at`), at most
    `limit`: every assignment, and each wait once, at the newest tick that made it. A workset waits for the same
    reason tick after tick; without this, a queue of waiting worksets would fill the list with the same waits and
    push the assignments out."""
    seen: set[tuple[str, str]] = set()
    decisions: list[dict[str, Any]] = []
    for tick in ticks:
        for decision in tick.get("assignments", []):
            decisions.append({"at": tick["at"], **decision})
        for decision in tick.get("waits", []):
            key = (decision["workset_id"], decision["reason"])
            if key not in seen:
                seen.add(key)
                decisions.append({"at": tick["at"], **decision})
    return decisions[:limit]


def _shown(decision: Decision) -> dict[str, Any]:
    """A decision as the tick's summary keeps it: id, cluster and reason always, the sizes when known."""
    shown = asdict(decision)
    return {name: value for name, value in shown.items() if value is not None or name == "cluster"}


class Scheduler:
    def __init__(
        self,
        store: WorksetStore,
        clock_skew_seconds: int,
        *,
        policy: Policy = DEFAULT_POLICY,
        assignment_timeout: timedelta = DEFAULT_ASSIGNMENT_TIMEOUT,
        announce: Announce | None = None,
    ) -> None:
        self.store = store
        self.clock_skew = timedelta(seconds=clock_skew_seconds)
        self.policy = policy
        self.assignment_timeout = assignment_timeout
        self.announce = announce

    def tick(self, now: datetime | None = None) -> TickReport:
        """One pass of the schedule. Safe to run twice at once: every write is conditional on what was read, and an
        assignment also on its cluster's room (the store's capacity guard), so the loser of a race only counts a
        conflict."""
        now = now or utcnow()
        report = TickReport(at=now)

        for state in (State.LOCKED, State.IN_PROGRESS):
            report.queue[state] = 0
            for workset in self.store.worksets_in(state):
                if self._lease_expired(workset, now) and self._expire(workset, now, report):
                    report.expired.append(workset.workset_id)
                else:
                    report.queue[state] += 1

        for workset in self.store.due_retries(now):
            if self._retry(workset, now, report):
                report.retried.append(workset.workset_id)

        loads = self.store.cluster_loads()
        live = {load.cluster.name for load in loads if is_live(load.cluster, now)}
        ready: dict[str, Workset] = {}
        for workset in self.store.worksets_in(State.READY):
            why = self._why_take_back(workset, live, now)
            if why is not None:
                freed = self._unassign(workset, why, now, report)
                workset = freed or workset
            ready[workset.workset_id] = workset
        if report.unassigned:
            loads = self.store.cluster_loads()  # the take-backs freed room the first read did not see

        report.queue[State.READY] = len(ready)
        report.ready, report.loads = list(ready.values()), loads

        dependencies = self._dependencies(ready.values())
        clusters = {load.cluster.name: load.cluster for load in loads}
        decisions = plan(list(ready.values()), loads, now, dependencies=dependencies, policy=self.policy)
        for decision in decisions:
            if decision.cluster is None:
                report.waiting.append(decision)
            elif self._assign(ready[decision.workset_id], decision, clusters[decision.cluster], now, report):
                report.assigned.append(decision)
            else:
                report.refused.append(decision)

        report.needed = clusters_needed(decisions)
        if report.needed and self.announce is not None:
            self.announce(report.needed)
            logger.info("clusters needed", needs=report.needed)

        self.store.put_tick(report.summary(now), at=now)
        return report

    def _lease_expired(self, workset: Workset, now: datetime) -> bool:
        """Expired by our clock even if our clock runs up to `clock_skew` ahead of the agent's."""
        return workset.lease is not None and workset.lease.expires_at + self.clock_skew < now

    def _expire(self, workset: Workset, now: datetime, report: TickReport) -> bool:
        assert workset.lease is not None
        reason = f"lease of {workset.lease.owner} expired at {workset.lease.expires_at.isoformat()}"
        try:
            self.store.transition(
                workset,
                State.ERROR,
                actor=ACTOR,
                reason=reason,
                error_category=ErrorCategory.LEASE_EXPIRED,
                error_reasons=(reason,),
                now=now,
            )
        except (ConcurrentUpdate, TransitionRefused):
            # The agent heartbeated or finished since we read it: the lease is alive after all.
            report.conflicts += 1
            return False
        logger.warning("lease expired", workset_id=workset.workset_id, owner=workset.lease.owner)
        return True

    def _retry(self, workset: Workset, now: datetime, report: TickReport) -> bool:
        """Start the next attempt of a workset whose automatic retry is due."""
        reason = (
            f"automatic retry: attempt {workset.attempt + 1} of {workset.max_attempts} "
            f"after a {workset.error_category} error"
        )
        try:
            self.store.transition(
                workset, State.READY, actor=ACTOR, reason=reason, changes={"attempt": workset.attempt + 1}, now=now
            )
        except (ConcurrentUpdate, TransitionRefused):
            report.conflicts += 1  # a person acted on it meanwhile, or the index was behind the table
            return False
        logger.info("workset retried", workset_id=workset.workset_id, attempt=workset.attempt + 1)
        return True

    def _why_take_back(self, workset: Workset, live: set[str], now: datetime) -> str | None:
        """Why a ready workset's assignment should return to the queue, or None to keep it."""
        if not workset.assigned_cluster:
            return None
        if workset.assigned_cluster not in live:
            return f"cluster {workset.assigned_cluster} is not live (no heartbeat, retired, or not registered)"
        # NOTE: an assignment written before assignments had a time counts from the workset's last change.
        assigned_at = workset.assigned_at or workset.updated_at
        if now - assigned_at > self.assignment_timeout:
            minutes = self.assignment_timeout.total_seconds() / 60
            return f"cluster {workset.assigned_cluster} did not claim it within {minutes:g} min"
        return None

    def _unassign(self, workset: Workset, reason: str, now: datetime, report: TickReport) -> Workset | None:
        """Take a ready workset back from its cluster, so the plan can place it again."""
        try:
            freed = self.store.record(
                workset, {"assigned_cluster": None}, event="unassigned", actor=ACTOR, reason=reason, now=now
            )
        except ConcurrentUpdate:
            report.conflicts += 1
            return None
        report.unassigned.append(workset.workset_id)
        logger.info(
            "workset unassigned", workset_id=workset.workset_id, cluster=workset.assigned_cluster, reason=reason
        )
        return freed

    def _dependencies(self, ready: Iterable[Workset]) -> dict[str, State | None]:
        """The states of the worksets the unassigned ready ones depend on, read by key."""
        names = {
            name
            for workset in ready
            if not workset.assigned_cluster and workset.work
            for name in workset.work.depends_on
        }
        return self.store.states_of(names) if names else {}

    def _assign(
        self, workset: Workset, decision: Decision, cluster: Cluster, now: datetime, report: TickReport
    ) -> bool:
        assert decision.cluster is not None
        try:
            self.store.assign(
                workset,
                cluster=decision.cluster,
                reason=decision.reason,
                vcpus=decision.vcpus,
                capacity=cluster,
                now=now,
            )
        except (ConcurrentUpdate, TransitionRefused):
            # The workset changed since we read it, or another tick filled the cluster first: next tick decides.
            report.conflicts += 1
            logger.info("assignment refused", workset_id=workset.workset_id, cluster=decision.cluster)
            return False
        logger.info("workset assigned", workset_id=workset.workset_id, cluster=decision.cluster, reason=decision.reason)
        return True
