"""One tick of the schedule function: release expired leases, then assign ready worksets to clusters."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from .errors import ConcurrentUpdate, TransitionRefused
from .models import ErrorCategory, State, Workset, utcnow
from .observability import logger
from .scheduling import ClusterLoad, Decision, is_live, plan
from .store import WorksetStore

ACTOR = "scheduler"
TICK_DECISIONS_SHOWN = 25
"""Decisions of each kind kept with the tick's summary; the item stays far below DynamoDB's 400 KB."""


@dataclass
class TickReport:
    expired: list[str] = field(default_factory=list)
    retried: list[str] = field(default_factory=list)
    assigned: list[Decision] = field(default_factory=list)
    waiting: list[Decision] = field(default_factory=list)
    conflicts: int = 0

    def summary(self, at: datetime, shown: int = TICK_DECISIONS_SHOWN) -> dict[str, Any]:
        """What `GET /scheduler/stats` shows of this tick: counts, and the first `shown` decisions of each kind."""
        return {
            "at": at.isoformat(),
            "expired": len(self.expired),
            "retried": len(self.retried),
            "assigned": len(self.assigned),
            "waiting": len(self.waiting),
            "conflicts": self.conflicts,
            "assignments": [asdict(decision) for decision in self.assigned[:shown]],
            "waits": [asdict(decision) for decision in self.waiting[:shown]],
        }


class Scheduler:
    def __init__(self, store: WorksetStore, clock_skew_seconds: int) -> None:
        self.store = store
        self.clock_skew = timedelta(seconds=clock_skew_seconds)

    def tick(self, now: datetime | None = None) -> TickReport:
        now = now or utcnow()
        report = TickReport()

        for state in (State.LOCKED, State.IN_PROGRESS):
            for workset in self.store.worksets_in(state):
                if self._lease_expired(workset, now) and self._expire(workset, now, report):
                    report.expired.append(workset.workset_id)

        for workset in self.store.due_retries(now):
            if self._retry(workset, now, report):
                report.retried.append(workset.workset_id)

        clusters = self.store.list_clusters()
        live = {cluster.name for cluster in clusters if is_live(cluster, now)}
        ready: dict[str, Workset] = {}
        for workset in self.store.worksets_in(State.READY):
            if workset.assigned_cluster and workset.assigned_cluster not in live:
                workset = self._unassign(workset, now, report) or workset
            ready[workset.workset_id] = workset
        loads = [ClusterLoad(cluster, sum(1 for _ in self.store.worksets_on(cluster.name))) for cluster in clusters]
        for decision in plan(list(ready.values()), loads, now):
            if decision.cluster is None:
                report.waiting.append(decision)
                continue
            if self._assign(ready[decision.workset_id], decision, now, report):
                report.assigned.append(decision)

        self.store.put_tick(report.summary(now))
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

    def _unassign(self, workset: Workset, now: datetime, report: TickReport) -> Workset | None:
        """Take a ready workset back from a cluster that is no longer live, so the plan can place it again."""
        reason = f"cluster {workset.assigned_cluster} is not live (no heartbeat, retired, or not registered)"
        try:
            freed = self.store.record(
                workset, {"assigned_cluster": None}, event="unassigned", actor=ACTOR, reason=reason, now=now
            )
        except ConcurrentUpdate:
            report.conflicts += 1
            return None
        logger.info("workset unassigned", workset_id=workset.workset_id, cluster=workset.assigned_cluster)
        return freed

    def _assign(self, workset: Workset, decision: Decision, now: datetime, report: TickReport) -> bool:
        assert decision.cluster is not None
        try:
            self.store.assign(workset, cluster=decision.cluster, reason=decision.reason, now=now)
        except (ConcurrentUpdate, TransitionRefused):
            report.conflicts += 1
            return False
        logger.info("workset assigned", workset_id=workset.workset_id, cluster=decision.cluster, reason=decision.reason)
        return True
