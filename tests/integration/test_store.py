"""The DynamoDB store against the emulator: guarded writes, history, leases, queries and pagination."""

from __future__ import annotations

import json
import threading
from datetime import timedelta

import pytest

from workset_monitor.errors import ConcurrentUpdate, LeaseLost, TransitionRefused, WorksetExists, WorksetNotFound
from workset_monitor.models import Cluster, ErrorCategory, Priority, State, Workset, utcnow
from workset_monitor.scheduler import Scheduler
from workset_monitor.store import InvalidPageToken, WorksetStore

pytestmark = pytest.mark.integration


def new_workset(workset_id: str, *, priority: Priority = Priority.NORMAL, state: State = State.READY) -> Workset:
    now = utcnow()
    return Workset(
        workset_id=workset_id,
        bucket="bucket",
        folder=f"daylily_monitoring/active_worksets/{workset_id}/",
        state=state,
        priority=priority,
        created_at=now,
        updated_at=now,
    )


def test_register_then_get_round_trips_and_writes_the_first_history_entry(store: WorksetStore) -> None:
    registered = store.register(new_workset("hg002 runé"), actor="register", reason="daylily.ready dropped")

    assert store.get("hg002 runé") == registered
    history = store.full_history("hg002 runé")
    assert [(entry.event, entry.from_state, entry.to_state, entry.version) for entry in history] == [
        ("registered", None, State.READY, 1)
    ]


def test_a_second_registration_of_one_id_is_refused(store: WorksetStore) -> None:
    store.register(new_workset("w1"), actor="register")

    with pytest.raises(WorksetExists):
        store.register(new_workset("w1", priority=Priority.URGENT), actor="register")

    assert store.get("w1").priority is Priority.NORMAL
    assert len(store.full_history("w1")) == 1


def test_an_unknown_workset_is_not_found(store: WorksetStore) -> None:
    with pytest.raises(WorksetNotFound):
        store.get("nope")


def test_a_refused_transition_writes_nothing(store: WorksetStore) -> None:
    # GIVEN a ready workset
    workset = store.register(new_workset("w1"), actor="register")

    # WHEN someone asks to complete it without it ever running
    with pytest.raises(TransitionRefused) as refused:
        store.transition(workset, State.COMPLETE, actor="api")

    # THEN the rule is named, and neither the workset nor its history changed
    assert "from ready a workset may go to" in refused.value.rule
    assert store.get("w1") == workset
    assert len(store.full_history("w1")) == 1


def test_a_write_based_on_a_stale_read_is_refused(store: WorksetStore) -> None:
    stale = store.register(new_workset("w1"), actor="register")
    store.transition(stale, State.CANCELED, actor="alice")

    with pytest.raises(ConcurrentUpdate):
        store.transition(stale, State.IGNORED, actor="bob")

    assert store.get("w1").state is State.CANCELED
    assert [entry.to_state for entry in store.full_history("w1")] == [State.READY, State.CANCELED]


def test_only_one_of_many_concurrent_claims_wins(store: WorksetStore) -> None:
    workset = store.register(new_workset("w1"), actor="register")
    barrier = threading.Barrier(16)
    winners: list[str] = []
    losers: list[Exception] = []

    def claim(owner: str) -> None:
        barrier.wait()
        try:
            store.claim(workset, owner=owner, cluster="c1", lease_seconds=600)
            winners.append(owner)
        except (ConcurrentUpdate, TransitionRefused) as exc:
            losers.append(exc)

    threads = [threading.Thread(target=claim, args=(f"agent-{n}",)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(winners) == 1
    assert len(losers) == 15
    claimed = store.get("w1")
    assert claimed.state is State.LOCKED
    assert claimed.lease is not None and claimed.lease.owner == winners[0]


def test_a_write_with_a_stale_lease_token_is_refused(store: WorksetStore) -> None:
    # GIVEN agent A claimed the workset, its lease expired, and it was claimed again by agent B
    workset = store.register(new_workset("w1"), actor="register")
    first = store.claim(workset, owner="agent-a", cluster="c1", lease_seconds=600)
    assert first.lease is not None
    expired = store.transition(first, State.READY, actor="scheduler", reason="lease given back")
    second = store.claim(expired, owner="agent-b", cluster="c1", lease_seconds=600)
    assert second.lease is not None and second.lease.token > first.lease.token

    # WHEN agent A, unaware, reports with its old token, on a fresh read
    with pytest.raises(LeaseLost):
        store.transition(store.get("w1"), State.IN_PROGRESS, actor="agent-a", lease_token=first.lease.token)

    # THEN agent B still holds the workset, and B's token works
    assert store.get("w1").lease == second.lease
    running = store.transition(store.get("w1"), State.IN_PROGRESS, actor="agent-b", lease_token=second.lease.token)
    assert running.state is State.IN_PROGRESS


def test_a_heartbeat_extends_the_lease_without_a_history_entry(store: WorksetStore) -> None:
    workset = store.register(new_workset("w1"), actor="register")
    claimed = store.claim(workset, owner="agent-a", cluster="c1", lease_seconds=60)
    assert claimed.lease is not None

    beaten = store.heartbeat("w1", lease_token=claimed.lease.token, lease_seconds=600)

    assert beaten.lease is not None and beaten.lease.expires_at > claimed.lease.expires_at
    assert beaten.lease.token == claimed.lease.token
    assert len(store.full_history("w1")) == 2  # registered, claimed


def test_each_workset_says_since_when_it_is_in_its_state_heartbeats_and_assignments_aside(store: WorksetStore) -> None:
    # GIVEN a workset registered, then claimed, and started an hour later
    registered = store.register(new_workset("w1"), actor="register")
    claimed = store.claim(registered, owner="agent-a", cluster="c1", lease_seconds=600)
    assert claimed.lease is not None
    started_at = claimed.updated_at + timedelta(hours=1)
    running = store.transition(
        claimed, State.IN_PROGRESS, actor="agent-a", lease_token=claimed.lease.token, now=started_at
    )

    # WHEN its agent heartbeats
    beaten = store.heartbeat("w1", lease_token=claimed.lease.token, lease_seconds=600)

    # THEN each state is dated from when it was entered, and a heartbeat does not move it
    assert registered.state_since == registered.created_at
    assert store.get("w1").state_since == beaten.state_since == running.state_since == started_at
    assert beaten.updated_at != running.updated_at


def test_the_scheduler_expires_a_lease_past_the_clock_skew_allowance_only(store: WorksetStore) -> None:
    workset = store.register(new_workset("w1"), actor="register")
    claimed = store.claim(workset, owner="agent-a", cluster="c1", lease_seconds=60)
    assert claimed.lease is not None
    scheduler = Scheduler(store, clock_skew_seconds=30)

    # WHEN the lease ran out 20 s ago (within the skew allowance), nothing happens
    report = scheduler.tick(now=claimed.lease.expires_at + timedelta(seconds=20))
    assert report.expired == []
    assert store.get("w1").state is State.LOCKED

    # WHEN it ran out 31 s ago, the workset fails with lease_expired, and the lease is gone
    report = scheduler.tick(now=claimed.lease.expires_at + timedelta(seconds=31))
    assert report.expired == ["w1"]
    expired = store.get("w1")
    assert (expired.state, expired.error_category, expired.lease) == (State.ERROR, ErrorCategory.LEASE_EXPIRED, None)

    # THEN the old holder's heartbeat is refused
    with pytest.raises(LeaseLost):
        store.heartbeat("w1", lease_token=claimed.lease.token, lease_seconds=60)


def test_the_scheduler_assigns_urgent_first_within_cluster_room(store: WorksetStore) -> None:
    for name, priority in (("low-1", Priority.LOW), ("normal-1", Priority.NORMAL), ("urgent-1", Priority.URGENT)):
        store.register(new_workset(name, priority=priority), actor="register")
    store.put_cluster(Cluster(name="c1", max_worksets=2, cost_per_vcpu_hour=0.05))

    report = Scheduler(store, clock_skew_seconds=60).tick()

    assert [decision.workset_id for decision in report.assigned] == ["urgent-1", "normal-1"]
    assert [decision.workset_id for decision in report.waiting] == ["low-1"]
    assert [workset.workset_id for workset in store.worksets_on("c1")] == ["urgent-1", "normal-1"]
    assert store.full_history("urgent-1")[-1].event == "assigned"


def test_a_workset_assigned_to_one_cluster_cannot_be_claimed_by_another(store: WorksetStore) -> None:
    workset = store.register(new_workset("w1"), actor="register")
    assigned = store.assign(workset, cluster="c1", reason="test")

    with pytest.raises(TransitionRefused, match="assigned to cluster c1"):
        store.claim(assigned, owner="agent-b", cluster="c2", lease_seconds=600)


def test_lists_are_paginated_with_an_opaque_token(store: WorksetStore) -> None:
    for n in range(7):
        store.register(new_workset(f"w{n}"), actor="register")

    seen: list[str] = []
    token: str | None = None
    pages = 0
    while True:
        page, token = store.list_worksets(state=State.READY, limit=3, page_token=token)
        seen.extend(workset.workset_id for workset in page)
        pages += 1
        if token is None:
            break

    assert sorted(seen) == [f"w{n}" for n in range(7)]
    assert pages >= 3
    with pytest.raises(InvalidPageToken):
        store.list_worksets(page_token="not a token")


def test_counts_by_state(store: WorksetStore) -> None:
    for n in range(3):
        store.register(new_workset(f"r{n}"), actor="register")
    store.register(new_workset("e1", state=State.ERROR), actor="register")

    counts = store.count_by_state()

    assert counts[State.READY] == 3
    assert counts[State.ERROR] == 1
    assert counts[State.COMPLETE] == 0


def failed_attempt(store: WorksetStore, workset_id: str, category: ErrorCategory, **fields: object) -> Workset:
    workset = store.register(new_workset(workset_id).model_copy(update=fields), actor="register")
    claimed = store.claim(workset, owner="agent-a", cluster="c1", lease_seconds=600)
    assert claimed.lease is not None
    return store.transition(
        claimed, State.ERROR, actor="agent-a", error_category=category, lease_token=claimed.lease.token
    )


def test_a_transient_failure_goes_back_to_ready_by_itself_after_its_backoff(store: WorksetStore) -> None:
    # GIVEN a transient failure of attempt 1 (the store's backoff starts at 60 s)
    failed = failed_attempt(store, "w1", ErrorCategory.TRANSIENT)
    assert failed.retry_at == failed.updated_at + timedelta(seconds=60)
    scheduler = Scheduler(store, clock_skew_seconds=60)

    # WHEN the scheduler ticks before the backoff is over, nothing happens
    assert scheduler.tick(now=failed.updated_at + timedelta(seconds=59)).retried == []
    assert store.get("w1").state is State.ERROR

    # WHEN it ticks after it, the workset is ready again as attempt 2, and the history says why
    assert scheduler.tick(now=failed.updated_at + timedelta(seconds=61)).retried == ["w1"]
    retried = store.get("w1")
    assert (retried.state, retried.attempt, retried.retry_at) == (State.READY, 2, None)
    assert store.full_history("w1")[-1].reason == "automatic retry: attempt 2 of 3 after a transient error"


def test_the_backoff_doubles_and_the_last_attempt_waits_for_a_person(store: WorksetStore) -> None:
    failed = failed_attempt(store, "w1", ErrorCategory.RESOURCE, attempt=2)
    assert failed.retry_at == failed.updated_at + timedelta(seconds=120)

    last = failed_attempt(store, "w2", ErrorCategory.RESOURCE, attempt=3)
    assert last.retry_at is None
    assert list(store.due_retries(last.updated_at + timedelta(days=1))) == [failed]


def test_a_per_workset_attempt_limit_is_honoured(store: WorksetStore) -> None:
    failed = failed_attempt(store, "w1", ErrorCategory.TRANSIENT, max_attempts=1)

    assert failed.retry_at is None


@pytest.mark.parametrize("category", [ErrorCategory.DATA, ErrorCategory.CONFIGURATION, ErrorCategory.PERMANENT])
def test_failures_a_person_must_look_at_do_not_retry_by_themselves(
    store: WorksetStore, category: ErrorCategory
) -> None:
    failed = failed_attempt(store, "w1", category)

    assert failed.retry_at is None
    assert Scheduler(store, clock_skew_seconds=60).tick(now=failed.updated_at + timedelta(days=1)).retried == []


def test_ten_thousand_transitions_of_one_workset_are_all_in_its_history(store: WorksetStore) -> None:
    # GIVEN a workset sent back and forth 10,000 times (DynamoDB would refuse an item over 400 KB)
    workset = store.register(new_workset("busy"), actor="register")
    for n in range(10_000):
        workset = store.transition(workset, State.CANCELED if n % 2 == 0 else State.READY, actor="test", reason=f"{n}")

    # THEN every transition is in the history, in order, and the workset item itself stayed small
    history = store.full_history("busy")
    assert len(history) == 10_001
    assert [entry.reason for entry in history[1:]] == [str(n) for n in range(10_000)]
    assert [entry.version for entry in history] == list(range(1, 10_002))
    item = store.client.get_item(TableName=store.table_name, Key={"pk": {"S": "WORKSET#busy"}, "sk": {"S": "WORKSET"}})
    assert len(json.dumps(item["Item"])) < 4096


def test_a_workset_assigned_to_a_cluster_that_went_silent_is_placed_again(store: WorksetStore) -> None:
    # GIVEN a workset assigned to cluster c1, whose agent then stopped heartbeating
    now = utcnow()
    store.put_cluster(Cluster(name="c1", max_worksets=1, last_heartbeat_at=now - timedelta(minutes=10)))
    store.put_cluster(Cluster(name="c2", max_worksets=1, last_heartbeat_at=now))
    store.assign(store.register(new_workset("w1"), actor="register"), cluster="c1", reason="test")

    # WHEN the scheduler ticks
    report = Scheduler(store, clock_skew_seconds=60).tick(now=now)

    # THEN the workset is taken back from c1 and given to the live c2, and the history says so
    assert [(decision.workset_id, decision.cluster) for decision in report.assigned] == [("w1", "c2")]
    assert store.get("w1").assigned_cluster == "c2"
    assert [entry.event for entry in store.full_history("w1")] == ["registered", "assigned", "unassigned", "assigned"]
