"""`python -m benchmarks.aws_calls`: how many AWS calls each workset operation makes, counted exactly.

The operations run against the resources `template.yaml` declares, created in moto's in-process emulator
(`mock_aws`), so nothing needs a server or an account. Each call is counted by a handler on the clients' botocore
event system (`before-send`), which fires for every HTTP request a client sends: each page of a paginator and each
retry is a call of its own. Counts are exact and deterministic; the wall time printed beside them is not (it is an
in-process emulator on a machine doing other things) and is there only to give a feel.

The operations are the ones the product does most: registering a valid example folder (`Registrar` with the real S3
adapter), claiming, heartbeating and starting a workset (`Lifecycle`), and reading one workset with its history as
`GET /worksets/{id}` does, for a workset with 10 and with 1,000 history entries, to show whether that cost grows.
The integration test `tests/integration/test_aws_calls.py` holds these counts, so a change that adds a call fails it.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import boto3
from botocore.client import BaseClient
from moto import mock_aws

from local.demo import EXAMPLES, VALID, upload_workset
from local.emulator import install_moto_patches
from local.observability import logger as local_logger
from local.template import ClientFactory, Template
from workset_monitor.bucket import WorksetBucket
from workset_monitor.layout import SENTINEL_READY, parse_sentinel_key
from workset_monitor.lifecycle import Lifecycle
from workset_monitor.models import HistoryEntry, State, Workset, utcnow
from workset_monitor.observability import logger
from workset_monitor.registration import Outcome, Registrar
from workset_monitor.store import WorksetStore

T = TypeVar("T")
ClientT = TypeVar("ClientT", bound=BaseClient)

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "template.yaml"
REGION = "us-east-1"
STAGE = "bench"

HISTORY_SIZES = (10, 1_000)
HISTORY_PAGE = 100
"""The history entries `GET /worksets/{id}` reads with the workset (functions/api/read.py)."""

OWNER = "bench-agent"
CLUSTER = "bench-cluster"
LEASE_SECONDS = 900
SEQUENCER = "0062F1A8B4C3D2E1F0"
"""The S3 event sequencer the register function passes with a sentinel; any hex string will do."""

REGISTER = "register (valid example folder)"
CLAIM = "claim"
HEARTBEAT = "heartbeat"
TRANSITION = "transition locked -> in_progress"


def read_operation(entries: int) -> str:
    """The name of the measured read of a workset with `entries` history entries."""
    return f"read workset + history ({entries:,} entries)"


class BenchmarkError(Exception):
    """An operation did not do what the benchmark measures (e.g. the example folder did not register as ready)."""


@dataclass(frozen=True)
class Measurement:
    """The AWS calls one operation made, by `service:Operation` in the order of their first call, and its wall time."""

    operation: str
    calls: Mapping[str, int]
    seconds: float

    @property
    def total(self) -> int:
        """Every call the operation made."""
        return sum(self.calls.values())

    def breakdown(self) -> str:
        """The calls as `dynamodb:GetItem 1, dynamodb:TransactWriteItems 1`."""
        return ", ".join(f"{name} {count}" for name, count in self.calls.items())


class CallCounter:
    """Counts the requests that attached boto3 clients send, by `service:Operation`, through botocore's event hooks.

    A handler on each attached client's `before-send` event sees every HTTP request the client is about to send, so
    each page of a paginator and each retry counts as one call. Only calls made inside a `counting()` block are
    counted, and only those of attached clients.

    Limitations: one counting block at a time; a nested block replaces the outer one until it ends.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._window: Counter[str] | None = None
        self._handler_id = f"aws-call-counter-{id(self)}"

    def attach(self, client: ClientT) -> ClientT:
        """Count `client`'s calls from now on; attaching a client twice counts its calls once."""
        client.meta.events.register("before-send", self._on_send, unique_id=self._handler_id)
        return client

    @contextmanager
    def counting(self) -> Iterator[Counter[str]]:
        """Count the calls made inside the `with` block into the (new) counter it yields."""
        counts: Counter[str] = Counter()
        with self._lock:
            self._window = counts
        try:
            yield counts
        finally:
            with self._lock:
                self._window = None

    def measure(self, operation: str, action: Callable[[], T]) -> tuple[T, Measurement]:
        """Run `action`, counting its calls and timing it; returns what it returned and the measurement."""
        with self.counting() as counts:
            started = time.perf_counter()
            result = action()
            seconds = time.perf_counter() - started
        return result, Measurement(operation, dict(counts), seconds)

    def _on_send(self, event_name: str, **_request: Any) -> None:
        # The event is "before-send.<service id>.<operation>". The handler must return None: botocore sends no
        # request when a before-send handler returns a response.
        _event, service, operation = event_name.split(".", 2)
        with self._lock:
            if self._window is not None:
                self._window[f"{service}:{operation}"] += 1


def run_operations(
    template: Template, client: ClientFactory, history_sizes: Sequence[int] = HISTORY_SIZES
) -> list[Measurement]:
    """Measure each operation against the deployed `template`'s resources; `client` makes a fresh boto3 client.

    The measured objects use clients of their own with the counter attached; setting up (uploading the example,
    writing the histories to read) uses other clients, so it is never counted.
    """
    table = template.physical("WorksetTable").ref
    bucket = template.physical("WorksetBucket").ref
    prefix = str(template.parameters["WorksetPrefix"])
    counter = CallCounter()
    store = WorksetStore(table, counter.attach(client("dynamodb")))
    registrar = Registrar(store, WorksetBucket(bucket, counter.attach(client("s3"))).snapshot, bucket)
    lifecycle = Lifecycle(store, lease_seconds=LEASE_SECONDS)
    setup_store = WorksetStore(table, client("dynamodb"))

    # The valid example folder, dropped as a person would: its files first, the ready sentinel last.
    upload_workset(client("s3"), bucket, prefix, EXAMPLES / VALID)
    sentinel = parse_sentinel_key(f"{prefix}{VALID}/{SENTINEL_READY}", prefix)
    if sentinel is None:
        raise BenchmarkError(f"{VALID} is not a workset folder name")

    registration, register = counter.measure(REGISTER, lambda: registrar.on_sentinel(sentinel, SEQUENCER))
    _expect(
        registration.outcome is Outcome.REGISTERED and registration.workset.state is State.READY,
        f"{VALID} registered as {registration.outcome} in state {registration.workset.state}",
    )

    claimed, claim = counter.measure(CLAIM, lambda: lifecycle.claim(VALID, owner=OWNER, cluster=CLUSTER))
    if claimed.lease is None:
        raise BenchmarkError("the claim gave no lease")
    token = claimed.lease.token

    _, heartbeat = counter.measure(HEARTBEAT, lambda: lifecycle.heartbeat(VALID, lease_token=token))
    started, transition = counter.measure(
        TRANSITION,
        lambda: lifecycle.change_state(VALID, State.IN_PROGRESS, actor=OWNER, reason="run started", lease_token=token),
    )
    _expect(started.state is State.IN_PROGRESS, f"the transition ended in {started.state}")

    measurements = [register, claim, heartbeat, transition]
    for entries in history_sizes:
        workset_id = f"bench-history-{entries}"
        seed_history(setup_store, workset_id, entries)
        (_, history), read = counter.measure(read_operation(entries), partial(read_with_history, store, workset_id))
        _expect(len(history) == min(entries, HISTORY_PAGE), f"{workset_id}: read {len(history)} history entries")
        measurements.append(read)
    return measurements


def read_with_history(store: WorksetStore, workset_id: str) -> tuple[Workset, list[HistoryEntry]]:
    """What `GET /worksets/{id}` reads (functions/api/read.py): the workset with its newest history entries."""
    return store.get_with_history(workset_id, limit=HISTORY_PAGE)


def seed_history(store: WorksetStore, workset_id: str, entries: int) -> Workset:
    """A ready workset with `entries` history entries, all written by the store: registered, then reassigned by the
    scheduler again and again (each assignment is a history entry)."""
    # NOTE: one transaction per entry; fast only with `install_moto_patches()`, as moto itself copies the whole table
    # before each transaction.
    now = utcnow()
    workset = store.register(
        Workset(
            workset_id=workset_id,
            bucket="bench",
            folder=f"bench/{workset_id}/",
            state=State.READY,
            created_at=now,
            updated_at=now,
        ),
        actor="register",
        reason=f"{SENTINEL_READY} dropped",
    )
    for assignment in range(1, entries):
        cluster = f"{CLUSTER}-{assignment % 2}"
        workset = store.assign(workset, cluster=cluster, reason=f"{cluster} has room")
    return workset


def _expect(condition: bool, problem: str) -> None:
    """Stop the benchmark with `problem` unless `condition` holds: it would measure something else."""
    if not condition:
        raise BenchmarkError(problem)


def format_table(measurements: Sequence[Measurement], *, wall_time: bool = True) -> str:
    """The measurements as a table: operation, total calls, (wall time,) calls by `service:Operation`."""
    headers = ["operation", "calls", *(["wall ms (noisy machine)"] if wall_time else []), "calls by service:operation"]
    rows = [
        [
            measurement.operation,
            str(measurement.total),
            *([f"{measurement.seconds * 1000:.1f}"] if wall_time else []),
            measurement.breakdown(),
        ]
        for measurement in measurements
    ]
    widths = [max(len(row[column]) for row in [headers, *rows]) for column in range(len(headers) - 1)]

    lines = []
    for row in [headers, *rows]:
        cells = [
            row[0].ljust(widths[0]),
            *(cell.rjust(width) for cell, width in zip(row[1:-1], widths[1:], strict=True)),
        ]
        lines.append("  ".join([*cells, row[-1]]))
    return "\n".join(lines)


def emulator_client(service: str) -> Any:
    """A fresh boto3 client in the benchmark's region; inside `mock_aws`, moto answers it."""
    return boto3.client(service, region_name=REGION)  # type: ignore[call-overload]


@contextmanager
def offline_environment() -> Iterator[None]:
    """Fake credentials and the benchmark's region; no endpoint or profile from the caller's environment."""
    saved = dict(os.environ)
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_DYNAMODB", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE"):
        os.environ.pop(name, None)
    os.environ.update(
        {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
        }
    )
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@contextmanager
def quiet_logs() -> Iterator[None]:
    """Keep the product's and the local stack's info lines out of the table."""
    levels = [(each, each.log_level) for each in (logger, local_logger)]
    for each, _ in levels:
        each.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for each, level in levels:
            each.setLevel(level)


def main(argv: list[str] | None = None) -> int:
    """Deploy the template into `mock_aws`, measure every operation, print the table."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.aws_calls", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--no-wall-time", action="store_true", help="leave the wall time out, so the output is the same on every run"
    )
    args = parser.parse_args(argv)

    install_moto_patches()
    with quiet_logs(), offline_environment(), mock_aws():
        template = Template.load(TEMPLATE, parameters={"Stage": STAGE}, region=REGION)
        template.deploy(emulator_client)
        measurements = run_operations(template, emulator_client)

    print(f"AWS calls per operation: template.yaml resources (Stage={STAGE}, {REGION}) in moto's in-process mock_aws")
    print("a call is one request sent (botocore before-send): each paginator page and each retry counts")
    print()
    print(format_table(measurements, wall_time=not args.no_wall_time))
    if not args.no_wall_time:
        print()
        print("wall ms: informational only (noisy machine, in-process emulator); the call counts are exact")
    return 0


if __name__ == "__main__":
    sys.exit(main())
