"""API read function: the GET routes, the OpenAPI document of the whole API with its docs page, the web dashboard's
static shell, and CORS preflight.

Runs with read-only permissions; the write routes are the write function's (`write.py`), from the same folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import dashboard_shell
from api_base import (
    ClusterPath,
    answer_errors_in_one_shape,
    answer_preflights,
    answers,
    cluster_in_path,
    cors,
    lifecycle,
    read_json_body,
    request_id,
    workset_in_path,
)
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.openapi.models import APIKey, APIKeyIn, Server
from aws_lambda_powertools.event_handler.openapi.params import Path as PathParam
from aws_lambda_powertools.event_handler.openapi.params import Query
from aws_lambda_powertools.utilities.typing import LambdaContext
from views import (
    ClusterList,
    ClusterLoadView,
    Health,
    HistoryPage,
    QueueStats,
    SchedulerStats,
    WorksetDetail,
    WorksetPage,
)

from workset_monitor.models import Cluster, Priority, State, Workset, to_json_dict, utcnow
from workset_monitor.observability import function_metrics, log_keys, logger, traced
from workset_monitor.scheduler import recent_decisions
from workset_monitor.scheduling import is_live

metrics = function_metrics()

HISTORY_SHOWN = 100
TITLE = "Workset monitor API"
VERSION = "1.0.0"
DESCRIPTION = (
    "The control plane of genomics worksets: register, queue, lease, run and follow them. Every route but `GET /` "
    "(and CORS preflight) needs an AWS SigV4 signature (service `execute-api`). Errors have one shape: "
    '`{"error": {"code", "message", "request_id"}}`; codes in capitals come from API Gateway itself.'
)
SIGV4 = {
    "sigv4": APIKey(
        name="Authorization",
        in_=APIKeyIn.header,
        description="AWS Signature Version 4 for the service `execute-api`, from the standard AWS credentials.",
        openapi_extensions={"x-amazon-apigateway-authtype": "awsSigv4"},
    )
}

Id = Annotated[
    str, PathParam(min_length=1, max_length=1024, description="A workset id, percent-encoded as one segment.")
]
ClusterName = Annotated[str, Query(min_length=1, max_length=128)]
Limit = Annotated[int, Query(ge=1, le=500)]
PageToken = Annotated[str | None, Query(max_length=4096)]

CORS = cors()
# NOTE: the resolver is built here, by name, so Powertools' OpenAPI merge finds it when it reads this file.
app = APIGatewayRestResolver(enable_validation=True, cors=CORS, json_body_deserializer=read_json_body)
answer_errors_in_one_shape(app)
app.configure_openapi_merge(
    path=str(Path(__file__).parent),
    pattern=["read.py", "write.py"],
    title=TITLE,
    version=VERSION,
    description=DESCRIPTION,
    security_schemes=SIGV4,
    security=[{"sigv4": []}],
    # NOTE: relative to the document, so deployed it is under the stage (/dev/...) and locally at the root.
    servers=[Server(url=".")],
    on_conflict="error",
)
app.configure_openapi(security_schemes=SIGV4)  # so `GET /` may say it needs none
app.enable_swagger(path="/docs", title=TITLE, version=VERSION)
if CORS is not None:
    # Every OPTIONS of the API comes here (the template's Preflight event), the write routes' too.
    answer_preflights(app, CORS, lambda: app.get_openapi_merge_schema()["paths"])


@app.get("/", summary="Health check; needs no signature", responses=answers(Health, signed=False), security=[{}])
def health() -> dict[str, Any]:
    return {"service": "workset-monitor", "status": "ok"}


@app.get("/openapi.json", summary="This API's OpenAPI document", include_in_schema=False)
def openapi_document() -> Response[str]:
    return Response(
        status_code=200, content_type=content_types.APPLICATION_JSON, body=app.get_openapi_merge_json_schema()
    )


# NOTE: the dashboard's page and files carry no data; API Gateway serves them unsigned (template.yaml), and the page
# signs every data call it makes. They are left out of the OpenAPI document, as the document itself is.
@app.get("/dashboard", summary="The web dashboard", include_in_schema=False)
def dashboard_page() -> Response[str]:
    return dashboard_shell.page()


@app.get("/dashboard/<asset>", summary="A script, style sheet or icon of the web dashboard", include_in_schema=False)
def dashboard_asset(asset: str) -> Response[str]:
    return dashboard_shell.asset(asset)


# NOTE: registered before /worksets/<workset_id>, so "next" is never taken for a workset id.
@app.get(
    "/worksets/next",
    summary="The ready workset the scheduler assigned to a cluster that should run first (204 if none)",
    responses=answers(Workset, 204),
)
def next_workset(cluster: ClusterName) -> Response[dict[str, Any] | None]:
    workset = lifecycle().next_for(cluster)
    if workset is None:
        return Response(status_code=204)
    return Response(status_code=200, content_type=content_types.APPLICATION_JSON, body=to_json_dict(workset))


@app.get(
    "/worksets",
    summary="A page of worksets: those a cluster holds, or those of a state in queue order, or all oldest first",
    responses=answers(WorksetPage),
)
def list_worksets(
    state: Annotated[State | None, Query()] = None,
    priority: Annotated[Priority | None, Query()] = None,
    cluster: Annotated[str | None, Query(min_length=1, max_length=128)] = None,
    limit: Limit = 50,
    next_token: PageToken = None,
) -> dict[str, Any]:
    worksets, token = lifecycle().store.list_worksets(
        state=state, priority=priority, cluster=cluster, limit=limit, page_token=next_token
    )
    return {"worksets": [to_json_dict(workset) for workset in worksets], "next_token": token}


@app.get(
    "/worksets/<workset_id>",
    summary="A workset with its newest 100 history entries",
    responses=answers(WorksetDetail, 404),
)
def get_workset(workset_id: Id) -> dict[str, Any]:
    workset, history = lifecycle().store.get_with_history(workset_in_path(workset_id), limit=HISTORY_SHOWN)
    return {
        **to_json_dict(workset),
        "history": [to_json_dict(entry) for entry in history],
        "history_complete": bool(history) and history[0].event == "registered",
    }


@app.get(
    "/worksets/<workset_id>/history",
    summary="A page of a workset's history, oldest first",
    responses=answers(HistoryPage, 404),
)
def get_history(workset_id: Id, limit: Limit = 100, next_token: PageToken = None) -> dict[str, Any]:
    store, workset_id = lifecycle().store, workset_in_path(workset_id)
    entries, token = store.history(workset_id, limit=limit, page_token=next_token)
    if not entries and next_token is None:
        store.get(workset_id, consistent=False)  # no history at all: 404 unless the workset exists
    return {"history": [to_json_dict(entry) for entry in entries], "next_token": token}


@app.get("/queue/stats", summary="Worksets by state, and ready ones by priority", responses=answers(QueueStats))
def queue_stats() -> dict[str, Any]:
    counters = lifecycle().store.counters()
    by_state = {state.value: counters.get(f"state:{state.value}", 0) for state in State}
    ready_by_priority = {
        priority.value: counters[f"ready:{priority.value}"]
        for priority in Priority
        if counters.get(f"ready:{priority.value}")
    }
    return {"by_state": by_state, "ready_by_priority": ready_by_priority}


RECENT_DECISIONS = 200


@app.get(
    "/scheduler/stats",
    summary="The clusters' load, the ready queue, and what the scheduler's recent ticks decided, with reasons",
    responses=answers(SchedulerStats),
)
def scheduler_stats() -> dict[str, Any]:
    store = lifecycle().store
    now = utcnow()
    counters = store.counters()
    clusters = [
        ClusterLoadView(
            name=load.cluster.name,
            status=load.cluster.status,
            live=is_live(load.cluster, now),
            active_worksets=load.active,
            max_worksets=load.cluster.max_worksets,
            active_vcpus=load.vcpus_used,
            vcpus=load.cluster.vcpus,
        ).model_dump()
        for load in store.cluster_loads()
    ]
    recent = recent_decisions(store.recent_ticks(limit=RECENT_DECISIONS, now=now), RECENT_DECISIONS)
    ready = counters.get(f"state:{State.READY.value}", 0)
    return {
        "ready": ready,
        "unassigned": max(ready - counters.get("ready:assigned", 0), 0),
        "clusters": clusters,
        "last_tick": store.last_tick(),
        "recent_decisions": recent,
    }


@app.get("/clusters", summary="Every registered cluster", responses=answers(ClusterList))
def list_clusters() -> dict[str, Any]:
    return {"clusters": [to_json_dict(cluster) for cluster in lifecycle().store.list_clusters()]}


@app.get("/clusters/<name>", summary="One cluster", responses=answers(Cluster, 404))
def get_cluster(name: ClusterPath) -> dict[str, Any]:
    return to_json_dict(lifecycle().store.get_cluster(cluster_in_path(name)))


@metrics.log_metrics
@traced
@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    with log_keys(correlation_id=request_id(event)):
        return app.resolve(event, context)
