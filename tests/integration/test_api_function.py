"""The API function, invoked with API Gateway proxy events against the emulator."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from workset_monitor.models import ErrorCategory, Priority, State, Workset, WorkSpec, utcnow
from workset_monitor.store import WorksetStore

pytestmark = pytest.mark.integration


def registered(store: WorksetStore, workset_id: str, **fields: Any) -> Workset:
    """A workset written straight into the table, `ready` unless `fields` say another state."""
    now = utcnow()
    workset = Workset(
        workset_id=workset_id,
        bucket="bucket",
        folder=f"daylily_monitoring/active_worksets/{workset_id}/",
        created_at=now,
        updated_at=now,
        **{"state": State.READY, **fields},
    )
    return store.register(workset, actor="test")


def test_health_check(api: Any) -> None:
    status, body = api("GET", "/")

    assert (status, body["status"]) == (200, "ok")


def test_next_reaches_its_own_route_not_the_workset_route(api: Any, store: WorksetStore) -> None:
    # GIVEN a workset literally named "next" and another one assigned to cluster c1
    registered(store, "next")
    store.assign(registered(store, "w1"), cluster="c1", reason="test")

    # WHEN an agent of c1 asks for its next workset
    status, body = api("GET", "/worksets/next", query={"cluster": "c1"})

    # THEN it gets w1, not the workset called "next"
    assert (status, body["workset_id"]) == (200, "w1")


def test_next_without_work_is_204(api: Any) -> None:
    status, _ = api("GET", "/worksets/next", query={"cluster": "idle"})

    assert status == 204


def test_next_without_a_cluster_is_422(api: Any) -> None:
    status, body = api("GET", "/worksets/next")

    assert status == 422
    assert "cluster" in str(body)


def test_a_percent_encoded_unicode_id_is_decoded(api: Any, store: WorksetStore) -> None:
    registered(store, "hg002 runé/x")

    status, body = api("GET", "/worksets/hg002%20run%C3%A9%2Fx")

    assert status == 200
    assert body["workset_id"] == "hg002 runé/x"
    assert [entry["event"] for entry in body["history"]] == ["registered"]


def test_an_unknown_workset_is_404_with_the_error_shape(api: Any) -> None:
    status, body = api("GET", "/worksets/nope")

    assert status == 404
    assert body["error"]["code"] == "not_found"
    assert body["error"]["request_id"] == "test-request-id"
    assert "nope" in body["error"]["message"]


def test_claim_then_run_then_complete_with_the_lease_token(api: Any, store: WorksetStore) -> None:
    registered(store, "w1")

    status, claimed = api("POST", "/worksets/w1/lock", body={"owner": "agent-1", "cluster": "c1"})
    assert status == 200
    token = claimed["lease"]["token"]
    assert claimed["state"] == "locked"

    status, running = api("PUT", "/worksets/w1/state", body={"state": "in_progress", "lease_token": token})
    assert (status, running["state"]) == (200, "in_progress")

    status, beaten = api("POST", "/worksets/w1/heartbeat", body={"lease_token": token})
    assert (status, beaten["state"]) == (200, "in_progress")

    status, done = api("PUT", "/worksets/w1/state", body={"state": "complete", "lease_token": token})
    assert (status, done["state"]) == (200, "complete")
    assert "lease" not in done


def test_a_second_claim_is_409(api: Any, store: WorksetStore) -> None:
    registered(store, "w1")
    api("POST", "/worksets/w1/lock", body={"owner": "agent-1", "cluster": "c1"})

    status, body = api("POST", "/worksets/w1/lock", body={"owner": "agent-2", "cluster": "c1"})

    assert status == 409
    assert body["error"]["code"] == "transition_refused"


def test_moving_a_leased_workset_without_its_token_is_409(api: Any, store: WorksetStore) -> None:
    registered(store, "w1")
    api("POST", "/worksets/w1/lock", body={"owner": "agent-1", "cluster": "c1"})

    status, body = api("PUT", "/worksets/w1/state", body={"state": "complete"})

    assert status == 409
    assert "lease" in body["error"]["message"]
    assert store.get("w1").state is State.LOCKED


def test_a_wrong_lease_token_is_409_lease_lost(api: Any, store: WorksetStore) -> None:
    registered(store, "w1")
    api("POST", "/worksets/w1/lock", body={"owner": "agent-1", "cluster": "c1"})

    status, body = api("PUT", "/worksets/w1/state", body={"state": "in_progress", "lease_token": 999})

    assert (status, body["error"]["code"]) == (409, "lease_lost")


def test_a_person_may_cancel_a_leased_workset(api: Any, store: WorksetStore) -> None:
    registered(store, "w1")
    api("POST", "/worksets/w1/lock", body={"owner": "agent-1", "cluster": "c1"})

    status, body = api(
        "PUT", "/worksets/w1/state", body={"state": "canceled", "actor": "alice", "reason": "wrong sheet"}
    )

    assert (status, body["state"]) == (200, "canceled")


def test_an_illegal_transition_is_409_and_names_the_rule(api: Any, store: WorksetStore) -> None:
    registered(store, "w1")

    status, body = api("PUT", "/worksets/w1/state", body={"state": "complete"})

    assert status == 409
    assert body["error"]["code"] == "transition_refused"
    assert "from ready a workset may go to" in body["error"]["message"]


@pytest.mark.parametrize(
    "body",
    [
        {"state": "flying"},
        {"state": "ready", "unknown": 1},
        {"state": "ready", "lease_token": "abc"},
        {},
    ],
)
def test_bad_state_bodies_are_422(api: Any, store: WorksetStore, body: dict[str, Any]) -> None:
    registered(store, "w1")

    status, _ = api("PUT", "/worksets/w1/state", body=body)

    assert status == 422


def test_malformed_json_is_a_4xx(api: Any, store: WorksetStore) -> None:
    registered(store, "w1")

    status, _ = api("PUT", "/worksets/w1/state", raw_body="{not json")

    assert 400 <= status < 500


def test_list_filters_by_state_and_pages(api: Any, store: WorksetStore) -> None:
    for n in range(5):
        registered(store, f"w{n}", priority=Priority.URGENT if n == 4 else Priority.NORMAL)

    status, first = api("GET", "/worksets", query={"state": "ready", "limit": "2"})
    assert status == 200
    assert first["worksets"][0]["workset_id"] == "w4"  # urgent first
    assert first["next_token"]

    status, second = api("GET", "/worksets", query={"state": "ready", "limit": "2", "next_token": first["next_token"]})
    assert status == 200
    assert not {w["workset_id"] for w in first["worksets"]} & {w["workset_id"] for w in second["worksets"]}


def test_a_bad_page_token_is_400(api: Any) -> None:
    status, body = api("GET", "/worksets", query={"next_token": "garbage!"})

    assert (status, body["error"]["code"]) == (400, "bad_request")


def test_queue_stats(api: Any, store: WorksetStore) -> None:
    registered(store, "u1", priority=Priority.URGENT)
    registered(store, "n1")
    registered(store, "n2")

    status, body = api("GET", "/queue/stats")

    assert status == 200
    assert body["by_state"]["ready"] == 3
    assert body["ready_by_priority"] == {"urgent": 1, "normal": 2}


def test_clusters_register_and_list(api: Any) -> None:
    status, cluster = api("POST", "/clusters", body={"name": "c1", "max_worksets": 3, "cost_per_vcpu_hour": 0.04})
    assert (status, cluster["name"], cluster["max_worksets"]) == (200, "c1", 3)

    status, listed = api("GET", "/clusters")
    assert [c["name"] for c in listed["clusters"]] == ["c1"]


def test_an_unknown_route_is_404(api: Any) -> None:
    status, body = api("GET", "/nothing/here")

    assert status == 404
    assert body["error"]["code"] == "not_found"


def test_a_long_history_shows_its_newest_100_entries_oldest_first(api: Any, store: WorksetStore) -> None:
    workset = registered(store, "w1")
    for n in range(150):
        workset = store.record(workset, {}, event="noted", actor="test", reason=f"{n}")

    status, body = api("GET", "/worksets/w1")

    assert status == 200
    assert [entry["reason"] for entry in body["history"]] == [str(n) for n in range(50, 150)]
    assert body["history_complete"] is False
    assert body["version"] == 151


def test_a_short_history_is_complete(api: Any, store: WorksetStore) -> None:
    registered(store, "w1")

    status, body = api("GET", "/worksets/w1")

    assert (status, body["history_complete"], len(body["history"])) == (200, True, 1)


def test_a_request_that_does_not_validate_gets_the_error_shape(api: Any, store: WorksetStore) -> None:
    registered(store, "w1")

    status, body = api("PUT", "/worksets/w1/state", body={"state": "flying", "extra": 1})

    assert status == 422
    assert body["error"]["code"] == "invalid_request"
    assert body["error"]["request_id"] == "test-request-id"
    assert "state" in body["error"]["message"] and "extra" in body["error"]["message"]


@pytest.mark.parametrize(
    ("body_bytes", "expected"),
    [(b"\xff\xfe\x00\x01", 400), (b"[" * 100_000, 400), (b"{not json", 422), (b"null", 422)],
    ids=["not-utf8", "nested-too-deep", "malformed", "null"],
)
def test_hostile_bodies_get_a_4xx_with_the_error_shape(
    api: Any, store: WorksetStore, body_bytes: bytes, expected: int
) -> None:
    registered(store, "w1")

    status, body = api("PUT", "/worksets/w1/state", body_bytes=body_bytes)

    assert status == expected
    assert set(body["error"]) == {"code", "message", "request_id"}


HUGE = "1" + "0" * 5000
"""A JSON number of more digits than Python turns into an int (4,300): its decoder raises a plain ValueError."""


@pytest.mark.parametrize(
    ("method", "path", "raw_body"),
    [
        ("POST", "/worksets", f'{{"bucket": "b", "prefix": "p/", "n": {HUGE}}}'),
        ("POST", "/worksets/w1/lock", f'{{"owner": "a", "cluster": "c", "lease_seconds": {HUGE}}}'),
        ("DELETE", "/worksets/w1/lock", f'{{"lease_token": {HUGE}}}'),
        ("POST", "/worksets/w1/heartbeat", f'{{"lease_token": {HUGE}}}'),
        ("PUT", "/worksets/w1/state", f'{{"state": "error", "lease_token": {HUGE}}}'),
        ("POST", "/worksets/w1/cancel", f'{{"reason": {HUGE}}}'),
        ("POST", "/worksets/w1/retry", f"[{HUGE}]"),
        ("POST", "/clusters", f'{{"name": "big", "max_worksets": {HUGE}}}'),
        ("POST", "/clusters/c1/heartbeat", f'{{"status": -{HUGE}}}'),
        ("POST", "/worksets/w1/archive", f'{{"actor": "a", "deep": [{{"n": {HUGE}}}]}}'),
    ],
)
def test_a_number_too_long_to_read_is_a_400_on_every_write_route(
    api: Any, store: WorksetStore, method: str, path: str, raw_body: str
) -> None:
    registered(store, "w1")

    status, body = api(method, path, raw_body=raw_body)

    assert (status, body["error"]["code"]) == (400, "bad_request")
    assert "exceeds the limit (4300 digits) for integer string conversion" in body["error"]["message"]


def _token(payload: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode()


@pytest.mark.parametrize(
    "token",
    [
        _token({}),
        _token({"pk": "x"}),
        _token({"pk": {"S": "x"}}),
        _token({"scope": "by-entity:workset", "key": {"pk": {"BOGUS": "x"}}}),
        _token({"scope": "by-entity:workset", "key": {"pk": "a", "sk": "b", "entity": "c"}}),
        _token({"scope": "by-entity:workset", "key": {"pk": "a", "sk": "b", "entity": "c", "created_key": 5}}),
        _token([1, 2]),
    ],
)
def test_tampered_page_tokens_are_400(api: Any, token: str) -> None:
    status, body = api("GET", "/worksets", query={"next_token": token})

    assert (status, body["error"]["code"]) == (400, "bad_request")


def test_a_page_token_of_one_state_is_refused_for_another(api: Any, store: WorksetStore) -> None:
    for n in range(3):
        registered(store, f"w{n}")
    _, first = api("GET", "/worksets", query={"state": "ready", "limit": "1"})

    status, _ = api("GET", "/worksets", query={"state": "error", "next_token": first["next_token"]})

    assert status == 400


def test_a_workset_is_locked_only_by_a_claim(api: Any, store: WorksetStore) -> None:
    registered(store, "w1")

    status, body = api("PUT", "/worksets/w1/state", body={"state": "locked"})

    assert (status, body["error"]["code"]) == (409, "transition_refused")
    assert "claim" in body["error"]["message"]
    assert store.get("w1").state is State.READY


def test_a_workset_pinned_to_a_cluster_cannot_be_claimed_by_another(api: Any, store: WorksetStore) -> None:
    registered(store, "w1", work=WorkSpec(run_command="-p x", cluster_name="gpu-cluster"))

    status, body = api("POST", "/worksets/w1/lock", body={"owner": "agent-1", "cluster": "cpu-cluster"})

    assert status == 409
    assert "gpu-cluster" in body["error"]["message"]


@pytest.mark.parametrize(
    "registration",
    [
        {"name": "c1", "surprise": True},
        {"name": "c1", "region": "x" * 65},
        {"name": "c1", "region": "<b>us-west-2</b>"},
        {"name": "c1", "region": "us-west"},
        {"name": "c1", "availability_zone": "zone b"},
        {"name": "c1", "status": "draining"},
        {"name": "bad name"},
    ],
)
def test_cluster_registrations_are_validated(api: Any, registration: dict[str, Any]) -> None:
    status, body = api("POST", "/clusters", body=registration)

    assert (status, body["error"]["code"]) == (422, "invalid_request")


def test_a_decomposed_unicode_id_finds_the_composed_workset(api: Any, store: WorksetStore) -> None:
    registered(store, "café")  # as the register function stores it: NFC

    status, body = api("GET", "/worksets/cafe%CC%81")  # "café" as macOS spells it: e + combining acute

    assert (status, body["workset_id"]) == (200, "café")


def test_error_reasons_are_capped_to_fit_the_item(store: WorksetStore) -> None:
    workset = registered(store, "w1")
    claimed = store.claim(workset, owner="a", cluster="c1", lease_seconds=600)
    assert claimed.lease is not None

    failed = store.transition(
        claimed,
        State.ERROR,
        actor="a",
        lease_token=claimed.lease.token,
        error_category=ErrorCategory.DATA,
        error_reasons=tuple("x" * 5000 for _ in range(200)),
    )

    assert len(failed.error_reasons) == 51
    assert failed.error_reasons[-1] == "... and 150 more"
    assert all(len(reason) <= 500 for reason in failed.error_reasons)


@pytest.mark.parametrize("token", [2**128, True, "3", 0])
def test_a_lease_token_that_is_no_token_is_422(api: Any, store: WorksetStore, token: object) -> None:
    registered(store, "w1")
    api("POST", "/worksets/w1/lock", body={"owner": "agent-1", "cluster": "c1"})

    status, body = api("POST", "/worksets/w1/heartbeat", body={"lease_token": token})

    assert (status, body["error"]["code"]) == (422, "invalid_request")


def test_a_body_that_is_not_json_is_415_with_the_error_shape(api: Any) -> None:
    status, body = api("POST", "/clusters", raw_body="name=c1", content_type="text/plain")

    assert (status, body["error"]["code"]) == (415, "unsupported_media_type")
