"""What a ticketing channel remembers about a workset: the issue of its open incident, kept in the workset table.

| item      | pk                   | sk                    |
|-----------|----------------------|-----------------------|
| incident  | `INCIDENT#<id>`      | `CHANNEL#<channel>`   |

The item lives in a partition of its own, not beside the workset: a query of the workset's partition (its history)
never meets it, it carries none of the indexes' attributes, and its sort key is not `WORKSET`, so the stream's
filter keeps it from the notify and mirror functions.

The issue id is chosen before the issue is created and written first, conditionally; a retried delivery finds it
and finishes that issue instead of opening a second one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import boto3
from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError
from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient

INCIDENT_PREFIX = "INCIDENT#"
CHANNEL_PREFIX = "CHANNEL#"

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


class Incident(BaseModel):
    """One incident of one workset on one channel: from its first failure until it settles."""

    model_config = ConfigDict(frozen=True)

    workset_id: str
    channel: str
    issue_id: str
    opened_version: int
    created: bool = False
    issue_key: str | None = None
    issue_url: str | None = None
    closed_version: int | None = None

    @property
    def is_open(self) -> bool:
        return self.closed_version is None


class IncidentStore:
    """Reads and conditionally writes incident items."""

    def __init__(self, table_name: str, client: DynamoDBClient | None = None) -> None:
        self.table_name = table_name
        self.client: DynamoDBClient = client or boto3.client("dynamodb")

    def get(self, workset_id: str, channel: str) -> Incident | None:
        response = self.client.get_item(TableName=self.table_name, Key=_key(workset_id, channel), ConsistentRead=True)
        return _incident(response["Item"]) if "Item" in response else None

    def open(self, incident: Incident) -> Incident:
        """Record a new incident unless one is open; returns the incident that holds after the write.

        An open incident found instead (written by an earlier try of this delivery) is returned as it is.
        """
        item = {**_key(incident.workset_id, incident.channel), **_typed(incident.model_dump(exclude_none=True))}
        try:
            self.client.put_item(
                TableName=self.table_name,
                Item=item,
                ConditionExpression="attribute_not_exists(pk) OR attribute_exists(closed_version)",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise
            current: Mapping[str, Any] | None = exc.response.get("Item")  # type: ignore[assignment]
            found = _incident(current) if current else self.get(incident.workset_id, incident.channel)
            if found is None:  # removed between the two calls: nothing stands in the way any more
                return self.open(incident)
            return found
        return incident

    def mark_created(self, incident: Incident, *, issue_key: str | None, issue_url: str | None) -> Incident:
        created = incident.model_copy(update={"created": True, "issue_key": issue_key, "issue_url": issue_url})
        self._update(incident, {"created": True, "issue_key": issue_key, "issue_url": issue_url})
        return created

    def close(self, incident: Incident, *, version: int) -> Incident:
        self._update(incident, {"closed_version": version})
        return incident.model_copy(update={"closed_version": version})

    def _update(self, incident: Incident, values: Mapping[str, Any]) -> None:
        """Set `values` on the incident's item, as long as it is still about the same issue."""
        present = {name: value for name, value in values.items() if value is not None}
        names = {f"#f{index}": name for index, name in enumerate(present)}
        assignments = ", ".join(f"#f{index} = :v{index}" for index in range(len(present)))
        attribute_values = {f":v{index}": value for index, value in enumerate(present.values())}
        self.client.update_item(
            TableName=self.table_name,
            Key=_key(incident.workset_id, incident.channel),
            UpdateExpression=f"SET {assignments}",
            ConditionExpression="issue_id = :issue",
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=_typed({**attribute_values, ":issue": incident.issue_id}),
        )


def _key(workset_id: str, channel: str) -> dict[str, Any]:
    return {"pk": {"S": f"{INCIDENT_PREFIX}{workset_id}"}, "sk": {"S": f"{CHANNEL_PREFIX}{channel}"}}


def _typed(values: Mapping[str, Any]) -> dict[str, Any]:
    return {name: _serializer.serialize(value) for name, value in values.items()}


def _incident(item: Mapping[str, Any]) -> Incident:
    plain = {name: _deserializer.deserialize(value) for name, value in item.items() if name not in ("pk", "sk")}
    return Incident.model_validate(plain)
