"""Which channel wants which event, and the channels' configuration: read once, refused with every reason."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from workset_monitor.events import EventType, describe_change
from workset_monitor.models import ErrorCategory, Priority, State
from workset_monitor.routing import (
    ConfigurationError,
    LinearChannelConfig,
    RouteFilter,
    SnsChannelConfig,
    WebhookChannelConfig,
    parse_channels,
)

PREFIX = "workset-monitor/dev/notify/"


def channels(*entries: dict) -> str:
    return json.dumps(list(entries))


@pytest.fixture
def event(make_workset, now):
    """An event of a workset moving from `from_state` to `to_state`."""

    def build(from_state, to_state, **fields):
        old = make_workset(state=from_state, version=3)
        new = make_workset(state=to_state, version=4, updated_at=now + timedelta(minutes=1), **fields)
        return describe_change(old, new)

    return build


def test_without_configuration_every_event_goes_to_sns_only():
    assert parse_channels("") == [SnsChannelConfig(name="sns", type="sns")]
    assert parse_channels(None) == parse_channels("   ")


def test_a_full_configuration_is_read_into_typed_channels():
    configured = parse_channels(
        channels(
            {"name": "ops", "type": "sns"},
            {
                "name": "linear",
                "type": "linear",
                "team_id": "team-1",
                "api_key": f"ssm:/{PREFIX}linear",
                "filter": {"event_types": ["error", "completion"], "priorities": ["urgent"]},
            },
            {"name": "lab-slack", "type": "webhook", "format": "slack", "url": f"secretsmanager:{PREFIX}slack-url"},
            {
                "name": "oncall",
                "type": "webhook",
                "format": "pagerduty",
                "url": "https://events.pagerduty.com/v2/enqueue",
                "routing_key": f"secretsmanager:arn:aws:secretsmanager:us-west-2:1:secret:{PREFIX}pd-AbCdEf",
            },
            {
                "name": "lims",
                "type": "webhook",
                "url": "https://lims.example.org/hooks",
                "signing_secret": f"ssm:/{PREFIX}k",
            },
        ),
        secrets_prefix=PREFIX,
    )

    assert [type(channel) for channel in configured] == [
        SnsChannelConfig,
        LinearChannelConfig,
        WebhookChannelConfig,
        WebhookChannelConfig,
        WebhookChannelConfig,
    ]
    linear = configured[1]
    assert isinstance(linear, LinearChannelConfig)
    assert linear.filter == RouteFilter(event_types={EventType.ERROR, EventType.COMPLETION}, priorities={"urgent"})
    assert linear.url == "https://api.linear.app/graphql"
    assert (linear.timeout_seconds, linear.max_attempts) == (4.0, 3)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{not json", "NOTIFY_CHANNELS is not JSON"),
        ('{"name": "sns", "type": "sns"}', "not a valid channel list"),
        (channels({"name": "x", "type": "carrier-pigeon"}), "channel x: .*tag 'carrier-pigeon'"),
        (channels({"name": "Ops Team", "type": "sns"}), "channel Ops Team: name: String should match pattern"),
        (channels({"name": "a", "type": "sns"}, {"name": "a", "type": "sns"}), "'a' is used more than once"),
        (channels({"name": "a", "type": "sns", "filter": {"states": ["flying"]}}), "channel a: filter.states"),
        (channels({"name": "a", "type": "sns", "filter": {"event_types": []}}), "channel a: filter.event_types"),
        (channels({"name": "a", "type": "sns", "filtre": {}}), "channel a: filtre: Extra inputs are not permitted"),
        (
            channels({"name": "l", "type": "linear", "team_id": "t", "api_key": "lin_api_0123456789"}),
            "channel l: api_key: .*never the secret itself",
        ),
        (
            channels({"name": "w", "type": "webhook", "url": "http://hooks.example.org/x", "signing_secret": "ssm:/k"}),
            "channel w: url: .*https URL",
        ),
        (
            channels({"name": "w", "type": "webhook", "url": "https://h.example.org"}),
            "json webhook needs a signing_secret",
        ),
        (
            channels({"name": "p", "type": "webhook", "format": "pagerduty", "url": "https://events.pagerduty.com/x"}),
            "routing_key is required for format pagerduty",
        ),
        (
            channels(
                {"name": "s", "type": "webhook", "format": "slack", "url": "https://hooks.slack.com/services/T/B/X"}
            ),
            "channel s: .*a Slack webhook URL is a credential: keep it in Secrets Manager or SSM",
        ),
        (
            channels({"name": "s", "type": "webhook", "format": "slack", "url": "http://127.0.0.1:9/services/T/B/X"}),
            "channel s: .*a Slack webhook URL is a credential",
        ),
        (
            channels(
                {
                    "name": "j",
                    "type": "webhook",
                    "url": "https://hooks.slack.com/services/T/B/X",
                    "signing_secret": "ssm:/k",
                }
            ),
            "channel j: .*a Slack webhook URL is a credential",
        ),
        (
            channels(
                {
                    "name": "w",
                    "type": "webhook",
                    "url": "https://bot:hunter2@h.example.org/x",
                    "signing_secret": "ssm:/k",
                }
            ),
            "channel w: url: .*a URL with a user name, a password or a query string holds credentials",
        ),
        (
            channels(
                {"name": "w", "type": "webhook", "url": "https://h.example.org/x?token=abc", "signing_secret": "ssm:/k"}
            ),
            "channel w: url: .*holds credentials: keep it in Secrets Manager or SSM and give url as secretsmanager:",
        ),
        (
            channels(
                {"name": "l", "type": "linear", "team_id": "t", "api_key": "ssm:/k", "url": "https://x.example/g?key=1"}
            ),
            "channel l: url: .*holds credentials",
        ),
    ],
    ids=[
        "not-json",
        "not-a-list",
        "unknown-type",
        "bad-name",
        "duplicate-names",
        "unknown-state",
        "empty-filter-list",
        "misspelled-field",
        "secret-in-the-configuration",
        "plain-http-elsewhere",
        "unsigned-json-webhook",
        "pagerduty-without-routing-key",
        "slack-url-in-plaintext",
        "slack-url-in-plaintext-even-locally",
        "slack-url-in-plaintext-as-a-json-webhook",
        "url-with-userinfo",
        "url-with-a-query",
        "linear-url-with-a-query",
    ],
)
def test_a_bad_configuration_is_refused_with_a_clear_reason(text, expected):
    with pytest.raises(ConfigurationError, match=expected):
        parse_channels(text)


def test_secrets_outside_the_functions_prefix_are_refused_before_any_notification():
    text = channels(
        {"name": "l", "type": "linear", "team_id": "t", "api_key": "ssm:/other-app/linear"},
        {"name": "w", "type": "webhook", "url": "https://h.example.org", "signing_secret": "secretsmanager:prod/key"},
    )

    with pytest.raises(ConfigurationError) as refused:
        parse_channels(text, secrets_prefix=PREFIX)

    assert "channel l: 'ssm:/other-app/linear' is outside what the function may read" in str(refused.value)
    assert "channel w: 'secretsmanager:prod/key' is outside" in str(refused.value)


def test_plain_http_is_allowed_to_this_machine_only():
    [local] = parse_channels(
        channels({"name": "w", "type": "webhook", "url": "http://127.0.0.1:8080/x", "signing_secret": "ssm:/k"})
    )

    assert isinstance(local, WebhookChannelConfig)


def test_a_filter_admits_an_event_only_when_every_list_given_does(event):
    urgent_failure = event(State.IN_PROGRESS, State.ERROR, priority=Priority.URGENT, error_category=ErrorCategory.DATA)
    normal_failure = event(State.IN_PROGRESS, State.ERROR, error_category=ErrorCategory.DATA)
    completion = event(State.IN_PROGRESS, State.COMPLETE, priority=Priority.URGENT)

    failures_of_urgent = RouteFilter(event_types={EventType.ERROR}, priorities={Priority.URGENT})
    entering_complete = RouteFilter(states={State.COMPLETE})

    assert [failures_of_urgent.admits(e) for e in (urgent_failure, normal_failure, completion)] == [True, False, False]
    assert [entering_complete.admits(e) for e in (urgent_failure, normal_failure, completion)] == [False, False, True]
    assert all(RouteFilter().admits(e) for e in (urgent_failure, normal_failure, completion))
