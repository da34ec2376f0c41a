"""`python -m benchmarks.scheduling`: how the scheduler grows with the ready queue, 1,000 to 100,000 ready worksets
over 200 clusters.

Two measurements per size:

- **plan**: the pure policy (`scheduling.plan`) alone, in memory: its wall time, and no AWS call by construction.
- **tick**: a whole `Scheduler.tick()` against the template's table in moto's in-process emulator, with every AWS
  call counted exactly (botocore `before-send`, as `benchmarks.aws_calls` counts them): its wall time and its
  DynamoDB calls by operation. The worksets are seeded with BatchWriteItem beforehand (not counted).

The clusters have room for 1,000 worksets (5 each), so every tick assigns at most 1,000: the calls that grow with the
queue are the pages of the ready query (1 MB each), the ones that do not are the assignments (one transaction each)
and everything else. Wall times are informational only (a noisy machine; moto's costs, not DynamoDB's).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from moto import mock_aws

from benchmarks.aws_calls import REGION, TEMPLATE, CallCounter, emulator_client, offline_environment, quiet_logs
from local.emulator import install_moto_patches
from local.template import Template
from workset_monitor.models import Cluster, Priority, State, Workset, WorkSpec, utcnow
from workset_monitor.scheduler import Scheduler
from workset_monitor.scheduling import ClusterLoad, plan
from workset_monitor.store import WorksetStore

STAGE = "bench-scheduler"
CLUSTERS = 200
MAX_WORKSETS = 5
PLAN_SIZES = (1_000, 10_000, 100_000)
TICK_SIZES = PLAN_SIZES
"""Sizes ticked on the emulator by default. 100,000 takes about 12 minutes here (moto seeds and queries the whole
table in one Python process); `--tick-sizes 1000 10000` is the quick run."""


def clusters(generator: random.Random, now: datetime) -> list[Cluster]:
    """200 live clusters in two regions and three prices, room for 5 worksets and 512 vCPUs each."""
    return [
        Cluster(
            name=f"bench-{index:03d}",
            region=generator.choice(["us-west-2", "us-east-1"]),
            max_worksets=MAX_WORKSETS,
            vcpus=512,
            cost_per_vcpu_hour=generator.choice([0.02, 0.03, 0.05]),
            registered_at=now,
            last_heartbeat_at=now,
        )
        for index in range(CLUSTERS)
    ]


def ready_worksets(count: int, generator: random.Random, now: datetime) -> list[Workset]:
    """Ready worksets of every priority, 1 to 4 samples, up to 15 hours old; a tenth bound to a region, a tenth
    with a deadline, a tenth with a budget."""
    worksets = []
    for index in range(count):
        created = now - timedelta(minutes=generator.randint(0, 900))
        priority = generator.choice(list(Priority))
        work: dict[str, Any] = {"run_command": "-p help", "priority": priority}
        roll = generator.random()
        if roll < 0.1:
            work["region"] = "us-west-2"
        elif roll < 0.2:
            work["deadline"] = now + timedelta(hours=generator.randint(1, 48))
        elif roll < 0.3:
            work["budget"] = str(generator.choice([2, 5, 50]))
        worksets.append(
            Workset(
                workset_id=f"bench-{index:06d}",
                bucket="bench",
                folder=f"bench/bench-{index:06d}/",
                state=State.READY,
                priority=priority,
                created_at=created,
                updated_at=created,
                sample_count=generator.randint(1, 4),
                work=WorkSpec(**work),
            )
        )
    return worksets


def measure_plan(size: int) -> tuple[float, int]:
    """Seconds to plan `size` ready worksets over the clusters, and how many it assigned."""
    now = utcnow()
    generator = random.Random(size)
    loads = [ClusterLoad(cluster, active=0) for cluster in clusters(generator, now)]
    worksets = ready_worksets(size, generator, now)

    started = time.perf_counter()
    decisions = plan(worksets, loads, now)
    seconds = time.perf_counter() - started
    return seconds, sum(1 for decision in decisions if decision.cluster is not None)


def measure_tick(size: int) -> tuple[float, float, int, dict[str, int]]:
    """Seed a fresh table with `size` ready worksets and the clusters, then tick once, counting its calls.
    Returns the seconds seeding took, the seconds the tick took, how many it assigned, and its calls."""
    now = utcnow()
    generator = random.Random(size)
    install_moto_patches()
    with mock_aws():
        template = Template.load(TEMPLATE, parameters={"Stage": STAGE}, region=REGION)
        template.deploy(emulator_client)
        table = template.physical("WorksetTable").ref
        store = WorksetStore(table, emulator_client("dynamodb"))

        started = time.perf_counter()
        for cluster in clusters(generator, now):
            store.put_cluster(cluster)
        seed(store, ready_worksets(size, generator, now))
        seeded = time.perf_counter() - started

        counter = CallCounter()
        counter.attach(store.client)
        scheduler = Scheduler(store, clock_skew_seconds=60)
        with counter.counting() as calls:
            started = time.perf_counter()
            report = scheduler.tick(now)
            ticked = time.perf_counter() - started
    return seeded, ticked, len(report.assigned), dict(calls)


def seed(store: WorksetStore, worksets: Sequence[Workset]) -> None:
    """Write ready worksets as the store would, 25 to a BatchWriteItem, without their history or counters (the tick
    reads neither)."""
    # NOTE: the store's item format is private to it; the benchmark borrows it to seed 100,000 items in minutes
    # rather than register each in a transaction of its own.
    from workset_monitor.store import _typed, _workset_item

    for start in range(0, len(worksets), 25):
        requests: list[Any] = [
            {"PutRequest": {"Item": _typed(_workset_item(workset))}} for workset in worksets[start : start + 25]
        ]
        store.client.batch_write_item(RequestItems={store.table_name: requests})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scheduling", description=__doc__.splitlines()[0])
    parser.add_argument("--plan-sizes", type=int, nargs="*", default=list(PLAN_SIZES))
    parser.add_argument("--tick-sizes", type=int, nargs="*", default=list(TICK_SIZES))
    args = parser.parse_args(argv)

    print(f"plan: the pure policy over {CLUSTERS} live clusters (room for {CLUSTERS * MAX_WORKSETS} worksets)")
    print(f"{'ready':>8}  {'plan s':>8}  {'assigned':>8}  AWS calls")
    for size in args.plan_sizes:
        seconds, assigned = measure_plan(size)
        print(f"{size:>8,}  {seconds:>8.2f}  {assigned:>8,}  0", flush=True)

    print()
    print(f"tick: Scheduler.tick() on template.yaml's table in moto's in-process mock_aws, {CLUSTERS} clusters")
    print(f"{'ready':>8}  {'seed s':>8}  {'tick s':>8}  {'assigned':>8}  {'calls':>6}  DynamoDB calls by operation")
    with quiet_logs(), offline_environment():
        for size in args.tick_sizes:
            seeded, ticked, assigned, calls = measure_tick(size)
            breakdown = ", ".join(f"{name.split(':')[1]} {count}" for name, count in sorted(calls.items()))
            total = sum(calls.values())
            print(f"{size:>8,}  {seeded:>8.1f}  {ticked:>8.1f}  {assigned:>8,}  {total:>6,}  {breakdown}", flush=True)
    print()
    print("times: informational only (noisy machine; moto's costs, not DynamoDB's); the call counts are exact")
    return 0


if __name__ == "__main__":
    sys.exit(main())
