"""The API's routes beyond the lifecycle: registering by folder, giving a lease back, history pages, filters,
clusters, scheduler stats, CORS and the OpenAPI document. Invoked with API Gateway proxy events against the emulator."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import pytest

from benchmarks.aws_calls import CallCounter
from local.demo import upload_workset
from local.template import Template
from tests.conftest import FakeLambdaContext, api_event
from tests.integration.test_api_function import registered
from tools.openapi import DOCUMENT, generate
from workset_monitor.models import Priority, utcnow
from workset_monitor.scheduler import Scheduler
from workset_monitor.store import WorksetStore

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "worksets"
PREFIX = "daylily_monitoring/active_worksets/"


@pytest.fixture
def bucket(deployed: Template) -> str:
    return deployed.physical("WorksetBucket").ref


def put_folder(bucket: str, example: str, name: str) -> str:
    upload_workset(boto3.client("s3"), bucket, PREFIX, EXAMPLES / example, name)
    return f"{PREFIX}{name}/"


# --- POST /worksets -------------------------------------------------------------------------------------------------


def test_registering_a_valid_folder_gives_a_ready_workset(api: Any, bucket: str) -> None:
    folder = put_folder(bucket, "hg002-giab-wgs-30x", "hg002")

    status, body = api("POST", "/worksets", body={"bucket": bucket, "prefix": folder})

    assert (status, body["outcome"], body["state"], body["priority"]) == (201, "registered", "ready", "urgent")
    assert body["folder"] == folder


def test_registering_twice_changes_nothing_the_second_time(api: Any, bucket: str) -> None:
    folder = put_folder(bucket, "hg002-giab-wgs-30x", "hg002")
    api("POST", "/worksets", body={"bucket": bucket, "prefix": folder})

    status, body = api("POST", "/worksets", body={"bucket": bucket, "prefix": folder.rstrip("/")})

    assert (status, body["outcome"], body["version"]) == (200, "unchanged", 1)


def test_a_broken_folder_is_recorded_in_error_with_every_reason(api: Any, bucket: str) -> None:
    folder = put_folder(bucket, "broken-sheet-example", "broken")

    status, body = api("POST", "/worksets", body={"bucket": bucket, "prefix": folder})

    assert (status, body["state"], body["error_category"]) == (201, "error", "validation")
    assert len(body["error_reasons"]) > 1


@pytest.mark.parametrize(
    ("prefix", "words"),
    [
        ("elsewhere/hg002/", "outside the workset prefix"),
        (f"{PREFIX}hg002/nested/", "nested deeper"),
        (f"{PREFIX} padded /", "white space"),
    ],
    ids=["outside-prefix", "nested", "bad-name"],
)
def test_a_place_that_cannot_be_a_workset_folder_is_422(api: Any, bucket: str, prefix: str, words: str) -> None:
    status, body = api("POST", "/worksets", body={"bucket": bucket, "prefix": prefix})

    assert (status, body["error"]["code"]) == (422, "not_a_workset_folder")
    assert words in body["error"]["message"]


def test_a_folder_in_another_bucket_is_422(api: Any) -> None:
    status, body = api("POST", "/worksets", body={"bucket": "someone-elses-bucket", "prefix": f"{PREFIX}x/"})

    assert (status, body["error"]["code"]) == (422, "not_a_workset_folder")


def test_an_empty_folder_is_404_and_registers_nothing(api: Any, bucket: str, store: WorksetStore) -> None:
    status, body = api("POST", "/worksets", body={"bucket": bucket, "prefix": f"{PREFIX}ghost/"})

    assert (status, body["error"]["code"]) == (404, "not_found")
    assert store.find("ghost") is None


# --- DELETE /worksets/{id}/lock -------------------------------------------------------------------------------------


def test_giving_a_lease_back_makes_the_workset_ready_in_the_same_attempt(api: Any, store: WorksetStore) -> None:
    registered(store, "w1")
    _, claimed = api("POST", "/worksets/w1/lock", body={"owner": "agent-1", "cluster": "c1"})

    status, body = api("DELETE", "/worksets/w1/lock", body={"lease_token": claimed["lease"]["token"]})

    assert (status, body["state"], body["attempt"]) == (200, "ready", 1)
    assert "lease" not in body


def test_giving_back_a_lease_one_does_not_hold_is_409(api: Any, store: WorksetStore) -> None:
    registered(store, "w1")
    _, claimed = api("POST", "/worksets/w1/lock", body={"owner": "agent-1", "cluster": "c1"})

    status, body = api("DELETE", "/worksets/w1/lock", body={"lease_token": claimed["lease"]["token"] + 1})

    assert (status, body["error"]["code"]) == (409, "lease_lost")


def test_a_running_workset_cannot_be_given_back(api: Any, store: WorksetStore) -> None:
    registered(store, "w1")
    _, claimed = api("POST", "/worksets/w1/lock", body={"owner": "agent-1", "cluster": "c1"})
    token = claimed["lease"]["token"]
    _, running = api("PUT", "/worksets/w1/state", body={"state": "in_progress", "lease_token": token})

    status, body = api("DELETE", "/worksets/w1/lock", body={"lease_token": running["lease"]["token"]})

    assert (status, body["error"]["code"]) == (409, "transition_refused")


# --- GET /worksets/{id}/history -------------------------------------------------------------------------------------


def test_history_pages_through_every_entry_oldest_first(api: Any, store: WorksetStore) -> None:
    workset = registered(store, "w1")
    for n in range(6):
        workset = store.record(workset, {"progress": f"step {n}"}, event="noted", actor="test", reason="test")

    pages, token = [], None
    while True:
        query = {"limit": "3", **({"next_token": token} if token else {})}
        status, page = api("GET", "/worksets/w1/history", query=query)
        assert status == 200
        pages.append(page["history"])
        token = page["next_token"]
        if token is None:
            break

    versions = [entry["version"] for page in pages for entry in page]
    assert versions == list(range(1, 8))
    assert pages[0][0]["event"] == "registered"


def test_history_of_an_unknown_workset_is_404(api: Any) -> None:
    status, body = api("GET", "/worksets/nobody/history")

    assert (status, body["error"]["code"]) == (404, "not_found")


def test_a_history_token_of_another_workset_is_refused(api: Any, store: WorksetStore) -> None:
    for name in ("w1", "w2"):
        workset = registered(store, name)
        store.record(workset, {"progress": "x"}, event="noted", actor="test", reason="test")
    _, first = api("GET", "/worksets/w1/history", query={"limit": "1"})

    status, _ = api("GET", "/worksets/w2/history", query={"next_token": first["next_token"]})

    assert status == 400


# --- GET /worksets filters ------------------------------------------------------------------------------------------


def test_list_filters_by_priority_within_a_state(api: Any, store: WorksetStore) -> None:
    registered(store, "u1", priority=Priority.URGENT)
    registered(store, "n1")
    registered(store, "l1", priority=Priority.LOW)

    _, urgent = api("GET", "/worksets", query={"state": "ready", "priority": "urgent"})
    _, low = api("GET", "/worksets", query={"priority": "low"})

    assert [w["workset_id"] for w in urgent["worksets"]] == ["u1"]
    assert [w["workset_id"] for w in low["worksets"]] == ["l1"]


def test_list_filters_by_the_cluster_that_holds_them(api: Any, store: WorksetStore) -> None:
    store.assign(registered(store, "a1"), cluster="c1", reason="test")
    store.assign(registered(store, "b1"), cluster="c2", reason="test")
    registered(store, "free")

    _, on_c1 = api("GET", "/worksets", query={"cluster": "c1"})
    _, ready_on_c2 = api("GET", "/worksets", query={"cluster": "c2", "state": "ready"})
    _, locked_on_c2 = api("GET", "/worksets", query={"cluster": "c2", "state": "locked"})

    assert [w["workset_id"] for w in on_c1["worksets"]] == ["a1"]
    assert [w["workset_id"] for w in ready_on_c2["worksets"]] == ["b1"]
    assert locked_on_c2["worksets"] == []


@pytest.mark.parametrize("state", ["complete", "error", "canceled", "ignored", "archived"])
def test_a_cluster_with_a_state_no_held_workset_is_in_is_422_not_an_empty_page(api: Any, state: str) -> None:
    status, body = api("GET", "/worksets", query={"cluster": "c1", "state": state})

    assert (status, body["error"]["code"]) == (422, "invalid_request")
    assert body["error"]["message"] == (
        "cluster lists the worksets a cluster holds now (in_progress, locked, ready); "
        f"a workset in {state} holds none: ask for state={state} without cluster"
    )


def test_a_query_parameter_given_twice_is_told_it_takes_one_value(load_function: Callable[..., ModuleType]) -> None:
    event = api_event("GET", "/worksets", query={"state": "error"})
    event["multiValueQueryStringParameters"] = {"state": ["ready", "error"]}

    response = load_function("ApiReadFunction").lambda_handler(event, FakeLambdaContext("api"))

    assert response["statusCode"] == 422
    assert json.loads(response["body"])["error"]["message"] == (
        "query.state: takes one value, not 2 (ready, error); ask once for each"
    )


def test_a_page_token_of_one_filter_is_refused_for_another(api: Any, store: WorksetStore) -> None:
    for n in range(3):
        registered(store, f"w{n}")
    _, first = api("GET", "/worksets", query={"state": "ready", "limit": "1"})

    status, _ = api("GET", "/worksets", query={"state": "ready", "priority": "low", "next_token": first["next_token"]})

    assert status == 400


# --- clusters -------------------------------------------------------------------------------------------------------


def test_a_cluster_heartbeat_renews_it_and_can_set_draining(api: Any) -> None:
    _, registered_cluster = api("POST", "/clusters", body={"name": "c1", "max_worksets": 2})

    status, renewed = api("POST", "/clusters/c1/heartbeat", body={"status": "draining"})

    assert (status, renewed["status"]) == (200, "draining")
    assert renewed["last_heartbeat_at"] >= registered_cluster["last_heartbeat_at"]
    assert renewed["registered_at"] == registered_cluster["registered_at"]
    assert api("GET", "/clusters/c1")[1]["status"] == "draining"


def test_a_heartbeat_of_an_unregistered_cluster_is_404(api: Any) -> None:
    status, body = api("POST", "/clusters/ghost/heartbeat")

    assert (status, body["error"]["code"]) == (404, "not_found")


def test_a_heartbeat_cannot_set_a_cluster_retired(api: Any) -> None:
    api("POST", "/clusters", body={"name": "c1"})

    status, _ = api("POST", "/clusters/c1/heartbeat", body={"status": "retired"})

    assert status == 422


def test_a_retired_cluster_stays_retired_until_registered_again(api: Any) -> None:
    api("POST", "/clusters", body={"name": "c1"})

    status, retired = api("DELETE", "/clusters/c1")
    heartbeat_status, heartbeat = api("POST", "/clusters/c1/heartbeat")
    _, registered_again = api("POST", "/clusters", body={"name": "c1"})

    assert (status, retired["status"]) == (200, "retired")
    assert (heartbeat_status, heartbeat["error"]["code"]) == (409, "cluster_retired")
    assert registered_again["status"] == "active"


def test_retiring_or_showing_an_unknown_cluster_is_404(api: Any) -> None:
    assert api("DELETE", "/clusters/ghost")[0] == 404
    assert api("GET", "/clusters/ghost")[0] == 404


# --- GET /scheduler/stats -------------------------------------------------------------------------------------------


def test_scheduler_stats_show_the_load_and_the_last_tick(api: Any, store: WorksetStore) -> None:
    assert api("GET", "/scheduler/stats")[1]["last_tick"] is None
    api("POST", "/clusters", body={"name": "c1", "max_worksets": 1})
    registered(store, "w1", priority=Priority.URGENT)
    registered(store, "w2")

    Scheduler(store, clock_skew_seconds=60).tick()
    status, stats = api("GET", "/scheduler/stats")

    assert status == 200
    assert (stats["ready"], stats["unassigned"]) == (2, 1)
    assert stats["clusters"] == [
        {
            "name": "c1",
            "status": "active",
            "live": True,
            "active_worksets": 1,
            "max_worksets": 1,
            "active_vcpus": 32,
            "vcpus": 0,
        }
    ]
    tick = stats["last_tick"]
    assert (tick["assigned"], tick["waiting"]) == (1, 1)
    assert tick["assignments"][0]["workset_id"] == "w1"
    assert tick["waits"][0] == {
        "workset_id": "w2",
        "cluster": None,
        "reason": "waits: every live cluster is full",
        "vcpus": 32,
    }
    assert [(d["workset_id"], d["cluster"], d["at"]) for d in stats["recent_decisions"]] == [
        ("w1", "c1", tick["at"]),
        ("w2", None, tick["at"]),
    ]


def test_recent_decisions_keep_every_tick_of_one_minute_newest_first(api: Any, store: WorksetStore) -> None:
    # GIVEN a cluster with room, and three ticks within one minute (EventBridge repeats a tick; the local stack ticks
    # every few seconds), each assigning the workset registered just before it, then one that decides nothing
    api("POST", "/clusters", body={"name": "c1", "max_worksets": 10})
    minute = (utcnow() - timedelta(minutes=1)).replace(second=0, microsecond=0)
    scheduler = Scheduler(store, clock_skew_seconds=60)
    for second, name in ((5, "w1"), (5, "w2"), (40, "w3")):
        registered(store, name)
        scheduler.tick(now=minute + timedelta(seconds=second))
    scheduler.tick(now=minute + timedelta(seconds=50))

    # WHEN the scheduler's stats are read
    _, stats = api("GET", "/scheduler/stats")

    # THEN every decision of the minute is there, the newest tick first (the two of one instant in either order),
    # and the tick that decided nothing is only the last one
    decisions = [(d["workset_id"], d["cluster"]) for d in stats["recent_decisions"]]
    assert decisions[0] == ("w3", "c1")
    assert sorted(decisions[1:]) == [("w1", "c1"), ("w2", "c1")]
    assert (stats["last_tick"]["assigned"], stats["last_tick"]["waiting"]) == (0, 0)


def test_recent_decisions_are_those_of_the_last_ten_minutes_read_in_one_bounded_query(store: WorksetStore) -> None:
    now = utcnow()
    decided = {"assignments": [{"workset_id": "w", "cluster": "c1", "reason": "r"}], "waits": []}
    for minutes_ago in (11, 9, 1):
        at = now - timedelta(minutes=minutes_ago)
        store.put_tick({"at": at.isoformat(), **decided}, at=at)
    counter = CallCounter()
    counter.attach(store.client)

    with counter.counting() as calls:
        ticks = store.recent_ticks(limit=200, now=now)
        newest = store.recent_ticks(limit=1, now=now)

    assert [tick["at"] for tick in ticks] == [(now - timedelta(minutes=m)).isoformat() for m in (1, 9)]
    assert newest == ticks[:1]
    assert calls == {"dynamodb:Query": 2}


def test_a_recent_tick_expires_by_the_tables_ttl(deployed: Template, store: WorksetStore) -> None:
    """The emulator does not delete expired items; the read's key range leaves them out (test above), and DynamoDB
    deletes them by the TTL attribute the template declares."""
    at = utcnow()
    store.put_tick({"at": at.isoformat(), "assignments": [], "waits": [{"workset_id": "w", "reason": "r"}]}, at=at)

    items = boto3.client("dynamodb").query(
        TableName=store.table_name,
        KeyConditionExpression="pk = :pk AND begins_with(sk, :recent)",
        ExpressionAttributeValues={":pk": {"S": "SCHEDULER"}, ":recent": {"S": "TICK#"}},
    )["Items"]
    ttl = boto3.client("dynamodb").describe_time_to_live(TableName=store.table_name)["TimeToLiveDescription"]

    assert [int(item["expires_at_epoch"]["N"]) for item in items] == [int(at.timestamp()) + 600]
    assert (ttl["AttributeName"], ttl["TimeToLiveStatus"]) == ("expires_at_epoch", "ENABLED")


def test_a_cluster_that_stopped_heartbeating_is_shown_not_live(api: Any, store: WorksetStore) -> None:
    api("POST", "/clusters", body={"name": "c1"})
    store.touch_cluster("c1", at=utcnow() - timedelta(hours=1))

    _, stats = api("GET", "/scheduler/stats")

    assert stats["clusters"][0]["live"] is False


# --- hostile input --------------------------------------------------------------------------------------------------


def test_a_base64_encoded_json_body_is_read(api: Any, store: WorksetStore) -> None:
    registered(store, "w1")

    status, body = api("POST", "/worksets/w1/cancel", body_bytes=json.dumps({"reason": "wrong sample"}).encode())

    assert (status, body["state"]) == (200, "canceled")


@pytest.mark.parametrize(
    "body",
    [
        {"owner": "a", "cluster": "c", "surprise": 1},
        {"owner": 5, "cluster": "c"},
        {"owner": "a" * 100_000, "cluster": "c"},
        {"cluster": "c"},
        [],
    ],
    ids=["unknown-field", "wrong-type", "huge-field", "missing-field", "not-an-object"],
)
def test_bodies_of_the_wrong_shape_are_422_with_a_message(api: Any, store: WorksetStore, body: Any) -> None:
    registered(store, "w1")

    status, answer = api("POST", "/worksets/w1/lock", body=body)

    assert (status, answer["error"]["code"]) == (422, "invalid_request")
    assert answer["error"]["message"]


def test_a_missing_body_where_one_is_needed_is_422(api: Any, store: WorksetStore) -> None:
    registered(store, "w1")

    status, answer = api("POST", "/worksets/w1/lock")

    assert (status, answer["error"]["code"]) == (422, "invalid_request")


def test_an_encoded_slash_in_an_id_is_one_workset_not_a_route(api: Any, store: WorksetStore) -> None:
    registered(store, "run/1")

    status, body = api("GET", "/worksets/run%2F1/history")

    assert (status, body["history"][0]["workset_id"]) == (200, "run/1")


def test_an_id_over_the_limit_is_422(api: Any) -> None:
    status, _ = api("GET", "/worksets/" + "x" * 1025)

    assert status == 422


# --- CORS -----------------------------------------------------------------------------------------------------------


@pytest.fixture
def cors_api(load_function: Callable[..., ModuleType]) -> ModuleType:
    """The read function deployed with two allowed origins."""
    return load_function("ApiReadFunction", ALLOWED_ORIGINS="https://portal.example.org,https://lab.example.org")


def _call(module: ModuleType, method: str, path: str, origin: str, **headers: str) -> dict[str, Any]:
    event = api_event(method, path)
    for name, value in {"Origin": origin, **headers}.items():
        event["headers"][name] = value
        event["multiValueHeaders"][name] = [value]
    response: dict[str, Any] = module.lambda_handler(event, FakeLambdaContext("api"))
    return response


def _headers(response: dict[str, Any]) -> dict[str, str]:
    single = {name.lower(): str(value) for name, value in (response.get("headers") or {}).items()}
    multi = {name.lower(): str(values[-1]) for name, values in (response.get("multiValueHeaders") or {}).items()}
    return {**single, **multi}


def test_a_preflight_from_an_allowed_origin_is_answered(cors_api: ModuleType) -> None:
    response = _call(cors_api, "OPTIONS", "/worksets", "https://lab.example.org")

    headers = _headers(response)
    assert response["statusCode"] == 204
    assert headers["access-control-allow-origin"] == "https://lab.example.org"
    assert "authorization" in headers["access-control-allow-headers"].lower()
    assert "access-control-allow-credentials" not in headers


@pytest.mark.parametrize(
    ("path", "asked", "allowed"),
    [
        ("/worksets/x/cancel", "POST", "OPTIONS,POST"),
        ("/worksets/x/state", "PUT", "OPTIONS,PUT"),
        ("/worksets/x%2Fy/lock", "DELETE", "DELETE,OPTIONS,POST"),
        ("/clusters/c1", "DELETE", "DELETE,GET,OPTIONS"),
        ("/clusters", "POST", "GET,OPTIONS,POST"),
        ("/worksets", "POST", "GET,OPTIONS,POST"),
        ("/worksets/next", "GET", "GET,OPTIONS"),
        ("/worksets/x", "GET", "GET,OPTIONS"),
    ],
)
def test_a_preflight_answers_the_methods_of_its_path_write_routes_too(
    cors_api: ModuleType, path: str, asked: str, allowed: str
) -> None:
    # WHEN a browser asks before a signed request (every OPTIONS goes to the read function)
    response = _call(
        cors_api, "OPTIONS", path, "https://portal.example.org", **{"Access-Control-Request-Method": asked}
    )

    # THEN it is told the methods that path has in the whole API, without credentials
    headers = _headers(response)
    assert response["statusCode"] == 204
    assert headers["access-control-allow-methods"] == allowed
    assert headers["access-control-allow-origin"] == "https://portal.example.org"
    assert "access-control-allow-credentials" not in headers


def test_a_preflight_from_another_origin_gets_no_cors_headers(cors_api: ModuleType) -> None:
    response = _call(cors_api, "OPTIONS", "/worksets/x/cancel", "https://evil.example.com")

    assert not [name for name in _headers(response) if name.startswith("access-control-")]


def test_another_origin_gets_no_cors_headers(cors_api: ModuleType) -> None:
    response = _call(cors_api, "GET", "/", "https://evil.example.com")

    assert "access-control-allow-origin" not in _headers(response)


def test_without_allowed_origins_there_is_no_cors(load_function: Callable[[str], ModuleType]) -> None:
    module = load_function("ApiReadFunction")

    response = _call(module, "GET", "/", "https://portal.example.org")

    assert "access-control-allow-origin" not in _headers(response)


# --- the OpenAPI document -------------------------------------------------------------------------------------------


def test_the_served_document_is_the_committed_one(api: Any) -> None:
    status, served = api("GET", "/openapi.json")

    assert status == 200
    assert served == json.loads(DOCUMENT.read_text()), "openapi.json drifted from the code: run `make openapi`"


def test_the_committed_document_is_what_the_code_generates() -> None:
    assert generate() == DOCUMENT.read_text(), "openapi.json drifted from the code: run `make openapi`"


def test_the_document_lists_every_route_and_needs_sigv4_but_for_the_health_check() -> None:
    document = json.loads(DOCUMENT.read_text())

    routes = {f"{method.upper()} {path}" for path, item in document["paths"].items() for method in item}
    assert {
        "GET /",
        "POST /worksets",
        "GET /worksets",
        "GET /worksets/next",
        "GET /worksets/{workset_id}",
        "GET /worksets/{workset_id}/history",
        "PUT /worksets/{workset_id}/state",
        "POST /worksets/{workset_id}/lock",
        "DELETE /worksets/{workset_id}/lock",
        "POST /worksets/{workset_id}/heartbeat",
        "POST /worksets/{workset_id}/cancel",
        "POST /worksets/{workset_id}/retry",
        "POST /worksets/{workset_id}/archive",
        "POST /worksets/{workset_id}/restore",
        "GET /queue/stats",
        "GET /scheduler/stats",
        "GET /clusters",
        "POST /clusters",
        "GET /clusters/{name}",
        "POST /clusters/{name}/heartbeat",
        "DELETE /clusters/{name}",
    } == routes
    assert document["security"] == [{"sigv4": []}]
    assert document["paths"]["/"]["get"]["security"] == [{}]


def test_the_docs_page_needs_nothing_from_the_internet(load_function: Callable[[str], ModuleType]) -> None:
    module = load_function("ApiReadFunction")

    response = module.lambda_handler(api_event("GET", "/docs"), FakeLambdaContext("api"))

    page = base64.b64decode(response["body"]).decode() if response.get("isBase64Encoded") else response["body"]
    assert response["statusCode"] == 200
    assert "SwaggerUIBundle" in page
    assert "<script src=" not in page and "<link rel='stylesheet'" not in page
