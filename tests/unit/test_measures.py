"""What each change, tick, registration and refusal measures: the metrics' names, values, units and dimensions."""

from __future__ import annotations

from datetime import timedelta

from workset_monitor import measures
from workset_monitor.measures import Measure
from workset_monitor.models import ClusterStatus, Priority, State
from workset_monitor.scheduler import TickReport
from workset_monitor.scheduling import ClusterLoad, Decision


def by_key(points: list[Measure]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(point.name, point.dimensions): point.value for point in points}


# --- a change of a workset -------------------------------------------------------------------------------------------


def test_a_change_of_state_counts_a_transition_by_the_state_entered_and_the_priority(make_workset, now) -> None:
    old = make_workset(state=State.READY, priority=Priority.URGENT)
    new = make_workset(state=State.LOCKED, priority=Priority.URGENT, version=2)

    assert measures.change(old, new) == [
        Measure("Transitions", 1, "Count", (("state", "locked"), ("priority", "urgent")))
    ]


def test_a_registration_counts_as_entering_its_first_state(make_workset) -> None:
    assert by_key(measures.change(None, make_workset(state=State.ERROR))) == {
        ("Transitions", (("state", "error"), ("priority", "normal"))): 1
    }


def test_a_heartbeat_or_an_assignment_measures_nothing(make_workset) -> None:
    old = make_workset(state=State.IN_PROGRESS)
    assert measures.change(old, old.model_copy(update={"version": 2, "progress": "staging"})) == []


def test_the_end_of_a_run_measures_its_duration_from_when_it_started_running(make_workset, now) -> None:
    # GIVEN a workset that entered in_progress 90 minutes before it completed (its later heartbeats moved updated_at)
    started = now - timedelta(minutes=90)
    old = make_workset(state=State.IN_PROGRESS, state_since=started, updated_at=now - timedelta(minutes=1))
    new = make_workset(state=State.COMPLETE, state_since=now, updated_at=now, version=9)

    # THEN the run took 5,400 s, by the state it ended in
    assert by_key(measures.change(old, new))[("RunDuration", (("state", "complete"),))] == 5400
    assert [point.unit for point in measures.change(old, new) if point.name == "RunDuration"] == ["Seconds"]


def test_a_failed_run_is_measured_too_but_not_a_lease_given_back(make_workset, now) -> None:
    started = now - timedelta(seconds=30)
    running = make_workset(state=State.IN_PROGRESS, state_since=started)
    locked = make_workset(state=State.LOCKED, state_since=started)

    assert (
        by_key(measures.change(running, make_workset(state=State.ERROR, state_since=now)))[
            ("RunDuration", (("state", "error"),))
        ]
        == 30
    )
    assert [point.name for point in measures.change(locked, make_workset(state=State.READY))] == ["Transitions"]


def test_a_run_of_a_workset_written_before_state_since_existed_has_no_duration(make_workset, now) -> None:
    old = make_workset(state=State.IN_PROGRESS, state_since=None)
    assert [point.name for point in measures.change(old, make_workset(state=State.COMPLETE))] == ["Transitions"]


# --- a tick ----------------------------------------------------------------------------------------------------------


def test_a_tick_measures_the_queue_by_state_and_by_priority_and_the_oldest_wait(make_workset, now) -> None:
    # GIVEN a tick that read two urgent ready worksets (one ready for 40 minutes, registered long before, since it
    # retried), one normal one, and two locked and one running
    ready = [
        make_workset(workset_id="a", priority=Priority.URGENT, state_since=now - timedelta(minutes=40),
                     created_at=now - timedelta(days=2)),
        make_workset(workset_id="b", priority=Priority.URGENT, state_since=now - timedelta(minutes=5)),
        make_workset(workset_id="c", state_since=None, created_at=now - timedelta(minutes=10)),
    ]  # fmt: skip
    report = TickReport(at=now, ready=ready, queue={State.READY: 3, State.LOCKED: 2, State.IN_PROGRESS: 1})

    # WHEN its measures are taken
    points = by_key(measures.tick(report))

    # THEN the queue is counted by state and by priority (zero included), and the oldest waited 40 minutes
    assert {key: value for key, value in points.items() if key[0] == "QueueDepth"} == {
        ("QueueDepth", (("state", "ready"),)): 3,
        ("QueueDepth", (("state", "locked"),)): 2,
        ("QueueDepth", (("state", "in_progress"),)): 1,
    }
    assert {key: value for key, value in points.items() if key[0] == "ReadyQueueDepth"} == {
        ("ReadyQueueDepth", (("priority", "urgent"),)): 2,
        ("ReadyQueueDepth", (("priority", "normal"),)): 1,
        ("ReadyQueueDepth", (("priority", "low"),)): 0,
    }
    assert points[("OldestReadyAge", ())] == 40 * 60


def test_an_empty_queue_has_an_oldest_age_of_zero_and_every_decision_is_counted(now) -> None:
    points = by_key(measures.tick(TickReport(at=now)))

    assert points[("OldestReadyAge", ())] == 0
    assert {key[1][0][1]: value for key, value in points.items() if key[0] == "SchedulerDecisions"} == {
        "assigned": 0,
        "waiting": 0,
        "refused": 0,
        "expired": 0,
        "retried": 0,
        "unassigned": 0,
        "cluster_needed": 0,
    }


def test_a_tick_counts_its_decisions(now) -> None:
    report = TickReport(
        at=now,
        expired=["x"],
        retried=["y", "z"],
        assigned=[Decision("a", "c1", "cheapest"), Decision("b", "c1", "cheapest")],
        waiting=[Decision("w", None, "waits")],
        refused=[Decision("r", "c2", "full")],
        needed=[{"vcpus": 64, "worksets": 1}],
    )

    decisions = {
        key[1][0][1]: value for key, value in by_key(measures.tick(report)).items() if key[0] == "SchedulerDecisions"
    }

    assert decisions == {
        "assigned": 2,
        "waiting": 1,
        "refused": 1,
        "expired": 1,
        "retried": 2,
        "unassigned": 0,
        "cluster_needed": 1,
    }


def test_each_cluster_that_is_live_or_holds_work_reports_what_it_holds_after_the_tick(make_cluster, now) -> None:
    # GIVEN a live cluster holding one workset and given two more by this tick, a silent one still running one, a
    # silent idle one and a retired one
    silent = now - timedelta(hours=1)
    report = TickReport(
        at=now,
        assigned=[Decision("a", "live", "cheapest"), Decision("b", "live", "cheapest")],
        loads=[
            ClusterLoad(make_cluster("live"), active=1),
            ClusterLoad(make_cluster("silent-busy", last_heartbeat_at=silent), active=1),
            ClusterLoad(make_cluster("silent-idle", last_heartbeat_at=silent), active=0),
            ClusterLoad(make_cluster("retired", status=ClusterStatus.RETIRED), active=0),
        ],
    )

    clusters = {key[1]: value for key, value in by_key(measures.tick(report)).items() if key[0] == "ClusterWorksets"}

    assert clusters == {(("cluster", "live"),): 3, (("cluster", "silent-busy"),): 1}


# --- the API and the notifier ----------------------------------------------------------------------------------------


def test_only_lock_conflicts_are_counted_as_such() -> None:
    assert measures.lock_conflict("lease_lost") == Measure("LockConflicts", 1, "Count", (("code", "lease_lost"),))
    assert measures.lock_conflict("concurrent_update") is not None
    assert measures.lock_conflict("transition_refused") is not None
    assert measures.lock_conflict("conflict") is None  # a registered id, not a lock
    assert measures.lock_conflict("cluster_retired") is None


def test_a_registration_is_counted_by_its_outcome() -> None:
    assert measures.registration("duplicate") == Measure("Registrations", 1, "Count", (("outcome", "duplicate"),))


def test_deliveries_are_counted_per_channel() -> None:
    points = measures.deliveries({("Delivered", "sns"): 3, ("DeliveryFailed", "hook"): 1})

    assert points == [
        Measure("Delivered", 3, "Count", (("channel", "sns"),)),
        Measure("DeliveryFailed", 1, "Count", (("channel", "hook"),)),
    ]
