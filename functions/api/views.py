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
    active_vcpus: int = Field(description="vCPUs those worksets take (each as the scheduler estimated it).")
    vcpus: int = Field(description="The vCPUs it declared; 0: not declared, only worksets are counted.")


class ClusterNeedView(BaseModel):
    vcpus: int = Field(description="The most vCPUs one of the waiting worksets needs.")
    region: str | None = None
    availability_zone: str | None = None
    cluster_name: str | None = Field(default=None, description="The cluster its work file names, if it names one.")


class DecisionView(BaseModel):
    workset_id: str
    cluster: str | None = Field(description="Where it goes; null when it waits.")
    reason: str = Field(description="Why, in words: the priority, the estimate and cost, or what it waits for.")
    vcpus: int | None = Field(default=None, description="vCPUs it takes of its cluster, as estimated.")
    estimated_cost: float | None = Field(default=None, description="Estimated cost in USD on the chosen cluster.")
    need: ClusterNeedView | None = Field(default=None, description="The cluster it needs, when none could take it.")


class RecentDecision(DecisionView):
    at: str = Field(description="When the tick that decided it ran.")


class ClusterNeeded(BaseModel):
    vcpus: int
    worksets: int = Field(description="How many worksets wait for such a cluster.")
    workset_ids: list[str] = Field(description="The first 20 of them.")
    region: str | None = None
    availability_zone: str | None = None
    cluster_name: str | None = None


class TickSummary(BaseModel):
    at: str
    expired: int
    retried: int
    unassigned: int = Field(default=0, description="Assignments taken back: cluster not live, or not claimed in time.")
    assigned: int
    waiting: int
    conflicts: int
    assignments: list[DecisionView] = Field(description="The first 50 decisions that placed a workset.")
    waits: list[DecisionView] = Field(description="The first 50 decisions that left a workset waiting, with why.")
    clusters_needed: list[ClusterNeeded] = Field(
        default=[], description="Clusters no registered one could stand in for; each was announced on EventBridge."
    )


class SchedulerStats(BaseModel):
    ready: int = Field(description="Ready worksets, assigned or not.")
    unassigned: int = Field(description="Ready worksets no cluster has been chosen for yet.")
    clusters: list[ClusterLoadView]
    last_tick: TickSummary | None = Field(description="What the scheduler's latest tick did; null before the first.")
    recent_decisions: list[RecentDecision] = Field(
        description=(
            "The decisions of the last 10 minutes' ticks, newest tick first (at most 200): every assignment, and each "
            "wait once, at the newest tick that made it with that reason."
        )
    )


class Registered(Workset):
    """A workset registered (or found already registered) through `POST /worksets`."""

    model_config = ConfigDict(title="Registered")

    outcome: str = Field(description="registered, retried, unchanged or duplicate.")
