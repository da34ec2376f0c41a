"""Every function's log lines carry the correlation id of what triggered it and the id of the workset they are about,
and its metrics come out as EMF lines: each handler runs against the emulator on the sample events of `events/`.

| function | correlation id |
|---|---|
| register | the S3 request id of the event (`responseElements.x-amz-request-id`), with the key as `s3_key` |
| notify, mirror | the stream record's event id (`eventID`) |
| schedule | the schedule event's id |
| api read, api write | the API Gateway request id (`requestContext.requestId`) |
"""

from __future__ import annotations

import copy
import io
import json
import logging
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import pytest

from local.template import Template
from tests.conftest import FakeLambdaContext, api_event, invoke, upload_example
from tests.conftest import sample_event as sample
from workset_monitor.models import Cluster
from workset_monitor.observability import logger
from workset_monitor.store import WorksetStore

pytestmark = pytest.mark.integration

WORKSET = "hg002-giab-wgs-30x"
STAGE, DEPLOYMENT_REGION = "dev", "us-west-2"
"""The deployment the sample events name."""
SERVICE = "workset-monitor-dev"
"""The metrics' service dimension: the template's POWERTOOLS_SERVICE_NAME for Stage=dev."""


Lines = Callable[[], list[dict[str, Any]]]


@pytest.fixture
def log_lines() -> Iterator[Lines]:
    """The functions' Powertools log lines, parsed; each call returns the lines since the previous one."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(logger.registered_formatter)
    logger.addHandler(handler)

    def drain() -> list[dict[str, Any]]:
        text = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return [json.loads(line) for line in text.splitlines()]

    yield drain
    logger.removeHandler(handler)


Metrics = Callable[[], list[tuple[str, dict[str, str], list[float]]]]


@pytest.fixture
def emitted(capsys: pytest.CaptureFixture[str]) -> Metrics:
    """The EMF lines printed since the previous call: (metric name, dimensions, values), namespace checked."""

    def read() -> list[tuple[str, dict[str, str], list[float]]]:
        points = []
        for line in capsys.readouterr().out.splitlines():
            if '"_aws"' not in line:
                continue
            document = json.loads(line)
            for directive in document["_aws"]["CloudWatchMetrics"]:
                assert directive["Namespace"] == "WorksetMonitor"
                [names] = directive["Dimensions"]
                for metric in directive["Metrics"]:
                    values = document[metric["Name"]]
                    dimensions = {name: document[name] for name in names}
                    points.append((metric["Name"], dimensions, values if isinstance(values, list) else [values]))
        return points

    return read


def current_keys() -> set[str]:
    """The keys the logger would put on the next line, besides the invocation's."""
    return {*logger.get_current_keys(), *logger.thread_safe_get_current_keys()}


def about_the_workset(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Lines that name the workset anywhere (in the message or a field)."""
    return [line for line in lines if WORKSET in json.dumps({k: v for k, v in line.items() if k != "workset_id"})]


@pytest.fixture
def uploaded(deployed: Template) -> dict[str, Any]:
    """The register sample event, the example folder in the bucket where it says its sentinel is."""
    event = sample("register-s3-ready.json")
    upload_example(event)
    return event


# --- register --------------------------------------------------------------------------------------------------------


def test_register_lines_carry_the_s3_request_id_the_key_and_the_workset(
    uploaded: dict[str, Any], load_function: Callable[[str], ModuleType], log_lines: Lines, emitted: Metrics
) -> None:
    # GIVEN the sample event, and a second record in it for a key that is no workset's sentinel
    event = copy.deepcopy(uploaded)
    stray = copy.deepcopy(event["Records"][0])
    stray["responseElements"]["x-amz-request-id"] = "STRAYREQUEST0001"
    stray["s3"]["object"]["key"] = "daylily_monitoring/active_worksets/a/nested/daylily.ready"
    event["Records"].append(stray)
    key = event["Records"][0]["s3"]["object"]["key"]

    # WHEN the register function handles it
    log_lines()
    result = invoke(load_function, "RegisterFunction", event)
    lines = log_lines()

    # THEN the workset's lines carry its record's request id, key and the workset id
    assert result == {"outcomes": {WORKSET: "registered"}}
    registered = [line for line in lines if line["message"] == "workset registered"]
    assert [(line["correlation_id"], line["s3_key"], line["workset_id"]) for line in registered] == [
        ("C3D13FE58DE4C810", key, WORKSET)
    ]
    assert all(line.get("workset_id") == WORKSET for line in about_the_workset(lines))
    # AND the second record's lines carry its own request id and no workset id (nothing leaked from the first)
    [skipped] = [line for line in lines if line["message"].startswith("not a sentinel")]
    assert skipped["correlation_id"] == "STRAYREQUEST0001" and "workset_id" not in skipped
    assert not {"correlation_id", "workset_id"} & current_keys()
    # AND the registration is counted by its outcome
    assert ("Registrations", {"outcome": "registered", "service": SERVICE}, [1.0]) in emitted()


# --- the stream consumers --------------------------------------------------------------------------------------------


def claimed_record(event_id: str, workset_id: str = WORKSET) -> dict[str, Any]:
    """The notify sample's record (ready -> locked) with another event id, for another workset if asked."""
    record: dict[str, Any] = copy.deepcopy(sample("notify-stream-claimed.json")["Records"][0])
    record["eventID"] = event_id
    text = json.dumps(record).replace(WORKSET, workset_id)
    return dict(json.loads(text))


def test_notify_lines_carry_each_stream_record_s_event_id_and_workset(
    deployed: Template, load_function: Callable[[str], ModuleType], log_lines: Lines
) -> None:
    # GIVEN a batch of the sample record and one of another workset
    batch = {"Records": [claimed_record("c81e728d9d4c2f636f067f89cc14862c"), claimed_record("event-2", "hg003")]}

    # WHEN the notify function delivers them
    log_lines()
    assert invoke(load_function, "NotifyFunction", batch) == {"batchItemFailures": []}
    lines = log_lines()

    # THEN each delivery line carries its record's event id and workset
    delivered = [(line["correlation_id"], line["workset_id"]) for line in lines if line["message"] == "event delivered"]
    assert delivered == [("c81e728d9d4c2f636f067f89cc14862c", WORKSET), ("event-2", "hg003")]
    assert all(line.get("workset_id") == WORKSET for line in about_the_workset(lines))
    assert "workset_id" not in current_keys()


def test_mirror_lines_carry_the_event_id_and_workset_and_the_change_is_measured(
    deployed: Template, load_function: Callable[[str], ModuleType], log_lines: Lines, emitted: Metrics
) -> None:
    # GIVEN the sample claim, and the run's end an hour and a half after it started
    claim = claimed_record("c81e728d9d4c2f636f067f89cc14862c")
    end = claimed_record("event-end")
    old, new = end["dynamodb"]["OldImage"], end["dynamodb"]["NewImage"]
    old["state"], old["state_since"] = {"S": "in_progress"}, {"S": "2026-12-03T09:20:00Z"}
    new["state"], new["state_since"] = {"S": "complete"}, {"S": "2026-12-03T10:50:00Z"}
    for image in (old, new):
        image.pop("lease", None)
    new.pop("active_cluster")

    # WHEN the mirror function writes their sentinels
    log_lines()
    emitted()
    assert invoke(load_function, "MirrorFunction", {"Records": [claim, end]}) == {"batchItemFailures": []}
    lines = log_lines()

    # THEN each record's lines carry its event id and the workset
    mirrored = [(line["correlation_id"], line["workset_id"], line["state"]) for line in lines if "put" in line]
    assert mirrored == [
        ("c81e728d9d4c2f636f067f89cc14862c", WORKSET, "locked"),
        ("event-end", WORKSET, "complete"),
    ]
    assert "correlation_id" not in current_keys()
    # AND both transitions are counted by the state entered and the priority, and the run's 90 minutes measured
    points = emitted()
    transitions = [(dims["state"], dims["priority"], values) for name, dims, values in points if name == "Transitions"]
    assert transitions == [("locked", "urgent", [1.0]), ("complete", "urgent", [1.0])]
    assert ("RunDuration", {"state": "complete", "service": SERVICE}, [5400.0]) in points


# --- schedule --------------------------------------------------------------------------------------------------------


def test_schedule_lines_carry_the_tick_s_event_id_and_the_queue_is_measured(
    uploaded: dict[str, Any],
    load_function: Callable[[str], ModuleType],
    store: WorksetStore,
    log_lines: Lines,
    emitted: Metrics,
) -> None:
    # GIVEN the example registered and a cluster that can take it
    invoke(load_function, "RegisterFunction", uploaded)
    store.put_cluster(Cluster(name="day-wgs-usw2b", max_worksets=1, vcpus=192, cost_per_vcpu_hour=0.03))
    event = sample("schedule-tick.json")

    # WHEN the schedule sample ticks
    log_lines()
    emitted()
    result = invoke(load_function, "ScheduleFunction", event)
    lines = log_lines()

    # THEN every line of the tick carries its event id, and the assignment's line the workset
    assert result["assigned"] == {WORKSET: "day-wgs-usw2b"}
    assert lines and {line.get("correlation_id") for line in lines} == {event["id"]}
    [assigned] = [line for line in lines if line["message"] == "workset assigned"]
    assert assigned["workset_id"] == WORKSET
    # AND the tick publishes the queue by state and priority, the oldest wait and its decisions
    points = {(name, tuple(sorted(dims.items()))): values for name, dims, values in emitted()}
    assert points[("QueueDepth", (("service", SERVICE), ("state", "ready")))] == [1.0]
    assert points[("ReadyQueueDepth", (("priority", "urgent"), ("service", SERVICE)))] == [1.0]
    assert points[("OldestReadyAge", (("service", SERVICE),))][0] >= 0
    assert points[("SchedulerDecisions", (("decision", "assigned"), ("service", SERVICE)))] == [1.0]
    assert points[("ClusterWorksets", (("cluster", "day-wgs-usw2b"), ("service", SERVICE)))] == [1.0]


# --- the API ---------------------------------------------------------------------------------------------------------


def test_api_read_lines_carry_the_request_id_and_the_workset(
    deployed: Template, load_function: Callable[[str], ModuleType], log_lines: Lines
) -> None:
    # GIVEN the API sample, for a workset that is not registered
    event = sample("api-get-workset.json")

    # WHEN the read function answers it
    log_lines()
    response = invoke(load_function, "ApiReadFunction", event)
    lines = log_lines()

    # THEN its refusal says so with the request id and the workset
    assert response["statusCode"] == 404
    [refused] = [line for line in lines if line["message"] == "request refused"]
    assert (refused["correlation_id"], refused["workset_id"]) == (event["requestContext"]["requestId"], WORKSET)


def test_api_write_lock_conflicts_are_counted_and_logged_with_the_request_and_workset(
    uploaded: dict[str, Any],
    load_function: Callable[[str], ModuleType],
    log_lines: Lines,
    emitted: Metrics,
) -> None:
    # GIVEN a registered workset, claimed once
    invoke(load_function, "RegisterFunction", uploaded)
    writes = load_function("ApiWriteFunction")

    def call(method: str, path: str, body: dict[str, Any], request_id: str) -> int:
        event = api_event(method, path, body=json.dumps(body))
        event["requestContext"]["requestId"] = request_id
        status: int = writes.lambda_handler(event, FakeLambdaContext("api-write"))["statusCode"]
        return status

    claim = {"owner": "agent-1", "cluster": "c1"}
    assert call("POST", f"/worksets/{WORKSET}/lock", claim, "request-claim") == 200
    log_lines()
    emitted()

    # WHEN another agent claims it too, and a heartbeat comes with a token that is not the lease's
    second = call("POST", f"/worksets/{WORKSET}/lock", {**claim, "owner": "agent-2"}, "request-second-claim")
    stale = call("POST", f"/worksets/{WORKSET}/heartbeat", {"lease_token": 1}, "request-stale-heartbeat")
    lines = log_lines()

    # THEN both are 409 lock conflicts, counted by code, logged with their request id and the workset
    assert (second, stale) == (409, 409)
    conflicts = [(dims["code"], values) for name, dims, values in emitted() if name == "LockConflicts"]
    assert conflicts == [("transition_refused", [1.0]), ("lease_lost", [1.0])]
    refused = [(line["correlation_id"], line["workset_id"], line["code"]) for line in lines if "code" in line]
    assert refused == [
        ("request-second-claim", WORKSET, "transition_refused"),
        ("request-stale-heartbeat", WORKSET, "lease_lost"),
    ]
