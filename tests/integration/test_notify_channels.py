"""The Linear and webhook channels against real HTTP servers on this machine (local.receivers): success, outages,
rate limits, errors inside an HTTP 200 and slow answers, with secrets read from the emulator's SSM and Secrets
Manager and Linear's incidents kept in the workset table.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from boto3.dynamodb.types import TypeSerializer

from local.receivers import FakeLinear, Trouble, WebhookReceiver, rate_limited
from local.template import Template
from tests.conftest import REGION
from workset_monitor.channels.http import Deadline, PermanentFailure, TransientFailure
from workset_monitor.channels.linear import LinearChannel, LinearError
from workset_monitor.channels.webhook import WebhookChannel
from workset_monitor.credentials import SecretReader, SecretUnavailable
from workset_monitor.events import EventType, WorksetEvent
from workset_monitor.incidents import IncidentStore
from workset_monitor.models import ErrorCategory, Priority, State, Workset
from workset_monitor.notifier import ChannelFailed, Notifier, Route
from workset_monitor.routing import LinearChannelConfig, WebhookChannelConfig

pytestmark = pytest.mark.integration

SIGNING_SECRET = "whsec-local-test"
LINEAR_KEY = "lin_api_local_test"
FAST = {"timeout_seconds": 0.5, "max_attempts": 3, "max_wait_seconds": 2}
AT = datetime(2026, 12, 3, 9, 15, tzinfo=UTC)


def event(version: int, from_state: State | None, state: State, **fields: Any) -> WorksetEvent:
    kind = {
        State.ERROR: EventType.ERROR,
        State.COMPLETE: EventType.COMPLETION,
        State.CANCELED: EventType.CANCELED,
    }.get(state, EventType.STATE_CHANGE if from_state else EventType.REGISTERED)
    values: dict[str, Any] = {
        "event_type": kind,
        "workset_id": "hg003-wes-normal",
        "version": version,
        "from_state": from_state,
        "state": state,
        "priority": Priority.NORMAL,
        "attempt": 1,
        "at": AT + timedelta(minutes=version),
        **fields,
    }
    if state is State.ERROR:
        values.setdefault("error_category", ErrorCategory.DATA)
        values.setdefault("reasons", ("pipeline exited 1",))
    return WorksetEvent(**values)


def closed_port() -> int:
    """A port nothing listens on: connecting to it is refused at once, like a host whose service is down."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def secrets(deployed: Template) -> SecretReader:
    ssm = boto3.client("ssm", region_name=REGION)
    ssm.put_parameter(Name="/workset-monitor/test/notify/signing", Value=SIGNING_SECRET, Type="SecureString")
    ssm.put_parameter(Name="/workset-monitor/test/notify/linear", Value=LINEAR_KEY, Type="SecureString")
    boto3.client("secretsmanager", region_name=REGION).create_secret(
        Name="workset-monitor/test/notify/pagerduty", SecretString="R0UT1NGKEY"
    )
    return SecretReader()


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver(SIGNING_SECRET) as running:
        yield running  # type: ignore[misc]


@pytest.fixture
def linear_server() -> Iterator[FakeLinear]:
    with FakeLinear(LINEAR_KEY) as running:
        yield running  # type: ignore[misc]


def webhook(secrets: SecretReader, url: str, deadline: Deadline | None = None, **config: Any) -> WebhookChannel:
    settings = {"signing_secret": "ssm:/workset-monitor/test/notify/signing", **FAST, **config}
    return WebhookChannel(
        WebhookChannelConfig(name="hook", type="webhook", url=url, **settings),
        secrets,
        deadline=deadline or Deadline(),
        scope="workset-monitor-test-worksets",
    )


def linear(
    secrets: SecretReader, deployed: Template, url: str, *, api_key: str = "ssm:/workset-monitor/test/notify/linear"
) -> LinearChannel:
    config = LinearChannelConfig(name="linear", type="linear", team_id="team-eng", api_key=api_key, url=url, **FAST)
    incidents = IncidentStore(deployed.physical("WorksetTable").ref)
    return LinearChannel(config, secrets, incidents, deadline=Deadline(), scope="workset-monitor-test-worksets")


# --- webhooks --------------------------------------------------------------------------------------------------------


def test_a_webhook_is_posted_once_signed_and_the_receiver_verifies_it(
    secrets: SecretReader, receiver: WebhookReceiver
) -> None:
    channel = webhook(secrets, receiver.url + "/hooks/json")

    outcome = channel.deliver(event(5, State.IN_PROGRESS, State.COMPLETE))

    assert outcome == "HTTP 202"
    [delivered] = receiver.requests()
    assert (delivered.path, delivered.accepted, delivered.verified) == ("/hooks/json", True, True)
    assert delivered.headers["x-workset-event-id"] == "hg003-wes-normal#5"
    assert delivered.headers["content-type"] == "application/json"
    assert delivered.json()["event"]["state"] == "complete"


def test_a_receiver_with_another_secret_refuses_and_the_delivery_fails_without_retrying(
    secrets: SecretReader,
) -> None:
    with WebhookReceiver("not-the-same-secret") as other:
        channel = webhook(secrets, other.url + "/x")

        with pytest.raises(PermanentFailure, match="HTTP 401"):
            channel.deliver(event(5, State.IN_PROGRESS, State.COMPLETE))

        assert [(item.status, item.verified) for item in other.requests()] == [(401, False)]


def test_an_outage_fails_the_delivery_after_bounded_retries(
    secrets: SecretReader, caplog: pytest.LogCaptureFixture
) -> None:
    channel = webhook(secrets, f"http://127.0.0.1:{closed_port()}/down")

    with pytest.raises(TransientFailure, match="cannot connect"):
        channel.deliver(event(5, State.IN_PROGRESS, State.COMPLETE))

    # three attempts, two backoffs of at most 0.5 s and 1 s (counted from the log, not timed: a loaded machine is slow)
    waits = [entry.wait_seconds for entry in caplog.records if entry.getMessage() == "delivery attempt failed"]
    assert len(waits) == 2
    assert waits[0] <= 0.5 and waits[1] <= 1.0


def test_a_failed_connection_names_the_host_never_the_secret_url(
    secrets: SecretReader, caplog: pytest.LogCaptureFixture
) -> None:
    # GIVEN a Slack channel whose webhook URL (a credential) is in Secrets Manager, and its host is down
    port = closed_port()
    secret_url = f"http://127.0.0.1:{port}/services/T0SECRET/B0SECRET/XXXXSECRETTOKEN?token=SECRETQUERY"
    boto3.client("secretsmanager", region_name=REGION).create_secret(
        Name="workset-monitor/test/notify/slack", SecretString=secret_url
    )
    config = WebhookChannelConfig(
        name="lab-slack", type="webhook", format="slack", url="secretsmanager:workset-monitor/test/notify/slack", **FAST
    )
    channel = WebhookChannel(config, secrets, deadline=Deadline(), scope="workset-monitor-test-worksets")
    notifier = Notifier([Route(channel, config.filter)], persistence=None)

    # WHEN an event fails to reach it
    with pytest.raises(ChannelFailed) as failed:
        notifier.notify(stream_record(event(5, State.IN_PROGRESS, State.ERROR)))

    # THEN the failure and every log line name the channel and the host, never the URL's path or query
    message = str(failed.value)
    assert f"lab-slack: cannot connect to 127.0.0.1:{port} (NewConnectionError)" in message
    [logged] = [entry for entry in caplog.records if entry.getMessage() == "delivery failed"]
    assert (logged.channel, logged.error) == (
        "lab-slack",
        f"TransientFailure: cannot connect to 127.0.0.1:{port} (NewConnectionError)",
    )
    logs = "\n".join(str(vars(entry)) for entry in caplog.records)
    for secret in ("SECRET", "/services/", "token="):
        assert secret not in message and secret not in logs
    assert failed.value.failures["lab-slack"].__cause__ is None


def stream_record(change: WorksetEvent) -> dict[str, Any]:
    """The stream record (Lambda's shape) of a workset moving as `change` says."""

    def image(state: State | None, version: int) -> dict[str, Any]:
        workset = Workset(
            workset_id=change.workset_id,
            bucket="bucket",
            folder=f"daylily_monitoring/active_worksets/{change.workset_id}/",
            state=state or change.state,
            version=version,
            created_at=AT,
            updated_at=change.at,
            error_category=change.error_category if state is None else None,
            error_reasons=change.reasons if state is None else (),
        )
        plain = {"pk": f"WORKSET#{workset.workset_id}", "sk": "WORKSET", **workset.model_dump(mode="json")}
        return {name: TypeSerializer().serialize(value) for name, value in plain.items() if value is not None}

    keys = {"pk": {"S": f"WORKSET#{change.workset_id}"}, "sk": {"S": "WORKSET"}}
    images = {"NewImage": image(None, change.version), "OldImage": image(change.from_state, change.version - 1)}
    return {"eventName": "MODIFY", "dynamodb": {"Keys": keys, **images, "SequenceNumber": str(change.version)}}


def test_5xx_answers_are_retried_until_the_receiver_takes_the_event(
    secrets: SecretReader, receiver: WebhookReceiver
) -> None:
    receiver.trouble(Trouble(status=503), Trouble(status=502))
    channel = webhook(secrets, receiver.url + "/x")

    assert channel.deliver(event(5, State.IN_PROGRESS, State.COMPLETE)) == "HTTP 202"

    assert [item.status for item in receiver.requests()] == [503, 502, 202]
    assert len(receiver.deliveries()) == 1


def test_a_4xx_answer_is_not_retried(secrets: SecretReader, receiver: WebhookReceiver) -> None:
    receiver.trouble(Trouble(status=400, body={"error": "unknown field"}))
    channel = webhook(secrets, receiver.url + "/x")

    with pytest.raises(PermanentFailure, match="HTTP 400"):
        channel.deliver(event(5, State.IN_PROGRESS, State.COMPLETE))

    assert len(receiver.requests()) == 1


def test_a_rate_limit_is_waited_out_as_the_receiver_asks(secrets: SecretReader, receiver: WebhookReceiver) -> None:
    receiver.trouble(rate_limited(retry_after=1))
    channel = webhook(secrets, receiver.url + "/x")

    started = time.monotonic()
    assert channel.deliver(event(5, State.IN_PROGRESS, State.COMPLETE)) == "HTTP 202"

    assert time.monotonic() - started >= 1.0
    assert [item.status for item in receiver.requests()] == [429, 202]


def test_a_rate_limit_longer_than_the_delivery_may_wait_fails_it_at_once(
    secrets: SecretReader, receiver: WebhookReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.trouble(rate_limited(retry_after=60))
    channel = webhook(secrets, receiver.url + "/x")

    with pytest.raises(TransientFailure, match="later than this invocation can wait") as failed:
        channel.deliver(event(5, State.IN_PROGRESS, State.COMPLETE))

    # one request and no wait: the delivery fails at once, for the next invocation to try after the rate limit
    assert [item.status for item in receiver.requests()] == [429]
    assert "delivery attempt failed" not in caplog.text
    assert failed.value.retry_after == 60


def test_a_slow_answer_is_given_up_and_retried_and_the_event_id_lets_the_receiver_dedupe(
    secrets: SecretReader, receiver: WebhookReceiver
) -> None:
    # GIVEN a receiver that takes the first request but answers it after the channel's timeout
    receiver.trouble(Trouble(delay=1.5, takes_effect=True))
    channel = webhook(secrets, receiver.url + "/x")

    # WHEN an event is delivered
    assert channel.deliver(event(5, State.IN_PROGRESS, State.COMPLETE)) == "HTTP 202"

    # THEN the receiver got it twice (the first answer was too late), both signed, with one event id
    assert len(receiver.deliveries()) == 2
    assert all(item.verified for item in receiver.deliveries())
    assert receiver.distinct_events() == ["hg003-wes-normal#5"]


def test_a_receiver_too_slow_every_time_fails_the_delivery_within_the_invocations_deadline(
    secrets: SecretReader, receiver: WebhookReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.trouble(*[Trouble(delay=3)] * 3)
    deadline = Deadline()
    deadline.start(1.2)
    channel = webhook(secrets, receiver.url + "/x", deadline=deadline)

    with pytest.raises(TransientFailure):
        channel.deliver(event(5, State.IN_PROGRESS, State.COMPLETE))

    # the deadline, not the three attempts the channel allows, ended it: no attempt starts without time left for it
    retried = [entry for entry in caplog.records if entry.getMessage() == "delivery attempt failed"]
    assert len(retried) < 2


def test_slack_gets_its_message_shape_at_a_url_kept_in_secrets_manager(
    secrets: SecretReader, receiver: WebhookReceiver
) -> None:
    boto3.client("secretsmanager", region_name=REGION).create_secret(
        Name="workset-monitor/test/notify/slack-url", SecretString=receiver.url + "/services/T0/B0/xyz"
    )
    channel = webhook(secrets, "secretsmanager:workset-monitor/test/notify/slack-url", format="slack")

    channel.deliver(event(5, State.IN_PROGRESS, State.ERROR))

    [delivered] = receiver.deliveries()
    assert delivered.path == "/services/T0/B0/xyz"
    assert set(delivered.json()) == {"text", "blocks"}


def test_pagerduty_gets_a_trigger_then_a_resolve_and_nothing_for_other_events(secrets: SecretReader) -> None:
    with WebhookReceiver() as pagerduty:  # PagerDuty checks the routing key, not a signature
        channel = webhook(
            secrets,
            pagerduty.url + "/v2/enqueue/pagerduty",
            format="pagerduty",
            routing_key="secretsmanager:workset-monitor/test/notify/pagerduty",
            signing_secret=None,
        )

        outcomes = [
            channel.deliver(event(5, State.IN_PROGRESS, State.ERROR)),
            channel.deliver(event(6, State.ERROR, State.READY)),
            channel.deliver(event(9, State.IN_PROGRESS, State.COMPLETE)),
        ]

    assert outcomes == ["HTTP 202", "nothing to send for this event", "HTTP 202"]
    bodies = [item.json() for item in pagerduty.deliveries()]
    assert [(body["event_action"], body["dedup_key"], body["routing_key"]) for body in bodies] == [
        ("trigger", "workset-monitor/workset-monitor-test-worksets/hg003-wes-normal", "R0UT1NGKEY"),
        ("resolve", "workset-monitor/workset-monitor-test-worksets/hg003-wes-normal", "R0UT1NGKEY"),
    ]


def test_a_missing_secret_fails_the_delivery_and_says_which(secrets: SecretReader, receiver: WebhookReceiver) -> None:
    channel = webhook(secrets, receiver.url + "/x", signing_secret="ssm:/workset-monitor/test/notify/nope")

    with pytest.raises(SecretUnavailable, match="/workset-monitor/test/notify/nope"):
        channel.deliver(event(5, State.IN_PROGRESS, State.COMPLETE))

    assert receiver.requests() == []


# --- Linear ----------------------------------------------------------------------------------------------------------


def test_an_incident_opens_one_issue_gathers_comments_and_is_closed_by_the_completion(
    secrets: SecretReader, deployed: Template, linear_server: FakeLinear
) -> None:
    channel = linear(secrets, deployed, linear_server.url + "/graphql")

    outcomes = [
        channel.deliver(event(4, State.IN_PROGRESS, State.ERROR, priority=Priority.URGENT)),
        channel.deliver(event(5, State.ERROR, State.READY)),
        channel.deliver(event(8, State.IN_PROGRESS, State.ERROR, attempt=2)),
        channel.deliver(event(11, State.IN_PROGRESS, State.COMPLETE, attempt=3)),
        channel.deliver(event(12, State.COMPLETE, State.ARCHIVED, attempt=3)),
    ]

    assert outcomes == [
        "opened ENG-1",
        "commented on ENG-1",
        "commented on ENG-1",
        "commented on and closed ENG-1",
        "no open issue: nothing to say",
    ]
    [issue] = linear_server.issues.values()
    assert issue.title == "[urgent] workset hg003-wes-normal: error (data): pipeline exited 1"
    assert (issue.team_id, issue.priority) == ("team-eng", 1)
    assert "pipeline exited 1" in issue.description
    assert len(issue.comments) == 3 and "in\\_progress -> complete" in issue.comments[-1]
    assert linear_server.is_done(issue)
    assert issue.state_id == "state-done"  # the team's first completed state, by position


def test_a_failure_after_a_closed_incident_opens_a_new_issue(
    secrets: SecretReader, deployed: Template, linear_server: FakeLinear
) -> None:
    channel = linear(secrets, deployed, linear_server.url + "/graphql")

    channel.deliver(event(4, State.IN_PROGRESS, State.ERROR))
    channel.deliver(event(6, State.IN_PROGRESS, State.COMPLETE))
    outcome = channel.deliver(event(20, State.IN_PROGRESS, State.ERROR))

    assert outcome == "opened ENG-2"
    assert [linear_server.is_done(issue) for issue in linear_server.issues.values()] == [True, False]


def test_the_same_failure_delivered_again_opens_no_second_issue(
    secrets: SecretReader, deployed: Template, linear_server: FakeLinear
) -> None:
    channel = linear(secrets, deployed, linear_server.url + "/graphql")
    failure = event(4, State.IN_PROGRESS, State.ERROR)

    assert [channel.deliver(failure) for _ in range(3)] == ["opened ENG-1"] * 3

    assert len(linear_server.issues) == 1
    assert linear_server.operations.count("IssueCreate") == 1


def test_an_issue_created_whose_answer_was_lost_is_not_created_twice(
    secrets: SecretReader, deployed: Template, linear_server: FakeLinear
) -> None:
    # GIVEN Linear creates the issue but answers after the channel gave up waiting
    linear_server.trouble(Trouble(delay=1.5, takes_effect=True))
    channel = linear(secrets, deployed, linear_server.url + "/graphql")

    # WHEN the failure is delivered (the retry sends the same issue id)
    outcome = channel.deliver(event(4, State.IN_PROGRESS, State.ERROR))

    # THEN Linear refuses the duplicate id, the channel finds the issue it had asked for, and there is one issue
    assert outcome == "opened ENG-1"
    assert linear_server.operations == ["IssueCreate", "IssueCreate", "Issue"]
    assert len(linear_server.issues) == 1


def test_an_outage_leaves_the_chosen_issue_id_so_the_retry_after_it_opens_exactly_that_issue(
    secrets: SecretReader, deployed: Template
) -> None:
    port = closed_port()
    down = linear(secrets, deployed, f"http://127.0.0.1:{port}/graphql")
    failure = event(4, State.IN_PROGRESS, State.ERROR)

    with pytest.raises(TransientFailure, match="cannot connect"):
        down.deliver(failure)
    incident = IncidentStore(deployed.physical("WorksetTable").ref).get("hg003-wes-normal", "linear")
    assert incident is not None and not incident.created

    with FakeLinear(LINEAR_KEY, port=port) as back:
        assert down.deliver(failure) == "opened ENG-1"
        assert list(back.issues) == [incident.issue_id]


def test_errors_inside_an_http_200_are_failures_not_successes(
    secrets: SecretReader, deployed: Template, linear_server: FakeLinear
) -> None:
    config = LinearChannelConfig(
        name="linear",
        type="linear",
        team_id="team-that-does-not-exist",
        api_key="ssm:/workset-monitor/test/notify/linear",
        url=linear_server.url + "/graphql",
        **FAST,
    )
    channel = LinearChannel(
        config, secrets, IncidentStore(deployed.physical("WorksetTable").ref), deadline=Deadline(), scope="s"
    )

    with pytest.raises(LinearError, match="Team team-that-does-not-exist not found"):
        channel.deliver(event(4, State.IN_PROGRESS, State.ERROR))

    # one try (an invalid input does not get better by itself), then a look for the issue it may have made
    assert linear_server.operations == ["IssueCreate", "Issue"]
    assert linear_server.issues == {}


def test_a_wrong_api_key_is_refused_without_retries(
    secrets: SecretReader, deployed: Template, linear_server: FakeLinear
) -> None:
    boto3.client("ssm", region_name=REGION).put_parameter(
        Name="/workset-monitor/test/notify/linear-old", Value="lin_api_revoked", Type="SecureString"
    )
    channel = linear(
        secrets, deployed, linear_server.url + "/graphql", api_key="ssm:/workset-monitor/test/notify/linear-old"
    )

    with pytest.raises(PermanentFailure, match="Authentication required"):
        channel.deliver(event(4, State.IN_PROGRESS, State.ERROR))


@pytest.mark.parametrize(
    "trouble",
    [rate_limited(retry_after=1), rate_limited(retry_after=1, inside_200=True), Trouble(status=503)],
    ids=["http-429", "ratelimited-inside-200", "http-503"],
)
def test_rate_limits_and_5xx_are_retried_with_backoff(
    secrets: SecretReader, deployed: Template, linear_server: FakeLinear, trouble: Trouble
) -> None:
    linear_server.trouble(trouble)
    channel = linear(secrets, deployed, linear_server.url + "/graphql")

    assert channel.deliver(event(4, State.IN_PROGRESS, State.ERROR)) == "opened ENG-1"

    assert [item.accepted for item in linear_server.requests()] == [False, True]


def test_linear_too_slow_every_time_fails_and_a_later_retry_finds_the_issue_it_made(
    secrets: SecretReader, deployed: Template, linear_server: FakeLinear
) -> None:
    linear_server.trouble(*[Trouble(delay=1, takes_effect=True)] * 3)
    channel = linear(secrets, deployed, linear_server.url + "/graphql")
    failure = event(4, State.IN_PROGRESS, State.ERROR)

    with pytest.raises(TransientFailure, match=r"no answer from 127\.0\.0\.1:\d+ within"):
        channel.deliver(failure)
    assert channel.deliver(failure) == "opened ENG-1"

    assert len(linear_server.issues) == 1
