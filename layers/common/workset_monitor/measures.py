"""What the product measures: CloudWatch metrics computed from what a function already holds. Pure.

Each function returns `Measure`s; `observability.publish` prints them in the embedded metric format, so a metric
never costs an AWS call. Dimensions stay few and of low cardinality (state, priority, outcome, code, decision,
channel, cluster); a workset id is never one.

| metric | unit | dimensions | emitted by |
|---|---|---|---|
| `Registrations` | Count | outcome | register, api-write (`POST /worksets`) |
| `Transitions` | Count | state (entered), priority | mirror (the stream sees every change) |
| `RunDuration` | Seconds | state (`complete` or `error`) | mirror |
| `LockConflicts` | Count | code (`lease_lost`, `concurrent_update`, `transition_refused`) | api-write |
| `QueueDepth` | Count | state (`ready`, `locked`, `in_progress`) | schedule |
| `ReadyQueueDepth` | Count | priority | schedule |
| `OldestReadyAge` | Seconds | (none) | schedule |
| `SchedulerDecisions` | Count | decision | schedule |
| `ClusterWorksets` | Count | cluster | schedule |
| `Delivered`, `AlreadyDelivered`, `DeliveryFailed` | Count | channel | notify |
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .models import ClusterStatus, Priority, State, Workset
from .scheduling import is_live

if TYPE_CHECKING:
    from .scheduler import TickReport

REGISTRATIONS = "Registrations"
TRANSITIONS = "Transitions"
RUN_DURATION = "RunDuration"
LOCK_CONFLICTS = "LockConflicts"
QUEUE_DEPTH = "QueueDepth"
READY_QUEUE_DEPTH = "ReadyQueueDepth"
OLDEST_READY_AGE = "OldestReadyAge"
SCHEDULER_DECISIONS = "SchedulerDecisions"
CLUSTER_WORKSETS = "ClusterWorksets"

QUEUE_STATES = (State.READY, State.LOCKED, State.IN_PROGRESS)
"""The states whose worksets the tick reads anyway; the finished ones would cost a query (see GET /queue/stats)."""
LOCK_CONFLICT_CODES = frozenset({"lease_lost", "concurrent_update", "transition_refused"})
RUN_ENDS = frozenset({State.COMPLETE, State.ERROR})


@dataclass(frozen=True)
class Measure:
    """One data point: a metric's name, value and unit, and its own dimensions (name, value) in order."""

    name: str
    value: float
    unit: str = "Count"
    dimensions: tuple[tuple[str, str], ...] = ()


def point(name: str, value: float, unit: str = "Count", **dimensions: str) -> Measure:
    """A measure with its dimensions as keywords, in the order given."""
    return Measure(name, value, unit, tuple(dimensions.items()))


def registration(outcome: str) -> Measure:
    """A sentinel event or `POST /worksets` handled: registered, duplicate, retried, ignored or unchanged."""
    return point(REGISTRATIONS, 1, outcome=outcome)


def lock_conflict(code: str) -> Measure | None:
    """A claim or write the API refused with 409 because another writer or the lease came first; None for other
    refusals (a registered id, a retired cluster)."""
    if code not in LOCK_CONFLICT_CODES:
        return None
    return point(LOCK_CONFLICTS, 1, code=code)


def change(old: Workset | None, new: Workset) -> list[Measure]:
    """What one change of a workset (a stream record's images) measures: the state it entered, and how long a run
    took when it ends one.

    The run's length is from the old image's `state_since` (when it entered `in_progress`) to the new image's
    (when it left it), both written by the transitions themselves; a workset written before `state_since` existed
    gives no length.
    """
    if old is not None and old.state is new.state:
        return []  # a heartbeat, an assignment: no change of state

    measures = [point(TRANSITIONS, 1, state=new.state.value, priority=new.priority.value)]
    if old is not None and old.state is State.IN_PROGRESS and new.state in RUN_ENDS and old.state_since:
        ended = new.state_since or new.updated_at
        seconds = max((ended - old.state_since).total_seconds(), 0.0)
        measures.append(point(RUN_DURATION, seconds, "Seconds", state=new.state.value))
    return measures


def tick(report: TickReport) -> list[Measure]:
    """What one tick of the scheduler measures, from what it read and decided: the queue by state and by priority,
    the age of the oldest ready workset (0 when none waits), every kind of decision (0 when none), and the worksets
    each cluster holds after the tick's assignments (live clusters, and others while they still hold some)."""
    measures = [point(QUEUE_DEPTH, report.queue.get(state, 0), state=state.value) for state in QUEUE_STATES]

    by_priority = Counter(workset.priority for workset in report.ready)
    measures += [point(READY_QUEUE_DEPTH, by_priority[priority], priority=priority.value) for priority in Priority]

    waiting_since = [workset.state_since or workset.created_at for workset in report.ready]
    oldest = max((report.at - moment).total_seconds() for moment in waiting_since) if waiting_since else 0.0
    measures.append(point(OLDEST_READY_AGE, max(oldest, 0.0), "Seconds"))

    decisions = {
        "assigned": len(report.assigned),
        "waiting": len(report.waiting),
        "refused": len(report.refused),
        "expired": len(report.expired),
        "retried": len(report.retried),
        "unassigned": len(report.unassigned),
        "cluster_needed": len(report.needed),
    }
    measures += [point(SCHEDULER_DECISIONS, count, decision=decision) for decision, count in decisions.items()]

    assigned = Counter(decision.cluster for decision in report.assigned)
    measures += [
        point(CLUSTER_WORKSETS, load.active + assigned[load.cluster.name], cluster=load.cluster.name)
        for load in report.loads
        if load.cluster.status is not ClusterStatus.RETIRED and (load.active or is_live(load.cluster, report.at))
    ]
    return measures


def deliveries(counts: Mapping[tuple[str, str], int]) -> list[Measure]:
    """A notify batch's counts per (metric, channel): Delivered, AlreadyDelivered, DeliveryFailed."""
    return [point(metric, count, channel=channel) for (metric, channel), count in sorted(counts.items())]
