"""Two scheduler ticks at once (EventBridge delivers at least once), against the emulator in server mode, where each
request runs on its own server thread and each DynamoDB operation is atomic, as on DynamoDB."""

from __future__ import annotations

import random
import threading
from collections import Counter
from datetime import timedelta

import pytest

from local.emulator import Emulator
from tests.integration.conftest import store_for
from workset_monitor.models import Cluster, Priority, State, Workset, WorkSpec, utcnow
from workset_monitor.scheduler import Scheduler, TickReport
from workset_monitor.scheduling import Policy

pytestmark = pytest.mark.integration

WORKSETS = 500
CLUSTERS = 20


def test_two_ticks_at_once_over_500_worksets_and_20_clusters(emulator: Emulator, table: str) -> None:
    # GIVEN 500 ready worksets of 1 to 4 samples (32 vCPUs each) and 20 clusters whose capacity, in worksets and in
    # vCPUs, holds fewer than half of them
    generator = random.Random(500)
    store = store_for(emulator, table)
    now = utcnow()
    clusters = [
        Cluster(
            name=f"c{index:02d}",
            max_worksets=generator.randint(3, 12),
            vcpus=generator.choice([0, 256, 512]),
            cost_per_vcpu_hour=generator.choice([0.02, 0.03, 0.05]),
        )
        for index in range(CLUSTERS)
    ]
    for cluster in clusters:
        store.put_cluster(cluster)
    for index in range(WORKSETS):
        created = now - timedelta(minutes=generator.randint(0, 600))
        store.register(
            Workset(
                workset_id=f"ws-{index:03d}",
                bucket="bucket",
                folder=f"daylily_monitoring/active_worksets/ws-{index:03d}/",
                state=State.READY,
                priority=generator.choice(list(Priority)),
                created_at=created,
                updated_at=created,
                sample_count=generator.randint(1, 4),
                work=WorkSpec(run_command="-p help"),
            ),
            actor="test",
        )

    # WHEN two ticks, each with its own client, run at the same moment
    reports: list[TickReport] = []
    failures: list[BaseException] = []
    barrier = threading.Barrier(2)

    # (with different aging, so that their plans differ and they fight over places, not only over worksets)
    policies = iter([Policy(), Policy(aging=timedelta(minutes=30))])

    def tick() -> None:
        scheduler = Scheduler(store_for(emulator, table), clock_skew_seconds=60, policy=next(policies))
        barrier.wait()
        try:
            reports.append(scheduler.tick())
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            failures.append(exc)

    threads = [threading.Thread(target=tick) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []

    # THEN no workset was assigned twice: one "assigned" history entry at most, and the two reports never overlap
    assigned = [decision.workset_id for report in reports for decision in report.assigned]
    assert len(assigned) == len(set(assigned))
    ready = list(store.worksets_in(State.READY))
    holding = [workset for workset in ready if workset.assigned_cluster]
    assert sorted(assigned) == sorted(workset.workset_id for workset in holding)
    for workset in holding[:100]:
        assert [entry.event for entry in store.full_history(workset.workset_id)].count("assigned") == 1

    # AND no cluster is over its capacity in worksets or in vCPUs, and each one's counters match what it holds
    per_cluster = Counter(workset.assigned_cluster for workset in holding)
    vcpus = Counter[str]()
    for workset in holding:
        vcpus[workset.assigned_cluster or ""] += workset.reserved_vcpus
    loads = {load.cluster.name: load for load in store.cluster_loads()}
    for cluster in clusters:
        assert per_cluster[cluster.name] <= cluster.max_worksets, cluster.name
        if cluster.vcpus:
            assert vcpus[cluster.name] <= cluster.vcpus, cluster.name
        assert (loads[cluster.name].active, loads[cluster.name].vcpus_used) == (
            per_cluster[cluster.name],
            vcpus[cluster.name],
        )

    # AND between them the ticks placed work (the losers of each race counted conflicts, nothing more)
    assert len(assigned) > 0 and all(report.conflicts == len(report.refused) for report in reports)
    print(f"assigned {[len(r.assigned) for r in reports]}, refused {[len(r.refused) for r in reports]}")
