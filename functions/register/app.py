"""Register function: a sentinel dropped into a workset folder becomes a registered workset.

Triggered by S3 `ObjectCreated` on `*/daylily.ready` and `*/daylily.ignore` under the workset prefix.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote_plus

from aws_lambda_powertools.utilities.data_classes import S3Event, event_source
from aws_lambda_powertools.utilities.typing import LambdaContext

from workset_monitor.bucket import WorksetBucket
from workset_monitor.layout import TRIGGER_SENTINELS, parse_sentinel_key, sentinel_key_problem
from workset_monitor.observability import logger, metrics
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


@metrics.log_metrics
@logger.inject_lambda_context(clear_state=True)
@event_source(data_class=S3Event)
def lambda_handler(event: S3Event, context: LambdaContext) -> dict[str, Any]:
    outcomes: dict[str, str] = {}
    for record in event.records:
        key = unquote_plus(record.s3.get_object.key)
        request_id = (record.get("responseElements") or {}).get("x-amz-request-id")
        logger.append_keys(s3_request_id=request_id, s3_key=key)

        sentinel = parse_sentinel_key(key, settings().prefix)
        if sentinel is None or sentinel.sentinel not in TRIGGER_SENTINELS:
            # A sentinel nested deeper than one folder, or in a folder whose name cannot be an id, is not a workset.
            problem = sentinel_key_problem(key, settings().prefix)
            logger.warning("not a sentinel of a workset folder, skipped", reason=problem)
            continue
        if record.s3.bucket.name != settings().bucket:
            logger.warning("event from another bucket, skipped", bucket=record.s3.bucket.name)
            continue

        logger.append_keys(workset_id=sentinel.workset_id)
        s3_object = record.s3.get_object
        # The sequencer orders events of one key; a redelivered event carries the same one.
        event_identity = s3_object.get("sequencer") or s3_object.version_id
        registration = registrar().on_sentinel(sentinel, event_identity)
        metrics.add_metric(name=f"Registration_{registration.outcome}", unit="Count", value=1)
        outcomes[sentinel.workset_id] = registration.outcome.value

    return {"outcomes": outcomes}
