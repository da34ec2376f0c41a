"""The driver of the local stack: what AWS does around the functions, done by threads of this process.

For each event of a driven function in the template:

- `S3`: the bucket notifies an extra local SQS queue (same event names, same filter rules); `S3NotificationPump`
  polls it and invokes the function with the records in Lambda's shape and the key encoded as AWS encodes it.
- `DynamoDB`: `StreamPump` reads the table's stream shard by shard, applies the event's `FilterCriteria`, batches,
  invokes, honours `ReportBatchItemFailures` and `MaximumRetryAttempts`, and sends what it gives up on to the
  `OnFailure` destination.
- `Schedule` / `ScheduleV2`: `SchedulePump` invokes the function every few seconds (a local setting).
- `Api`: `local.apigateway.ApiServer` serves HTTP.

A pump logs and survives every error of a poll; a handler's exception is the invocation's outcome, never the pump's.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import threading
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote_plus, unquote_plus

from local.apigateway import IMPLICIT_API_STAGE, ApiRoute, ApiServer, gateway_responses, requires_iam
from local.observability import logger
from local.runtime import FunctionRunner, Invocation
from local.template import API, ClientFactory, EventSource, Template

NOTIFICATIONS_QUEUE_SUFFIX = "-local-s3-notifications"
SCHEDULE_TYPES = ("Schedule", "ScheduleV2")
DRIVEN_TYPES = ("S3", "DynamoDB", "Api", *SCHEDULE_TYPES)
FILTER_OPERATORS = ("prefix", "suffix", "exists", "anything-but")


# --- S3 notifications ------------------------------------------------------------------------------------------------


def aws_s3_key(key: str) -> str:
    """An object key as AWS writes it into an event: form-encoded (space as '+', UTF-8 percent-encoded), '/' kept.

    Limitations:
        AWS does not document its exact set of unencoded characters; here they are letters, digits, "_.-~" and "/".
    """
    return quote_plus(key, safe="/")


def s3_key_matches(encoded_key: str, rules: Sequence[tuple[str, str]]) -> bool:
    """Whether a key passes the prefix and suffix rules of a notification (rule names are case-insensitive).

    S3 compares the rules with the URL-encoded key: its documentation asks for '+' where a rule has a space.
    """
    for name, value in rules:
        if name.lower() == "prefix" and not encoded_key.startswith(value):
            return False
        if name.lower() == "suffix" and not encoded_key.endswith(value):
            return False
    return True


def aws_s3_record(record: Mapping[str, Any], *, message_id: str) -> dict[str, Any]:
    """A record of moto's S3 event completed into what AWS sends: encoded key, UTC time, identities, sequencer."""
    event = copy.deepcopy(dict(record))
    s3_object = event["s3"]["object"]

    # NOTE: moto encodes '/' as %2F (AWS keeps it); decoding first makes this right whatever moto does.
    s3_object["key"] = aws_s3_key(unquote_plus(s3_object["key"]))

    # NOTE: moto writes local time without a zone and with microseconds; AWS writes UTC milliseconds with a 'Z'.
    moment = _parse_moto_time(event["eventTime"])
    event["eventTime"] = moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"

    # NOTE: moto leaves these out; the values are placeholders of AWS's shape, stable for one event.
    request_id = hashlib.sha256(message_id.encode()).hexdigest()[:16].upper()
    event.setdefault("userIdentity", {"principalId": "AWS:LOCALSTACKPRINCIPAL"})
    event.setdefault("requestParameters", {"sourceIPAddress": "127.0.0.1"})
    event.setdefault("responseElements", {"x-amz-request-id": request_id, "x-amz-id-2": f"local/{request_id}"})
    event["s3"]["bucket"].setdefault("ownerIdentity", {"principalId": "LOCALOWNER"})
    s3_object.setdefault("sequencer", f"{int(moment.timestamp() * 1_000_000):018X}")
    return dict(event)


def _parse_moto_time(text: str) -> datetime:
    """moto's event time; a time without a zone is the local time of this machine."""
    try:
        return datetime.fromisoformat(text).astimezone(UTC)
    except ValueError:
        return datetime.now(UTC)


@dataclass(frozen=True)
class S3Route:
    """One `S3` event of a function: the bucket notification that stands for it, and the function it invokes."""

    configuration_id: str
    bucket: str
    events: tuple[str, ...]
    rules: tuple[tuple[str, str], ...]
    runner: FunctionRunner

    @classmethod
    def from_event(cls, runner: FunctionRunner, event: EventSource) -> S3Route:
        properties = event.properties
        events = properties["Events"]
        rules = properties.get("Filter", {}).get("S3Key", {}).get("Rules", [])
        return cls(
            configuration_id=f"{runner.spec.logical_id}-{event.name}",
            bucket=str(properties["Bucket"]),
            events=tuple([events] if isinstance(events, str) else events),
            rules=tuple((str(rule["Name"]), str(rule["Value"])) for rule in rules),
            runner=runner,
        )

    def queue_configuration(self, queue_arn: str) -> dict[str, Any]:
        configuration: dict[str, Any] = {
            "Id": self.configuration_id,
            "QueueArn": queue_arn,
            "Events": list(self.events),
        }
        if self.rules:
            # NOTE: moto refuses "Prefix"/"Suffix" (S3 takes any case), so the names go down lowercased.
            rules = [{"Name": name.lower(), "Value": value} for name, value in self.rules]
            configuration["Filter"] = {"Key": {"FilterRules": rules}}
        return configuration


class _Pump(threading.Thread):
    """A daemon thread that calls `poll` every `interval` seconds until stopped, surviving any error of a poll."""

    def __init__(self, name: str, interval: float, stop: threading.Event) -> None:
        super().__init__(name=name, daemon=True)
        self.interval = interval
        self.stopping = stop

    def run(self) -> None:
        while not self.stopping.wait(self.interval):
            # A pump outlives any error of one poll (the emulator stopping, a malformed message): it logs it.
            try:
                self.poll()
            except Exception:  # noqa: BLE001
                logger.exception("poll failed", pump=self.name)

    def poll(self) -> None:
        raise NotImplementedError


class S3NotificationPump(_Pump):
    """Delivers the S3 events that moto sends to the local notifications queue to the functions they are for."""

    def __init__(self, routes: Sequence[S3Route], *, client: ClientFactory, queue_name: str, **pump: Any) -> None:
        super().__init__("local-s3-notifications", **pump)
        self.routes = {(route.bucket, route.configuration_id): route for route in routes}
        self.s3 = client("s3")
        self.sqs = client("sqs")
        self.queue_name = queue_name
        self.queue_url = ""

    def configure(self) -> None:
        """Create the queue and point every bucket's notifications at it (this replaces a bucket's own).

        Limitations:
            a bucket's own `NotificationConfiguration` in the template is replaced by the functions' events.
        """
        # Invisible for the longest time SQS allows: a slow handler must not see its event delivered twice.
        attributes = {"VisibilityTimeout": "43200"}
        self.queue_url = self.sqs.create_queue(QueueName=self.queue_name, Attributes=attributes)["QueueUrl"]
        attributes = self.sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=["QueueArn"])["Attributes"]

        by_bucket: dict[str, list[S3Route]] = {}
        for route in self.routes.values():
            by_bucket.setdefault(route.bucket, []).append(route)

        for bucket, routes in by_bucket.items():
            configurations = [route.queue_configuration(attributes["QueueArn"]) for route in routes]
            self.s3.put_bucket_notification_configuration(
                Bucket=bucket, NotificationConfiguration={"QueueConfigurations": configurations}
            )
            logger.info("bucket notifications configured", bucket=bucket, routes=[r.configuration_id for r in routes])

    def poll(self) -> None:
        while not self.stopping.is_set():
            messages = self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10).get("Messages", [])
            if not messages:
                return
            for message in messages:
                self._deliver(message)
                self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])

    def _deliver(self, message: Mapping[str, Any]) -> None:
        body = json.loads(message["Body"])
        if body.get("Event") == "s3:TestEvent":
            return

        for raw in body.get("Records", []):
            route = self.routes.get((raw["s3"]["bucket"]["name"], raw["s3"]["configurationId"]))
            if route is None:
                logger.warning("s3 event for no route", configuration_id=raw["s3"]["configurationId"])
                continue
            record = aws_s3_record(raw, message_id=message["MessageId"])
            if not s3_key_matches(record["s3"]["object"]["key"], route.rules):
                logger.info("s3 event filtered out", key=record["s3"]["object"]["key"], route=route.configuration_id)
                continue
            route.runner.invoke_async({"Records": [record]}, trigger=f"s3 {route.configuration_id}")


# --- DynamoDB streams ------------------------------------------------------------------------------------------------


class FilterPatternError(ValueError):
    """A FilterCriteria pattern uses a rule the local stack does not evaluate."""


def matches_pattern(pattern: Mapping[str, Any], event: Any) -> bool:
    """EventBridge-style content filtering as Lambda applies it to a record.

    A pattern is nested JSON whose leaves are lists of allowed values: exact values, `{"prefix": ...}`,
    `{"suffix": ...}`, `{"exists": bool}` and `{"anything-but": [...]}`. Every key of the pattern must match.

    Limitations:
        numeric ranges, `equals-ignore-case`, `wildcard` and `$or` are not evaluated; they raise FilterPatternError.
    """
    if not isinstance(event, Mapping):
        return False
    for key, expected in pattern.items():
        if isinstance(expected, Mapping):
            if not matches_pattern(expected, event.get(key)):
                return False
        elif isinstance(expected, list):
            if not _leaf_matches(expected, key in event, event.get(key)):
                return False
        else:
            raise FilterPatternError(f"pattern value at {key!r} must be an object or an array")
    return True


def check_pattern(pattern: Any, path: str = "") -> None:
    """Raise FilterPatternError now for a pattern `matches_pattern` could not evaluate, rather than on a record."""
    if not isinstance(pattern, Mapping):
        raise FilterPatternError(f"pattern {path or '(top)'} must be an object")
    for key, expected in pattern.items():
        if isinstance(expected, Mapping):
            check_pattern(expected, f"{path}.{key}")
        elif not isinstance(expected, list):
            raise FilterPatternError(f"pattern value at {path}.{key} must be an object or an array")
        else:
            for rule in expected:
                if isinstance(rule, Mapping) and (len(rule) != 1 or next(iter(rule)) not in FILTER_OPERATORS):
                    raise FilterPatternError(f"filter rule {dict(rule)} at {path}.{key} is not evaluated locally")


def _leaf_matches(rules: list[Any], present: bool, value: Any) -> bool:
    values = value if isinstance(value, list) else [value]
    for rule in rules:
        if not isinstance(rule, Mapping):
            if present and rule in values:
                return True
            continue

        (operator, argument), *_ = rule.items()
        if operator == "exists":
            if bool(argument) == present:
                return True
        elif not present:
            continue
        elif operator == "prefix":
            if any(isinstance(item, str) and item.startswith(argument) for item in values):
                return True
        elif operator == "suffix":
            if any(isinstance(item, str) and item.endswith(argument) for item in values):
                return True
        elif operator == "anything-but":
            excluded = argument if isinstance(argument, list) else [argument]
            if all(item not in excluded for item in values):
                return True
        else:
            raise FilterPatternError(f"filter rule {operator!r} is not evaluated locally")
    return False


def lambda_stream_record(raw: Mapping[str, Any], *, stream_arn: str, region: str) -> dict[str, Any]:
    """A DynamoDB Streams record (as boto3 parsed it) in the shape Lambda delivers it."""
    return {
        "eventID": raw["eventID"],
        "eventName": raw["eventName"],
        # NOTE: moto says "1.0" and hard-codes us-east-1; Lambda delivers "1.1" and the stream's region.
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": region,
        "dynamodb": _wire(raw["dynamodb"]),
        "eventSourceARN": stream_arn,
    }


def _wire(value: Any) -> Any:
    """boto3's parsed values back into the event's JSON: binary as base64 text, times as epoch seconds.

    DynamoDB rounds ApproximateCreationDateTime down to the second, so the seconds are whole.
    """
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, Mapping):
        return {key: _wire(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_wire(item) for item in value]
    if isinstance(value, datetime):
        return int(value.timestamp())
    return value


@dataclass
class _Shard:
    shard_id: str
    iterator: str | None
    pending: list[dict[str, Any]] = field(default_factory=list)
    failed_sequence: str | None = None
    attempts: int = 0


class StreamPump(_Pump):
    """An event source mapping of a DynamoDB stream to a function, polled by this thread.

    Limitations:
        BisectBatchOnFunctionError, MaximumBatchingWindowInSeconds, MaximumRecordAgeInSeconds, ParallelizationFactor
        and TumblingWindowInSeconds are not emulated: a batch is sent as soon as it is read, whole, one at a time
        per shard; retries follow on the next poll instead of after Lambda's backoff.
    """

    def __init__(
        self, runner: FunctionRunner, event: EventSource, *, client: ClientFactory, region: str, **pump: Any
    ) -> None:
        super().__init__(f"local-stream-{runner.spec.logical_id}-{event.name}", **pump)
        properties = event.properties
        self.runner = runner
        self.region = region
        self.stream_arn = str(properties["Stream"])
        self.starting_position = str(properties.get("StartingPosition", "LATEST"))
        self.batch_size = int(properties.get("BatchSize", 100))
        self.maximum_retries = int(properties.get("MaximumRetryAttempts", -1))
        self.report_item_failures = "ReportBatchItemFailures" in properties.get("FunctionResponseTypes", [])
        self.on_failure: Mapping[str, Any] = properties.get("DestinationConfig", {}).get("OnFailure", {})
        self.patterns = [
            json.loads(item["Pattern"]) if isinstance(item["Pattern"], str) else item["Pattern"]
            for item in properties.get("FilterCriteria", {}).get("Filters", [])
        ]
        for pattern in self.patterns:
            check_pattern(pattern)
        self.streams = client("dynamodbstreams")
        self.sqs = client("sqs")
        self.sns = client("sns")
        self.shards: dict[str, _Shard] = {}
        self._discovered = False

    def poll(self) -> None:
        self._discover()
        for shard in list(self.shards.values()):
            self._read(shard)
            self._deliver(shard)

    def _discover(self) -> None:
        """Start reading every shard not seen yet: the first ones at StartingPosition, later ones from their start."""
        shards: list[Mapping[str, Any]] = []
        request: dict[str, Any] = {"StreamArn": self.stream_arn}
        while True:
            description = self.streams.describe_stream(**request)["StreamDescription"]
            shards += description.get("Shards", [])
            if not description.get("LastEvaluatedShardId"):
                break
            request["ExclusiveStartShardId"] = description["LastEvaluatedShardId"]

        for shard in shards:
            shard_id = shard["ShardId"]
            if shard_id in self.shards:
                continue
            position = self.starting_position if not self._discovered else "TRIM_HORIZON"
            iterator = self.streams.get_shard_iterator(
                StreamArn=self.stream_arn, ShardId=shard_id, ShardIteratorType=position
            )["ShardIterator"]
            self.shards[shard_id] = _Shard(shard_id, iterator)
            logger.info("stream shard found", pump=self.name, shard_id=shard_id, position=position)
        self._discovered = True

    def _read(self, shard: _Shard) -> None:
        while shard.iterator is not None and not self.stopping.is_set():
            response = self.streams.get_records(ShardIterator=shard.iterator, Limit=1000)
            shard.iterator = response.get("NextShardIterator")
            records = [
                lambda_stream_record(raw, stream_arn=self.stream_arn, region=self.region)
                for raw in response.get("Records", [])
            ]
            shard.pending += [record for record in records if self._wanted(record)]
            if not records:
                return

    def _wanted(self, record: Mapping[str, Any]) -> bool:
        """Lambda's event filtering: with filters, a record that matches none is dropped (and counts as done)."""
        if not self.patterns or any(matches_pattern(pattern, record) for pattern in self.patterns):
            return True
        logger.debug("stream record filtered out", pump=self.name, sequence=record["dynamodb"]["SequenceNumber"])
        return False

    def _deliver(self, shard: _Shard) -> None:
        """Send the shard's pending records in batches, in order; stop at a failure, to retry it on the next poll."""
        while shard.pending and not self.stopping.is_set():
            batch = shard.pending[: self.batch_size]
            invocation = self.runner.invoke({"Records": batch}, trigger=f"stream {self.name}")
            failed_at = self._first_failure(batch, invocation)
            if failed_at is None:
                del shard.pending[: len(batch)]
                shard.failed_sequence, shard.attempts = None, 0
                continue

            # Records before the first failure are done; the retry starts at the failed one.
            failed = batch[failed_at:]
            del shard.pending[:failed_at]
            sequence = failed[0]["dynamodb"]["SequenceNumber"]
            shard.attempts = shard.attempts + 1 if shard.failed_sequence == sequence else 1
            shard.failed_sequence = sequence
            if 0 <= self.maximum_retries < shard.attempts:
                self._give_up(shard, failed, invocation)
                del shard.pending[: len(failed)]
                shard.failed_sequence, shard.attempts = None, 0
                continue
            logger.info("stream batch will be retried", pump=self.name, sequence=sequence, attempt=shard.attempts)
            return

    def _first_failure(self, batch: list[dict[str, Any]], invocation: Invocation) -> int | None:
        """Index of the first record to retry, or None when the batch succeeded (Lambda's partial batch rules)."""
        if not invocation.ok:
            return 0
        result = invocation.result
        if not self.report_item_failures or not isinstance(result, Mapping):
            return None
        failures = result.get("batchItemFailures") or []
        if not failures:
            return None

        sequences = [record["dynamodb"]["SequenceNumber"] for record in batch]
        indexes = []
        for failure in failures:
            identifier = failure.get("itemIdentifier") if isinstance(failure, Mapping) else None
            if not identifier or identifier not in sequences:
                return 0  # an unusable identifier fails the whole batch, as on Lambda
            indexes.append(sequences.index(identifier))
        return min(indexes)

    def _give_up(self, shard: _Shard, failed: list[dict[str, Any]], invocation: Invocation) -> None:
        """Retries are exhausted: send the batch's description to the OnFailure destination, as Lambda does."""
        first, last = failed[0]["dynamodb"], failed[-1]["dynamodb"]
        response_context: dict[str, Any] = {"statusCode": 200, "executedVersion": "$LATEST"}
        if not invocation.ok:
            response_context["functionError"] = "Unhandled"
        document = {
            "requestContext": {
                "requestId": invocation.request_id,
                "functionArn": self.runner.spec.arn,
                "condition": "RetryAttemptsExhausted",
                "approximateInvokeCount": shard.attempts,
            },
            "responseContext": response_context,
            "version": "1.0",
            "timestamp": _iso_millis(datetime.now(UTC)),
            "DDBStreamBatchInfo": {
                "shardId": shard.shard_id,
                "startSequenceNumber": first["SequenceNumber"],
                "endSequenceNumber": last["SequenceNumber"],
                "approximateArrivalOfFirstRecord": _iso_seconds(first.get("ApproximateCreationDateTime")),
                "approximateArrivalOfLastRecord": _iso_seconds(last.get("ApproximateCreationDateTime")),
                "batchSize": len(failed),
                "streamArn": self.stream_arn,
            },
        }

        destination = str(self.on_failure.get("Destination", ""))
        arn = destination.split(":", 5)
        if len(arn) == 6 and arn[2] == "sqs":
            url = self.sqs.get_queue_url(QueueName=arn[5], QueueOwnerAWSAccountId=arn[4])["QueueUrl"]
            self.sqs.send_message(QueueUrl=url, MessageBody=json.dumps(document))
        elif len(arn) == 6 and arn[2] == "sns":
            self.sns.publish(TopicArn=destination, Message=json.dumps(document))
        logger.warning(
            "stream records dropped after retries",
            pump=self.name,
            start=first["SequenceNumber"],
            end=last["SequenceNumber"],
            destination=destination or None,
        )


def _iso_millis(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _iso_seconds(epoch: Any) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(float(epoch), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- schedules -------------------------------------------------------------------------------------------------------


def scheduled_event(event: EventSource, *, function_name: str, region: str, account_id: str) -> Any:
    """What a `Schedule` or `ScheduleV2` event hands the function: its `Input`, or a "Scheduled Event".

    Limitations:
        without an `Input`, EventBridge Scheduler (`ScheduleV2`) sends its own default notification; the local
        stack sends EventBridge's "Scheduled Event" shape for both types.
    """
    if "Input" in event.properties:
        return json.loads(event.properties["Input"])

    name = event.properties.get("Name") or f"{function_name}-{event.name}"
    if event.type == "ScheduleV2":
        resource = f"arn:aws:scheduler:{region}:{account_id}:schedule/default/{name}"
    else:
        resource = f"arn:aws:events:{region}:{account_id}:rule/{name}"
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": account_id,
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": region,
        "resources": [resource],
        "detail": {},
    }


class SchedulePump(_Pump):
    """Invokes every scheduled function every `interval` seconds (a local setting, not the template's rate).

    Limitations:
        ticks of one pump run one after the other; a tick that outlasts the interval delays the next.
    """

    def __init__(
        self, targets: Sequence[tuple[FunctionRunner, EventSource]], *, region: str, account_id: str, **pump: Any
    ) -> None:
        super().__init__("local-schedules", **pump)
        self.targets = list(targets)
        self.region = region
        self.account_id = account_id

    def poll(self) -> None:
        for runner, event in self.targets:
            payload = scheduled_event(
                event, function_name=runner.spec.function_name, region=self.region, account_id=self.account_id
            )
            runner.invoke_async(payload, trigger=f"schedule {runner.spec.logical_id}-{event.name}")


# --- the driver ------------------------------------------------------------------------------------------------------


class Driver:
    """Connects the driven functions to the emulator and to HTTP, as their template events say."""

    def __init__(
        self,
        template: Template,
        runners: Mapping[str, FunctionRunner],
        *,
        client: ClientFactory,
        host: str = "127.0.0.1",
        api_port: int = 3000,
        schedule_seconds: float = 5.0,
        poll_interval: float = 0.5,
    ) -> None:
        self.template = template
        self.runners = dict(runners)
        self.client = client
        self.host = host
        self.api_port = api_port
        self.schedule_seconds = schedule_seconds
        self.poll_interval = poll_interval
        self.stopping = threading.Event()
        self.pumps: list[_Pump] = []
        self.s3_pump: S3NotificationPump | None = None
        self.api: ApiServer | None = None

    @property
    def api_url(self) -> str | None:
        return self.api.url if self.api is not None else None

    def start(self) -> None:
        """Configure the notifications, start the pumps and the API server."""
        events = [(runner, event) for runner in self.runners.values() for event in runner.spec.events]
        for runner, event in events:
            if event.type not in DRIVEN_TYPES:
                logger.warning("event type not emulated", function=runner.spec.logical_id, type=event.type)
        pump = {"stop": self.stopping}

        s3_routes = [S3Route.from_event(runner, event) for runner, event in events if event.type == "S3"]
        if s3_routes:
            queue_name = (self.template.stack_name + NOTIFICATIONS_QUEUE_SUFFIX)[:80]
            self.s3_pump = S3NotificationPump(
                s3_routes, client=self.client, queue_name=queue_name, interval=self.poll_interval, **pump
            )
            self.s3_pump.configure()
            self.pumps.append(self.s3_pump)

        for runner, event in events:
            if event.type == "DynamoDB" and _enabled(event):
                stream = StreamPump(
                    runner, event, client=self.client, region=self.template.region, interval=self.poll_interval, **pump
                )
                self.pumps.append(stream)

        schedules = [(runner, event) for runner, event in events if event.type in SCHEDULE_TYPES and _enabled(event)]
        if schedules:
            self.pumps.append(
                SchedulePump(
                    schedules,
                    region=self.template.region,
                    account_id=self.template.account_id,
                    interval=self.schedule_seconds,
                    **pump,
                )
            )

        routes = [self._route(runner, event) for runner, event in events if event.type == "Api"]
        if routes:
            self.api = ApiServer(
                routes,
                host=self.host,
                port=self.api_port,
                account_id=self.template.account_id,
                region=self.template.region,
                responses=gateway_responses(self.template),
            )
            self.api.start()
        for thread in self.pumps:
            thread.start()
        logger.info("driver started", pumps=[thread.name for thread in self.pumps], api=self.api_url)

    def stop(self) -> None:
        self.stopping.set()
        if self.api is not None:
            self.api.stop()
        for thread in self.pumps:
            if thread.is_alive():
                thread.join(timeout=30)
        logger.info("driver stopped")

    def _route(self, runner: FunctionRunner, event: EventSource) -> ApiRoute:
        properties = event.properties
        api_id = str(properties.get("RestApiId", "")) or "implicit"
        stage = IMPLICIT_API_STAGE
        api_auth = self.template.resolve(self.template.document.get("Globals", {}).get("Api", {}).get("Auth", {}))
        for logical_id, resource in self.template.resources(API).items():
            if self.template.physical(logical_id).ref == api_id:
                stage = str(self.template.resolve(resource["Properties"]["StageName"]))
                api_auth = {**api_auth, **self.template.resolve(resource["Properties"].get("Auth", {}))}
        resource_path, method = str(properties["Path"]), str(properties["Method"])
        auth = requires_iam(api_auth, properties.get("Auth", {}), route=f"{method.upper()} {resource_path}")
        return ApiRoute.build(runner, resource=resource_path, method=method, stage=stage, api_id=api_id, auth=auth)


def _enabled(event: EventSource) -> bool:
    enabled = event.properties.get("Enabled", True)
    state = str(event.properties.get("State", "ENABLED")).upper()
    return enabled not in (False, "false", "False") and state != "DISABLED"
