"""The AWS emulator of the local stack: moto in server mode, in this process, with DynamoDB made atomic.

moto's server answers every request on its own thread, and its DynamoDB backend checks a condition and writes the
item as two separate steps: two conditional writes racing for one item can both win, which DynamoDB never allows.
`install_moto_patches` puts one process-wide re-entrant lock around every DynamoDB (and DynamoDB Streams) request, so
each operation, transactions included, runs alone as it would on DynamoDB. The same patch serves moto's in-process
`mock_aws`, because both modes dispatch requests through the same response classes.
"""

from __future__ import annotations

import functools
import logging
import socket
import threading
import urllib.request
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from moto.dynamodb.comparisons import get_filter_expression
from moto.dynamodb.exceptions import (
    MockValidationException,
    MultipleTransactionsException,
    TooManyTransactionsException,
    TransactionCanceledException,
    TransactWriteSingleOpException,
)
from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.responses import DynamoHandler
from moto.dynamodbstreams.responses import DynamoDBStreamsHandler
from moto.s3 import notifications as s3_notifications
from moto.server import ThreadedMotoServer

from local.observability import logger

if TYPE_CHECKING:
    from collections.abc import Callable

REGION = "us-east-1"
ACCOUNT_ID = "123456789012"
ACCESS_KEY_ID = "testing"
SECRET_ACCESS_KEY = "testing"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 4566

DYNAMODB_LOCK = threading.RLock()
"""Held for the whole of every DynamoDB and DynamoDB Streams request the emulator serves."""

_PATCHED_MARK = "_local_stack_patched"
_running_lock = threading.Lock()
_running: Emulator | None = None


def install_moto_patches() -> None:
    """Make moto keep DynamoDB's atomicity and add what S3 events lack; idempotent, for the server and `mock_aws`.

    - every DynamoDB and DynamoDB Streams request runs under `DYNAMODB_LOCK`;
    - S3 event records of a versioned bucket carry the object's `versionId`, as AWS's do;
    - TransactWriteItems checks every condition first and writes only when all hold, instead of moto's copy of the
      whole table before each transaction (which made every transaction's cost grow with the table).
    """
    for handler in (DynamoHandler, DynamoDBStreamsHandler):
        call_action = handler.call_action
        if not getattr(call_action, _PATCHED_MARK, False):
            handler.call_action = _serialized(call_action)  # type: ignore[method-assign]

    if not getattr(DynamoDBBackend.transact_write_items, _PATCHED_MARK, False):
        DynamoDBBackend.transact_write_items = _transact_write_items  # type: ignore[method-assign]

    if not getattr(s3_notifications._get_s3_event, _PATCHED_MARK, False):
        s3_notifications._get_s3_event = _with_version_id(s3_notifications._get_s3_event)


def _serialized(call_action: Callable[[Any], Any]) -> Callable[[Any], Any]:
    @functools.wraps(call_action)
    def locked(self: Any) -> Any:
        with DYNAMODB_LOCK:
            return call_action(self)

    setattr(locked, _PATCHED_MARK, True)
    return locked


def _transact_write_items(self: DynamoDBBackend, transact_items: list[dict[str, Any]]) -> None:
    """DynamoDB's TransactWriteItems: every condition is checked, then every write is made, or none is.

    It runs under `DYNAMODB_LOCK` (the request handler holds it), so nothing changes between the two phases.

    Limitations:
        a write that fails after all conditions held (an update expression DynamoDB would refuse at validation)
        leaves the writes before it in place; the product's transactions use Put and ConditionCheck only.
    """
    if len(transact_items) > 100:
        raise TooManyTransactionsException()

    targets: set[tuple[str, str]] = set()
    planned: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
    reasons: list[tuple[str | None, str | None, dict[str, Any] | None]] = []
    for transact_item in transact_items:
        if len(transact_item) > 1:
            raise TransactWriteSingleOpException
        op_type, op = next(iter(transact_item.items()))
        try:
            key = _transaction_key(self, op_type, op)
            target = (str(op["TableName"]), str(dict(sorted(key.items()))))
            if target in targets:
                raise MultipleTransactionsException()
            targets.add(target)

            current = self.get_item(op["TableName"], key)
            condition = op.get("ConditionExpression")
            names, values = op.get("ExpressionAttributeNames"), op.get("ExpressionAttributeValues")
            if condition is not None and not get_filter_expression(condition, names, values).expr(current):
                old = (
                    current.to_json()["Attributes"]
                    if current and op.get("ReturnValuesOnConditionCheckFailure") == "ALL_OLD"
                    else None
                )
                reasons.append(("ConditionalCheckFailed", "The conditional request failed", old))
                continue
        except MockValidationException:
            raise
        except Exception as exc:  # noqa: BLE001 - reported as this item's cancellation reason, as moto does
            reasons.append((type(exc).__name__, str(exc), None))
            continue
        reasons.append((None, None, None))
        planned.append((op_type, op, key))

    if any(code is not None for code, _, _ in reasons):
        raise TransactionCanceledException(reasons)

    for op_type, op, key in planned:
        table_name, names, values = (
            op["TableName"],
            op.get("ExpressionAttributeNames"),
            op.get("ExpressionAttributeValues"),
        )
        if op_type == "Put":
            self.put_item(table_name, op["Item"], expression_attribute_names=names, expression_attribute_values=values)
        elif op_type == "Delete":
            self.delete_item(table_name, key, expression_attribute_names=names, expression_attribute_values=values)
        elif op_type == "Update":
            self.update_item(
                table_name,
                key,
                update_expression=op["UpdateExpression"],
                expression_attribute_names=names or {},
                expression_attribute_values=values or {},
            )


setattr(_transact_write_items, _PATCHED_MARK, True)


def _transaction_key(backend: DynamoDBBackend, op_type: str, op: dict[str, Any]) -> dict[str, Any]:
    if op_type not in {"ConditionCheck", "Put", "Delete", "Update"}:
        raise ValueError(f"unsupported transaction operation {op_type}")
    if op_type != "Put":
        return dict(op["Key"])

    table = backend.get_table(op["TableName"])
    key = {table.hash_key_attr: op["Item"][table.hash_key_attr]}
    if table.range_key_attr is not None:
        key[table.range_key_attr] = op["Item"][table.range_key_attr]
    return key


def _with_version_id(get_s3_event: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    @functools.wraps(get_s3_event)
    def get_event(event_name: str, bucket: Any, key: Any, notification_id: str) -> dict[str, Any]:
        event = get_s3_event(event_name, bucket, key, notification_id)
        if bucket.is_versioned:
            for record in event["Records"]:
                record["s3"]["object"].setdefault("versionId", key.version_id)
        return event

    setattr(get_event, _PATCHED_MARK, True)
    return get_event


@dataclass
class Emulator:
    """A running moto server; `url` is the endpoint every AWS client of the local stack uses."""

    host: str
    port: int
    region: str = REGION
    account_id: str = ACCOUNT_ID
    _server: ThreadedMotoServer | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def client(self, service_name: str) -> Any:
        """A boto3 client of `service_name` bound to this emulator, with enough connections for many threads."""
        return boto3.client(
            service_name,  # type: ignore[call-overload]
            endpoint_url=self.url,
            region_name=self.region,
            aws_access_key_id=ACCESS_KEY_ID,
            aws_secret_access_key=SECRET_ACCESS_KEY,
            config=Config(max_pool_connections=64, retries={"mode": "standard", "max_attempts": 3}),
        )

    def environment(self) -> dict[str, str]:
        """The variables that point boto3 (which honours AWS_ENDPOINT_URL) and the AWS CLI at this emulator."""
        return {
            "AWS_ENDPOINT_URL": self.url,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
        }

    def stop(self) -> None:
        """Stop the server; its state is dropped with it."""
        global _running

        if self._server is not None:
            self._server.stop()
            self._server = None
        with _running_lock:
            if _running is self:
                _running = None
        logger.info("emulator stopped", url=self.url)

    def __enter__(self) -> Emulator:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def start_emulator(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> Emulator:
    """Start moto's server on `host`:`port` (0 picks a free port) with the patches installed and no state.

    Limitations:
        moto keeps its state in module globals, so the process holds one emulator at a time: starting a second
        one while the first runs raises RuntimeError instead of silently sharing (and resetting) its state.
    """
    global _running

    install_moto_patches()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)

    with _running_lock:
        if _running is not None:
            raise RuntimeError(f"an emulator already runs in this process at {_running.url}")

        if port:
            _ensure_free(host, port)
        server = ThreadedMotoServer(ip_address=host, port=port, verbose=False)
        server.start()
        emulator = Emulator(host=host, port=server.get_host_and_port()[1], _server=server)
        _running = emulator

    _reset_state(emulator.url)
    logger.info("emulator started", url=emulator.url, region=emulator.region)
    return emulator


def _ensure_free(host: str, port: int) -> None:
    """Fail now when the port is taken: moto's server would die in its thread and leave `start` waiting forever."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise OSError(f"cannot start the emulator: {host}:{port} is in use") from exc


def _reset_state(url: str) -> None:
    """Drop whatever an earlier emulator or `mock_aws` of this process left in moto's backends."""
    request = urllib.request.Request(f"{url}/moto-api/reset", method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()
