"""Importing the worksets of the old sentinel system into the table. Pure: a folder as S3 shows it in, a plan out.

Before the workset monitor, teams coordinated worksets with sentinel files in S3 only. Migration reads every folder
directly under a prefix and registers each one in the table in the state its sentinels say (`tools/migrate.py` is
the command; it does the reading and the writing, this module decides).

A folder may hold several sentinels at once: the old tools wrote new ones without always removing the old ones. The
sentinel that says the most about what finally happened wins:

| sentinels seen (first match wins)       | imported as                    | folder must be valid |
|-----------------------------------------|--------------------------------|----------------------|
| `daylily.complete`                      | `complete`                     | no (history)         |
| `daylily.error`                         | `error` / `permanent`          | no (history)         |
| `daylily.in_progress` or `daylily.lock` | `error` / `lease_expired`      | yes                  |
| `daylily.ignore`                        | `ignored`                      | no                   |
| `daylily.ready`                         | `ready`                        | yes                  |
| none of the six                         | skipped                        | -                    |

A folder that must be valid and is not is imported as `error` / `validation` with every reason.

Why this order:

- `complete` first: a run that finished is a fact; a `daylily.lock` or `daylily.error` beside it is left over from
  this or an earlier attempt (the old tools did not always clean up), and re-running a finished workset costs money.
- `error` next: the last attempt failed and said why. The body of `daylily.error` (timestamp, tab, reason) is the
  reason; the old system gave no category, so it is `permanent`, which waits for a person, as an error reported
  without a category does in the API. A `daylily.ready` beside it is not taken as a retry: a fresh `daylily.ready`
  dropped after the migration asks for one, as it does for any workset in `error`.
- `in_progress` / `lock`: the workset was running, or being prepared, under the old system when it was migrated. No
  agent holds a lease in the table, so importing it as `locked` would leave it where nothing ever moves it on
  (only a lease holder may). It is imported as an expired lease would leave it: `error` / `lease_expired`, with
  `retry_at` set by the retry policy, so the schedule function retries it by itself, or a person acts first. Since
  a retry runs the folder, the folder must be valid; if it is not, the import is `error` / `validation` with every
  reason, which waits for a person to fix the folder and drop a fresh `daylily.ready`.
- `ignore` before `ready`: a person who dropped `daylily.ignore` next to `daylily.ready` meant to hold it back.
- `ready`: validated exactly as the register function validates a registration (`layout.validate_folder` on the
  folder's `bucket.FolderSnapshot`); an invalid folder is imported as `error` / `validation` with every reason.
- No sentinel at all: the old system never saw it (perhaps still being uploaded), so nothing is imported; dropping
  `daylily.ready` registers it the usual way.

Completed and errored worksets are history: they are imported whether their folder is valid or not, with the work,
priority and sample count filled in when the folder does validate.

Limitations:

- Times are the migration's: `created_at` of an imported workset is when it was imported, not when the old system
  saw it first (the timestamp in `daylily.error` is kept in the reason).
- A run the old system still had going is retried by the schedule function about a minute after its import, so
  two runs may overlap unless the old pollers are stopped before the migration.
- The folder's sentinels are not changed here. The mirror function then writes the imported state's sentinel into
  the folder as for any registration (so `daylily.complete` and `daylily.error` get the import's time), and leaves
  the old system's stale `daylily.lock` / `daylily.in_progress` in place until a later change replaces them.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from .bucket import FolderSnapshot
from .layout import (
    SAMPLE_SHEET,
    SENTINEL_COMPLETE,
    SENTINEL_ERROR,
    SENTINEL_IGNORE,
    SENTINEL_IN_PROGRESS,
    SENTINEL_LOCK,
    SENTINEL_READY,
    SYSTEM_SENTINELS,
    TRIGGER_SENTINELS,
    WORK_FILE,
    validate_folder,
    workset_name_problem,
)
from .models import ErrorCategory, Priority, State, Workset, WorkSpec, sortable
from .retries import DEFAULT_BASE_SECONDS, retry_at

ACTOR = "migration"
"""The actor of the history entry of every imported workset."""

SENTINELS = TRIGGER_SENTINELS | SYSTEM_SENTINELS
RUNNING_SENTINELS = frozenset({SENTINEL_IN_PROGRESS, SENTINEL_LOCK})

MAX_ERROR_BODY_BYTES = 64 * 1024
"""How much of `daylily.error` is read; a reason is a line of text, anything longer is not one."""

MAX_REASON_CHARS = 1000
"""A reason taken from `daylily.error` is cut to this length, so one file cannot bloat the workset item."""

UNREADABLE_SHARE = 0.1
"""A body with more than this share of control or undecodable characters is not text, whatever it holds."""


class Rule(StrEnum):
    """Which row of the table in the module docstring decided a folder's state."""

    COMPLETE = "complete"
    ERROR = "error"
    RUNNING = "running"
    IGNORE = "ignore"
    READY = "ready"
    NO_SENTINEL = "no_sentinel"
    BAD_NAME = "bad_name"


@dataclass(frozen=True)
class ErrorNote:
    """What a `daylily.error` body says: when (if it gives a readable time) and why (if it gives readable text)."""

    at: datetime | None = None
    reason: str | None = None
    readable: bool = True

    def describe(self) -> str:
        """The reason as an error reason of the table: the old system's words, or what was wrong with the body."""
        if not self.readable:
            why = f"{SENTINEL_ERROR} is not readable text"
        else:
            why = self.reason or f"{SENTINEL_ERROR} gave no reason"
        return f"{why} (at {sortable(self.at)})" if self.at is not None else why


@dataclass(frozen=True)
class Decision:
    """The state a folder's sentinels ask for, before its folder is validated."""

    rule: Rule
    state: State | None
    why: str
    error_category: ErrorCategory | None = None
    error_reasons: tuple[str, ...] = ()

    @property
    def needs_valid_folder(self) -> bool:
        """Whether the imported workset will run, so its folder must pass the registration's validation."""
        return self.rule in (Rule.READY, Rule.RUNNING)


@dataclass(frozen=True)
class FolderPlan:
    """What importing one folder will write: the state and why, and what validation found in the folder."""

    workset_id: str
    folder: str
    sentinels: tuple[str, ...]
    rule: Rule
    state: State | None
    why: str
    error_category: ErrorCategory | None = None
    error_reasons: tuple[str, ...] = ()
    work: WorkSpec | None = None
    priority: Priority = Priority.NORMAL
    sample_count: int = 0

    @property
    def imports(self) -> bool:
        return self.state is not None

    @property
    def label(self) -> str:
        """The state as the plan shows it: `error (validation)`, `complete`, or `skip`."""
        if self.state is None:
            return "skip"
        return f"{self.state} ({self.error_category})" if self.error_category else str(self.state)

    @property
    def history_reason(self) -> str:
        """The reason of the imported workset's first history entry: the sentinels seen, then why."""
        return f"migrated from sentinels {', '.join(self.sentinels)}: {self.why}"


class Outcome(StrEnum):
    """What happened to one folder in a run of the migration."""

    IMPORTED = "imported"
    WOULD_IMPORT = "would import"
    EXISTS = "exists, skipped"
    SKIPPED = "skipped"
    FAILED = "failed"


_IMPORTING = frozenset({Outcome.IMPORTED, Outcome.WOULD_IMPORT})

_SUMMARY_WORDS = {
    Outcome.IMPORTED: "imported",
    Outcome.WOULD_IMPORT: "to import",
    Outcome.EXISTS: "already in the table",
    Outcome.SKIPPED: "skipped",
    Outcome.FAILED: "failed",
}
"""How the summary line counts each outcome."""


@dataclass(frozen=True)
class FolderResult:
    """One folder's outcome. `plan` is None when the folder could not be read; `detail` says what the table or AWS
    said (already there, or the error)."""

    workset_id: str
    outcome: Outcome
    plan: FolderPlan | None = None
    detail: str = ""


def normalize_prefix(prefix: str) -> str:
    """The prefix as the functions use it: no leading slash, and a non-empty one ends with a slash."""
    prefix = prefix.lstrip("/")
    return prefix if not prefix or prefix.endswith("/") else prefix + "/"


def sentinels_in(snapshot: FolderSnapshot) -> frozenset[str]:
    """The sentinels directly in a folder (keys relative to it); a `daylily.ready` deeper down is not one."""
    return frozenset(key for key in snapshot.sizes if key in SENTINELS)


def parse_error_body(body: str | None) -> ErrorNote:
    """Read a `daylily.error` body: a timestamp, a tab, then the reason; a body without a tab is either a bare
    timestamp or a bare reason. Whitespace and control characters in the reason collapse to single spaces.

    Limitations: only ISO-8601 timestamps are recognised; a first field that is not one is taken as part of the
    reason, so nothing the old tool wrote is lost.
    """
    if body is None:
        return ErrorNote()

    text = body.removeprefix("\ufeff")
    if _unreadable(text):
        return ErrorNote(readable=False)

    first, tab, rest = text.partition("\t")
    at = _parse_time(first)
    if tab and at is None:
        rest = text  # the first field is not a time: all of it is the reason
    elif not tab:
        rest = "" if at is not None else text
    return ErrorNote(at=at, reason=_clean(rest) or None)


def decide(sentinels: Collection[str], error_body: str | None = None) -> Decision:
    """The state a folder's sentinels ask for, by the table in the module docstring.

    `error_body` is the text of `daylily.error`, when the folder holds one.
    """
    seen = set(sentinels) & SENTINELS

    if SENTINEL_COMPLETE in seen:
        why = "the run finished" + _wins_over(SENTINEL_COMPLETE, seen - {SENTINEL_COMPLETE})
        return Decision(Rule.COMPLETE, State.COMPLETE, why)

    if SENTINEL_ERROR in seen:
        reason = parse_error_body(error_body).describe()
        why = f"the last attempt failed: {reason}" + _wins_over(SENTINEL_ERROR, seen - {SENTINEL_ERROR, SENTINEL_READY})
        if SENTINEL_READY in seen:
            why += f"; drop a fresh {SENTINEL_READY} to retry"
        return Decision(Rule.ERROR, State.ERROR, why, ErrorCategory.PERMANENT, (reason,))

    running = seen & RUNNING_SENTINELS
    if running:
        # NOTE: nothing here can tell a run the old system abandoned from one still going; both retry by the policy.
        reason = (
            f"it was running under the old sentinel system when migrated ({' and '.join(sorted(running))}); "
            "no lease exists in the table, so it is treated as an expired lease"
        )
        return Decision(Rule.RUNNING, State.ERROR, reason, ErrorCategory.LEASE_EXPIRED, (reason,))

    if SENTINEL_IGNORE in seen:
        why = "a person asked to skip it" + _wins_over(SENTINEL_IGNORE, seen - {SENTINEL_IGNORE})
        return Decision(Rule.IGNORE, State.IGNORED, why)

    if SENTINEL_READY in seen:
        return Decision(Rule.READY, State.READY, "waiting for a cluster")

    why = f"no sentinel: the old system never saw it; drop {SENTINEL_READY} to register it"
    return Decision(Rule.NO_SENTINEL, None, why)


def plan_folder(workset_id: str, folder: str, snapshot: FolderSnapshot, error_body: str | None = None) -> FolderPlan:
    """Plan the import of one folder from its snapshot (the one the register function validates) and the body of
    its `daylily.error`, if it has one."""
    sentinels = tuple(sorted(sentinels_in(snapshot)))
    name_problem = workset_name_problem(workset_id)
    if name_problem is not None:
        return FolderPlan(workset_id, folder, sentinels, Rule.BAD_NAME, None, f"not a workset name: {name_problem}")

    decision = decide(sentinels, error_body)
    if decision.state is None:
        return FolderPlan(workset_id, folder, sentinels, decision.rule, None, decision.why)

    report = validate_folder(snapshot.sizes, snapshot.texts.get(SAMPLE_SHEET), snapshot.texts.get(WORK_FILE))
    problems = snapshot.problems + report.reasons
    valid = not problems and report.work is not None

    state, category, reasons, why = decision.state, decision.error_category, decision.error_reasons, decision.why
    if decision.needs_valid_folder and not valid:
        state, category = State.ERROR, ErrorCategory.VALIDATION
        reasons = decision.error_reasons + problems
        why = "folder invalid: " + "; ".join(reasons)
    elif decision.rule is Rule.READY:
        why = f"folder valid; {why}"

    return FolderPlan(
        workset_id=workset_id,
        folder=folder,
        sentinels=sentinels,
        rule=decision.rule,
        state=state,
        why=why,
        error_category=category,
        error_reasons=reasons,
        work=report.work if valid else None,
        priority=report.work.priority if valid and report.work else Priority.NORMAL,
        sample_count=report.sample_count if valid else 0,
    )


def to_workset(
    plan: FolderPlan, *, bucket: str, now: datetime, retry_base_seconds: int = DEFAULT_BASE_SECONDS
) -> Workset:
    """The workset a plan registers. An error that retries by itself (`lease_expired`) gets its `retry_at` from the
    retry policy, as the schedule function's expiry would give it."""
    if plan.state is None:
        raise ValueError(f"folder {plan.workset_id!r} is not imported: {plan.why}")

    # NOTE: created_at is the import's time; the old system kept no reliable one (sentinels get rewritten).
    workset = Workset(
        workset_id=plan.workset_id,
        bucket=bucket,
        folder=plan.folder,
        state=plan.state,
        priority=plan.priority,
        created_at=now,
        updated_at=now,
        work=plan.work,
        sample_count=plan.sample_count,
        error_category=plan.error_category,
        error_reasons=plan.error_reasons,
    )
    if plan.state is State.ERROR:
        due = retry_at(plan.error_category, workset.attempt, workset.max_attempts, now, retry_base_seconds)
        workset = workset.model_copy(update={"retry_at": due})
    return workset


def describe(result: FolderResult) -> str:
    """One line of the command's output about one folder: outcome, name, sentinels seen, state, and why."""
    plan = result.plan
    if plan is None:
        return f"{result.outcome}: {result.workset_id}" + (f": {result.detail}" if result.detail else "")

    head = f"{result.outcome}: {plan.workset_id} [{', '.join(plan.sentinels) or 'no sentinel'}]"
    if result.outcome is Outcome.SKIPPED:
        return f"{head}: {plan.why}"
    if result.outcome is Outcome.EXISTS:
        return f"{head}: {result.detail}"
    if result.outcome is Outcome.FAILED:
        return f"{head} -> {plan.label}: {result.detail}"
    return f"{head} -> {plan.label}: {plan.why}"


def summarize(results: Iterable[FolderResult], *, dry_run: bool) -> str:
    """The closing line: how many folders had each outcome, the imports split by state."""
    results = list(results)
    outcomes = Counter(result.outcome for result in results)
    states = Counter(result.plan.label for result in results if result.plan and result.outcome in _IMPORTING)

    imported = Outcome.WOULD_IMPORT if dry_run else Outcome.IMPORTED
    parts = [f"{outcomes[imported]} {_SUMMARY_WORDS[imported]}"]
    if states:
        parts[0] += " (" + ", ".join(f"{label}: {count}" for label, count in sorted(states.items())) + ")"
    others = (Outcome.EXISTS, Outcome.SKIPPED, Outcome.FAILED)
    parts += [f"{outcomes[outcome]} {_SUMMARY_WORDS[outcome]}" for outcome in others]

    line = f"summary: {len(results)} folders, " + ", ".join(parts)
    if dry_run:
        return f"{line}; dry run, nothing written"
    return line if outcomes[Outcome.IMPORTED] else f"{line}; nothing changed"


def _wins_over(winner: str, losers: Collection[str]) -> str:
    return f"; {winner} wins over {', '.join(sorted(losers))}" if losers else ""


def _unreadable(text: str) -> bool:
    """Whether a body is mostly not text: NULs, control characters, or bytes that did not decode."""
    if not text:
        return False
    bad = sum(1 for ch in text if ch == "\ufffd" or (unicodedata.category(ch) == "Cc" and ch not in "\t\n\r"))
    return bad / len(text) > UNREADABLE_SHARE


def _parse_time(text: str) -> datetime | None:
    candidate = text.strip()
    if not candidate or len(candidate) > 64:
        return None
    try:
        parsed = datetime.fromisoformat(candidate)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _clean(text: str) -> str:
    """One line of printable text: control and format characters become spaces, runs of spaces collapse."""
    printable = "".join(" " if unicodedata.category(ch) in ("Cc", "Cf", "Cs") or ch == "\ufffd" else ch for ch in text)
    collapsed = " ".join(printable.split())
    if len(collapsed) > MAX_REASON_CHARS:
        return collapsed[: MAX_REASON_CHARS - 1] + "…"
    return collapsed
