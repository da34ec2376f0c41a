"""A small client of the workset monitor API, signing every request with SigV4 from the standard AWS credentials.

Both the agent and the `workset` CLI call the API through `ApiClient`.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import boto3
import requests
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from requests.utils import requote_uri

RETRIED_STATUSES = frozenset({429, 500, 502, 503, 504})

DEFAULT_REGION = "us-east-1"
EXECUTE_API_HOST = re.compile(r"^[a-z0-9]+\.execute-api\.([a-z0-9-]+)\.amazonaws\.com$")

ACTION_STATES = {"cancel": "canceled", "retry": "ready", "archive": "archived", "restore": "ready"}
"""The state each action a person takes leads to: how a retried action whose first try landed is recognized."""


@dataclass
class ApiError(Exception):
    """The API answered with an error. `code` is the API's error code, e.g. `lease_lost`.

    `may_have_landed`: an earlier try of the same request may have been carried out, its answer lost (a connection
    reset, a timeout, a 5xx), so a 409 may be the request's own earlier success; the caller reconciles."""

    status: int
    code: str
    message: str
    may_have_landed: bool = False

    def __str__(self) -> str:
        return f"{self.status} {self.code}: {self.message}"


def region_of_api(api_url: str) -> str | None:
    """The region in an execute-api host name; None for another host (a custom domain, the local stack)."""
    matched = EXECUTE_API_HOST.match(urlsplit(api_url).hostname or "")
    return matched.group(1) if matched else None


def signing_region(api_url: str, region: str | None, *, environ: Mapping[str, str], session: boto3.Session) -> str:
    """The region requests to the API are signed for: the one given, else the execute-api host's (an API is called in
    its own region), else AWS_REGION, the session's (AWS_DEFAULT_REGION, the profile's), else us-east-1."""
    return region or region_of_api(api_url) or environ.get("AWS_REGION") or session.region_name or DEFAULT_REGION


def moved_by(workset: Mapping[str, Any], state: str, actor: str) -> bool:
    """Whether the workset is in `state` by `actor`'s doing: its newest transition (the history's other entries, such
    as the scheduler's assignments, change no state) went to `state` and was made by `actor`."""
    history = workset.get("history") or []
    transitions = [entry for entry in history if isinstance(entry, dict) and entry.get("event") == "transition"]
    newest = transitions[-1] if transitions else {}
    return workset.get("state") == state and newest.get("to_state") == state and newest.get("actor") == actor


class SignedWithSigV4(requests.auth.AuthBase):
    """Signs each request, exactly as it is sent, with SigV4 for API Gateway (service `execute-api`), from the
    session's credentials (the standard AWS chain); sends it unsigned when there are none."""

    def __init__(self, session: boto3.Session, region: str) -> None:
        self.session = session
        self.region = region

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        credentials = self.session.get_credentials()
        if credentials is None:
            return request

        body = request.body.encode() if isinstance(request.body, str) else request.body
        content_type = request.headers.get("Content-Type")
        unsigned = AWSRequest(
            method=request.method,
            url=request.url,
            data=body or b"",
            headers={"Content-Type": content_type} if content_type else {},
        )
        SigV4Auth(credentials.get_frozen_credentials(), "execute-api", self.region).add_auth(unsigned)
        request.headers.update(dict(unsigned.headers.items()))
        return request


class ApiClient:
    """Calls the API; retries throttling, server errors and connection failures with exponential backoff.

    A retried request may have been carried out by an earlier try whose answer was lost: every call here is safe to
    repeat (GETs, heartbeats, registrations) or reconciles a 409 that follows such a try (`act`; the agent does the
    same for claims, state changes and giving a lease back), using `ApiError.may_have_landed`."""

    def __init__(
        self,
        base_url: str,
        *,
        region: str | None = None,
        session: boto3.Session | None = None,
        timeout: float = 10.0,
        retries: int = 4,
        backoff_seconds: float = 0.5,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = session or boto3.Session()
        self.region = region or self.session.region_name or DEFAULT_REGION
        self.timeout = timeout
        self.retries = retries
        self.backoff_seconds = backoff_seconds
        self.signer = SignedWithSigV4(self.session, self.region)
        self._local = threading.local()

    @property
    def http(self) -> requests.Session:
        """This thread's HTTP session: the agent calls the API from one thread per run, and a requests session is
        not meant to be shared between threads."""
        http: requests.Session | None = getattr(self._local, "http", None)
        if http is None:
            http = requests.Session()
            self._local.http = http
        return http

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        params: dict[str, str] | None = None,
        *,
        retries: int | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Send one request and return its JSON answer (None for 204). `path` is percent-encoded, and sent exactly
        as given. `retries` and `timeout` override the client's for this request."""
        retries = self.retries if retries is None else retries
        may_have_landed = False
        for attempt in range(retries + 1):
            try:
                response = self._send(method, path, body, params, timeout or self.timeout)
            except (requests.ConnectionError, requests.Timeout) as exc:
                if attempt == retries:
                    raise
                # NOTE: a refused connection also counts as "may have landed": requests does not always tell it
                # apart from one reset after the request went out, and a needless reconciliation costs one GET.
                may_have_landed = may_have_landed or not isinstance(exc, requests.ConnectTimeout)
            else:
                if response.status_code not in RETRIED_STATUSES or attempt == retries:
                    return _answer(response, may_have_landed=may_have_landed)
                may_have_landed = may_have_landed or response.status_code != 429
            time.sleep(self.backoff_seconds * 2**attempt)
        raise AssertionError("unreachable")

    def _send(
        self, method: str, path: str, body: Any, params: dict[str, str] | None, timeout: float
    ) -> requests.Response:
        """Prepare the request, put its exact URL back, sign it and send it.

        requests re-quotes a URL as it prepares it, and decodes percent-encoded letters and digits on the way
        (`/worksets/%6Eext` would go out as `/worksets/next`, another route); so the URL is set again after the
        preparation, and only then signed, so that the signature covers the path exactly as sent."""
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if data is not None else {}
        prepared = self.http.prepare_request(requests.Request(method, self.base_url, data=data, headers=headers))
        # SigV4 wants a space as %20: requests would write "+", which API Gateway's canonical query never matches.
        query = urlencode(params or {}, quote_via=quote)
        prepared.url = requote_uri(self.base_url) + path + (f"?{query}" if query else "")

        self.signer(prepared)
        settings = self.http.merge_environment_settings(prepared.url, {}, None, None, None)
        return self.http.send(prepared, timeout=timeout, **settings)

    # --- the calls the agent and the CLI make ----------------------------------------------------------------------

    def register_cluster(self, cluster: dict[str, Any]) -> dict[str, Any]:
        """Register the cluster, active (again): its agent does this once, at start."""
        answer: dict[str, Any] = self.request("POST", "/clusters", cluster)
        return answer

    def cluster_heartbeat(
        self, name: str, status: str | None = None, *, retries: int | None = None, timeout: float | None = None
    ) -> dict[str, Any]:
        """Keep the cluster live; the answer is the cluster, with the status an operator may have set (`draining`).
        Without `status` the cluster's status is left as it is."""
        body = {"status": status} if status is not None else None
        answer: dict[str, Any] = self.request(
            "POST", f"/clusters/{_segment(name)}/heartbeat", body, retries=retries, timeout=timeout
        )
        return answer

    def next_workset(self, cluster: str) -> dict[str, Any] | None:
        answer: dict[str, Any] | None = self.request("GET", "/worksets/next", params={"cluster": cluster})
        return answer

    def get_workset(self, workset_id: str) -> dict[str, Any]:
        answer: dict[str, Any] = self.request("GET", _workset_path(workset_id))
        return answer

    def find_workset(self, workset_id: str) -> dict[str, Any] | None:
        """The workset, or None while it is not registered (404)."""
        try:
            return self.get_workset(workset_id)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def claim(self, workset_id: str, owner: str, cluster: str) -> dict[str, Any]:
        """Take the workset's lease. Limitations: a 409 after a retry may be this claim's own earlier success; the
        agent reconciles it (the lease's owner is its own)."""
        answer: dict[str, Any] = self.request(
            "POST", _workset_path(workset_id, "lock"), {"owner": owner, "cluster": cluster}
        )
        return answer

    def release(self, workset_id: str, lease_token: int, *, actor: str, reason: str) -> dict[str, Any]:
        """Give the lease back before the run started: the workset is `ready` again, in the same attempt."""
        answer: dict[str, Any] = self.request(
            "DELETE",
            _workset_path(workset_id, "lock"),
            {"lease_token": lease_token, "actor": actor, "reason": reason},
        )
        return answer

    def heartbeat(self, workset_id: str, lease_token: int, progress: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"lease_token": lease_token}
        if progress:
            body["progress"] = progress
        answer: dict[str, Any] = self.request("POST", _workset_path(workset_id, "heartbeat"), body)
        return answer

    def change_state(self, workset_id: str, state: str, **fields: Any) -> dict[str, Any]:
        answer: dict[str, Any] = self.request("PUT", _workset_path(workset_id, "state"), {"state": state, **fields})
        return answer

    def list_worksets(
        self, *, limit: int | None = None, next_token: str | None = None, **filters: str | None
    ) -> dict[str, Any]:
        """One page of worksets: `{"worksets": [...], "next_token": ...}`; `filters` are state, priority, cluster."""
        params = _params({**filters, "limit": limit, "next_token": next_token})
        answer: dict[str, Any] = self.request("GET", "/worksets", params=params)
        return answer

    def workset_history(
        self, workset_id: str, *, limit: int | None = None, next_token: str | None = None
    ) -> dict[str, Any]:
        """One page of a workset's history, oldest first: `{"history": [...], "next_token": ...}`."""
        params = _params({"limit": limit, "next_token": next_token})
        answer: dict[str, Any] = self.request("GET", _workset_path(workset_id, "history"), params=params)
        return answer

    def act(self, workset_id: str, action: str, *, actor: str, reason: str = "") -> dict[str, Any]:
        """Ask for a lifecycle action a person takes: cancel, retry, archive or restore. The answer is the workset.

        A 409 that follows a try whose answer was lost is this action's own success when the workset's newest
        transition is the action's, by `actor`: the workset is answered then, as if the first answer had come."""
        try:
            answer: dict[str, Any] = self.request(
                "POST", _workset_path(workset_id, action), {"actor": actor, "reason": reason}
            )
        except ApiError as exc:
            if exc.status != 409 or not exc.may_have_landed or action not in ACTION_STATES:
                raise
            workset = self.get_workset(workset_id)
            if not moved_by(workset, ACTION_STATES[action], actor):
                raise
            return workset
        return answer

    def queue_stats(self) -> dict[str, Any]:
        answer: dict[str, Any] = self.request("GET", "/queue/stats")
        return answer

    def scheduler_stats(self) -> dict[str, Any]:
        answer: dict[str, Any] = self.request("GET", "/scheduler/stats")
        return answer

    def list_clusters(self) -> dict[str, Any]:
        answer: dict[str, Any] = self.request("GET", "/clusters")
        return answer

    def get_cluster(self, name: str) -> dict[str, Any]:
        answer: dict[str, Any] = self.request("GET", f"/clusters/{_segment(name)}")
        return answer


def _segment(value: str) -> str:
    """A value as one path segment: spaces, slashes and non-ASCII letters percent-encoded."""
    return quote(value, safe="")


def _workset_path(workset_id: str, action: str = "") -> str:
    """`/worksets/<id>` (and `/<action>`), the id as one segment. The id `next` is written `%6Eext`: `/worksets/next`
    is a route of its own, and API Gateway matches routes on the path as sent, then decodes the id."""
    segment = _segment(workset_id)
    if segment == "next":
        segment = "%6Eext"
    return f"/worksets/{segment}" + (f"/{action}" if action else "")


def _params(values: dict[str, Any]) -> dict[str, str]:
    """Query parameters: the given ones, as strings."""
    return {name: str(value) for name, value in values.items() if value is not None}


def _answer(response: requests.Response, *, may_have_landed: bool = False) -> Any:
    if response.status_code == 204:
        return None
    try:
        payload = response.json()
    except ValueError:
        payload = {}
    if response.ok:
        return payload

    error = payload.get("error", {}) if isinstance(payload, dict) else {}
    message = error.get("message") or (payload.get("message") if isinstance(payload, dict) else None)
    raise ApiError(
        response.status_code, error.get("code", "http_error"), message or response.text[:500], may_have_landed
    )
