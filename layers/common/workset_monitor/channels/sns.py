"""The SNS channel: one publish per event, with a short SMS text, a full email text and filterable attributes."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import boto3

from ..events import WorksetEvent, email_text, sms_text, subject

if TYPE_CHECKING:
    from mypy_boto3_sns.client import SNSClient
    from mypy_boto3_sns.type_defs import MessageAttributeValueTypeDef


def message_attributes(event: WorksetEvent) -> dict[str, MessageAttributeValueTypeDef]:
    """The attributes subscription filter policies match on."""
    values = {
        "workset_id": event.workset_id,
        "event_type": event.event_type.value,
        "state": event.state.value,
        "priority": event.priority.value,
    }
    return {name: {"DataType": "String", "StringValue": value} for name, value in values.items()}


def message(event: WorksetEvent) -> str:
    """The per-protocol message: SMS subscribers get the short text, email the full one, others the event JSON."""
    return json.dumps(
        {
            "default": event.model_dump_json(exclude_none=True),
            "sms": sms_text(event),
            "email": email_text(event),
        }
    )


class SnsChannel:
    """Publishes each event to one topic; subscriptions choose what they get with filter policies."""

    def __init__(self, topic_arn: str, client: SNSClient | None = None, *, name: str = "sns") -> None:
        self.name = name
        self.topic_arn = topic_arn
        self.client: SNSClient = client or boto3.client("sns")

    def deliver(self, event: WorksetEvent) -> str:
        response = self.client.publish(
            TopicArn=self.topic_arn,
            Subject=subject(event),
            Message=message(event),
            MessageStructure="json",
            MessageAttributes=message_attributes(event),
        )
        return response["MessageId"]
