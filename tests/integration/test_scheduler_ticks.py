"""The scheduler's tick against the template's table in the in-process emulator: the capacity guard, the counters,
assignments that time out, dependencies read by key, "Cluster needed" events, and calls that do not grow with the
number of finished worksets."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from types import ModuleType
from typing import Any

import boto3
import pytest

from benchmarks.aws_calls import CallCounter
from local.template import Template
from tests.conftest import FakeLambdaContext
from workset_monitor.cluster_needs import DETAIL_TYPE, SOURCE, ClusterNeedEvents
from workset_monitor.errors import ClusterNotFound, ConcurrentUpdate
from workset_monitor.models import Cluster, Priority, State, Workset, WorkSpec, utcnow
from workset_monitor.scheduler import Scheduler
from workset_monitor.store import WorksetStore

pytestmark = pytest.mark.integration


def ready_workset(store: WorksetStore, workset_id: str, *, minutes_ago: int = 0, **work: Any) -> Workset:
    now = utcnow() - timedelta(minutes=minutes_ago)
    workset = Workset(
        workset_id=workset_id,
        bucket="bucket",
        folder=f"daylily_monitoring/active_worksets/{workset_id}/",
        state=State.READY,
        priority=work.get("priority", Priority.NORMAL),
        created_at=now,
        updated_at=now,
        sample_count=1,
        work=WorkSpec(run_command="-p help", **work),
    )
    return store.register(workset, actor="test")


def cluster(store: WorksetStore, name: str, **fields: Any) -> Cluster:
    return store.put_cluster(Cluster(name=name, **fields))


def finish(store: WorksetStore, workset_id: str, cluster_name: str) -> None:
    """Claim, run and complete a workset on a cluster."""
    claimed = store.claim(store.get(workset_id), owner="agent", cluster=cluster_name, lease_seconds=600)
    assert claimed.lease is not None
    running = store.transition(claimed, State.IN_PROGRESS, actor="agent", lease_token=claimed.lease.token)
    store.transition(running, State.COMPLETE, actor="agent", lease_token=claimed.lease.token)


def actual_load(store: WorksetStore, name: str) -> tuple[int, int]:
    held = list(store.worksets_on(name))
    return len(held), sum(workset.reserved_vcpus for workset in held)


def counted_load(store: WorksetStore, name: str) -> tuple[int, int]:
    load = next(load for load in store.cluster_loads() if load.cluster.name == name)
    return load.active, load.vcpus_used


# --- the capacity guard ---------------------------------------------------------------------------------------------


def test_a_tick_that_planned_on_a_stale_load_cannot_push_a_cluster_over_capacity(
    store: WorksetStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a cluster with room for one, and a tick B that read its load while it was still empty
    cluster(store, "c1", max_worksets=1)
    stale_loads = store.cluster_loads()
    ready_workset(store, "first", minutes_ago=5)
    Scheduler(store, clock_skew_seconds=60).tick()  # tick A fills the cluster
    ready_workset(store, "second")

    # WHEN tick B plans on the load it read before A assigned
    monkeypatch.setattr(store, "cluster_loads", lambda: stale_loads)
    report = Scheduler(store, clock_skew_seconds=60).tick()

    # THEN its assignment is refused by the guard, and the cluster holds one workset
    assert [d.workset_id for d in report.refused] == ["second"] and report.assigned == []
    assert store.get("second").assigned_cluster is None
    assert actual_load(store, "c1")[0] == 1


def test_the_guard_counts_vcpus(store: WorksetStore) -> None:
    # GIVEN a cluster of 64 vCPUs and room for 5 worksets of 32 vCPUs each
    cluster(store, "c1", max_worksets=5, vcpus=64)
    for index in range(3):
        ready_workset(store, f"w{index}", minutes_ago=10 - index)

    report = Scheduler(store, clock_skew_seconds=60).tick()

    assert [d.workset_id for d in report.assigned] == ["w0", "w1"]
    assert counted_load(store, "c1") == actual_load(store, "c1") == (2, 64)


def test_a_direct_assignment_to_a_full_cluster_is_refused(store: WorksetStore) -> None:
    full = cluster(store, "c1", max_worksets=1)
    store.assign(ready_workset(store, "w1"), cluster="c1", reason="test", capacity=full)

    with pytest.raises(ConcurrentUpdate):
        store.assign(ready_workset(store, "w2"), cluster="c1", reason="test", capacity=full)


def test_the_cluster_counters_follow_every_path_a_workset_takes(store: WorksetStore) -> None:
    # GIVEN two clusters and worksets that go every way: assigned, claimed, run, completed, failed, canceled,
    # given back, taken back, claimed without an assignment, and a cluster re-registered meanwhile
    c1 = cluster(store, "c1", max_worksets=10, vcpus=320)
    cluster(store, "c2", max_worksets=10)
    for index in range(8):
        ready_workset(store, f"w{index}", minutes_ago=10 - index)
    for index in range(5):
        store.assign(store.get(f"w{index}"), cluster="c1", reason="test", vcpus=32, capacity=c1)

    finish(store, "w0", "c1")
    claimed = store.claim(store.get("w1"), owner="agent", cluster="c1", lease_seconds=600)
    assert claimed.lease is not None
    store.transition(claimed, State.ERROR, actor="agent", lease_token=claimed.lease.token, reason="boom")
    claimed = store.claim(store.get("w2"), owner="agent", cluster="c1", lease_seconds=600)
    assert claimed.lease is not None
    store.transition(claimed, State.READY, actor="agent", lease_token=claimed.lease.token, reason="given back")
    store.transition(store.get("w3"), State.CANCELED, actor="alice", reason="wrong sheet")
    store.record(store.get("w4"), {"assigned_cluster": None}, event="unassigned", actor="scheduler", reason="test")
    store.claim(store.get("w5"), owner="agent", cluster="c2", lease_seconds=600)
    store.put_cluster(Cluster(name="c1", max_worksets=12, vcpus=320))

    # THEN each cluster's counters equal what its index holds
    for name in ("c1", "c2"):
        assert counted_load(store, name) == actual_load(store, name), name
    assert counted_load(store, "c1") == (0, 0) and counted_load(store, "c2") == (1, 0)
    assert store.get_cluster("c1").max_worksets == 12


def test_a_claim_on_an_unregistered_cluster_is_counted_once_it_registers(store: WorksetStore) -> None:
    # GIVEN an agent that claimed a workset on a cluster it has not registered yet
    store.claim(ready_workset(store, "w1"), owner="agent", cluster="ghost", lease_seconds=600)

    # THEN the cluster is still unknown to every read
    with pytest.raises(ClusterNotFound):
        store.get_cluster("ghost")
    with pytest.raises(ClusterNotFound):
        store.touch_cluster("ghost", at=utcnow())
    assert store.list_clusters() == []

    # AND once registered it shows the workset it holds
    cluster(store, "ghost", max_worksets=2)
    assert counted_load(store, "ghost") == actual_load(store, "ghost") == (1, 0)


def test_state_counters_equal_the_index(store: WorksetStore) -> None:
    cluster(store, "c1", max_worksets=3)
    for index in range(6):
        ready_workset(store, f"w{index}", priority=[Priority.URGENT, Priority.LOW][index % 2])
    Scheduler(store, clock_skew_seconds=60).tick()
    finish(store, "w0", "c1")
    store.transition(store.get("w5"), State.IGNORED, actor="alice")

    counts = store.count_by_state()
    counters = store.counters()

    assert counts == {state: sum(1 for _ in store.worksets_in(state)) for state in State}
    assert (counts[State.READY], counts[State.COMPLETE], counts[State.IGNORED]) == (4, 1, 1)
    assert counters["ready:assigned"] == sum(1 for w in store.worksets_in(State.READY) if w.assigned_cluster)
    assert (counters["ready:urgent"], counters["ready:low"]) == (2, 2)


# --- assignments that are not claimed -------------------------------------------------------------------------------


def test_an_assignment_not_claimed_in_time_returns_to_the_queue(store: WorksetStore) -> None:
    # GIVEN a workset assigned to a cluster that does not claim it
    cluster(store, "slow", max_worksets=1)
    ready_workset(store, "w1")
    now = utcnow()
    scheduler = Scheduler(store, clock_skew_seconds=60, assignment_timeout=timedelta(minutes=10))
    scheduler.tick(now)
    store.touch_cluster("slow", at=now + timedelta(minutes=11))

    # WHEN a tick runs 11 minutes later
    report = scheduler.tick(now + timedelta(minutes=11))

    # THEN the assignment was taken back with its reason, and the workset planned again
    assert report.unassigned == ["w1"]
    events = [(entry.event, entry.reason) for entry in store.full_history("w1")]
    assert ("unassigned", "cluster slow did not claim it within 10 min") in events
    assert [event for event, _ in events] == ["registered", "assigned", "unassigned", "assigned"]
    assert counted_load(store, "slow") == actual_load(store, "slow") == (1, 32)


def test_an_assignment_within_its_time_stays(store: WorksetStore) -> None:
    cluster(store, "c1")
    ready_workset(store, "w1")
    now = utcnow()
    scheduler = Scheduler(store, clock_skew_seconds=60)
    scheduler.tick(now)

    assert scheduler.tick(now + timedelta(minutes=4)).unassigned == []


# --- dependencies ---------------------------------------------------------------------------------------------------


def test_dependencies_are_read_by_key_and_hold_a_workset_back(store: WorksetStore) -> None:
    # GIVEN a parent that completed, one that runs, and children of each
    cluster(store, "c1", max_worksets=10)
    ready_workset(store, "done-parent", minutes_ago=30)
    ready_workset(store, "running-parent", minutes_ago=30)
    Scheduler(store, clock_skew_seconds=60).tick()
    finish(store, "done-parent", "c1")
    claimed = store.claim(store.get("running-parent"), owner="agent", cluster="c1", lease_seconds=600)
    ready_workset(store, "child-ok", depends_on=("done-parent",))
    ready_workset(store, "child-held", depends_on=("running-parent", "ghost"))
    counter = CallCounter()
    counter.attach(store.client)

    # WHEN the tick runs
    with counter.counting() as calls:
        report = Scheduler(store, clock_skew_seconds=60).tick()

    # THEN the child of the completed parent runs, the other waits naming what it waits for, in one BatchGetItem
    assert [d.workset_id for d in report.assigned] == ["child-ok"]
    assert [(d.workset_id, d.reason) for d in report.waiting] == [
        ("child-held", "waits: depends on running-parent (locked), ghost (not registered)")
    ]
    assert calls["dynamodb:BatchGetItem"] == 1 and "dynamodb:Scan" not in calls
    assert claimed.state is State.LOCKED


# --- cluster needed -------------------------------------------------------------------------------------------------


def test_a_cluster_needed_event_reaches_an_operators_rule(store: WorksetStore, deployed: Template) -> None:
    # GIVEN an operator's rule on the default bus that sends "Cluster needed" events to a queue
    events, sqs = boto3.client("events"), boto3.client("sqs")
    queue_url = sqs.create_queue(QueueName="cluster-needed")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    pattern = {"source": [SOURCE], "detail-type": [DETAIL_TYPE]}
    events.put_rule(Name="cluster-needed", EventPattern=json.dumps(pattern))
    events.put_targets(Rule="cluster-needed", Targets=[{"Id": "queue", "Arn": queue_arn}])

    # AND a workset bound to a region where no cluster is registered
    cluster(store, "east", region="us-east-1")
    ready_workset(store, "eu-run", region="eu-west-1")

    # WHEN the tick runs
    report = Scheduler(store, clock_skew_seconds=60, announce=ClusterNeedEvents(events).announce).tick()

    # THEN the rule's queue gets the size and place of the cluster needed
    message = sqs.receive_message(QueueUrl=queue_url, WaitTimeSeconds=1)["Messages"][0]
    event = json.loads(message["Body"])
    assert (event["source"], event["detail-type"]) == (SOURCE, DETAIL_TYPE)
    assert event["detail"] == {"vcpus": 32, "worksets": 1, "workset_ids": ["eu-run"], "region": "eu-west-1"}
    assert report.needed == [event["detail"]]
    assert store.last_tick()["clusters_needed"] == [event["detail"]]  # type: ignore[index]


def test_the_schedule_function_ticks_and_announces(
    store: WorksetStore, load_function: Callable[..., ModuleType]
) -> None:
    ready_workset(store, "nowhere")
    module = load_function("ScheduleFunction")

    answer = module.lambda_handler({}, FakeLambdaContext("schedule"))

    assert answer["clusters_needed"] == [{"vcpus": 32, "worksets": 1, "workset_ids": ["nowhere"]}]
    assert answer["waiting"] == {"nowhere": "waits: no live cluster is registered; cluster needed: 32 vCPUs"}


# --- no scans: the cost does not grow with finished worksets --------------------------------------------------------


def test_queue_stats_and_the_tick_cost_the_same_with_many_finished_worksets(store: WorksetStore) -> None:
    # GIVEN 20 ready worksets and 3 clusters
    for name in ("c1", "c2", "c3"):
        cluster(store, name, max_worksets=50)
    counter = CallCounter()
    counter.attach(store.client)
    scheduler = Scheduler(store, clock_skew_seconds=60)

    def measure() -> tuple[dict[str, int], dict[str, int]]:
        for index in range(20):
            ready_workset(store, f"live-{measure.round}-{index}")  # type: ignore[attr-defined]
        measure.round += 1  # type: ignore[attr-defined]
        with counter.counting() as stats_calls:
            store.count_by_state()
            store.counters()
        with counter.counting() as tick_calls:
            report = scheduler.tick()
        assert len(report.assigned) == 20
        for decision in report.assigned:
            finish(store, decision.workset_id, decision.cluster)  # type: ignore[arg-type]
        return dict(stats_calls), dict(tick_calls)

    measure.round = 0  # type: ignore[attr-defined]
    before = measure()

    # WHEN 200 more worksets finish
    for index in range(200):
        workset = ready_workset(store, f"done-{index}")
        store.assign(workset, cluster="c1", reason="test")
        finish(store, workset.workset_id, "c1")

    # THEN queue stats and a tick of the same size make exactly the same calls as before
    after = measure()
    assert after == before
    assert before[0] == {"dynamodb:Query": 2}
    assert store.count_by_state()[State.COMPLETE] == 240


# --- the benchmark --------------------------------------------------------------------------------------------------


def test_the_scheduling_benchmark_runs_and_counts_calls(capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks.scheduling import main

    assert main(["--plan-sizes", "200", "--tick-sizes", "200"]) == 0

    output = capsys.readouterr().out
    assert "     200" in output and "PutItem 2, Query 5, TransactWriteItems" in output
