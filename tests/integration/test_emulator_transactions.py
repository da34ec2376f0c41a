"""The emulator's TransactWriteItems keeps DynamoDB's all-or-nothing promise without copying the table."""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from local.template import Template

pytestmark = pytest.mark.integration


def put(table: str, pk: str, condition: str | None = None, **values: Any) -> dict[str, Any]:
    operation: dict[str, Any] = {"TableName": table, "Item": {"pk": {"S": pk}, "sk": {"S": "WORKSET"}}}
    if condition:
        operation["ConditionExpression"] = condition
    if values:
        operation["ExpressionAttributeValues"] = values
    return {"Put": operation}


def test_a_transaction_whose_second_condition_fails_writes_nothing(deployed: Template) -> None:
    dynamodb = boto3.client("dynamodb")
    table = deployed.physical("WorksetTable").ref
    dynamodb.put_item(TableName=table, Item={"pk": {"S": "taken"}, "sk": {"S": "WORKSET"}})

    with pytest.raises(ClientError) as refused:
        dynamodb.transact_write_items(
            TransactItems=[
                put(table, "new", "attribute_not_exists(pk)"),
                put(table, "taken", "attribute_not_exists(pk)"),
            ]
        )

    reasons = [reason["Code"] for reason in refused.value.response["CancellationReasons"]]
    assert reasons == ["None", "ConditionalCheckFailed"]
    assert "Item" not in dynamodb.get_item(TableName=table, Key={"pk": {"S": "new"}, "sk": {"S": "WORKSET"}})


def test_a_transaction_whose_conditions_hold_writes_every_item(deployed: Template) -> None:
    dynamodb = boto3.client("dynamodb")
    table = deployed.physical("WorksetTable").ref

    dynamodb.transact_write_items(
        TransactItems=[put(table, "a", "attribute_not_exists(pk)"), put(table, "b", "attribute_not_exists(pk)")]
    )

    for pk in ("a", "b"):
        assert "Item" in dynamodb.get_item(TableName=table, Key={"pk": {"S": pk}, "sk": {"S": "WORKSET"}})


def test_two_operations_on_one_item_are_refused(deployed: Template) -> None:
    dynamodb = boto3.client("dynamodb")
    table = deployed.physical("WorksetTable").ref

    with pytest.raises(ClientError, match="multiple operations on one item"):
        dynamodb.transact_write_items(TransactItems=[put(table, "a"), put(table, "a")])
