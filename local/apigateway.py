"""API Gateway (REST API, Lambda proxy integration) in front of the functions' `Api` events, over plain HTTP.

Each request becomes the proxy event API Gateway would send (version 1.0: `resource`, `path`, `httpMethod`, single
and multi-value headers and query parameters, `pathParameters`, `requestContext`, `body`, `isBase64Encoded`), routed
by the template's `Path` and `Method`; the handler's response is written back. The path stays percent-encoded, as
API Gateway passes it, and query parameters are decoded, as API Gateway does.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from local.observability import logger
from local.runtime import FunctionRunner

MISSING_TOKEN = {"message": "Missing Authentication Token"}
INTERNAL_ERROR = {"message": "Internal server error"}
IMPLICIT_API_STAGE = "Prod"


@dataclass(frozen=True)
class ApiRoute:
    """One `Api` event: a resource path (with `{name}` and `{proxy+}` parts) and a method, served by a function."""

    runner: FunctionRunner
    resource: str
    method: str
    stage: str
    api_id: str
    pattern: re.Pattern[str]
    parameters: tuple[str, ...]
    static_parts: int
    greedy: bool

    @classmethod
    def build(cls, runner: FunctionRunner, *, resource: str, method: str, stage: str, api_id: str) -> ApiRoute:
        parts = [part for part in resource.split("/") if part]
        regex, parameters = "", []
        for part in parts:
            if part.startswith("{") and part.endswith("+}"):
                regex += "/(.+)"
                parameters.append(part[1:-2])
            elif part.startswith("{") and part.endswith("}"):
                regex += "/([^/]+)"
                parameters.append(part[1:-1])
            else:
                regex += "/" + re.escape(part)
        return cls(
            runner=runner,
            resource=resource,
            method=method.upper(),
            stage=stage,
            api_id=api_id,
            pattern=re.compile(f"^{regex or '/'}$"),
            parameters=tuple(parameters),
            static_parts=sum(1 for part in parts if not part.startswith("{")),
            greedy=resource.endswith("+}"),
        )

    @property
    def precedence(self) -> tuple[bool, int, bool]:
        """Sort key, most specific first: literal paths before parameters before `{proxy+}`, a method before ANY."""
        return (self.greedy, -self.static_parts, self.method == "ANY")


def match_route(routes: Sequence[ApiRoute], method: str, path: str) -> tuple[ApiRoute, dict[str, str]] | None:
    """The route API Gateway would pick for `method` and the raw `path`, with its path parameters (still encoded)."""
    for route in sorted(routes, key=lambda route: route.precedence):
        if route.method not in (method.upper(), "ANY"):
            continue
        found = route.pattern.match(path)
        if found is not None:
            return route, dict(zip(route.parameters, found.groups(), strict=True))
    return None


def proxy_event(
    route: ApiRoute,
    path_parameters: Mapping[str, str],
    *,
    method: str,
    target: str,
    headers: Sequence[tuple[str, str]],
    body: bytes,
    source_ip: str,
    account_id: str,
) -> dict[str, Any]:
    """The REST API proxy event (payload 1.0) API Gateway sends for this request."""
    parts = urlsplit(target)
    path = parts.path or "/"
    query = parse_qsl(parts.query, keep_blank_values=True)
    now = datetime.now(UTC)

    multi_headers: dict[str, list[str]] = {}
    for name, value in headers:
        multi_headers.setdefault(name, []).append(value)
    multi_query: dict[str, list[str]] = {}
    for name, value in query:
        multi_query.setdefault(name, []).append(value)
    text, is_base64 = _body_text(body)
    header_value = {name.lower(): values[-1] for name, values in multi_headers.items()}

    return {
        "resource": route.resource,
        "path": path,
        "httpMethod": method,
        "headers": {name: values[-1] for name, values in multi_headers.items()} or None,
        "multiValueHeaders": multi_headers or None,
        "queryStringParameters": {name: values[-1] for name, values in multi_query.items()} or None,
        "multiValueQueryStringParameters": multi_query or None,
        "pathParameters": dict(path_parameters) or None,
        "stageVariables": None,
        "requestContext": {
            "resourceId": uuid.uuid4().hex[:6],
            "resourcePath": route.resource,
            "httpMethod": method,
            "extendedRequestId": uuid.uuid4().hex[:16],
            "requestTime": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "path": f"/{route.stage}{path}",
            "accountId": account_id,
            "protocol": "HTTP/1.1",
            "stage": route.stage,
            "domainPrefix": route.api_id,
            "requestTimeEpoch": int(now.timestamp() * 1000),
            "requestId": str(uuid.uuid4()),
            "identity": _identity(header_value, source_ip),
            "domainName": header_value.get("host", ""),
            "apiId": route.api_id,
        },
        "body": text,
        "isBase64Encoded": is_base64,
    }


def _body_text(body: bytes) -> tuple[str | None, bool]:
    if not body:
        return None, False
    try:
        return body.decode("utf-8"), False
    except UnicodeDecodeError:
        return base64.b64encode(body).decode("ascii"), True


def _identity(headers: Mapping[str, str], source_ip: str) -> dict[str, Any]:
    # NOTE: deployed, AWS_IAM verifies the SigV4 signature; locally nothing is verified, the key id is only read.
    credential = re.search(r"Credential=([^/,\s]+)/", headers.get("authorization", ""))
    return {
        "cognitoIdentityPoolId": None,
        "accountId": None,
        "cognitoIdentityId": None,
        "caller": None,
        "sourceIp": source_ip,
        "principalOrgId": None,
        "accessKey": credential.group(1) if credential else None,
        "cognitoAuthenticationType": None,
        "cognitoAuthenticationProvider": None,
        "userArn": None,
        "userAgent": headers.get("user-agent"),
        "user": None,
    }


class ApiServer:
    """An HTTP server on `host`:`port` (0 picks a free port) that serves the routes through their functions.

    Limitations:
        plain HTTP/1.0 (one request per connection); a chunked request body is not read; no authorizer runs.
    """

    def __init__(self, routes: Sequence[ApiRoute], *, host: str, port: int, account_id: str) -> None:
        self.routes = list(routes)
        self.account_id = account_id
        self._server = _Server((host, port), _RequestHandler)
        self._server.api = self
        self._thread = threading.Thread(target=self._server.serve_forever, name="local-api", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> None:
        self._thread.start()
        logger.info("api serving", url=self.url, routes=[f"{route.method} {route.resource}" for route in self.routes])

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    api: ApiServer


class _RequestHandler(BaseHTTPRequestHandler):
    server: _Server

    def serve(self) -> None:
        """Every method is served the same way: routed, turned into a proxy event, answered by the function."""
        api = self.server.api
        path = urlsplit(self.path).path or "/"
        matched = match_route(api.routes, self.command, path)
        if matched is None:
            self._write(403, [("Content-Type", "application/json")], json.dumps(MISSING_TOKEN).encode())
            return

        route, parameters = matched
        length = int(self.headers.get("Content-Length") or 0)
        event = proxy_event(
            route,
            parameters,
            method=self.command,
            target=self.path,
            headers=list(self.headers.items()),
            body=self.rfile.read(length) if length else b"",
            source_ip=self.client_address[0],
            account_id=api.account_id,
        )
        invocation = route.runner.invoke(event, trigger=f"api {self.command} {route.resource}")
        status, headers, body = _http_response(invocation.result if invocation.ok else None)
        headers.append(("x-amzn-RequestId", event["requestContext"]["requestId"]))
        self._write(status, headers, body)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = serve

    def _write(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.send_response(status)
        if not any(name.lower() == "content-type" for name, _ in headers):
            headers.append(("Content-Type", "application/json"))
        for name, value in headers:
            if name.lower() not in ("content-length", "connection", "transfer-encoding"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Requests are logged as invocations by the runner; the base class would print each to stderr."""


def _http_response(result: Any) -> tuple[int, list[tuple[str, str]], bytes]:
    """Status, headers and body from a proxy response; a malformed one (or an error) is API Gateway's 502."""
    if not isinstance(result, Mapping) or "statusCode" not in result:
        return 502, [("Content-Type", "application/json")], json.dumps(INTERNAL_ERROR).encode()

    multi: Mapping[str, Sequence[Any]] = result.get("multiValueHeaders") or {}
    single: Mapping[str, Any] = result.get("headers") or {}
    headers = [(name, str(value)) for name, values in multi.items() for value in values]
    headers += [(name, str(value)) for name, value in single.items() if name not in multi]

    body = result.get("body") or ""
    data = base64.b64decode(body) if result.get("isBase64Encoded") else str(body).encode("utf-8")
    return int(result["statusCode"]), headers, data
