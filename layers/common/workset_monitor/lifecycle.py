"""What people, agents and the API may do to a workset, on top of the store's guarded writes."""

from __future__ import annotations

from datetime import datetime

from .errors import ClusterNotFound, TransitionRefused
from .models import Cluster, ErrorCategory, State, Workset, utcnow
from .observability import logger
from .store import WorksetStore

LEASED_STATES = frozenset({State.LOCKED, State.IN_PROGRESS})


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
        may still cancel it. An error without a category counts as `permanent`: it waits for a person.
        """
        workset = self.store.get(workset_id)
        if to_state is State.LOCKED:
            rule = "a workset is locked only by a claim (POST /worksets/{id}/lock), which gives the lease"
            raise TransitionRefused(workset_id, workset.state, to_state, rule)
        if workset.state in LEASED_STATES and to_state is not State.CANCELED and lease_token is None:
            rule = f"the workset is {workset.state} under a lease; only the lease holder, with its token, moves it on"
            raise TransitionRefused(workset_id, workset.state, to_state, rule)
        if to_state is State.ERROR and error_category is None:
            error_category = ErrorCategory.PERMANENT

        changes = {}
        if to_state is State.READY and workset.state is not State.LOCKED:
            changes["attempt"] = workset.attempt + 1  # a new attempt; a lease given back is the same attempt

        changed = self.store.transition(
            workset,
            to_state,
            actor=actor,
            reason=reason,
            lease_token=lease_token if workset.state in LEASED_STATES else None,
            error_category=error_category,
            error_reasons=error_reasons or ((reason,) if to_state is State.ERROR and reason else ()),
            changes=changes,
            now=now or utcnow(),
        )
        logger.info("workset moved", workset_id=workset_id, from_state=workset.state, to_state=to_state, actor=actor)
        return changed

    def register_cluster(self, cluster: Cluster) -> Cluster:
        """Register a cluster, or renew its heartbeat: the agent calls this at start and then periodically."""
        now = utcnow()
        try:
            registered_at = self.store.get_cluster(cluster.name).registered_at
        except ClusterNotFound:
            registered_at = now
        return self.store.put_cluster(
            cluster.model_copy(update={"registered_at": registered_at, "last_heartbeat_at": now})
        )
