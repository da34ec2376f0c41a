"""The local API asks for SigV4 as API Gateway with `AWS_IAM` does, and answers as API Gateway does when it refuses.

One local stack serves the module, driving only the API's two functions with their real code: every route the
served OpenAPI document lists refuses an unsigned request and a wrongly signed one, but for the named exceptions, the
health check `GET /` and the web dashboard's static shell (its page and the files it loads, which carry no data),
while every data call the dashboard makes is refused unless signed; requests signed with the stack's keys reach the
functions, whatever the encoding of their path and query; API Gateway's own answers come in the API's error shape,
from the template's gateway responses.
"""

from __future__ import annotations

import http.client
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import boto3
import botocore.auth
import pytest

from agent.client import ApiClient, ApiError
from local.apigateway import (
    PAYLOAD_LIMIT_BYTES,
    GatewayError,
    GatewayRequest,
    GatewayResponse,
    gateway_answer,
    gateway_responses,
)
from local.emulator import ACCESS_KEY_ID, SECRET_ACCESS_KEY
from local.sigv4 import MISMATCH_MESSAGE, sign
from local.stack import LocalStack
from local.template import FUNCTION, Template
from tests.conftest import files_the_page_loads

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SAMPLE_ID = "a/b runé"
"""A workset id with a slash, a space and a non-ASCII letter: it travels as one percent-encoded path segment."""
SAMPLE_SEGMENT = quote(SAMPLE_ID, safe="")
HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options"}
HEALTH_CHECK = ("GET", "/")
DASHBOARD_DATA_CALLS = [
    "/queue/stats",
    "/scheduler/stats",
    "/clusters",
    "/worksets?limit=25",
    "/worksets?cluster=auth-c1&limit=25&priority=urgent&state=ready",
    f"/worksets/{SAMPLE_SEGMENT}",
    f"/worksets/{SAMPLE_SEGMENT}/history?limit=500",
]
"""The reads the dashboard's page makes (app.js): with the filters, for a workset's history and its earlier entries."""
ORIGIN = "https://portal.example.org"


@dataclass(frozen=True)
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def by_gateway(self) -> bool:
        """API Gateway answered by itself (its answers, unlike a function's, say their `x-amzn-ErrorType`)."""
        return "x-amzn-ErrorType" in self.headers


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    """The local stack with the API's functions only (their real code); their table exists, nothing else runs. One
    browser origin is allowed (CORS)."""
    with LocalStack(
        emulator_port=0,
        api_port=0,
        functions={"ApiReadFunction", "ApiWriteFunction"},
        parameters={"AllowedOrigins": ORIGIN},
    ) as running:
        yield running


@pytest.fixture(scope="module")
def client(stack: LocalStack) -> ApiClient:
    """The agent's and the CLI's client, with the local stack's keys."""
    assert stack.api_url is not None
    session = boto3.Session(
        aws_access_key_id=ACCESS_KEY_ID, aws_secret_access_key=SECRET_ACCESS_KEY, region_name=stack.region
    )
    return ApiClient(stack.api_url, session=session, retries=0)


@pytest.fixture
def signed_at(monkeypatch: pytest.MonkeyPatch) -> Callable[[datetime], None]:
    """Make botocore sign as if it were another time."""

    def travel(moment: datetime) -> None:
        monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: moment.astimezone(UTC).replace(tzinfo=None))

    return travel


def send(
    stack: LocalStack, method: str, target: str, *, body: bytes = b"", headers: dict[str, str] | None = None
) -> Answer:
    """Send `target` exactly as written (no client re-encodes it)."""
    assert stack.api_url is not None
    address = urlsplit(stack.api_url)
    connection = http.client.HTTPConnection(address.hostname or "", address.port, timeout=30)
    try:
        connection.request(method, target, body=body or None, headers=headers or {})
        response = connection.getresponse()
        return Answer(response.status, response.headers, response.read())
    finally:
        connection.close()


def signature(
    stack: LocalStack,
    method: str,
    target: str,
    *,
    body: bytes = b"",
    secret: str = SECRET_ACCESS_KEY,
    key: str = ACCESS_KEY_ID,
    token: str | None = None,
) -> dict[str, str]:
    """The headers that sign `method target` (with a JSON `body`) as botocore signs it."""
    headers = {"Content-Type": "application/json"} if body else {}
    return sign(
        method,
        f"{stack.api_url}{target}",
        body=body,
        headers=headers,
        access_key_id=key,
        secret_access_key=secret,
        region=stack.region,
        session_token=token,
    )


def send_signed(stack: LocalStack, method: str, target: str, *, body: bytes = b"", **signing: Any) -> Answer:
    return send(stack, method, target, body=body, headers=signature(stack, method, target, body=body, **signing))


def assert_refused(answer: Answer, status: int, code: str, error_type: str, message: str | None = None) -> None:
    """API Gateway's own answer, in the API's error shape: `{"error": {"code", "message", "request_id"}}`."""
    assert answer.status == status, answer.body
    assert answer.headers["x-amzn-ErrorType"] == error_type
    assert answer.headers["Content-Type"] == "application/json"
    error = answer.json()["error"]
    assert error["code"] == code
    assert error["request_id"] == answer.headers["x-amzn-RequestId"]
    if message is not None:
        assert error["message"] == message


# --- every route asks for a signature, as the served document lists them ---------------------------------------------


@pytest.fixture(scope="module")
def shell_routes(stack: LocalStack) -> list[tuple[str, str]]:
    """The dashboard's static shell: its page and every file the page loads (read unsigned, as a browser does)."""
    page = send(stack, "GET", "/dashboard")
    assert page.status == 200, page.body[:300]

    def script(name: str) -> str:
        return send(stack, "GET", f"/dashboard/{name}").body.decode()

    names = files_the_page_loads(page.body.decode(), script)
    return [("GET", "/dashboard"), *(("GET", f"/dashboard/{name}") for name in sorted(names))]


@pytest.fixture(scope="module")
def routes(stack: LocalStack, shell_routes: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Every route of the OpenAPI document the API serves (read signed), with sample values for path parameters,
    `GET /openapi.json` itself, and the dashboard's shell (which the document leaves out, as it leaves itself)."""
    answer = send_signed(stack, "GET", "/openapi.json")
    assert answer.status == 200, f"GET /openapi.json answered {answer.status}: {answer.body[:300]!r}"
    document = answer.json()

    listed = [
        (method.upper(), re.sub(r"\{[^}/]+\}", SAMPLE_SEGMENT, path))
        for path, item in document["paths"].items()
        for method in item
        if method in HTTP_METHODS
    ]
    return [*listed, ("GET", "/openapi.json"), *shell_routes]


@pytest.fixture(scope="module")
def open_routes(shell_routes: list[tuple[str, str]]) -> set[tuple[str, str]]:
    """The named exceptions: the health check, and the dashboard's shell, which carries no data."""
    return {HEALTH_CHECK, *shell_routes}


def test_the_served_document_lists_the_routes(routes: list[tuple[str, str]]) -> None:
    assert ("GET", "/") in routes
    assert ("GET", f"/worksets/{SAMPLE_SEGMENT}") in routes
    assert ("POST", "/clusters") in routes


def test_the_dashboards_shell_is_its_page_scripts_style_sheet_and_icon(shell_routes: list[tuple[str, str]]) -> None:
    assert [path for _, path in shell_routes] == [
        "/dashboard",
        "/dashboard/api.js",
        "/dashboard/app.js",
        "/dashboard/aws4fetch.esm.js",
        "/dashboard/dom.js",
        "/dashboard/icon.svg",
        "/dashboard/style.css",
        "/dashboard/views.js",
    ]


def test_the_template_opens_only_the_health_check_the_preflight_and_the_dashboards_shell() -> None:
    template = Template.load(ROOT / "template.yaml", parameters={"Stage": "test"})

    opened = {
        (str(event["Properties"]["Method"]).upper(), str(event["Properties"]["Path"]))
        for resource in template.resources(FUNCTION).values()
        for event in resource["Properties"].get("Events", {}).values()
        if event["Type"] == "Api" and event["Properties"].get("Auth", {}).get("Authorizer") == "NONE"
    }

    assert opened == {("GET", "/"), ("OPTIONS", "/{proxy+}"), ("GET", "/dashboard"), ("GET", "/dashboard/{asset}")}


def test_every_route_but_the_named_exceptions_refuses_an_unsigned_request(
    stack: LocalStack, routes: list[tuple[str, str]], open_routes: set[tuple[str, str]]
) -> None:
    for method, path in routes:
        answer = send(stack, method, path, body=b"{}" if method in ("POST", "PUT") else b"")

        if (method, path) in open_routes:
            assert (answer.status, answer.by_gateway) == (200, False), path
        else:
            assert_refused(
                answer,
                403,
                "MISSING_AUTHENTICATION_TOKEN",
                "MissingAuthenticationTokenException",
                "Missing Authentication Token",
            )


def test_every_route_but_the_named_exceptions_refuses_a_wrong_secret(
    stack: LocalStack, routes: list[tuple[str, str]], open_routes: set[tuple[str, str]]
) -> None:
    for method, path in routes:
        body = b"{}" if method in ("POST", "PUT") else b""

        answer = send_signed(stack, method, path, body=body, secret="not-the-secret")

        if (method, path) in open_routes:
            assert (answer.status, answer.by_gateway) == (200, False), path  # open: nothing is verified
        else:
            assert_refused(answer, 403, "INVALID_SIGNATURE", "InvalidSignatureException", MISMATCH_MESSAGE)


def test_the_dashboards_shell_comes_with_its_security_headers(
    stack: LocalStack, shell_routes: list[tuple[str, str]]
) -> None:
    for method, path in shell_routes:
        answer = send(stack, method, path)

        assert "frame-ancestors 'none'" in answer.headers["Content-Security-Policy"], path
        assert answer.headers["X-Content-Type-Options"] == "nosniff"
        assert answer.headers["Referrer-Policy"] == "no-referrer"


@pytest.mark.parametrize("target", DASHBOARD_DATA_CALLS)
def test_the_dashboards_data_calls_are_refused_unless_signed(stack: LocalStack, target: str) -> None:
    # GIVEN a read the dashboard's page makes
    # WHEN it comes unsigned, wrongly signed, and signed with the stack's keys
    unsigned = send(stack, "GET", target)
    wrongly_signed = send_signed(stack, "GET", target, secret="not-the-secret")
    signed = send_signed(stack, "GET", target)

    # THEN only the signed one reaches the read function (a 404 for the sample workset, which does not exist)
    assert_refused(unsigned, 403, "MISSING_AUTHENTICATION_TOKEN", "MissingAuthenticationTokenException")
    assert_refused(wrongly_signed, 403, "INVALID_SIGNATURE", "InvalidSignatureException", MISMATCH_MESSAGE)
    assert not signed.by_gateway
    assert signed.status in (200, 404)


@pytest.mark.parametrize(
    ("target", "status", "by_gateway"),
    [
        ("/dashboard/..%2Fqueue%2Fstats", 404, False),  # one segment: the shell's route, which knows no such file
        ("/dashboard/../queue/stats", 403, True),  # several segments: the signed {proxy+} route
        ("/dashboard/", 403, True),
        ("/dashboard/app.js/x", 403, True),
    ],
)
def test_under_the_shells_routes_an_unsigned_request_gets_nothing_else(
    stack: LocalStack, target: str, status: int, by_gateway: bool
) -> None:
    answer = send(stack, "GET", target)

    assert (answer.status, answer.by_gateway) == (status, by_gateway)
    assert b"by_state" not in answer.body


# --- signed requests reach the functions -------------------------------------------------------------------------


def test_the_agents_client_is_let_through(client: ApiClient) -> None:
    # GIVEN the client the agent and the CLI use, with the local stack's keys
    # WHEN it writes, reads, and asks with a query (a space in it) and for an id that needs encoding
    registered = client.register_cluster({"name": "auth-c1", "max_worksets": 1})
    listed = client.request("GET", "/clusters")
    nothing_next = client.next_workset("auth cluster with spaces")
    with pytest.raises(ApiError) as missing:
        client.get_workset(SAMPLE_ID)

    # THEN every request reached its function: answers of the API, not of API Gateway
    assert registered["name"] == "auth-c1"
    assert "auth-c1" in json.dumps(listed)
    assert nothing_next is None
    assert missing.value.status == 404
    assert SAMPLE_ID in missing.value.message


@pytest.mark.parametrize(
    "target",
    [
        f"/worksets/{SAMPLE_SEGMENT}",
        f"/worksets/{SAMPLE_SEGMENT}/history?limit=5",
        "/worksets/%6Eext",  # how the README reaches a workset named "next"
    ],
)
def test_an_encoded_path_and_a_query_signed_as_sent_pass(stack: LocalStack, target: str) -> None:
    answer = send_signed(stack, "GET", target)

    assert not answer.by_gateway
    assert answer.status == 404  # no such workset: the function answered


def test_a_query_reaches_the_function_as_signed(stack: LocalStack) -> None:
    answer = send_signed(stack, "GET", "/worksets?state=ready&limit=2")

    assert (answer.status, answer.by_gateway) == (200, False)
    assert "worksets" in answer.json()


def test_a_session_token_is_accepted(stack: LocalStack) -> None:
    answer = send_signed(stack, "GET", "/queue/stats", token="a-session-token")

    assert (answer.status, answer.by_gateway) == (200, False)


@pytest.mark.parametrize(
    ("target", "method", "allowed"),
    [
        ("/worksets", "GET", "GET,OPTIONS,POST"),
        ("/worksets/w1/cancel", "POST", "OPTIONS,POST"),
        ("/worksets/w1/state", "PUT", "OPTIONS,PUT"),
        ("/worksets/w1/lock", "DELETE", "DELETE,OPTIONS,POST"),
    ],
)
def test_a_preflight_without_credentials_reaches_the_function(
    stack: LocalStack, target: str, method: str, allowed: str
) -> None:
    headers = {"Origin": ORIGIN, "Access-Control-Request-Method": method}

    answer = send(stack, "OPTIONS", target, headers=headers)

    assert not answer.by_gateway, answer.body
    assert answer.headers["x-amzn-RequestId"]
    assert (answer.status, answer.headers["Access-Control-Allow-Methods"]) == (204, allowed)
    assert answer.headers["Access-Control-Allow-Origin"] == ORIGIN


# --- signed wrongly, or too late ---------------------------------------------------------------------------------


def test_a_tampered_body_is_refused(stack: LocalStack) -> None:
    headers = signature(stack, "POST", "/clusters", body=b'{"name": "auth-c2"}')

    answer = send(stack, "POST", "/clusters", body=b'{"name": "auth-c3"}', headers=headers)

    assert_refused(answer, 403, "INVALID_SIGNATURE", "InvalidSignatureException", MISMATCH_MESSAGE)


@pytest.mark.parametrize(
    ("signed_for", "sent_to"),
    [
        ("/worksets/ws-a", "/worksets/ws-b"),
        (f"/worksets/{SAMPLE_SEGMENT}", f"/worksets/{quote(SAMPLE_ID, safe='/')}"),  # the slash decoded
        ("/worksets?state=ready", "/worksets?state=error"),
    ],
    ids=["path", "encoding of the path", "query"],
)
def test_a_tampered_target_is_refused(stack: LocalStack, signed_for: str, sent_to: str) -> None:
    answer = send(stack, "GET", sent_to, headers=signature(stack, "GET", signed_for))

    assert_refused(answer, 403, "INVALID_SIGNATURE", "InvalidSignatureException", MISMATCH_MESSAGE)


def test_a_request_replayed_after_fifteen_minutes_is_refused(
    stack: LocalStack, signed_at: Callable[[datetime], None]
) -> None:
    # GIVEN a request signed 15 minutes ago (API Gateway allows 5)
    signed_at(datetime.now(UTC) - timedelta(minutes=15))
    headers = signature(stack, "GET", "/queue/stats")

    answer = send(stack, "GET", "/queue/stats", headers=headers)

    assert_refused(answer, 403, "INVALID_SIGNATURE", "InvalidSignatureException")
    assert answer.json()["error"]["message"].startswith(
        f"Signature expired: {headers['X-Amz-Date']} is now earlier than"
    )


def test_a_request_signed_a_minute_ago_passes(stack: LocalStack, signed_at: Callable[[datetime], None]) -> None:
    signed_at(datetime.now(UTC) - timedelta(minutes=1))

    answer = send_signed(stack, "GET", "/queue/stats")

    assert (answer.status, answer.by_gateway) == (200, False)


def test_an_unknown_access_key_is_refused(stack: LocalStack) -> None:
    answer = send_signed(stack, "GET", "/queue/stats", key="AKIAUNKNOWNKEY", secret="whatever")

    assert_refused(
        answer,
        403,
        "DEFAULT_4XX",
        "UnrecognizedClientException",
        "The security token included in the request is invalid.",
    )


def test_an_unknown_route_is_a_missing_token_even_signed(stack: LocalStack) -> None:
    answer = send_signed(stack, "PATCH", "/worksets")

    assert_refused(answer, 403, "MISSING_AUTHENTICATION_TOKEN", "MissingAuthenticationTokenException")


def test_a_body_over_ten_megabytes_is_too_large(stack: LocalStack) -> None:
    # GIVEN two unsigned requests: one at API Gateway's payload limit, one a byte over it
    at_limit = send(stack, "POST", "/clusters", body=b" " * PAYLOAD_LIMIT_BYTES)
    over = send(stack, "POST", "/clusters", body=b" " * (PAYLOAD_LIMIT_BYTES + 1))

    # THEN the size is checked first: the one at the limit goes on to be refused for its missing signature
    assert_refused(at_limit, 403, "MISSING_AUTHENTICATION_TOKEN", "MissingAuthenticationTokenException")
    assert_refused(over, 413, "REQUEST_TOO_LARGE", "BadRequestException", "Request Too Long")


# --- gateway responses, as the template declares them --------------------------------------------------------------


def _gateway_request(**overrides: Any) -> GatewayRequest:
    fields: dict[str, Any] = {
        "request_id": "req-1",
        "extended_request_id": "ext-1",
        "api_id": "api1",
        "stage": "dev",
        "method": "GET",
        "path": "/worksets",
        "source_ip": "127.0.0.1",
        "account_id": "123456789012",
        "headers": {"origin": "https://portal.example.org"},
        "query": {},
    }
    return GatewayRequest(**{**fields, **overrides})


def test_the_templates_gateway_responses_are_read() -> None:
    template = Template.load(ROOT / "template.yaml", parameters={"Stage": "test"})

    responses = {response.response_type: response for response in gateway_responses(template)}

    api_id = template.physical("WorksetApi").ref
    assert {"DEFAULT_4XX", "DEFAULT_5XX"} <= set(responses)
    assert responses["DEFAULT_4XX"].api_id == api_id
    assert "$context.error.messageString" in responses["DEFAULT_4XX"].templates["application/json"]


TEMPLATE = (
    '{"code": "$context.error.responseType", "message": $context.error.messageString, "id": "${context.requestId}"}'
)
"""A gateway response template in the template's style, with both spellings of a variable."""


def test_a_template_renders_the_error_its_type_and_the_request_id() -> None:
    responses = [
        GatewayResponse(
            api_id="api1",
            response_type="DEFAULT_4XX",
            status=None,
            templates={"application/json": TEMPLATE},
        )
    ]
    error = GatewayError("INVALID_SIGNATURE", 403, "InvalidSignatureException", 'a "quoted" message')

    status, headers, body = gateway_answer(error, responses, _gateway_request())

    assert status == 403
    assert json.loads(body) == {"code": "INVALID_SIGNATURE", "message": 'a "quoted" message', "id": "req-1"}
    assert ("x-amzn-ErrorType", "InvalidSignatureException") in headers


def test_a_specific_response_type_beats_the_default_and_sets_the_status() -> None:
    responses = [
        GatewayResponse("api1", "DEFAULT_4XX", None, {"application/json": '{"default": true}'}),
        GatewayResponse(
            "api1",
            "MISSING_AUTHENTICATION_TOKEN",
            404,
            {"application/json": '{"specific": "$context.error.message"}'},
            {"Access-Control-Allow-Origin": "method.request.header.Origin", "X-Fixed": "'yes'"},
        ),
        GatewayResponse("another-api", "MISSING_AUTHENTICATION_TOKEN", 400, {"application/json": "{}"}),
    ]
    missing = GatewayError("MISSING_AUTHENTICATION_TOKEN", 403, "MissingAuthenticationTokenException", "Missing")
    invalid = GatewayError("INVALID_SIGNATURE", 403, "InvalidSignatureException", "Invalid")

    missing_status, missing_headers, missing_body = gateway_answer(missing, responses, _gateway_request())
    invalid_status, _, invalid_body = gateway_answer(invalid, responses, _gateway_request())

    assert (missing_status, json.loads(missing_body)) == (404, {"specific": "Missing"})
    assert ("Access-Control-Allow-Origin", "https://portal.example.org") in missing_headers
    assert ("X-Fixed", "yes") in missing_headers
    assert (invalid_status, json.loads(invalid_body)) == (403, {"default": True})


def test_a_default_responses_status_applies_to_its_whole_class_and_none_is_api_gateways_own() -> None:
    responses = [
        GatewayResponse("api1", "DEFAULT_5XX", 500, {"application/json": '{"m": $context.error.messageString}'})
    ]
    bad_gateway = GatewayError("DEFAULT_5XX", 502, "InternalServerErrorException", "Internal server error")
    too_large = GatewayError("REQUEST_TOO_LARGE", 413, "BadRequestException", "Request Too Long")

    assert gateway_answer(bad_gateway, responses, _gateway_request())[0] == 500
    status, headers, body = gateway_answer(too_large, responses, _gateway_request())
    assert (status, json.loads(body)) == (413, {"message": "Request Too Long"})
    assert ("Content-Type", "application/json") in headers
