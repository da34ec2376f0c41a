"""The commands of `workset`: each reads its arguments, calls the API (or S3), and shows the answer.

A command returns its exit code, or raises `CommandFailed` (or the API client's `ApiError`) with a one-line message;
`__main__` turns those into the message on stderr and the exit code.
"""

from __future__ import annotations

import getpass
import json
import shlex
import socket
import time
import unicodedata
import webbrowser
from argparse import Namespace
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from typing import Any, TextIO

from agent.client import ApiClient, ApiError

from .config import Settings
from .output import ago, compact_time
from .views import (
    clusters_table,
    entry_line,
    history_table,
    progress_line,
    queue_line,
    queue_stats_view,
    record_view,
    scheduler_stats_view,
    workset_view,
    worksets_table,
)

ACTIONS = ("cancel", "retry", "archive", "restore")
"""What a person may ask of a workset: POST /worksets/{id}/<action>."""

ENDED_STATES = frozenset({"complete", "canceled", "ignored", "archived"})
"""States a workset leaves only when a person asks. `error` ends a workset too, unless an automatic retry is due."""

NEW_ATTEMPT_ACTIONS = {"canceled": "retry", "ignored": "retry", "archived": "restore"}
"""How a person gives a workset a new attempt from the states a fresh submit does not retry."""

REGISTRATION_POLL_SECONDS = 1.0


class CommandFailed(Exception):
    """A command could not do what it was asked; the message is one line for stderr."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class Console:
    """Where answers go: stdout, as tables for people or as the API's JSON for scripts; notes go to stderr."""

    out: TextIO
    err: TextIO
    json: bool = False

    def show(self, answer: Any, text: Callable[[], str]) -> None:
        """One answer: the API's JSON as is, or `text()` for people."""
        self.out.write((json.dumps(answer, indent=2, ensure_ascii=False) if self.json else text()) + "\n")

    def line(self, answer: Any, text: str) -> None:
        """One line of a stream (`watch`): a compact JSON object per line, or `text`; flushed at once."""
        self.out.write((json.dumps(answer, ensure_ascii=False) if self.json else text) + "\n")
        self.out.flush()

    def note(self, text: str) -> None:
        """A remark for people, never mixed into the answer."""
        self.err.write(text + "\n")
        self.err.flush()


@dataclass
class Context:
    """What a command works with: the settings, the API client made from them, the console, the clock."""

    settings: Settings
    console: Console

    @cached_property
    def api(self) -> ApiClient:
        return self.settings.api()

    def now(self) -> datetime:
        return datetime.now(UTC)

    def pause(self, seconds: float) -> None:
        time.sleep(seconds)


def list_worksets(args: Namespace, ctx: Context) -> int:
    filters = {"state": args.state, "priority": args.priority, "cluster": args.cluster}
    answer = _pages(
        lambda token: ctx.api.list_worksets(limit=args.limit, next_token=token, **filters), "worksets", every=args.all
    )

    ctx.console.show(answer, lambda: worksets_table(answer["worksets"], ctx.now()))
    if answer.get("next_token") and not ctx.console.json:
        ctx.console.note("more worksets: ask for --all, or a larger --limit")
    return 0


def show_workset(args: Namespace, ctx: Context) -> int:
    workset = ctx.api.get_workset(args.workset_id)
    ctx.console.show(workset, lambda: workset_view(workset, ctx.now()))
    return 0


def show_history(args: Namespace, ctx: Context) -> int:
    answer = _pages(
        lambda token: ctx.api.workset_history(args.workset_id, limit=args.limit, next_token=token),
        "history",
        every=args.all,
    )

    ctx.console.show(answer, lambda: history_table(answer["history"], ctx.now()))
    if answer.get("next_token") and not ctx.console.json:
        ctx.console.note("more history: ask for --all, or a larger --limit")
    return 0


def submit_folder(args: Namespace, ctx: Context) -> int:
    """Check the folder, upload it with the ready sentinel last, and with --wait show the workset once registered."""
    from . import submit  # NOTE: here, not at the top: the folder rules import pydantic, which only submit needs

    try:
        folder = submit.read_folder(args.folder)
    except NotADirectoryError as exc:
        raise CommandFailed(str(exc)) from exc
    workset_id = unicodedata.normalize("NFC", args.id or args.folder.resolve().name)
    problems = submit.folder_problems(folder, workset_id)
    if problems:
        for problem in problems:
            ctx.console.note(f"  - {problem}")
        raise CommandFailed(f"{args.folder} is not a valid workset folder ({len(problems)} problems); nothing uploaded")

    settings = ctx.settings
    if not settings.bucket:
        raise CommandFailed("no bucket: pass --bucket or set WORKSET_BUCKET (the stack's WorksetBucket)", exit_code=2)
    before = ctx.api.find_workset(workset_id)
    if before is not None and before["state"] != "error":
        action = NEW_ATTEMPT_ACTIONS.get(before["state"])
        hint = f"; `workset {action} {shlex.quote(workset_id)}` gives it one" if action else ""
        raise CommandFailed(
            f"{workset_id} is already registered ({before['state']}); a fresh submit only gives a workset in error "
            f"a new attempt{hint}"
        )

    key_prefix = f"{settings.prefix}{workset_id}/"
    if folder.sentinels:
        ctx.console.note(f"not uploaded: {', '.join(folder.sentinels)} (the ready sentinel is written last, fresh)")
    submit.upload(settings.s3(), settings.bucket, key_prefix, folder, submit.Progress(ctx.console.err))
    uploaded = {
        "workset_id": workset_id,
        "bucket": settings.bucket,
        "folder": key_prefix,
        "files": len(folder.files),
        "bytes": folder.size,
    }
    if not args.wait:
        ctx.console.show(uploaded, lambda: submit.uploaded_text(folder, f"s3://{settings.bucket}/{key_prefix}"))
        return 0

    ctx.console.note(f"uploaded; waiting for {workset_id} to be registered")
    workset = _wait_for_registration(ctx, workset_id, before, args.timeout)
    ctx.console.show(workset, lambda: workset_view(workset, ctx.now()))
    if workset["state"] == "error":
        reasons = "; ".join(workset.get("error_reasons", ()))
        raise CommandFailed(f"{workset_id} is registered in error ({workset.get('error_category')}): {reasons}")
    return 0


def act_on_workset(args: Namespace, ctx: Context) -> int:
    workset = ctx.api.act(args.workset_id, args.action, actor=args.actor or default_actor(), reason=args.reason)
    ctx.console.show(
        workset,
        lambda: (
            f"{workset['workset_id']} is {workset['state']} "
            f"(attempt {workset.get('attempt', 1)} of {workset.get('max_attempts', '?')})"
        ),
    )
    return 0


def show_stats(args: Namespace, ctx: Context) -> int:
    """The queue's stats and, where the API serves them, the scheduler's."""
    queue = ctx.api.queue_stats()
    try:
        scheduler: dict[str, Any] | None = ctx.api.scheduler_stats()
    except ApiError as exc:
        if exc.status != 404:
            raise
        scheduler = None  # an API without the scheduler's stats: the queue's are all there is

    def text() -> str:
        shown = queue_stats_view(queue)
        return shown if scheduler is None else f"{shown}\n\n{scheduler_stats_view(scheduler, ctx.now())}"

    ctx.console.show({"queue": queue, "scheduler": scheduler}, text)
    return 0


def show_clusters(args: Namespace, ctx: Context) -> int:
    if args.name:
        cluster = ctx.api.get_cluster(args.name)
        ctx.console.show(cluster, lambda: record_view(cluster, ctx.now()))
        return 0

    answer = ctx.api.list_clusters()
    ctx.console.show(answer, lambda: clusters_table(answer["clusters"], ctx.now()))
    return 0


def open_dashboard(args: Namespace, ctx: Context) -> int:
    """The web dashboard's address, signed in by credentials in its fragment (or not, with --without-credentials);
    with --open, opened in a browser too."""
    from . import dashboard  # NOTE: here, not at the top: only this command may call STS

    settings = ctx.settings
    try:
        credentials = None if args.without_credentials else dashboard.viewer_credentials(settings, args.duration)
    except dashboard.NoCredentials as exc:
        raise CommandFailed(str(exc)) from exc
    url = dashboard.dashboard_url(settings.api_url, credentials, settings.region)

    expires = credentials.expires_at.isoformat() if credentials and credentials.expires_at else None
    ctx.console.show({"url": url, "expires_at": expires}, lambda: url)
    if credentials is None:
        ctx.console.note("sign in on the page with an access key id and secret (a session token for temporary ones)")
    else:
        until = f" until {compact_time(expires, ctx.now())} UTC ({ago(expires, ctx.now())})" if expires else ""
        ctx.console.note(
            f"this address signs a browser in as {credentials.access_key_id}{until}: keep it to yourself; "
            "the page moves the credentials out of the address bar into the tab's session storage"
        )
    if args.open:
        webbrowser.open(url)
    return 0


def watch(args: Namespace, ctx: Context) -> int:
    """Follow one workset until it ends (exit 0 when complete, 1 otherwise), or the queue until interrupted."""
    if args.workset_id is None:
        return watch_queue(args.interval, ctx)
    return watch_workset(args.workset_id, args.interval, ctx)


def watch_queue(interval: float, ctx: Context) -> int:
    """One line of queue stats per interval, until Ctrl-C (which `__main__` turns into exit 130)."""
    while True:
        stats = ctx.api.queue_stats()
        ctx.console.line(stats, queue_line(stats, ctx.now()))
        ctx.pause(interval)


def watch_workset(workset_id: str, interval: float, ctx: Context) -> int:
    """Each new history entry (and, in tables, each new progress step) as it comes, until the workset ends."""
    seen_version = 0
    progress = None
    while True:
        workset = ctx.api.get_workset(workset_id)

        # NOTE: the workset's answer holds its newest 100 history entries; more than 100 changes within one
        # interval would show only the newest 100 of them.
        for entry in workset.get("history", []):
            if entry.get("version", 0) > seen_version:
                ctx.console.line(entry, entry_line(workset["workset_id"], entry, ctx.now()))
                seen_version = entry["version"]
        if workset.get("progress") and workset["progress"] != progress and not ctx.console.json:
            ctx.console.line(None, progress_line(workset, ctx.now()))
        progress = workset.get("progress")

        if ended(workset):
            if workset["state"] == "complete":
                return 0
            category = f" ({workset['error_category']})" if workset.get("error_category") else ""
            raise CommandFailed(f"{workset['workset_id']} ended {workset['state']}{category}, not complete")
        ctx.pause(interval)


def ended(workset: dict[str, Any]) -> bool:
    """Whether nothing more happens to the workset by itself: an ended state, or an error with no retry due."""
    return workset["state"] in ENDED_STATES or (workset["state"] == "error" and not workset.get("retry_at"))


def default_actor() -> str:
    """Who asks, for the workset's history: `user@host`."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no login name: no USER variable and no passwd entry (a bare container)
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def _pages(fetch: Callable[[str | None], dict[str, Any]], key: str, *, every: bool) -> dict[str, Any]:
    """The first page of a list, or with `every` the items of all its pages (following next_token) as one answer."""
    answer = fetch(None)
    if not every:
        return answer

    items = list(answer[key])
    while answer.get("next_token"):
        answer = fetch(answer["next_token"])
        items.extend(answer[key])
    return {key: items, "next_token": None}


def _wait_for_registration(
    ctx: Context, workset_id: str, before: dict[str, Any] | None, timeout: float
) -> dict[str, Any]:
    """The workset once the register function has handled the sentinel: registered, or changed since `before`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        workset = ctx.api.find_workset(workset_id)
        if workset is not None and (before is None or workset.get("version") != before.get("version")):
            return workset
        ctx.pause(REGISTRATION_POLL_SECONDS)
    raise CommandFailed(f"gave up after {timeout:g} s waiting for {workset_id} to be registered")
