"""Notifications end to end on the local stack: worksets dropped into S3 reach SNS, Linear and a signed webhook once
each, while a channel that is down for good fails its records into the notify failure queue after Lambda's retries
and holds up nothing else for longer than those retries.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from local.demo import EXAMPLES, Inbox, Stack, local_stack, upload_workset, wait_for
from local.receivers import FakeLinear, WebhookReceiver

pytestmark = pytest.mark.e2e

SECRETS = "workset-monitor/local/notify/"
SIGNING_SECRET = "whsec-e2e"
LINEAR_KEY = "lin_api_e2e"


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def receivers() -> Iterator[tuple[WebhookReceiver, FakeLinear]]:
    with WebhookReceiver(SIGNING_SECRET) as receiver, FakeLinear(LINEAR_KEY) as linear:
        yield receiver, linear  # type: ignore[misc]


@pytest.fixture(scope="module")
def stack(receivers: tuple[WebhookReceiver, FakeLinear]) -> Iterator[Stack]:
    receiver, linear = receivers
    channels = [
        {"name": "sns", "type": "sns"},
        {
            "name": "linear",
            "type": "linear",
            "team_id": linear.team_id,
            "api_key": f"ssm:/{SECRETS}linear",
            "url": linear.url + "/graphql",
            "filter": {"event_types": ["error", "completion"]},
        },
        {"name": "hook", "type": "webhook", "url": receiver.url + "/hook", "signing_secret": f"ssm:/{SECRETS}sig"},
        # A receiver that is down for good, and wants only the registration of urgent worksets.
        {
            "name": "gone",
            "type": "webhook",
            "url": f"http://127.0.0.1:{closed_port()}/hook",
            "signing_secret": f"ssm:/{SECRETS}sig",
            "timeout_seconds": 0.5,
            "max_attempts": 2,
            "filter": {"event_types": ["registered"], "priorities": ["urgent"]},
        },
    ]
    with local_stack("notify-e2e", schedule_seconds=60, parameters={"NotifyChannels": json.dumps(channels)}) as up:
        ssm = up.client("ssm")
        ssm.put_parameter(Name=f"/{SECRETS}linear", Value=LINEAR_KEY, Type="SecureString")
        ssm.put_parameter(Name=f"/{SECRETS}sig", Value=SIGNING_SECRET, Type="SecureString")
        yield up


def received(inbox: Inbox, count: int) -> list[dict[str, Any]] | None:
    """Every message the topic's queue got so far, once there are at least `count`."""
    inbox.until_completion_of("")  # drains the queue into inbox.messages
    return list(inbox.messages) if len(inbox.messages) >= count else None


def failure_queue_messages(stack: Stack) -> list[dict[str, Any]] | None:
    sqs = stack.client("sqs")
    url = stack.description["resources"]["NotifyFailureQueue"]
    messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
    return [json.loads(message["Body"]) for message in messages] or None


def test_each_channel_gets_each_event_once_and_a_dead_one_ends_in_the_failure_queue(
    stack: Stack, receivers: tuple[WebhookReceiver, FakeLinear]
) -> None:
    receiver, linear = receivers
    s3 = stack.client("s3")

    # GIVEN an urgent valid folder (whose registration the dead channel wants) and an invalid one, dropped into S3
    upload_workset(s3, stack.bucket, stack.prefix, EXAMPLES / "hg002-giab-wgs-30x")
    upload_workset(s3, stack.bucket, stack.prefix, EXAMPLES / "broken-sheet-example")

    # WHEN the stream's records have been through the notify function, with its retries of the failing record
    [failed] = wait_for(lambda: failure_queue_messages(stack), "the notify failure queue", seconds=60)
    inbox = Inbox(stack)
    messages = wait_for(lambda: received(inbox, 2), "the SNS messages")
    time.sleep(2)  # what else might arrive, were anything delivered twice
    messages = received(inbox, 2) or messages

    # THEN the record the dead channel refused was retried, then described in the failure queue, as Lambda does
    assert failed["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert failed["requestContext"]["approximateInvokeCount"] == 6  # the first try and MaximumRetryAttempts 5
    assert failed["DDBStreamBatchInfo"]["batchSize"] >= 1

    # and every other channel had each event exactly once, although the batch was delivered six times
    assert sorted(attributes["workset_id"]["Value"] for attributes in (m["MessageAttributes"] for m in messages)) == [
        "broken-sheet-example",
        "hg002-giab-wgs-30x",
    ]
    hook = receiver.deliveries("/hook")
    assert sorted(item.headers["x-workset-event-id"] for item in hook) == [
        "broken-sheet-example#1",
        "hg002-giab-wgs-30x#1",
    ]
    assert all(item.verified for item in hook)
    [issue] = linear.issues.values()
    assert issue.title.startswith("[normal] workset broken-sheet-example: error (validation)")
    assert linear.operations.count("IssueCreate") == 1
