"""The workset domain's nouns: states, priorities, error categories, worksets, leases, history, clusters."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator


def utcnow() -> datetime:
    return datetime.now(UTC)


def sortable(moment: datetime) -> str:
    """A time as a string that sorts as the time does: UTC, fixed width, microseconds always written."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


DEFAULT_MAX_ATTEMPTS = 3


class State(StrEnum):
    READY = "ready"
    LOCKED = "locked"
    IN_PROGRESS = "in_progress"
    COMPLETE = "complete"
    ERROR = "error"
    CANCELED = "canceled"
    IGNORED = "ignored"
    ARCHIVED = "archived"


class Priority(StrEnum):
    URGENT = "urgent"
    NORMAL = "normal"
    LOW = "low"

    @property
    def rank(self) -> int:
        """Queue order: lower runs first."""
        return {Priority.URGENT: 0, Priority.NORMAL: 1, Priority.LOW: 2}[self]


class ErrorCategory(StrEnum):
    VALIDATION = "validation"
    DATA = "data"
    CONFIGURATION = "configuration"
    TRANSIENT = "transient"
    RESOURCE = "resource"
    LEASE_EXPIRED = "lease_expired"
    PERMANENT = "permanent"

    @property
    def retries_by_itself(self) -> bool:
        return self in (ErrorCategory.TRANSIENT, ErrorCategory.RESOURCE, ErrorCategory.LEASE_EXPIRED)


AWS_REGION_PATTERN = r"^[a-z]{2}(-[a-z]+)+-\d{1,2}$"
"""An AWS region's name: us-west-2, eu-central-1, us-gov-west-1."""
AWS_ZONE_PATTERN = r"^[a-z]{2}(-[a-z]+)+-\d{1,2}[a-z]?(-[a-z0-9]+)*$"
"""An availability zone's name: us-west-2b; local and Wavelength zones too (us-west-2-lax-1a)."""


class ClusterStatus(StrEnum):
    ACTIVE = "active"
    DRAINING = "draining"
    UNAVAILABLE = "unavailable"
    RETIRED = "retired"


class WorkSpec(BaseModel):
    """What `daylily_work.yaml` asks for, with its aliases resolved."""

    model_config = ConfigDict(frozen=True)

    run_command: str
    clone_args: str | None = None
    export_uri: str | None = None
    workdir_name: str | None = None
    budget: str | None = Field(
        default=None, description="A cap in USD ('250', '$250', '250 USD'); any other text is a label and caps nothing."
    )
    cluster_name: str | None = None
    region: str | None = Field(default=None, description="Run only on a cluster in this AWS region.")
    availability_zone: str | None = Field(default=None, description="Run only on a cluster in this availability zone.")
    priority: Priority = Priority.NORMAL
    depends_on: tuple[str, ...] = ()
    deadline: datetime | None = None
    max_attempts: int | None = Field(default=None, description="Overrides the default number of attempts.")
    pipeline: str | None = Field(default=None, description="wgs, wes, ...: sizes the run estimate (scheduling.py).")
    coverage: float | None = Field(default=None, gt=0, description="Sequencing depth (x); sizes the run estimate.")
    vcpus: int | None = Field(default=None, ge=1, description="vCPUs the run takes on its cluster, if not estimated.")


class Lease(BaseModel):
    """An agent's hold on a workset. The token fences writes: a write carrying an older token is refused."""

    model_config = ConfigDict(frozen=True)

    owner: str
    token: int
    expires_at: datetime


class Workset(BaseModel):
    """One workset as the table holds it."""

    model_config = ConfigDict(frozen=True)

    workset_id: str
    bucket: str
    folder: str = Field(description="The workset's folder key in the bucket, ending with a slash.")
    state: State
    version: int = 1
    priority: Priority = Priority.NORMAL
    attempt: int = 1
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    created_at: datetime
    updated_at: datetime
    work: WorkSpec | None = None
    sample_count: int = 0
    error_category: ErrorCategory | None = None
    error_reasons: tuple[str, ...] = ()
    assigned_cluster: str | None = Field(default=None, description="The cluster the scheduler chose, while ready.")
    assigned_at: datetime | None = Field(
        default=None, description="When the scheduler chose it; unclaimed, it expires."
    )
    reserved_vcpus: int = Field(
        default=0, ge=0, description="vCPUs the workset takes of its cluster's capacity while it holds the cluster."
    )
    cluster: str | None = Field(default=None, description="The cluster that holds or last held the workset.")
    lease: Lease | None = None
    progress: str | None = Field(default=None, description="The agent's last reported step: staging, exporting...")
    retry_at: datetime | None = Field(default=None, description="When a failed attempt goes back to ready by itself.")
    state_since: datetime | None = Field(
        default=None, description="When the workset entered its current state (none on worksets older than this field)."
    )
    sentinel: str | None = Field(default=None, description="The sentinel whose event last changed the workset.")
    sentinel_sequencer: str | None = Field(
        default=None, description="The S3 sequencer of that event, to spot redelivered and out-of-order events."
    )

    @property
    def queue_key(self) -> str:
        """Sort key of the queue: priority first, then age, then id for a total order."""
        return f"{self.priority.rank}#{sortable(self.created_at)}#{self.workset_id}"

    @property
    def active_cluster(self) -> str | None:
        """The cluster whose capacity this workset takes: assigned while ready, or holding it while it runs."""
        if self.state is State.READY:
            return self.assigned_cluster
        if self.state in (State.LOCKED, State.IN_PROGRESS):
            return self.cluster
        return None


class HistoryEntry(BaseModel):
    """One change of a workset, kept beside it (not inside it) so history has no size limit."""

    model_config = ConfigDict(frozen=True)

    workset_id: str
    version: int
    event: str = Field(description="registered, transition, assigned, ...")
    from_state: State | None = None
    to_state: State
    at: datetime
    actor: str
    reason: str = ""
    attempt: int = 1
    error_category: ErrorCategory | None = None
    cluster: str | None = None


class Cluster(BaseModel):
    """A compute cluster that agents registered and keep alive."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    region: str = "us-west-2"
    availability_zone: str | None = None
    max_worksets: int = Field(default=1, ge=1, le=10_000)
    vcpus: int = Field(default=0, ge=0)
    cost_per_vcpu_hour: float = Field(default=0.0, ge=0)

    @field_validator("cost_per_vcpu_hour")
    @classmethod
    def _to_a_millionth(cls, cost: float) -> float:
        """A price to a millionth: a float DynamoDB's numbers cannot hold (5e-324) must not fail a registration."""
        return round(cost, 6)

    status: ClusterStatus = ClusterStatus.ACTIVE
    registered_at: datetime = Field(default_factory=utcnow)
    last_heartbeat_at: datetime = Field(default_factory=utcnow)


def to_json_dict(model: BaseModel) -> dict[str, Any]:
    """A model as the API and the notifications show it: JSON types, no None values."""
    return model.model_dump(mode="json", exclude_none=True)
