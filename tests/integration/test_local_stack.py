"""The local stack against its promises: DynamoDB stays atomic under the emulator's threads, the template's resources
exist as declared, and the driver delivers S3 events, stream records, schedules and API requests as AWS would.

One stack serves the module; its functions are test handlers (the real ones are tested end to end), which record
what they receive and behave as each test needs.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote_plus, urlsplit

import boto3
import pytest
from botocore.config import Config
from moto.dynamodb import models as dynamodb_models
from moto.dynamodb.responses import DynamoHandler

from local.driver import FilterPatternError, aws_s3_key, check_pattern, matches_pattern
from local.emulator import ACCESS_KEY_ID, SECRET_ACCESS_KEY, start_emulator
from local.runtime import HandlerLoader, function_environment
from local.sigv4 import sign
from local.stack import LocalStack
from local.template import FunctionSpec, TemplateError

pytestmark = pytest.mark.integration

T = TypeVar("T")
PREFIX = "daylily_monitoring/active_worksets/"
POISON = "WORKSET#ws-poison"
BOOM = "WORKSET#ws-boom"


class Recorder:
    """Test handlers for the template's functions: each records its events; Notify and Api fail on demand."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: dict[str, list[Any]] = defaultdict(list)

    def record(self, function_id: str, event: Any) -> None:
        with self.lock:
            self.events[function_id].append(event)

    def seen(self, function_id: str) -> list[Any]:
        with self.lock:
            return list(self.events[function_id])

    def handlers(self) -> dict[str, Callable[[Any, Any], Any]]:
        return {
            "RegisterFunction": self.register,
            "NotifyFunction": self.notify,
            "ScheduleFunction": self.schedule,
            "ApiReadFunction": self.api,
            "ApiWriteFunction": self.api,
        }

    def register(self, event: Any, context: Any) -> dict[str, Any]:
        self.record("RegisterFunction", event)
        return {"outcomes": {}}

    def schedule(self, event: Any, context: Any) -> None:
        self.record("ScheduleFunction", {"event": event, "remaining_ms": context.get_remaining_time_in_millis()})

    def notify(self, event: Any, context: Any) -> dict[str, Any]:
        self.record("NotifyFunction", event)
        keys = [record["dynamodb"]["Keys"]["pk"]["S"] for record in event["Records"]]
        if BOOM in keys:
            raise RuntimeError("the notify handler failed")
        failures = [
            {"itemIdentifier": record["dynamodb"]["SequenceNumber"]}
            for record in event["Records"]
            if record["dynamodb"]["Keys"]["pk"]["S"] == POISON
        ]
        return {"batchItemFailures": failures}

    def api(self, event: Any, context: Any) -> dict[str, Any]:
        self.record("Api", event)
        if event["path"].endswith("/boom"):
            raise RuntimeError("the api handler failed")
        return {
            "statusCode": 201,
            "headers": {"Content-Type": "application/json", "X-Reply": "yes"},
            "multiValueHeaders": {"Set-Cookie": ["a=1", "b=2"]},
            "body": json.dumps({"function": context.function_name, "path": event["path"]}),
            "isBase64Encoded": False,
        }


@pytest.fixture(scope="module")
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture(scope="module")
def stack(recorder: Recorder) -> Iterator[LocalStack]:
    with LocalStack(
        emulator_port=0, api_port=0, poll_interval=0.05, schedule_seconds=0.2, handlers=recorder.handlers()
    ) as running:
        yield running


def eventually(probe: Callable[[], T | None], *, timeout: float = 10.0, what: str = "the condition") -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


# --- the emulator keeps DynamoDB's promises ---------------------------------------------------------------------------


def _race_client(stack: LocalStack) -> Any:
    # One attempt only: a retried conditional write would blur who won.
    return boto3.client(
        "dynamodb",
        endpoint_url=stack.emulator_url,
        region_name=stack.region,
        aws_access_key_id=ACCESS_KEY_ID,
        aws_secret_access_key=SECRET_ACCESS_KEY,
        config=Config(max_pool_connections=64, retries={"total_max_attempts": 1}),
    )


def _race(client: Any, table: str, *, threads: int, rounds: int) -> list[int]:
    """Winners per round of `threads` writers racing one conditional update (version 0 -> 1) of one item."""
    winners_per_round = []
    for round_number in range(rounds):
        key = {"pk": {"S": f"race-{round_number}"}}
        client.put_item(TableName=table, Item={**key, "version": {"N": "0"}})
        barrier = threading.Barrier(threads)
        winners: list[int] = []

        def write(
            writer: int, key: dict[str, Any] = key, barrier: threading.Barrier = barrier, winners: list[int] = winners
        ) -> None:
            barrier.wait()
            try:
                client.update_item(
                    TableName=table,
                    Key=key,
                    UpdateExpression="SET version = :next, winner = :writer",
                    ConditionExpression="version = :expected",
                    ExpressionAttributeValues={
                        ":expected": {"N": "0"},
                        ":next": {"N": "1"},
                        ":writer": {"N": str(writer)},
                    },
                )
                winners.append(writer)
            except client.exceptions.ConditionalCheckFailedException:
                pass

        workers = [threading.Thread(target=write, args=(writer,)) for writer in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        winners_per_round.append(len(winners))
    return winners_per_round


def _race_table(client: Any, name: str) -> str:
    client.create_table(
        TableName=name,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
    )
    return name


def test_a_conditional_update_raced_by_32_threads_has_one_winner_in_each_of_50_rounds(stack: LocalStack) -> None:
    client = _race_client(stack)
    table = _race_table(client, "race-32x50")

    winners = _race(client, table, threads=32, rounds=50)

    assert winners == [1] * 50


class _PausingCondition:
    """A condition that, once it passed, waits before the write: every racer passes it before anyone writes."""

    def __init__(self, operation: Any, pause: float) -> None:
        self.operation = operation
        self.pause = pause

    def expr(self, item: Any) -> bool:
        passed = bool(self.operation.expr(item))
        if passed:
            time.sleep(self.pause)
        return passed


class _PausingParser:
    def __init__(self, parser: Any, pause: float) -> None:
        self.parser = parser
        self.pause = pause

    def parse(self) -> _PausingCondition:
        return _PausingCondition(self.parser.parse(), self.pause)


def _widen_race_window(monkeypatch: pytest.MonkeyPatch, pause: float) -> None:
    original = dynamodb_models.create_condition_expression_parser  # type: ignore[attr-defined]

    def create_parser(expression: str | None, *args: Any, **kwargs: Any) -> Any:
        parser = original(expression, *args, **kwargs)
        return parser if expression is None else _PausingParser(parser, pause)

    monkeypatch.setattr(dynamodb_models, "create_condition_expression_parser", create_parser)


def test_the_lock_is_what_keeps_a_widened_race_to_one_winner(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a race window made wide (a passed condition waits 0.3 s before its write), so the race is no longer luck
    client = _race_client(stack)
    table = _race_table(client, "race-widened")
    _widen_race_window(monkeypatch, pause=0.3)

    # WHEN 8 writers race with the emulator's lock, and again with moto's own unlocked request handling
    with_lock = _race(client, table, threads=8, rounds=2)
    unlocked = DynamoHandler.call_action.__wrapped__  # type: ignore[attr-defined]
    monkeypatch.setattr(DynamoHandler, "call_action", unlocked)
    without_lock = _race(client, table, threads=8, rounds=2)

    # THEN the lock leaves one winner per round; without it several writers win the same round
    assert with_lock == [1, 1]
    assert max(without_lock) > 1


def test_the_same_patch_makes_mock_aws_atomic(tmp_path: Path) -> None:
    # moto's in-process mock resets the backends the running stack shares, so it runs in a process of its own.
    script = tmp_path / "race.py"
    script.write_text(
        textwrap.dedent(
            """
            import json, threading, time
            import boto3
            from moto import mock_aws
            from moto.dynamodb import models
            from local.emulator import install_moto_patches

            install_moto_patches()
            original = models.create_condition_expression_parser

            class Pausing:
                def __init__(self, operation):
                    self.operation = operation

                def expr(self, item):
                    passed = bool(self.operation.expr(item))
                    if passed:
                        time.sleep(0.2)
                    return passed

            def create_parser(expression, *args, **kwargs):
                parser = original(expression, *args, **kwargs)
                if expression is not None:
                    parse = parser.parse
                    parser.parse = lambda: Pausing(parse())
                return parser

            models.create_condition_expression_parser = create_parser
            with mock_aws():
                client = boto3.client("dynamodb", region_name="us-east-1")
                client.create_table(
                    TableName="t",
                    BillingMode="PAY_PER_REQUEST",
                    AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                    KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                )
                client.put_item(TableName="t", Item={"pk": {"S": "x"}, "version": {"N": "0"}})
                barrier, winners = threading.Barrier(8), []

                def write():
                    barrier.wait()
                    try:
                        client.update_item(
                            TableName="t",
                            Key={"pk": {"S": "x"}},
                            UpdateExpression="SET version = :next",
                            ConditionExpression="version = :expected",
                            ExpressionAttributeValues={":expected": {"N": "0"}, ":next": {"N": "1"}},
                        )
                        winners.append(1)
                    except client.exceptions.ConditionalCheckFailedException:
                        pass

                workers = [threading.Thread(target=write) for _ in range(8)]
                for worker in workers:
                    worker.start()
                for worker in workers:
                    worker.join()
            print(json.dumps(len(winners)))
            """
        )
    )
    root = Path(__file__).resolve().parents[2]
    environment = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "PYTHONPATH": os.pathsep.join([str(root), str(root / "layers" / "common"), os.environ.get("PYTHONPATH", "")]),
    }
    environment.pop("AWS_ENDPOINT_URL", None)

    finished = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=environment, timeout=120, check=False
    )

    assert finished.returncode == 0, finished.stderr
    assert json.loads(finished.stdout.strip().splitlines()[-1]) == 1


def test_one_emulator_per_process(stack: LocalStack) -> None:
    with pytest.raises(RuntimeError, match="already runs"):
        start_emulator(port=0)


# --- the template's resources -----------------------------------------------------------------------------------------


def test_the_resources_are_the_templates(stack: LocalStack) -> None:
    declared = stack.template.resources()
    table_properties = declared["WorksetTable"]["Properties"]
    dynamodb, s3, sns, sqs = (stack.client(name) for name in ("dynamodb", "s3", "sns", "sqs"))

    table = dynamodb.describe_table(TableName=stack.resources["WorksetTable"])["Table"]
    assert table["TableName"] == "workset-monitor-local-worksets"
    assert table["KeySchema"] == table_properties["KeySchema"]
    assert sorted(table["AttributeDefinitions"], key=str) == sorted(table_properties["AttributeDefinitions"], key=str)
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    indexes = {index["IndexName"]: index["KeySchema"] for index in table["GlobalSecondaryIndexes"]}
    declared_indexes = {index["IndexName"]: index["KeySchema"] for index in table_properties["GlobalSecondaryIndexes"]}
    assert indexes == declared_indexes
    assert set(indexes) == {"by-state", "by-cluster", "by-entity", "by-retry"}
    assert table["StreamSpecification"] == {"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"}
    assert table["LatestStreamArn"] == stack.template.physical("WorksetTable").attributes["StreamArn"]
    assert table["SSEDescription"]["SSEType"] == "KMS"

    bucket = stack.resources["WorksetBucket"]
    assert bucket == "workset-monitor-local-123456789012-us-east-1"
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    rule = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"

    topic = sns.get_topic_attributes(TopicArn=stack.resources["WorksetTopic"])["Attributes"]
    assert topic["TopicArn"].endswith(":workset-monitor-local-events")
    assert topic["KmsMasterKeyId"] == stack.template.physical("WorksetTopicKey").ref  # the stack's key, not created

    queue = sqs.get_queue_attributes(QueueUrl=stack.resources["NotifyFailureQueue"], AttributeNames=["All"])
    assert queue["Attributes"]["QueueArn"].endswith(":workset-monitor-local-notify-failures")
    assert queue["Attributes"]["MessageRetentionPeriod"] == "1209600"


def test_the_functions_share_the_templates_environment(stack: LocalStack) -> None:
    functions = {spec.logical_id: spec for spec in stack.template.functions()}

    environment = functions["ApiReadFunction"].environment

    assert environment["WORKSET_TABLE"] == stack.resources["WorksetTable"]
    assert environment["WORKSET_BUCKET"] == stack.resources["WorksetBucket"]
    assert environment["WORKSET_TOPIC_ARN"] == stack.resources["WorksetTopic"]
    assert environment["WORKSET_PREFIX"] == PREFIX
    assert environment["LEASE_SECONDS"] == "900"
    assert os.environ["WORKSET_TABLE"] == stack.resources["WorksetTable"]
    assert os.environ["AWS_ENDPOINT_URL"] == stack.emulator_url
    assert functions["ScheduleFunction"].timeout == 60
    assert functions["NotifyFunction"].layers == (Path(stack.template.root / "layers" / "common").resolve(),)
    description = stack.describe()
    assert description["inbox_queue_url"] == stack.inbox_queue_urls["WorksetTopic"]
    assert description["outputs"]["ApiUrl"] == stack.api_url
    assert description["outputs"]["DashboardUrl"] == f"{stack.api_url}/dashboard"
    json.dumps(description)


def test_two_functions_disagreeing_on_a_variable_fail_loudly(tmp_path: Path) -> None:
    def spec(logical_id: str, table: str) -> FunctionSpec:
        return FunctionSpec(
            logical_id, logical_id, f"arn:{logical_id}", tmp_path, "app.handler", "python3.12", 3, 128,
            {"WORKSET_TABLE": table}, (), (),
        )  # fmt: skip

    assert function_environment([spec("A", "t"), spec("B", "t")]) == {"WORKSET_TABLE": "t"}
    with pytest.raises(TemplateError, match="WORKSET_TABLE"):
        function_environment([spec("A", "t"), spec("B", "other")])


def test_handlers_named_alike_load_as_modules_of_their_own(tmp_path: Path) -> None:
    # GIVEN two functions whose handlers are both app.py, importing a module of their layer
    layer = tmp_path / "layer"
    (layer / "shared_for_test").mkdir(parents=True)
    (layer / "shared_for_test" / "__init__.py").write_text("GREETING = 'hello'\n")
    specs = []
    for name in ("one", "two"):
        code = tmp_path / name
        code.mkdir()
        (code / "app.py").write_text(
            f"from shared_for_test import GREETING\n\ndef handler(event, context):\n    return GREETING + ' {name}'\n"
        )
        specs.append(
            FunctionSpec(name, name, f"arn:{name}", code, "app.handler", "python3.12", 3, 128, {}, (layer,), ())
        )

    # WHEN they are loaded, and unloaded
    loader = HandlerLoader()
    handlers = loader.load(specs)
    results = {name: handler({}, None) for name, handler in handlers.items()}
    loader.unload()

    # THEN each answers with its own code, and nothing of theirs stays imported
    assert results == {"one": "hello one", "two": "hello two"}
    assert "shared_for_test" not in sys.modules
    assert str(layer) not in sys.path


# --- S3 notifications -------------------------------------------------------------------------------------------------


def test_a_sentinel_reaches_register_with_its_key_encoded_as_aws_does(stack: LocalStack, recorder: Recorder) -> None:
    s3 = stack.client("s3")
    bucket = stack.resources["WorksetBucket"]
    folder = f"{PREFIX}my wörkset"

    # GIVEN objects that the template's filter rules refuse: not the sentinel, or outside the prefix
    s3.put_object(Bucket=bucket, Key=f"{folder}/stage_samples.tsv", Body=b"x")
    s3.put_object(Bucket=bucket, Key="elsewhere/my wörkset/daylily.ready", Body=b"x")

    # WHEN the ready sentinel is dropped into a folder with a space and a non-ASCII letter
    put = s3.put_object(Bucket=bucket, Key=f"{folder}/daylily.ready", Body=b"ready")

    # THEN register gets it alone, in Lambda's shape, with the key form-encoded and '/' kept
    event = eventually(lambda: next(iter(recorder.seen("RegisterFunction")), None), what="the s3 event")
    time.sleep(0.3)
    assert recorder.seen("RegisterFunction") == [event]
    (record,) = event["Records"]
    assert record["s3"]["object"]["key"] == "daylily_monitoring/active_worksets/my+w%C3%B6rkset/daylily.ready"
    assert unquote_plus(record["s3"]["object"]["key"]) == f"{folder}/daylily.ready"
    assert record["eventSource"] == "aws:s3"
    assert record["eventName"] == "ObjectCreated:Put"
    assert record["awsRegion"] == "us-east-1"
    assert record["eventTime"].endswith("Z")
    assert record["s3"]["bucket"]["name"] == bucket
    assert record["s3"]["bucket"]["arn"] == f"arn:aws:s3:::{bucket}"
    assert record["s3"]["configurationId"] == "RegisterFunction-ReadySentinel"
    assert record["s3"]["object"]["size"] == 5
    assert record["s3"]["object"]["versionId"] == put["VersionId"]
    assert record["s3"]["object"]["sequencer"]
    assert record["responseElements"]["x-amz-request-id"]


def test_the_ignore_sentinel_takes_its_own_route(stack: LocalStack, recorder: Recorder) -> None:
    before = len(recorder.seen("RegisterFunction"))

    stack.client("s3").put_object(Bucket=stack.resources["WorksetBucket"], Key=f"{PREFIX}ws+2/daylily.ignore", Body=b"")

    events = eventually(lambda: recorder.seen("RegisterFunction")[before:] or None, what="the ignore event")
    (record,) = events[0]["Records"]
    assert record["s3"]["configurationId"] == "RegisterFunction-IgnoreSentinel"
    assert record["s3"]["object"]["key"] == f"{PREFIX}ws%2B2/daylily.ignore"


def test_keys_are_encoded_as_in_s3_events() -> None:
    assert aws_s3_key("a b/c+d/é=1@x.txt") == "a+b/c%2Bd/%C3%A9%3D1%40x.txt"
    assert aws_s3_key("plain/key_with-safe.chars") == "plain/key_with-safe.chars"


# --- DynamoDB streams -------------------------------------------------------------------------------------------------


def _stream_records(recorder: Recorder) -> list[dict[str, Any]]:
    return [record for event in recorder.seen("NotifyFunction") for record in event["Records"]]


def _at_least(count: int, items: list[T]) -> list[T] | None:
    return items if len(items) >= count else None


def _records_of(recorder: Recorder, pk: str) -> list[dict[str, Any]]:
    return [record for record in _stream_records(recorder) if record["dynamodb"]["Keys"]["pk"]["S"] == pk]


def test_a_workset_change_reaches_notify_in_lambdas_shape(stack: LocalStack, recorder: Recorder) -> None:
    dynamodb = stack.client("dynamodb")
    table = stack.resources["WorksetTable"]
    key = {"pk": {"S": "WORKSET#ws-shape"}, "sk": {"S": "WORKSET"}}

    # WHEN a workset item is created, then changed
    dynamodb.put_item(TableName=table, Item={**key, "state": {"S": "ready"}, "blob": {"B": b"\x00\xff"}})
    dynamodb.update_item(
        TableName=table, Key=key, UpdateExpression="SET #s = :s", ExpressionAttributeNames={"#s": "state"},
        ExpressionAttributeValues={":s": {"S": "locked"}},
    )  # fmt: skip

    # THEN notify gets both records in order, shaped as Lambda delivers them
    insert, modify = eventually(lambda: _at_least(2, _records_of(recorder, "WORKSET#ws-shape")), what="2 records")
    stream_arn = stack.template.physical("WorksetTable").attributes["StreamArn"]
    assert set(insert) == {
        "eventID",
        "eventName",
        "eventVersion",
        "eventSource",
        "awsRegion",
        "dynamodb",
        "eventSourceARN",
    }
    assert insert["eventName"] == "INSERT"
    assert modify["eventName"] == "MODIFY"
    assert insert["eventSource"] == "aws:dynamodb"
    assert insert["eventSourceARN"] == stream_arn
    assert insert["awsRegion"] == "us-east-1"
    assert insert["eventVersion"] == "1.1"
    image = insert["dynamodb"]
    assert image["Keys"] == key
    assert image["NewImage"]["state"] == {"S": "ready"}
    assert image["NewImage"]["blob"] == {"B": base64.b64encode(b"\x00\xff").decode()}
    assert "OldImage" not in image
    assert image["StreamViewType"] == "NEW_AND_OLD_IMAGES"
    assert isinstance(image["ApproximateCreationDateTime"], int)
    assert isinstance(image["SizeBytes"], int)
    assert int(modify["dynamodb"]["SequenceNumber"]) > int(image["SequenceNumber"])
    assert modify["dynamodb"]["OldImage"]["state"] == {"S": "ready"}
    assert modify["dynamodb"]["NewImage"]["state"] == {"S": "locked"}
    json.dumps(insert)


def test_the_filter_criteria_drop_items_that_are_not_worksets(stack: LocalStack, recorder: Recorder) -> None:
    dynamodb = stack.client("dynamodb")
    table = stack.resources["WorksetTable"]

    # GIVEN a history item and a cluster item, which share the table but are not workset state changes
    dynamodb.put_item(TableName=table, Item={"pk": {"S": "WORKSET#ws-filter"}, "sk": {"S": "HISTORY#0001"}})
    dynamodb.put_item(TableName=table, Item={"pk": {"S": "CLUSTER#c1"}, "sk": {"S": "CLUSTER"}})

    # WHEN a workset item follows them on the stream
    dynamodb.put_item(TableName=table, Item={"pk": {"S": "WORKSET#ws-filter"}, "sk": {"S": "WORKSET"}})

    # THEN only the workset item reached notify
    eventually(lambda: _records_of(recorder, "WORKSET#ws-filter"), what="the workset record")
    assert [record["dynamodb"]["Keys"]["sk"]["S"] for record in _records_of(recorder, "WORKSET#ws-filter")] == [
        "WORKSET"
    ]
    assert _records_of(recorder, "CLUSTER#c1") == []


def _on_failure_messages(stack: LocalStack) -> list[dict[str, Any]]:
    sqs = stack.client("sqs")
    queue_url = stack.resources["NotifyFailureQueue"]
    messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", [])
    for message in messages:
        sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    return [json.loads(message["Body"]) for message in messages]


@pytest.mark.parametrize(
    ("pk", "function_error"),
    [(POISON, None), (BOOM, "Unhandled")],
    ids=["reported-item-failure", "handler-exception"],
)
def test_a_failing_record_is_retried_then_sent_to_the_on_failure_queue(
    stack: LocalStack, recorder: Recorder, pk: str, function_error: str | None
) -> None:
    dynamodb = stack.client("dynamodb")
    table = stack.resources["WorksetTable"]
    properties = stack.template.resources()["NotifyFunction"]["Properties"]["Events"]["WorksetChanges"]["Properties"]
    retries = int(properties["MaximumRetryAttempts"])

    # WHEN notify fails on a record: it reports it as a batch item failure, or raises
    dynamodb.put_item(TableName=table, Item={"pk": {"S": pk}, "sk": {"S": "WORKSET"}})

    # THEN the record is seen once plus MaximumRetryAttempts times, then described on the on-failure queue
    (failure,) = eventually(lambda: _on_failure_messages(stack), what="the on-failure message")
    attempts = _records_of(recorder, pk)
    assert len(attempts) == 1 + retries
    assert len({record["dynamodb"]["SequenceNumber"] for record in attempts}) == 1

    info = failure["DDBStreamBatchInfo"]
    assert info["startSequenceNumber"] == info["endSequenceNumber"] == attempts[0]["dynamodb"]["SequenceNumber"]
    assert info["batchSize"] == 1
    assert info["streamArn"] == stack.template.physical("WorksetTable").attributes["StreamArn"]
    assert info["shardId"]
    assert failure["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert failure["requestContext"]["approximateInvokeCount"] == 1 + retries
    assert failure["requestContext"]["functionArn"].endswith(":function:workset-monitor-local-notify")
    assert failure["responseContext"].get("functionError") == function_error
    assert failure["version"] == "1.0"

    # AND the shard moves on: the next record is delivered
    dynamodb.put_item(TableName=table, Item={"pk": {"S": f"{pk}-after"}, "sk": {"S": "WORKSET"}})
    eventually(lambda: _records_of(recorder, f"{pk}-after"), what="the record after the failed one")


def test_filter_patterns_follow_eventbridge_rules() -> None:
    record = {"eventName": "MODIFY", "dynamodb": {"Keys": {"sk": {"S": "WORKSET"}}, "tags": ["a", "b"]}}

    assert matches_pattern({"dynamodb": {"Keys": {"sk": {"S": ["WORKSET"]}}}}, record)
    assert not matches_pattern({"dynamodb": {"Keys": {"sk": {"S": ["HISTORY"]}}}}, record)
    assert matches_pattern({"dynamodb": {"Keys": {"sk": {"S": [{"prefix": "WORK"}]}}}}, record)
    assert matches_pattern({"eventName": ["INSERT", "MODIFY"], "dynamodb": {"tags": ["b"]}}, record)
    assert not matches_pattern({"dynamodb": {"Keys": {"pk": {"S": ["WORKSET"]}}}}, record)
    assert matches_pattern({"dynamodb": {"OldImage": [{"exists": False}]}}, record)
    assert matches_pattern({"eventName": [{"anything-but": ["REMOVE"]}]}, record)
    with pytest.raises(FilterPatternError, match="numeric"):
        check_pattern({"dynamodb": {"NewImage": {"n": {"N": [{"numeric": [">", 0]}]}}}})


# --- schedules --------------------------------------------------------------------------------------------------------


def test_the_schedule_fires_a_scheduled_event(stack: LocalStack, recorder: Recorder) -> None:
    seen = eventually(lambda: recorder.seen("ScheduleFunction"), what="a schedule tick")

    event = seen[0]["event"]
    assert event["detail-type"] == "Scheduled Event"
    assert event["resources"][0].startswith("arn:aws:scheduler:us-east-1:123456789012:schedule/default/")
    assert 0 < seen[0]["remaining_ms"] <= 60_000


# --- the API ----------------------------------------------------------------------------------------------------------


def _request(
    stack: LocalStack, method: str, target: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, http.client.HTTPMessage, bytes]:
    """Send `target` as it is, signed with the local stack's keys as the agent signs (the API asks for SigV4)."""
    assert stack.api_url is not None
    address = urlsplit(stack.api_url)
    signed = sign(
        method,
        stack.api_url + target,
        body=body or b"",
        headers=headers,
        access_key_id=ACCESS_KEY_ID,
        secret_access_key=SECRET_ACCESS_KEY,
        region=stack.region,
    )
    connection = http.client.HTTPConnection(address.hostname or "", address.port, timeout=10)
    try:
        connection.request(method, target, body=body, headers=signed)
        response = connection.getresponse()
        return response.status, response.headers, response.read()
    finally:
        connection.close()


def test_a_get_becomes_the_proxy_event_api_gateway_sends(stack: LocalStack, recorder: Recorder) -> None:
    before = len(recorder.seen("Api"))

    status, headers, body = _request(
        stack, "GET", "/worksets/ws%201%2Fx?state=ready&tag=a&tag=b", headers={"X-Test": "1"}
    )

    assert status == 201
    assert headers["X-Reply"] == "yes"
    assert headers.get_all("Set-Cookie") == ["a=1", "b=2"]
    assert json.loads(body) == {"function": "workset-monitor-local-api-read", "path": "/worksets/ws%201%2Fx"}
    (event,) = recorder.seen("Api")[before:]
    assert event["resource"] == "/{proxy+}"
    assert event["path"] == "/worksets/ws%201%2Fx"
    assert event["httpMethod"] == "GET"
    assert event["pathParameters"] == {"proxy": "worksets/ws%201%2Fx"}
    assert event["queryStringParameters"] == {"state": "ready", "tag": "b"}
    assert event["multiValueQueryStringParameters"] == {"state": ["ready"], "tag": ["a", "b"]}
    assert event["headers"]["X-Test"] == "1"
    assert event["multiValueHeaders"]["X-Test"] == ["1"]
    assert event["stageVariables"] is None
    assert event["body"] is None
    assert event["isBase64Encoded"] is False
    context = event["requestContext"]
    assert context["stage"] == "local"
    assert context["path"] == "/local/worksets/ws%201%2Fx"
    assert context["resourcePath"] == "/{proxy+}"
    assert context["httpMethod"] == "GET"
    assert context["identity"]["sourceIp"] == "127.0.0.1"
    assert (context["identity"]["accessKey"], context["identity"]["accountId"]) == (ACCESS_KEY_ID, "123456789012")
    assert context["requestId"]
    assert headers["x-amzn-RequestId"] == context["requestId"]


def test_the_root_is_its_own_route_and_a_binary_body_is_base64(stack: LocalStack, recorder: Recorder) -> None:
    before = len(recorder.seen("Api"))

    root_status, _, _ = _request(stack, "GET", "/")
    post_status, _, _ = _request(stack, "POST", "/worksets", body=b"\xff\xfe binary")

    assert (root_status, post_status) == (201, 201)
    root, post = recorder.seen("Api")[before:]
    assert (root["resource"], root["pathParameters"], root["queryStringParameters"]) == ("/", None, None)
    assert root["requestContext"]["identity"]["accessKey"] is None  # an open route: nothing was verified
    assert post["isBase64Encoded"] is True
    assert base64.b64decode(post["body"]) == b"\xff\xfe binary"


def test_an_unknown_route_and_a_failing_handler_answer_as_api_gateway(stack: LocalStack) -> None:
    missing_status, missing_headers, missing_body = _request(stack, "POST", "/")
    failing_status, failing_headers, failing_body = _request(stack, "GET", "/worksets/boom")

    # the template's gateway responses word API Gateway's own answers in the API's error shape
    assert (missing_status, json.loads(missing_body)["error"]) == (
        403,
        {
            "code": "MISSING_AUTHENTICATION_TOKEN",
            "message": "Missing Authentication Token",
            "request_id": missing_headers["x-amzn-RequestId"],
        },
    )
    assert (failing_status, json.loads(failing_body)["error"]) == (
        502,
        {"code": "DEFAULT_5XX", "message": "Internal server error", "request_id": failing_headers["x-amzn-RequestId"]},
    )
    assert (missing_headers["x-amzn-ErrorType"], failing_headers["x-amzn-ErrorType"]) == (
        "MissingAuthenticationTokenException",
        "InternalServerErrorException",
    )
