"""The sentinels mirrored into a workset's folder for each change of state."""

from __future__ import annotations

from datetime import timedelta

import pytest

from workset_monitor.models import ErrorCategory, Lease, State
from workset_monitor.sentinels import plan

LOCK, IN_PROGRESS, COMPLETE, ERROR = "daylily.lock", "daylily.in_progress", "daylily.complete", "daylily.error"


@pytest.mark.parametrize(
    ("before", "after", "put", "removed"),
    [
        (None, State.READY, set(), set()),
        (State.READY, State.LOCKED, {LOCK}, set()),
        (State.LOCKED, State.IN_PROGRESS, {IN_PROGRESS}, set()),
        (State.IN_PROGRESS, State.COMPLETE, {COMPLETE}, {LOCK, IN_PROGRESS}),
        (State.IN_PROGRESS, State.ERROR, {ERROR}, {LOCK, IN_PROGRESS}),
        (State.LOCKED, State.READY, set(), {LOCK}),
        (State.ERROR, State.READY, set(), {ERROR}),
        (State.IN_PROGRESS, State.CANCELED, {ERROR}, {LOCK, IN_PROGRESS}),
        (State.COMPLETE, State.ARCHIVED, set(), set()),
        (State.ARCHIVED, State.READY, set(), set()),
        (None, State.ERROR, {ERROR}, set()),
    ],
    ids=str,
)
def test_each_change_writes_and_removes_the_sentinels_of_its_states(make_workset, before, after, put, removed):
    old = make_workset(state=before) if before else None
    new = make_workset(state=after, version=2)

    sentinels = plan(old, new)

    assert set(sentinels.put) == put
    assert sentinels.remove == removed


def test_the_people_s_sentinels_are_never_written_or_removed(make_workset):
    for before in State:
        for after in State:
            sentinels = plan(make_workset(state=before), make_workset(state=after))
            assert not {"daylily.ready", "daylily.ignore"} & (set(sentinels.put) | sentinels.remove)


def test_no_change_of_state_writes_nothing(make_workset):
    assert plan(make_workset(state=State.IN_PROGRESS), make_workset(state=State.IN_PROGRESS, version=9)).empty


def test_the_error_sentinel_holds_timestamp_tab_reason_on_one_line(make_workset, now):
    new = make_workset(
        state=State.ERROR,
        updated_at=now + timedelta(minutes=5),
        error_category=ErrorCategory.DATA,
        error_reasons=("R1 file truncated\nat byte 1024", "checksum mismatch"),
    )

    body = plan(make_workset(state=State.IN_PROGRESS), new).put[ERROR]

    assert body == "2026-12-01T12:05:00.000000Z\tR1 file truncated at byte 1024; checksum mismatch\n"


def test_the_lock_sentinel_names_its_holder(make_workset, now):
    lease = Lease(owner="head-node-1:4242", token=2, expires_at=now + timedelta(minutes=15))
    new = make_workset(state=State.LOCKED, lease=lease, cluster="day-wgs-usw2b")

    body = plan(make_workset(), new).put[LOCK]

    assert body == "2026-12-01T12:00:00.000000Z\thead-node-1:4242\tday-wgs-usw2b\n"
