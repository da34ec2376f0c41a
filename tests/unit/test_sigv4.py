"""The local API's SigV4 verifier on its own: AWS's published test vectors, requests signed by botocore as the agent
signs them, and every way API Gateway refuses a request, with API Gateway's words.

No server and no network: requests are signed in memory and handed to `verify_request` as the server would.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import botocore.auth
import pytest
import requests

from local.sigv4 import (
    MISMATCH_MESSAGE,
    SignatureRejected,
    VerifiedCaller,
    parse_authorization,
    sign,
    verify_request,
)

HOST = "127.0.0.1:3000"
REGION = "us-east-1"
KEYS = {"testing": "testing"}
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)

# AWS's SigV4 test suite: its example credentials, scope and time.
EXAMPLE_KEYS = {"AKIDEXAMPLE": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"}
EXAMPLE_TIME = datetime(2015, 8, 30, 12, 36, tzinfo=UTC)
EXAMPLE_CREDENTIAL = "AKIDEXAMPLE/20150830/us-east-1/service/aws4_request"
EXAMPLE_SIGNED = "SignedHeaders=host;x-amz-date, Signature="

Request = tuple[str, str, list[tuple[str, str]], bytes]
"""What the server hands the verifier: the method, the target as received, the headers and the body."""


@pytest.fixture
def at(monkeypatch: pytest.MonkeyPatch) -> Callable[[datetime], None]:
    """Set the time botocore signs at."""

    def travel(moment: datetime) -> None:
        monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: moment.replace(tzinfo=None))

    return travel


def signed(
    method: str,
    target: str,
    *,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    secret: str = "testing",
    key: str = "testing",
    region: str = REGION,
    token: str | None = None,
) -> Request:
    """A request signed by botocore for the local API, as the server receives it (with the Host header it sends)."""
    sent = sign(
        method,
        f"http://{HOST}{target}",
        body=body,
        headers=headers,
        access_key_id=key,
        secret_access_key=secret,
        region=region,
        session_token=token,
    )
    return method, target, [("Host", HOST), *sent.items()], body


def verify(request: Request, *, now: datetime = NOW, **options: Any) -> VerifiedCaller:
    method, target, headers, body = request
    settings: dict[str, Any] = {"credentials": KEYS, "region": REGION, "now": now, **options}
    return verify_request(method=method, target=target, headers=headers, body=body, **settings)


def refusal(request: Request, **options: Any) -> SignatureRejected:
    with pytest.raises(SignatureRejected) as refused:
        verify(request, **options)
    return refused.value


def replace_header(request: Request, name: str, value: str) -> Request:
    method, target, headers, body = request
    kept = [(key, old) for key, old in headers if key.lower() != name.lower()]
    return method, target, [*kept, (name, value)], body


# --- AWS's own test vectors ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "signature"),
    [
        ("/", "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"),  # get-vanilla
        (
            "/?Param2=value2&Param1=value1",  # get-vanilla-query-order-key-case: the query is sorted
            "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500",
        ),
    ],
)
def test_the_published_sigv4_test_vectors_verify(target: str, signature: str) -> None:
    request: Request = (
        "GET",
        target,
        [
            ("Host", "example.amazonaws.com"),
            ("X-Amz-Date", "20150830T123600Z"),
            ("Authorization", f"AWS4-HMAC-SHA256 Credential={EXAMPLE_CREDENTIAL}, {EXAMPLE_SIGNED}{signature}"),
        ],
        b"",
    )

    caller = verify(request, credentials=EXAMPLE_KEYS, service="service", now=EXAMPLE_TIME)

    assert caller == VerifiedCaller("AKIDEXAMPLE", None)


# --- what botocore signs verifies ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "target",
    [
        "/",
        "/worksets",
        "/worksets/a%2Fb",  # an encoded slash stays one segment, and is signed as sent
        "/worksets/hg002%20run%C3%A9",  # a space and a non-ASCII letter
        "/worksets/%6Eext",  # an encoding that was not needed, as the README says to reach a workset named "next"
        "/worksets/a%2Fb%20r%C3%A9/history?limit=5&next_token=abc%2B%2F%3D",
        "/worksets?state=ready&state=error&limit=",  # a repeated name, an empty value
        "/worksets/next?cluster=my%20cluster%2A",
        "/queue/stats?b=2&a=1&A=0",  # sorted by their encoded names
    ],
)
def test_a_request_signed_by_botocore_verifies(at: Callable[[datetime], None], target: str) -> None:
    at(NOW)

    assert verify(signed("GET", target)) == VerifiedCaller("testing", None)


def test_a_body_and_its_content_type_verify(at: Callable[[datetime], None]) -> None:
    at(NOW)
    request = signed("POST", "/clusters", body=b'{"name": "c1"}', headers={"Content-Type": "application/json"})

    assert verify(request).access_key_id == "testing"


def test_the_agents_client_way_of_building_the_url_verifies(at: Callable[[datetime], None]) -> None:
    # GIVEN the URL as ApiClient builds it: requests prepares it, botocore signs what requests will send
    at(NOW)
    prepared = requests.Request(
        "GET", f"http://{HOST}/worksets/a%2Fb%20r%C3%A9/history?limit=5&state=r%C3%A9"
    ).prepare()
    assert prepared.url is not None
    parts = urlsplit(prepared.url)

    # WHEN the server verifies it as received THEN it passes
    assert verify(signed("GET", f"{parts.path}?{parts.query}")).access_key_id == "testing"


def test_a_session_token_is_accepted_and_passed_on(at: Callable[[datetime], None]) -> None:
    at(NOW)

    caller = verify(signed("GET", "/worksets", token="any-session-token"))

    assert caller == VerifiedCaller("testing", "any-session-token")


def test_a_signing_time_within_five_minutes_either_way_verifies(at: Callable[[datetime], None]) -> None:
    at(NOW - timedelta(minutes=4, seconds=59))
    earlier = signed("GET", "/worksets")
    at(NOW + timedelta(minutes=4, seconds=59))
    later = signed("GET", "/worksets")

    assert verify(earlier) == verify(later) == VerifiedCaller("testing", None)


def test_a_signed_payload_hash_that_is_the_bodys_verifies(at: Callable[[datetime], None]) -> None:
    at(NOW)
    body = b'{"name": "c1"}'

    request = signed("POST", "/clusters", body=body, headers={"X-Amz-Content-SHA256": hashlib.sha256(body).hexdigest()})

    assert verify(request).access_key_id == "testing"


# --- what API Gateway refuses, in its words --------------------------------------------------------------------------


def test_no_authorization_header_is_a_missing_authentication_token() -> None:
    refused = refusal(("GET", "/worksets", [("Host", HOST)], b""))

    assert (refused.response_type, refused.error_type, refused.message) == (
        "MISSING_AUTHENTICATION_TOKEN",
        "MissingAuthenticationTokenException",
        "Missing Authentication Token",
    )


def test_a_wrong_secret_is_an_invalid_signature(at: Callable[[datetime], None]) -> None:
    at(NOW)

    refused = refusal(signed("GET", "/worksets", secret="not-the-secret"))

    assert (refused.response_type, refused.error_type, refused.message) == (
        "INVALID_SIGNATURE",
        "InvalidSignatureException",
        MISMATCH_MESSAGE,
    )


@pytest.mark.parametrize(
    "tamper",
    [
        lambda request: (request[0], request[1], request[2], b'{"name": "c2"}'),  # the body
        lambda request: (request[0], "/clusters/c1", request[2], request[3]),  # the path
        lambda request: (request[0], "/clusters?dry=1", request[2], request[3]),  # the query
        lambda request: ("PUT", request[1], request[2], request[3]),  # the method
        lambda request: replace_header(request, "Content-Type", "text/plain"),  # a signed header
    ],
    ids=["body", "path", "query", "method", "signed header"],
)
def test_a_tampered_request_is_an_invalid_signature(
    at: Callable[[datetime], None], tamper: Callable[[Request], Request]
) -> None:
    at(NOW)
    request = signed("POST", "/clusters", body=b'{"name": "c1"}', headers={"Content-Type": "application/json"})

    refused = refusal(tamper(request))

    assert (refused.response_type, refused.message) == ("INVALID_SIGNATURE", MISMATCH_MESSAGE)


def test_a_signature_of_any_characters_is_an_invalid_signature(at: Callable[[datetime], None]) -> None:
    # GIVEN a signature the server reads as Latin-1 text, not hexadecimal
    at(NOW)
    request = signed("GET", "/worksets")
    authorization = dict(request[2])["Authorization"]
    forged = authorization[: authorization.index("Signature=")] + "Signature=é"

    refused = refusal(replace_header(request, "Authorization", forged))

    assert refused.message == MISMATCH_MESSAGE


def test_an_unsigned_header_may_change(at: Callable[[datetime], None]) -> None:
    at(NOW)

    request = replace_header(signed("GET", "/worksets"), "User-Agent", "something else")

    assert verify(request).access_key_id == "testing"


def test_a_plus_for_a_space_in_the_query_is_refused_as_deployed(at: Callable[[datetime], None]) -> None:
    # GIVEN a client that signed the query as it sent it, with "+" for a space: SigV4's canonical query has "%20"
    at(NOW)

    refused = refusal(signed("GET", "/worksets/next?cluster=my+cluster"))

    assert refused.response_type == "INVALID_SIGNATURE"


def test_a_request_replayed_after_fifteen_minutes_has_expired(at: Callable[[datetime], None]) -> None:
    at(NOW - timedelta(minutes=15, seconds=1))

    refused = refusal(signed("GET", "/worksets"))

    assert (refused.response_type, refused.error_type) == ("INVALID_SIGNATURE", "InvalidSignatureException")
    assert refused.message == (
        "Signature expired: 20261201T114459Z is now earlier than 20261201T115500Z (20261201T120000Z - 5 min.)"
    )


def test_api_gateway_allows_five_minutes_not_fifteen(at: Callable[[datetime], None]) -> None:
    at(NOW - timedelta(minutes=5, seconds=1))

    assert refusal(signed("GET", "/worksets")).message.startswith("Signature expired: ")


def test_a_signing_time_in_the_future_is_not_yet_current(at: Callable[[datetime], None]) -> None:
    at(NOW + timedelta(minutes=6))

    refused = refusal(signed("GET", "/worksets"))

    assert refused.message == (
        "Signature not yet current: 20261201T120600Z is still later than 20261201T120500Z (20261201T120000Z + 5 min.)"
    )


def test_an_unknown_access_key_is_an_invalid_security_token(at: Callable[[datetime], None]) -> None:
    at(NOW)

    refused = refusal(signed("GET", "/worksets", key="AKIAUNKNOWN"))

    assert (refused.error_type, refused.message) == (
        "UnrecognizedClientException",
        "The security token included in the request is invalid.",
    )


@pytest.mark.parametrize(
    ("scope", "message"),
    [
        ({"region": "eu-west-1"}, "Credential should be scoped to a valid region, not 'eu-west-1'. "),
        ({"service": "s3"}, "Credential should be scoped to correct service: 's3'. "),
    ],
)
def test_a_credential_scoped_elsewhere_is_refused(
    at: Callable[[datetime], None], scope: dict[str, str], message: str
) -> None:
    # GIVEN a request signed for another region, or checked as another service would check it
    at(NOW)
    request = signed("GET", "/worksets", region=scope.get("region", REGION))

    refused = refusal(request, service=scope.get("service", "execute-api"))

    assert (refused.response_type, refused.message) == ("INVALID_SIGNATURE", message)


def test_a_signed_payload_hash_that_is_not_the_bodys_is_refused(at: Callable[[datetime], None]) -> None:
    at(NOW)

    request = signed("POST", "/clusters", body=b"{}", headers={"X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"})

    assert refusal(request).message == MISMATCH_MESSAGE


@pytest.mark.parametrize(
    ("authorization", "message"),
    [
        ("Bearer abc.def", "Invalid key=value pair (missing equal-sign) in Authorization header"),
        (
            "AWS4-HMAC-SHA256 Credential=testing/20261201/us-east-1/execute-api/aws4_request, SignedHeaders=host",
            ("Authorization header requires 'Signature' parameter."),
        ),
        ("AWS4-HMAC-SHA256 Credential=testing/20261201, SignedHeaders=host, Signature=00", "Credential should have"),
    ],
)
def test_a_malformed_authorization_header_is_an_incomplete_signature(authorization: str, message: str) -> None:
    request: Request = ("GET", "/worksets", [("Host", HOST), ("Authorization", authorization)], b"")

    refused = refusal(request)

    assert refused.error_type == "IncompleteSignatureException"
    assert refused.message.startswith(message)


def test_a_signature_must_cover_the_host(at: Callable[[datetime], None]) -> None:
    at(NOW)
    request = signed("GET", "/worksets")
    authorization = dict(request[2])["Authorization"].replace(
        "SignedHeaders=host;x-amz-date", "SignedHeaders=x-amz-date"
    )

    refused = refusal(replace_header(request, "Authorization", authorization))

    assert refused.message == "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization."


def test_a_signature_needs_a_signing_time() -> None:
    authorization = (
        "AWS4-HMAC-SHA256 Credential=testing/20261201/us-east-1/execute-api/aws4_request, SignedHeaders=host, "
        "Signature=00"
    )

    refused = refusal(("GET", "/worksets", [("Host", HOST), ("Authorization", authorization)], b""))

    assert refused.message.endswith("requires existence of either a 'X-Amz-Date' or a 'Date' header.")


def test_the_authorization_header_is_read_into_its_parts() -> None:
    header = (
        "AWS4-HMAC-SHA256 Credential=testing/20261201/us-east-1/execute-api/aws4_request, "
        "SignedHeaders=content-type;host;x-amz-date, Signature=abc123"
    )

    parts = parse_authorization(header)

    assert (parts.access_key_id, parts.date, parts.region, parts.service, parts.terminator) == (
        "testing",
        "20261201",
        "us-east-1",
        "execute-api",
        "aws4_request",
    )
    assert parts.signed_headers == ("content-type", "host", "x-amz-date")
    assert parts.signature == "abc123"
