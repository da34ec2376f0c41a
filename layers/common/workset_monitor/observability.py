"""The logger, metrics and tracing every module imports, so all lines share one service name and format.

- `logger`: Powertools Logger, JSON lines. Handlers set the correlation id (the S3 request id, the stream record's
  event id, the API request id, the schedule event's id) and the `workset_id` key on every line about one workset,
  per record with `log_keys`.
- `function_metrics()`: each function's own Powertools metrics, for counters without dimensions of their own,
  flushed by its `metrics.log_metrics`.
- `publish`: measures with dimensions of their own (`measures.py`), each as one EMF line (Powertools `single_metric`),
  since one Metrics flush puts every metric under one dimension set.
- `traced`: Powertools Tracer around a handler when tracing is on; when off, the X-Ray SDK is never imported.

Every metric is in the `WorksetMonitor` namespace with the dimension `service`, which the template sets to
`workset-monitor-<stage>` (POWERTOOLS_SERVICE_NAME), so that two stages in one account keep apart.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar, cast

from aws_lambda_powertools import Logger
from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit, single_metric

if TYPE_CHECKING:
    from .measures import Measure

SERVICE = "workset-monitor"
NAMESPACE = "WorksetMonitor"
TRACING_DISABLED_ENV = "POWERTOOLS_TRACE_DISABLED"

Handler = TypeVar("Handler", bound=Callable[..., Any])

logger = Logger(service=SERVICE)


def function_metrics() -> EphemeralMetrics:
    """A function's own metrics, which its handler flushes with `log_metrics`: an instance per function rather than
    Powertools' `Metrics`, whose metrics all instances in a process share (the local stack runs every function in
    one process, where one function's flush would take another's metrics, or lose them).

    No service is given, so the `service` dimension is POWERTOOLS_SERVICE_NAME (the deployment), as single_metric's.
    """
    return EphemeralMetrics(namespace=NAMESPACE)


@contextmanager
def log_keys(**keys: object) -> Iterator[None]:
    """`keys` (the record's correlation id, its workset's id) on every line logged inside the block, removed after it
    so that they never reach the next record's lines or the batch's.

    Powertools' thread-safe keys: where invocations run in threads of one process (the local stack), another
    invocation neither sees them nor clears them. A new invocation clears them (`inject_lambda_context`).
    """
    logger.thread_safe_append_keys(**keys)
    try:
        yield
    finally:
        logger.thread_safe_remove_keys(list(keys))


def publish(measures: Iterable[Measure]) -> None:
    """Print each measure as one EMF line, with its own dimensions (and `service`). Costs no AWS call: CloudWatch
    reads the lines from the function's log."""
    for measure in measures:
        with single_metric(
            name=measure.name, unit=MetricUnit(measure.unit), value=measure.value, namespace=NAMESPACE
        ) as metric:
            for name, value in measure.dimensions:
                metric.add_dimension(name=name, value=value)


def tracing_enabled() -> bool:
    """Whether the template turned tracing on (`Tracing=Active` sets POWERTOOLS_TRACE_DISABLED=false)."""
    return os.environ.get(TRACING_DISABLED_ENV, "true").strip().lower() in ("0", "false", "no", "off")


def traced(handler: Handler) -> Handler:
    """`handler` under Powertools Tracer when tracing is on (boto3 and requests calls become subsegments).

    Off (the default), the handler is returned as it is and neither the Tracer nor the X-Ray SDK is imported, so
    tracing costs no cold-start time. Decided once, when the handler module is imported.
    """
    if not tracing_enabled():
        return handler

    from aws_lambda_powertools import Tracer

    return cast(Handler, Tracer(service=SERVICE).capture_lambda_handler(handler))
