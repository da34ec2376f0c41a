"""Registering a workset from a sentinel event, with an in-memory store and folders read from examples/."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import pytest

from workset_monitor.bucket import FolderSnapshot
from workset_monitor.errors import ConcurrentUpdate, WorksetExists, WorksetNotFound
from workset_monitor.layout import SentinelKey, validate_folder
from workset_monitor.models import ErrorCategory, Priority, State, Workset
from workset_monitor.registration import Outcome, Registrar
from workset_monitor.states import check_transition

PREFIX = "daylily_monitoring/active_worksets/"
BUCKET = "workset-bucket"
SEQUENCER_1 = "0055AED6DCD90281E5"
SEQUENCER_2 = "0055AED6DCD90281F0"


class FakeStore:
    """The calls of WorksetStore the registrar makes, in memory: conditional on the version, like the real one."""

    def __init__(self, *worksets: Workset) -> None:
        self.worksets = {workset.workset_id: workset for workset in worksets}
        self.writes: list[tuple[str, Workset, str]] = []
        self.unseen: set[str] = set()
        """Ids `find` does not see yet: another writer registers them between our find and our register."""

    def find(self, workset_id: str) -> Workset | None:
        if workset_id in self.unseen:
            return None
        return self.worksets.get(workset_id)

    def get(self, workset_id: str) -> Workset:
        if workset_id not in self.worksets:
            raise WorksetNotFound(workset_id)
        return self.worksets[workset_id]

    def register(self, workset: Workset, *, actor: str, reason: str = "") -> Workset:
        if workset.workset_id in self.worksets:
            raise WorksetExists(workset.workset_id)
        self.worksets[workset.workset_id] = workset
        self.writes.append(("register", workset, reason))
        return workset

    def transition(
        self,
        workset: Workset,
        to_state: State,
        *,
        actor: str,
        reason: str = "",
        error_category: ErrorCategory | None = None,
        error_reasons: tuple[str, ...] = (),
        lease_token: int | None = None,
        changes: Mapping[str, Any] | None = None,
        now: datetime | None = None,
    ) -> Workset:
        check_transition(workset.workset_id, workset.state, to_state)
        if self.worksets[workset.workset_id].version != workset.version:
            raise ConcurrentUpdate(workset.workset_id, workset.version)

        update: dict[str, Any] = {
            "state": to_state,
            "error_category": error_category if to_state is State.ERROR else None,
            "error_reasons": error_reasons if to_state is State.ERROR else (),
            **(changes or {}),
        }
        if to_state not in (State.LOCKED, State.IN_PROGRESS):
            update["lease"] = None
        if to_state is not State.READY:
            update["assigned_cluster"] = None
        new = workset.model_copy(update={**update, "version": workset.version + 1, "updated_at": now})
        self.worksets[new.workset_id] = new
        self.writes.append(("transition", new, reason))
        return new

    def record(
        self,
        workset: Workset,
        changes: Mapping[str, Any],
        *,
        event: str,
        actor: str,
        reason: str,
        now: datetime | None = None,
    ) -> Workset:
        if self.worksets[workset.workset_id].version != workset.version:
            raise ConcurrentUpdate(workset.workset_id, workset.version)
        new = workset.model_copy(update={**changes, "version": workset.version + 1, "updated_at": now})
        self.worksets[new.workset_id] = new
        self.writes.append((event, new, reason))
        return new


class FakeFolders:
    """Folder snapshots by folder key, as the S3 adapter would read them; counts the reads."""

    def __init__(self, **by_workset: FolderSnapshot) -> None:
        self.by_folder = {f"{PREFIX}{name}/": snapshot for name, snapshot in by_workset.items()}
        self.reads: list[str] = []

    def __call__(self, folder: str) -> FolderSnapshot:
        self.reads.append(folder)
        return self.by_folder[folder]


def sentinel(name: str = "ws-1", file_name: str = "daylily.ready") -> SentinelKey:
    return SentinelKey(workset_id=name, folder=f"{PREFIX}{name}/", sentinel=file_name)


@pytest.fixture
def valid(example) -> FolderSnapshot:
    return example("hg002-giab-wgs-30x").snapshot()


@pytest.fixture
def broken(example) -> FolderSnapshot:
    return example("broken-sheet-example").snapshot()


@pytest.fixture
def registered(make_workset, now):
    """A workset as an earlier registration left it."""

    def build(state: State, sequencer: str | None = SEQUENCER_1, **fields: Any) -> Workset:
        fields = {"sentinel": "daylily.ready", "created_at": now, "updated_at": now, **fields}
        return make_workset(state=state, sentinel_sequencer=sequencer, **fields)

    return build


def registrar(store: FakeStore, folders: FakeFolders) -> Registrar:
    return Registrar(store, folders, BUCKET)  # type: ignore[arg-type]  # duck-typed fake of WorksetStore


def test_a_valid_folder_registers_a_ready_workset(valid, now):
    # GIVEN an empty store and the valid hg002 example folder
    store, folders = FakeStore(), FakeFolders(**{"hg002": valid})

    # WHEN its ready sentinel arrives
    result = registrar(store, folders).on_sentinel(sentinel("hg002"), SEQUENCER_1, now)

    # THEN it is registered, ready, with the work file's priority and the sheet's samples
    assert result.outcome is Outcome.REGISTERED
    workset = result.workset
    assert workset.state is State.READY
    assert (workset.workset_id, workset.bucket, workset.folder) == ("hg002", BUCKET, f"{PREFIX}hg002/")
    assert (workset.version, workset.attempt) == (1, 1)
    assert workset.priority is Priority.URGENT
    assert workset.work is not None and workset.work.clone_args == "-d hg002_giab_wgs_30x"
    assert workset.sample_count == 2
    assert (workset.error_category, workset.error_reasons) == (None, ())
    assert (workset.sentinel, workset.sentinel_sequencer) == ("daylily.ready", SEQUENCER_1)
    assert (workset.created_at, workset.updated_at) == (now, now)
    assert store.writes == [("register", workset, "daylily.ready dropped")]
    assert folders.reads == [f"{PREFIX}hg002/"]


def test_an_invalid_folder_registers_an_error_with_every_reason(broken, now):
    store = FakeStore()

    result = registrar(store, FakeFolders(broken=broken)).on_sentinel(sentinel("broken"), SEQUENCER_1, now)

    assert result.outcome is Outcome.REGISTERED
    workset = result.workset
    assert workset.state is State.ERROR
    assert workset.error_category is ErrorCategory.VALIDATION
    expected = validate_folder(broken.sizes, broken.texts["stage_samples.tsv"], broken.texts["daylily_work.yaml"])
    assert workset.error_reasons == expected.reasons
    for part in ("missing N_Y", "line 3: 18 fields", "dy-r", "'asap'", "daylily_info.yaml is missing"):
        assert any(part in reason for reason in workset.error_reasons), part
    assert workset.work is None
    assert store.worksets["broken"] == workset
    [(kind, _, reason)] = store.writes
    assert kind == "register"
    assert reason.startswith("daylily.ready dropped; folder invalid: ")
    assert "daylily_info.yaml is missing" in reason


def test_read_problems_of_the_folder_are_reasons_too(valid, now):
    snapshot = FolderSnapshot(
        sizes=valid.sizes, texts={"stage_samples.tsv": valid.texts["stage_samples.tsv"]}, problems=("x is not UTF-8",)
    )

    result = registrar(FakeStore(), FakeFolders(**{"ws-1": snapshot})).on_sentinel(sentinel(), SEQUENCER_1, now)

    assert result.workset.state is State.ERROR
    assert result.workset.error_reasons == ("x is not UTF-8",)


def test_the_same_sequencer_again_is_a_duplicate_and_writes_nothing(valid, registered, now):
    existing = registered(State.READY)
    store = FakeStore(existing)

    result = registrar(store, FakeFolders(**{"ws-1": valid})).on_sentinel(sentinel(), SEQUENCER_1, now)

    assert result.outcome is Outcome.DUPLICATE
    assert result.workset == existing
    assert store.writes == []
    assert store.worksets["ws-1"] == existing


def test_a_redelivered_first_event_is_a_duplicate_end_to_end(broken, now):
    # GIVEN a folder registered (in error) by one event
    store, folders = FakeStore(), FakeFolders(broken=broken)
    first = registrar(store, folders).on_sentinel(sentinel("broken"), SEQUENCER_1, now)

    # WHEN S3 delivers the same event again
    again = registrar(store, folders).on_sentinel(sentinel("broken"), SEQUENCER_1, now + timedelta(seconds=5))

    # THEN nothing changes
    assert again.outcome is Outcome.DUPLICATE
    assert again.workset == first.workset
    assert len(store.writes) == 1


@pytest.mark.parametrize("folder", ["valid", "broken"])
def test_an_ignore_sentinel_on_a_new_folder_registers_it_ignored(request, folder, now):
    snapshot = request.getfixturevalue(folder)
    store = FakeStore()

    result = registrar(store, FakeFolders(**{"ws-1": snapshot})).on_sentinel(
        sentinel(file_name="daylily.ignore"), SEQUENCER_1, now
    )

    assert result.outcome is Outcome.REGISTERED
    assert result.workset.state is State.IGNORED
    assert (result.workset.error_category, result.workset.error_reasons) == (None, ())
    assert store.writes == [("register", result.workset, "daylily.ignore dropped")]


def test_an_ignore_sentinel_on_a_ready_workset_ignores_it(valid, registered, now):
    store = FakeStore(registered(State.READY, assigned_cluster="c1"))

    result = registrar(store, FakeFolders(**{"ws-1": valid})).on_sentinel(
        sentinel(file_name="daylily.ignore"), SEQUENCER_2, now + timedelta(minutes=1)
    )

    assert result.outcome is Outcome.IGNORED
    assert result.workset.state is State.IGNORED
    assert result.workset.version == 2
    assert (result.workset.sentinel, result.workset.sentinel_sequencer) == ("daylily.ignore", SEQUENCER_2)
    assert result.workset.assigned_cluster is None
    assert store.writes == [("transition", result.workset, "daylily.ignore dropped")]


def test_an_ignore_sentinel_on_a_running_workset_changes_nothing(valid, registered, now):
    store = FakeStore(registered(State.IN_PROGRESS, cluster="c1"))

    result = registrar(store, FakeFolders(**{"ws-1": valid})).on_sentinel(
        sentinel(file_name="daylily.ignore"), SEQUENCER_2, now
    )

    assert result.outcome is Outcome.UNCHANGED
    assert result.workset.state is State.IN_PROGRESS
    assert store.writes == []


def test_a_fresh_ready_sentinel_retries_a_failed_workset_whose_folder_is_now_valid(valid, registered, now):
    # GIVEN a workset that failed validation on its first attempt
    failed = registered(
        State.ERROR, error_category=ErrorCategory.VALIDATION, error_reasons=("daylily_info.yaml is missing",)
    )
    store = FakeStore(failed)

    # WHEN the person fixes the folder and drops a fresh daylily.ready (a new S3 sequencer)
    later = now + timedelta(hours=1)
    result = registrar(store, FakeFolders(**{"ws-1": valid})).on_sentinel(sentinel(), SEQUENCER_2, later)

    # THEN the workset is ready again for a second attempt, with the fixed folder's work
    assert result.outcome is Outcome.RETRIED
    workset = result.workset
    assert workset.state is State.READY
    assert workset.attempt == 2
    assert workset.version == failed.version + 1
    assert (workset.error_category, workset.error_reasons) == (None, ())
    assert workset.priority is Priority.URGENT
    assert workset.work is not None and workset.work.workdir_name == "hg002_giab_wgs_30x"
    assert workset.sample_count == 2
    assert (workset.sentinel, workset.sentinel_sequencer) == ("daylily.ready", SEQUENCER_2)
    assert workset.updated_at == later
    assert store.writes == [("transition", workset, "fresh daylily.ready dropped")]


def test_a_fresh_ready_sentinel_on_a_still_invalid_folder_stays_in_error_with_todays_reasons(broken, registered, now):
    # GIVEN a workset that failed validation for a reason that is since fixed, while others appeared
    failed = registered(State.ERROR, error_category=ErrorCategory.VALIDATION, error_reasons=("old",))
    store = FakeStore(failed)

    # WHEN a fresh ready sentinel asks for a retry
    result = registrar(store, FakeFolders(**{"ws-1": broken})).on_sentinel(sentinel(), SEQUENCER_2, now)

    # THEN no new attempt starts, but the reasons are today's and the history says a retry was asked
    assert result.outcome is Outcome.UNCHANGED
    assert (result.workset.state, result.workset.attempt) == (State.ERROR, failed.attempt)
    assert "old" not in result.workset.error_reasons
    assert "daylily_info.yaml is missing" in result.workset.error_reasons
    assert [
        (kind, reason.startswith("fresh daylily.ready dropped; folder still invalid"))
        for kind, _, reason in store.writes
    ] == [("revalidated", True)]


@pytest.mark.parametrize("state", [State.READY, State.LOCKED, State.IN_PROGRESS, State.COMPLETE])
def test_a_fresh_ready_sentinel_on_a_workset_that_is_not_in_error_changes_nothing(valid, registered, now, state):
    existing = registered(state)
    store = FakeStore(existing)

    result = registrar(store, FakeFolders(**{"ws-1": valid})).on_sentinel(sentinel(), SEQUENCER_2, now)

    assert result.outcome is Outcome.UNCHANGED
    assert result.workset == existing
    assert store.writes == []


def test_a_lost_registration_race_with_the_same_event_is_a_duplicate(valid, registered, now):
    # GIVEN another delivery of the same event registered the workset after our lookup found nothing
    winner = registered(State.READY, sequencer=SEQUENCER_1)
    store = FakeStore(winner)
    store.unseen.add("ws-1")

    # WHEN our registration runs into WorksetExists
    result = registrar(store, FakeFolders(**{"ws-1": valid})).on_sentinel(sentinel(), SEQUENCER_1, now)

    # THEN the winner's write stands, and ours is a duplicate
    assert result.outcome is Outcome.DUPLICATE
    assert result.workset == winner
    assert store.writes == []


def test_a_lost_registration_race_with_another_event_is_judged_against_the_winner(valid, registered, now):
    winner = registered(State.READY, sequencer=SEQUENCER_1)
    store = FakeStore(winner)
    store.unseen.add("ws-1")

    result = registrar(store, FakeFolders(**{"ws-1": valid})).on_sentinel(
        sentinel(file_name="daylily.ignore"), SEQUENCER_2, now
    )

    assert result.outcome is Outcome.IGNORED
    assert result.workset.state is State.IGNORED
    assert [kind for kind, _, _ in store.writes] == ["transition"]


def test_an_older_event_redelivered_after_a_newer_one_changes_nothing(valid, registered, now):
    # GIVEN a workset retried by a fresh sentinel (SEQUENCER_2) that then failed again
    failed_again = registered(
        State.ERROR,
        sequencer=SEQUENCER_2,
        attempt=2,
        version=5,
        error_category=ErrorCategory.DATA,
        error_reasons=("truncated FASTQ",),
    )
    store = FakeStore(failed_again)

    # WHEN S3 (or Lambda's async retry) delivers the first, older event of the same key once more
    result = registrar(store, FakeFolders(**{"ws-1": valid})).on_sentinel(sentinel(), SEQUENCER_1, now)

    # THEN it is a duplicate: S3 sequencers of one key order its events, and this one is older
    assert result.outcome is Outcome.DUPLICATE
    assert result.workset == failed_again
    assert store.writes == []


@pytest.mark.parametrize(
    ("stored", "arriving", "seen"),
    [
        ("0055AED6DCD90281E5", "0055AED6DCD90281E5", True),
        ("0055AED6DCD90281E5", "0055aed6dcd90281e5", True),
        ("0055AED6DCD90281E5", "0055AED6DCD90281E4", True),
        ("0055AED6DCD90281E5", "0055AED6DCD90281E6", False),
        # of unequal length: the shorter is right-padded with zeros before comparing
        ("0055AED6DCD90281E5", "0055AED6DCD90281E500", True),
        ("0055AED6DCD90281E5", "0055AED6DCD903", False),
        ("0055AED6DCD903", "0055AED6DCD90281E5", True),
        # not hex (another kind of event id): only the very same value is a duplicate
        ("v1-abc", "v1-abc", True),
        ("v2-xyz", "v1-abc", False),
    ],
)
def test_a_ready_event_on_a_failed_workset_is_a_duplicate_exactly_when_it_is_not_newer(
    valid, registered, now, stored, arriving, seen
):
    store = FakeStore(registered(State.ERROR, sequencer=stored, error_category=ErrorCategory.TRANSIENT))

    result = registrar(store, FakeFolders(**{"ws-1": valid})).on_sentinel(sentinel(), arriving, now)

    assert result.outcome is (Outcome.DUPLICATE if seen else Outcome.RETRIED)
    assert len(store.writes) == (0 if seen else 1)


def test_an_event_of_another_sentinel_is_never_taken_as_seen(valid, registered, now):
    # GIVEN a ready workset registered by a daylily.ready event with a large sequencer
    store = FakeStore(registered(State.READY, sequencer="0055AED6DCD90281FF"))

    # WHEN a daylily.ignore event arrives whose sequencer is smaller (sequencers of different keys do not compare)
    result = registrar(store, FakeFolders(**{"ws-1": valid})).on_sentinel(
        sentinel(file_name="daylily.ignore"), "0055AED6DCD90281E5", now
    )

    # THEN it is acted on
    assert result.outcome is Outcome.IGNORED
    assert result.workset.state is State.IGNORED


def test_a_workset_stored_without_its_sentinel_name_still_spots_a_redelivery(valid, registered, now):
    existing = registered(State.READY, sentinel=None)
    store = FakeStore(existing)

    result = registrar(store, FakeFolders(**{"ws-1": valid})).on_sentinel(sentinel(), SEQUENCER_1, now)

    assert result.outcome is Outcome.DUPLICATE
    assert store.writes == []


def test_an_event_without_a_sequencer_is_never_a_duplicate(valid, registered, now):
    store = FakeStore(registered(State.ERROR, error_category=ErrorCategory.VALIDATION))

    result = registrar(store, FakeFolders(**{"ws-1": valid})).on_sentinel(sentinel(), None, now)

    assert result.outcome is Outcome.RETRIED
    assert result.workset.attempt == 2


# --- validated again on request (retry, restore) --------------------------------------------------------------------


def test_a_revalidation_asked_through_the_api_keeps_the_sentinel_it_last_saw(valid, registered, now):
    failed = registered(State.ERROR, error_category=ErrorCategory.VALIDATION, error_reasons=("old",))
    store = FakeStore(failed)

    result = registrar(store, FakeFolders(**{"ws-1": valid})).revalidate(failed, actor="alice", cause="retry asked")

    assert (result.outcome, result.workset.state, result.workset.attempt) == (Outcome.RETRIED, State.READY, 2)
    assert (result.workset.sentinel, result.workset.sentinel_sequencer) == ("daylily.ready", SEQUENCER_1)
    assert store.writes == [("transition", result.workset, "retry asked")]


def test_a_still_invalid_folder_of_an_archived_workset_gets_no_error_fields(broken, registered, now):
    # GIVEN an archived workset that never had a valid work spec
    archived = registered(State.ARCHIVED)
    store = FakeStore(archived)

    # WHEN a restore asks for it to be validated again
    result = registrar(store, FakeFolders(**{"ws-1": broken})).revalidate(archived, actor="alice", cause="restore")

    # THEN it stays archived, without error fields, and the reasons are in the answer and the history
    assert result.outcome is Outcome.UNCHANGED
    assert (result.workset.state, result.workset.error_category, result.workset.error_reasons) == (
        State.ARCHIVED,
        None,
        (),
    )
    assert "daylily_info.yaml is missing" in result.reasons
    [(event, _, reason)] = store.writes
    assert event == "revalidated" and reason.startswith("restore; folder still invalid: ")
