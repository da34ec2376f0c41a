"""The notifier with fake channels: which records are events, which channel gets what, and what one failure holds."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from boto3.dynamodb.types import TypeSerializer

from workset_monitor.channels.http import PermanentFailure, TransientFailure
from workset_monitor.events import EventType, WorksetEvent
from workset_monitor.models import State
from workset_monitor.notifier import ChannelFailed, HeldBack, Notifier, Route, Skipped, UnreadableRecord, read_record
from workset_monitor.routing import RouteFilter


class FakeChannel:
    """Records what it is given; fails as told, per workset id."""

    def __init__(self, name: str, failures: dict[str, Exception] | None = None) -> None:
        self.name = name
        self.failures = dict(failures or {})
        self.given: list[tuple[str, int]] = []

    def deliver(self, event: WorksetEvent) -> str:
        if event.workset_id in self.failures:
            raise self.failures[event.workset_id]
        self.given.append((event.workset_id, event.version))
        return f"{self.name}-{len(self.given)}"


@pytest.fixture
def record(make_workset, now):
    """A stream record (Lambda's shape) of a workset moving from `from_state` (None: inserted) to `to_state`."""
    serializer = TypeSerializer()

    def image(workset) -> dict[str, Any]:
        plain = {"pk": f"WORKSET#{workset.workset_id}", "sk": "WORKSET", **workset.model_dump(mode="json")}
        return {name: serializer.serialize(value) for name, value in plain.items() if value is not None}

    def build(workset_id: str, from_state: State | None, to_state: State, version: int = 2, **fields):
        old = make_workset(workset_id=workset_id, state=from_state, version=version - 1) if from_state else None
        new = make_workset(
            workset_id=workset_id, state=to_state, version=version, updated_at=now + timedelta(minutes=1), **fields
        )
        change = {"Keys": {"pk": {"S": f"WORKSET#{workset_id}"}, "sk": {"S": "WORKSET"}}, "NewImage": image(new)}
        if old is not None:
            change["OldImage"] = image(old)
        return {"eventName": "MODIFY" if old else "INSERT", "dynamodb": {**change, "SequenceNumber": str(version)}}

    return build


# --- records ---------------------------------------------------------------------------------------------------------


def test_a_change_of_state_is_an_event(record):
    event = read_record(record("w1", State.IN_PROGRESS, State.COMPLETE))

    assert isinstance(event, WorksetEvent)
    assert (event.event_type, event.workset_id, event.version) == (EventType.COMPLETION, "w1", 2)


def test_records_that_say_nothing_are_skipped_with_the_reason(record):
    heartbeat = record("w1", State.IN_PROGRESS, State.IN_PROGRESS)
    removal = {**record("w1", State.READY, State.LOCKED), "eventName": "REMOVE"}
    removal["dynamodb"] = {key: value for key, value in removal["dynamodb"].items() if key != "NewImage"}
    history = record("w1", State.READY, State.LOCKED)
    history["dynamodb"]["Keys"]["sk"] = {"S": "HISTORY#000000000002"}
    unknown = {**record("w1", State.READY, State.LOCKED), "eventName": "TRUNCATE"}

    assert [read_record(item) for item in (heartbeat, removal, history, unknown)] == [
        Skipped("no change of state"),
        Skipped("a removal"),
        Skipped("not a workset item (sort key 'HISTORY#000000000002')"),
        Skipped("an event named 'TRUNCATE'"),
    ]


def test_a_workset_image_that_does_not_validate_is_unreadable_never_skipped(record):
    poison = record("w1", State.READY, State.LOCKED)
    poison["dynamodb"]["NewImage"]["state"] = {"S": "flying"}

    with pytest.raises(UnreadableRecord, match="does not validate"):
        read_record(poison)


# --- routes ----------------------------------------------------------------------------------------------------------


def test_each_channel_gets_only_the_events_its_filter_admits(record):
    everything, failures = FakeChannel("everything"), FakeChannel("failures")
    notifier = Notifier(
        [Route(everything, RouteFilter()), Route(failures, RouteFilter(event_types={EventType.ERROR}))],
        persistence=None,
    )

    notifier.notify(record("w1", State.READY, State.LOCKED, version=2))
    notifier.notify(record("w1", State.LOCKED, State.ERROR, version=3, error_category="data"))

    assert everything.given == [("w1", 2), ("w1", 3)]
    assert failures.given == [("w1", 3)]


def test_a_refused_event_fails_the_record_but_not_the_other_channels_nor_the_other_worksets(record):
    good, picky = FakeChannel("good"), FakeChannel("picky", {"w1": PermanentFailure("HTTP 400")})
    notifier = Notifier([Route(picky, RouteFilter()), Route(good, RouteFilter())], persistence=None)
    notifier.begin_batch()

    with pytest.raises(ChannelFailed) as failed:
        notifier.notify(record("w1", State.READY, State.LOCKED, version=2))
    with pytest.raises(ChannelFailed) as held:
        notifier.notify(record("w1", State.LOCKED, State.IN_PROGRESS, version=3))
    notifier.notify(record("w2", State.READY, State.LOCKED, version=2))

    assert list(failed.value.failures) == ["picky"]
    assert isinstance(held.value.failures["picky"], HeldBack)  # w1's later events wait behind its failed one
    assert good.given == [("w1", 2), ("w1", 3), ("w2", 2)]
    assert picky.given == [("w2", 2)]  # a refusal of one event says nothing about the channel
    assert notifier.finish_batch() == {
        ("DeliveryFailed", "picky"): 2,
        ("Delivered", "good"): 3,
        ("Delivered", "picky"): 1,
    }


def test_a_channel_that_is_down_is_not_tried_again_in_the_batch_but_is_in_the_next(record):
    down = FakeChannel("down", {"w1": TransientFailure("cannot connect")})
    notifier = Notifier([Route(down, RouteFilter())], persistence=None)
    notifier.begin_batch()

    with pytest.raises(ChannelFailed):
        notifier.notify(record("w1", State.READY, State.LOCKED))
    with pytest.raises(ChannelFailed) as held:
        notifier.notify(record("w2", State.READY, State.LOCKED))

    assert isinstance(held.value.failures["down"], HeldBack)
    assert down.given == []

    notifier.begin_batch()
    notifier.notify(record("w2", State.READY, State.LOCKED))
    assert down.given == [("w2", 2)]
