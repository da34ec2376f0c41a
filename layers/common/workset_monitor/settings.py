"""One settings model for every function, read from the environment once."""

from __future__ import annotations

import os
from functools import lru_cache

from pydantic import BaseModel, Field, ValidationError, field_validator


class Settings(BaseModel):
    """What a function needs to know about its deployment. The template sets these on every function."""

    table_name: str = Field(min_length=1, description="WORKSET_TABLE")
    bucket: str = Field(min_length=1, description="WORKSET_BUCKET")
    prefix: str = Field(default="daylily_monitoring/active_worksets/", description="WORKSET_PREFIX")
    topic_arn: str | None = Field(default=None, description="WORKSET_TOPIC_ARN")
    lease_seconds: int = Field(default=900, ge=60, le=86_400, description="LEASE_SECONDS")
    clock_skew_seconds: int = Field(default=60, ge=0, le=3600, description="CLOCK_SKEW_SECONDS")
    retry_base_seconds: int = Field(default=60, ge=1, le=3600, description="RETRY_BASE_SECONDS")
    aging_hours: float = Field(default=4, gt=0, le=720, description="AGING_HOURS: waiting this long raises one rank")
    assignment_timeout_seconds: int = Field(
        default=600, ge=60, le=86_400, description="ASSIGNMENT_TIMEOUT_SECONDS: an unclaimed assignment expires"
    )
    notify_channels: str = Field(default="", description="NOTIFY_CHANNELS: JSON list of channels (routing.py)")
    notify_secrets_prefix: str = Field(
        default="", description="NOTIFY_SECRETS_PREFIX: where channel secrets may be read from (empty: anywhere)"
    )
    idempotency_table: str | None = Field(default=None, description="IDEMPOTENCY_TABLE: the notify function's")
    allowed_origins: tuple[str, ...] = Field(default=(), description="ALLOWED_ORIGINS, comma-separated (CORS)")
    region: str | None = Field(default=None, description="AWS_REGION (Lambda sets it), else AWS_DEFAULT_REGION")

    @field_validator("prefix")
    @classmethod
    def _prefix_is_a_folder(cls, prefix: str) -> str:
        """Every folder directly under the prefix is a workset, so a non-empty prefix ends with a slash."""
        prefix = prefix.lstrip("/")
        return prefix if not prefix or prefix.endswith("/") else prefix + "/"

    @classmethod
    def from_environ(cls, environ: dict[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        values = {
            "table_name": env.get("WORKSET_TABLE", ""),
            "bucket": env.get("WORKSET_BUCKET", ""),
            "prefix": env.get("WORKSET_PREFIX", "daylily_monitoring/active_worksets/"),
            "topic_arn": env.get("WORKSET_TOPIC_ARN") or None,
            "lease_seconds": env.get("LEASE_SECONDS", "900"),
            "clock_skew_seconds": env.get("CLOCK_SKEW_SECONDS", "60"),
            "retry_base_seconds": env.get("RETRY_BASE_SECONDS", "60"),
            "aging_hours": env.get("AGING_HOURS", "4"),
            "assignment_timeout_seconds": env.get("ASSIGNMENT_TIMEOUT_SECONDS", "600"),
            "notify_channels": env.get("NOTIFY_CHANNELS", ""),
            "notify_secrets_prefix": env.get("NOTIFY_SECRETS_PREFIX", ""),
            "idempotency_table": env.get("IDEMPOTENCY_TABLE") or None,
            "allowed_origins": tuple(o.strip() for o in env.get("ALLOWED_ORIGINS", "").split(",") if o.strip()),
            "region": env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None,
        }
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            problems = "; ".join(f"{error['loc'][0]}: {error['msg']}" for error in exc.errors())
            raise RuntimeError(f"the function's environment is not usable: {problems}") from exc


@lru_cache(maxsize=1)
def settings() -> Settings:
    """The settings of this process, read on first use."""
    return Settings.from_environ()
