"""The migration command against the template's bucket and table in the emulator: a prefix of folders in every
sentinel state, planned in a dry run, imported, and imported again."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from local.template import Template
from tests.conftest import REGION
from tools.migrate import main
from workset_monitor.models import ErrorCategory, State, Workset
from workset_monitor.scheduler import Scheduler
from workset_monitor.store import WorksetStore

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent.parent
EXAMPLES = ROOT / "examples" / "worksets"
PREFIX = "legacy/active_worksets/"
STAMP = "2026-11-28T22:41:07Z"

FOLDERS: dict[str, tuple[str, dict[str, str]]] = {
    "hg002-ready": ("hg002-giab-wgs-30x", {"daylily.ready": STAMP}),
    "broken-ready": ("broken-sheet-example", {"daylily.ready": STAMP}),
    "hg002-done": ("hg002-giab-wgs-30x", {"daylily.ready": STAMP, "daylily.lock": STAMP, "daylily.complete": STAMP}),
    "hg002-failed": ("hg002-giab-wgs-30x", {"daylily.lock": STAMP, "daylily.error": f"{STAMP}\tbwa-mem2 exited 137\n"}),
    "hg002-running": ("hg002-giab-wgs-30x", {"daylily.lock": STAMP, "daylily.in_progress": STAMP}),
    "held back é 2": ("broken-sheet-example", {"daylily.ready": STAMP, "daylily.ignore": STAMP}),
    "still-uploading": ("hg002-giab-wgs-30x", {}),
}
"""Folder name -> (example whose files it holds, sentinels and their bodies)."""

PLANNED: dict[str, tuple[State, ErrorCategory | None]] = {
    "hg002-ready": (State.READY, None),
    "broken-ready": (State.ERROR, ErrorCategory.VALIDATION),
    "hg002-done": (State.COMPLETE, None),
    "hg002-failed": (State.ERROR, ErrorCategory.PERMANENT),
    "hg002-running": (State.ERROR, ErrorCategory.LEASE_EXPIRED),
    "held back é 2": (State.IGNORED, None),
}
"""What each folder that is imported becomes; `still-uploading` has no sentinel and is skipped."""


@pytest.fixture
def legacy(deployed: Template) -> tuple[str, str]:
    """The prefix filled with folders the old sentinel system left; returns the bucket and the table names."""
    s3 = boto3.client("s3", region_name=REGION)
    bucket = deployed.physical("WorksetBucket").ref
    for name, (example, sentinels) in FOLDERS.items():
        source = EXAMPLES / example
        for path in sorted(p for p in source.rglob("*") if p.is_file()):
            s3.upload_file(str(path), bucket, f"{PREFIX}{name}/{path.relative_to(source).as_posix()}")
        for sentinel, body in sentinels.items():
            s3.put_object(Bucket=bucket, Key=f"{PREFIX}{name}/{sentinel}", Body=body.encode())

    # Neither of these is a folder directly under the prefix.
    s3.put_object(Bucket=bucket, Key=f"{PREFIX}README.txt", Body=b"not a workset")
    s3.put_object(Bucket=bucket, Key="elsewhere/other/daylily.ready", Body=STAMP.encode())
    return bucket, deployed.physical("WorksetTable").ref


def migrate(legacy: tuple[str, str], *extra: str) -> int:
    bucket, table = legacy
    return main(["--bucket", bucket, "--prefix", PREFIX, "--table", table, "--region", REGION, *extra])


def table_items(table: str) -> list[dict[str, Any]]:
    client = boto3.client("dynamodb", region_name=REGION)
    items: list[dict[str, Any]] = []
    for page in client.get_paginator("scan").paginate(TableName=table, ConsistentRead=True):
        items.extend(page["Items"])
    return sorted(items, key=lambda item: (item["pk"]["S"], item["sk"]["S"]))


def bucket_listing(bucket: str) -> list[tuple[str, str]]:
    client = boto3.client("s3", region_name=REGION)
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return sorted((obj["Key"], obj["ETag"]) for page in pages for obj in page.get("Contents", []))


def line_about(output: str, name: str) -> str:
    (line,) = [line for line in output.splitlines() if f": {name} [" in line]
    return line


def test_dry_run_prints_the_plan_and_writes_nothing(
    legacy: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    bucket, table = legacy
    before = bucket_listing(bucket)

    code = migrate(legacy, "--dry-run")

    # THEN one line per folder with its sentinels, the state it would get and why
    output = capsys.readouterr().out
    assert code == 0
    assert line_about(output, "hg002-ready") == (
        "would import: hg002-ready [daylily.ready] -> ready: folder valid; waiting for a cluster"
    )
    assert "broken-ready [daylily.ready] -> error (validation): folder invalid: " in output
    assert "daylily_info.yaml is missing" in line_about(output, "broken-ready")
    assert "[daylily.complete, daylily.lock, daylily.ready] -> complete: the run finished" in output
    assert "[daylily.error, daylily.lock] -> error (permanent): the last attempt failed: bwa-mem2 exited 137" in output
    assert "[daylily.in_progress, daylily.lock] -> error (lease_expired): it was running" in output
    assert "held back é 2 [daylily.ignore, daylily.ready] -> ignored: a person asked to skip it" in output
    assert line_about(output, "still-uploading").startswith("skipped: still-uploading [no sentinel]: no sentinel")
    assert "README" not in output
    assert "elsewhere" not in output and "other" not in output
    assert output.splitlines()[-1] == (
        "summary: 7 folders, 6 to import (complete: 1, error (lease_expired): 1, error (permanent): 1, "
        "error (validation): 1, ignored: 1, ready: 1), 0 already in the table, 1 skipped, 0 failed; "
        "dry run, nothing written"
    )

    # AND nothing was written: the table is empty and the bucket is as it was
    assert table_items(table) == []
    assert bucket_listing(bucket) == before


def test_a_real_run_imports_each_folder_as_planned(
    legacy: tuple[str, str], store: WorksetStore, capsys: pytest.CaptureFixture[str]
) -> None:
    code = migrate(legacy)

    output = capsys.readouterr().out
    assert code == 0
    assert output.splitlines()[-1].startswith("summary: 7 folders, 6 imported (")
    assert output.splitlines()[-1].endswith("0 already in the table, 1 skipped, 0 failed")
    for name, (state, category) in PLANNED.items():
        workset = store.get(name)
        assert (workset.state, workset.error_category) == (state, category), name
        assert workset.folder == f"{PREFIX}{name}/"
        assert workset.lease is None
        assert line_about(output, name).startswith(f"imported: {name} [")

        (entry,) = store.full_history(name)
        assert (entry.event, entry.actor, entry.to_state) == ("registered", "migration", state)
        assert entry.reason.startswith("migrated from sentinels daylily.")
    assert store.find("still-uploading") is None

    # AND each carries what its folder and sentinels said
    ready = store.get("hg002-ready")
    assert ready.priority == "urgent" and ready.sample_count == 2 and ready.work is not None
    assert "daylily_info.yaml is missing" in store.get("broken-ready").error_reasons
    assert store.get("hg002-failed").error_reasons == ("bwa-mem2 exited 137 (at 2026-11-28T22:41:07.000000Z)",)
    assert store.get("hg002-failed").retry_at is None
    assert store.full_history("hg002-done")[0].reason.startswith(
        "migrated from sentinels daylily.complete, daylily.lock, daylily.ready: the run finished"
    )


def test_a_run_that_was_running_is_retried_by_the_schedule(
    legacy: tuple[str, str], store: WorksetStore, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a workset that was running under the old system, imported as an expired lease
    migrate(legacy)
    running = store.get("hg002-running")
    assert running.retry_at is not None
    assert running.work is not None

    # WHEN the schedule ticks after its retry is due
    Scheduler(store, clock_skew_seconds=60).tick(now=running.retry_at + timedelta(seconds=1))

    # THEN it is back in the queue for its second attempt
    retried = store.get("hg002-running")
    assert (retried.state, retried.attempt) == (State.READY, 2)


def test_running_it_again_changes_nothing_and_says_so(
    legacy: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    _, table = legacy
    assert migrate(legacy) == 0
    after_first = table_items(table)
    capsys.readouterr()

    code = migrate(legacy)

    output = capsys.readouterr().out
    assert code == 0
    assert table_items(table) == after_first
    for name, (state, _) in PLANNED.items():
        assert line_about(output, name).startswith(f"exists, skipped: {name} [")
        assert line_about(output, name).endswith(f"already in the table as {state}")
    assert output.splitlines()[-1] == (
        "summary: 7 folders, 0 imported, 6 already in the table, 1 skipped, 0 failed; nothing changed"
    )


def test_an_aws_error_on_one_folder_does_not_stop_the_others(
    legacy: tuple[str, str], store: WorksetStore, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN the table refuses the write of one workset
    original = WorksetStore.register

    def refuse_one(self: WorksetStore, workset: Workset, *, actor: str, reason: str = "") -> Workset:
        if workset.workset_id == "hg002-done":
            throttled = {"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "slow down"}}
            raise ClientError(throttled, "TransactWriteItems")  # type: ignore[arg-type]  # botocore's TypedDict
        return original(self, workset, actor=actor, reason=reason)

    monkeypatch.setattr(WorksetStore, "register", refuse_one)

    code = migrate(legacy)

    # THEN that folder is reported failed, every other one is imported, and the exit code says a folder failed
    output = capsys.readouterr().out
    assert code == 1
    assert line_about(output, "hg002-done") == (
        "failed: hg002-done [daylily.complete, daylily.lock, daylily.ready] -> complete: "
        "ProvisionedThroughputExceededException: slow down"
    )
    assert store.find("hg002-done") is None
    assert all(store.find(name) is not None for name in PLANNED if name != "hg002-done")
    assert output.splitlines()[-1].endswith("0 already in the table, 1 skipped, 1 failed")


def test_an_unreadable_prefix_fails_with_a_message(legacy: tuple[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    _, table = legacy

    code = main(["--bucket", "no-such-bucket-here", "--prefix", PREFIX, "--table", table, "--region", REGION])

    captured = capsys.readouterr()
    assert code == 1
    assert "cannot list s3://no-such-bucket-here/legacy/active_worksets/: NoSuchBucket" in captured.err
    assert captured.out.splitlines()[-1].startswith("summary: 0 folders")
