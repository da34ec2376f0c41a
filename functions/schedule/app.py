"""Schedule function: on each tick, release expired leases, retry, and assign ready worksets to clusters.

Each tick publishes the queue's depth by state and priority, the oldest ready workset's age, and its decisions
(`measures.tick`), from what it read anyway. Its lines carry the schedule event's id as the correlation id.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from workset_monitor import measures
from workset_monitor.cluster_needs import ClusterNeedEvents
from workset_monitor.observability import log_keys, logger, publish, traced
from workset_monitor.scheduler import Scheduler
from workset_monitor.scheduling import Policy
from workset_monitor.settings import settings
from workset_monitor.store import WorksetStore

_scheduler: Scheduler | None = None


def scheduler() -> Scheduler:
    global _scheduler
    if _scheduler is None:
        config = settings()
        _scheduler = Scheduler(
            WorksetStore(config.table_name, retry_base_seconds=config.retry_base_seconds),
            clock_skew_seconds=config.clock_skew_seconds,
            policy=Policy(aging=timedelta(hours=config.aging_hours)),
            assignment_timeout=timedelta(seconds=config.assignment_timeout_seconds),
            announce=ClusterNeedEvents().announce,
        )
    return _scheduler


@traced
@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    with log_keys(correlation_id=event.get("id")):
        return _tick()


def _tick() -> dict[str, Any]:
    report = scheduler().tick()

    publish(measures.tick(report))
    logger.info(
        "tick done",
        expired=len(report.expired),
        retried=len(report.retried),
        unassigned=len(report.unassigned),
        assigned=len(report.assigned),
        waiting=len(report.waiting),
        conflicts=report.conflicts,
    )
    return {
        "expired": report.expired,
        "retried": report.retried,
        "unassigned": report.unassigned,
        "assigned": {decision.workset_id: decision.cluster for decision in report.assigned},
        "waiting": {decision.workset_id: decision.reason for decision in report.waiting},
        "clusters_needed": report.needed,
    }
