"""API Gateway (REST API, Lambda proxy integration) in front of the functions' `Api` events, over plain HTTP.

Each request becomes the proxy event API Gateway would send (version 1.0: `resource`, `path`, `httpMethod`, single
and multi-value headers and query parameters, `pathParameters`, `requestContext`, `body`, `isBase64Encoded`), routed
by the template's `Path` and `Method`; the handler's response is written back. The path stays percent-encoded, as
API Gateway passes it, and query parameters are decoded, as API Gateway does.

Before any function runs, API Gateway answers some requests by itself, and so does this server:

- a body over 10 MB: 413 `REQUEST_TOO_LARGE`;
- a route the API does not have: 403 `MISSING_AUTHENTICATION_TOKEN` ("Missing Authentication Token");
- a route whose authorizer is `AWS_IAM` (in SAM: the API's `Auth.DefaultAuthorizer`, unless the event says
  `Auth: {Authorizer: NONE}`) without a valid SigV4 signature by the local stack's keys: 403, as `local.sigv4` says;
- a function that fails, or answers something that is not a proxy response: 502 ("Internal server error").

Those answers are rendered as API Gateway renders them, from the template's `AWS::ApiGateway::GatewayResponse`
resources of the API: the one of the answer's response type, else the API's `DEFAULT_4XX` / `DEFAULT_5XX`, else API
Gateway's own `{"message": "..."}`. Every answer carries `x-amzn-RequestId` and `x-amz-apigw-id`; API Gateway's own
answers also carry `x-amzn-ErrorType`.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from local.emulator import ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY
from local.observability import logger
from local.sigv4 import SignatureRejected, VerifiedCaller, missing_token, verify_request

if TYPE_CHECKING:
    from local.runtime import FunctionRunner
    from local.template import Template

IMPLICIT_API_STAGE = "Prod"
GATEWAY_RESPONSE = "AWS::ApiGateway::GatewayResponse"
IAM = "AWS_IAM"
OPEN = "NONE"
JSON = "application/json"

PAYLOAD_LIMIT_BYTES = 10 * 1024 * 1024
"""API Gateway's limit on a request's payload (10 MB), which cannot be raised."""

DEFAULT_TEMPLATE = '{"message":$context.error.messageString}'
"""API Gateway's own body for its answers, when the API declares no gateway response for them."""

_VARIABLE = re.compile(r"\$(?:\{([A-Za-z]\w*(?:\.[A-Za-z]\w*)*)\}|([A-Za-z]\w*(?:\.[A-Za-z]\w*)*))")


@dataclass(frozen=True)
class ApiRoute:
    """One `Api` event: a resource path (with `{name}` and `{proxy+}` parts) and a method, served by a function.

    `auth` says whether API Gateway asks for a SigV4 signature (`AWS_IAM`) before it calls the function.
    """

    runner: FunctionRunner
    resource: str
    method: str
    stage: str
    api_id: str
    pattern: re.Pattern[str]
    parameters: tuple[str, ...]
    static_parts: int
    greedy: bool
    auth: bool = False

    @classmethod
    def build(
        cls, runner: FunctionRunner, *, resource: str, method: str, stage: str, api_id: str, auth: bool = False
    ) -> ApiRoute:
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
            auth=auth,
        )

    @property
    def precedence(self) -> tuple[bool, int, bool]:
        """Sort key, most specific first: literal paths before parameters before `{proxy+}`, a method before ANY."""
        return (self.greedy, -self.static_parts, self.method == "ANY")


def requires_iam(api_auth: Mapping[str, Any], event_auth: Mapping[str, Any], *, route: str) -> bool:
    """Whether API Gateway asks a route for a SigV4 signature, as SAM configures it.

    The event's `Auth.Authorizer` decides, else the API's `Auth.DefaultAuthorizer`: `AWS_IAM` asks for a signature,
    `NONE` (or no authorizer at all) leaves the route open.

    Limitations:
        Cognito and Lambda authorizers are not run locally; their routes are served open, with a warning.
    """
    authorizer = str(event_auth.get("Authorizer") or api_auth.get("DefaultAuthorizer") or OPEN)
    if authorizer not in (IAM, OPEN):
        logger.warning("authorizer not emulated, route served open", route=route, authorizer=authorizer)
    return authorizer == IAM


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
    caller: VerifiedCaller | None = None,
) -> dict[str, Any]:
    """The REST API proxy event (payload 1.0) API Gateway sends for this request.

    `caller` is who signed the request, on a route that asked for a signature; API Gateway fills the identity's
    `accessKey`, `accountId`, `caller`, `user` and `userArn` only then.
    """
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
            "extendedRequestId": _extended_request_id(),
            "requestTime": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "path": f"/{route.stage}{path}",
            "accountId": account_id,
            "protocol": "HTTP/1.1",
            "stage": route.stage,
            "domainPrefix": route.api_id,
            "requestTimeEpoch": int(now.timestamp() * 1000),
            "requestId": str(uuid.uuid4()),
            "identity": _identity(header_value, source_ip, caller, account_id),
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


def _extended_request_id() -> str:
    """API Gateway's `extendedRequestId`, also sent as `x-amz-apigw-id`: 16 characters of base64."""
    return base64.b64encode(uuid.uuid4().bytes[:12]).decode("ascii")


def _identity(
    headers: Mapping[str, str], source_ip: str, caller: VerifiedCaller | None, account_id: str
) -> dict[str, Any]:
    # NOTE: the local stack knows access keys, not IAM users: a signer's user is named after its access key id.
    return {
        "cognitoIdentityPoolId": None,
        "accountId": account_id if caller else None,
        "cognitoIdentityId": None,
        "caller": caller.access_key_id if caller else None,
        "sourceIp": source_ip,
        "principalOrgId": None,
        "accessKey": caller.access_key_id if caller else None,
        "cognitoAuthenticationType": None,
        "cognitoAuthenticationProvider": None,
        "userArn": f"arn:aws:iam::{account_id}:user/{caller.access_key_id}" if caller else None,
        "userAgent": headers.get("user-agent"),
        "user": caller.access_key_id if caller else None,
    }


# --- what API Gateway answers by itself --------------------------------------------------------------------------


@dataclass(frozen=True)
class GatewayError:
    """An answer API Gateway gives by itself: its gateway response type, that type's default status, the
    `x-amzn-ErrorType` it sends and the message (`$context.error.message`)."""

    response_type: str
    status: int
    error_type: str
    message: str

    @classmethod
    def refused(cls, rejection: SignatureRejected) -> GatewayError:
        """A request refused for its signature (or the lack of one): always a 403."""
        return cls(rejection.response_type, 403, rejection.error_type, rejection.message)


MISSING_AUTHENTICATION_TOKEN = GatewayError.refused(missing_token())

# NOTE: "Request Too Long" and BadRequestException are what API Gateway was seen answering for a payload over
# Lambda's limit (koki-develop/lgtm-generator#10); over its own 10 MB it was seen answering plain text ("HTTP content
# length exceeded 10485760 bytes.") before any gateway response applies. Locally both are this templated answer.
REQUEST_TOO_LARGE = GatewayError("REQUEST_TOO_LARGE", 413, "BadRequestException", "Request Too Long")

# NOTE: API Gateway logs "Malformed Lambda proxy response" and answers 502; no gateway response type of its own is
# documented for it (API_CONFIGURATION_ERROR is a 500), so it is taken to be the 5XX default.
BAD_INTEGRATION_RESPONSE = GatewayError("DEFAULT_5XX", 502, "InternalServerErrorException", "Internal server error")


@dataclass(frozen=True)
class GatewayResponse:
    """One `AWS::ApiGateway::GatewayResponse`: how an API words API Gateway's answers of one response type.

    `headers` are its `ResponseParameters` (`gatewayresponse.header.<name>`): a quoted literal (`"'*'"`) or a value
    of the request (`method.request.header.<name>`, `method.request.querystring.<name>`, `method.request.path.<name>`).
    """

    api_id: str
    response_type: str
    status: int | None
    templates: Mapping[str, str]
    headers: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_properties(cls, properties: Mapping[str, Any]) -> GatewayResponse:
        parameters: Mapping[str, Any] = properties.get("ResponseParameters") or {}
        status = properties.get("StatusCode")
        return cls(
            api_id=str(properties["RestApiId"]),
            response_type=str(properties["ResponseType"]),
            status=int(status) if status not in (None, "") else None,
            templates={str(kind): str(text) for kind, text in (properties.get("ResponseTemplates") or {}).items()},
            headers={
                name.removeprefix("gatewayresponse.header."): str(value)
                for name, value in parameters.items()
                if name.startswith("gatewayresponse.header.")
            },
        )


def gateway_responses(template: Template) -> list[GatewayResponse]:
    """The template's `AWS::ApiGateway::GatewayResponse` resources, resolved (their `RestApiId` is the API's id)."""
    return [
        GatewayResponse.from_properties(template.resolve(resource.get("Properties", {})))
        for resource in template.resources(GATEWAY_RESPONSE).values()
    ]


@dataclass(frozen=True)
class GatewayRequest:
    """What a gateway response may read of the request it answers: `$context` values and `method.request` values."""

    request_id: str
    extended_request_id: str
    api_id: str
    stage: str
    method: str
    path: str
    source_ip: str
    account_id: str
    headers: Mapping[str, str]
    query: Mapping[str, str]
    path_parameters: Mapping[str, str] = field(default_factory=dict)
    resource_path: str = ""

    def variables(self, error: GatewayError) -> dict[str, str]:
        """The variables a gateway response's template and parameters may name, by their names."""
        values = {
            "context.error.responseType": error.response_type,
            "context.error.message": error.message,
            "context.error.messageString": json.dumps(error.message),
            "context.error.validationErrorString": "",
            "context.requestId": self.request_id,
            "context.extendedRequestId": self.extended_request_id,
            "context.apiId": self.api_id,
            "context.stage": self.stage,
            "context.httpMethod": self.method,
            "context.path": f"/{self.stage}{self.path}" if self.stage else self.path,
            "context.resourcePath": self.resource_path,
            "context.accountId": self.account_id,
            "context.identity.sourceIp": self.source_ip,
            "context.domainName": self.headers.get("host", ""),
        }
        values.update({f"method.request.header.{name}": value for name, value in self.headers.items()})
        values.update({f"method.request.querystring.{name}": value for name, value in self.query.items()})
        values.update({f"method.request.path.{name}": value for name, value in self.path_parameters.items()})
        return values


def gateway_answer(
    error: GatewayError, responses: Sequence[GatewayResponse], request: GatewayRequest
) -> tuple[int, list[tuple[str, str]], bytes]:
    """Status, headers and body of API Gateway's own answer, rendered from the API's gateway responses.

    The API's gateway response of the error's type is used, else its `DEFAULT_4XX` or `DEFAULT_5XX`, else API
    Gateway's built-in `{"message": "..."}`. The status is the chosen response's `StatusCode`, else the default's,
    else the type's own. The template for `application/json` is used when there is one.

    Limitations:
        the template is not chosen by the request's `Accept` header; variables other than the `$context` values
        and request values above render empty.
    """
    own = [response for response in responses if response.api_id == request.api_id]
    specific = next((response for response in own if response.response_type == error.response_type), None)
    fallback_type = f"DEFAULT_{error.status // 100}XX"
    fallback = next((response for response in own if response.response_type == fallback_type), None)
    chosen = specific or fallback

    status = (specific.status if specific else None) or (fallback.status if fallback else None) or error.status
    templates = dict(chosen.templates) if chosen and chosen.templates else {JSON: DEFAULT_TEMPLATE}
    content_type = JSON if JSON in templates else next(iter(templates))
    variables = request.variables(error)

    headers = [("Content-Type", content_type)]
    for name, expression in (chosen.headers if chosen else {}).items():
        headers.append((name, _parameter_value(expression, variables)))
    headers += [("x-amzn-ErrorType", error.error_type)]
    body = render_template(templates[content_type], variables)
    return status, headers, body.encode("utf-8")


def render_template(template: str, variables: Mapping[str, str]) -> str:
    """A gateway response template with its `$name` and `${name}` variables replaced (unknown ones by nothing).

    Gateway response templates are not Velocity: API Gateway only substitutes variables in them.
    """
    return _VARIABLE.sub(lambda found: _variable(variables, found.group(1) or found.group(2)), template)


def _parameter_value(expression: str, variables: Mapping[str, str]) -> str:
    if len(expression) >= 2 and expression.startswith("'") and expression.endswith("'"):
        return expression[1:-1]
    return _variable(variables, expression)


def _variable(variables: Mapping[str, str], name: str) -> str:
    """A variable's value, empty when unknown; header names are matched whatever their case, as in HTTP."""
    prefix = "method.request.header."
    if name.startswith(prefix):
        name = prefix + name.removeprefix(prefix).lower()
    return variables.get(name, "")


# --- the server --------------------------------------------------------------------------------------------------


class ApiServer:
    """An HTTP server on `host`:`port` (0 picks a free port) that serves the routes through their functions.

    `credentials` maps the access key ids whose SigV4 signatures it accepts to their secret keys (the local stack's
    by default); `region` is the region a signature must be scoped to; `responses` are the gateway responses that
    word API Gateway's own answers.

    Limitations:
        plain HTTP/1.0 (one request per connection); a chunked request body is not read; no authorizer but AWS_IAM
        runs, and it checks signatures, not IAM policies (`execute-api:Invoke`); throttling, API keys, resource
        policies and the SAM `Cors` setting are not applied.
    """

    def __init__(
        self,
        routes: Sequence[ApiRoute],
        *,
        host: str,
        port: int,
        account_id: str,
        region: str = REGION,
        credentials: Mapping[str, str] | None = None,
        responses: Sequence[GatewayResponse] = (),
    ) -> None:
        self.routes = list(routes)
        self.account_id = account_id
        self.region = region
        self.credentials = dict(credentials if credentials is not None else {ACCESS_KEY_ID: SECRET_ACCESS_KEY})
        self.responses = list(responses)
        self._server = _Server((host, port), _RequestHandler)
        self._server.api = self
        self._thread = threading.Thread(target=self._server.serve_forever, name="local-api", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def default_api_id(self) -> str:
        """The API a request for no route is answered for: the routes' API, when they all belong to one."""
        api_ids = {route.api_id for route in self.routes}
        return api_ids.pop() if len(api_ids) == 1 else ""

    def start(self) -> None:
        self._thread.start()
        routes = [f"{route.method} {route.resource}{'' if route.auth else ' (open)'}" for route in self.routes]
        logger.info("api serving", url=self.url, routes=routes)

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
        """Every method is served the same way: checked as API Gateway would, then answered by the function."""
        api = self.server.api
        target = _request_target(self.path)
        headers = list(self.headers.items())

        length = int(self.headers.get("Content-Length") or 0)
        if length > PAYLOAD_LIMIT_BYTES:
            self._discard(length)
            self._answer_by_gateway(REQUEST_TOO_LARGE, target)
            return
        body = self.rfile.read(length) if length else b""

        matched = match_route(api.routes, self.command, urlsplit(target).path or "/")
        if matched is None:
            self._answer_by_gateway(MISSING_AUTHENTICATION_TOKEN, target)
            return
        route, parameters = matched

        caller = None
        if route.auth:
            try:
                caller = verify_request(
                    method=self.command,
                    target=target,
                    headers=headers,
                    body=body,
                    credentials=api.credentials,
                    region=api.region,
                )
            except SignatureRejected as rejection:
                logger.info("api request refused", route=route.resource, reason=rejection.message)
                self._answer_by_gateway(GatewayError.refused(rejection), target, route, parameters)
                return

        event = proxy_event(
            route,
            parameters,
            method=self.command,
            target=target,
            headers=headers,
            body=body,
            source_ip=self.client_address[0],
            account_id=api.account_id,
            caller=caller,
        )
        context = event["requestContext"]
        invocation = route.runner.invoke(event, trigger=f"api {self.command} {route.resource}")
        answer = _proxy_response(invocation.result) if invocation.ok else None
        if answer is None:
            ids = (context["requestId"], context["extendedRequestId"])
            self._answer_by_gateway(BAD_INTEGRATION_RESPONSE, target, route, parameters, ids=ids)
            return

        status, response_headers, response_body = answer
        response_headers.append(("x-amzn-RequestId", context["requestId"]))
        response_headers.append(("x-amz-apigw-id", context["extendedRequestId"]))
        self._write(status, response_headers, response_body)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = serve

    def _answer_by_gateway(
        self,
        error: GatewayError,
        target: str,
        route: ApiRoute | None = None,
        path_parameters: Mapping[str, str] | None = None,
        *,
        ids: tuple[str, str] | None = None,
    ) -> None:
        api = self.server.api
        request_id, extended_request_id = ids or (str(uuid.uuid4()), _extended_request_id())
        parts = urlsplit(target)
        request = GatewayRequest(
            request_id=request_id,
            extended_request_id=extended_request_id,
            api_id=route.api_id if route else api.default_api_id,
            stage=route.stage if route else "",
            method=self.command,
            path=parts.path or "/",
            source_ip=self.client_address[0],
            account_id=api.account_id,
            headers={name.lower(): value for name, value in self.headers.items()},
            query=dict(parse_qsl(parts.query, keep_blank_values=True)),
            path_parameters=dict(path_parameters or {}),
            resource_path=route.resource if route else "",
        )

        status, headers, body = gateway_answer(error, api.responses, request)
        headers += [("x-amzn-RequestId", request_id), ("x-amz-apigw-id", extended_request_id)]
        self._write(status, headers, body)

    def _discard(self, length: int) -> None:
        """Read a refused body to its end, so the client sees the answer rather than a reset connection."""
        remaining = length
        while remaining > 0:
            chunk = self.rfile.read(min(remaining, 1 << 16))
            if not chunk:
                return
            remaining -= len(chunk)

    def _write(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.send_response(status)
        if not any(name.lower() == "content-type" for name, _ in headers):
            headers.append(("Content-Type", JSON))
        for name, value in headers:
            if name.lower() not in ("content-length", "connection", "transfer-encoding"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Requests are logged as invocations by the runner; the base class would print each to stderr."""


def _request_target(raw: str) -> str:
    """The request target as the client sent it: http.server reads the request line as Latin-1, clients send UTF-8."""
    return raw.encode("latin-1", "replace").decode("utf-8", "replace")


def _proxy_response(result: Any) -> tuple[int, list[tuple[str, str]], bytes] | None:
    """Status, headers and body from a Lambda proxy response; None for a malformed one (API Gateway's 502)."""
    if not isinstance(result, Mapping) or "statusCode" not in result:
        return None
    try:
        status = int(result["statusCode"])
    except (TypeError, ValueError):
        return None
    body = result.get("body")
    if body is not None and not isinstance(body, str):
        return None

    multi: Mapping[str, Sequence[Any]] = result.get("multiValueHeaders") or {}
    single: Mapping[str, Any] = result.get("headers") or {}
    headers = [(name, str(value)) for name, values in multi.items() for value in values]
    headers += [(name, str(value)) for name, value in single.items() if name not in multi]

    data = base64.b64decode(body or "") if result.get("isBase64Encoded") else (body or "").encode("utf-8")
    return status, headers, data
