"""The sentinel files the system writes back into a workset's folder, so people and old tools that read S3 see the
state the table holds. Pure: a change of state in, the objects to write and to remove out.

| state         | sentinels written by the system     |
|---------------|-------------------------------------|
| `locked`      | `daylily.lock`                      |
| `in_progress` | `daylily.lock`, `daylily.in_progress` |
| `complete`    | `daylily.complete`                  |
| `error`       | `daylily.error` (timestamp, tab, reason) |
| `canceled`    | `daylily.error` (timestamp, tab, "canceled: " and the reason) |
| `ready`, `ignored` | none                            |
| `archived`    | those of the state before, unchanged |

The sentinels people drop (`daylily.ready`, `daylily.ignore`) are never written or removed here, and the system's own
sentinels do not match the register function's S3 filter, so mirroring never registers a workset again.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .layout import SENTINEL_COMPLETE, SENTINEL_ERROR, SENTINEL_IN_PROGRESS, SENTINEL_LOCK
from .models import State, Workset, sortable

_HELD: dict[State, frozenset[str]] = {
    State.READY: frozenset(),
    State.LOCKED: frozenset({SENTINEL_LOCK}),
    State.IN_PROGRESS: frozenset({SENTINEL_LOCK, SENTINEL_IN_PROGRESS}),
    State.COMPLETE: frozenset({SENTINEL_COMPLETE}),
    State.ERROR: frozenset({SENTINEL_ERROR}),
    State.CANCELED: frozenset({SENTINEL_ERROR}),
    State.IGNORED: frozenset(),
}


@dataclass(frozen=True)
class SentinelPlan:
    """Objects to put (name -> body) and to remove in the workset's folder."""

    put: dict[str, str] = field(default_factory=dict)
    remove: frozenset[str] = frozenset()

    @property
    def empty(self) -> bool:
        return not self.put and not self.remove


def held(state: State, previous: frozenset[str] = frozenset()) -> frozenset[str]:
    """The system sentinels a folder holds in `state`; an archived workset keeps those it had."""
    return previous if state is State.ARCHIVED else _HELD[state]


def plan(old: Workset | None, new: Workset) -> SentinelPlan:
    """What to write and remove when a workset goes from `old` to `new`. Nothing when the state did not change."""
    if old is not None and old.state is new.state:
        return SentinelPlan()

    before = held(old.state) if old is not None else frozenset()
    after = held(new.state, before)
    put = {name: body(name, new) for name in after if name not in before or name == SENTINEL_ERROR}
    return SentinelPlan(put=put, remove=before - after)


def body(sentinel: str, workset: Workset) -> str:
    """A sentinel's text: the time of the change, then what an old tool or a person needs."""
    stamp = sortable(workset.updated_at)
    if sentinel == SENTINEL_ERROR:
        reason = "; ".join(workset.error_reasons) or str(workset.error_category or "")
        if workset.state is State.CANCELED:
            reason = "canceled"
        return f"{stamp}\t{' '.join(reason.split())}\n"
    if sentinel == SENTINEL_LOCK and workset.lease is not None:
        return f"{stamp}\t{workset.lease.owner}\t{workset.cluster or ''}\n"
    return f"{stamp}\n"
