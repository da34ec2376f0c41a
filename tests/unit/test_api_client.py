"""`ApiClient`, which the agent and the `workset` CLI share, against a small HTTP server on localhost that checks each
request's SigV4 signature as the local stack (and API Gateway) does: paths go out exactly as written, `next` as an id
included; retries say when an earlier try may have landed; a retried action reconciles its own earlier success."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import pytest

from agent.client import ApiClient, ApiError, signing_region
from local.sigv4 import SignatureRejected, verify_request

REGION = "us-east-1"
KEYS = {"testing": "testing"}

Reply = tuple[int, Any]


@dataclass
class SigningApi:
    """Answers each (method, raw path) with its scripted replies in turn (the last one again and again), after
    verifying the request's signature; records each request's raw target and body."""

    server: ThreadingHTTPServer
    replies: dict[tuple[str, str], list[Reply | Callable[[], Reply]]] = field(default_factory=dict)
    received: list[tuple[str, str, Any]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/dev"

    def answer(self, method: str, path: str, *replies: Reply | Callable[[], Reply]) -> None:
        self.replies[(method, "/dev" + path)] = list(replies)

    def reply(self, method: str, target: str, headers: list[tuple[str, str]], body: bytes) -> Reply:
        self.received.append((method, target, json.loads(body) if body else None))
        try:
            verify_request(method=method, target=target, headers=headers, body=body, credentials=KEYS, region=REGION)
        except SignatureRejected as rejected:
            return 403, {"error": {"code": rejected.response_type, "message": rejected.message}}
        replies = self.replies.get((method, target.split("?")[0]))
        if not replies:
            return 404, {"error": {"code": "not_found", "message": f"no route {method} {target}"}}
        reply = replies.pop(0) if len(replies) > 1 else replies[0]
        return reply() if callable(reply) else reply


@pytest.fixture
def api() -> Iterator[SigningApi]:
    holder: list[SigningApi] = []

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            status, payload = holder[0].reply(self.command, self.path, list(self.headers.items()), body)
            data = json.dumps(payload).encode() if payload is not None else b""
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = _serve

        def log_message(self, *args: Any) -> None:
            pass

    fake = SigningApi(ThreadingHTTPServer(("127.0.0.1", 0), Handler))
    holder.append(fake)
    threading.Thread(target=fake.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    yield fake
    fake.server.shutdown()
    fake.server.server_close()


@pytest.fixture
def client(api: SigningApi) -> ApiClient:
    session = boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION)
    return ApiClient(api.url, region=REGION, session=session, retries=2, backoff_seconds=0)


WORKSET = {"workset_id": "next", "state": "ready", "history": []}


# --- paths go out exactly as written, and are signed so ---------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "method", "target"),
    [
        (lambda c: c.get_workset("next"), "GET", "/dev/worksets/%6Eext"),
        (lambda c: c.workset_history("next", limit=5), "GET", "/dev/worksets/%6Eext/history?limit=5"),
        (lambda c: c.heartbeat("next", 3), "POST", "/dev/worksets/%6Eext/heartbeat"),
        (lambda c: c.act("next", "cancel", actor="alice"), "POST", "/dev/worksets/%6Eext/cancel"),
        (lambda c: c.get_workset("hg003 runé"), "GET", "/dev/worksets/hg003%20run%C3%A9"),
        (lambda c: c.claim("a/b", owner="o", cluster="c1"), "POST", "/dev/worksets/a%2Fb/lock"),
        (lambda c: c.get_workset("NEXT"), "GET", "/dev/worksets/NEXT"),
        (lambda c: c.next_workset("c 1"), "GET", "/dev/worksets/next?cluster=c%201"),
        (lambda c: c.cluster_heartbeat("next"), "POST", "/dev/clusters/next/heartbeat"),
    ],
)
def test_the_path_goes_out_exactly_as_written_and_its_signature_verifies(
    api: SigningApi, client: ApiClient, call: Callable[[ApiClient], Any], method: str, target: str
) -> None:
    # GIVEN an API that answers only the exact path, and only when signed over it
    api.answer(method, target.removeprefix("/dev").split("?")[0], (200, WORKSET))

    # WHEN the client calls it
    answer = call(client)

    # THEN the request arrived with that path (requests alone would send `/worksets/next` for `%6Eext`), verified
    assert answer == WORKSET
    assert [(m, t) for m, t, _ in api.received] == [(method, target)]


def test_a_cluster_heartbeat_without_a_status_sends_no_body_and_one_with_a_status_sends_it(
    api: SigningApi, client: ApiClient
) -> None:
    api.answer("POST", "/clusters/c1/heartbeat", (200, {"name": "c1", "status": "draining"}))

    assert client.cluster_heartbeat("c1")["status"] == "draining"
    client.cluster_heartbeat("c1", "unavailable")

    assert [body for _, _, body in api.received] == [None, {"status": "unavailable"}]


def test_retries_and_timeout_can_be_set_per_request(api: SigningApi, client: ApiClient) -> None:
    api.answer("POST", "/clusters/c1/heartbeat", (503, {"error": {"code": "http_error", "message": "down"}}))

    with pytest.raises(ApiError) as refused:
        client.cluster_heartbeat("c1", "unavailable", retries=0, timeout=1)

    assert refused.value.status == 503
    assert len(api.received) == 1


# --- retries that may have landed, and their reconciliation -----------------------------------------------------

CONFLICT = (409, {"error": {"code": "transition_refused", "message": "canceled -> canceled refused"}})


@pytest.mark.parametrize(
    ("replies", "may_have_landed"),
    [
        ([CONFLICT], False),
        ([(429, {"message": "Too Many Requests"}), CONFLICT], False),
        ([(502, {"message": "Internal server error"}), CONFLICT], True),
        ([(504, {"message": "Endpoint request timed out"}), CONFLICT], True),
    ],
)
def test_a_409_says_whether_an_earlier_try_may_have_landed(
    api: SigningApi, client: ApiClient, replies: list[Reply], may_have_landed: bool
) -> None:
    api.answer("POST", "/worksets/ws-1/lock", *replies)

    with pytest.raises(ApiError) as refused:
        client.claim("ws-1", owner="o", cluster="c1")

    assert (refused.value.status, refused.value.may_have_landed) == (409, may_have_landed)


def canceled_by(actor: str) -> dict[str, Any]:
    history = [
        {"event": "transition", "to_state": "in_progress", "actor": "agent"},
        {"event": "transition", "to_state": "canceled", "actor": actor},
    ]
    return {"workset_id": "ws-1", "state": "canceled", "history": history}


def test_an_action_retried_after_its_answer_was_lost_is_its_own_success(api: SigningApi, client: ApiClient) -> None:
    # GIVEN the cancel lands but the gateway answers 504, and the retry is refused: the workset is canceled already
    api.answer("POST", "/worksets/ws-1/cancel", (504, {"message": "Endpoint request timed out"}), CONFLICT)
    api.answer("GET", "/worksets/ws-1", (200, canceled_by("alice")))

    # WHEN alice cancels it
    answer = client.act("ws-1", "cancel", actor="alice", reason="wrong sheet")

    # THEN she is told it is canceled, as the first answer would have said
    assert answer["state"] == "canceled"


@pytest.mark.parametrize(
    ("replies", "by"),
    [
        ([(504, {"message": "Endpoint request timed out"}), CONFLICT], "bob"),  # someone else's cancel
        ([CONFLICT], "alice"),  # no try was lost: an earlier cancel of hers is not this one
    ],
)
def test_an_action_refused_otherwise_stays_refused(
    api: SigningApi, client: ApiClient, replies: list[Reply], by: str
) -> None:
    api.answer("POST", "/worksets/ws-1/cancel", *replies)
    api.answer("GET", "/worksets/ws-1", (200, canceled_by(by)))

    with pytest.raises(ApiError) as refused:
        client.act("ws-1", "cancel", actor="alice")

    assert refused.value.code == "transition_refused"


# --- the region requests are signed for -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "region", "environ", "profile", "expected"),
    [
        (
            "https://a1b2c3.execute-api.us-west-2.amazonaws.com/dev",
            None,
            {"AWS_REGION": "eu-west-1"},
            None,
            "us-west-2",
        ),
        ("https://a1b2c3.execute-api.us-west-2.amazonaws.com/dev", "us-east-2", {}, None, "us-east-2"),
        ("https://api.example.org/dev", None, {"AWS_REGION": "eu-west-1"}, "ap-south-1", "eu-west-1"),
        ("http://127.0.0.1:3000", None, {}, "ap-south-1", "ap-south-1"),
        ("http://127.0.0.1:3000", None, {}, None, "us-east-1"),
    ],
)
def test_the_signing_region(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    url: str,
    region: str | None,
    environ: dict[str, str],
    profile: str | None,
    expected: str,
) -> None:
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    session = boto3.Session(aws_access_key_id="k", aws_secret_access_key="s", region_name=profile)

    assert signing_region(url, region, environ=environ, session=session) == expected
