"""The exact AWS calls each operation makes, counted as `python -m benchmarks.aws_calls` counts them.

Counting is exact, unlike timing, so these tests hold the counts: a change that adds a call to an operation fails
here, and whoever makes it decides whether the call is worth it (and updates the numbers and the benchmark README).
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSPreparedRequest, AWSResponse
from botocore.config import Config

from benchmarks.aws_calls import (
    CLAIM,
    HEARTBEAT,
    REGISTER,
    TRANSITION,
    CallCounter,
    read_operation,
    run_operations,
)
from local.template import Template

pytestmark = pytest.mark.integration

EXPECTED_CALLS: dict[str, dict[str, int]] = {
    REGISTER: {
        "dynamodb:GetItem": 1,
        "s3:ListObjectsV2": 1,
        "s3:GetObject": 2,
        "dynamodb:TransactWriteItems": 1,
    },
    CLAIM: {"dynamodb:GetItem": 1, "dynamodb:TransactWriteItems": 1},
    HEARTBEAT: {"dynamodb:UpdateItem": 1},
    TRANSITION: {"dynamodb:GetItem": 1, "dynamodb:TransactWriteItems": 1},
    read_operation(10): {"dynamodb:Query": 1},
    read_operation(1_000): {"dynamodb:Query": 1},
}


def test_each_operation_makes_exactly_the_calls_counted_before(deployed: Template) -> None:
    # WHEN the benchmark runs its operations against the template's resources
    measurements = run_operations(deployed, lambda service: boto3.client(service, region_name=deployed.region))
    measured = {measurement.operation: measurement for measurement in measurements}

    # THEN each made exactly the calls it made when the counts were taken
    assert {operation: dict(measurement.calls) for operation, measurement in measured.items()} == EXPECTED_CALLS
    assert {operation: measurement.total for operation, measurement in measured.items()} == {
        REGISTER: 5,
        CLAIM: 2,
        HEARTBEAT: 1,
        TRANSITION: 2,
        read_operation(10): 1,
        read_operation(1_000): 1,
    }
    # AND reading a workset with its history costs the same whether it has 10 or 1,000 entries
    assert measured[read_operation(10)].calls == measured[read_operation(1_000)].calls


def test_each_page_of_a_paginator_is_one_call(deployed: Template) -> None:
    # GIVEN three objects, listed one per page by a client the counter is attached to
    bucket = deployed.physical("WorksetBucket").ref
    counter = CallCounter()
    s3 = counter.attach(boto3.client("s3", region_name=deployed.region))
    for name in ("a", "b", "c"):
        s3.put_object(Bucket=bucket, Key=f"pages/{name}", Body=b"x")

    # WHEN the paginator walks them
    with counter.counting() as calls:
        pages = list(
            s3.get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix="pages/", PaginationConfig={"PageSize": 1}
            )
        )

    # THEN each page was a call, and the puts before the counting block were not counted
    assert len(pages) == 3
    assert calls == {"s3:ListObjectsV2": 3}


def test_each_retry_is_one_more_call(deployed: Template) -> None:
    # GIVEN a client whose first GetItem is throttled, and retried by botocore
    table = deployed.physical("WorksetTable").ref
    counter = CallCounter()
    dynamodb = counter.attach(
        boto3.client("dynamodb", region_name=deployed.region, config=Config(retries={"mode": "standard"}))
    )
    attempts: list[str] = []

    def throttle_the_first_attempt(request: AWSPreparedRequest, **_: Any) -> AWSResponse | None:
        attempts.append(request.url)
        return _throttling(request.url) if len(attempts) == 1 else None

    dynamodb.meta.events.register_first("before-send.dynamodb.GetItem", throttle_the_first_attempt)

    # WHEN the item is read once
    with counter.counting() as calls:
        response = dynamodb.get_item(TableName=table, Key={"pk": {"S": "WORKSET#none"}, "sk": {"S": "WORKSET"}})

    # THEN the read succeeded on its second attempt, and both attempts were counted
    assert response["ResponseMetadata"]["RetryAttempts"] == 1
    assert len(attempts) == 2
    assert calls == {"dynamodb:GetItem": 2}


def test_calls_of_clients_not_attached_are_not_counted(deployed: Template) -> None:
    counter = CallCounter()
    counter.attach(boto3.client("dynamodb", region_name=deployed.region))
    other = boto3.client("dynamodb", region_name=deployed.region)

    with counter.counting() as calls:
        other.list_tables()

    assert calls == {}


class _Body(io.BytesIO):
    """A raw HTTP body as botocore reads it."""

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.getvalue()


def _throttling(url: str) -> AWSResponse:
    """DynamoDB's answer when a request is throttled: botocore retries it."""
    body = json.dumps({"__type": "com.amazonaws.dynamodb.v20120810#ThrottlingException", "message": "Rate exceeded"})
    headers = {"x-amzn-RequestId": "throttled", "Content-Type": "application/x-amz-json-1.0"}
    return AWSResponse(url, 400, headers, _Body(body.encode()))
