"""The DynamoDB store of worksets, their history and the clusters.

One table holds three kinds of item, told apart by their sort key:

| item     | pk                  | sk                   |
|----------|---------------------|----------------------|
| workset  | `WORKSET#<id>`      | `WORKSET`            |
| history  | `WORKSET#<id>`      | `HISTORY#<version>`  |
| cluster  | `CLUSTER#<name>`    | `CLUSTER`            |
| tick     | `SCHEDULER`         | `TICK`, `TICK#<time>#<suffix>` |
| counters | `STATS`             | `SHARD#<n>`          |

Every write of a workset is conditional on the version it was read at, and bumps it, so no two writers can both
succeed. A state change writes the workset and its history entry in one transaction; history entries are items of
their own, so a workset's history is not bounded by DynamoDB's 400 KB item limit.

The same transaction keeps two kinds of counter exact, so that reading them costs the same however many worksets
the table holds:

- **Per state** (and ready ones per priority, and assigned): a workset's change adds 1 to what it now counts in and
  takes 1 from what it counted in before, on one of `COUNTER_SHARDS` counter items (chosen by the workset id, so
  concurrent writes of different worksets rarely meet on one item). `count_by_state` reads them in one query.
- **Per cluster**: the cluster item holds `active_worksets` and `active_vcpus`, what the worksets holding the
  cluster (assigned, locked or running on it) take. A write that moves a workset onto or off a cluster updates them;
  the scheduler's assignment does so on the condition that the cluster has room, which is the capacity guard: two
  ticks that both planned on the same load cannot both fill the last place.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
import zlib
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import boto3
from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError
from pydantic import TypeAdapter

from .errors import (
    ClusterNotFound,
    ClusterRetired,
    ConcurrentUpdate,
    InvalidRequest,
    LeaseLost,
    TransitionRefused,
    WorksetError,
    WorksetExists,
    WorksetNotFound,
)
from .layout import MAX_REASON_CHARS, MAX_REASONS
from .models import (
    Cluster,
    ClusterStatus,
    ErrorCategory,
    HistoryEntry,
    Lease,
    Priority,
    State,
    Workset,
    sortable,
    utcnow,
)
from .retries import DEFAULT_BASE_SECONDS, retry_at
from .scheduling import ClusterLoad
from .states import check_transition

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient

WORKSET_SK = "WORKSET"
CLUSTER_SK = "CLUSTER"
SCHEDULER_PK = "SCHEDULER"
TICK_SK = "TICK"
RECENT_TICKS = timedelta(minutes=10)
"""How long a tick that decided something stays among the recent ones; its item expires by TTL after that."""
EXPIRES_AT = "expires_at_epoch"
"""The table's TTL attribute (unix seconds); items without it never expire."""
STATS_PK = "STATS"
COUNTER_SHARDS = 16
HISTORY_PREFIX = "HISTORY#"
CLUSTER_HELD_STATES = frozenset({State.READY, State.LOCKED, State.IN_PROGRESS})
"""The states of the worksets the by-cluster index holds (`Workset.active_cluster`): assigned while ready, or held."""
BY_STATE = "by-state"
BY_CLUSTER = "by-cluster"
BY_ENTITY = "by-entity"
BY_RETRY = "by-retry"
RETRY_QUEUE = "retry"

MAX_PARTITION_KEY_BYTES = 2048
"""DynamoDB's limit on a partition key value (UTF-8 bytes), in the table and its indexes."""
MAX_SORT_KEY_BYTES = 1024
"""DynamoDB's limit on a sort key value (UTF-8 bytes)."""
SORT_KEYS = frozenset({"sk", "queue_key", "created_key", "retry_key"})
"""The sort keys of the table and its indexes (template.yaml)."""

MAX_HISTORY_REASON_CHARS = 30_000
"""A history entry's reason (a whole folder's problems, an agent's log tail) stays far below the 400 KB item limit."""

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


class InvalidPageToken(WorksetError):
    def __init__(self) -> None:
        super().__init__("the page token is not one this API gave out")


class WorksetStore:
    """Reads and conditionally writes worksets, history and clusters in the workset table."""

    def __init__(
        self, table_name: str, client: DynamoDBClient | None = None, *, retry_base_seconds: int = DEFAULT_BASE_SECONDS
    ) -> None:
        self.table_name = table_name
        self.client: DynamoDBClient = client or boto3.client("dynamodb")
        self.retry_base_seconds = retry_base_seconds

    # --- worksets: reads -------------------------------------------------------------------------------------------

    def get(self, workset_id: str, *, consistent: bool = True) -> Workset:
        response = self.client.get_item(
            TableName=self.table_name, Key=_key(_known_workset_pk(workset_id), WORKSET_SK), ConsistentRead=consistent
        )
        if "Item" not in response:
            raise WorksetNotFound(workset_id)
        return _workset_from_item(_plain(response["Item"]))

    def get_with_history(self, workset_id: str, *, limit: int = 100) -> tuple[Workset, list[HistoryEntry]]:
        """The workset and its newest `limit` history entries (oldest first), in one strongly consistent query.

        The workset item sorts after its history entries (`WORKSET` > `HISTORY#...`), so reading the partition
        backwards returns the workset first, then its history newest first.
        """
        response = self.client.query(
            TableName=self.table_name,
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": _known_workset_pk(workset_id)}},
            ScanIndexForward=False,
            Limit=limit + 1,
            ConsistentRead=True,
        )
        items = [_plain(item) for item in response["Items"]]
        if not items or items[0]["sk"] != WORKSET_SK:
            raise WorksetNotFound(workset_id)
        history = [HistoryEntry.model_validate(item) for item in reversed(items[1:])]
        return _workset_from_item(items[0]), history

    def find(self, workset_id: str) -> Workset | None:
        try:
            return self.get(workset_id)
        except WorksetNotFound:
            return None

    def history(
        self, workset_id: str, *, limit: int = 100, page_token: str | None = None
    ) -> tuple[list[HistoryEntry], str | None]:
        """One page of a workset's history, oldest first."""
        pk = _known_workset_pk(workset_id)
        response = self.client.query(
            TableName=self.table_name,
            KeyConditionExpression="pk = :pk AND begins_with(sk, :history)",
            ExpressionAttributeValues={":pk": {"S": pk}, ":history": {"S": HISTORY_PREFIX}},
            Limit=limit,
            **_start(page_token, f"history:{workset_id}", equal={"pk": pk}, prefixed={"sk": HISTORY_PREFIX}),
        )
        entries = [HistoryEntry.model_validate(_plain(item)) for item in response["Items"]]
        return entries, _token(response, f"history:{workset_id}")

    def full_history(self, workset_id: str) -> list[HistoryEntry]:
        entries: list[HistoryEntry] = []
        page_token: str | None = None
        while True:
            page, page_token = self.history(workset_id, limit=1000, page_token=page_token)
            entries.extend(page)
            if page_token is None:
                return entries

    def list_worksets(
        self,
        *,
        state: State | None = None,
        priority: Priority | None = None,
        cluster: str | None = None,
        limit: int = 50,
        page_token: str | None = None,
    ) -> tuple[list[Workset], str | None]:
        """One page of worksets: those a cluster holds now, or those of one state in queue order, or all of them
        oldest first; each narrowed by the other filters.

        A filter the chosen index does not key on is applied after the read, so a page may hold fewer than `limit`
        worksets and still have a next one. The cluster's index holds only the worksets a cluster holds now, so
        `cluster` with a state no such workset is in (complete, error, ...) is refused with InvalidRequest rather
        than answered empty.
        """
        if cluster is not None and state is not None and state not in CLUSTER_HELD_STATES:
            held = ", ".join(sorted(CLUSTER_HELD_STATES))
            raise InvalidRequest(
                f"cluster lists the worksets a cluster holds now ({held}); a workset in {state} holds none: "
                f"ask for state={state} without cluster"
            )

        names: dict[str, str] = {}
        values: dict[str, Any] = {}
        filters: list[str] = []

        if cluster is not None:
            index, attribute, value, sort_key = BY_CLUSTER, "active_cluster", cluster, "queue_key"
        elif state is not None:
            index, attribute, value, sort_key = BY_STATE, "state", state.value, "queue_key"
        else:
            index, attribute, value, sort_key = BY_ENTITY, "entity", "workset", "created_key"
        key_condition = "#attribute = :value"

        if state is not None and attribute != "state":
            filters.append("#state = :state")
            names["#state"], values[":state"] = "state", {"S": state.value}
        sort_prefix = ""
        if priority is not None and sort_key == "queue_key":
            sort_prefix = f"{priority.rank}#"  # the queue key starts with the priority's rank
            key_condition += " AND begins_with(queue_key, :rank)"
            values[":rank"] = {"S": sort_prefix}
        elif priority is not None:
            filters.append("priority = :priority")
            values[":priority"] = {"S": priority.value}
        scope = f"{index}:{value}:{state or ''}:{priority or ''}"

        query: dict[str, Any] = {
            "TableName": self.table_name,
            "IndexName": index,
            "KeyConditionExpression": key_condition,
            "ExpressionAttributeNames": {"#attribute": attribute, **names},
            "ExpressionAttributeValues": {":value": {"S": value}, **values},
            "Limit": limit,
            **_start(
                page_token,
                scope,
                equal={attribute: value, "sk": WORKSET_SK},
                prefixed={"pk": "WORKSET#", sort_key: sort_prefix},
            ),
        }
        if filters:
            query["FilterExpression"] = " AND ".join(filters)
        response = self.client.query(**query)
        return [_workset_from_item(_plain(item)) for item in response["Items"]], _token(response, scope)

    def worksets_in(self, state: State) -> Iterator[Workset]:
        """Every workset in a state, in queue order (priority, then age)."""
        for item in self._query_all(BY_STATE, "state", state.value):
            yield _workset_from_item(item)

    def worksets_on(self, cluster: str) -> Iterator[Workset]:
        """The worksets a cluster holds: assigned to it while ready, or locked or running on it."""
        for item in self._query_all(BY_CLUSTER, "active_cluster", cluster):
            yield _workset_from_item(item)

    def due_retries(self, now: datetime) -> Iterator[Workset]:
        """Failed worksets whose automatic retry is due, the longest due first. Reads only those waiting to retry."""
        for page in self._pages(
            IndexName=BY_RETRY,
            KeyConditionExpression="retry_queue = :queue AND retry_key <= :now",
            ExpressionAttributeValues={":queue": {"S": RETRY_QUEUE}, ":now": {"S": f"{sortable(now)}#\uffff"}},
        ):
            for item in page["Items"]:
                yield _workset_from_item(_plain(item))

    def counters(self) -> dict[str, int]:
        """Every counter of worksets, summed over its shards, in one query: `state:<state>`,
        `ready:<priority>` and `ready:assigned`. Its cost does not grow with the number of worksets."""
        totals: dict[str, int] = {}
        for page in self._pages(
            KeyConditionExpression="pk = :pk", ExpressionAttributeValues={":pk": {"S": STATS_PK}}, ConsistentRead=True
        ):
            for item in page["Items"]:
                for name, value in _plain(item).items():
                    if name not in ("pk", "sk"):
                        totals[name] = totals.get(name, 0) + int(value)
        return {name: max(count, 0) for name, count in totals.items()}

    def count_by_state(self) -> dict[State, int]:
        """How many worksets are in each state, from the counters: one query, whatever the table holds.

        Limitations: counts what was written since the counters exist; worksets written before them (a table that
        predates this version) are not counted.
        """
        counters = self.counters()
        return {state: counters.get(f"state:{state.value}", 0) for state in State}

    def states_of(self, workset_ids: Iterable[str]) -> dict[str, State | None]:
        """The current state of each named workset (None: not registered), by key, 100 to a BatchGetItem."""
        states: dict[str, State | None] = dict.fromkeys(sorted(set(workset_ids)))
        wanted = [workset_id for workset_id in states if _fits_a_key(_workset_pk(workset_id))]
        for start in range(0, len(wanted), 100):
            request: dict[str, Any] = {
                self.table_name: {
                    "Keys": [_key(_workset_pk(workset_id), WORKSET_SK) for workset_id in wanted[start : start + 100]],
                    "ProjectionExpression": "workset_id, #state",
                    "ExpressionAttributeNames": {"#state": "state"},
                }
            }
            while request:
                response = self.client.batch_get_item(RequestItems=request)
                for item in response["Responses"].get(self.table_name, []):
                    plain = _plain(item)
                    states[plain["workset_id"]] = State(plain["state"])
                # NOTE: keys DynamoDB left unprocessed (throttling) are asked again at once; botocore's retries
                # already backed off for the throttling itself.
                request = dict(response.get("UnprocessedKeys") or {})
        return states

    # --- worksets: writes ------------------------------------------------------------------------------------------

    def register(self, workset: Workset, *, actor: str, reason: str = "") -> Workset:
        """Write a new workset and its first history entry; returns it as written (in its state since its creation,
        unless it says otherwise). Raise `WorksetExists` when the id is taken."""
        if workset.state_since is None:
            workset = workset.model_copy(update={"state_since": workset.created_at})
        entry = _history_entry(workset, None, "registered", actor, reason)
        try:
            self._write(workset, entry, condition="attribute_not_exists(pk)", values={})
        except ConcurrentUpdate as exc:
            raise WorksetExists(workset.workset_id) from exc
        return workset

    def transition(
        self,
        workset: Workset,
        to_state: State,
        *,
        actor: str,
        reason: str = "",
        error_category: ErrorCategory | None = None,
        error_reasons: tuple[str, ...] = (),
        lease_token: int | None = None,
        changes: Mapping[str, Any] | None = None,
        now: datetime | None = None,
    ) -> Workset:
        """Move `workset` (as read) to `to_state`, if the state table allows it and nobody wrote it since.

        An agent passes its `lease_token`; the write is refused with `LeaseLost` unless it is the current lease.
        Leaving `ready` drops the scheduler's assignment; leaving `locked` and `in_progress` drops the lease and the
        progress. Entering `error` sets `retry_at` by the retry policy (`retries.retry_at`). `state_since` becomes
        `now`.
        """
        check_transition(workset.workset_id, workset.state, to_state)
        _check_lease(workset, lease_token)

        now = now or utcnow()
        update: dict[str, Any] = {
            "state": to_state,
            "error_category": error_category if to_state is State.ERROR else None,
            "error_reasons": _capped(error_reasons) if to_state is State.ERROR else (),
            "retry_at": None,
            "state_since": now,
            **(changes or {}),
        }
        if to_state not in (State.LOCKED, State.IN_PROGRESS):
            update["lease"] = None
            update["progress"] = None
        if to_state is not State.READY:
            update["assigned_cluster"] = None
        if to_state is State.ERROR:
            attempt = update.get("attempt", workset.attempt)
            max_attempts = update.get("max_attempts", workset.max_attempts)
            update["retry_at"] = retry_at(error_category, attempt, max_attempts, now, self.retry_base_seconds)

        new = _next_version(workset, update, now)
        entry = _history_entry(new, workset.state, "transition", actor, reason)
        self._write_over(workset, new, entry, lease_token)
        return new

    def claim(
        self, workset: Workset, *, owner: str, cluster: str, lease_seconds: int, now: datetime | None = None
    ) -> Workset:
        """Take the lease of a ready workset for `owner` on `cluster`: `ready` -> `locked`.

        The fencing token is the version the claim writes, so a later claim always holds a larger token.
        """
        if workset.assigned_cluster and workset.assigned_cluster != cluster:
            rule = f"it is assigned to cluster {workset.assigned_cluster}"
            raise TransitionRefused(workset.workset_id, workset.state, State.LOCKED, rule)
        pinned = workset.work.cluster_name if workset.work else None
        if pinned and pinned != cluster:
            rule = f"its work file asks for cluster {pinned}"
            raise TransitionRefused(workset.workset_id, workset.state, State.LOCKED, rule)

        now = now or utcnow()
        lease = Lease(owner=owner, token=workset.version + 1, expires_at=now + timedelta(seconds=lease_seconds))
        return self.transition(
            workset,
            State.LOCKED,
            actor=owner,
            reason=f"claimed on cluster {cluster}",
            changes={"lease": lease, "cluster": cluster},
            now=now,
        )

    def heartbeat(
        self,
        workset_id: str,
        *,
        lease_token: int,
        lease_seconds: int,
        progress: str | None = None,
        now: datetime | None = None,
    ) -> Workset:
        """Extend the lease held with `lease_token`, noting the agent's progress step if it says one, in one
        conditional update (heartbeats are the most frequent write). Not a state change, so no history entry.

        A canceled workset answers with itself instead of an error, so the agent learns of the cancel; any other
        refusal is `LeaseLost` (or `WorksetNotFound`).
        """
        now = now or utcnow()
        values: dict[str, Any] = {
            ":token": lease_token,
            ":expires": _json_time(now + timedelta(seconds=lease_seconds)),
            ":now": _json_time(now),
            ":one": 1,
            ":locked": State.LOCKED.value,
            ":in_progress": State.IN_PROGRESS.value,
        }
        update = "SET #lease.expires_at = :expires, #version = #version + :one, updated_at = :now"
        if progress:
            update += ", progress = :progress"
            values[":progress"] = progress

        try:
            response = self.client.update_item(
                TableName=self.table_name,
                Key=_key(_known_workset_pk(workset_id), WORKSET_SK),
                UpdateExpression=update,
                ConditionExpression="#lease.#token = :token AND #state IN (:locked, :in_progress)",
                ExpressionAttributeNames={
                    "#lease": "lease",
                    "#token": "token",
                    "#version": "version",
                    "#state": "state",
                },
                ExpressionAttributeValues=_typed(values),
                ReturnValues="ALL_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            if not _condition_failed(exc):
                raise
            if "Item" not in exc.response:
                raise WorksetNotFound(workset_id) from None
            current = _workset_from_item(_plain(exc.response["Item"]))  # type: ignore[typeddict-item]
            if current.state is State.CANCELED:
                return current
            raise LeaseLost(workset_id, lease_token) from None
        return _workset_from_item(_plain(response["Attributes"]))

    def assign(
        self,
        workset: Workset,
        *,
        cluster: str,
        reason: str,
        vcpus: int = 0,
        capacity: Cluster | None = None,
        now: datetime | None = None,
    ) -> Workset:
        """Record the scheduler's choice of cluster for a ready workset, reserving `vcpus` of the cluster.

        With `capacity` (the cluster as the scheduler read it), the same transaction checks that the cluster is still
        active with that capacity and has room for one more workset and `vcpus` more vCPUs, and counts them on it: a
        full cluster refuses the assignment with `ConcurrentUpdate`, whoever filled it.
        """
        if workset.state is not State.READY:
            raise TransitionRefused(workset.workset_id, workset.state, State.READY, "only a ready workset is assigned")

        now = now or utcnow()
        changes = {"assigned_cluster": cluster, "assigned_at": now, "reserved_vcpus": vcpus}
        new = _next_version(workset, changes, now)
        entry = _history_entry(new, workset.state, "assigned", "scheduler", reason)
        self._write_over(workset, new, entry, None, capacity=capacity)
        return new

    def record(
        self,
        workset: Workset,
        changes: Mapping[str, Any],
        *,
        event: str,
        actor: str,
        reason: str,
        now: datetime | None = None,
    ) -> Workset:
        """Change a workset without changing its state, with a history entry saying why (`event`)."""
        new = _next_version(workset, changes, now)
        entry = _history_entry(new, workset.state, event, actor, reason)
        self._write_over(workset, new, entry, None)
        return new

    # --- clusters --------------------------------------------------------------------------------------------------

    def put_cluster(self, cluster: Cluster) -> Cluster:
        """Register a cluster or overwrite its registration with every field of `cluster`, keeping the load counted
        on it (`active_worksets`, `active_vcpus`), which only the writes of its worksets change."""
        self._update_cluster(cluster.name, cluster.model_dump(mode="json"), defaults={})
        return cluster

    def register_cluster(
        self, name: str, changes: Mapping[str, Any], *, defaults: Mapping[str, Any], at: datetime
    ) -> Cluster:
        """Register a cluster, or register it again, in one update: it becomes `active`, heartbeated `at`.

        The fields in `changes` are written (None removes one); the others keep what is stored, or take `defaults`
        on a new cluster. `registered_at` is kept, or `at` for a new cluster; the load counters are untouched.
        """
        fields = {**changes, "status": ClusterStatus.ACTIVE.value, "last_heartbeat_at": _json_time(at)}
        return self._update_cluster(name, fields, defaults={**defaults, "registered_at": _json_time(at)})

    def _update_cluster(self, name: str, fields: Mapping[str, Any], *, defaults: Mapping[str, Any]) -> Cluster:
        """Write `fields` of a cluster (None removes one), and `defaults` where it holds no value yet; the cluster as
        it is after the write."""
        written = {"entity": "cluster", "created_key": name, "name": name, **fields}
        kept = {field: value for field, value in defaults.items() if field not in written and value is not None}

        names: dict[str, str] = {}
        values: dict[str, Any] = {}
        assignments: list[str] = []
        removed: list[str] = []
        for index, (field, value) in enumerate([*written.items(), *kept.items()]):
            names[f"#f{index}"] = field
            if value is None:
                removed.append(f"#f{index}")
                continue
            values[f":v{index}"] = value
            given = f":v{index}" if field in written else f"if_not_exists(#f{index}, :v{index})"
            assignments.append(f"#f{index} = {given}")
        update = "SET " + ", ".join(assignments) + (" REMOVE " + ", ".join(removed) if removed else "")

        response = self.client.update_item(
            TableName=self.table_name,
            Key=_key(f"CLUSTER#{name}", CLUSTER_SK),
            UpdateExpression=update,
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=_typed(values),
            ReturnValues="ALL_NEW",
        )
        return Cluster.model_validate(_plain(response["Attributes"]))

    def get_cluster(self, name: str) -> Cluster:
        response = self.client.get_item(TableName=self.table_name, Key=_key(_known_cluster_pk(name), CLUSTER_SK))
        if "entity" not in response.get("Item", {}):  # a claim on an unregistered cluster leaves only its counters
            raise ClusterNotFound(name)
        return Cluster.model_validate(_plain(response["Item"]))

    def list_clusters(self) -> list[Cluster]:
        return [load.cluster for load in self.cluster_loads()]

    def cluster_loads(self) -> list[ClusterLoad]:
        """Every registered cluster with the worksets and vCPUs it holds now, from its counters: one query (a page
        per 1 MB), whatever the number of worksets."""
        return [
            ClusterLoad(
                Cluster.model_validate(item),
                active=max(int(item.get("active_worksets", 0)), 0),
                vcpus_used=max(int(item.get("active_vcpus", 0)), 0),
            )
            for item in self._query_all(BY_ENTITY, "entity", "cluster")
        ]

    def touch_cluster(self, name: str, *, at: datetime, status: ClusterStatus | None = None) -> Cluster:
        """Renew a registered cluster's heartbeat, and its status if given, in one conditional write.

        A retired cluster stays retired (ClusterRetired) until it is registered again (`register_cluster`).
        """
        update = "SET last_heartbeat_at = :at" + (", #status = :status" if status is not None else "")
        values: dict[str, Any] = {":at": _json_time(at), ":retired": ClusterStatus.RETIRED.value}
        if status is not None:
            values[":status"] = status.value
        try:
            response = self.client.update_item(
                TableName=self.table_name,
                Key=_key(_known_cluster_pk(name), CLUSTER_SK),
                UpdateExpression=update,
                ConditionExpression="attribute_exists(#entity) AND #status <> :retired",
                ExpressionAttributeNames={"#status": "status", "#entity": "entity"},
                ExpressionAttributeValues=_typed(values),
                ReturnValues="ALL_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            if not _condition_failed(exc):
                raise
            if "entity" not in exc.response.get("Item", {}):  # type: ignore[operator]
                raise ClusterNotFound(name) from None
            raise ClusterRetired(name) from None
        return Cluster.model_validate(_plain(response["Attributes"]))

    def retire_cluster(self, name: str) -> Cluster:
        """Mark a cluster retired: it gets no new work, and what was assigned to it and not claimed goes back to the
        queue on the next tick. Its record stays, for the history that names it."""
        try:
            response = self.client.update_item(
                TableName=self.table_name,
                Key=_key(_known_cluster_pk(name), CLUSTER_SK),
                UpdateExpression="SET #status = :retired",
                ConditionExpression="attribute_exists(#entity)",
                ExpressionAttributeNames={"#status": "status", "#entity": "entity"},
                ExpressionAttributeValues=_typed({":retired": ClusterStatus.RETIRED.value}),
                ReturnValues="ALL_NEW",
            )
        except ClientError as exc:
            if _condition_failed(exc):
                raise ClusterNotFound(name) from None
            raise
        return Cluster.model_validate(_plain(response["Attributes"]))

    # --- the scheduler's last tick ---------------------------------------------------------------------------------

    def put_tick(self, summary: Mapping[str, Any], *, at: datetime) -> None:
        """Keep the summary of the scheduler's latest tick (one item, overwritten by each tick) and, when the tick
        decided something (assigned or left waiting), a copy of its own among the recent ticks, keyed by its time
        and a random suffix (two ticks at one instant, EventBridge's repeats, keep both), expiring after
        `RECENT_TICKS`."""
        self.client.put_item(TableName=self.table_name, Item=_typed({"pk": SCHEDULER_PK, "sk": TICK_SK, **summary}))
        if not (summary.get("assignments") or summary.get("waits")):
            return

        recent = {
            "pk": SCHEDULER_PK,
            "sk": f"{TICK_SK}#{sortable(at)}#{uuid.uuid4().hex[:8]}",
            EXPIRES_AT: int((at + RECENT_TICKS).timestamp()),
            **summary,
        }
        self.client.put_item(TableName=self.table_name, Item=_typed(recent))

    def recent_ticks(self, *, limit: int, now: datetime | None = None) -> list[dict[str, Any]]:
        """The summaries of the ticks of the last `RECENT_TICKS` that decided something, newest first: at most
        `limit` of them (each holds one decision or more), in one query of one page.

        Limitations:
            one page is at most 1 MB of summaries; a tick's summary holds at most 100 decisions, so a page holds far
            more decisions than the API shows. The key range leaves out the ring slots of earlier versions
            (`TICK#0` to `TICK#9`) and summaries past their time that TTL has not deleted yet.
        """
        now = now or utcnow()
        response = self.client.query(
            TableName=self.table_name,
            KeyConditionExpression="pk = :pk AND sk BETWEEN :since AND :until",
            ExpressionAttributeValues={
                ":pk": {"S": SCHEDULER_PK},
                ":since": {"S": f"{TICK_SK}#{sortable(now - RECENT_TICKS)}"},
                ":until": {"S": f"{TICK_SK}#{sortable(now)}#\uffff"},
            },
            ScanIndexForward=False,
            Limit=limit,
        )
        return [
            {name: value for name, value in _plain(item).items() if name not in ("pk", "sk", EXPIRES_AT)}
            for item in response["Items"]
        ]

    def last_tick(self) -> dict[str, Any] | None:
        response = self.client.get_item(TableName=self.table_name, Key=_key(SCHEDULER_PK, TICK_SK))
        if "Item" not in response:
            return None
        return {name: value for name, value in _plain(response["Item"]).items() if name not in ("pk", "sk")}

    # --- plumbing --------------------------------------------------------------------------------------------------

    def _query_all(self, index: str, attribute: str, value: str) -> Iterator[dict[str, Any]]:
        """Every item of an index with `attribute` = `value`, as JSON types."""
        for page in self._pages(
            IndexName=index,
            KeyConditionExpression="#attribute = :value",
            ExpressionAttributeNames={"#attribute": attribute},
            ExpressionAttributeValues={":value": {"S": value}},
        ):
            for item in page["Items"]:
                yield _plain(item)

    def _pages(self, **query: Any) -> Iterator[Any]:
        """Every page of a query on the table or one of its indexes, following LastEvaluatedKey."""
        start: dict[str, Any] = {}
        while True:
            page = self.client.query(TableName=self.table_name, **query, **start)
            yield page
            if "LastEvaluatedKey" not in page:
                return
            start = {"ExclusiveStartKey": page["LastEvaluatedKey"]}

    def _write_over(
        self,
        old: Workset,
        new: Workset,
        entry: HistoryEntry | None,
        lease_token: int | None,
        *,
        capacity: Cluster | None = None,
    ) -> None:
        """Replace `old` with `new` unless someone wrote the workset since `old` was read (and, with `capacity`, unless
        the cluster `new` takes has no room left)."""
        condition = "#version = :version AND #state = :state"
        values = {":version": old.version, ":state": old.state.value}
        if lease_token is not None:
            condition += " AND #lease.#token = :token"
            values[":token"] = lease_token

        try:
            self._write(new, entry, condition=condition, values=values, old=old, capacity=capacity)
        except ConcurrentUpdate:
            if lease_token is None:
                raise
            current = self.get(old.workset_id)
            if current.lease is None or current.lease.token != lease_token:
                raise LeaseLost(old.workset_id, lease_token) from None
            raise

    def _write(
        self,
        workset: Workset,
        entry: HistoryEntry | None,
        *,
        condition: str,
        values: dict[str, Any],
        old: Workset | None = None,
        capacity: Cluster | None = None,
    ) -> None:
        names = {name: name[1:] for name in ("#version", "#state", "#lease", "#token") if name in condition}
        put: dict[str, Any] = {
            "TableName": self.table_name,
            "Item": _typed(_workset_item(workset)),
            "ConditionExpression": condition,
        }
        if names:
            put["ExpressionAttributeNames"] = names
        if values:
            put["ExpressionAttributeValues"] = _typed(values)

        items: list[Any] = [{"Put": put}]
        if entry is not None:
            history = {
                "TableName": self.table_name,
                "Item": _typed(_history_item(entry)),
                "ConditionExpression": "attribute_not_exists(pk)",
            }
            items.append({"Put": history})
        items.extend(self._counter_updates(old, workset, capacity))

        try:
            if len(items) == 1:
                self.client.put_item(**put)
                return
            self.client.transact_write_items(TransactItems=items)
        except ClientError as exc:
            if _condition_failed(exc):
                raise ConcurrentUpdate(workset.workset_id, workset.version - 1) from exc
            raise

    def _counter_updates(self, old: Workset | None, new: Workset, capacity: Cluster | None) -> list[dict[str, Any]]:
        """The counter updates that go with replacing `old` by `new` (None: a new workset): its state's shard, and
        the clusters it leaves or takes, the one it takes guarded by `capacity` if given."""
        updates: list[dict[str, Any]] = []
        before, after = _counted(old), _counted(new)
        changes = {name: -1 for name in before - after} | {name: 1 for name in after - before}
        if changes:
            names = {f"#c{index}": name for index, name in enumerate(sorted(changes))}
            shard = zlib.crc32(new.workset_id.encode()) % COUNTER_SHARDS
            updates.append(
                {
                    "Update": {
                        "TableName": self.table_name,
                        "Key": _key(STATS_PK, f"SHARD#{shard:02d}"),
                        "UpdateExpression": "ADD " + ", ".join(f"{alias} :d{alias[2:]}" for alias in names),
                        "ExpressionAttributeNames": names,
                        "ExpressionAttributeValues": _typed({f":d{a[2:]}": changes[n] for a, n in names.items()}),
                    }
                }
            )

        (left, left_vcpus), (taken, taken_vcpus) = _footprint(old), _footprint(new)
        if (left, left_vcpus) == (taken, taken_vcpus):
            return updates
        if left is not None and left == taken:
            updates.append(self._cluster_update(left, 0, taken_vcpus - left_vcpus, None, 0))
            return updates
        if left is not None:
            updates.append(self._cluster_update(left, -1, -left_vcpus, None, 0))
        if taken is not None:
            updates.append(self._cluster_update(taken, 1, taken_vcpus, capacity, taken_vcpus))
        return updates

    def _cluster_update(
        self, name: str, worksets: int, vcpus: int, capacity: Cluster | None, reserved: int
    ) -> dict[str, Any]:
        update: dict[str, Any] = {
            "TableName": self.table_name,
            "Key": _key(f"CLUSTER#{name}", CLUSTER_SK),
            "UpdateExpression": "ADD active_worksets :worksets, active_vcpus :vcpus",
            "ExpressionAttributeValues": _typed({":worksets": worksets, ":vcpus": vcpus}),
        }
        if capacity is None:
            return {"Update": update}

        # The capacity guard: the cluster is still active with the capacity the plan saw, and has room now.
        condition = (
            "#entity = :cluster AND #status = :active AND max_worksets = :max "
            "AND (attribute_not_exists(active_worksets) OR active_worksets < :max)"
        )
        values: dict[str, Any] = {
            ":cluster": "cluster",
            ":active": ClusterStatus.ACTIVE.value,
            ":max": capacity.max_worksets,
        }
        if capacity.vcpus:
            condition += " AND vcpus = :total AND (attribute_not_exists(active_vcpus) OR active_vcpus <= :left)"
            values |= {":total": capacity.vcpus, ":left": capacity.vcpus - reserved}
        update["ConditionExpression"] = condition
        update["ExpressionAttributeNames"] = {"#entity": "entity", "#status": "status"}
        update["ExpressionAttributeValues"] |= _typed(values)
        return {"Update": update}


def _counted(workset: Workset | None) -> set[str]:
    """The counters a workset counts in: its state's, and while ready its priority's and whether it is assigned."""
    if workset is None:
        return set()
    counted = {f"state:{workset.state.value}"}
    if workset.state is State.READY:
        counted.add(f"ready:{workset.priority.value}")
        if workset.assigned_cluster:
            counted.add("ready:assigned")
    return counted


def _footprint(workset: Workset | None) -> tuple[str | None, int]:
    """The cluster whose capacity a workset takes, and how many vCPUs of it."""
    if workset is None or workset.active_cluster is None:
        return None, 0
    return workset.active_cluster, workset.reserved_vcpus


def _condition_failed(exc: ClientError) -> bool:
    error = exc.response.get("Error", {})
    if error.get("Code") == "ConditionalCheckFailedException":
        return True
    if error.get("Code") != "TransactionCanceledException":
        return False

    # A transaction that met another one on an item (TransactionConflict) lost a race as surely as a failed condition.
    lost = ("ConditionalCheckFailed", "TransactionConflict")
    reasons = exc.response.get("CancellationReasons") or []
    if reasons:
        return any(reason.get("Code") in lost for reason in reasons)
    # NOTE: some emulators put the reasons only into the message, as "[ConditionalCheckFailed, None]".
    return any(code in error.get("Message", "") for code in lost)


def _check_lease(workset: Workset, lease_token: int | None) -> None:
    if lease_token is None:
        return
    if workset.lease is None or workset.lease.token != lease_token:
        raise LeaseLost(workset.workset_id, lease_token)


def _json_time(moment: datetime) -> str:
    """A time as the models store it (pydantic's JSON form), for attributes written by an update expression."""
    return str(_TIME.dump_python(moment, mode="json"))


_TIME: TypeAdapter[datetime] = TypeAdapter(datetime)


def _next_version(workset: Workset, update: Mapping[str, Any], now: datetime | None) -> Workset:
    new = workset.model_copy(update={**update, "version": workset.version + 1, "updated_at": now or utcnow()})
    released: dict[str, Any] = {}
    if new.assigned_cluster is None and new.assigned_at is not None:
        released["assigned_at"] = None
    if new.active_cluster is None and new.reserved_vcpus:
        released["reserved_vcpus"] = 0  # off its cluster, a workset reserves nothing
    return new.model_copy(update=released) if released else new


def _capped(reasons: tuple[str, ...]) -> tuple[str, ...]:
    """Reasons as the workset item can hold them (DynamoDB's 400 KB item limit): the folder rules' caps."""
    kept = tuple(r if len(r) <= MAX_REASON_CHARS else r[: MAX_REASON_CHARS - 3] + "..." for r in reasons[:MAX_REASONS])
    return kept + ((f"... and {len(reasons) - MAX_REASONS} more",) if len(reasons) > MAX_REASONS else ())


def _history_entry(workset: Workset, from_state: State | None, event: str, actor: str, reason: str) -> HistoryEntry:
    if len(reason) > MAX_HISTORY_REASON_CHARS:
        reason = reason[: MAX_HISTORY_REASON_CHARS - 3] + "..."
    return HistoryEntry(
        workset_id=workset.workset_id,
        version=workset.version,
        event=event,
        from_state=from_state,
        to_state=workset.state,
        at=workset.updated_at,
        actor=actor,
        reason=reason,
        attempt=workset.attempt,
        error_category=workset.error_category,
        cluster=workset.assigned_cluster or workset.cluster,
    )


def _workset_pk(workset_id: str) -> str:
    return f"WORKSET#{workset_id}"


def _fits_a_key(value: str, attribute: str = "pk") -> bool:
    """Whether DynamoDB takes `value` as the key `attribute`: at most 2,048 bytes of UTF-8 for a partition key, 1,024
    for a sort key (of the table or an index)."""
    limit = MAX_SORT_KEY_BYTES if attribute in SORT_KEYS else MAX_PARTITION_KEY_BYTES
    return len(value.encode("utf-8")) <= limit


def _known_workset_pk(workset_id: str) -> str:
    """The partition key of a workset to look up; WorksetNotFound for an id too long to be a key, which no
    workset can have (DynamoDB would refuse the request with a ValidationException)."""
    pk = _workset_pk(workset_id)
    if not _fits_a_key(pk):
        raise WorksetNotFound(workset_id[:100] + "...")
    return pk


def _known_cluster_pk(name: str) -> str:
    """The partition key of a cluster to look up; ClusterNotFound for a name too long to be a key."""
    pk = f"CLUSTER#{name}"
    if not _fits_a_key(pk):
        raise ClusterNotFound(name[:100] + "...")
    return pk


def _key(pk: str, sk: str) -> dict[str, Any]:
    return {"pk": {"S": pk}, "sk": {"S": sk}}


def _workset_item(workset: Workset) -> dict[str, Any]:
    item = {
        "pk": _workset_pk(workset.workset_id),
        "sk": WORKSET_SK,
        "entity": "workset",
        "created_key": f"{sortable(workset.created_at)}#{workset.workset_id}",
        "queue_key": workset.queue_key,
        **workset.model_dump(mode="json", exclude_none=True),
    }
    if workset.active_cluster:
        item["active_cluster"] = workset.active_cluster
    if workset.state is State.ERROR and workset.retry_at is not None:
        item["retry_queue"] = RETRY_QUEUE
        item["retry_key"] = f"{sortable(workset.retry_at)}#{workset.workset_id}"
    if not item.get("error_reasons"):
        item.pop("error_reasons", None)
    return item


def _history_item(entry: HistoryEntry) -> dict[str, Any]:
    return {
        "pk": _workset_pk(entry.workset_id),
        "sk": f"{HISTORY_PREFIX}{entry.version:012d}",
        **entry.model_dump(mode="json", exclude_none=True),
    }


def _workset_from_item(item: Mapping[str, Any]) -> Workset:
    return Workset.model_validate(item)


def _typed(item: Mapping[str, Any]) -> dict[str, Any]:
    return {key: _serializer.serialize(_to_dynamo(value)) for key, value in item.items()}


def _to_dynamo(value: Any) -> Any:
    if isinstance(value, float):
        return Decimal(str(value))
    if isinstance(value, dict):
        return {key: _to_dynamo(inner) for key, inner in value.items()}
    if isinstance(value, list | tuple):
        return [_to_dynamo(inner) for inner in value]
    return value


def _plain(item: Mapping[str, Any]) -> dict[str, Any]:
    """A DynamoDB item as JSON types: numbers become int or float."""
    return {key: _from_dynamo(_deserializer.deserialize(value)) for key, value in item.items()}


def _from_dynamo(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {key: _from_dynamo(inner) for key, inner in value.items()}
    if isinstance(value, list | set):
        return [_from_dynamo(inner) for inner in value]
    return value


def _start(
    page_token: str | None, scope: str, *, equal: Mapping[str, str], prefixed: Mapping[str, str]
) -> dict[str, Any]:
    """The start key a page token carries, if the token is one this query gave out.

    A token names its query (the index and the value it reads), and its key has exactly the key attributes of that
    query, all strings that fit a key: each of `equal` with that value (the query's partition) and each of
    `prefixed` starting with that prefix (the range of sort keys it reads). DynamoDB refuses a start key outside the
    query with a ValidationException, so a tampered token must not reach it.
    """
    if not page_token:
        return {}
    try:
        token = json.loads(base64.urlsafe_b64decode(page_token.encode("ascii")))
    except (ValueError, binascii.Error, UnicodeEncodeError) as exc:
        raise InvalidPageToken() from exc

    if not isinstance(token, dict):
        raise InvalidPageToken()
    key = token.get("key")
    if token.get("scope") != scope or not isinstance(key, dict) or set(key) != {*equal, *prefixed}:
        raise InvalidPageToken()
    if not all(isinstance(value, str) and value and _fits_a_key(value, name) for name, value in key.items()):
        raise InvalidPageToken()
    if any(key[name] != value for name, value in equal.items()):
        raise InvalidPageToken()
    if any(not key[name].startswith(prefix) for name, prefix in prefixed.items()):
        raise InvalidPageToken()
    return {"ExclusiveStartKey": {name: {"S": value} for name, value in key.items()}}


def _token(response: Mapping[str, Any], scope: str) -> str | None:
    """An opaque token for the next page: the query it belongs to and where it stopped."""
    key = response.get("LastEvaluatedKey")
    if not key:
        return None
    plain = {name: value["S"] for name, value in key.items()}
    return base64.urlsafe_b64encode(json.dumps({"scope": scope, "key": plain}, sort_keys=True).encode()).decode("ascii")


def workset_from_image(image: Mapping[str, Any]) -> Workset:
    """The workset a stream image holds."""
    return _workset_from_item(_plain(image))
