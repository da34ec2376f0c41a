"""The shapes of the API's answers, for its OpenAPI document. Handlers answer with the domain models' JSON."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from workset_monitor.models import Cluster, HistoryEntry, Workset


class Health(BaseModel):
    service: str
    status: str


class WorksetDetail(Workset):
    """A workset with its newest history entries."""

    model_config = ConfigDict(title="WorksetDetail")

    history: list[HistoryEntry] = Field(description="The newest 100 entries, oldest first.")
    history_complete: bool = Field(description="Whether `history` is the whole history; if not, page through it.")


class WorksetPage(BaseModel):
    worksets: list[Workset]
    next_token: str | None = Field(description="Pass as `next_token` for the next page; null on the last one.")


class HistoryPage(BaseModel):
    history: list[HistoryEntry] = Field(description="Oldest first.")
    next_token: str | None = Field(description="Pass as `next_token` for the next page; null on the last one.")


class ClusterList(BaseModel):
    clusters: list[Cluster]


class QueueStats(BaseModel):
    by_state: dict[str, int] = Field(description="How many worksets are in each state.")
    ready_by_priority: dict[str, int] = Field(description="Ready worksets by priority.")


class ClusterLoadView(BaseModel):
    name: str
    status: str
    live: bool = Field(description="Active, and its agent heartbeated recently: it may get new work.")
    active_worksets: int = Field(description="Worksets it holds now: assigned, locked or running.")
    max_worksets: int


class DecisionView(BaseModel):
    workset_id: str
    cluster: str | None
    reason: str


class TickSummary(BaseModel):
    at: str
    expired: int
    retried: int
    assigned: int
    waiting: int
    conflicts: int
    assignments: list[DecisionView] = Field(description="The first decisions that placed a workset.")
    waits: list[DecisionView] = Field(description="The first decisions that left a workset waiting, with why.")


class SchedulerStats(BaseModel):
    ready: int = Field(description="Ready worksets, assigned or not.")
    unassigned: int = Field(description="Ready worksets no cluster has been chosen for yet.")
    clusters: list[ClusterLoadView]
    last_tick: TickSummary | None = Field(description="What the scheduler's latest tick did; null before the first.")


class Registered(Workset):
    """A workset registered (or found already registered) through `POST /worksets`."""

    model_config = ConfigDict(title="Registered")

    outcome: str = Field(description="registered, retried, unchanged or duplicate.")
