"""A small client of the workset monitor API, signing every request with SigV4 from the standard AWS credentials."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import boto3
import requests
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest

RETRIED_STATUSES = frozenset({429, 500, 502, 503, 504})


@dataclass
class ApiError(Exception):
    """The API answered with an error. `code` is the API's error code, e.g. `lease_lost`."""

    status: int
    code: str
    message: str

    def __str__(self) -> str:
        return f"{self.status} {self.code}: {self.message}"


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
    """Calls the API; retries throttling, server errors and connection failures with exponential backoff."""

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
        self.region = region or self.session.region_name or "us-east-1"
        self.timeout = timeout
        self.retries = retries
        self.backoff_seconds = backoff_seconds
        self._local = threading.local()

    @property
    def http(self) -> requests.Session:
        """This thread's HTTP session: the agent calls the API from one thread per run, and a requests session is
        not meant to be shared between threads."""
        http: requests.Session | None = getattr(self._local, "http", None)
        if http is None:
            http = requests.Session()
            http.auth = SignedWithSigV4(self.session, self.region)
            self._local.http = http
        return http

    def request(self, method: str, path: str, body: Any = None, params: dict[str, str] | None = None) -> Any:
        """Send one request and return its JSON answer (None for 204)."""
        for attempt in range(self.retries + 1):
            try:
                response = self._send(method, path, body, params)
            except (requests.ConnectionError, requests.Timeout):
                if attempt == self.retries:
                    raise
            else:
                if response.status_code not in RETRIED_STATUSES or attempt == self.retries:
                    return _answer(response)
            time.sleep(self.backoff_seconds * 2**attempt)
        raise AssertionError("unreachable")

    def _send(self, method: str, path: str, body: Any, params: dict[str, str] | None) -> requests.Response:
        url = self.base_url + path
        data = json.dumps(body).encode() if body is not None else None
        # SigV4 wants a space as %20: requests would write "+", which API Gateway's canonical query never matches.
        query = urlencode(params or {}, quote_via=quote)
        headers = {"Content-Type": "application/json"} if data is not None else {}
        return self.http.request(
            method, f"{url}?{query}" if query else url, data=data, headers=headers, timeout=self.timeout
        )

    # --- the calls the agent and the CLI make ----------------------------------------------------------------------

    def register_cluster(self, cluster: dict[str, Any]) -> dict[str, Any]:
        answer: dict[str, Any] = self.request("POST", "/clusters", cluster)
        return answer

    def next_workset(self, cluster: str) -> dict[str, Any] | None:
        answer: dict[str, Any] | None = self.request("GET", "/worksets/next", params={"cluster": cluster})
        return answer

    def get_workset(self, workset_id: str) -> dict[str, Any]:
        answer: dict[str, Any] = self.request("GET", f"/worksets/{_segment(workset_id)}")
        return answer

    def claim(self, workset_id: str, owner: str, cluster: str) -> dict[str, Any]:
        answer: dict[str, Any] = self.request(
            "POST", f"/worksets/{_segment(workset_id)}/lock", {"owner": owner, "cluster": cluster}
        )
        return answer

    def release(self, workset_id: str, lease_token: int, *, actor: str, reason: str) -> dict[str, Any]:
        """Give the lease back before the run started: the workset is `ready` again, in the same attempt."""
        answer: dict[str, Any] = self.request(
            "DELETE",
            f"/worksets/{_segment(workset_id)}/lock",
            {"lease_token": lease_token, "actor": actor, "reason": reason},
        )
        return answer

    def heartbeat(self, workset_id: str, lease_token: int, progress: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"lease_token": lease_token}
        if progress:
            body["progress"] = progress
        answer: dict[str, Any] = self.request("POST", f"/worksets/{_segment(workset_id)}/heartbeat", body)
        return answer

    def change_state(self, workset_id: str, state: str, **fields: Any) -> dict[str, Any]:
        answer: dict[str, Any] = self.request(
            "PUT", f"/worksets/{_segment(workset_id)}/state", {"state": state, **fields}
        )
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
        answer: dict[str, Any] = self.request("GET", f"/worksets/{_segment(workset_id)}/history", params=params)
        return answer

    def act(self, workset_id: str, action: str, *, actor: str, reason: str = "") -> dict[str, Any]:
        """Ask for a lifecycle action a person takes: cancel, retry, archive or restore. The answer is the workset."""
        answer: dict[str, Any] = self.request(
            "POST", f"/worksets/{_segment(workset_id)}/{action}", {"actor": actor, "reason": reason}
        )
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


def _segment(workset_id: str) -> str:
    """A workset id as one path segment: spaces, slashes and non-ASCII letters percent-encoded."""
    return quote(workset_id, safe="")


def _params(values: dict[str, Any]) -> dict[str, str]:
    """Query parameters: the given ones, as strings."""
    return {name: str(value) for name, value in values.items() if value is not None}


def _answer(response: requests.Response) -> Any:
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
    raise ApiError(response.status_code, error.get("code", "http_error"), message or response.text[:500])
