"""Notify function: each state change on the workset table's stream becomes a notification on the channels that want it.

The channels come from `NOTIFY_CHANNELS` and are checked when the function starts: a configuration that cannot work
fails every invocation with a message naming the problem, instead of failing at the first notification. Records are
processed one by one; a record that some channel could not take is reported as a batch item failure, so Lambda
retries it, and each channel is given each event once (see `workset_monitor.notifier`). Each record's lines carry
its stream event id as the correlation id, and the workset's id.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import DynamoDBRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from workset_monitor.notifier import notifier_from_settings
from workset_monitor.observability import function_metrics, log_keys, logger, traced
from workset_monitor.settings import settings

metrics = function_metrics()

# Every failed record is reported, even when all failed: the response names them, and Lambda retries from the first.
processor = BatchProcessor(event_type=EventType.DynamoDBStreams, raise_on_entire_batch_failure=False)
notifier = notifier_from_settings(settings())


def record_handler(record: DynamoDBRecord) -> None:
    keys = record.raw_event.get("dynamodb", {}).get("Keys", {})
    workset_id = keys.get("pk", {}).get("S", "").removeprefix("WORKSET#") or None
    with log_keys(correlation_id=record.event_id, workset_id=workset_id):
        event = notifier.notify(record.raw_event)

    if event is not None:
        metrics.add_metric(name="Notifications", unit="Count", value=1)


@metrics.log_metrics
@traced
@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    notifier.begin_batch(context)
    try:
        return process_partial_response(
            event=event, record_handler=record_handler, processor=processor, context=context
        )
    finally:
        notifier.finish_batch()
