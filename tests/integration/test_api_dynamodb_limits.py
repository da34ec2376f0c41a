"""Requests that DynamoDB refuses with a ValidationException (a 502, deployed), which moto answers differently.

moto accepts a key of any size and a page's start key from outside the query (it answers an empty page or a 404),
while DynamoDB refuses both: "Size of hashkey has exceeded the maximum size limit of 2048 bytes", "The provided
starting key is outside query boundaries based on provided conditions". The code is written for DynamoDB: such
requests are answered 4xx before any call. To prove it here, the DynamoDB clients created during these tests refuse
what DynamoDB refuses (`dynamodb_refuses_what_it_refuses_in_aws`).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from tests.integration.test_api_function import registered
from workset_monitor.models import Priority
from workset_monitor.store import WorksetStore

pytestmark = pytest.mark.integration

LONG = "中" * 700
"""700 characters (within the path's 1,024), 2,100 bytes of UTF-8: too long for a DynamoDB partition key."""


def _refuse(operation: str, message: str) -> None:
    raise ClientError({"Error": {"Code": "ValidationException", "Message": message}}, operation)


def _too_long(value: Any) -> bool:
    return isinstance(value, dict) and len(str(value.get("S", "")).encode()) > 2048


def _check(params: dict[str, Any], model: Any, **_: Any) -> None:
    """What DynamoDB checks of the requests the store makes, that moto does not."""
    operation = model.name
    keys = params.get("Key") or {}
    if any(_too_long(value) for value in keys.values()):
        _refuse(operation, "One or more parameter values were invalid: Size of hashkey has exceeded the maximum size")
    if operation != "Query":
        return

    values = params.get("ExpressionAttributeValues") or {}
    partition = values.get(":pk") or values.get(":value")
    if _too_long(partition):
        _refuse(operation, "One or more parameter values were invalid: Size of hashkey has exceeded the maximum size")
    start = params.get("ExclusiveStartKey")
    if start is None:
        return
    attribute = params["ExpressionAttributeNames"]["#attribute"] if "IndexName" in params else "pk"
    prefixes = {"sk": values.get(":history"), "queue_key": values.get(":rank")}
    outside = start.get(attribute) != partition or any(
        prefix is not None and not start.get(name, {}).get("S", "").startswith(prefix["S"])
        for name, prefix in prefixes.items()
    )
    if outside:
        _refuse(operation, "The provided starting key is outside query boundaries based on provided conditions")


@pytest.fixture(autouse=True)
def dynamodb_refuses_what_it_refuses_in_aws(deployed: Any) -> Iterator[None]:
    """Every DynamoDB client made from now on (the API functions' among them) checks its requests as DynamoDB does."""
    events = boto3._get_default_session().events
    events.register("before-parameter-build.dynamodb", _check, unique_id="dynamodb-limits")
    yield
    events.unregister("before-parameter-build.dynamodb", unique_id="dynamodb-limits")


def _token(page: dict[str, Any], **changes: str) -> str:
    """The page's token with its key changed: what a client could send, since tokens are not signed."""
    token = json.loads(base64.urlsafe_b64decode(page["next_token"]))
    token["key"].update(changes)
    return base64.urlsafe_b64encode(json.dumps(token).encode()).decode()


def test_the_emulation_refuses_what_dynamodb_refuses(deployed: Any) -> None:
    store = WorksetStore(deployed.physical("WorksetTable").ref)

    with pytest.raises(ClientError, match="Size of hashkey"):
        store.client.get_item(TableName=store.table_name, Key={"pk": {"S": "x" * 3000}, "sk": {"S": "WORKSET"}})


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("GET", "/clusters/" + "c" * 3000, None, 422),
        ("POST", "/clusters/" + "c" * 3000 + "/heartbeat", None, 422),
        ("DELETE", "/clusters/" + "c" * 3000, None, 422),
        ("GET", f"/worksets/{LONG}", None, 404),
        ("GET", f"/worksets/{LONG}/history", None, 404),
        ("POST", f"/worksets/{LONG}/heartbeat", {"lease_token": 2}, 404),
        ("POST", f"/worksets/{LONG}/cancel", None, 404),
        ("POST", f"/worksets/{LONG}/lock", {"owner": "a", "cluster": "c1"}, 404),
        ("PUT", f"/worksets/{LONG}/state", {"state": "archived"}, 404),
    ],
    ids=lambda value: value[:40] if isinstance(value, str) else str(value),
)
def test_a_name_too_long_for_a_key_is_a_4xx(api: Any, method: str, path: str, body: Any, status: int) -> None:
    """moto takes such a key and answers 404; DynamoDB refuses it (a 502 deployed). The code is written for DynamoDB."""
    answer_status, answer = api(method, path, body=body)

    assert (answer_status, answer["error"]["code"]) == (status, "not_found" if status == 404 else "invalid_request")


def test_a_history_token_naming_another_workset_is_400(api: Any, store: WorksetStore) -> None:
    """moto answers an empty page for a start key of another partition; DynamoDB refuses it (a 502 deployed)."""
    for name in ("w1", "w2"):
        workset = registered(store, name)
        store.record(workset, {"progress": "x"}, event="noted", actor="test", reason="test")
    _, page = api("GET", "/worksets/w1/history", query={"limit": "1"})

    status, body = api("GET", "/worksets/w1/history", query={"next_token": _token(page, pk="WORKSET#w2")})

    assert (status, body["error"]["code"]) == (400, "bad_request")


def test_a_history_token_outside_the_history_is_400(api: Any, store: WorksetStore) -> None:
    registered(store, "w1")
    store.record(store.get("w1"), {"progress": "x"}, event="noted", actor="test", reason="test")
    _, page = api("GET", "/worksets/w1/history", query={"limit": "1"})

    status, _ = api("GET", "/worksets/w1/history", query={"next_token": _token(page, sk="WORKSET")})

    assert status == 400


@pytest.mark.parametrize(
    ("query", "changes"),
    [
        ({"state": "ready"}, {"state": "error"}),
        ({"cluster": "c1"}, {"active_cluster": "c2"}),
        ({"state": "ready", "priority": "urgent"}, {"queue_key": "1#2026-01-01T00:00:00.000000Z#x"}),
        ({}, {"entity": "cluster"}),
    ],
    ids=["another-state", "another-cluster", "another-priority", "another-entity"],
)
def test_a_list_token_naming_another_partition_is_400(
    api: Any, store: WorksetStore, query: dict[str, str], changes: dict[str, str]
) -> None:
    for n in range(3):
        workset = registered(store, f"w{n}", priority=Priority.URGENT)
        store.assign(workset, cluster="c1", reason="test")
    _, page = api("GET", "/worksets", query={**query, "limit": "1"})

    status, body = api("GET", "/worksets", query={**query, "next_token": _token(page, **changes)})

    assert (status, body["error"]["code"]) == (400, "bad_request")
