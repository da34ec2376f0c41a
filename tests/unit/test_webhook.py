"""Webhook bodies and signatures: our JSON, Slack's message shape, PagerDuty Events v2, and how a receiver verifies."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import timedelta

import pytest

from workset_monitor.channels.webhook import (
    PAGERDUTY_DEDUP_KEY_CHARS,
    event_id,
    json_body,
    pagerduty_body,
    pagerduty_dedup_key,
    signature,
    signed_headers,
    slack_body,
    verify_signature,
)
from workset_monitor.events import describe_change
from workset_monitor.models import ErrorCategory, Priority, State

SECRET = "whsec-test-0123456789"
BODY = b'{"id":"hg002#7","type":"completion"}'
NOW = 1_764_763_200


@pytest.fixture
def event(make_workset, now):
    def build(from_state, to_state, **fields):
        old = None if from_state is None else make_workset(state=from_state, version=6, **_keep(fields))
        new = make_workset(state=to_state, version=7, updated_at=now + timedelta(minutes=1), **fields)
        return describe_change(old, new)

    return build


def _keep(fields):
    return {name: value for name, value in fields.items() if name in ("workset_id", "priority")}


# --- signatures ------------------------------------------------------------------------------------------------------


def test_the_signature_is_hmac_sha256_over_timestamp_dot_body_in_lowercase_hex():
    expected = hmac.new(SECRET.encode(), b"1764763200." + BODY, hashlib.sha256).hexdigest()

    assert signature(SECRET, NOW, BODY) == f"v1={expected}"
    assert signed_headers(SECRET, BODY, NOW) == {
        "X-Workset-Timestamp": "1764763200",
        "X-Workset-Signature": f"v1={expected}",
    }


def test_a_receiver_accepts_a_fresh_request_signed_with_its_secret():
    headers = signed_headers(SECRET, BODY, NOW)

    assert verify_signature(SECRET, BODY, headers["X-Workset-Timestamp"], headers["X-Workset-Signature"], now=NOW + 10)


@pytest.mark.parametrize(
    ("secret", "body", "now"),
    [
        ("another-secret", BODY, NOW),
        (SECRET, BODY.replace(b"completion", b"error"), NOW),
        (SECRET, BODY, NOW + 301),
        (SECRET, BODY, NOW - 301),
    ],
    ids=["wrong-secret", "body-changed", "replayed-later", "from-the-future"],
)
def test_a_receiver_refuses_a_forged_changed_or_replayed_request(secret, body, now):
    headers = signed_headers(SECRET, BODY, NOW)

    assert not verify_signature(secret, body, headers["X-Workset-Timestamp"], headers["X-Workset-Signature"], now=now)


def test_a_receiver_refuses_missing_or_malformed_headers_and_accepts_one_of_several_signatures():
    good = signature(SECRET, NOW, BODY)

    assert not verify_signature(SECRET, BODY, None, good, now=NOW)
    assert not verify_signature(SECRET, BODY, "yesterday", good, now=NOW)
    assert not verify_signature(SECRET, BODY, str(NOW), None, now=NOW)
    assert verify_signature(SECRET, BODY, str(NOW), f"v1=00ff, {good}", now=NOW)  # during a rotation


def test_the_event_id_is_ascii_and_names_the_workset_and_version(event):
    assert event_id(event(State.IN_PROGRESS, State.COMPLETE, workset_id="hg002 runé#1")) == "hg002%20run%C3%A9%231#7"


# --- bodies ----------------------------------------------------------------------------------------------------------


def test_the_json_body_carries_the_whole_event(event):
    failed = event(State.IN_PROGRESS, State.ERROR, error_category=ErrorCategory.DATA, error_reasons=("bad read",))

    body = json_body(failed)

    assert body["id"] == "ws-1#7"
    assert body["type"] == "error"
    assert body["text"] == "[normal] workset ws-1: error (data): bad read"
    assert body["event"]["reasons"] == ["bad read"]
    assert body["event"]["from_state"] == "in_progress"
    json.dumps(body)


def test_the_slack_body_has_a_fallback_text_and_blocks_within_slacks_limits(event):
    failed = event(
        State.IN_PROGRESS,
        State.ERROR,
        workset_id="w" * 300,
        cluster="c1",
        error_category=ErrorCategory.DATA,
        error_reasons=("<script> & friends",) + ("a long reason " * 40,) * 50,
    )

    body = slack_body(failed)

    assert body["text"].startswith("[normal] workset www")
    header, section, reasons, context = body["blocks"]
    assert header["type"] == "header" and len(header["text"]["text"]) <= 150
    assert section["text"]["text"].startswith(":red_circle: *[normal] workset ")
    fields = {field["text"].split("\n")[0]: field["text"].split("\n")[1] for field in section["fields"]}
    assert fields == {
        "*State*": "in_progress → error",
        "*Priority*": "normal",
        "*Attempt*": "1",
        "*Cluster*": "c1",
        "*Category*": "data",
    }
    assert len(reasons["text"]["text"]) <= 3000
    assert reasons["text"]["text"].startswith("• &lt;script&gt; &amp; friends\n")
    assert context["type"] == "context"


def test_pagerduty_triggers_on_a_failure_with_the_worksets_dedup_key(event):
    failed = event(
        State.IN_PROGRESS,
        State.ERROR,
        priority=Priority.URGENT,
        cluster="c1",
        error_category=ErrorCategory.RESOURCE,
        error_reasons=("out of scratch",),
    )

    body = pagerduty_body(failed, routing_key="R0UT1NG", scope="workset-monitor-dev-worksets")

    assert body is not None
    assert body["routing_key"] == "R0UT1NG"
    assert body["event_action"] == "trigger"
    assert body["dedup_key"] == "workset-monitor/workset-monitor-dev-worksets/ws-1"
    payload = body["payload"]
    assert payload["summary"] == "[urgent] workset ws-1: error (resource): out of scratch"
    assert (payload["severity"], payload["source"], payload["component"], payload["class"]) == (
        "critical",
        "c1",
        "ws-1",
        "resource",
    )
    assert payload["custom_details"]["attempt"] == 1


def test_pagerduty_resolves_the_same_alert_once_the_workset_settles_and_ignores_other_events(event):
    scope = "t"
    completion = pagerduty_body(event(State.IN_PROGRESS, State.COMPLETE), routing_key="R", scope=scope)
    canceled = pagerduty_body(event(State.READY, State.CANCELED), routing_key="R", scope=scope)
    claimed = pagerduty_body(event(State.READY, State.LOCKED), routing_key="R", scope=scope)

    assert completion == {"routing_key": "R", "event_action": "resolve", "dedup_key": "workset-monitor/t/ws-1"}
    assert canceled is not None and canceled["event_action"] == "resolve"
    assert claimed is None


def test_a_retry_that_will_happen_by_itself_is_only_a_warning(event, now):
    waiting = event(
        State.IN_PROGRESS,
        State.ERROR,
        priority=Priority.URGENT,
        error_category=ErrorCategory.TRANSIENT,
        retry_at=now + timedelta(minutes=2),
    )
    assert waiting.event_type == "retry_scheduled"

    body = pagerduty_body(waiting, routing_key="R", scope="t")

    assert body is not None and body["payload"]["severity"] == "warning"


def test_a_long_workset_id_still_makes_a_dedup_key_pagerduty_takes():
    key = pagerduty_dedup_key("w" * 400, "scope")

    assert len(key) <= PAGERDUTY_DEDUP_KEY_CHARS
    assert key == pagerduty_dedup_key("w" * 400, "scope")
    assert key != pagerduty_dedup_key("w" * 401, "scope")
