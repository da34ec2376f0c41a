"""What a change of a workset means to the people watching it. Pure: a stream record's images in, an event out."""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict

from .models import ErrorCategory, Priority, State, Workset

SMS_SEPTETS = 160
"""One SMS segment in the GSM 03.38 alphabet, in septets (characters of its extension table take two)."""

SMS_UCS2_UNITS = 70
"""One SMS segment once any character is outside GSM 03.38: UTF-16 code units."""

_GSM_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM_EXTENSION = frozenset("^{}\\[~]|€\f")

SUBJECT_LIMIT = 99
"""SNS takes a subject of less than 100 characters, ASCII only, with no line breaks or control characters."""


class EventType(StrEnum):
    REGISTERED = "registered"
    STATE_CHANGE = "state_change"
    ERROR = "error"
    COMPLETION = "completion"
    LEASE_EXPIRED = "lease_expired"
    RETRY_SCHEDULED = "retry_scheduled"
    CANCELED = "canceled"


FAILURE_EVENTS = frozenset({EventType.ERROR, EventType.LEASE_EXPIRED, EventType.RETRY_SCHEDULED})
"""Events that say an attempt failed: they open an incident (a Linear issue, a PagerDuty alert) or add to it."""

SETTLED_STATES = frozenset({State.COMPLETE, State.CANCELED, State.IGNORED, State.ARCHIVED})
"""States after which a workset does not fail again by itself: an open incident about it is over."""


class WorksetEvent(BaseModel):
    """One notification-worthy change of one workset."""

    model_config = ConfigDict(frozen=True)

    event_type: EventType
    workset_id: str
    version: int
    from_state: State | None
    state: State
    priority: Priority
    attempt: int
    at: datetime
    cluster: str | None = None
    error_category: ErrorCategory | None = None
    reasons: tuple[str, ...] = ()
    retry_at: datetime | None = None
    progress: str | None = None

    @property
    def dedup_key(self) -> str:
        """Names this event once: a redelivered stream record yields the same key."""
        return f"{self.workset_id}#{self.version}"


def describe_change(old: Workset | None, new: Workset) -> WorksetEvent | None:
    """The event a change from `old` to `new` stands for, or None when the state did not change (heartbeats,
    assignments)."""
    if old is not None and old.state is new.state:
        return None

    return WorksetEvent(
        event_type=_event_type(old, new),
        workset_id=new.workset_id,
        version=new.version,
        from_state=old.state if old else None,
        state=new.state,
        priority=new.priority,
        attempt=new.attempt,
        at=new.updated_at,
        cluster=new.cluster,
        error_category=new.error_category,
        reasons=new.error_reasons,
        retry_at=new.retry_at,
        progress=new.progress,
    )


def _event_type(old: Workset | None, new: Workset) -> EventType:
    if old is None:
        return EventType.ERROR if new.state is State.ERROR else EventType.REGISTERED
    if new.state is State.ERROR:
        if new.error_category is ErrorCategory.LEASE_EXPIRED:
            return EventType.LEASE_EXPIRED
        # A failure that will retry by itself is not yet one a person must act on.
        return EventType.RETRY_SCHEDULED if new.retry_at is not None else EventType.ERROR
    if new.state is State.COMPLETE:
        return EventType.COMPLETION
    if new.state is State.CANCELED:
        return EventType.CANCELED
    return EventType.STATE_CHANGE


def subject(event: WorksetEvent) -> str:
    """An email subject as SNS takes it: one line of ASCII, under 100 characters. Accents are dropped (é -> e),
    other non-ASCII letters become "?"; the message itself keeps the exact workset id."""
    text = f"[{event.priority}] workset {event.workset_id}: {headline(event)}"
    return _one_line(_ascii(text), SUBJECT_LIMIT)


def title(event: WorksetEvent, limit: int = 250) -> str:
    """The subject's words on one line, the workset id exact (not folded to ASCII): for Linear, Slack, PagerDuty."""
    return _one_line(f"[{event.priority}] workset {event.workset_id}: {headline(event)}", limit)


def sms_text(event: WorksetEvent) -> str:
    """A text that fits one SMS segment, counted as the phone network counts it."""
    text = _one_line(f"{event.workset_id}: {headline(event)}", 10_000)
    if all(ch in _GSM_BASIC or ch in _GSM_EXTENSION for ch in text):
        return _fit(text, SMS_SEPTETS, lambda ch: 2 if ch in _GSM_EXTENSION else 1)
    return _fit(text, SMS_UCS2_UNITS, lambda ch: 2 if ord(ch) > 0xFFFF else 1)


def email_text(event: WorksetEvent) -> str:
    """The full text: everything a person needs to act."""
    lines = [
        f"Workset:   {event.workset_id}",
        f"Event:     {event.event_type}",
        f"State:     {event.from_state or '(new)'} -> {event.state}",
        f"Priority:  {event.priority}",
        f"Attempt:   {event.attempt}",
        f"When:      {event.at.isoformat()}",
    ]
    if event.cluster:
        lines.append(f"Cluster:   {event.cluster}")
    if event.error_category:
        lines.append(f"Category:  {event.error_category}")
    if event.retry_at:
        lines.append(f"Retry at:  {event.retry_at.isoformat()} (automatic)")
    if event.reasons:
        lines.append("Reasons:")
        lines.extend(f"  - {reason}" for reason in event.reasons)
    return "\n".join(lines) + "\n"


def headline(event: WorksetEvent) -> str:
    """What happened, in a few words: `in_progress -> complete`, `error (transient, retry at ...): <first reason>`."""
    if event.event_type in (EventType.ERROR, EventType.LEASE_EXPIRED, EventType.RETRY_SCHEDULED):
        first = f": {event.reasons[0]}" if event.reasons else ""
        retry = f", retry at {event.retry_at:%H:%M:%S} UTC" if event.retry_at else ""
        return f"error ({event.error_category}{retry}){first}"
    if event.from_state is None:
        return f"registered, {event.state}"
    return f"{event.from_state} -> {event.state}"


def _ascii(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch if ch.isascii() else ("" if unicodedata.combining(ch) else "?") for ch in decomposed)


def _one_line(text: str, limit: int) -> str:
    """Control characters (line breaks, terminal escapes) become spaces, runs of space one, cut at `limit`."""
    printable = "".join(" " if unicodedata.category(ch).startswith("C") else ch for ch in text)
    return _fit(" ".join(printable.split()), limit, lambda ch: 1)


def _fit(text: str, limit: int, cost: Callable[[str], int]) -> str:
    """`text`, or as much of it as fits in `limit` with "..." after it, counting each character's `cost`."""
    if sum(cost(ch) for ch in text) <= limit:
        return text

    kept, used = [], 3
    for ch in text:
        if used + cost(ch) > limit:
            break
        kept.append(ch)
        used += cost(ch)
    return "".join(kept) + "..."
