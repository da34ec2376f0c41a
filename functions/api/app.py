"""API function: the HTTPS API for people, the CLI and cluster agents (API Gateway REST, proxy integration).

Workset ids arrive percent-encoded in the path, as API Gateway passes REST paths, and are decoded here.
"""

from __future__ import annotations

import unicodedata
from typing import Annotated, Any
from urllib.parse import unquote

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.openapi.exceptions import (
    RequestUnsupportedContentType,
    RequestValidationError,
)
from aws_lambda_powertools.event_handler.openapi.params import Query
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ConfigDict, Field

from workset_monitor.errors import (
    ClusterNotFound,
    ConcurrentUpdate,
    LeaseLost,
    TransitionRefused,
    WorksetError,
    WorksetExists,
    WorksetNotFound,
)
from workset_monitor.lifecycle import Lifecycle
from workset_monitor.models import Cluster, ErrorCategory, State, to_json_dict
from workset_monitor.observability import logger, metrics
from workset_monitor.settings import settings
from workset_monitor.store import InvalidPageToken, WorksetStore

app = APIGatewayRestResolver(enable_validation=True)
HISTORY_SHOWN = 100
_lifecycle: Lifecycle | None = None

ERROR_STATUS: dict[type[WorksetError], tuple[int, str]] = {
    WorksetNotFound: (404, "not_found"),
    ClusterNotFound: (404, "not_found"),
    WorksetExists: (409, "conflict"),
    TransitionRefused: (409, "transition_refused"),
    ConcurrentUpdate: (409, "concurrent_update"),
    LeaseLost: (409, "lease_lost"),
    InvalidPageToken: (400, "bad_request"),
}


def lifecycle() -> Lifecycle:
    global _lifecycle
    if _lifecycle is None:
        config = settings()
        _lifecycle = Lifecycle(
            WorksetStore(config.table_name, retry_base_seconds=config.retry_base_seconds),
            lease_seconds=config.lease_seconds,
        )
    return _lifecycle


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ClusterRegistration(_Body):
    """What an agent says of its cluster when it registers it or renews its heartbeat."""

    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    region: str = Field(default="us-west-2", min_length=1, max_length=64)
    availability_zone: str | None = Field(default=None, max_length=64)
    max_worksets: int = Field(default=1, ge=1, le=10_000)
    vcpus: int = Field(default=0, ge=0, le=10_000_000)
    cost_per_vcpu_hour: float = Field(default=0.0, ge=0, le=1_000)


class ClaimRequest(_Body):
    owner: str = Field(min_length=1, max_length=256, description="Who holds the lease, e.g. the agent's host and pid.")
    cluster: str = Field(min_length=1, max_length=128)
    lease_seconds: int | None = Field(default=None, ge=60, le=86_400)


LeaseToken = Annotated[int, Field(strict=True, ge=1, le=2**53, description="The fencing token the claim gave.")]


class HeartbeatRequest(_Body):
    lease_token: LeaseToken
    lease_seconds: int | None = Field(default=None, ge=60, le=86_400)
    progress: str | None = Field(default=None, max_length=200, description="staging, pipeline running, ...")


class ActionRequest(_Body):
    actor: str = Field(default="api", min_length=1, max_length=256)
    reason: str = Field(default="", max_length=4096)


class StateChangeRequest(_Body):
    state: State
    reason: str = Field(default="", max_length=4096)
    actor: str = Field(default="api", min_length=1, max_length=256)
    lease_token: LeaseToken | None = None
    error_category: ErrorCategory | None = None
    error_reasons: list[Annotated[str, Field(max_length=500)]] = Field(default_factory=list, max_length=50)


def _workset_id(raw: str) -> str:
    """A workset id from the path: percent-decoded, in Unicode's composed form (NFC) as ids are stored."""
    return unicodedata.normalize("NFC", unquote(raw))


def _error(status: int, code: str, message: str) -> Response:
    body = {"error": {"code": code, "message": message, "request_id": app.current_event.request_context.request_id}}
    return Response(status_code=status, content_type=content_types.APPLICATION_JSON, body=body)


@app.exception_handler(WorksetError)
def handle_domain_error(exc: WorksetError) -> Response:
    status, code = ERROR_STATUS.get(type(exc), (400, "bad_request"))
    logger.info("request refused", status=status, code=code, reason=str(exc))
    return _error(status, code, str(exc))


@app.exception_handler(RequestValidationError)
def handle_invalid_request(exc: RequestValidationError) -> Response:
    problems = [
        f"{'.'.join(str(part) for part in error.get('loc', ()))}: {error.get('msg', error.get('type', 'invalid'))}"
        for error in exc.errors()
    ]
    return _error(422, "invalid_request", "; ".join(problems)[:2000] or "the request is not valid")


@app.exception_handler(RequestUnsupportedContentType)
def handle_unsupported_content_type(exc: RequestUnsupportedContentType) -> Response:
    return _error(415, "unsupported_media_type", "send the body as JSON (content-type: application/json)")


@app.exception_handler(UnicodeDecodeError)
def handle_undecodable_body(exc: UnicodeDecodeError) -> Response:
    return _error(400, "bad_request", "the body is not UTF-8 text")


@app.exception_handler(RecursionError)
def handle_nested_body(exc: RecursionError) -> Response:
    return _error(400, "bad_request", "the body is nested too deeply")


@app.not_found
def handle_not_found(exc: Exception) -> Response:
    return _error(404, "not_found", f"no route {app.current_event.http_method} {app.current_event.path}")


@app.get("/")
def health() -> dict[str, Any]:
    return {"service": "workset-monitor", "status": "ok"}


# NOTE: registered before /worksets/<workset_id>, so "next" is never taken for a workset id.
@app.get("/worksets/next")
def next_workset(cluster: Annotated[str, Query(min_length=1, max_length=128)]) -> Response[dict[str, Any] | None]:
    workset = lifecycle().next_for(cluster)
    if workset is None:
        return Response(status_code=204)
    return Response(status_code=200, content_type=content_types.APPLICATION_JSON, body=to_json_dict(workset))


@app.get("/worksets")
def list_worksets(
    state: Annotated[State | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    next_token: Annotated[str | None, Query(max_length=4096)] = None,
) -> dict[str, Any]:
    worksets, token = lifecycle().store.list_worksets(state=state, limit=limit, page_token=next_token)
    return {"worksets": [to_json_dict(workset) for workset in worksets], "next_token": token}


@app.get("/worksets/<workset_id>")
def get_workset(workset_id: str) -> dict[str, Any]:
    """The workset with its newest 100 history entries, oldest first; `history_complete` says whether that is all."""
    workset, history = lifecycle().store.get_with_history(_workset_id(workset_id), limit=HISTORY_SHOWN)
    return {
        **to_json_dict(workset),
        "history": [to_json_dict(entry) for entry in history],
        "history_complete": bool(history) and history[0].event == "registered",
    }


@app.post("/worksets/<workset_id>/lock")
def claim_workset(workset_id: str, request: ClaimRequest) -> dict[str, Any]:
    workset = lifecycle().claim(
        _workset_id(workset_id), owner=request.owner, cluster=request.cluster, lease_seconds=request.lease_seconds
    )
    metrics.add_metric(name="Claims", unit="Count", value=1)
    return to_json_dict(workset)


@app.post("/worksets/<workset_id>/heartbeat")
def heartbeat(workset_id: str, request: HeartbeatRequest) -> dict[str, Any]:
    workset = lifecycle().heartbeat(
        _workset_id(workset_id),
        lease_token=request.lease_token,
        lease_seconds=request.lease_seconds,
        progress=request.progress,
    )
    return to_json_dict(workset)


def _act(workset_id: str, to_state: State, request: ActionRequest | None) -> dict[str, Any]:
    request = request or ActionRequest()
    workset = lifecycle().change_state(_workset_id(workset_id), to_state, actor=request.actor, reason=request.reason)
    return to_json_dict(workset)


@app.post("/worksets/<workset_id>/cancel")
def cancel(workset_id: str, request: ActionRequest | None = None) -> dict[str, Any]:
    """Stop a workset; a running agent learns it from its next heartbeat and stops its run."""
    return _act(workset_id, State.CANCELED, request)


@app.post("/worksets/<workset_id>/retry")
def retry(workset_id: str, request: ActionRequest | None = None) -> dict[str, Any]:
    """Start a new attempt of a failed, canceled or ignored workset, whatever attempts it used."""
    return _act(workset_id, State.READY, request)


@app.post("/worksets/<workset_id>/archive")
def archive(workset_id: str, request: ActionRequest | None = None) -> dict[str, Any]:
    return _act(workset_id, State.ARCHIVED, request)


@app.post("/worksets/<workset_id>/restore")
def restore(workset_id: str, request: ActionRequest | None = None) -> dict[str, Any]:
    """Bring an archived workset back to the queue as a new attempt."""
    return _act(workset_id, State.READY, request)


@app.put("/worksets/<workset_id>/state")
def change_state(workset_id: str, request: StateChangeRequest) -> dict[str, Any]:
    workset = lifecycle().change_state(
        _workset_id(workset_id),
        request.state,
        actor=request.actor,
        reason=request.reason,
        lease_token=request.lease_token,
        error_category=request.error_category,
        error_reasons=tuple(request.error_reasons),
    )
    return to_json_dict(workset)


@app.get("/queue/stats")
def queue_stats() -> dict[str, Any]:
    store = lifecycle().store
    counts = store.count_by_state()
    ready_by_priority: dict[str, int] = {}
    for workset in store.worksets_in(State.READY):
        ready_by_priority[workset.priority] = ready_by_priority.get(workset.priority, 0) + 1
    return {"by_state": {state.value: count for state, count in counts.items()}, "ready_by_priority": ready_by_priority}


@app.post("/clusters")
def register_cluster(registration: ClusterRegistration) -> dict[str, Any]:
    cluster = Cluster(**registration.model_dump())
    return to_json_dict(lifecycle().register_cluster(cluster))


@app.get("/clusters")
def list_clusters() -> dict[str, Any]:
    return {"clusters": [to_json_dict(cluster) for cluster in lifecycle().store.list_clusters()]}


@metrics.log_metrics
@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST, clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
