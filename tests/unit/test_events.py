"""What a change of a workset means to people: event types, SMS, email and SNS message shapes."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from workset_monitor.channels.sns import message, message_attributes
from workset_monitor.events import EventType, WorksetEvent, describe_change, email_text, sms_text, subject
from workset_monitor.models import ErrorCategory, Lease, Priority, State

LONG_REASON = "stage_samples.tsv line 7: R1_FQ 's3://bucket' is not a full s3://bucket/key URI; " * 25
UNICODE_ID = "Probe Müller Ø trio échantillon Ünal"

# GSM 03.38: the basic alphabet (one septet each) and the extension table (two septets each: escape + char).
GSM_BASIC = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿"
    "abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM_EXTENSION = set("^{}\\[~]|€")


def gsm_septets(text: str) -> int:
    """Septets `text` takes in GSM-7; raises ValueError on a character GSM-7 cannot carry."""
    total = 0
    for char in text:
        if char in GSM_BASIC:
            total += 1
        elif char in GSM_EXTENSION:
            total += 2
        else:
            raise ValueError(f"{char!r} is not in the GSM-7 alphabet")
    return total


@pytest.fixture
def change(make_workset, now):
    """Build an (old, new) pair: `old` in `from_state` (None for a new workset), `new` in `to_state` a minute later."""

    def build(from_state, to_state, **new_fields):
        old = None if from_state is None else make_workset(state=from_state, version=3)
        defaults = {"version": 1 if old is None else 4, "updated_at": now + timedelta(minutes=1)}
        new = make_workset(state=to_state, **{**defaults, **new_fields})
        return old, new

    return build


@pytest.fixture
def error_event(change):
    """An error event whose reason is long and whose workset id is not ASCII."""
    _, new = change(
        None,
        State.ERROR,
        workset_id=UNICODE_ID,
        error_category=ErrorCategory.VALIDATION,
        error_reasons=(LONG_REASON, "daylily_info.yaml is missing"),
    )
    return describe_change(None, new)


def test_a_failure_that_will_retry_by_itself_is_a_retry_scheduled_not_an_error(change):
    # GIVEN a transient failure with a retry already scheduled by the store
    old, failed = change(State.IN_PROGRESS, State.ERROR, error_category=ErrorCategory.TRANSIENT)
    waiting = failed.model_copy(update={"retry_at": failed.updated_at + timedelta(minutes=1)})

    # WHEN the change is described
    event = describe_change(old, waiting)

    # THEN it says a retry is scheduled, and when
    assert event is not None
    assert event.event_type is EventType.RETRY_SCHEDULED
    assert "Retry at:" in email_text(event)
    assert "retry at" in subject(event)


@pytest.mark.parametrize(
    ("from_state", "to_state", "category", "expected"),
    [
        (None, State.READY, None, EventType.REGISTERED),
        (None, State.IGNORED, None, EventType.REGISTERED),
        (None, State.ERROR, ErrorCategory.VALIDATION, EventType.ERROR),
        (State.READY, State.LOCKED, None, EventType.STATE_CHANGE),
        (State.LOCKED, State.IN_PROGRESS, None, EventType.STATE_CHANGE),
        (State.LOCKED, State.READY, None, EventType.STATE_CHANGE),
        (State.COMPLETE, State.ARCHIVED, None, EventType.STATE_CHANGE),
        (State.ARCHIVED, State.READY, None, EventType.STATE_CHANGE),
        (State.IN_PROGRESS, State.ERROR, ErrorCategory.TRANSIENT, EventType.ERROR),
        (State.LOCKED, State.ERROR, ErrorCategory.DATA, EventType.ERROR),
        (State.LOCKED, State.ERROR, ErrorCategory.LEASE_EXPIRED, EventType.LEASE_EXPIRED),
        (State.IN_PROGRESS, State.ERROR, ErrorCategory.LEASE_EXPIRED, EventType.LEASE_EXPIRED),
        (State.IN_PROGRESS, State.COMPLETE, None, EventType.COMPLETION),
        (State.IN_PROGRESS, State.CANCELED, None, EventType.CANCELED),
        (State.READY, State.CANCELED, None, EventType.CANCELED),
        (State.ERROR, State.READY, None, EventType.STATE_CHANGE),
    ],
    ids=lambda value: str(value),
)
def test_each_kind_of_change_has_its_event_type(change, from_state, to_state, category, expected):
    old, new = change(from_state, to_state, error_category=category)

    event = describe_change(old, new)

    assert event is not None
    assert event.event_type is expected
    assert (event.from_state, event.state) == (from_state, to_state)


def test_the_event_carries_the_new_image(change, now):
    old, new = change(
        State.IN_PROGRESS,
        State.ERROR,
        workset_id="hg002",
        priority=Priority.URGENT,
        attempt=2,
        cluster="day-wgs-usw2b",
        error_category=ErrorCategory.RESOURCE,
        error_reasons=("out of scratch space", "second reason"),
    )

    event = describe_change(old, new)

    assert event == WorksetEvent(
        event_type=EventType.ERROR,
        workset_id="hg002",
        version=4,
        from_state=State.IN_PROGRESS,
        state=State.ERROR,
        priority=Priority.URGENT,
        attempt=2,
        at=now + timedelta(minutes=1),
        cluster="day-wgs-usw2b",
        error_category=ErrorCategory.RESOURCE,
        reasons=("out of scratch space", "second reason"),
    )
    assert event.dedup_key == "hg002#4"


def test_a_heartbeat_is_no_event(make_workset, now):
    # GIVEN a running workset whose agent heartbeats: the lease moves on, the version grows, the state stays
    lease = Lease(owner="agent-1", token=3, expires_at=now + timedelta(minutes=15))
    old = make_workset(state=State.IN_PROGRESS, version=5, cluster="c1", lease=lease)
    new = old.model_copy(
        update={
            "version": 6,
            "updated_at": now + timedelta(minutes=5),
            "lease": lease.model_copy(update={"expires_at": now + timedelta(minutes=20)}),
        }
    )

    # WHEN / THEN nobody is told
    assert describe_change(old, new) is None


def test_an_assignment_is_no_event(make_workset, now):
    old = make_workset(state=State.READY, version=2)
    new = old.model_copy(update={"version": 3, "assigned_cluster": "c1", "updated_at": now + timedelta(seconds=30)})

    assert describe_change(old, new) is None


# --- texts -----------------------------------------------------------------------------------------------------------


def test_sms_text_fits_160_characters_on_one_line_without_an_ellipsis_character(error_event):
    text = sms_text(error_event)

    assert len(text) <= 160
    assert "\n" not in text and "\r" not in text
    assert "…" not in text
    assert gsm_septets(text) <= 160  # every letter of this id and reason is in the GSM-7 basic alphabet
    assert text.startswith(f"{UNICODE_ID}: error (validation): stage_samples.tsv line 7")
    assert text.endswith("...")


def test_sms_text_flattens_line_breaks_of_a_reason(change):
    _, new = change(None, State.ERROR, error_category=ErrorCategory.DATA, error_reasons=("line one\nline two\r\n",))

    assert sms_text(describe_change(None, new)) == "ws-1: error (data): line one line two"


def test_a_short_sms_text_is_not_cut(change):
    old, new = change(State.IN_PROGRESS, State.COMPLETE, workset_id="hg003-wes-normal")

    assert sms_text(describe_change(old, new)) == "hg003-wes-normal: in_progress -> complete"


def sms_segment_cost(text: str) -> tuple[int, int]:
    """(what `text` takes, what one segment holds): GSM-7 septets of 160, or UTF-16 code units of 70 (UCS-2)."""
    try:
        return gsm_septets(text), 160
    except ValueError:
        return len(text.encode("utf-16-le")) // 2, 70


@pytest.mark.parametrize(
    ("workset_id", "reason"),
    [
        ("東京 サンプル", "daylily_info.yaml is missing"),
        ("東京 サンプル", LONG_REASON),
        ("ws-🧬-1", LONG_REASON),
        ("ws-1", "daylily_work.yaml: priority 'asap' is not one of urgent|normal|low; " * 10),
        ("ws-1", "aligners=['bwa2a','sent'] {x} ~ ^ \\ € " * 20),
    ],
    ids=["non-gsm-id", "non-gsm-id-long-reason", "astral-id", "extension-characters", "only-extension-characters"],
)
def test_sms_text_fits_one_segment_as_the_network_counts_it(change, workset_id, reason):
    _, new = change(
        None, State.ERROR, workset_id=workset_id, error_category=ErrorCategory.VALIDATION, error_reasons=(reason,)
    )

    text = sms_text(describe_change(None, new))

    used, segment = sms_segment_cost(text)
    assert used <= segment, (used, segment, text)
    assert text.startswith(f"{workset_id}: error (validation): ")
    assert "…" not in text and "\n" not in text


def test_a_short_non_gsm_sms_text_is_not_cut(change):
    old, new = change(State.IN_PROGRESS, State.COMPLETE, workset_id="東京 サンプル")

    assert sms_text(describe_change(old, new)) == "東京 サンプル: in_progress -> complete"


def test_sms_text_has_no_control_characters(change):
    _, new = change(None, State.ERROR, error_category=ErrorCategory.DATA, error_reasons=("\x1b[31mbad\x07 read\x9b",))

    text = sms_text(describe_change(None, new))

    assert not [char for char in text if ord(char) < 32 or 127 <= ord(char) < 160], repr(text)
    assert text.startswith("ws-1: error (data): ")
    assert "bad" in text and "read" in text


def test_subject_is_one_ascii_line_under_100_characters_even_when_the_reason_has_line_breaks(change):
    _, new = change(
        None,
        State.ERROR,
        workset_id=UNICODE_ID,
        priority=Priority.URGENT,
        error_category=ErrorCategory.VALIDATION,
        error_reasons=("first line\nsecond line\r\nthird\u2028fourth " * 20,),
    )

    text = subject(describe_change(None, new))

    # SNS takes subjects of less than 100 ASCII characters: accents are dropped, other letters become "?"
    assert len(text) < 100
    assert text.isascii()
    assert not any(char in text for char in "\n\r\u2028\u2029\x0b\x0c\x85")
    assert text.startswith(
        "[urgent] workset Probe Muller ? trio echantillon Unal: error (validation): first line second"
    )
    assert text.endswith("...")


def test_a_short_subject_is_exact(change):
    old, new = change(State.ERROR, State.READY, workset_id="hg002")

    assert subject(describe_change(old, new)) == "[normal] workset hg002: error -> ready"


def test_subject_has_no_control_characters_even_from_an_agents_coloured_output(change):
    old, new = change(
        State.IN_PROGRESS,
        State.ERROR,
        error_category=ErrorCategory.TRANSIENT,
        error_reasons=("\x1b[31mstaging failed\x1b[0m: exit 1",),
    )

    text = subject(describe_change(old, new))

    assert not [char for char in text if ord(char) < 32 or 127 <= ord(char) < 160], repr(text)
    assert text.startswith("[normal] workset ws-1: error (transient): ")
    assert "staging failed" in text and text.endswith(": exit 1")


def test_email_text_holds_every_reason_and_the_facts(error_event, now):
    text = email_text(error_event)

    assert LONG_REASON in text
    assert "  - daylily_info.yaml is missing\n" in text
    assert f"Workset:   {UNICODE_ID}\n" in text
    assert "State:     (new) -> error\n" in text
    assert "Category:  validation\n" in text
    assert f"When:      {(now + timedelta(minutes=1)).isoformat()}\n" in text


# --- the SNS channel -------------------------------------------------------------------------------------------------


def test_sns_message_attributes_are_exactly_the_four_filterable_strings(change):
    old, new = change(State.IN_PROGRESS, State.COMPLETE, workset_id=UNICODE_ID, priority=Priority.LOW)

    attributes = message_attributes(describe_change(old, new))

    assert attributes == {
        "workset_id": {"DataType": "String", "StringValue": UNICODE_ID},
        "event_type": {"DataType": "String", "StringValue": "completion"},
        "state": {"DataType": "String", "StringValue": "complete"},
        "priority": {"DataType": "String", "StringValue": "low"},
    }
    assert all(type(value["StringValue"]) is str for value in attributes.values())


def test_sns_message_is_json_with_a_text_per_protocol(error_event):
    body = json.loads(message(error_event))

    assert set(body) == {"default", "sms", "email"}
    assert body["sms"] == sms_text(error_event)
    assert body["email"] == email_text(error_event)
    default = json.loads(body["default"])
    assert default["workset_id"] == UNICODE_ID
    assert default["event_type"] == "error"
    assert default["state"] == "error"
    assert default["reasons"] == [LONG_REASON, "daylily_info.yaml is missing"]
    assert "cluster" not in default
