"""API write function: registering worksets, leases, state changes and clusters (POST, PUT and DELETE routes).

The read routes are the read function's (`read.py`), from the same folder, with read-only permissions.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from api_base import (
    ClusterPath,
    answer_errors_in_one_shape,
    answers,
    cluster_in_path,
    cors,
    lifecycle,
    read_json_body,
    request_id,
    workset_in_path,
)
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.openapi.params import Path as PathParam
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ConfigDict, Field
from views import Registered

from workset_monitor import measures
from workset_monitor.bucket import FolderSnapshot, WorksetBucket
from workset_monitor.errors import FolderNotFound, NotAWorksetFolder
from workset_monitor.layout import SENTINEL_READY, parse_sentinel_key, sentinel_key_problem
from workset_monitor.models import (
    AWS_REGION_PATTERN,
    AWS_ZONE_PATTERN,
    Cluster,
    ClusterStatus,
    ErrorCategory,
    State,
    Workset,
    to_json_dict,
    utcnow,
)
from workset_monitor.observability import function_metrics, log_keys, logger, publish, traced
from workset_monitor.registration import Outcome, Registrar
from workset_monitor.settings import settings

metrics = function_metrics()

# NOTE: the resolver is built here, by name, so Powertools' OpenAPI merge finds it when it reads this file.
app = APIGatewayRestResolver(enable_validation=True, cors=cors(), json_body_deserializer=read_json_body)
answer_errors_in_one_shape(app)
_registrar: Registrar | None = None

Id = Annotated[
    str, PathParam(min_length=1, max_length=1024, description="A workset id, percent-encoded as one segment.")
]
LeaseToken = Annotated[int, Field(strict=True, ge=1, le=2**53, description="The fencing token the claim gave.")]
Actor = Annotated[str, Field(min_length=1, max_length=256, description="Who asks: a person, a script, an agent.")]
Reason = Annotated[str, Field(max_length=4096, description="Why, in words; kept in the history.")]


def registrar() -> Registrar:
    global _registrar
    if _registrar is None:
        config = settings()
        bucket = WorksetBucket(config.bucket)

        def read_existing_folder(folder: str) -> FolderSnapshot:
            snapshot = bucket.snapshot(folder)
            if not snapshot.sizes:
                raise FolderNotFound(config.bucket, folder)
            return snapshot

        _registrar = Registrar(lifecycle().store, read_existing_folder, config.bucket)
    return _registrar


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RegisterRequest(_Body):
    bucket: str = Field(min_length=3, max_length=63, description="The workset bucket.")
    prefix: str = Field(
        min_length=1, max_length=1024, description="The folder's key, e.g. daylily_monitoring/active_worksets/hg002/."
    )


class ClusterRegistration(_Body):
    """What an agent says of its cluster when it registers it (once, at its start), or a person registers it again.

    A field left out keeps what is stored (a new cluster: its default); a field sent as null goes back to its default.
    """

    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    region: str | None = Field(
        default=None,
        max_length=64,
        pattern=AWS_REGION_PATTERN,
        description="Its AWS region, e.g. us-west-2; default: the API's own region.",
    )
    availability_zone: str | None = Field(
        default=None, max_length=64, pattern=AWS_ZONE_PATTERN, description="Its AZ, e.g. us-west-2b; default: none."
    )
    max_worksets: int | None = Field(default=None, ge=1, le=10_000, description="Worksets at once; default: 1.")
    vcpus: int | None = Field(default=None, ge=0, le=10_000_000, description="Its vCPUs; default: 0 (not counted).")
    cost_per_vcpu_hour: float | None = Field(default=None, ge=0, le=1_000, description="USD; default: 0.")


class ClusterHeartbeat(_Body):
    status: Literal[ClusterStatus.ACTIVE, ClusterStatus.DRAINING, ClusterStatus.UNAVAILABLE] | None = Field(
        default=None, description="draining: finish what it holds, take nothing new; retire with DELETE."
    )


class ClaimRequest(_Body):
    owner: str = Field(min_length=1, max_length=256, description="Who holds the lease, e.g. the agent's host and pid.")
    cluster: str = Field(min_length=1, max_length=128)
    lease_seconds: int | None = Field(default=None, ge=60, le=86_400)


class ReleaseRequest(_Body):
    lease_token: LeaseToken
    actor: Actor = "api"
    reason: Reason = "lease given back"


class HeartbeatRequest(_Body):
    lease_token: LeaseToken
    lease_seconds: int | None = Field(default=None, ge=60, le=86_400)
    progress: str | None = Field(default=None, max_length=200, description="staging, pipeline running, ...")


class ActionRequest(_Body):
    actor: Actor = "api"
    reason: Reason = ""


class StateChangeRequest(_Body):
    state: State
    reason: Reason = ""
    actor: Actor = "api"
    lease_token: LeaseToken | None = None
    error_category: ErrorCategory | None = None
    error_reasons: list[Annotated[str, Field(max_length=500)]] = Field(default_factory=list, max_length=50)


@app.post(
    "/worksets",
    summary="Register an existing folder as a workset, through the same validation as a dropped daylily.ready",
    responses={**answers(Registered, 404, 413, 415, ok_status=201), **answers(Registered)},
)
def register_workset(request: RegisterRequest) -> Response[dict[str, Any]]:
    """201 with the new workset (state `error`, with every reason, for a folder that breaks the rules); 200 when
    it was registered already (a failed one starts a new attempt if its folder is valid now)."""
    config = settings()
    if request.bucket != config.bucket:
        raise NotAWorksetFolder(f"worksets live in the bucket {config.bucket}, not in {request.bucket}")
    folder = request.prefix.lstrip("/")
    key = (folder if folder.endswith("/") else folder + "/") + SENTINEL_READY
    sentinel = parse_sentinel_key(key, config.prefix)
    if sentinel is None:
        raise NotAWorksetFolder(
            f"s3://{request.bucket}/{folder} is not a workset folder: " + sentinel_key_problem(key, config.prefix)
        )

    logger.thread_safe_append_keys(workset_id=sentinel.workset_id)
    registration = registrar().on_sentinel(sentinel, None)

    publish([measures.registration(registration.outcome.value)])
    status = 201 if registration.outcome is Outcome.REGISTERED else 200
    body = {**to_json_dict(registration.workset), "outcome": registration.outcome.value}
    return Response(status_code=status, content_type=content_types.APPLICATION_JSON, body=body)


@app.post(
    "/worksets/<workset_id>/lock",
    summary="Claim a ready workset for a cluster: take its lease, whose token fences every later write",
    responses=answers(Workset, 404, 409, 413, 415),
)
def claim_workset(workset_id: Id, request: ClaimRequest) -> dict[str, Any]:
    workset = lifecycle().claim(
        workset_in_path(workset_id), owner=request.owner, cluster=request.cluster, lease_seconds=request.lease_seconds
    )
    metrics.add_metric(name="Claims", unit="Count", value=1)
    return to_json_dict(workset)


@app.delete(
    "/worksets/<workset_id>/lock",
    summary="Give a lease back before the run starts (locked only, with its token): ready again, in the same attempt",
    responses=answers(Workset, 404, 409, 413, 415),
)
def release_workset(workset_id: Id, request: ReleaseRequest) -> dict[str, Any]:
    workset = lifecycle().release(
        workset_in_path(workset_id), lease_token=request.lease_token, actor=request.actor, reason=request.reason
    )
    return to_json_dict(workset)


@app.post(
    "/worksets/<workset_id>/heartbeat",
    summary="Extend a lease, with the agent's progress step; a canceled workset answers with its state",
    responses=answers(Workset, 404, 409, 413, 415),
)
def heartbeat(workset_id: Id, request: HeartbeatRequest) -> dict[str, Any]:
    workset = lifecycle().heartbeat(
        workset_in_path(workset_id),
        lease_token=request.lease_token,
        lease_seconds=request.lease_seconds,
        progress=request.progress,
    )
    return to_json_dict(workset)


def _act(workset_id: str, to_state: State, request: ActionRequest | None) -> dict[str, Any]:
    request = request or ActionRequest()
    workset = lifecycle().change_state(
        workset_in_path(workset_id), to_state, actor=request.actor, reason=request.reason
    )
    return to_json_dict(workset)


@app.post(
    "/worksets/<workset_id>/cancel",
    summary="Stop a workset; a running agent learns it from its next heartbeat and stops its run",
    responses=answers(Workset, 404, 409, 413, 415),
)
def cancel(workset_id: Id, request: ActionRequest | None = None) -> dict[str, Any]:
    return _act(workset_id, State.CANCELED, request)


@app.post(
    "/worksets/<workset_id>/retry",
    summary="Start a new attempt of a failed, canceled or ignored workset, its folder validated again first",
    responses=answers(Workset, 404, 409, 413, 415),
)
def retry(workset_id: Id, request: ActionRequest | None = None) -> dict[str, Any]:
    request = request or ActionRequest()
    workset = lifecycle().retry(
        workset_in_path(workset_id), actor=request.actor, reason=request.reason, registrar=registrar()
    )
    return to_json_dict(workset)


@app.post(
    "/worksets/<workset_id>/archive",
    summary="Put a finished workset away",
    responses=answers(Workset, 404, 409, 413, 415),
)
def archive(workset_id: Id, request: ActionRequest | None = None) -> dict[str, Any]:
    return _act(workset_id, State.ARCHIVED, request)


@app.post(
    "/worksets/<workset_id>/restore",
    summary="Bring an archived workset back to the queue as a new attempt, validated again as a retry is",
    responses=answers(Workset, 404, 409, 413, 415),
)
def restore(workset_id: Id, request: ActionRequest | None = None) -> dict[str, Any]:
    request = request or ActionRequest()
    workset = lifecycle().restore(
        workset_in_path(workset_id), actor=request.actor, reason=request.reason, registrar=registrar()
    )
    return to_json_dict(workset)


@app.put(
    "/worksets/<workset_id>/state",
    summary="Move a workset to a state the rules allow; under a lease, only its holder (with the token) may",
    responses=answers(Workset, 404, 409, 413, 415),
)
def change_state(workset_id: Id, request: StateChangeRequest) -> dict[str, Any]:
    workset = lifecycle().change_state(
        workset_in_path(workset_id),
        request.state,
        actor=request.actor,
        reason=request.reason,
        lease_token=request.lease_token,
        error_category=request.error_category,
        error_reasons=tuple(request.error_reasons),
    )
    return to_json_dict(workset)


@app.post(
    "/clusters",
    summary="Register a cluster, or register it again (its agent does, once at start): it is active after this; "
    "fields left out keep their value",
    responses=answers(Cluster, 413, 415),
)
def register_cluster(registration: ClusterRegistration) -> dict[str, Any]:
    given = registration.model_dump(exclude_unset=True, exclude={"name"})
    cluster = lifecycle().register_cluster(registration.name, given, region=settings().region)
    return to_json_dict(cluster)


@app.post(
    "/clusters/<name>/heartbeat",
    summary="Keep a registered cluster live; without a status it keeps the one it has (draining stays draining)",
    responses=answers(Cluster, 404, 409, 413, 415),
)
def cluster_heartbeat(name: ClusterPath, request: ClusterHeartbeat | None = None) -> dict[str, Any]:
    status = request.status if request else None
    return to_json_dict(lifecycle().store.touch_cluster(cluster_in_path(name), at=utcnow(), status=status))


@app.delete(
    "/clusters/<name>",
    summary="Retire a cluster: no new work; what it was assigned and has not claimed returns to the queue",
    responses=answers(Cluster, 404),
)
def retire_cluster(name: ClusterPath) -> dict[str, Any]:
    cluster = lifecycle().store.retire_cluster(cluster_in_path(name))
    logger.info("cluster retired", cluster=cluster.name)
    return to_json_dict(cluster)


@metrics.log_metrics
@traced
@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    with log_keys(correlation_id=request_id(event)):
        return app.resolve(event, context)
