"""What the API's read and write functions share: the resolver, its one error shape, CORS, and the documented answers.

Workset ids arrive percent-encoded in the path, as API Gateway passes REST paths, and are decoded here.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Callable, Mapping
from functools import cache
from typing import Annotated, Any
from urllib.parse import unquote

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, CORSConfig, Response, content_types
from aws_lambda_powertools.event_handler.middlewares import NextMiddleware
from aws_lambda_powertools.event_handler.openapi.exceptions import (
    RequestUnsupportedContentType,
    RequestValidationError,
)
from aws_lambda_powertools.event_handler.openapi.params import Path as PathParam
from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse
from aws_lambda_powertools.event_handler.util import extract_origin_header
from pydantic import BaseModel, ConfigDict, Field

from workset_monitor import measures
from workset_monitor.errors import (
    ClusterNotFound,
    ClusterRetired,
    ConcurrentUpdate,
    FolderNotFound,
    InvalidRequest,
    LeaseLost,
    NotAWorksetFolder,
    TransitionRefused,
    WorksetError,
    WorksetExists,
    WorksetNotFound,
)
from workset_monitor.lifecycle import Lifecycle
from workset_monitor.observability import logger, publish
from workset_monitor.settings import settings
from workset_monitor.store import InvalidPageToken, WorksetStore


class UnreadableBody(WorksetError):
    """A body that is JSON, but more than Python's decoder takes (a number of more than 4,300 digits)."""


ERROR_STATUS: dict[type[WorksetError], tuple[int, str]] = {
    WorksetNotFound: (404, "not_found"),
    ClusterNotFound: (404, "not_found"),
    FolderNotFound: (404, "not_found"),
    WorksetExists: (409, "conflict"),
    ClusterRetired: (409, "cluster_retired"),
    TransitionRefused: (409, "transition_refused"),
    ConcurrentUpdate: (409, "concurrent_update"),
    LeaseLost: (409, "lease_lost"),
    NotAWorksetFolder: (422, "not_a_workset_folder"),
    InvalidRequest: (422, "invalid_request"),
    InvalidPageToken: (400, "bad_request"),
    UnreadableBody: (400, "bad_request"),
}

ClusterPath = Annotated[
    str,
    PathParam(min_length=1, max_length=128, description="A cluster's name, as registered (at most 128 characters)."),
]
"""A cluster name in a path: longer than a registered name can be, it is refused (422) before any lookup."""

HTTP_METHODS = frozenset({"GET", "PUT", "POST", "DELETE", "PATCH", "HEAD"})
SIGNED_HEADERS = ["Authorization", "Content-Type", "X-Amz-Date", "X-Amz-Security-Token", "X-Amz-Content-Sha256"]

_lifecycle: Lifecycle | None = None


def lifecycle() -> Lifecycle:
    global _lifecycle
    if _lifecycle is None:
        config = settings()
        _lifecycle = Lifecycle(
            WorksetStore(config.table_name, retry_base_seconds=config.retry_base_seconds),
            lease_seconds=config.lease_seconds,
        )
    return _lifecycle


def read_json_body(body: str | bytes) -> Any:
    """A request body as JSON, for the resolvers (`json_body_deserializer`).

    Malformed JSON raises JSONDecodeError (Powertools answers 422), a body that is not UTF-8 UnicodeDecodeError, one
    nested too deeply RecursionError (each answered 400 below). Any other ValueError of the decoder is about a value
    too big to read (Python refuses to turn more than 4,300 digits into an int), so it is the caller's: 400 too.
    """
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise
    except ValueError as exc:
        raise UnreadableBody(f"the body cannot be read: {_first_sentence(exc)}") from None


def _first_sentence(exc: Exception) -> str:
    """`Exceeds the limit (4300 digits) for integer string conversion: value has 5000 digits; use ...` -> its part
    before the colon, which names the limit and not the remedy for a server."""
    return str(exc).split(":", 1)[0].strip().lower() or type(exc).__name__


def request_id(event: Mapping[str, Any]) -> str | None:
    """API Gateway's id of the request: the correlation id of the lines it leads to, and of its error answer."""
    context = event.get("requestContext")
    return context.get("requestId") if isinstance(context, Mapping) else None


def path_id(raw: str) -> str:
    """A workset id (or cluster name) from the path: percent-decoded, in Unicode's composed form (NFC), as stored."""
    return unicodedata.normalize("NFC", unquote(raw))


def workset_in_path(raw: str) -> str:
    """The id of the workset a request is about (`path_id`), named by the `workset_id` key on every later line of
    the invocation (the logger's keys are cleared when the next one starts)."""
    workset_id = path_id(raw)
    logger.thread_safe_append_keys(workset_id=workset_id)
    return workset_id


def cluster_in_path(raw: str) -> str:
    """The name of the cluster a request is about (`path_id`), named by the `cluster` key on every later line."""
    name = path_id(raw)
    logger.thread_safe_append_keys(cluster=name)
    return name


class ErrorDetail(BaseModel):
    code: str = Field(description="What went wrong, for programs: not_found, transition_refused, lease_lost, ...")
    message: str = Field(description="What went wrong, for people.")
    request_id: str = Field(description="The API Gateway request id; quote it when asking for help.")


class ErrorBody(BaseModel):
    """Every error the API answers, from a handler or from API Gateway itself, has this shape."""

    model_config = ConfigDict(title="Error")

    error: ErrorDetail


ERROR_DESCRIPTIONS = {
    204: "Nothing to answer.",
    400: "The request cannot be read: a malformed body or page token.",
    403: "Refused by API Gateway: no SigV4 signature, a wrong one, or credentials without access.",
    404: "No such workset, cluster or folder.",
    409: "Refused by the state of things: a transition the rules forbid, a lost lease, a concurrent update.",
    413: "Refused by API Gateway: the body is over 10 MB.",
    415: "The body is not JSON.",
    422: "The request does not match the documented shape; the message says where.",
}


def answers(
    ok: type[BaseModel] | None, *errors: int, ok_status: int = 200, signed: bool = True
) -> dict[int, OpenAPIResponse]:
    """The documented answers of a route: its success body, and the error statuses it can give (with those of API
    Gateway's signature check when the route is `signed`)."""
    documented: dict[int, OpenAPIResponse] = {}
    if ok is not None:
        documented[ok_status] = {"description": "Success.", "content": {"application/json": {"model": ok}}}
    for status in sorted({400, 422, *errors, *((403,) if signed else ())}):
        if status == 204:
            documented[status] = {"description": ERROR_DESCRIPTIONS[status], "content": {}}
        else:
            error = {"application/json": {"model": ErrorBody}}
            documented[status] = {"description": ERROR_DESCRIPTIONS[status], "content": error}
    return documented


def cors() -> CORSConfig | None:
    """CORS for the origins the deployment allows (ALLOWED_ORIGINS), or none; preflight needs no credentials."""
    origins = settings().allowed_origins
    if not origins:
        return None
    return CORSConfig(
        allow_origin=origins[0], extra_origins=list(origins[1:]), allow_headers=SIGNED_HEADERS, max_age=600
    )


class RouteMethods:
    """The methods each path of the API has, from its OpenAPI document's paths (`/worksets/{workset_id}/lock`)."""

    def __init__(self, paths: Mapping[str, Mapping[str, Any]]) -> None:
        # Literal paths first, as the resolvers match them: /worksets/next before /worksets/{workset_id}.
        templates = sorted(paths, key=lambda template: (template.count("{"), template))
        self._routes = [
            (_path_pattern(template), frozenset(method.upper() for method in paths[template]) & HTTP_METHODS)
            for template in templates
        ]

    def of(self, path: str) -> frozenset[str] | None:
        """The methods of the route `path` (as requested, percent-encoded) belongs to; None for no documented route."""
        return next((methods for pattern, methods in self._routes if pattern.match(path)), None)


def _path_pattern(template: str) -> re.Pattern[str]:
    parts = ["[^/]+" if part.startswith("{") else re.escape(part) for part in template.split("/")]
    return re.compile("^" + "/".join(parts) + "$")


def answer_preflights(
    app: APIGatewayRestResolver, config: CORSConfig, paths: Callable[[], Mapping[str, Mapping[str, Any]]]
) -> None:
    """Answer CORS preflight (`OPTIONS`) with the methods the requested path has in the whole API, the write routes'
    too (`paths`: the API's OpenAPI paths, read once, when the first preflight comes), for the allowed origins only:
    another origin gets no CORS header at all. Powertools adds the origin, headers and max-age of `config`.

    Limitations:
        a path the document does not list (the document itself, the docs page) gets Powertools' own preflight answer,
        with the methods of this function's routes (GET).
    """

    @cache
    def route_methods() -> RouteMethods:
        return RouteMethods(paths())

    def preflight(app: APIGatewayRestResolver, next_middleware: NextMiddleware) -> Response[Any]:
        event = app.current_event
        if event.http_method != "OPTIONS":
            return next_middleware(app)
        if config.allowed_origin(extract_origin_header(event.resolved_headers_field)) is None:
            return Response(status_code=204, content_type=None, body="")

        methods = route_methods().of(event.path)
        if methods is None:
            return next_middleware(app)
        allow = ",".join(sorted(methods | {"OPTIONS"}))
        return Response(status_code=204, content_type=None, headers={"Access-Control-Allow-Methods": allow}, body="")

    app.use(middlewares=[preflight])


def _problem(item: Mapping[str, Any]) -> str:
    """One validation error in words: where, and what is wrong. A query parameter given more than once is told so;
    each one takes one value (`?state=ready&state=error` is two questions)."""
    location = tuple(item.get("loc", ()))
    where = ".".join(str(part) for part in location)
    given = item.get("input")
    if location[:1] == ("query",) and isinstance(given, list) and len(given) > 1:
        values = ", ".join(str(value) for value in given)[:200]
        return f"{where}: takes one value, not {len(given)} ({values}); ask once for each"
    return f"{where}: {item.get('msg', item.get('type', 'invalid'))}"


def answer_errors_in_one_shape(app: APIGatewayRestResolver) -> None:
    """Answer every error, from the domain, validation or routing, as `{"error": {code, message, request_id}}`."""

    def error(status: int, code: str, message: str) -> Response[Any]:
        body = {"error": {"code": code, "message": message, "request_id": app.current_event.request_context.request_id}}
        return Response(status_code=status, content_type=content_types.APPLICATION_JSON, body=body)

    @app.exception_handler(WorksetError)
    def handle_domain_error(exc: WorksetError) -> Response[Any]:
        status, code = ERROR_STATUS.get(type(exc), (400, "bad_request"))
        logger.info("request refused", status=status, code=code, reason=str(exc))
        conflict = measures.lock_conflict(code)
        if conflict is not None:
            publish([conflict])
        return error(status, code, str(exc))

    @app.exception_handler(RequestValidationError)
    def handle_invalid_request(exc: RequestValidationError) -> Response[Any]:
        problems = [_problem(item) for item in exc.errors()]
        return error(422, "invalid_request", "; ".join(problems)[:2000] or "the request is not valid")

    @app.exception_handler(RequestUnsupportedContentType)
    def handle_unsupported_content_type(exc: RequestUnsupportedContentType) -> Response[Any]:
        return error(415, "unsupported_media_type", "send the body as JSON (content-type: application/json)")

    @app.exception_handler(UnicodeDecodeError)
    def handle_undecodable_body(exc: UnicodeDecodeError) -> Response[Any]:
        return error(400, "bad_request", "the body is not UTF-8 text")

    @app.exception_handler(RecursionError)
    def handle_nested_body(exc: RecursionError) -> Response[Any]:
        return error(400, "bad_request", "the body is nested too deeply")

    @app.not_found
    def handle_not_found(exc: Exception) -> Response[Any]:
        return error(404, "not_found", f"no route {app.current_event.http_method} {app.current_event.path}")
