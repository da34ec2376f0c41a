"""The webhook channel: one signed JSON POST per event, as our own JSON, a Slack message or a PagerDuty event.

Every request carries, when the channel has a signing secret:

    X-Workset-Timestamp: 1764763200                  unix seconds when the request was signed
    X-Workset-Signature: v1=<hex>                    HMAC-SHA256(secret, "<timestamp>.<raw body>"), lowercase hex
    X-Workset-Event-Id: hg002-giab-wgs-30x#7         the same for every retry of one event: dedupe on it

A receiver verifies it as `verify_signature` does: recompute the HMAC over the timestamp, a dot and the raw body
bytes as received, compare in constant time, and refuse a timestamp more than five minutes from its own clock (so
a captured request cannot be replayed later). Each attempt is signed afresh with its own timestamp.

Bodies are pure functions of the event (`json_body`, `slack_body`, `pagerduty_body`); the channel class sends them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote

import requests

from ..credentials import SecretReader
from ..events import FAILURE_EVENTS, SETTLED_STATES, EventType, WorksetEvent, email_text, title
from ..models import Priority
from ..routing import SECRETS_MANAGER_SCHEME, SSM_SCHEME, WebhookChannelConfig
from .http import Deadline, RetryPolicy, check_status, post, with_retries

TIMESTAMP_HEADER = "X-Workset-Timestamp"
SIGNATURE_HEADER = "X-Workset-Signature"
EVENT_ID_HEADER = "X-Workset-Event-Id"
SIGNATURE_VERSION = "v1"
REPLAY_WINDOW_SECONDS = 300

SLACK_HEADER_CHARS = 150
SLACK_SECTION_CHARS = 3000
PAGERDUTY_SUMMARY_CHARS = 1024
PAGERDUTY_DEDUP_KEY_CHARS = 255

_SLACK_ICONS = {
    EventType.REGISTERED: ":inbox_tray:",
    EventType.STATE_CHANGE: ":arrow_right:",
    EventType.ERROR: ":red_circle:",
    EventType.COMPLETION: ":white_check_mark:",
    EventType.LEASE_EXPIRED: ":hourglass:",
    EventType.RETRY_SCHEDULED: ":repeat:",
    EventType.CANCELED: ":no_entry_sign:",
}


# --- signing ---------------------------------------------------------------------------------------------------------


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """`v1=` and the lowercase hex HMAC-SHA256 of `<timestamp>.<body>` under `secret`."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"{SIGNATURE_VERSION}={digest}"


def signed_headers(secret: str, body: bytes, timestamp: int) -> dict[str, str]:
    return {TIMESTAMP_HEADER: str(timestamp), SIGNATURE_HEADER: signature(secret, timestamp, body)}


def verify_signature(
    secret: str,
    body: bytes,
    timestamp_header: str | None,
    signature_header: str | None,
    *,
    now: float | None = None,
    tolerance: int = REPLAY_WINDOW_SECONDS,
) -> bool:
    """What a receiver does: the timestamp is within `tolerance` seconds of `now`, and one `v1=` signature of the
    header (several may be given, comma-separated, while a secret is rotated) matches, compared in constant time."""
    if not timestamp_header or not signature_header or not timestamp_header.strip().isdigit():
        return False
    timestamp = int(timestamp_header.strip())
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        return False

    expected = signature(secret, timestamp, body)
    offered = [part.strip() for part in signature_header.split(",")]
    return any(hmac.compare_digest(expected, candidate) for candidate in offered)


def event_id(event: WorksetEvent) -> str:
    """Names one event across retries and redeliveries; ASCII, so it fits a header (the id is percent-encoded)."""
    return f"{quote(event.workset_id, safe='')}#{event.version}"


# --- bodies ----------------------------------------------------------------------------------------------------------


def json_body(event: WorksetEvent) -> dict[str, Any]:
    """Our own shape: the event's id and type, a one-line text, and every field of the event."""
    return {
        "id": event_id(event),
        "type": event.event_type.value,
        "text": title(event),
        "event": event.model_dump(mode="json", exclude_none=True),
    }


def slack_body(event: WorksetEvent) -> dict[str, Any]:
    """A Slack incoming-webhook message: `text` (what notifications show) and blocks within Slack's limits."""
    fields = [
        ("State", f"{event.from_state or '(new)'} → {event.state}"),
        ("Priority", event.priority.value),
        ("Attempt", str(event.attempt)),
    ]
    if event.cluster:
        fields.append(("Cluster", event.cluster))
    if event.error_category:
        fields.append(("Category", event.error_category.value))
    if event.retry_at:
        fields.append(("Retry at", f"{event.retry_at:%Y-%m-%d %H:%M:%S} UTC (automatic)"))

    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {"type": "plain_text", "text": _cut(f"workset {event.workset_id}", SLACK_HEADER_CHARS)},
        },
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": f"{_SLACK_ICONS[event.event_type]} *{_slack(title(event, 500))}*"},
            "fields": [{"type": "mrkdwn", "text": f"*{name}*\n{_slack(value)}"} for name, value in fields],
        },
    ]
    if event.reasons:
        reasons = "\n".join(f"• {_slack(reason)}" for reason in event.reasons)
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _cut(reasons, SLACK_SECTION_CHARS)}})
    blocks.append(
        {
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": f"{event.event_type.value} · {event.at.isoformat()}"}],
        }
    )
    return {"text": title(event), "blocks": blocks}


def pagerduty_body(event: WorksetEvent, *, routing_key: str, scope: str) -> dict[str, Any] | None:
    """A PagerDuty Events v2 event: `trigger` for a failure, `resolve` once the workset settled (complete,
    canceled, ignored, archived), None for any other event (PagerDuty has nothing to do with it).

    One alert per workset: the dedup key is the same for all its events, so later failures add to the open alert
    and a resolve closes it.
    """
    dedup_key = pagerduty_dedup_key(event.workset_id, scope)
    if event.event_type in FAILURE_EVENTS:
        return {
            "routing_key": routing_key,
            "event_action": "trigger",
            "dedup_key": dedup_key,
            "payload": {
                "summary": _cut(title(event, PAGERDUTY_SUMMARY_CHARS), PAGERDUTY_SUMMARY_CHARS),
                "source": event.cluster or "workset-monitor",
                "severity": _severity(event),
                "timestamp": event.at.isoformat(),
                "component": event.workset_id,
                "group": event.cluster or "unassigned",
                "class": (event.error_category or event.event_type).value,
                "custom_details": {**event.model_dump(mode="json", exclude_none=True), "text": email_text(event)},
            },
        }
    if event.state in SETTLED_STATES:
        return {"routing_key": routing_key, "event_action": "resolve", "dedup_key": dedup_key}
    return None


def pagerduty_dedup_key(workset_id: str, scope: str) -> str:
    """`workset-monitor/<scope>/<workset id>`, or its SHA-256 when longer than PagerDuty's 255 characters."""
    key = f"workset-monitor/{scope}/{workset_id}"
    if len(key) <= PAGERDUTY_DEDUP_KEY_CHARS:
        return key
    return f"workset-monitor/{hashlib.sha256(key.encode()).hexdigest()}"


def _severity(event: WorksetEvent) -> str:
    if event.event_type is EventType.RETRY_SCHEDULED:
        return "warning"
    return {Priority.URGENT: "critical", Priority.NORMAL: "error", Priority.LOW: "warning"}[event.priority]


def _slack(text: str) -> str:
    """Slack's mrkdwn escaping: only &, < and > are special."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- the channel -----------------------------------------------------------------------------------------------------


class WebhookChannel:
    """POSTs each event to one URL in the configured format, signed when a signing secret is configured.

    Limitations:
        a request that timed out may have been processed: the retry sends the same event again, with the same
        `X-Workset-Event-Id`, which is what a receiver dedupes on.
    """

    def __init__(
        self,
        config: WebhookChannelConfig,
        secrets: SecretReader,
        *,
        deadline: Deadline,
        scope: str,
        session: requests.Session | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = config.name
        self.config = config
        self.secrets = secrets
        self.deadline = deadline
        self.scope = scope
        self.session = session or requests.Session()
        self.clock = clock
        self.policy = RetryPolicy(
            attempts=config.max_attempts, timeout=config.timeout_seconds, max_wait=config.max_wait_seconds
        )

    def deliver(self, event: WorksetEvent) -> str:
        body = self._body(event)
        if body is None:
            return "nothing to send for this event"

        raw = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
        url = self._value(self.config.url)
        secret = self.secrets.read(self.config.signing_secret) if self.config.signing_secret else None

        def attempt(timeout: float) -> requests.Response:
            headers = {EVENT_ID_HEADER: event_id(event)}
            if secret is not None:
                headers.update(signed_headers(secret, raw, int(self.clock())))
            response = post(self.session, url, body=raw, headers=headers, timeout=timeout)
            check_status(response)
            return response

        response = with_retries(attempt, self.policy, self.deadline, channel=self.name)
        return f"HTTP {response.status_code}"

    def _body(self, event: WorksetEvent) -> Mapping[str, Any] | None:
        if self.config.format == "slack":
            return slack_body(event)
        if self.config.format == "pagerduty":
            assert self.config.routing_key is not None  # the configuration requires it for this format
            return pagerduty_body(event, routing_key=self.secrets.read(self.config.routing_key), scope=self.scope)
        return json_body(event)

    def _value(self, value: str) -> str:
        """A configured value, or the secret it names."""
        return self.secrets.read(value) if value.startswith((SSM_SCHEME, SECRETS_MANAGER_SCHEME)) else value
