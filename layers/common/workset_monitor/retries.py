"""The retry policy: which failed attempts go back to the queue by themselves, and when. Pure, no AWS."""

from __future__ import annotations

from datetime import datetime, timedelta

from .models import ErrorCategory

DEFAULT_BASE_SECONDS = 60
"""The first automatic retry waits a minute; each later one twice as long as the one before."""

MAX_BACKOFF = timedelta(hours=6)


def retry_at(
    category: ErrorCategory | None,
    attempt: int,
    max_attempts: int,
    failed_at: datetime,
    base_seconds: int = DEFAULT_BASE_SECONDS,
) -> datetime | None:
    """When attempt `attempt` + 1 should start by itself after attempt `attempt` failed, or None when a person must
    decide: the category does not retry by itself (validation, data, configuration, permanent), or no attempt is
    left."""
    if category is None or not category.retries_by_itself or attempt >= max_attempts:
        return None

    backoff = timedelta(seconds=base_seconds * 2 ** (attempt - 1))
    return failed_at + min(backoff, MAX_BACKOFF)
