"""Planning the import of sentinel-managed folders: the state table, its precedence, `daylily.error` bodies, and the
plan of whole example folders. Pure: no AWS."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from itertools import combinations

import pytest

from tests.unit.conftest import PREFIX, ExampleFolder
from workset_monitor.bucket import FolderSnapshot
from workset_monitor.layout import (
    SENTINEL_COMPLETE,
    SENTINEL_ERROR,
    SENTINEL_IGNORE,
    SENTINEL_IN_PROGRESS,
    SENTINEL_LOCK,
    SENTINEL_READY,
    validate_folder,
)
from workset_monitor.migration import (
    ACTOR,
    MAX_REASON_CHARS,
    FolderPlan,
    FolderResult,
    Outcome,
    Rule,
    decide,
    describe,
    normalize_prefix,
    parse_error_body,
    plan_folder,
    summarize,
    to_workset,
)
from workset_monitor.models import ErrorCategory, Priority, State

ALL = (SENTINEL_READY, SENTINEL_IGNORE, SENTINEL_LOCK, SENTINEL_IN_PROGRESS, SENTINEL_COMPLETE, SENTINEL_ERROR)
SUBSETS = [frozenset(names) for size in range(len(ALL) + 1) for names in combinations(ALL, size)]
STAMP = "2026-12-03T09:15:02Z"
AT = datetime(2026, 12, 3, 9, 15, 2, tzinfo=UTC)
NOW = datetime(2026, 12, 10, 8, 0, tzinfo=UTC)

EXPECTED: dict[Rule, tuple[State | None, ErrorCategory | None]] = {
    Rule.COMPLETE: (State.COMPLETE, None),
    Rule.ERROR: (State.ERROR, ErrorCategory.PERMANENT),
    Rule.RUNNING: (State.ERROR, ErrorCategory.LEASE_EXPIRED),
    Rule.IGNORE: (State.IGNORED, None),
    Rule.READY: (State.READY, None),
    Rule.NO_SENTINEL: (None, None),
}


def precedence(seen: frozenset[str]) -> Rule:
    """The table of the module docstring, written out again as the test's oracle: the first row that matches."""
    rows = (
        (Rule.COMPLETE, {SENTINEL_COMPLETE}),
        (Rule.ERROR, {SENTINEL_ERROR}),
        (Rule.RUNNING, {SENTINEL_IN_PROGRESS, SENTINEL_LOCK}),
        (Rule.IGNORE, {SENTINEL_IGNORE}),
        (Rule.READY, {SENTINEL_READY}),
    )
    return next((rule for rule, names in rows if seen & names), Rule.NO_SENTINEL)


def snapshot_of(folder: ExampleFolder, *sentinels: str, **extra: int) -> FolderSnapshot:
    """An example folder's snapshot with sentinel objects (and any other keys) added to its listing."""
    snapshot = folder.snapshot()
    sizes = {**snapshot.sizes, **dict.fromkeys(sentinels, 21), **extra}
    return FolderSnapshot(sizes=sizes, texts=snapshot.texts, problems=snapshot.problems)


# --- the state table ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seen", SUBSETS, ids=lambda seen: "+".join(sorted(s.split(".")[1] for s in seen)) or "none")
def test_every_combination_of_sentinels_follows_the_precedence(seen: frozenset[str]) -> None:
    decision = decide(seen, f"{STAMP}\tout of disk\n" if SENTINEL_ERROR in seen else None)

    rule = precedence(seen)
    assert decision.rule is rule
    assert (decision.state, decision.error_category) == EXPECTED[rule]
    assert decision.needs_valid_folder is (rule in (Rule.READY, Rule.RUNNING))


def test_complete_wins_over_a_stale_lock_and_an_earlier_error() -> None:
    decision = decide({SENTINEL_COMPLETE, SENTINEL_LOCK, SENTINEL_ERROR, SENTINEL_READY}, f"{STAMP}\tOOM\n")

    assert decision.state is State.COMPLETE
    assert decision.error_reasons == ()
    assert f"{SENTINEL_COMPLETE} wins over {SENTINEL_ERROR}, {SENTINEL_LOCK}, {SENTINEL_READY}" in decision.why


def test_error_takes_its_reason_from_the_body_and_wins_over_a_stale_lock() -> None:
    decision = decide({SENTINEL_ERROR, SENTINEL_LOCK, SENTINEL_IN_PROGRESS}, f"{STAMP}\tbwa-mem2 exited 137\n")

    assert (decision.state, decision.error_category) == (State.ERROR, ErrorCategory.PERMANENT)
    assert decision.error_reasons == ("bwa-mem2 exited 137 (at 2026-12-03T09:15:02.000000Z)",)
    assert f"{SENTINEL_ERROR} wins over {SENTINEL_IN_PROGRESS}, {SENTINEL_LOCK}" in decision.why


def test_error_beside_ready_is_not_a_retry_but_says_how_to_ask_for_one() -> None:
    decision = decide({SENTINEL_ERROR, SENTINEL_READY}, "disk quota exceeded")

    assert decision.state is State.ERROR
    assert decision.error_reasons == ("disk quota exceeded",)
    assert decision.why.endswith(f"drop a fresh {SENTINEL_READY} to retry")


def test_error_without_a_body_says_so() -> None:
    decision = decide({SENTINEL_ERROR}, None)

    assert decision.error_reasons == (f"{SENTINEL_ERROR} gave no reason",)


@pytest.mark.parametrize(
    "seen",
    [{SENTINEL_LOCK}, {SENTINEL_IN_PROGRESS}, {SENTINEL_LOCK, SENTINEL_IN_PROGRESS, SENTINEL_READY, SENTINEL_IGNORE}],
)
def test_a_running_workset_without_a_live_agent_becomes_an_expired_lease_not_a_lock(seen: set[str]) -> None:
    decision = decide(seen)

    assert decision.state is State.ERROR
    assert decision.error_category is ErrorCategory.LEASE_EXPIRED
    assert decision.error_category.retries_by_itself
    (reason,) = decision.error_reasons
    assert "running under the old sentinel system when migrated" in reason
    assert "no lease exists" in reason


def test_ignore_wins_over_ready() -> None:
    decision = decide({SENTINEL_IGNORE, SENTINEL_READY})

    assert decision.state is State.IGNORED
    assert f"{SENTINEL_IGNORE} wins over {SENTINEL_READY}" in decision.why


def test_a_folder_without_sentinels_is_skipped_with_a_reason() -> None:
    decision = decide({"stage_samples.tsv", "daylily_work.yaml", "daylily.readyy"})

    assert decision.rule is Rule.NO_SENTINEL
    assert decision.state is None
    assert decision.why.startswith("no sentinel")


# --- daylily.error bodies ----------------------------------------------------------------------------------------


def test_error_body_with_timestamp_tab_reason() -> None:
    note = parse_error_body(f"{STAMP}\tstaging failed: s3://bucket/key not found\n")

    assert note.at == AT
    assert note.reason == "staging failed: s3://bucket/key not found"
    assert note.readable


def test_error_body_with_a_tab_inside_the_reason_keeps_all_of_it() -> None:
    note = parse_error_body(f"{STAMP}\tstep\tsnv_call\nexit 1\n")

    assert note.at == AT
    assert note.reason == "step snv_call exit 1"


def test_error_body_whose_first_field_is_not_a_time_is_all_reason() -> None:
    note = parse_error_body("yesterday\tthe cluster went away")

    assert note.at is None
    assert note.reason == "yesterday the cluster went away"


def test_error_body_without_tab_that_is_only_a_timestamp() -> None:
    note = parse_error_body(f"{STAMP}\n")

    assert (note.at, note.reason) == (AT, None)
    assert note.describe() == f"{SENTINEL_ERROR} gave no reason (at 2026-12-03T09:15:02.000000Z)"


def test_error_body_without_tab_that_is_only_a_reason() -> None:
    note = parse_error_body("pipeline failed: OOM killed\n")

    assert (note.at, note.reason) == (None, "pipeline failed: OOM killed")
    assert note.describe() == "pipeline failed: OOM killed"


def test_error_body_naive_timestamp_is_utc_and_a_bom_is_dropped() -> None:
    note = parse_error_body("\ufeff2026-12-03 09:15:02\tno space left")

    assert note.at == AT
    assert note.reason == "no space left"


@pytest.mark.parametrize("body", ["", "   \n", f"{STAMP}\t  \n"])
def test_error_body_that_says_nothing(body: str) -> None:
    assert parse_error_body(body).reason is None
    assert parse_error_body(body).readable


@pytest.mark.parametrize(
    "body",
    [
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10".decode("utf-8", errors="replace"),
        bytes(range(256)).decode("utf-8", errors="replace"),
        "\x00" * 40,
    ],
    ids=["png", "every-byte", "nuls"],
)
def test_garbage_error_body_is_not_taken_as_a_reason(body: str) -> None:
    note = parse_error_body(body)

    assert not note.readable
    assert note.reason is None
    assert note.describe() == f"{SENTINEL_ERROR} is not readable text"
    assert decide({SENTINEL_ERROR}, body).error_reasons == (f"{SENTINEL_ERROR} is not readable text",)


def test_error_body_control_characters_collapse_and_a_long_reason_is_cut() -> None:
    assert parse_error_body(f"{STAMP}\tred \x1b[31mfailed\x1b[0m\r\n  again").reason == "red [31mfailed [0m again"

    long = parse_error_body(f"{STAMP}\t" + "x" * (MAX_REASON_CHARS * 3)).reason
    assert long is not None
    assert len(long) == MAX_REASON_CHARS
    assert long.endswith("…")


# --- whole folders -----------------------------------------------------------------------------------------------


def test_a_valid_ready_folder_is_imported_ready_with_its_work(example: Callable[[str], ExampleFolder]) -> None:
    plan = plan_folder("hg002", f"{PREFIX}hg002/", snapshot_of(example("hg002-giab-wgs-30x"), SENTINEL_READY))

    assert (plan.state, plan.error_category, plan.error_reasons) == (State.READY, None, ())
    assert plan.work is not None
    assert plan.priority is Priority.URGENT
    assert plan.sample_count == 2
    assert plan.sentinels == (SENTINEL_READY,)


def test_an_invalid_ready_folder_is_imported_as_a_validation_error_with_every_reason(
    example: Callable[[str], ExampleFolder],
) -> None:
    folder = example("broken-sheet-example")

    plan = plan_folder("broken", f"{PREFIX}broken/", snapshot_of(folder, SENTINEL_READY))

    # THEN the reasons are exactly those the register function would give
    expected = validate_folder(folder.keys, folder.sample_sheet, folder.work_file).reasons
    assert (plan.state, plan.error_category) == (State.ERROR, ErrorCategory.VALIDATION)
    assert plan.error_reasons == expected
    assert len(expected) >= 4
    assert "daylily_info.yaml is missing" in plan.error_reasons
    assert plan.work is None


def test_read_problems_of_the_snapshot_count_as_validation_reasons(example: Callable[[str], ExampleFolder]) -> None:
    snapshot = snapshot_of(example("hg002-giab-wgs-30x"), SENTINEL_READY)
    snapshot = FolderSnapshot(sizes=snapshot.sizes, texts=snapshot.texts, problems=("daylily_work.yaml is not UTF-8",))

    plan = plan_folder("hg002", f"{PREFIX}hg002/", snapshot)

    assert plan.error_category is ErrorCategory.VALIDATION
    assert plan.error_reasons == ("daylily_work.yaml is not UTF-8",)


@pytest.mark.parametrize("sentinel", [SENTINEL_COMPLETE, SENTINEL_ERROR])
def test_history_is_imported_even_when_the_folder_is_invalid(
    example: Callable[[str], ExampleFolder], sentinel: str
) -> None:
    snapshot = snapshot_of(example("broken-sheet-example"), sentinel, SENTINEL_READY)

    plan = plan_folder("old", f"{PREFIX}old/", snapshot, f"{STAMP}\tfailed\n")

    assert plan.state is (State.COMPLETE if sentinel == SENTINEL_COMPLETE else State.ERROR)
    assert plan.error_category is (None if sentinel == SENTINEL_COMPLETE else ErrorCategory.PERMANENT)
    assert plan.work is None


def test_a_finished_valid_folder_keeps_its_work_and_priority(example: Callable[[str], ExampleFolder]) -> None:
    plan = plan_folder("hg002", f"{PREFIX}hg002/", snapshot_of(example("hg002-giab-wgs-30x"), SENTINEL_COMPLETE))

    assert plan.state is State.COMPLETE
    assert plan.work is not None
    assert plan.priority is Priority.URGENT


def test_a_running_valid_folder_keeps_its_work_so_a_retry_can_run_it(example: Callable[[str], ExampleFolder]) -> None:
    snapshot = snapshot_of(example("hg002-giab-wgs-30x"), SENTINEL_LOCK, SENTINEL_IN_PROGRESS, SENTINEL_READY)

    plan = plan_folder("hg002", f"{PREFIX}hg002/", snapshot)

    assert (plan.state, plan.error_category) == (State.ERROR, ErrorCategory.LEASE_EXPIRED)
    assert plan.work is not None


def test_a_running_invalid_folder_waits_for_a_person(example: Callable[[str], ExampleFolder]) -> None:
    plan = plan_folder("broken", f"{PREFIX}broken/", snapshot_of(example("broken-sheet-example"), SENTINEL_LOCK))

    assert (plan.state, plan.error_category) == (State.ERROR, ErrorCategory.VALIDATION)
    assert "running under the old sentinel system" in plan.error_reasons[0]
    assert "daylily_info.yaml is missing" in plan.error_reasons


def test_an_ignored_folder_is_imported_ignored_whatever_its_validity(example: Callable[[str], ExampleFolder]) -> None:
    snapshot = snapshot_of(example("broken-sheet-example"), SENTINEL_IGNORE, SENTINEL_READY)

    plan = plan_folder("broken", f"{PREFIX}broken/", snapshot)

    assert (plan.state, plan.error_category, plan.error_reasons) == (State.IGNORED, None, ())


def test_only_sentinels_directly_in_the_folder_count(example: Callable[[str], ExampleFolder]) -> None:
    snapshot = snapshot_of(example("hg002-giab-wgs-30x"), **{"sample_data/daylily.ready": 3})

    plan = plan_folder("hg002", f"{PREFIX}hg002/", snapshot)

    assert plan.rule is Rule.NO_SENTINEL
    assert not plan.imports
    assert plan.sentinels == ()


def test_a_folder_whose_name_is_not_a_workset_name_is_skipped(example: Callable[[str], ExampleFolder]) -> None:
    plan = plan_folder(" padded ", f"{PREFIX} padded /", snapshot_of(example("hg002-giab-wgs-30x"), SENTINEL_READY))

    assert plan.rule is Rule.BAD_NAME
    assert not plan.imports
    assert plan.why.startswith("not a workset name")


# --- the workset written ---------------------------------------------------------------------------------------------


def plan_of(state: State, category: ErrorCategory | None = None) -> FolderPlan:
    return FolderPlan(
        workset_id="ws",
        folder=f"{PREFIX}ws/",
        sentinels=(SENTINEL_LOCK,),
        rule=Rule.RUNNING,
        state=state,
        why="why",
        error_category=category,
        error_reasons=("r",) if category else (),
    )


def test_an_expired_lease_import_is_retried_by_the_retry_policy() -> None:
    workset = to_workset(plan_of(State.ERROR, ErrorCategory.LEASE_EXPIRED), bucket="b", now=NOW, retry_base_seconds=60)

    assert workset.state is State.ERROR
    assert workset.lease is None
    assert workset.attempt == 1
    assert workset.retry_at == NOW + timedelta(seconds=60)
    assert (workset.created_at, workset.updated_at, workset.bucket) == (NOW, NOW, "b")


@pytest.mark.parametrize("category", [ErrorCategory.PERMANENT, ErrorCategory.VALIDATION])
def test_errors_that_wait_for_a_person_get_no_retry_time(category: ErrorCategory) -> None:
    assert to_workset(plan_of(State.ERROR, category), bucket="b", now=NOW).retry_at is None


def test_a_skipped_plan_is_not_a_workset() -> None:
    with pytest.raises(ValueError, match="not imported"):
        to_workset(replace(plan_of(State.READY), state=None), bucket="b", now=NOW)


def test_the_history_reason_names_the_sentinels_seen(example: Callable[[str], ExampleFolder]) -> None:
    snapshot = snapshot_of(example("hg002-giab-wgs-30x"), SENTINEL_COMPLETE, SENTINEL_LOCK)

    reason = plan_folder("hg002", f"{PREFIX}hg002/", snapshot).history_reason

    assert reason.startswith(f"migrated from sentinels {SENTINEL_COMPLETE}, {SENTINEL_LOCK}: the run finished")
    assert ACTOR == "migration"


# --- output ------------------------------------------------------------------------------------------------------


def test_lines_show_name_sentinels_state_and_why() -> None:
    plan = plan_of(State.ERROR, ErrorCategory.LEASE_EXPIRED)

    assert describe(FolderResult("ws", Outcome.WOULD_IMPORT, plan)) == (
        f"would import: ws [{SENTINEL_LOCK}] -> error (lease_expired): why"
    )
    assert describe(FolderResult("ws", Outcome.EXISTS, plan, "already in the table as ready")) == (
        f"exists, skipped: ws [{SENTINEL_LOCK}]: already in the table as ready"
    )
    assert describe(FolderResult("ws", Outcome.FAILED, detail="AccessDenied: no")) == "failed: ws: AccessDenied: no"


def test_summary_counts_each_outcome_and_the_imports_per_state() -> None:
    results = [
        FolderResult("a", Outcome.IMPORTED, plan_of(State.ERROR, ErrorCategory.LEASE_EXPIRED)),
        FolderResult("b", Outcome.IMPORTED, plan_of(State.COMPLETE)),
        FolderResult("c", Outcome.IMPORTED, plan_of(State.COMPLETE)),
        FolderResult("d", Outcome.EXISTS, plan_of(State.READY), "already in the table as ready"),
        FolderResult("e", Outcome.FAILED, detail="boom"),
    ]

    assert summarize(results, dry_run=False) == (
        "summary: 5 folders, 3 imported (complete: 2, error (lease_expired): 1), 1 already in the table, "
        "0 skipped, 1 failed"
    )


def test_summary_of_a_run_that_imported_nothing_says_nothing_changed() -> None:
    results = [FolderResult("d", Outcome.EXISTS, plan_of(State.READY), "already in the table as ready")]

    assert summarize(results, dry_run=False).endswith("; nothing changed")
    assert summarize([], dry_run=True) == (
        "summary: 0 folders, 0 to import, 0 already in the table, 0 skipped, 0 failed; dry run, nothing written"
    )


@pytest.mark.parametrize(
    ("given", "expected"),
    [("daylily_monitoring/active_worksets", "daylily_monitoring/active_worksets/"), ("/a/b/", "a/b/"), ("", "")],
)
def test_prefix_is_normalized_as_the_functions_do(given: str, expected: str) -> None:
    assert normalize_prefix(given) == expected
