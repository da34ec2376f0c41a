"""The notify function as Lambda runs it, with four channels: the SNS topic, a fake Linear, a signed JSON webhook and a
Slack-shaped one (both on a local receiver). Each channel gets each event once however often a batch is delivered;
one bad record or one failing channel stops nothing else.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import pytest
from boto3.dynamodb.types import TypeSerializer

from local.receivers import FakeLinear, Trouble, WebhookReceiver
from local.template import Template
from tests.conftest import REGION, FakeLambdaContext
from workset_monitor.routing import ConfigurationError

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent.parent
PREFIX = "daylily_monitoring/active_worksets/"
SIGNING_SECRET = "whsec-delivery-test"
LINEAR_KEY = "lin_api_delivery_test"
FAST = {"timeout_seconds": 0.5, "max_attempts": 2, "max_wait_seconds": 1}


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver(SIGNING_SECRET) as running:
        yield running  # type: ignore[misc]


@pytest.fixture
def linear_server() -> Iterator[FakeLinear]:
    with FakeLinear(LINEAR_KEY) as running:
        yield running  # type: ignore[misc]


@pytest.fixture
def channels_config(receiver: WebhookReceiver, linear_server: FakeLinear) -> str:
    """The NotifyChannels parameter: everything to SNS and the JSON webhook; failures and completions to Linear and
    to Slack."""
    failures_and_completions = {"event_types": ["error", "lease_expired", "retry_scheduled", "completion"]}
    return json.dumps(
        [
            {"name": "sns", "type": "sns"},
            {
                "name": "linear",
                "type": "linear",
                "team_id": "team-eng",
                "api_key": "ssm:/workset-monitor/test/notify/linear",
                "url": linear_server.url + "/graphql",
                "filter": failures_and_completions,
                **FAST,
            },
            {
                "name": "hook",
                "type": "webhook",
                "url": receiver.url + "/hook",
                "signing_secret": "ssm:/workset-monitor/test/notify/signing",
                **FAST,
            },
            {
                "name": "slack",
                "type": "webhook",
                "format": "slack",
                "url": "secretsmanager:workset-monitor/test/notify/slack-url",
                "signing_secret": "ssm:/workset-monitor/test/notify/signing",
                "filter": failures_and_completions,
                **FAST,
            },
        ]
    )


@pytest.fixture
def deployed(aws: None, stage: str, region: str, channels_config: str, receiver: WebhookReceiver) -> Template:
    """The template deployed with the channels above, and their secrets in SSM and Secrets Manager."""
    template = Template.load(
        ROOT / "template.yaml", parameters={"Stage": stage, "NotifyChannels": channels_config}, region=region
    )
    template.deploy(lambda service: boto3.client(service, region_name=region))
    ssm = boto3.client("ssm", region_name=region)
    ssm.put_parameter(Name="/workset-monitor/test/notify/linear", Value=LINEAR_KEY, Type="SecureString")
    ssm.put_parameter(Name="/workset-monitor/test/notify/signing", Value=SIGNING_SECRET, Type="SecureString")
    boto3.client("secretsmanager", region_name=region).create_secret(
        Name="workset-monitor/test/notify/slack-url", SecretString=receiver.url + "/slack"
    )
    return template


@pytest.fixture
def notify(load_function: Callable[[str], ModuleType]) -> Callable[[dict[str, Any]], Any]:
    module = load_function("NotifyFunction")
    return lambda event: module.lambda_handler(event, FakeLambdaContext("notify"))


@pytest.fixture
def inbox(deployed: Template) -> Callable[[], list[dict[str, Any]]]:
    """A queue subscribed to the topic; calling it drains what arrived."""
    sqs = boto3.client("sqs", region_name=REGION)
    url = sqs.create_queue(QueueName="inbox")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    boto3.client("sns", region_name=REGION).subscribe(
        TopicArn=deployed.physical("WorksetTopic").ref, Protocol="sqs", Endpoint=arn
    )

    def drain() -> list[dict[str, Any]]:
        messages = []
        while batch := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
            messages += [json.loads(message["Body"]) for message in batch]
            sqs.delete_message_batch(
                QueueUrl=url, Entries=[{"Id": m["MessageId"], "ReceiptHandle": m["ReceiptHandle"]} for m in batch]
            )
        return messages

    return drain


# --- stream records --------------------------------------------------------------------------------------------------


def image(workset_id: str, state: str, version: int, **fields: Any) -> dict[str, Any]:
    return {
        "pk": f"WORKSET#{workset_id}",
        "sk": "WORKSET",
        "workset_id": workset_id,
        "bucket": "b",
        "folder": f"{PREFIX}{workset_id}/",
        "state": state,
        "version": version,
        "priority": "normal",
        "created_at": "2026-12-03T09:15:02+00:00",
        "updated_at": f"2026-12-03T09:{15 + version:02d}:02+00:00",
        **fields,
    }


def record(sequence: int, old: dict[str, Any] | None, new: dict[str, Any] | None) -> dict[str, Any]:
    serializer = TypeSerializer()
    keys = new or old
    assert keys is not None
    change: dict[str, Any] = {
        "Keys": {"pk": {"S": keys["pk"]}, "sk": {"S": keys["sk"]}},
        "SequenceNumber": f"{sequence:021d}",
        "SizeBytes": 100,
        "StreamViewType": "NEW_AND_OLD_IMAGES",
    }
    if new:
        change["NewImage"] = {name: serializer.serialize(value) for name, value in new.items()}
    if old:
        change["OldImage"] = {name: serializer.serialize(value) for name, value in old.items()}
    return {
        "eventID": f"event-{sequence}",
        "eventName": "MODIFY" if old and new else ("INSERT" if new else "REMOVE"),
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": REGION,
        "dynamodb": change,
        "eventSourceARN": f"arn:aws:dynamodb:{REGION}:123456789012:table/t/stream/2026",
    }


def life_of(workset_id: str, first_sequence: int) -> list[dict[str, Any]]:
    """The records of a workset registered, run, failed with a data error, retried by a person, and completed."""
    failed = {"error_category": "data", "error_reasons": ["sample sheet row 3: R1_FQ missing"], "cluster": "c1"}
    states = [
        (None, image(workset_id, "ready", 1)),
        (image(workset_id, "ready", 1), image(workset_id, "locked", 2, cluster="c1")),
        (image(workset_id, "locked", 2), image(workset_id, "in_progress", 3, cluster="c1")),
        (image(workset_id, "in_progress", 3), image(workset_id, "in_progress", 4, progress="staging")),  # heartbeat
        (image(workset_id, "in_progress", 4), image(workset_id, "error", 5, **failed)),
        (image(workset_id, "error", 5), image(workset_id, "ready", 6, attempt=2)),
        (image(workset_id, "ready", 6), image(workset_id, "locked", 7, attempt=2, cluster="c1")),
        (image(workset_id, "locked", 7), image(workset_id, "in_progress", 8, attempt=2, cluster="c1")),
        (image(workset_id, "in_progress", 8), image(workset_id, "complete", 9, attempt=2, cluster="c1")),
    ]
    return [record(first_sequence + index, old, new) for index, (old, new) in enumerate(states)]


# --- never twice -----------------------------------------------------------------------------------------------------


def test_the_same_batch_delivered_three_times_reaches_each_channel_once(
    notify: Callable[[dict[str, Any]], Any],
    inbox: Callable[[], list[dict[str, Any]]],
    receiver: WebhookReceiver,
    linear_server: FakeLinear,
    deployed: Template,
) -> None:
    # GIVEN the lives of two worksets in one batch: 16 changes of state, 2 heartbeats
    batch = {"Records": life_of("hg003-wes-normal", 1) + life_of("hg004-wes-tumor", 100)}

    # WHEN Lambda delivers the batch three times (a timeout, a redeployment, a retry after another record failed)
    results = [notify(batch) for _ in range(3)]

    # THEN every delivery succeeded and each channel got each event it wants exactly once
    assert results == [{"batchItemFailures": []}] * 3
    published = [json.loads(message["Message"]) for message in inbox()]
    assert len(published) == 16
    assert len({(event["workset_id"], event["version"]) for event in published}) == 16
    hook = receiver.deliveries("/hook")
    assert len(hook) == 16
    assert len({item.headers["x-workset-event-id"] for item in hook}) == 16
    assert all(item.verified for item in receiver.deliveries())
    assert [item.json()["text"].split(": ", 1)[1] for item in receiver.deliveries("/slack")] == [
        "error (data): sample sheet row 3: R1_FQ missing",
        "in_progress -> complete",
    ] * 2

    # and Linear has one issue per workset incident, commented on and closed by the completion, and was not called
    # at all by the second and third deliveries
    issues = list(linear_server.issues.values())
    assert [(issue.title.split(": ")[0], len(issue.comments), linear_server.is_done(issue)) for issue in issues] == [
        ("[normal] workset hg003-wes-normal", 1, True),
        ("[normal] workset hg004-wes-tumor", 1, True),
    ]
    assert linear_server.operations.count("IssueCreate") == 2
    assert len(linear_server.operations) == 7  # 2 creates, 2 comments, 1 team lookup, 2 moves to done

    deliveries = boto3.client("dynamodb", region_name=REGION).scan(
        TableName=deployed.physical("NotifyIdempotencyTable").ref
    )["Items"]
    assert len(deliveries) == 16 + 4 + 16 + 4
    assert {item["status"]["S"] for item in deliveries} == {"COMPLETED"}


def test_one_poison_record_among_100_fails_alone(
    notify: Callable[[dict[str, Any]], Any], inbox: Callable[[], list[dict[str, Any]]], receiver: WebhookReceiver
) -> None:
    # GIVEN 100 claims of 100 worksets, the 51st with an image the function cannot read
    records = [
        record(sequence, image(f"ws-{sequence:03d}", "ready", 1), image(f"ws-{sequence:03d}", "locked", 2))
        for sequence in range(1, 101)
    ]
    records[50] = record(51, image("ws-051", "ready", 1), image("ws-051", "flying", 2))

    # WHEN the batch is delivered
    result = notify({"Records": records})

    # THEN the poison record alone is reported, and the 99 others reached the topic and the webhook
    assert result == {"batchItemFailures": [{"itemIdentifier": f"{51:021d}"}]}
    assert len(inbox()) == 99
    assert len(receiver.deliveries("/hook")) == 99

    # and when Lambda retries from the poison record on, only it fails again and nothing is sent twice
    assert notify({"Records": records[50:]}) == result
    assert inbox() == []
    assert len(receiver.deliveries("/hook")) == 99


def test_records_that_say_nothing_are_skipped_without_failing_the_batch(
    notify: Callable[[dict[str, Any]], Any], inbox: Callable[[], list[dict[str, Any]]]
) -> None:
    history = {"pk": "WORKSET#w1", "sk": "HISTORY#000000000002", "workset_id": "w1", "event": "transition"}
    incident = {"pk": "INCIDENT#w1", "sk": "CHANNEL#linear", "issue_id": "x", "opened_version": 5}
    records = [
        record(1, image("w1", "locked", 2), None),  # a removal
        record(2, None, history),  # a history item (the template's filter keeps these out)
        record(3, None, incident),  # the Linear channel's own item
        record(4, image("w1", "in_progress", 3), image("w1", "in_progress", 4)),  # a heartbeat
        {**record(5, None, image("w1", "ready", 1)), "eventName": "SOMETHING_NEW"},
    ]

    assert notify({"Records": records}) == {"batchItemFailures": []}
    assert inbox() == []


# --- one failing channel ---------------------------------------------------------------------------------------------


def test_a_failing_channel_stops_no_other_and_the_retry_reaches_only_it(
    notify: Callable[[dict[str, Any]], Any],
    inbox: Callable[[], list[dict[str, Any]]],
    receiver: WebhookReceiver,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # GIVEN a webhook receiver that is down (503) for the first record's attempts
    receiver.trouble(Trouble(status=503), Trouble(status=503))
    batch = {
        "Records": [
            record(1, image("w1", "ready", 1), image("w1", "locked", 2)),
            record(2, image("w1", "locked", 2), image("w1", "in_progress", 3)),
            record(3, image("w2", "ready", 1), image("w2", "locked", 2)),
        ]
    }

    # WHEN the batch is delivered
    first = notify(batch)

    # THEN SNS had every event; the webhook had none (after its outage it was not tried again in this batch), and
    # every record is reported, so Lambda retries them
    assert first == {"batchItemFailures": [{"itemIdentifier": f"{n:021d}"} for n in (1, 2, 3)]}
    assert len(inbox()) == 3
    assert receiver.deliveries("/hook") == []
    failures = [entry for entry in caplog.records if entry.getMessage() == "delivery failed"]
    assert [(entry.levelname, entry.channel, entry.workset_id) for entry in failures] == [("ERROR", "hook", "w1")]
    printed = capsys.readouterr().out
    failed_metric = [json.loads(line) for line in printed.splitlines() if '"DeliveryFailed"' in line]
    assert [(line["channel"], line["DeliveryFailed"]) for line in failed_metric] == [("hook", [3.0])]

    # WHEN Lambda retries the batch, the receiver being back
    second = notify(batch)

    # THEN the webhook gets the three events, in order, and SNS nothing more
    assert second == {"batchItemFailures": []}
    assert inbox() == []
    assert [item.headers["x-workset-event-id"] for item in receiver.deliveries("/hook")] == ["w1#2", "w1#3", "w2#2"]


def test_an_event_that_failed_on_a_channel_holds_back_the_worksets_later_events_there(
    notify: Callable[[dict[str, Any]], Any],
    linear_server: FakeLinear,
    receiver: WebhookReceiver,
) -> None:
    # GIVEN Linear refuses the first failure of w1 (an error inside an HTTP 200), then w1 completes in the same batch
    linear_server.trouble(Trouble(body={"errors": [{"message": "conflict", "extensions": {"type": "invalid input"}}]}))
    failed = {"error_category": "data", "error_reasons": ["bad read"]}
    batch = {
        "Records": [
            record(1, image("w1", "in_progress", 3), image("w1", "error", 4, **failed)),
            record(2, image("w1", "error", 4), image("w1", "complete", 5)),
        ]
    }

    # WHEN the batch is delivered, then retried
    first = notify(batch)
    second = notify(batch)

    # THEN the completion did not reach Linear before the failure did: the issue is opened, then closed, in order
    assert first == {"batchItemFailures": [{"itemIdentifier": f"{n:021d}"} for n in (1, 2)]}
    assert second == {"batchItemFailures": []}
    [issue] = linear_server.issues.values()
    assert linear_server.is_done(issue) and len(issue.comments) == 1
    assert len(receiver.deliveries("/hook")) == 2  # the other channels had both events the first time


# --- configuration ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("channels_config", ['[{"name": "linear", "type": "linear", "team_id": "t"}]'])
def test_a_bad_configuration_stops_the_function_at_start_with_a_clear_message(
    load_function: Callable[[str], ModuleType],
) -> None:
    with pytest.raises(ConfigurationError, match="channel linear: api_key: Field required"):
        load_function("NotifyFunction")
