"""Each sample event under events/ runs through its function, in the deployment it names (Stage=dev, us-west-2)."""

from __future__ import annotations

import json
from collections.abc import Callable
from types import ModuleType
from typing import Any

import boto3
import pytest

from local.template import Template
from tests.conftest import invoke, upload_example
from tests.conftest import sample_event as sample
from workset_monitor.models import State
from workset_monitor.store import WorksetStore

pytestmark = pytest.mark.integration

STAGE, DEPLOYMENT_REGION = "dev", "us-west-2"
"""The deployment the sample events name."""


@pytest.fixture
def registered(deployed: Template, load_function: Callable[[str], ModuleType]) -> dict[str, Any]:
    event = sample("register-s3-ready.json")
    upload_example(event)

    result: dict[str, Any] = invoke(load_function, "RegisterFunction", event)
    return result


def test_the_register_sample_registers_the_example(registered: dict[str, Any], store: WorksetStore) -> None:
    assert registered == {"outcomes": {"hg002-giab-wgs-30x": "registered"}}
    assert store.get("hg002-giab-wgs-30x").state is State.READY


def test_the_api_sample_reads_the_workset(
    registered: dict[str, Any], load_function: Callable[[str], ModuleType]
) -> None:
    response = invoke(load_function, "ApiReadFunction", sample("api-get-workset.json"))

    assert response["statusCode"] == 200
    assert json.loads(response["body"])["workset_id"] == "hg002-giab-wgs-30x"


def test_the_schedule_sample_ticks(registered: dict[str, Any], load_function: Callable[[str], ModuleType]) -> None:
    result = invoke(load_function, "ScheduleFunction", sample("schedule-tick.json"))

    assert result["waiting"] == {"hg002-giab-wgs-30x": "waits: no live cluster is registered; cluster needed: 64 vCPUs"}
    assert result["clusters_needed"] == [{"vcpus": 64, "worksets": 1, "workset_ids": ["hg002-giab-wgs-30x"]}]


def test_the_notify_sample_publishes_the_claim(deployed: Template, load_function: Callable[[str], ModuleType]) -> None:
    sqs = boto3.client("sqs", region_name="us-west-2")
    url = sqs.create_queue(QueueName="inbox")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    topic = deployed.physical("WorksetTopic").ref
    boto3.client("sns", region_name="us-west-2").subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn)

    result = invoke(load_function, "NotifyFunction", sample("notify-stream-claimed.json"))

    assert result == {"batchItemFailures": []}
    [message] = sqs.receive_message(QueueUrl=url).get("Messages", [])
    body = json.loads(message["Body"])
    assert body["MessageAttributes"]["state"]["Value"] == "locked"
    assert body["MessageAttributes"]["event_type"]["Value"] == "state_change"
