"""SigV4 verification of a request, as API Gateway does it for a route whose authorizer is `AWS_IAM`.

API Gateway recomputes the signature of every request from what it received: the method, the path as sent, the query,
the headers the client says it signed, the body and the time in `X-Amz-Date`, with the secret key of the access key
id named in the `Authorization` header. This module rebuilds that request as a botocore `AWSRequest` and lets
botocore's `SigV4Auth` compute the canonical request, the string to sign and the signature, so the local API agrees
with every client that signs with botocore (boto3, the agent, the CLI); only the comparison is done here.

    verified = verify_request(
        method="GET", target="/worksets/a%2Fb?state=ready", headers=[("Host", "..."), ...], body=b"",
        credentials={"testing": "testing"}, region="us-east-1",
    )

A refused request raises `SignatureRejected`, which carries what API Gateway answers: the gateway response type (the
`$context.error.responseType` of a gateway response template), the `x-amzn-ErrorType` header and the message.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from urllib.parse import parse_qsl, urlsplit

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.compat import HTTPHeaders
from botocore.credentials import ReadOnlyCredentials

ALGORITHM = "AWS4-HMAC-SHA256"
SERVICE = "execute-api"
TERMINATOR = "aws4_request"
AMZ_DATE_FORMAT = "%Y%m%dT%H%M%SZ"

# NOTE: many AWS services allow 15 minutes of clock skew; API Gateway's own answers ("Signature expired: ... (... - 5
# min.)", reported against execute-api in aws-amplify/aws-sdk-android#253 and aws-amplify/amplify-js#2014) allow 5.
SIGNATURE_WINDOW = timedelta(minutes=5)
"""How far the signing time may be from API Gateway's clock, either way."""

MISMATCH_MESSAGE = (
    "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key"
    " and signing method. Consult the service documentation for details."
)
UNKNOWN_KEY_MESSAGE = "The security token included in the request is invalid."
MISSING_TOKEN = "Missing Authentication Token"


class SignatureRejected(Exception):
    """API Gateway refuses the request with a 403.

    `response_type` is the gateway response type (`MISSING_AUTHENTICATION_TOKEN`, `INVALID_SIGNATURE`, ...),
    `error_type` what API Gateway sends as `x-amzn-ErrorType`, `message` the text of `$context.error.message`.
    """

    def __init__(self, response_type: str, error_type: str, message: str) -> None:
        super().__init__(message)
        self.response_type = response_type
        self.error_type = error_type
        self.message = message


def missing_token() -> SignatureRejected:
    """No `Authorization` header: what API Gateway answers, and also what it answers for a route it does not have."""
    return SignatureRejected("MISSING_AUTHENTICATION_TOKEN", "MissingAuthenticationTokenException", MISSING_TOKEN)


def _invalid_signature(message: str = MISMATCH_MESSAGE) -> SignatureRejected:
    return SignatureRejected("INVALID_SIGNATURE", "InvalidSignatureException", message)


def _incomplete_signature(message: str) -> SignatureRejected:
    # NOTE: API Gateway has no gateway response type of its own for an incomplete signature; by its documented rule
    # an unlisted 4XX falls back to DEFAULT_4XX, which is what `$context.error.responseType` is taken to say here.
    return SignatureRejected("DEFAULT_4XX", "IncompleteSignatureException", message)


def _unrecognized_client() -> SignatureRejected:
    # NOTE: the message and the x-amzn-ErrorType are what API Gateway answers for an unknown access key id; its
    # gateway response types have none for it (no UNRECOGNIZED_CLIENT exists), so DEFAULT_4XX is assumed, as above.
    return SignatureRejected("DEFAULT_4XX", "UnrecognizedClientException", UNKNOWN_KEY_MESSAGE)


@dataclass(frozen=True)
class Authorization:
    """The parts of an `Authorization: AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...` header."""

    access_key_id: str
    date: str
    region: str
    service: str
    terminator: str
    signed_headers: tuple[str, ...]
    signature: str


@dataclass(frozen=True)
class VerifiedCaller:
    """Who signed a request that verified: the access key id, and the session token if one was sent."""

    access_key_id: str
    security_token: str | None


def parse_authorization(header: str) -> Authorization:
    """The parts of a SigV4 `Authorization` header; SignatureRejected (as API Gateway words it) when malformed."""
    algorithm, _, rest = header.strip().partition(" ")
    pairs: dict[str, str] = {}
    for part in rest.split(","):
        if not part.strip():
            continue
        name, equals, value = part.strip().partition("=")
        if not equals:
            # NOTE: API Gateway shows the offending header hashed; which text exactly it hashes is not documented.
            digest = base64.b64encode(hashlib.sha256(header.encode()).digest()).decode()
            raise _incomplete_signature(
                "Invalid key=value pair (missing equal-sign) in Authorization header (hashed with SHA-256 and "
                f"encoded with Base64): '{digest}'."
            )
        pairs[name.strip()] = value.strip()

    if algorithm != ALGORITHM:
        raise _incomplete_signature(f"Unsupported authorization algorithm '{algorithm}'; expected '{ALGORITHM}'.")
    missing = [name for name in ("Credential", "Signature", "SignedHeaders") if not pairs.get(name)]
    if missing:
        sentences = " ".join(f"Authorization header requires '{name}' parameter." for name in missing)
        raise _incomplete_signature(f"{sentences} Authorization={header}")

    scope = pairs["Credential"].split("/")
    if len(scope) != 5:
        raise _incomplete_signature(
            f"Credential should have exactly 5 parts (key/date/region/service/{TERMINATOR}): '{pairs['Credential']}'."
        )
    access_key_id, date, region, service, terminator = scope
    return Authorization(
        access_key_id=access_key_id,
        date=date,
        region=region,
        service=service,
        terminator=terminator,
        signed_headers=tuple(pairs["SignedHeaders"].split(";")),
        signature=pairs["Signature"],
    )


def verify_request(
    *,
    method: str,
    target: str,
    headers: Sequence[tuple[str, str]],
    body: bytes,
    credentials: Mapping[str, str],
    region: str,
    service: str = SERVICE,
    now: datetime | None = None,
) -> VerifiedCaller:
    """Check the SigV4 signature of a request as API Gateway does; SignatureRejected says why one fails.

    `target` is the request target as received (the path percent-encoded as sent, then the query); `credentials`
    maps each access key id the stack knows to its secret key.

    The checks, in order: an `Authorization` header exists; it is well formed; the credential scope names the date
    of the signing time, `region`, `service` and `aws4_request`; the signing time is within 5 minutes of `now`; the
    access key id is known; a signed `X-Amz-Content-SHA256` is the body's hash; the signature is the one botocore
    computes over the same request.

    Limitations:
        a session token (`X-Amz-Security-Token`) is accepted whatever it is, and not required: the local stack has
        one pair of keys and no STS behind it. Query-string signing (presigned URLs) is not read, so such a request
        counts as unsigned.
    """
    header_values = _header_values(headers)
    authorization_header = header_values.get("authorization")
    if not authorization_header:
        raise missing_token()

    authorization = parse_authorization(authorization_header[0])
    if "host" not in authorization.signed_headers:
        raise _incomplete_signature("'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.")
    amz_date, signed_at = _signing_time(header_values)
    _check_scope(authorization, amz_date, region=region, service=service)
    _check_window(amz_date, signed_at, now or datetime.now(UTC))

    secret = credentials.get(authorization.access_key_id)
    if secret is None:
        raise _unrecognized_client()

    if not _payload_hash_holds(authorization, header_values, body):
        raise _invalid_signature()
    expected = expected_signature(
        authorization,
        method=method,
        target=target,
        header_values=header_values,
        body=body,
        secret=secret,
        amz_date=amz_date,
    )
    if not hmac.compare_digest(expected.encode(), authorization.signature.encode()):
        raise _invalid_signature()

    tokens = header_values.get("x-amz-security-token")
    return VerifiedCaller(authorization.access_key_id, tokens[0] if tokens else None)


def expected_signature(
    authorization: Authorization,
    *,
    method: str,
    target: str,
    header_values: Mapping[str, Sequence[str]],
    body: bytes,
    secret: str,
    amz_date: str,
) -> str:
    """The signature botocore computes for the request as received, over exactly the headers the client signed."""
    request = received_request(
        method=method, target=target, header_values=header_values, body=body, authorization=authorization
    )
    request.context["timestamp"] = amz_date
    signer = _ReceivedRequestSigner(
        ReadOnlyCredentials(authorization.access_key_id, secret, None), authorization.service, authorization.region
    )

    canonical_request = signer.canonical_request(request)
    string_to_sign = signer.string_to_sign(request, canonical_request)
    signature: str = signer.signature(string_to_sign, request)
    return signature


def received_request(
    *,
    method: str,
    target: str,
    header_values: Mapping[str, Sequence[str]],
    body: bytes,
    authorization: Authorization,
) -> AWSRequest:
    """The request as API Gateway canonicalizes it: the path as sent, the query decoded, the signed headers.

    The path is left as the client sent it (percent-encoded once); botocore encodes it once more, as SigV4 asks for
    every service but S3. The query is decoded (`+` as a space, as in the proxy event's parameters), so botocore
    encodes each name and value the way SigV4 prescribes (RFC 3986, `%20` for a space) and sorts them: a client
    that signed another spelling of the same query (a `+` for a space, an unencoded `*` or `,`) fails, as deployed.
    """
    parts = urlsplit(target)
    host = header_values.get("host", [""])[0]
    query = parse_qsl(parts.query, keep_blank_values=True)

    # botocore takes the query as a list of pairs too (a name may repeat), though its type stubs say a mapping.
    url = f"http://{host}{parts.path or '/'}"
    request = AWSRequest(method=method.upper(), url=url, data=body, params=query)  # type: ignore[arg-type]
    for name in authorization.signed_headers:
        for value in header_values.get(name, []):
            request.headers[name] = value
    return request


class _ReceivedRequestSigner(SigV4Auth):
    """botocore's SigV4 signer over exactly the headers the request carries: it adds no `host` and drops none.

    botocore's own `headers_to_sign` leaves out `user-agent`, `expect` and a few more, and invents `host` when the
    request has none; a client that signed those must still verify, and a request that did not sign `host` is
    refused before this runs.
    """

    def headers_to_sign(self, request: AWSRequest) -> HTTPHeaders:
        headers = HTTPHeaders()
        for name, value in request.headers.items():
            headers[name.lower()] = value
        return headers


def _header_values(headers: Sequence[tuple[str, str]]) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for name, value in headers:
        values.setdefault(name.lower(), []).append(value)
    return values


def _signing_time(header_values: Mapping[str, Sequence[str]]) -> tuple[str, datetime]:
    """`X-Amz-Date` (or else `Date`) as SigV4's timestamp text and as a time."""
    amz_date = header_values.get("x-amz-date", [None])[0]
    if amz_date is not None:
        try:
            return amz_date, datetime.strptime(amz_date, AMZ_DATE_FORMAT).replace(tzinfo=UTC)
        except ValueError:
            raise _incomplete_signature(
                f"Date must be in ISO-8601 'basic format'. Got '{amz_date}'. See http://en.wikipedia.org/wiki/ISO_8601"
            ) from None

    date = header_values.get("date", [None])[0]
    if date is not None:
        try:
            moment = parsedate_to_datetime(date).astimezone(UTC)
        except (TypeError, ValueError):
            raise _incomplete_signature(f"Date must be an HTTP date. Got '{date}'.") from None
        return moment.strftime(AMZ_DATE_FORMAT), moment

    raise _incomplete_signature("Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.")


def _check_scope(authorization: Authorization, amz_date: str, *, region: str, service: str) -> None:
    # NOTE: these messages follow the wording AWS services give for a wrong scope; API Gateway's exact text for each
    # is not documented, and the response type is taken to be INVALID_SIGNATURE.
    if authorization.date != amz_date[:8]:
        raise _invalid_signature(
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: "
            f"'{authorization.date}' != '{amz_date[:8]}', from '{amz_date}'."
        )
    if authorization.region != region:
        raise _invalid_signature(f"Credential should be scoped to a valid region, not '{authorization.region}'. ")
    if authorization.service != service:
        raise _invalid_signature(f"Credential should be scoped to correct service: '{service}'. ")
    if authorization.terminator != TERMINATOR:
        raise _invalid_signature(
            f"Credential should be scoped with a valid terminator: '{TERMINATOR}', not '{authorization.terminator}'. "
        )


def _check_window(amz_date: str, signed_at: datetime, now: datetime) -> None:
    """API Gateway's words for a signing time too far in the past or the future."""
    minutes = int(SIGNATURE_WINDOW.total_seconds() // 60)
    if signed_at < now - SIGNATURE_WINDOW:
        raise _invalid_signature(
            f"Signature expired: {amz_date} is now earlier than {_amz_date(now - SIGNATURE_WINDOW)} "
            f"({_amz_date(now)} - {minutes} min.)"
        )
    if signed_at > now + SIGNATURE_WINDOW:
        raise _invalid_signature(
            f"Signature not yet current: {amz_date} is still later than {_amz_date(now + SIGNATURE_WINDOW)} "
            f"({_amz_date(now)} + {minutes} min.)"
        )


def _amz_date(moment: datetime) -> str:
    return moment.strftime(AMZ_DATE_FORMAT)


def _payload_hash_holds(authorization: Authorization, header_values: Mapping[str, Sequence[str]], body: bytes) -> bool:
    """A signed `X-Amz-Content-SHA256` must be the hash of the body received: botocore would sign the header's value."""
    # NOTE: API Gateway is taken to always hash the body it received, so a signed `UNSIGNED-PAYLOAD` is refused too.
    if "x-amz-content-sha256" not in authorization.signed_headers:
        return True
    declared = header_values.get("x-amz-content-sha256", [""])[0]
    return hmac.compare_digest(declared.lower().encode(), hashlib.sha256(body).hexdigest().encode())


def sign(
    method: str,
    url: str,
    *,
    body: bytes = b"",
    headers: Mapping[str, str] | None = None,
    access_key_id: str,
    secret_access_key: str,
    region: str,
    session_token: str | None = None,
) -> dict[str, str]:
    """The headers a botocore client sends to call `url` signed, as the agent's `ApiClient` signs: the given ones plus
    `X-Amz-Date`, `Authorization` and, with a session token, `X-Amz-Security-Token`.

    `url` is sent as it is given, so its path and query must already be percent-encoded the way they will be sent.
    """
    request = AWSRequest(method=method, url=url, data=body, headers=dict(headers or {}))
    credentials = ReadOnlyCredentials(access_key_id, secret_access_key, session_token)
    SigV4Auth(credentials, SERVICE, region).add_auth(request)
    return dict(request.headers.items())
