"""What people, agents and the API may do to a workset, on top of the store's guarded writes.

Three ways lead a workset back to `ready`, each with its own rule:

| operation | from | attempt | rule |
|---|---|---|---|
| `retry` | `error`, `canceled`, `ignored` | a new one | the folder is validated again first, as `daylily.ready` asks |
| `restore` | `archived` | a new one | the same validation as a retry |
| `release` | `locked` | the same | only the lease holder, with its token, gives the lease back |
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .errors import InvalidRequest, LeaseLost, NotAWorksetFolder, TransitionRefused
from .models import Cluster, ErrorCategory, State, Workset, utcnow
from .observability import logger
from .registration import Outcome
from .store import WorksetStore

if TYPE_CHECKING:
    from .registration import Registrar

LEASED_STATES = frozenset({State.LOCKED, State.IN_PROGRESS})
RETRIED_STATES = frozenset({State.ERROR, State.CANCELED, State.IGNORED})
RESTORED_STATES = frozenset({State.ARCHIVED})
CLUSTER_DEFAULTED = ("availability_zone", "max_worksets", "vcpus", "cost_per_vcpu_hour")
"""What a cluster's registration may leave out besides its region: a new cluster takes the model's defaults."""
BACK_TO_READY = (
    "a workset goes back to ready by a retry (POST /worksets/{id}/retry), a restore (POST /worksets/{id}/restore) "
    "or by giving its lease back (DELETE /worksets/{id}/lock)"
)


class Lifecycle:
    def __init__(self, store: WorksetStore, lease_seconds: int) -> None:
        self.store = store
        self.lease_seconds = lease_seconds

    def next_for(self, cluster: str) -> Workset | None:
        """The ready workset the scheduler assigned to `cluster` that should run first, if any."""
        for workset in self.store.worksets_on(cluster):
            if workset.state is State.READY:
                return workset
        return None

    def claim(self, workset_id: str, *, owner: str, cluster: str, lease_seconds: int | None = None) -> Workset:
        workset = self.store.get(workset_id)
        claimed = self.store.claim(
            workset, owner=owner, cluster=cluster, lease_seconds=lease_seconds or self.lease_seconds
        )
        logger.info("workset claimed", workset_id=workset_id, owner=owner, cluster=cluster, version=claimed.version)
        return claimed

    def heartbeat(
        self, workset_id: str, *, lease_token: int, lease_seconds: int | None = None, progress: str | None = None
    ) -> Workset:
        """Extend the lease, noting the agent's progress step. The answer carries the workset's state, so an agent
        learns of a cancel from it: a canceled workset answers with its state, not an error."""
        return self.store.heartbeat(
            workset_id, lease_token=lease_token, lease_seconds=lease_seconds or self.lease_seconds, progress=progress
        )

    def change_state(
        self,
        workset_id: str,
        to_state: State,
        *,
        actor: str,
        reason: str = "",
        lease_token: int | None = None,
        error_category: ErrorCategory | None = None,
        error_reasons: tuple[str, ...] = (),
        now: datetime | None = None,
    ) -> Workset:
        """Move a workset as a person or an agent asks.

        While an agent holds the lease, only the holder (proving it with its token) moves the workset on; a person
        may still cancel it. An error without a category counts as `permanent`: it waits for a person. A workset is
        locked only by a claim, and goes back to `ready` only by `retry`, `restore` or `release`.
        """
        workset = self.store.get(workset_id)
        if to_state is State.LOCKED:
            rule = "a workset is locked only by a claim (POST /worksets/{id}/lock), which gives the lease"
            raise TransitionRefused(workset_id, workset.state, to_state, rule)
        if to_state is State.READY:
            raise TransitionRefused(workset_id, workset.state, to_state, BACK_TO_READY)
        if workset.state in LEASED_STATES and to_state is not State.CANCELED and lease_token is None:
            rule = f"the workset is {workset.state} under a lease; only the lease holder, with its token, moves it on"
            raise TransitionRefused(workset_id, workset.state, to_state, rule)
        if to_state is State.ERROR and error_category is None:
            error_category = ErrorCategory.PERMANENT

        changed = self.store.transition(
            workset,
            to_state,
            actor=actor,
            reason=reason,
            lease_token=lease_token if workset.state in LEASED_STATES else None,
            error_category=error_category,
            error_reasons=error_reasons or ((reason,) if to_state is State.ERROR and reason else ()),
            now=now or utcnow(),
        )
        logger.info("workset moved", workset_id=workset_id, from_state=workset.state, to_state=to_state, actor=actor)
        return changed

    def retry(
        self, workset_id: str, *, actor: str, reason: str = "", registrar: Registrar, now: datetime | None = None
    ) -> Workset:
        """Start a new attempt of a failed, canceled or ignored workset, whatever attempts it used: a person decided.

        Its folder is validated again first, as a fresh `daylily.ready` does, and the new attempt runs the work the
        folder holds now; still invalid (a workset that failed validation and was not fixed), it stays where it is,
        the history records the revalidation, and NotAWorksetFolder says every reason. FolderNotFound when the
        folder is gone.
        """
        return self._new_attempt(workset_id, RETRIED_STATES, "retry", actor, reason, registrar, now)

    def restore(
        self, workset_id: str, *, actor: str, reason: str = "", registrar: Registrar, now: datetime | None = None
    ) -> Workset:
        """Bring an archived workset back to the queue as a new attempt, validated again as a retry is."""
        return self._new_attempt(workset_id, RESTORED_STATES, "restore", actor, reason, registrar, now)

    def release(
        self, workset_id: str, *, lease_token: int, actor: str, reason: str = "", now: datetime | None = None
    ) -> Workset:
        """Give a lease back before the run starts: `locked` -> `ready` in the same attempt, by the lease holder only.

        From any other state it is refused (TransitionRefused), never taken as a retry; a token that is not the
        current lease is LeaseLost.
        """
        workset = self.store.get(workset_id)
        if workset.state is not State.LOCKED:
            rule = "a lease is given back only while the workset is locked (claimed, before its run starts)"
            raise TransitionRefused(workset_id, workset.state, State.READY, rule)
        if workset.lease is None or workset.lease.token != lease_token:
            raise LeaseLost(workset_id, lease_token)

        released = self.store.transition(
            workset, State.READY, actor=actor, reason=reason, lease_token=lease_token, now=now or utcnow()
        )
        logger.info("lease given back", workset_id=workset_id, actor=actor, attempt=released.attempt)
        return released

    def _new_attempt(
        self,
        workset_id: str,
        allowed: frozenset[State],
        action: str,
        actor: str,
        reason: str,
        registrar: Registrar,
        now: datetime | None,
    ) -> Workset:
        now = now or utcnow()
        workset = self.store.get(workset_id)
        if workset.state not in allowed:
            rule = f"a {action} applies to a workset that is " + " or ".join(sorted(allowed))
            raise TransitionRefused(workset_id, workset.state, State.READY, rule)

        # NOTE: the folder is validated again on every retry and restore, not only when the workset has no work spec:
        # an ignored (or archived) workset may hold a valid work file and a broken sample sheet, never validated as
        # ready, and a person who fixed the folder expects the fix to run.
        registration = registrar.revalidate(workset, actor=actor, cause=reason or f"{action} asked", now=now)
        if registration.outcome is not Outcome.RETRIED:
            raise NotAWorksetFolder(
                f"workset {workset_id!r} cannot run, its folder is still not a valid workset: "
                + "; ".join(registration.reasons)
            )
        return registration.workset

    def register_cluster(
        self, name: str, given: Mapping[str, Any], *, region: str | None, now: datetime | None = None
    ) -> Cluster:
        """Register a cluster, or register it again: it is `active` after this, even if it was draining or retired,
        since its agent registers it once, when a person starts it; heartbeats keep it live after that.

        Only the fields in `given` change: the others keep what is stored, or take their defaults on a new cluster
        (`region`: the API's own one). A field given as None goes back to its default (`availability_zone`: none).
        Without a `region` of its own, the API needs one in `given`.
        """
        if region is None and given.get("region") is None:
            raise InvalidRequest("region is required: this API does not know its own region")
        defaults = {**{field: Cluster.model_fields[field].default for field in CLUSTER_DEFAULTED}, "region": region}

        changes = {field: defaults[field] if value is None else value for field, value in given.items()}
        cluster = self.store.register_cluster(name, changes, defaults=defaults, at=now or utcnow())
        logger.info("cluster registered", cluster=name, status=cluster.status)
        return cluster
