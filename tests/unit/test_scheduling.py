"""The scheduling policy: order, cost, utilization, capacity, pinning and liveness, without any store."""

from __future__ import annotations

import random
from collections import Counter
from datetime import timedelta

import pytest

from workset_monitor.models import ClusterStatus, Priority, WorkSpec
from workset_monitor.scheduling import ClusterLoad, Decision, plan


@pytest.fixture
def ready(make_workset, now):
    """A ready workset that arrived `age_minutes` ago, optionally pinned to a cluster by its work file."""

    def build(workset_id, priority=Priority.NORMAL, age_minutes=0, cluster_name=None, **fields):
        work = WorkSpec(run_command="-p help", priority=priority, cluster_name=cluster_name)
        arrived = now - timedelta(minutes=age_minutes)
        return make_workset(
            workset_id=workset_id, priority=priority, work=work, created_at=arrived, updated_at=arrived, **fields
        )

    return build


@pytest.fixture
def load(make_cluster):
    """A cluster with `active` worksets on it."""

    def build(name, active=0, **cluster_fields):
        return ClusterLoad(cluster=make_cluster(name, **cluster_fields), active=active)

    return build


def assigned(decisions):
    return {decision.workset_id: decision.cluster for decision in decisions}


def test_urgent_runs_before_normal_before_low_whatever_the_arrival(ready, load, now):
    # GIVEN a low workset that came first and an urgent one that came last, and room for one at a time
    worksets = [
        ready("low-oldest", Priority.LOW, age_minutes=300),
        ready("normal-middle", Priority.NORMAL, age_minutes=200),
        ready("urgent-newest", Priority.URGENT, age_minutes=1),
    ]

    # WHEN the plan is made with room for two
    decisions = plan(worksets, [load("c1", max_worksets=2)], now)

    # THEN decisions follow priority, and the low one waits
    assert [d.workset_id for d in decisions] == ["urgent-newest", "normal-middle", "low-oldest"]
    assert [d.cluster for d in decisions] == ["c1", "c1", None]


def test_within_a_priority_the_oldest_goes_first(ready, load, now):
    worksets = [ready("b", age_minutes=5), ready("a", age_minutes=10), ready("c", age_minutes=30)]

    decisions = plan(worksets, [load("c1", max_worksets=1)], now)

    assert [d.workset_id for d in decisions] == ["c", "a", "b"]
    assert assigned(decisions) == {"c": "c1", "a": None, "b": None}


def test_the_cheapest_cluster_is_chosen(ready, load, now):
    loads = [
        load("dear", cost_per_vcpu_hour=0.09, max_worksets=5),
        load("cheap", cost_per_vcpu_hour=0.03, max_worksets=5),
        load("middle", cost_per_vcpu_hour=0.05, max_worksets=5),
    ]

    decisions = plan([ready("ws-1")], loads, now)

    assert decisions == [
        Decision(
            "ws-1",
            "cheap",
            "priority normal; cheap is the cheapest live cluster with room (0.03/vCPU-h, 1/5 worksets)",
        )
    ]


def test_cost_comes_before_utilization(ready, load, now):
    loads = [
        load("cheap-busy", cost_per_vcpu_hour=0.03, max_worksets=4, active=3),
        load("dear-idle", cost_per_vcpu_hour=0.05, max_worksets=4),
    ]

    assert assigned(plan([ready("ws-1")], loads, now)) == {"ws-1": "cheap-busy"}


def test_the_cheapest_cluster_fills_up_before_the_next_is_used(ready, load, now):
    loads = [load("dear", cost_per_vcpu_hour=0.09, max_worksets=5), load("cheap", cost_per_vcpu_hour=0.03, active=1)]

    decisions = plan([ready("a", age_minutes=2), ready("b", age_minutes=1)], loads, now)

    assert assigned(decisions) == {"a": "dear", "b": "dear"}


def test_a_tie_on_cost_goes_to_the_less_utilized_cluster(ready, load, now):
    loads = [
        load("busy", cost_per_vcpu_hour=0.04, max_worksets=4, active=3),
        load("quiet", cost_per_vcpu_hour=0.04, max_worksets=4, active=1),
    ]

    decisions = plan([ready("ws-1")], loads, now)

    assert assigned(decisions) == {"ws-1": "quiet"}


def test_utilization_is_relative_to_capacity_and_updates_as_the_plan_fills(ready, load, now):
    # "big" holds 2 of 10 (20 %), "small" 0 of 2 (0 %): small first, then big (20 %) beats small (50 %)
    loads = [load("big", max_worksets=10, active=2), load("small", max_worksets=2)]

    decisions = plan([ready("a", age_minutes=3), ready("b", age_minutes=2), ready("c", age_minutes=1)], loads, now)

    assert [d.cluster for d in decisions] == ["small", "big", "big"]


def test_already_assigned_worksets_are_not_planned_again(ready, load, now):
    worksets = [ready("placed", age_minutes=60, assigned_cluster="c1"), ready("new", age_minutes=1)]

    decisions = plan(worksets, [load("c1", max_worksets=2, active=1)], now)

    assert decisions == [
        Decision("new", "c1", "priority normal; c1 is the cheapest live cluster with room (0/vCPU-h, 2/2 worksets)")
    ]


def test_a_pinned_workset_goes_to_its_cluster_even_when_another_is_cheaper(ready, load, now):
    loads = [load("cheap", cost_per_vcpu_hour=0.01, max_worksets=5), load("day-wgs-usw2b", cost_per_vcpu_hour=0.5)]

    decisions = plan([ready("pinned", cluster_name="day-wgs-usw2b")], loads, now)

    assert assigned(decisions) == {"pinned": "day-wgs-usw2b"}


def test_a_pinned_workset_waits_when_its_cluster_is_full(ready, load, now):
    loads = [load("free", max_worksets=5), load("day-wgs-usw2b", max_worksets=1, active=1)]

    decisions = plan([ready("pinned", cluster_name="day-wgs-usw2b")], loads, now)

    assert decisions == [Decision("pinned", None, "waits: its cluster day-wgs-usw2b is full")]


def test_a_pinned_workset_waits_when_its_cluster_is_not_registered(ready, load, now):
    decisions = plan([ready("pinned", cluster_name="day-wgs-usw2b")], [load("free", max_worksets=5)], now)

    assert decisions == [
        Decision("pinned", None, "waits: its work file asks for cluster day-wgs-usw2b, which is not registered")
    ]


@pytest.mark.parametrize(
    ("status", "heartbeat_age"),
    [
        (ClusterStatus.DRAINING, timedelta(0)),
        (ClusterStatus.UNAVAILABLE, timedelta(0)),
        (ClusterStatus.ACTIVE, timedelta(minutes=5, seconds=1)),
    ],
    ids=["draining", "unavailable", "stale"],
)
def test_a_pinned_workset_waits_when_its_cluster_is_not_live(ready, load, now, status, heartbeat_age):
    loads = [
        load("free", max_worksets=5),
        load("day-wgs-usw2b", max_worksets=5, status=status, last_heartbeat_at=now - heartbeat_age),
    ]

    decisions = plan([ready("pinned", cluster_name="day-wgs-usw2b")], loads, now)

    assert decisions == [Decision("pinned", None, "waits: its cluster day-wgs-usw2b is not live")]


def test_a_pinned_workset_does_not_take_the_room_of_an_unpinned_one(ready, load, now):
    worksets = [ready("pinned", age_minutes=10, cluster_name="gone"), ready("free", age_minutes=1)]

    decisions = plan(worksets, [load("c1", max_worksets=1)], now)

    assert assigned(decisions) == {"pinned": None, "free": "c1"}


def test_stale_and_inactive_clusters_get_nothing(ready, load, now):
    # GIVEN cheap clusters that are stale or not active, and one dear live cluster
    loads = [
        load("stale", cost_per_vcpu_hour=0.01, max_worksets=9, last_heartbeat_at=now - timedelta(minutes=5, seconds=1)),
        load("draining", cost_per_vcpu_hour=0.01, max_worksets=9, status=ClusterStatus.DRAINING),
        load("unavailable", cost_per_vcpu_hour=0.01, max_worksets=9, status=ClusterStatus.UNAVAILABLE),
        load("live", cost_per_vcpu_hour=0.9, max_worksets=1),
    ]

    # WHEN three worksets are planned
    decisions = plan([ready(f"ws-{i}", age_minutes=10 - i) for i in range(3)], loads, now)

    # THEN only the live cluster is used, and the rest wait
    assert [d.cluster for d in decisions] == ["live", None, None]
    assert decisions[1].reason == "waits: every live cluster is full"


def test_a_heartbeat_exactly_five_minutes_old_is_still_live(ready, load, now):
    loads = [load("edge", last_heartbeat_at=now - timedelta(minutes=5))]

    assert assigned(plan([ready("ws-1")], loads, now)) == {"ws-1": "edge"}


def test_with_no_live_cluster_the_reason_says_so(ready, load, now):
    loads = [load("old", last_heartbeat_at=now - timedelta(hours=1))]

    assert plan([ready("ws-1")], loads, now) == [Decision("ws-1", None, "waits: no live cluster is registered")]
    assert plan([ready("ws-1")], [], now) == [Decision("ws-1", None, "waits: no live cluster is registered")]


def test_nothing_ready_means_no_decisions(load, now):
    assert plan([], [load("c1")], now) == []


def test_capacity_is_never_exceeded_in_random_scenarios(make_workset, make_cluster, now):
    generator = random.Random(20261201)
    priorities = list(Priority)
    statuses = [ClusterStatus.ACTIVE] * 4 + [ClusterStatus.DRAINING, ClusterStatus.UNAVAILABLE]

    for scenario in range(200):
        # GIVEN random clusters (some over capacity, some stale or not active) and random ready worksets
        loads = []
        for index in range(generator.randint(0, 5)):
            cluster = make_cluster(
                f"c{index}",
                max_worksets=generator.randint(1, 4),
                cost_per_vcpu_hour=generator.choice([0.02, 0.05, 0.05, 0.1]),
                status=generator.choice(statuses),
                last_heartbeat_at=now - timedelta(seconds=generator.choice([0, 60, 299, 300, 301, 3600])),
            )
            loads.append(ClusterLoad(cluster=cluster, active=generator.randint(0, 5)))
        names = [load.cluster.name for load in loads]

        worksets = []
        for index in range(generator.randint(0, 25)):
            priority = generator.choice(priorities)
            pinned = generator.choice([None, None, None, *names, "unregistered"])
            work = WorkSpec(run_command="-p help", priority=priority, cluster_name=pinned)
            arrived = now - timedelta(minutes=generator.randint(0, 600))
            placed = generator.choice(names) if names and generator.random() < 0.2 else None
            worksets.append(
                make_workset(
                    workset_id=f"ws-{index}",
                    priority=priority,
                    work=work,
                    created_at=arrived,
                    assigned_cluster=placed,
                )
            )

        # WHEN the plan is made
        decisions = plan(worksets, loads, now)

        # THEN no cluster gets more than its room, and dead clusters get nothing
        context = f"scenario {scenario}"
        given = Counter(decision.cluster for decision in decisions if decision.cluster is not None)
        fresh_since = now - timedelta(minutes=5)
        live = {
            load.cluster.name: load
            for load in loads
            if load.cluster.status is ClusterStatus.ACTIVE and load.cluster.last_heartbeat_at >= fresh_since
        }
        for name, count in given.items():
            assert name in live, context
            assert count <= max(live[name].cluster.max_worksets - live[name].active, 0), context

        # AND every unassigned workset gets exactly one decision, the assigned ones none
        unassigned = [w for w in worksets if not w.assigned_cluster]
        assert sorted(d.workset_id for d in decisions) == sorted(w.workset_id for w in unassigned), context

        # AND a pinned workset goes only to its cluster; a waiting one says why; nothing waits beside a free room
        by_id = {w.workset_id: w for w in worksets}
        left = {name: max(c.cluster.max_worksets - c.active, 0) - given[name] for name, c in live.items()}
        for decision in decisions:
            wanted = by_id[decision.workset_id].work.cluster_name
            if decision.cluster is not None:
                assert wanted in (None, decision.cluster), context
                continue
            assert decision.reason.startswith("waits: "), context
            if wanted is None:
                assert all(room == 0 for room in left.values()), context
            else:
                assert wanted in decision.reason, context
                assert left.get(wanted, 0) == 0, context
