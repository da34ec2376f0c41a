"""What each command shows people: the API's JSON turned into tables, label-value blocks and timeline lines."""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from .output import Column, ago, cell, compact_time, labelled, table

STATE_ORDER = ("ready", "locked", "in_progress", "complete", "error", "canceled", "ignored", "archived")
"""The order states are shown in: a workset's way through its life. A state the API adds later is shown last."""

PRIORITY_ORDER = ("urgent", "normal", "low")

HISTORY_COLUMNS = (
    Column("AT (UTC)", width=14),
    Column("#", right=True),
    Column("CHANGE", width=36),
    Column("BY", width=18),
    Column("REASON", width=70),
)


def worksets_table(worksets: Sequence[Mapping[str, Any]], now: datetime) -> str:
    """One line per workset: its state, priority, attempt, samples, cluster, what is going on, and when it changed."""
    if not worksets:
        return "no worksets"
    columns = (
        Column("WORKSET"),
        Column("STATE"),
        Column("PRIORITY"),
        Column("ATTEMPT", right=True),
        Column("SAMPLES", right=True),
        Column("CLUSTER", width=36),  # a name of up to 25 characters and " (assigned)"
        Column("DETAIL"),
        Column("UPDATED"),
    )
    rows = [
        (
            workset["workset_id"],
            workset["state"],
            workset.get("priority", ""),
            f"{workset.get('attempt', 1)}/{workset.get('max_attempts', '?')}",
            str(workset.get("sample_count", "")),
            cluster_shown(workset),
            _detail(workset, now),
            ago(workset.get("updated_at"), now),
        )
        for workset in worksets
    ]
    return table(columns, rows)


def cluster_shown(workset: Mapping[str, Any]) -> str:
    """The cluster a workset is assigned to while it is ready (`c1 (assigned)`), else the one that holds it or last
    held it. A ready workset's `cluster` is where an earlier attempt ran, not where it goes."""
    if workset.get("state") == "ready":
        assigned = workset.get("assigned_cluster")
        return f"{assigned} (assigned)" if assigned else ""
    return str(workset.get("cluster") or "")


def workset_view(workset: Mapping[str, Any], now: datetime) -> str:
    """A workset's key fields, its reasons when it failed validation, then its history as a timeline."""
    work = workset.get("work") or {}
    lease = workset.get("lease")
    state = workset["state"] + (f" ({workset['progress']})" if workset.get("progress") else "")
    fields = labelled(
        [
            ("workset", workset["workset_id"]),
            ("state", state),
            ("priority", workset.get("priority", "")),
            ("attempt", f"{workset.get('attempt', 1)} of {workset.get('max_attempts', '?')}"),
            ("samples", str(workset.get("sample_count", ""))),
            ("cluster", cluster_shown(workset)),
            ("lease", _lease(lease, now) if lease else ""),
            ("retry", ago(workset.get("retry_at"), now)),
            ("error", workset.get("error_category", "")),
            ("dy-r", cell(work.get("run_command", ""), 100)),
            ("depends on", ", ".join(work.get("depends_on", ()))),
            ("deadline", _time_and_ago(work.get("deadline"), now)),
            ("folder", f"s3://{workset.get('bucket', '?')}/{workset.get('folder', '')}"),
            ("created", _time_and_ago(workset.get("created_at"), now)),
            ("updated", _time_and_ago(workset.get("updated_at"), now)),
        ]
    )
    parts = [fields]

    reasons = workset.get("error_reasons") or ()
    if reasons:
        parts.append("reasons:\n" + "\n".join(f"  - {reason}" for reason in reasons))

    history = workset.get("history")
    if history is not None:
        complete = workset.get("history_complete", True)
        command = f"workset history {shlex.quote(workset['workset_id'])} --all"
        more = "" if complete else f", the newest; `{command}` shows all"
        entries = "1 entry" if len(history) == 1 else f"{len(history)} entries"
        parts.append(f"history ({entries}{more}):\n" + _indented(history_table(history, now)))
    return "\n\n".join(parts)


def history_table(entries: Sequence[Mapping[str, Any]], now: datetime) -> str:
    """A workset's history as a timeline, oldest first: when, the attempt, the change, who and why."""
    if not entries:
        return "no history"
    rows = [
        (
            compact_time(entry.get("at"), now),
            str(entry.get("attempt", "")),
            change(entry),
            entry.get("actor", ""),
            entry.get("reason", ""),
        )
        for entry in entries
    ]
    return table(HISTORY_COLUMNS, rows)


def change(entry: Mapping[str, Any]) -> str:
    """What a history entry did: `in_progress -> error (transient)`, or `assigned (ready)` for an event."""
    if entry.get("event") == "transition":
        text = f"{entry.get('from_state')} -> {entry.get('to_state')}"
    else:
        text = f"{entry.get('event')} ({entry.get('to_state')})"
    category = entry.get("error_category")
    return f"{text} ({category})" if category else text


def entry_line(workset_id: str, entry: Mapping[str, Any], now: datetime) -> str:
    """One history entry as one line of `workset watch`."""
    return (
        f"{compact_time(entry.get('at'), now)}  {cell(workset_id)}  #{entry.get('attempt', '')}  "
        f"{change(entry):<24}  by {cell(entry.get('actor', ''), 18):<12}  {cell(entry.get('reason', ''), 100)}"
    ).rstrip()


def progress_line(workset: Mapping[str, Any], now: datetime) -> str:
    """A workset's newly reported progress (the agent's heartbeats carry it) as one line of `workset watch`."""
    return f"{compact_time(workset.get('updated_at'), now)}  {workset['workset_id']}  progress: {workset['progress']}"


def queue_line(stats: Mapping[str, Any], now: datetime) -> str:
    """The queue in one line of `workset watch`: `18:41:02  ready 3 (urgent 1, normal 2) · in_progress 2 · ...`."""
    counts = _ordered(stats.get("by_state", {}), STATE_ORDER)
    ready_by_priority = _ordered(stats.get("ready_by_priority", {}), PRIORITY_ORDER)
    parts = []
    for state, count in counts:
        if not count:
            continue
        if state == "ready" and ready_by_priority:
            detail = ", ".join(f"{priority} {n}" for priority, n in ready_by_priority if n)
            parts.append(f"{state} {count} ({detail})")
        else:
            parts.append(f"{state} {count}")
    return f"{now.strftime('%H:%M:%S')}  " + (" · ".join(parts) or "no worksets")


def queue_stats_view(stats: Mapping[str, Any]) -> str:
    """Worksets per state, then ready worksets per priority."""
    counts = _ordered(stats.get("by_state", {}), STATE_ORDER)
    total = sum(count for _, count in counts)
    by_state = table(
        (Column("STATE"), Column("WORKSETS", right=True)),
        [*((state, str(count)) for state, count in counts), ("total", str(total))],
    )
    ready_by_priority = _ordered(stats.get("ready_by_priority", {}), PRIORITY_ORDER)
    if not ready_by_priority:
        return by_state
    by_priority = table(
        (Column("PRIORITY"), Column("READY", right=True)),
        [(priority, str(count)) for priority, count in ready_by_priority],
    )
    return f"{by_state}\n\n{by_priority}"


def clusters_table(clusters: Sequence[Mapping[str, Any]], now: datetime) -> str:
    if not clusters:
        return "no clusters registered"
    columns = (
        Column("CLUSTER"),
        Column("STATUS"),
        Column("REGION"),
        Column("AZ"),
        Column("MAX WORKSETS", right=True),
        Column("VCPUS", right=True),
        Column("$/VCPU-H", right=True),
        Column("HEARTBEAT"),
    )
    rows = [
        (
            cluster["name"],
            cluster.get("status", ""),
            cluster.get("region", ""),
            cluster.get("availability_zone", ""),
            str(cluster.get("max_worksets", "")),
            str(cluster.get("vcpus", "")),
            f"{cluster.get('cost_per_vcpu_hour', 0):.4f}",
            ago(cluster.get("last_heartbeat_at"), now),
        )
        for cluster in clusters
    ]
    return table(columns, rows)


def scheduler_stats_view(stats: Mapping[str, Any], now: datetime) -> str:
    """The clusters' load, then what the scheduler's latest tick did and why each workset waits."""
    parts = [f"scheduler: {stats.get('ready', 0)} ready, {stats.get('unassigned', 0)} not yet assigned"]

    clusters = stats.get("clusters") or []
    if clusters:
        columns = (Column("CLUSTER"), Column("STATUS"), Column("LIVE"), Column("WORKSETS", right=True))
        rows = [
            (
                cluster["name"],
                cluster.get("status", ""),
                "yes" if cluster.get("live") else "no",
                f"{cluster.get('active_worksets', 0)}/{cluster.get('max_worksets', '?')}",
            )
            for cluster in clusters
        ]
        parts.append(table(columns, rows))

    tick = stats.get("last_tick")
    if tick:
        counts = ", ".join(f"{tick.get(name, 0)} {name}" for name in ("assigned", "waiting", "expired", "retried"))
        summary = f"last tick {_time_and_ago(tick.get('at'), now)}: {counts}, {tick.get('conflicts', 0)} conflicts"
        decisions = [
            (kind, decision["workset_id"], decision.get("cluster") or "", decision.get("reason", ""))
            for kind, key in (("assigned", "assignments"), ("waits", "waits"))
            for decision in tick.get(key, ())
        ]
        columns = (Column("DECISION"), Column("WORKSET"), Column("CLUSTER", width=24), Column("REASON", width=70))
        parts.append(summary + ("\n" + _indented(table(columns, decisions)) if decisions else ""))
    return "\n\n".join(parts)


def record_view(record: Mapping[str, Any], now: datetime) -> str:
    """Any JSON object as label-value lines (a cluster): times (`..._at`) compact and relative, structures as JSON."""
    pairs = []
    for name, value in record.items():
        if name.endswith("_at") and isinstance(value, str):
            pairs.append((name, _time_and_ago(value, now)))
        elif value is None or isinstance(value, str | int | float | bool):
            pairs.append((name, "" if value is None else str(value)))
        else:
            pairs.append((name, cell(json.dumps(value, ensure_ascii=False), 100)))
    return labelled(pairs)


def _detail(workset: Mapping[str, Any], now: datetime) -> str:
    if workset.get("retry_at"):
        return f"{workset.get('error_category', 'error')}; retry {ago(workset['retry_at'], now)}"
    if workset.get("error_category"):
        return str(workset["error_category"])
    return str(workset.get("progress", ""))


def _lease(lease: Mapping[str, Any], now: datetime) -> str:
    expiry = ago(lease.get("expires_at"), now)
    when = f"expires {expiry}" if expiry.startswith("in ") else f"expired {expiry}"
    return f"{lease.get('owner')}, token {lease.get('token')}, {when}"


def _time_and_ago(value: str | None, now: datetime) -> str:
    return f"{compact_time(value, now)} ({ago(value, now)})" if value else ""


def _ordered(counts: Mapping[str, int], order: Sequence[str]) -> list[tuple[str, int]]:
    known = [(name, counts[name]) for name in order if name in counts]
    return known + sorted((name, count) for name, count in counts.items() if name not in order)


def _indented(text: str) -> str:
    return "\n".join(f"  {line}" if line else line for line in text.splitlines())
