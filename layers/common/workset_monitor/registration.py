"""Registering a workset when a person drops a sentinel into its folder."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from .bucket import FolderSnapshot
from .errors import TransitionRefused, WorksetExists
from .layout import SAMPLE_SHEET, SENTINEL_IGNORE, SENTINEL_READY, WORK_FILE, FolderReport, SentinelKey, validate_folder
from .models import DEFAULT_MAX_ATTEMPTS, ErrorCategory, Priority, State, Workset, utcnow
from .observability import logger
from .states import allowed_next
from .store import WorksetStore

ACTOR = "register"

ReadFolder = Callable[[str], FolderSnapshot]
"""What the registrar needs from S3: a folder's snapshot (the S3 adapter, or a fake in unit tests)."""


class Outcome(StrEnum):
    REGISTERED = "registered"
    DUPLICATE = "duplicate"
    RETRIED = "retried"
    IGNORED = "ignored"
    UNCHANGED = "unchanged"


@dataclass(frozen=True)
class Registration:
    outcome: Outcome
    workset: Workset
    reasons: tuple[str, ...] = ()
    """Why the folder is not a valid workset, when a validation found it so."""


class Registrar:
    """Turns a sentinel event into a registered workset. Idempotent: a redelivered event changes nothing."""

    def __init__(self, store: WorksetStore, read_folder: ReadFolder, bucket: str) -> None:
        self.store = store
        self.read_folder = read_folder
        self.bucket = bucket

    def on_sentinel(self, sentinel: SentinelKey, sequencer: str | None, now: datetime | None = None) -> Registration:
        now = now or utcnow()
        existing = self.store.find(sentinel.workset_id)
        if existing is not None:
            return self._on_existing(existing, sentinel, sequencer, now)

        workset = self._new_workset(sentinel, sequencer, now)
        try:
            workset = self.store.register(workset, actor=ACTOR, reason=_registration_reason(workset, sentinel))
        except WorksetExists:
            # Another delivery of this event, or another sentinel, won the race; what it wrote stands.
            existing = self.store.get(sentinel.workset_id)
            return self._on_existing(existing, sentinel, sequencer, now)

        logger.info("workset registered", workset_id=workset.workset_id, state=workset.state)
        return Registration(Outcome.REGISTERED, workset)

    def _on_existing(
        self, existing: Workset, sentinel: SentinelKey, sequencer: str | None, now: datetime
    ) -> Registration:
        if _already_seen(existing, sentinel.sentinel, sequencer):
            logger.info("duplicate sentinel event", workset_id=existing.workset_id, sequencer=sequencer)
            return Registration(Outcome.DUPLICATE, existing)

        if sentinel.sentinel == SENTINEL_IGNORE:
            return self._ignore(existing, sentinel, sequencer, now)
        if existing.state is State.ERROR:
            return self._retry(existing, sentinel, sequencer, now)

        logger.info("workset already registered", workset_id=existing.workset_id, state=existing.state)
        return Registration(Outcome.UNCHANGED, existing)

    def _ignore(self, existing: Workset, sentinel: SentinelKey, sequencer: str | None, now: datetime) -> Registration:
        if State.IGNORED not in allowed_next(existing.state):
            logger.warning("ignore sentinel refused", workset_id=existing.workset_id, state=existing.state)
            return Registration(Outcome.UNCHANGED, existing)

        workset = self.store.transition(
            existing,
            State.IGNORED,
            actor=ACTOR,
            reason=f"{SENTINEL_IGNORE} dropped",
            changes={"sentinel": sentinel.sentinel, "sentinel_sequencer": sequencer},
            now=now,
        )
        return Registration(Outcome.IGNORED, workset)

    def _retry(self, existing: Workset, sentinel: SentinelKey, sequencer: str | None, now: datetime) -> Registration:
        """A fresh ready sentinel in the folder of a failed workset asks for a new attempt, after a new validation."""
        try:
            return self.revalidate(
                existing,
                actor=ACTOR,
                cause=f"fresh {sentinel.sentinel} dropped",
                sentinel=sentinel,
                changes={"sentinel": sentinel.sentinel, "sentinel_sequencer": sequencer},
                now=now,
            )
        except TransitionRefused:
            return Registration(Outcome.UNCHANGED, existing)

    def revalidate(
        self,
        existing: Workset,
        *,
        actor: str,
        cause: str,
        sentinel: SentinelKey | None = None,
        changes: Mapping[str, Any] | None = None,
        now: datetime | None = None,
    ) -> Registration:
        """Validate a workset's folder again and, if it is valid now, start a new attempt: `ready`, with the work the
        folder holds today (Outcome.RETRIED). Still invalid: no new attempt, but a `revalidated` history entry says
        why (`cause`) with today's reasons, which also become the workset's own while it is in `error`
        (Outcome.UNCHANGED). A fresh `daylily.ready` and a retry or restore through the API both come here.

        The folder validated is the `sentinel`'s, else the workset's own. `changes` are written with either outcome
        (the sentinel event that asked, on the sentinel path). Raises TransitionRefused when the state table does not
        allow `existing` to go back to `ready`.
        """
        now = now or utcnow()
        asked = sentinel or SentinelKey(workset_id=existing.workset_id, folder=existing.folder, sentinel=SENTINEL_READY)
        fresh = self._new_workset(asked, None, now)

        if fresh.state is State.ERROR:
            # Still invalid: no new attempt, but the reasons now are today's, and the history says a retry was asked.
            todays = {"error_reasons": fresh.error_reasons, "error_category": fresh.error_category}
            workset = self.store.record(
                existing,
                {**(todays if existing.state is State.ERROR else {}), **(changes or {})},
                event="revalidated",
                actor=actor,
                reason=f"{cause}; folder still invalid: " + "; ".join(fresh.error_reasons),
                now=now,
            )
            logger.warning(
                "retry refused, folder still invalid", workset_id=workset.workset_id, reasons=fresh.error_reasons
            )
            return Registration(Outcome.UNCHANGED, workset, fresh.error_reasons)

        workset = self.store.transition(
            existing,
            State.READY,
            actor=actor,
            reason=cause,
            changes={
                "attempt": existing.attempt + 1,
                "work": fresh.work,
                "priority": fresh.priority,
                "max_attempts": fresh.max_attempts,
                "sample_count": fresh.sample_count,
                **(changes or {}),
            },
            now=now,
        )
        logger.info("workset retried", workset_id=workset.workset_id, attempt=workset.attempt)
        return Registration(Outcome.RETRIED, workset)

    def _new_workset(self, sentinel: SentinelKey, sequencer: str | None, now: datetime) -> Workset:
        snapshot = self.read_folder(sentinel.folder)
        try:
            report = validate_folder(snapshot.sizes, snapshot.texts.get(SAMPLE_SHEET), snapshot.texts.get(WORK_FILE))
        except Exception as exc:  # noqa: BLE001 - a folder that breaks the validator is still recorded, never lost
            logger.exception("folder validation failed", workset_id=sentinel.workset_id)
            report = FolderReport(work=None, reasons=(f"the folder could not be validated ({type(exc).__name__})",))
        reasons = snapshot.problems + report.reasons

        if sentinel.sentinel == SENTINEL_IGNORE:
            state = State.IGNORED
        else:
            state = State.ERROR if reasons or report.work is None else State.READY

        return Workset(
            workset_id=sentinel.workset_id,
            bucket=self.bucket,
            folder=sentinel.folder,
            state=state,
            priority=report.work.priority if report.work else Priority.NORMAL,
            max_attempts=(report.work.max_attempts if report.work else None) or DEFAULT_MAX_ATTEMPTS,
            created_at=now,
            updated_at=now,
            work=report.work,
            sample_count=report.sample_count,
            error_category=ErrorCategory.VALIDATION if state is State.ERROR else None,
            error_reasons=reasons if state is State.ERROR else (),
            sentinel=sentinel.sentinel,
            sentinel_sequencer=sequencer,
        )


def _already_seen(existing: Workset, sentinel: str, sequencer: str | None) -> bool:
    """Whether an event of `sentinel` is the one that last changed the workset, or older than it.

    S3 sequencers of one key grow with each event and compare as hex strings right-padded with zeros to one width.
    Sequencers of different keys do not compare, so an event of another sentinel is never taken as seen.
    """
    stored = existing.sentinel_sequencer
    if sequencer is None or stored is None or existing.sentinel not in (None, sentinel):
        return False
    if not (_is_hex(sequencer) and _is_hex(stored)):
        return sequencer == stored  # not sequencers (version ids): only the same event is a duplicate

    width = max(len(sequencer), len(stored))
    return sequencer.upper().ljust(width, "0") <= stored.upper().ljust(width, "0")


def _is_hex(value: str) -> bool:
    return bool(value) and all(ch in "0123456789abcdefABCDEF" for ch in value)


def _registration_reason(workset: Workset, sentinel: SentinelKey) -> str:
    if workset.state is State.ERROR:
        return f"{sentinel.sentinel} dropped; folder invalid: " + "; ".join(workset.error_reasons)
    return f"{sentinel.sentinel} dropped"
