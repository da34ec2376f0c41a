"""The scheduling policy: order, cost, utilization, capacity, pinning and liveness, without any store."""

from __future__ import annotations

import random
from collections import Counter
from datetime import timedelta

import pytest

from workset_monitor.models import ClusterStatus, Priority, State, WorkSpec
from workset_monitor.scheduler import recent_decisions
from workset_monitor.scheduling import (
    ClusterLoad,
    ClusterNeed,
    Decision,
    Policy,
    RunModel,
    budget_cap,
    clusters_needed,
    plan,
)


@pytest.fixture
def ready(make_workset, now):
    """A ready workset that arrived `age_minutes` ago, optionally pinned to a cluster by its work file."""

    def build(workset_id, priority=Priority.NORMAL, age_minutes=0, cluster_name=None, work=None, **fields):
        work = WorkSpec(run_command="-p help", priority=priority, cluster_name=cluster_name, **(work or {}))
        arrived = now - timedelta(minutes=age_minutes)
        return make_workset(
            workset_id=workset_id, priority=priority, work=work, created_at=arrived, updated_at=arrived, **fields
        )

    return build


@pytest.fixture
def load(make_cluster):
    """A cluster with `active` worksets on it."""

    def build(name, active=0, vcpus_used=0, **cluster_fields):
        return ClusterLoad(cluster=make_cluster(name, **cluster_fields), active=active, vcpus_used=vcpus_used)

    return build


def assigned(decisions):
    return {decision.workset_id: decision.cluster for decision in decisions}


def test_urgent_runs_before_normal_before_low_whatever_the_arrival(ready, load, now):
    # GIVEN a low workset that came first and an urgent one that came last, and room for one at a time
    worksets = [
        ready("low-oldest", Priority.LOW, age_minutes=30),
        ready("normal-middle", Priority.NORMAL, age_minutes=20),
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
            "priority normal; cheap is the cheapest live cluster with room: est. 120 vCPU-h x 0.03/vCPU-h = $3.60 "
            "(1/5 worksets)",
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
        Decision(
            "new",
            "c1",
            "priority normal; c1 is the cheapest live cluster with room: est. 120 vCPU-h x 0/vCPU-h = $0.00 "
            "(2/2 worksets)",
        )
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
        Decision(
            "pinned",
            None,
            "waits: its work file asks for cluster day-wgs-usw2b, which is not registered; "
            "cluster needed: 32 vCPUs named day-wgs-usw2b",
        )
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

    assert decisions == [
        Decision(
            "pinned", None, "waits: its cluster day-wgs-usw2b is not live; cluster needed: 32 vCPUs named day-wgs-usw2b"
        )
    ]


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

    nothing_live = "waits: no live cluster is registered; cluster needed: 32 vCPUs"
    assert plan([ready("ws-1")], loads, now) == [Decision("ws-1", None, nothing_live)]
    assert plan([ready("ws-1")], [], now) == [Decision("ws-1", None, nothing_live)]


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


# --- aging: nothing starves ----------------------------------------------------------------------------------------


def test_a_low_workset_that_waited_long_enough_goes_before_fresh_urgent_ones(ready, load, now):
    # GIVEN a low workset waiting for 9 hours (aging: one rank per 4 hours) and a stream of fresh urgent ones
    worksets = [ready("low-starving", Priority.LOW, age_minutes=9 * 60)]
    worksets += [ready(f"urgent-{i}", Priority.URGENT, age_minutes=i) for i in range(5)]

    # WHEN one place is free
    decisions = plan(worksets, [load("c1", max_worksets=1)], now, policy=Policy(aging=timedelta(hours=4)))

    # THEN the low one, raised to urgent and older than all of them, gets it, and its reason says why
    assert decisions[0].workset_id == "low-starving" and decisions[0].cluster == "c1"
    assert "raised to rank 0 after waiting 9 h" in decisions[0].reason


def test_aging_raises_one_rank_per_period_and_not_past_urgent(ready, load, now):
    policy = Policy(aging=timedelta(hours=4))
    low_5h = ready("low-5h", Priority.LOW, age_minutes=5 * 60)  # low -> normal
    normal_1h = ready("normal-1h", Priority.NORMAL, age_minutes=60)
    urgent_new = ready("urgent-new", Priority.URGENT)

    decisions = plan([normal_1h, low_5h, urgent_new], [load("c1", max_worksets=3)], now, policy=policy)

    assert [d.workset_id for d in decisions] == ["urgent-new", "low-5h", "normal-1h"]


# --- deadlines ------------------------------------------------------------------------------------------------------


def test_a_workset_close_to_its_deadline_goes_first(ready, load, now):
    # GIVEN an old urgent workset, and a low one whose deadline leaves it little time (120 vCPU-h on 32 vCPUs: 3.75 h)
    urgent = ready("urgent-old", Priority.URGENT, age_minutes=60)
    due = ready("low-due", Priority.LOW, work={"deadline": now + timedelta(hours=6)})

    # WHEN one place is free
    decisions = plan([urgent, due], [load("c1", max_worksets=1)], now)

    # THEN the one with the deadline runs, and says why
    assert assigned(decisions) == {"low-due": "c1", "urgent-old": None}
    assert "is near: must start within 2.2 h" in decisions[0].reason


def test_a_far_deadline_changes_nothing(ready, load, now):
    urgent = ready("urgent", Priority.URGENT)
    later = ready("low-later", Priority.LOW, age_minutes=10, work={"deadline": now + timedelta(days=5)})

    decisions = plan([later, urgent], [load("c1", max_worksets=1)], now)

    assert assigned(decisions) == {"urgent": "c1", "low-later": None}


def test_a_workset_that_cannot_make_its_deadline_is_still_scheduled_and_says_so(ready, load, now):
    late = ready("late", work={"deadline": now + timedelta(hours=1)})  # needs about 3.75 h

    decisions = plan([late], [load("c1")], now)

    assert assigned(decisions) == {"late": "c1"}
    assert "cannot finish before its deadline" in decisions[0].reason and "needs ~3.8 h" in decisions[0].reason


def test_near_deadlines_go_soonest_first(ready, load, now):
    first = ready("due-in-5h", work={"deadline": now + timedelta(hours=5)})
    second = ready("due-in-8h", work={"deadline": now + timedelta(hours=8)}, age_minutes=100)

    decisions = plan([second, first], [load("c1", max_worksets=2)], now)

    assert [d.workset_id for d in decisions] == ["due-in-5h", "due-in-8h"]


# --- dependencies ---------------------------------------------------------------------------------------------------


def test_a_workset_waits_until_every_dependency_is_complete(ready, load, now):
    child = ready("child", work={"depends_on": ("parent-a", "parent-b", "parent-c")})
    states = {"parent-a": State.COMPLETE, "parent-b": State.IN_PROGRESS}

    decisions = plan([child], [load("c1")], now, dependencies=states)

    assert decisions == [Decision("child", None, "waits: depends on parent-b (in_progress), parent-c (not registered)")]


def test_a_workset_whose_dependencies_are_complete_runs(ready, load, now):
    child = ready("child", work={"depends_on": ("parent-a",)})

    decisions = plan([child], [load("c1")], now, dependencies={"parent-a": State.COMPLETE})

    assert assigned(decisions) == {"child": "c1"}


def test_a_held_back_workset_does_not_take_a_place(ready, load, now):
    held = ready("held", Priority.URGENT, work={"depends_on": ("parent",)})
    other = ready("other", Priority.LOW)

    decisions = plan([held, other], [load("c1", max_worksets=1)], now, dependencies={"parent": State.ERROR})

    assert assigned(decisions) == {"held": None, "other": "c1"}


def test_a_workset_that_depends_on_itself_says_so(ready, load, now):
    decisions = plan([ready("loop", work={"depends_on": ("loop",)})], [load("c1")], now, dependencies={})

    assert decisions[0].cluster is None
    assert decisions[0].reason == (
        "waits: depends on loop (not registered); a dependency cycle (loop) that never ends: fix their depends_on"
    )


def test_worksets_that_wait_for_each_other_are_named_as_a_cycle(ready, load, now):
    # GIVEN a -> b -> c -> a, all ready, and d waiting on a (outside the cycle), and e depending on nothing ready
    worksets = [
        ready("a", work={"depends_on": ("x", "b")}),
        ready("b", work={"depends_on": ("c",)}),
        ready("c", work={"depends_on": ("a",)}),
        ready("d", work={"depends_on": ("a",)}),
        ready("x"),
    ]
    states = {name: State.READY for name in "abcx"}

    decisions = {d.workset_id: d for d in plan(worksets, [load("c1", max_worksets=5)], now, dependencies=states)}

    for name in "abc":
        assert decisions[name].reason.endswith("a dependency cycle (a, b, c) that never ends: fix their depends_on")
    assert "cycle" not in decisions["d"].reason
    assert decisions["x"].cluster == "c1"


# --- the run estimate and cost --------------------------------------------------------------------------------------


def test_the_estimate_is_samples_times_coverage_times_the_pipelines_factor(make_workset):
    model = RunModel()

    wgs = make_workset(sample_count=3, work=WorkSpec(run_command="x", coverage=30))
    wes = make_workset(sample_count=2, work=WorkSpec(run_command="x", pipeline="WES"))
    sized = make_workset(sample_count=10, work=WorkSpec(run_command="x", vcpus=48))

    assert model.estimate(wgs).vcpu_hours == 3 * 30 * 4.0 and model.estimate(wgs).vcpus == 96
    assert model.estimate(wes).vcpu_hours == 2 * 100 * 0.3 and model.estimate(wes).vcpus == 64
    assert model.estimate(sized).vcpus == 48
    assert model.estimate(make_workset(sample_count=50)).vcpus == 192  # capped


def test_the_model_is_tunable_in_one_place(make_workset):
    model = RunModel(vcpu_hours_per_sample_x={"wgs": 1.0}, vcpus_per_sample=8)

    estimate = model.estimate(make_workset(sample_count=2))

    assert (estimate.vcpu_hours, estimate.vcpus) == (60.0, 16)


def test_the_lowest_estimated_cost_wins_and_the_reason_shows_the_sum(ready, load, now):
    loads = [load("dear", cost_per_vcpu_hour=0.05), load("cheap", cost_per_vcpu_hour=0.02)]

    decisions = plan([ready("ws", sample_count=2)], loads, now)

    assert decisions[0].cluster == "cheap" and decisions[0].estimated_cost == pytest.approx(4.8)
    assert "est. 240 vCPU-h x 0.02/vCPU-h = $4.80" in decisions[0].reason


# --- capacity: worksets and vCPUs -----------------------------------------------------------------------------------


def test_vcpu_capacity_is_respected(ready, load, now):
    # GIVEN a cheap cluster of 64 vCPUs with 40 in use, and a dearer one; each workset takes 32 vCPUs
    loads = [
        load("cheap", cost_per_vcpu_hour=0.01, max_worksets=10, vcpus=64, active=1, vcpus_used=40),
        load("dear", cost_per_vcpu_hour=0.05, max_worksets=10, vcpus=64),
    ]

    decisions = plan([ready("a", age_minutes=2), ready("b", age_minutes=1)], loads, now)

    # THEN neither fits on the cheap one (40 + 32 > 64): both go to the dear one, which then is full of vCPUs
    assert assigned(decisions) == {"a": "dear", "b": "dear"}
    assert "64/64 vCPUs" in decisions[1].reason


def test_a_cluster_full_of_vcpus_makes_worksets_wait(ready, load, now):
    loads = [load("c1", max_worksets=10, vcpus=64, vcpus_used=64, active=2)]

    decisions = plan([ready("a")], loads, now)

    assert decisions == [Decision("a", None, "waits: c1 has 0 of its 64 vCPUs free, it needs 32")]


def test_a_short_of_vcpus_reason_names_the_cheapest_cluster_with_a_place(ready, load, now):
    loads = [
        load("cheap", cost_per_vcpu_hour=0.01, max_worksets=10, vcpus=64, vcpus_used=48, active=1),
        load("dear", cost_per_vcpu_hour=0.05, max_worksets=10, vcpus=64, vcpus_used=40, active=1),
        load("full", cost_per_vcpu_hour=0.001, max_worksets=1, vcpus=64, active=1),
    ]

    decisions = plan([ready("a")], loads, now)

    assert decisions[0].reason == (
        "waits: no live cluster with a free place has the 32 vCPUs it needs free (the cheapest, cheap, has 16 of 64)"
    )


# --- holds: a large workset at the top rank is not starved by small ones --------------------------------------------


def test_a_large_urgent_workset_holds_its_cluster_until_its_vcpus_free_up(ready, load, now):
    # GIVEN one cluster of 192 vCPUs with a place for 10 worksets, 32 vCPUs taken by a small run, a large workset that
    # waited long enough to be raised to urgent (it needs all 192), and small fresh ones behind it
    def queue():
        return [
            ready("large", Priority.LOW, age_minutes=48 * 60, work={"vcpus": 192}),
            *(ready(f"small-{index}", age_minutes=1) for index in range(3)),
        ]

    # WHEN the plan is made while the small run holds its 32 vCPUs
    decisions = plan(queue(), [load("c1", max_worksets=10, vcpus=192, active=1, vcpus_used=32)], now)

    # THEN the large one waits and holds the cluster: the small ones do not take the vCPUs it waits for
    assert assigned(decisions) == {"large": None, "small-0": None, "small-1": None, "small-2": None}
    assert decisions[0].reason == (
        "waits: c1 has 160 of its 192 vCPUs free, it needs 192; c1 is held for it, so smaller worksets do not take the "
        "vCPUs it waits for"
    )
    assert decisions[1].reason == "waits: every live cluster is full or held for large, ahead of it"

    # WHEN the small run ends and the next plan is made
    decisions = plan(queue(), [load("c1", max_worksets=10, vcpus=192, active=0, vcpus_used=0)], now)

    # THEN the large one runs first
    assert assigned(decisions)["large"] == "c1"


def test_without_the_top_rank_a_large_workset_holds_nothing_and_small_ones_fill_the_gap(ready, load, now):
    worksets = [
        ready("large", Priority.NORMAL, age_minutes=30, work={"vcpus": 192}),
        ready("small", Priority.NORMAL, age_minutes=1),
    ]

    decisions = plan(worksets, [load("c1", max_worksets=10, vcpus=192, active=1, vcpus_used=32)], now)

    assert assigned(decisions) == {"large": None, "small": "c1"}
    assert "held" not in decisions[0].reason


def test_a_hold_closes_one_cluster_only(ready, load, now):
    loads = [
        load("cheap", cost_per_vcpu_hour=0.01, max_worksets=10, vcpus=192, active=1, vcpus_used=32),
        load("dear", cost_per_vcpu_hour=0.05, max_worksets=10, vcpus=64),
    ]
    worksets = [ready("large", Priority.URGENT, age_minutes=5, work={"vcpus": 192}), ready("small", age_minutes=1)]

    decisions = plan(worksets, loads, now)

    assert assigned(decisions) == {"large": None, "small": "dear"}


def test_random_plans_never_exceed_worksets_or_vcpus(make_workset, make_cluster, now):
    generator = random.Random(6)
    for scenario in range(200):
        loads = [
            ClusterLoad(
                make_cluster(f"c{i}", max_worksets=generator.randint(1, 6), vcpus=generator.choice([0, 64, 128, 256])),
                active=generator.randint(0, 3),
                vcpus_used=generator.choice([0, 32, 64]),
            )
            for i in range(generator.randint(1, 4))
        ]
        worksets = [
            make_workset(workset_id=f"w{i}", sample_count=generator.randint(1, 8), created_at=now)
            for i in range(generator.randint(0, 20))
        ]

        decisions = plan(worksets, loads, now)

        for current in loads:
            taken = [d for d in decisions if d.cluster == current.cluster.name]
            assert current.active + len(taken) <= max(current.cluster.max_worksets, current.active), scenario
            if current.cluster.vcpus and taken:
                assert current.vcpus_used + sum(d.vcpus for d in taken) <= current.cluster.vcpus, scenario


# --- budgets --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("budget", "cap"),
    [
        ("250", 250.0),
        ("$250", 250.0),
        ("250.5 USD", 250.5),
        ("usd 10", 10.0),
        ("giab-benchmarking-2026", None),
        (None, None),
    ],
)
def test_a_budget_is_a_cap_in_usd_or_a_label(budget, cap):
    assert budget_cap(budget) == cap


def test_a_workset_over_its_budget_waits_and_says_by_how_much(ready, load, now):
    loads = [load("c1", cost_per_vcpu_hour=0.05)]  # 120 vCPU-h: $6.00

    decisions = plan([ready("ws", work={"budget": "$5"})], loads, now)

    assert decisions == [
        Decision("ws", None, "waits: its cheapest estimate, $6.00 on c1 (120 vCPU-h), exceeds its budget of $5")
    ]


def test_a_budget_rules_out_the_dear_cluster_only(ready, load, now):
    # GIVEN the cheap cluster is full: the dear one would cost $12, over the budget
    loads = [load("cheap", cost_per_vcpu_hour=0.02, active=1), load("dear", cost_per_vcpu_hour=0.1)]

    decisions = plan([ready("ws", work={"budget": "10"})], loads, now)

    # THEN it waits for the cheap one rather than overspend
    assert decisions == [Decision("ws", None, "waits: every live cluster is full")]


def test_a_label_budget_caps_nothing(ready, load, now):
    decisions = plan([ready("ws", work={"budget": "giab-benchmarking-2026"})], [load("c1", cost_per_vcpu_hour=9)], now)

    assert assigned(decisions) == {"ws": "c1"}


# --- affinity -------------------------------------------------------------------------------------------------------


def test_region_and_zone_affinity(ready, load, now):
    loads = [
        load("east", region="us-east-1", availability_zone="us-east-1a", cost_per_vcpu_hour=0.01),
        load("west-a", region="us-west-2", availability_zone="us-west-2a", cost_per_vcpu_hour=0.03),
        load("west-b", region="us-west-2", availability_zone="us-west-2b", cost_per_vcpu_hour=0.05),
    ]
    worksets = [
        ready("anywhere", age_minutes=3),
        ready("in-west", age_minutes=2, work={"region": "us-west-2"}),
        ready("in-west-b", age_minutes=1, work={"availability_zone": "us-west-2b"}),
    ]

    decisions = plan(worksets, loads, now)

    assert assigned(decisions) == {"anywhere": "east", "in-west": "west-a", "in-west-b": "west-b"}


def test_a_full_region_makes_its_worksets_wait_and_says_where(ready, load, now):
    loads = [load("east", region="us-east-1"), load("west", region="us-west-2", active=1)]

    decisions = plan([ready("ws", work={"region": "us-west-2"})], loads, now)

    assert decisions == [Decision("ws", None, "waits: every live cluster in region us-west-2 is full")]


# --- cluster needed -------------------------------------------------------------------------------------------------


def test_when_no_cluster_fits_the_decision_says_which_is_needed(ready, load, now):
    # GIVEN clusters too small (64 vCPUs) or elsewhere, and a workset of 4 samples (128 vCPUs) bound to eu-west-1
    loads = [load("small", region="eu-west-1", vcpus=64), load("big", region="us-east-1", vcpus=512)]

    decisions = plan([ready("big-run", sample_count=4, work={"region": "eu-west-1"})], loads, now)

    assert decisions[0].cluster is None
    assert decisions[0].need == ClusterNeed(vcpus=128, region="eu-west-1")
    assert decisions[0].reason == (
        "waits: no live cluster in region eu-west-1 has the 128 vCPUs it needs (the largest, small, has 64); "
        "cluster needed: 128 vCPUs in eu-west-1"
    )


def test_a_region_without_any_live_cluster_says_so_rather_than_blame_the_size(ready, load, now):
    decisions = plan([ready("ws", work={"region": "eu-west-1"})], [load("c1", region="us-east-1", vcpus=512)], now)

    assert decisions[0].reason == "waits: no live cluster in region eu-west-1; cluster needed: 32 vCPUs in eu-west-1"


def test_a_full_cluster_is_no_reason_to_ask_for_another(ready, load, now):
    decisions = plan([ready("ws")], [load("c1", active=1)], now)

    assert decisions[0].need is None


def test_needs_are_grouped_by_place_with_the_largest_size(ready, load, now):
    worksets = [
        ready("a", sample_count=1, work={"region": "eu-west-1"}, age_minutes=3),
        ready("b", sample_count=5, work={"region": "eu-west-1"}, age_minutes=2),
        ready("c", sample_count=1, work={"region": "ap-south-1", "availability_zone": "ap-south-1a"}, age_minutes=1),
    ]

    needed = clusters_needed(plan(worksets, [load("c1", region="us-east-1")], now))

    assert needed == [
        {"vcpus": 160, "worksets": 2, "workset_ids": ["a", "b"], "region": "eu-west-1"},
        {
            "vcpus": 32,
            "worksets": 1,
            "workset_ids": ["c"],
            "region": "ap-south-1",
            "availability_zone": "ap-south-1a",
        },
    ]


# --- recent decisions -----------------------------------------------------------------------------------------------


def test_recent_decisions_keep_every_assignment_and_each_repeated_wait_once_at_its_newest_tick():
    # GIVEN three ticks, newest first: "big" waited for the same reason in all three, "small" for another reason once
    ticks = [
        {
            "at": "t3",
            "assignments": [{"workset_id": "a3", "cluster": "c1", "reason": "cheapest"}],
            "waits": [
                {"workset_id": "big", "cluster": None, "reason": "waits: every live cluster is full"},
            ],
        },
        {
            "at": "t2",
            "assignments": [],
            "waits": [
                {"workset_id": "big", "cluster": None, "reason": "waits: every live cluster is full"},
                {"workset_id": "small", "cluster": None, "reason": "waits: depends on a3 (ready)"},
            ],
        },
        {
            "at": "t1",
            "assignments": [{"workset_id": "a1", "cluster": "c2", "reason": "cheapest"}],
            "waits": [
                {"workset_id": "big", "cluster": None, "reason": "waits: its cluster c9 is not live"},
            ],
        },
    ]

    decisions = recent_decisions(ticks, limit=10)

    # THEN the repeated wait stands once, at its newest tick; a new reason for the same workset is a decision of its own
    assert [(d["at"], d["workset_id"]) for d in decisions] == [
        ("t3", "a3"),
        ("t3", "big"),
        ("t2", "small"),
        ("t1", "a1"),
        ("t1", "big"),
    ]
    assert len(recent_decisions(ticks, limit=2)) == 2
