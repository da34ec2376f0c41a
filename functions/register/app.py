"""Register function: a sentinel dropped into a workset folder becomes a registered workset.

Triggered by S3 `ObjectCreated` on `*/daylily.ready` and `*/daylily.ignore` under the workset prefix.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote_plus

from aws_lambda_powertools.utilities.data_classes import S3Event, event_source
from aws_lambda_powertools.utilities.data_classes.s3_event import S3EventRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from workset_monitor import measures
from workset_monitor.bucket import WorksetBucket
from workset_monitor.layout import TRIGGER_SENTINELS, parse_sentinel_key, sentinel_key_problem
from workset_monitor.observability import log_keys, logger, publish, traced
from workset_monitor.registration import Registrar
from workset_monitor.settings import settings
from workset_monitor.store import WorksetStore

_registrar: Registrar | None = None


def registrar() -> Registrar:
    global _registrar
    if _registrar is None:
        config = settings()
        bucket = WorksetBucket(config.bucket)
        _registrar = Registrar(
            WorksetStore(config.table_name, retry_base_seconds=config.retry_base_seconds),
            bucket.snapshot,
            config.bucket,
        )
    return _registrar


def register(record: S3EventRecord) -> tuple[str, str] | None:
    """Register the workset whose sentinel the record announces; its id and the outcome, or None if it is none."""
    key = unquote_plus(record.s3.get_object.key)
    sentinel = parse_sentinel_key(key, settings().prefix)
    if sentinel is None or sentinel.sentinel not in TRIGGER_SENTINELS:
        # A sentinel nested deeper than one folder, or in a folder whose name cannot be an id, is not a workset.
        logger.warning(
            "not a sentinel of a workset folder, skipped", reason=sentinel_key_problem(key, settings().prefix)
        )
        return None
    if record.s3.bucket.name != settings().bucket:
        logger.warning("event from another bucket, skipped", bucket=record.s3.bucket.name)
        return None

    with log_keys(workset_id=sentinel.workset_id):
        s3_object = record.s3.get_object
        # The sequencer orders events of one key; a redelivered event carries the same one.
        registration = registrar().on_sentinel(sentinel, s3_object.get("sequencer") or s3_object.version_id)
        publish([measures.registration(registration.outcome.value)])
    return sentinel.workset_id, registration.outcome.value


@traced
@logger.inject_lambda_context(clear_state=True)
@event_source(data_class=S3Event)
def lambda_handler(event: S3Event, context: LambdaContext) -> dict[str, Any]:
    outcomes: dict[str, str] = {}
    for record in event.records:
        # The S3 request that wrote the sentinel follows the workset through this function's lines.
        request_id = (record.get("responseElements") or {}).get("x-amz-request-id")
        with log_keys(correlation_id=request_id, s3_key=unquote_plus(record.s3.get_object.key)):
            registered = register(record)
        if registered is not None:
            workset_id, outcome = registered
            outcomes[workset_id] = outcome

    return {"outcomes": outcomes}
