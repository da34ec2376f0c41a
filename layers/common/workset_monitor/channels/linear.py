"""The Linear channel: one issue per workset incident, through Linear's GraphQL API.

- The first failure of a workset (`error`, `lease_expired`, `retry_scheduled`, as the channel's filter lets through)
  opens an issue; later failures comment on it.
- A later completion comments on the issue and moves it to the team's completed state; the next failure opens a new
  issue. Other events comment on an open issue and are dropped when none is open.

Never a second issue for one incident: the issue's id is derived from the workset, the version of the failure and
the channel, written to the incident store before the issue is created, and given to Linear as the issue's id. A
retry finds the stored id, sees whether Linear has that issue, and creates it only if not. Comments get derived ids
the same way, so a retried comment is not posted twice.

Errors Linear returns inside an HTTP 200 (`errors`) are failures, never taken for success; rate limits (HTTP 429, or
an error coded RATELIMITED) wait for the reset Linear names, within the delivery's bounds; timeouts, connection
failures, 5xx and Linear's internal errors are retried with backoff.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import requests

from ..credentials import SecretReader
from ..events import FAILURE_EVENTS, WorksetEvent, email_text, headline, title
from ..incidents import Incident, IncidentStore
from ..models import Priority, State
from ..routing import LinearChannelConfig
from .http import Deadline, PermanentFailure, RetryPolicy, TransientFailure, post, retry_after, with_retries

LINEAR_PRIORITY = {Priority.URGENT: 1, Priority.NORMAL: 3, Priority.LOW: 4}
"""Linear's priorities: 0 none, 1 urgent, 2 high, 3 medium, 4 low."""

TITLE_CHARS = 250
RATE_LIMIT_RESET_HEADER = "X-RateLimit-Requests-Reset"
TRANSIENT_ERROR_TYPES = frozenset({"internal error", "lock timeout", "network error", "internal_server_error"})

ISSUE_CREATE = """
mutation IssueCreate($input: IssueCreateInput!) {
  issueCreate(input: $input) { success issue { id identifier url } }
}"""
ISSUE = "query Issue($id: String!) { issue(id: $id) { id identifier url } }"
COMMENT_CREATE = """
mutation CommentCreate($input: CommentCreateInput!) {
  commentCreate(input: $input) { success comment { id } }
}"""
COMMENT = "query Comment($id: String!) { comment(id: $id) { id } }"
ISSUE_UPDATE = """
mutation IssueUpdate($id: String!, $input: IssueUpdateInput!) {
  issueUpdate(id: $id, input: $input) { success issue { id } }
}"""
COMPLETED_STATES = """
query CompletedStates($teamId: String!) {
  team(id: $teamId) { states(filter: {type: {eq: "completed"}}) { nodes { id name position } } }
}"""


class LinearError(PermanentFailure):
    """Linear answered with errors that another attempt now would not change (invalid input, no access, ...)."""


def stable_uuid(*parts: str) -> str:
    """A UUID in version 4 format derived from `parts`: the same parts give the same id on every retry."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).digest()
    return str(uuid.UUID(bytes=digest[:16], version=4))


class LinearClient:
    """The few GraphQL operations the channel needs, each sent with bounded retries."""

    def __init__(
        self,
        url: str,
        api_key: Callable[[], str],
        *,
        channel: str,
        policy: RetryPolicy,
        deadline: Deadline,
        session: requests.Session | None = None,
    ) -> None:
        self.url = url
        self.api_key = api_key
        self.channel = channel
        self.policy = policy
        self.deadline = deadline
        self.session = session or requests.Session()
        self._completed_states: dict[str, str] = {}

    def execute(self, query: str, variables: Mapping[str, Any]) -> dict[str, Any]:
        """The `data` of one GraphQL request; raises LinearError, or TransientFailure once retries are spent."""
        body = json.dumps({"query": query, "variables": dict(variables)}).encode()
        headers = {"Authorization": self.api_key()}
        return with_retries(
            lambda timeout: self._attempt(body, headers, timeout), self.policy, self.deadline, channel=self.channel
        )

    def _attempt(self, body: bytes, headers: Mapping[str, str], timeout: float) -> dict[str, Any]:
        response = post(self.session, self.url, body=body, headers=headers, timeout=timeout)
        status = response.status_code
        try:
            document = response.json()
        except ValueError:
            document = None
        errors = document.get("errors") if isinstance(document, dict) else None

        if status == 429 or _rate_limited(errors):
            raise TransientFailure(f"rate limited by Linear (HTTP {status})", retry_after=_reset_wait(response))
        if status >= 500 or status == 408:
            raise TransientFailure(f"HTTP {status} from Linear")
        if errors:
            message = _messages(errors)
            if status < 400 and _transient(errors):
                raise TransientFailure(f"Linear failed inside: {message}")
            raise LinearError(f"Linear refused the request (HTTP {status}): {message}")
        if status >= 400 or not isinstance(document, dict) or not isinstance(document.get("data"), dict):
            raise PermanentFailure(f"unexpected answer from Linear: HTTP {status} {response.text[:200]!r}")
        data: dict[str, Any] = document["data"]
        return data

    def create_issue(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        payload = self.execute(ISSUE_CREATE, {"input": dict(fields)})["issueCreate"]
        if not payload or not payload.get("success") or not payload.get("issue"):
            raise LinearError("issueCreate did not succeed")
        issue: dict[str, Any] = payload["issue"]
        return issue

    def find_issue(self, issue_id: str) -> dict[str, Any] | None:
        """The issue, or None when Linear does not know it (it answers that with an error)."""
        try:
            issue = self.execute(ISSUE, {"id": issue_id}).get("issue")
        except LinearError:
            return None
        return issue if isinstance(issue, dict) else None

    def create_comment(self, comment_id: str, issue_id: str, body: str) -> None:
        payload = self.execute(COMMENT_CREATE, {"input": {"id": comment_id, "issueId": issue_id, "body": body}})
        if not payload.get("commentCreate", {}).get("success"):
            raise LinearError("commentCreate did not succeed")

    def comment_exists(self, comment_id: str) -> bool:
        try:
            return isinstance(self.execute(COMMENT, {"id": comment_id}).get("comment"), dict)
        except LinearError:
            return False

    def move_issue(self, issue_id: str, state_id: str) -> None:
        payload = self.execute(ISSUE_UPDATE, {"id": issue_id, "input": {"stateId": state_id}})
        if not payload.get("issueUpdate", {}).get("success"):
            raise LinearError("issueUpdate did not succeed")

    def completed_state(self, team_id: str) -> str:
        """The id of the team's first workflow state of type `completed` (asked once per process)."""
        if team_id not in self._completed_states:
            team = self.execute(COMPLETED_STATES, {"teamId": team_id}).get("team") or {}
            states = sorted(team.get("states", {}).get("nodes", []), key=lambda state: state.get("position", 0))
            if not states:
                raise LinearError(f"team {team_id} has no workflow state of type completed")
            self._completed_states[team_id] = str(states[0]["id"])
        return self._completed_states[team_id]


class LinearChannel:
    """Keeps one Linear issue per workset incident: opens, comments, closes.

    Limitations:
        a retried create or comment relies on Linear refusing an id it already holds; the channel then looks the
        issue or comment up, so it depends on no error's wording, but this was tested against a stand-in only.
    """

    def __init__(
        self,
        config: LinearChannelConfig,
        secrets: SecretReader,
        incidents: IncidentStore,
        *,
        deadline: Deadline,
        scope: str,
        session: requests.Session | None = None,
    ) -> None:
        self.name = config.name
        self.config = config
        self.incidents = incidents
        self.scope = scope
        policy = RetryPolicy(
            attempts=config.max_attempts, timeout=config.timeout_seconds, max_wait=config.max_wait_seconds
        )
        self.linear = LinearClient(
            config.url,
            lambda: secrets.read(config.api_key),
            channel=config.name,
            policy=policy,
            deadline=deadline,
            session=session,
        )

    def deliver(self, event: WorksetEvent) -> str:
        incident = self.incidents.get(event.workset_id, self.name)
        if incident is not None and incident.is_open and not incident.created:
            # An earlier try chose this issue's id (or an earlier incident's opening was never finished): make it.
            incident = self._ensure_issue(incident, event)
            if incident.opened_version == event.version:
                return f"opened {incident.issue_key or incident.issue_id}"

        if event.event_type in FAILURE_EVENTS:
            if incident is not None and incident.is_open:
                if incident.opened_version == event.version:
                    return f"opened {incident.issue_key or incident.issue_id}"
                self._comment(incident, event)
                return f"commented on {incident.issue_key or incident.issue_id}"
            opened = self._open(event)
            return f"opened {opened.issue_key or opened.issue_id}"

        if incident is None or not incident.is_open:
            return "no open issue: nothing to say"
        self._comment(incident, event)
        if event.state is State.COMPLETE:
            self.linear.move_issue(incident.issue_id, self._completed_state())
            self.incidents.close(incident, version=event.version)
            return f"commented on and closed {incident.issue_key or incident.issue_id}"
        return f"commented on {incident.issue_key or incident.issue_id}"

    def _open(self, event: WorksetEvent) -> Incident:
        chosen = Incident(
            workset_id=event.workset_id,
            channel=self.name,
            issue_id=stable_uuid(self.scope, self.name, event.workset_id, str(event.version), "issue"),
            opened_version=event.version,
        )
        incident = self.incidents.open(chosen)
        if incident.created:
            return incident
        return self._ensure_issue(incident, event)

    def _ensure_issue(self, incident: Incident, event: WorksetEvent) -> Incident:
        """Create the incident's issue under its chosen id, unless Linear already has it (an earlier try did)."""
        # NOTE: a create is sent before asking whether the issue exists: a retry is rare, a lookup first would cost
        # every incident an extra request against Linear's rate limit.
        try:
            issue = self.linear.create_issue(self._issue_fields(incident, event))
        except LinearError:
            issue_found = self.linear.find_issue(incident.issue_id)
            if issue_found is None:
                raise
            issue = issue_found
        return self.incidents.mark_created(incident, issue_key=issue.get("identifier"), issue_url=issue.get("url"))

    def _comment(self, incident: Incident, event: WorksetEvent) -> None:
        comment_id = stable_uuid(self.scope, self.name, event.workset_id, str(event.version), "comment")
        try:
            self.linear.create_comment(comment_id, incident.issue_id, comment_body(event))
        except LinearError:
            if not self.linear.comment_exists(comment_id):
                raise

    def _completed_state(self) -> str:
        return self.config.completed_state_id or self.linear.completed_state(self.config.team_id)

    def _issue_fields(self, incident: Incident, event: WorksetEvent) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "id": incident.issue_id,
            "teamId": self.config.team_id,
            "title": title(event, TITLE_CHARS),
            "description": issue_description(event),
            "priority": LINEAR_PRIORITY[event.priority],
        }
        if self.config.label_ids:
            fields["labelIds"] = list(self.config.label_ids)
        return fields


def issue_description(event: WorksetEvent) -> str:
    """The issue's markdown: what happened, every fact and reason, and what the monitor will do with the issue."""
    return (
        f"**{_markdown(headline(event))}**\n\n"
        f"{_fenced(email_text(event))}\n\n"
        "_Opened by the workset monitor. Later failures of this workset comment here; its completion comments and "
        "moves this issue to done._"
    )


def comment_body(event: WorksetEvent) -> str:
    return f"**{_markdown(headline(event))}** (attempt {event.attempt})\n\n{_fenced(email_text(event))}"


def _fenced(text: str) -> str:
    """`text` in a code block whose fence is longer than any run of backticks inside it."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}text\n{text.rstrip()}\n{fence}"


def _markdown(text: str) -> str:
    """`text` with markdown's inline marks escaped, so a workset id or reason shows as written."""
    return re.sub(r"([\\`*_\[\]<#|])", r"\\\1", text)


def _rate_limited(errors: Any) -> bool:
    return any(_code(error) == "ratelimited" for error in errors or [] if isinstance(error, dict))


def _transient(errors: Any) -> bool:
    return all(_code(error) in TRANSIENT_ERROR_TYPES for error in errors if isinstance(error, dict))


def _code(error: Mapping[str, Any]) -> str:
    extensions = error.get("extensions") or {}
    return str(extensions.get("code") or extensions.get("type") or "").lower()


def _messages(errors: Any) -> str:
    return "; ".join(str(error.get("message", error)) for error in errors if isinstance(error, dict))[:500]


def _reset_wait(response: requests.Response) -> float | None:
    """What a rate-limited answer asks to wait: `Retry-After`, else the time to Linear's reset (epoch ms)."""
    asked = retry_after(response)
    if asked is not None:
        return asked
    reset = response.headers.get(RATE_LIMIT_RESET_HEADER, "")
    if reset.isdigit():
        return max(0.0, int(reset) / 1000 - time.time())
    return None
