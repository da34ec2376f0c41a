"""The register and notify functions, invoked with the events S3 and the DynamoDB stream send, against the emulator."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import quote_plus

import boto3
import pytest
from boto3.dynamodb.types import TypeSerializer

from local.template import Template
from tests.conftest import REGION, FakeLambdaContext
from workset_monitor.models import State
from workset_monitor.store import WorksetStore

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent.parent
EXAMPLES = ROOT / "examples" / "worksets"
PREFIX = "daylily_monitoring/active_worksets/"


def upload(deployed: Template, example: str, name: str) -> str:
    """Put an example folder under `name`, sentinel last, as a person would; return the sentinel's key."""
    s3 = boto3.client("s3", region_name=REGION)
    bucket = deployed.physical("WorksetBucket").ref
    source = EXAMPLES / example
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        s3.upload_file(str(path), bucket, f"{PREFIX}{name}/{path.relative_to(source).as_posix()}")
    key = f"{PREFIX}{name}/daylily.ready"
    s3.put_object(Bucket=bucket, Key=key, Body=b"2026-12-03T09:15:02Z")
    return key


def s3_event(bucket: str, key: str, sequencer: str = "0055AED6DCD90281E5") -> dict[str, Any]:
    """An S3 notification as AWS sends it: the key URL-encoded, spaces as '+'."""
    return {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "awsRegion": REGION,
                "eventName": "ObjectCreated:Put",
                "responseElements": {"x-amz-request-id": "C3D13FE58DE4C810"},
                "s3": {
                    "s3SchemaVersion": "1.0",
                    "configurationId": "ReadySentinel",
                    "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
                    "object": {"key": quote_plus(key, safe="/"), "size": 20, "sequencer": sequencer},
                },
            }
        ]
    }


@pytest.fixture
def register(load_function: Callable[[str], ModuleType]) -> Callable[[dict[str, Any]], Any]:
    module = load_function("RegisterFunction")
    return lambda event: module.lambda_handler(event, FakeLambdaContext("register"))


@pytest.fixture
def notify(load_function: Callable[[str], ModuleType]) -> Callable[[dict[str, Any]], Any]:
    module = load_function("NotifyFunction")
    return lambda event: module.lambda_handler(event, FakeLambdaContext("notify"))


def test_a_url_encoded_key_registers_the_workset_by_its_real_name(
    deployed: Template, store: WorksetStore, register: Callable[[dict[str, Any]], Any]
) -> None:
    # GIVEN a valid folder whose name has spaces and a non-ASCII letter
    name = "hg002 run é+1"
    key = upload(deployed, "hg002-giab-wgs-30x", name)

    # WHEN S3's event arrives, its key URL-encoded
    result = register(s3_event(deployed.physical("WorksetBucket").ref, key))

    # THEN the workset is registered under its decoded name, ready, with its work file read
    assert result == {"outcomes": {name: "registered"}}
    workset = store.get(name)
    assert workset.state is State.READY
    assert workset.priority == "urgent"
    assert workset.sample_count == 2
    assert workset.work is not None and workset.work.run_command.startswith("-p produce_snv_concordances")


def test_a_duplicate_delivery_changes_nothing(
    deployed: Template, store: WorksetStore, register: Callable[[dict[str, Any]], Any]
) -> None:
    key = upload(deployed, "hg002-giab-wgs-30x", "w1")
    event = s3_event(deployed.physical("WorksetBucket").ref, key)
    register(event)
    before = store.get("w1")

    result = register(event)

    assert result == {"outcomes": {"w1": "duplicate"}}
    assert store.get("w1") == before
    assert len(store.full_history("w1")) == 1


def test_an_invalid_folder_is_recorded_in_error_with_every_reason(
    deployed: Template, store: WorksetStore, register: Callable[[dict[str, Any]], Any]
) -> None:
    key = upload(deployed, "broken-sheet-example", "broken")

    register(s3_event(deployed.physical("WorksetBucket").ref, key))

    workset = store.get("broken")
    assert (workset.state, workset.error_category) == (State.ERROR, "validation")
    assert set(workset.error_reasons) >= {
        "daylily_info.yaml is missing",
        "stage_samples.tsv header: 19 columns, expected 20; missing N_Y",
        "daylily_work.yaml: the run command (dy-r) is missing",
        "daylily_work.yaml: priority 'asap' is not one of urgent|normal|low",
    }


def test_keys_that_are_not_sentinels_of_a_workset_folder_are_skipped(
    deployed: Template, store: WorksetStore, register: Callable[[dict[str, Any]], Any]
) -> None:
    bucket = deployed.physical("WorksetBucket").ref
    for key in (f"{PREFIX}w1/sub/daylily.ready", "elsewhere/w1/daylily.ready", f"{PREFIX}w1/daylily.lock"):
        assert register(s3_event(bucket, key)) == {"outcomes": {}}
    assert store.find("w1") is None


def stream_record(sequence: int, old: dict[str, Any] | None, new: dict[str, Any] | None) -> dict[str, Any]:
    serializer = TypeSerializer()
    image = new or old
    assert image is not None
    record: dict[str, Any] = {
        "eventID": f"event-{sequence}",
        "eventName": "MODIFY" if old and new else ("INSERT" if new else "REMOVE"),
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": REGION,
        "dynamodb": {
            "Keys": {"pk": {"S": image["pk"]}, "sk": {"S": image["sk"]}},
            "SequenceNumber": f"{sequence:021d}",
            "SizeBytes": 100,
            "StreamViewType": "NEW_AND_OLD_IMAGES",
        },
        "eventSourceARN": f"arn:aws:dynamodb:{REGION}:123456789012:table/t/stream/2026",
    }
    if new:
        record["dynamodb"]["NewImage"] = {k: serializer.serialize(v) for k, v in new.items()}
    if old:
        record["dynamodb"]["OldImage"] = {k: serializer.serialize(v) for k, v in old.items()}
    return record


def item(workset_id: str, state: str, version: int) -> dict[str, Any]:
    return {
        "pk": f"WORKSET#{workset_id}",
        "sk": "WORKSET",
        "workset_id": workset_id,
        "bucket": "b",
        "folder": f"{PREFIX}{workset_id}/",
        "state": state,
        "version": version,
        "priority": "urgent",
        "created_at": "2026-12-03T09:15:02+00:00",
        "updated_at": "2026-12-03T09:16:02+00:00",
    }


def subscribed_queue(deployed: Template) -> tuple[Any, str]:
    sqs = boto3.client("sqs", region_name=REGION)
    url = sqs.create_queue(QueueName="inbox")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    boto3.client("sns", region_name=REGION).subscribe(
        TopicArn=deployed.physical("WorksetTopic").ref, Protocol="sqs", Endpoint=arn
    )
    return sqs, url


def received(sqs: Any, url: str) -> list[dict[str, Any]]:
    messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
    return [json.loads(message["Body"]) for message in messages]


def test_a_state_change_is_published_with_filterable_attributes(
    deployed: Template, notify: Callable[[dict[str, Any]], Any]
) -> None:
    sqs, url = subscribed_queue(deployed)

    result = notify({"Records": [stream_record(1, item("w1", "in_progress", 4), item("w1", "complete", 5))]})

    assert result == {"batchItemFailures": []}
    [message] = received(sqs, url)
    attributes = {name: value["Value"] for name, value in message["MessageAttributes"].items()}
    assert attributes == {"workset_id": "w1", "event_type": "completion", "state": "complete", "priority": "urgent"}
    assert message["Subject"] == "[urgent] workset w1: in_progress -> complete"
    assert json.loads(message["Message"])["event_type"] == "completion"


def test_a_poison_record_is_reported_and_does_not_block_the_others(
    deployed: Template, notify: Callable[[dict[str, Any]], Any]
) -> None:
    sqs, url = subscribed_queue(deployed)
    poison = item("bad", "flying", 2)
    records = [
        stream_record(1, item("w1", "ready", 1), item("w1", "locked", 2)),
        stream_record(2, item("bad", "ready", 1), poison),
        stream_record(3, item("w2", "ready", 1), item("w2", "canceled", 2)),
        stream_record(4, item("w3", "locked", 3), None),  # a removal: nothing to say
        stream_record(5, item("w3", "locked", 3), item("w3", "locked", 4)),  # a heartbeat: nothing to say
    ]

    result = notify({"Records": records})

    assert result == {"batchItemFailures": [{"itemIdentifier": f"{2:021d}"}]}
    published = sorted(m["MessageAttributes"]["workset_id"]["Value"] for m in received(sqs, url))
    assert published == ["w1", "w2"]


@pytest.fixture
def mirror(load_function: Callable[[str], ModuleType]) -> Callable[[dict[str, Any]], Any]:
    module = load_function("MirrorFunction")
    return lambda event: module.lambda_handler(event, FakeLambdaContext("mirror"))


def folder_sentinels(deployed: Template, workset_id: str) -> dict[str, str]:
    s3 = boto3.client("s3", region_name=REGION)
    bucket = deployed.physical("WorksetBucket").ref
    folder = f"{PREFIX}{workset_id}/"
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=folder + "daylily.").get("Contents", [])
    return {
        obj["Key"][len(folder) :]: s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read().decode()
        for obj in listed
    }


def test_each_state_change_is_mirrored_into_the_folder_as_sentinels(
    deployed: Template, mirror: Callable[[dict[str, Any]], Any]
) -> None:
    # GIVEN a workset folder holding the person's ready sentinel
    boto3.client("s3", region_name=REGION).put_object(
        Bucket=deployed.physical("WorksetBucket").ref, Key=f"{PREFIX}w1/daylily.ready", Body=b"now"
    )
    locked = {**item("w1", "locked", 2), "lease": {"owner": "node-1:42", "token": 2, "expires_at": "2026-12-03"}}

    # WHEN it is claimed, run and fails
    steps = [
        (item("w1", "ready", 1), locked),
        (locked, item("w1", "in_progress", 3)),
        (item("w1", "in_progress", 3), {**item("w1", "error", 4), "error_reasons": ["exit 1"]}),
    ]
    seen = []
    for sequence, (old, new) in enumerate(steps, start=1):
        assert mirror({"Records": [stream_record(sequence, old, new)]}) == {"batchItemFailures": []}
        seen.append(sorted(folder_sentinels(deployed, "w1")))

    # THEN the folder shows each state in turn, and keeps the person's sentinel
    assert seen == [
        ["daylily.lock", "daylily.ready"],
        ["daylily.in_progress", "daylily.lock", "daylily.ready"],
        ["daylily.error", "daylily.ready"],
    ]
    assert folder_sentinels(deployed, "w1")["daylily.error"] == "2026-12-03T09:16:02.000000Z\texit 1\n"


def test_a_redelivered_batch_leaves_the_folder_as_once(
    deployed: Template, mirror: Callable[[dict[str, Any]], Any]
) -> None:
    event = {"Records": [stream_record(1, item("w1", "in_progress", 3), item("w1", "complete", 4))]}

    for _ in range(3):
        assert mirror(event) == {"batchItemFailures": []}

    assert folder_sentinels(deployed, "w1") == {"daylily.complete": "2026-12-03T09:16:02.000000Z\n"}
