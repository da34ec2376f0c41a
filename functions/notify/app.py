"""Notify function: each state change on the workset table's stream becomes a notification on every channel.

Records are processed one by one; a record that fails is reported as a batch item failure, so Lambda retries it
(and what follows it in the shard) without blocking the records before it.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import DynamoDBRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from workset_monitor.channels.sns import SnsChannel
from workset_monitor.notifier import Notifier
from workset_monitor.observability import logger, metrics
from workset_monitor.settings import settings

processor = BatchProcessor(event_type=EventType.DynamoDBStreams)
_notifier: Notifier | None = None


def notifier() -> Notifier:
    global _notifier
    if _notifier is None:
        topic_arn = settings().topic_arn
        _notifier = Notifier([SnsChannel(topic_arn)] if topic_arn else [])
    return _notifier


def record_handler(record: DynamoDBRecord) -> None:
    raw = record.raw_event.get("dynamodb", {})
    keys = raw.get("Keys", {})
    logger.append_keys(
        stream_event_id=record.event_id, workset_id=keys.get("pk", {}).get("S", "").removeprefix("WORKSET#")
    )

    event = notifier().on_change(raw.get("OldImage"), raw.get("NewImage"))
    if event is not None:
        metrics.add_metric(name="Notifications", unit="Count", value=1)


@metrics.log_metrics
@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)
