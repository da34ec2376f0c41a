"""Import the worksets of the old sentinel system into the workset table.

Every folder directly under the prefix is a workset. Each one is registered in the table in the state its sentinel
files say (`daylily.complete`, `daylily.error`, `daylily.in_progress`, `daylily.lock`, `daylily.ignore`,
`daylily.ready`); the table of states, and why, is in `workset_monitor.migration`. A workset already in the table is
left as it is, so running the command again changes nothing. With `--dry-run` it prints the plan and writes nothing.

    PYTHONPATH=.:layers/common python -m tools.migrate --bucket B --prefix daylily_monitoring/active_worksets/ \\
        --table T [--dry-run] [--region R] [--endpoint-url http://127.0.0.1:4566]

Credentials and region come from boto3's default chain unless given. Exit status: 0, or 1 when any folder failed to
import (the others are still imported), 2 for a usage error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from workset_monitor.bucket import WorksetBucket
from workset_monitor.errors import WorksetExists
from workset_monitor.layout import SENTINEL_ERROR
from workset_monitor.migration import (
    ACTOR,
    MAX_ERROR_BODY_BYTES,
    FolderResult,
    Outcome,
    describe,
    normalize_prefix,
    plan_folder,
    summarize,
    to_workset,
)
from workset_monitor.models import utcnow
from workset_monitor.store import WorksetStore

if TYPE_CHECKING:
    from workset_monitor.bucket import FolderSnapshot

AWS_ERRORS = (ClientError, BotoCoreError)


@dataclass(frozen=True)
class Migration:
    """Reads a prefix of sentinel-managed folders and registers each in the table, one folder at a time.

    Limitations: every import is a `registered` change on the table's stream, so the notify function announces
    each one (an `error` event for worksets imported in `error`), and the mirror function writes the sentinel of the
    imported state into the folder. Folders are read and imported one after another, not in parallel.
    """

    bucket: WorksetBucket
    store: WorksetStore
    prefix: str

    def run(self, *, dry_run: bool, now: datetime | None = None) -> Iterator[FolderResult]:
        """Plan, and unless `dry_run` import, every folder directly under the prefix, in S3's listing order.

        An AWS error on one folder is that folder's outcome; one listing the prefix itself is raised.
        """
        for name in self.folders():
            yield self.migrate_folder(name, dry_run=dry_run, now=now)

    def folders(self) -> Iterator[str]:
        """The names of the folders directly under the prefix."""
        paginator = self.bucket.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket.bucket, Prefix=self.prefix, Delimiter="/"):
            for common in page.get("CommonPrefixes", []):
                yield common["Prefix"][len(self.prefix) : -1]

    def migrate_folder(self, name: str, *, dry_run: bool, now: datetime | None = None) -> FolderResult:
        """Plan one folder and, unless `dry_run` or it is skipped or already in the table, register it."""
        folder = f"{self.prefix}{name}/"
        try:
            snapshot = self.bucket.snapshot(folder)
            plan = plan_folder(name, folder, snapshot, self._error_body(folder, snapshot))
            if not plan.imports:
                return FolderResult(name, Outcome.SKIPPED, plan)
            existing = self.store.find(name)
        except AWS_ERRORS as exc:
            return FolderResult(name, Outcome.FAILED, detail=_aws_problem(exc))

        if existing is not None:
            return FolderResult(name, Outcome.EXISTS, plan, f"already in the table as {existing.state}")
        if dry_run:
            return FolderResult(name, Outcome.WOULD_IMPORT, plan)

        now = now or utcnow()
        workset = to_workset(plan, bucket=self.bucket.bucket, now=now, retry_base_seconds=self.store.retry_base_seconds)
        try:
            # NOTE: each import is a `registered` record on the table's stream, so the notify function announces it
            # (an `error` event for one imported in error); subscribers who want quiet filter on `event_type`.
            self.store.register(workset, actor=ACTOR, reason=plan.history_reason)
        except WorksetExists:
            return FolderResult(name, Outcome.EXISTS, plan, "registered by another writer meanwhile")
        except AWS_ERRORS as exc:
            return FolderResult(name, Outcome.FAILED, plan, _aws_problem(exc))
        return FolderResult(name, Outcome.IMPORTED, plan)

    def _error_body(self, folder: str, snapshot: FolderSnapshot) -> str | None:
        """The text of the folder's `daylily.error` (its first MAX_ERROR_BODY_BYTES), or None without one."""
        size = snapshot.sizes.get(SENTINEL_ERROR)
        if size is None:
            return None
        if size == 0:
            return ""  # a range read of an empty object is refused
        # NOTE: only the start of a longer body is read; a reason is one line, and a huge body is not one.
        response = self.bucket.client.get_object(
            Bucket=self.bucket.bucket, Key=folder + SENTINEL_ERROR, Range=f"bytes=0-{MAX_ERROR_BODY_BYTES - 1}"
        )
        return response["Body"].read().decode("utf-8", errors="replace")


def _aws_problem(exc: ClientError | BotoCoreError) -> str:
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return f"{error.get('Code', 'error')}: {error.get('Message', '')}".rstrip(": ")
    return str(exc)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.migrate",
        description="Import the worksets of the old sentinel system into the workset table.",
    )
    parser.add_argument("--bucket", required=True, help="the workset bucket")
    parser.add_argument("--prefix", required=True, help="every folder directly under it is a workset")
    parser.add_argument("--table", required=True, help="the workset table")
    parser.add_argument("--dry-run", action="store_true", help="print the plan, write nothing")
    parser.add_argument("--region", help="AWS region (default: boto3's chain)")
    parser.add_argument("--endpoint-url", help="an AWS emulator's URL, e.g. the local stack's http://127.0.0.1:4566")
    args = parser.parse_args(argv)

    session = boto3.session.Session(region_name=args.region)
    prefix = normalize_prefix(args.prefix)
    migration = Migration(
        WorksetBucket(args.bucket, session.client("s3", endpoint_url=args.endpoint_url)),
        WorksetStore(args.table, session.client("dynamodb", endpoint_url=args.endpoint_url)),
        prefix,
    )

    what = "plan (dry run, nothing is written)" if args.dry_run else "migrating"
    print(f"{what}: s3://{args.bucket}/{prefix} into table {args.table}")
    results: list[FolderResult] = []
    try:
        for result in migration.run(dry_run=args.dry_run):
            print(describe(result), flush=True)
            results.append(result)
    except AWS_ERRORS as exc:
        print(f"cannot list s3://{args.bucket}/{prefix}: {_aws_problem(exc)}", file=sys.stderr)
        print(summarize(results, dry_run=args.dry_run))
        return 1

    print(summarize(results, dry_run=args.dry_run))
    return 1 if any(result.outcome is Outcome.FAILED for result in results) else 0


if __name__ == "__main__":
    sys.exit(main())
