"""What the template declares for notifications, deployed into the emulator: the optional email and SMS subscriptions
with their filter policies, the delivery table, and the notify function's environment."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest

from local.template import Template
from tests.conftest import REGION

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent.parent


def deploy(**parameters: str) -> Template:
    template = Template.load(ROOT / "template.yaml", parameters={"Stage": "test", **parameters}, region=REGION)
    template.deploy(lambda service: boto3.client(service, region_name=REGION))
    return template


def subscriptions(template: Template) -> dict[str, dict[str, str]]:
    sns = boto3.client("sns", region_name=REGION)
    listed = sns.list_subscriptions_by_topic(TopicArn=template.physical("WorksetTopic").ref)["Subscriptions"]
    return {
        item["Protocol"]: sns.get_subscription_attributes(SubscriptionArn=item["SubscriptionArn"])["Attributes"]
        for item in listed
    }


def test_without_an_address_or_number_nobody_is_subscribed(aws: None) -> None:
    assert subscriptions(deploy()) == {}


def test_an_email_address_and_a_phone_number_are_subscribed_with_their_filter_policies(aws: None) -> None:
    template = deploy(NotifyEmail="oncall@lab.example.org", NotifySmsNumber="+15555550100")

    subscribed = subscriptions(template)

    assert subscribed["email"]["Endpoint"] == "oncall@lab.example.org"
    assert json.loads(subscribed["email"]["FilterPolicy"]) == {
        "event_type": ["error", "lease_expired", "completion", "canceled"]
    }
    assert subscribed["sms"]["Endpoint"] == "+15555550100"
    assert json.loads(subscribed["sms"]["FilterPolicy"]) == {
        "event_type": ["error", "lease_expired"],
        "priority": ["urgent"],
    }
    assert {item["FilterPolicyScope"] for item in subscribed.values()} == {"MessageAttributes"}


def test_a_phone_number_that_is_not_e164_is_refused_by_the_template() -> None:
    with pytest.raises(Exception, match="NotifySmsNumber"):
        Template.load(ROOT / "template.yaml", parameters={"NotifySmsNumber": "555-0100"})


def test_the_notify_function_knows_its_channels_delivery_table_and_secret_prefix(aws: None) -> None:
    template = deploy()
    [notify] = [spec for spec in template.functions() if spec.logical_id == "NotifyFunction"]

    assert json.loads(notify.environment["NOTIFY_CHANNELS"]) == [{"name": "sns", "type": "sns"}]
    assert notify.environment["NOTIFY_SECRETS_PREFIX"] == "workset-monitor/test/notify/"
    assert notify.environment["IDEMPOTENCY_TABLE"] == "workset-monitor-test-notify-deliveries"
    assert notify.timeout == 60
    table = boto3.client("dynamodb", region_name=REGION)
    ttl = table.describe_time_to_live(TableName="workset-monitor-test-notify-deliveries")["TimeToLiveDescription"]
    assert (ttl["TimeToLiveStatus"], ttl["AttributeName"]) == ("ENABLED", "expiration")
