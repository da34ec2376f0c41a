"""Stand-ins for what notifications are sent to, as real HTTP servers on this machine: a webhook receiver that verifies
signatures as the README tells receivers to, and a small Linear GraphQL API.

Both run in a thread of this process on a free port (`with WebhookReceiver(secret) as receiver: receiver.url`), record
every request, and can be told to misbehave for the next requests (`receiver.trouble(Trouble(status=503))`): answer
an error, rate-limit, answer slowly, or answer an error inside an HTTP 200. The tests and `make demo` use them.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from local.observability import logger
from workset_monitor.channels.webhook import (
    EVENT_ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    verify_signature,
)


@dataclass(frozen=True)
class Trouble:
    """How to answer one request instead of well.

    `status`/`body`/`headers` replace the answer (the request has no effect) unless `takes_effect`, which makes the
    request count and only delays its normal answer by `delay` seconds: a slow server, whose client may give up.
    """

    status: int = 200
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0
    takes_effect: bool = False


@dataclass(frozen=True)
class Received:
    """One request as a receiver saw it."""

    path: str
    headers: dict[str, str]
    body: bytes
    status: int
    accepted: bool
    verified: bool | None = None

    def json(self) -> Any:
        return json.loads(self.body)


class _Server:
    """A threaded HTTP server on 127.0.0.1 whose handler calls `self.answer(path, headers, body)`."""

    name = "server"

    def __init__(self, port: int = 0) -> None:
        self.port = port
        self.lock = threading.Lock()
        self.received: list[Received] = []
        self._troubles: deque[Trouble] = deque()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError(f"the {self.name} is not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> _Server:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {name.lower(): value for name, value in self.headers.items()}
                status, answer, extra = owner._handle(self.path, headers, body)
                payload = json.dumps(answer).encode() if not isinstance(answer, bytes) else answer
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    for name, value in extra.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up waiting: as with a real server, the work is done all the same

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name=f"local-{self.name}", daemon=True).start()
        logger.info("receiver started", receiver=self.name, url=self.url)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> _Server:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def trouble(self, *troubles: Trouble) -> None:
        """Answer the next requests with these troubles, one each, in order."""
        with self.lock:
            self._troubles.extend(troubles)

    def _handle(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any, Mapping[str, str]]:
        with self.lock:
            trouble = self._troubles.popleft() if self._troubles else None

        if trouble is not None and not trouble.takes_effect:
            time.sleep(trouble.delay)
            self._record(Received(path, headers, body, trouble.status, accepted=False))
            return trouble.status, trouble.body if trouble.body is not None else {}, trouble.headers

        status, answer, extra = self.answer(path, headers, body)
        if trouble is not None:
            time.sleep(trouble.delay)
        return status, answer, extra

    def answer(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any, Mapping[str, str]]:
        raise NotImplementedError

    def _record(self, received: Received) -> None:
        with self.lock:
            self.received.append(received)

    def requests(self) -> list[Received]:
        with self.lock:
            return list(self.received)


class WebhookReceiver(_Server):
    """Accepts POSTs on any path; with a secret, refuses (401) a request whose signature does not verify.

    `deliveries(path)` is what was accepted: a receiver that dedupes by `X-Workset-Event-Id` keeps one of each.
    """

    name = "webhook receiver"

    def __init__(self, secret: str | None = None, port: int = 0) -> None:
        super().__init__(port)
        self.secret = secret

    def answer(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any, Mapping[str, str]]:
        verified = None
        if self.secret is not None:
            verified = verify_signature(
                self.secret, body, headers.get(TIMESTAMP_HEADER.lower()), headers.get(SIGNATURE_HEADER.lower())
            )
            if not verified:
                self._record(Received(path, headers, body, 401, accepted=False, verified=False))
                return 401, {"error": "signature does not verify"}, {}

        self._record(Received(path, headers, body, 202, accepted=True, verified=verified))
        if path.rstrip("/").endswith("pagerduty"):
            dedup_key = json.loads(body).get("dedup_key", "")
            return 202, {"status": "success", "message": "Event processed", "dedup_key": dedup_key}, {}
        return 202, {"ok": True}, {}

    def deliveries(self, path: str | None = None) -> list[Received]:
        return [item for item in self.requests() if item.accepted and (path is None or item.path == path)]

    def distinct_events(self, path: str | None = None) -> list[str]:
        """The event ids accepted on `path`, each once, in order of first arrival."""
        seen: dict[str, None] = {}
        for item in self.deliveries(path):
            seen.setdefault(item.headers.get(EVENT_ID_HEADER.lower(), ""), None)
        return list(seen)


@dataclass
class LinearIssue:
    id: str
    identifier: str
    url: str
    team_id: str
    title: str
    description: str
    priority: int
    state_id: str
    comments: list[str] = field(default_factory=list)


class FakeLinear(_Server):
    """The part of Linear's GraphQL API the Linear channel uses, keyed by the operation names it sends.

    Like Linear, it answers errors inside an HTTP 200 (an unknown id, a duplicate id, a bad team) and takes the API
    key as the whole `Authorization` header.

    Limitations:
        it matches operations by name, not by parsing GraphQL; the duplicate-id error's wording is this server's own.
    """

    name = "fake Linear"
    TEAM_STATES = ({"id": "state-done", "name": "Done", "position": 3}, {"id": "state-shipped", "position": 4})
    BACKLOG = "state-backlog"

    def __init__(self, api_key: str, team_id: str = "team-eng", port: int = 0) -> None:
        super().__init__(port)
        self.api_key = api_key
        self.team_id = team_id
        self.issues: dict[str, LinearIssue] = {}
        self.comment_ids: set[str] = set()
        self.operations: list[str] = []
        self._numbers = itertools.count(1)

    def answer(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any, Mapping[str, str]]:
        if headers.get("authorization") != self.api_key:
            self._record(Received(path, headers, body, 400, accepted=False))
            error = {"message": "Authentication required", "extensions": {"code": "AUTHENTICATION_ERROR"}}
            return 400, {"errors": [error]}, {}

        request = json.loads(body)
        query, variables = str(request.get("query", "")), request.get("variables") or {}
        operation = next((name for name in self._handlers() if f" {name}(" in f" {query}"), "unknown")
        with self.lock:
            self.operations.append(operation)
            answer = self._handlers().get(operation, self._unknown)(variables)
        self._record(Received(path, headers, body, 200, accepted="errors" not in answer))
        return 200, answer, {}

    def _handlers(self) -> dict[str, Any]:
        return {
            "IssueCreate": self._issue_create,
            "Issue": self._issue,
            "CommentCreate": self._comment_create,
            "Comment": self._comment,
            "IssueUpdate": self._issue_update,
            "CompletedStates": self._completed_states,
        }

    def _issue_create(self, variables: Mapping[str, Any]) -> dict[str, Any]:
        fields = variables["input"]
        issue_id = fields.get("id") or f"generated-{next(self._numbers)}"
        if issue_id in self.issues:
            return _errors("Entity already exists: an issue with this id exists", "invalid input")
        if fields.get("teamId") != self.team_id:
            return _errors(f"Team {fields.get('teamId')} not found", "invalid input")
        identifier = f"ENG-{len(self.issues) + 1}"
        self.issues[issue_id] = LinearIssue(
            id=issue_id,
            identifier=identifier,
            url=f"https://linear.app/lab/issue/{identifier}",
            team_id=fields["teamId"],
            title=fields["title"],
            description=fields.get("description", ""),
            priority=int(fields.get("priority", 0)),
            state_id=self.BACKLOG,
        )
        return {"data": {"issueCreate": {"success": True, "issue": self._issue_fields(issue_id)}}}

    def _issue(self, variables: Mapping[str, Any]) -> dict[str, Any]:
        if variables.get("id") not in self.issues:
            return _errors("Entity not found: Issue", "invalid input")
        return {"data": {"issue": self._issue_fields(variables["id"])}}

    def _comment_create(self, variables: Mapping[str, Any]) -> dict[str, Any]:
        fields = variables["input"]
        if fields.get("id") in self.comment_ids:
            return _errors("Entity already exists: a comment with this id exists", "invalid input")
        if fields.get("issueId") not in self.issues:
            return _errors("Entity not found: Issue", "invalid input")
        self.comment_ids.add(fields["id"])
        self.issues[fields["issueId"]].comments.append(fields["body"])
        return {"data": {"commentCreate": {"success": True, "comment": {"id": fields["id"]}}}}

    def _comment(self, variables: Mapping[str, Any]) -> dict[str, Any]:
        if variables.get("id") not in self.comment_ids:
            return _errors("Entity not found: Comment", "invalid input")
        return {"data": {"comment": {"id": variables["id"]}}}

    def _issue_update(self, variables: Mapping[str, Any]) -> dict[str, Any]:
        if variables.get("id") not in self.issues:
            return _errors("Entity not found: Issue", "invalid input")
        self.issues[variables["id"]].state_id = variables["input"]["stateId"]
        return {"data": {"issueUpdate": {"success": True, "issue": {"id": variables["id"]}}}}

    def _completed_states(self, variables: Mapping[str, Any]) -> dict[str, Any]:
        if variables.get("teamId") != self.team_id:
            return _errors("Entity not found: Team", "invalid input")
        return {"data": {"team": {"states": {"nodes": list(self.TEAM_STATES)}}}}

    def _unknown(self, variables: Mapping[str, Any]) -> dict[str, Any]:
        return _errors("Cannot query this field", "graphql error")

    def _issue_fields(self, issue_id: str) -> dict[str, str]:
        issue = self.issues[issue_id]
        return {"id": issue.id, "identifier": issue.identifier, "url": issue.url}

    def issues_of(self, text: str) -> list[LinearIssue]:
        """The issues whose title mentions `text`, in creation order."""
        with self.lock:
            return [issue for issue in self.issues.values() if text in issue.title]

    def is_done(self, issue: LinearIssue) -> bool:
        return issue.state_id in {state["id"] for state in self.TEAM_STATES}


def _errors(message: str, kind: str) -> dict[str, Any]:
    return {"data": None, "errors": [{"message": message, "extensions": {"type": kind, "userError": True}}]}


def rate_limited(retry_after: float | None = 1, *, inside_200: bool = False) -> Trouble:
    """Linear's or any API's rate limit: HTTP 429 with Retry-After, or (Linear) an error coded RATELIMITED."""
    headers = {"Retry-After": str(int(retry_after))} if retry_after is not None else {}
    error = {"message": "Rate limit exceeded", "extensions": {"code": "RATELIMITED"}}
    return Trouble(status=200 if inside_200 else 429, body={"errors": [error]}, headers=headers)
