"""Mirror function: each state change on the workset table's stream is written back into the workset's S3 folder as
sentinel files (`daylily.lock`, `daylily.in_progress`, `daylily.complete`, `daylily.error`), so people and old tools
that read S3 see what the table holds. Records are processed in order; a failed one is reported as a batch item
failure and retried, and writing a sentinel twice is harmless.

It sees every change of every workset, so it also publishes the transitions and run durations (`measures.change`).
Each record's lines carry its stream event id as the correlation id, and the workset's id.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import DynamoDBRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from workset_monitor import measures
from workset_monitor.bucket import WorksetBucket
from workset_monitor.models import Workset
from workset_monitor.observability import function_metrics, log_keys, logger, publish, traced
from workset_monitor.sentinels import plan
from workset_monitor.settings import settings
from workset_monitor.store import workset_from_image

metrics = function_metrics()

processor = BatchProcessor(event_type=EventType.DynamoDBStreams)
_bucket: WorksetBucket | None = None


def bucket() -> WorksetBucket:
    global _bucket
    if _bucket is None:
        _bucket = WorksetBucket(settings().bucket)
    return _bucket


def record_handler(record: DynamoDBRecord) -> None:
    raw = record.raw_event.get("dynamodb", {})
    if "NewImage" not in raw:
        return  # a removal: the folder is left as it is

    old = workset_from_image(raw["OldImage"]) if "OldImage" in raw else None
    new = workset_from_image(raw["NewImage"])
    with log_keys(correlation_id=record.event_id, workset_id=new.workset_id):
        mirror(old, new)


def mirror(old: Workset | None, new: Workset) -> None:
    """Write the sentinels of one change into the folder, then publish what the change measures (once the record
    is done, so a record retried after a failed write is counted once)."""
    sentinels = plan(old, new)
    if not sentinels.empty:
        bucket().apply(new.folder, sentinels)
        metrics.add_metric(name="SentinelsMirrored", unit="Count", value=1)
        logger.info("sentinels mirrored", state=new.state, put=sorted(sentinels.put), removed=sorted(sentinels.remove))

    publish(measures.change(old, new))


@metrics.log_metrics
@traced
@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)
