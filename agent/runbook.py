"""The agent's record of the runs it holds, kept in a small file so that a restarted agent resumes them.

One file per cluster in the work root (`<work root>/<cluster>.runs.json`): for each workset the agent holds a lease
on, the lease token, the run's process group (once started) and its work directory. The run itself writes its exit
status into `workset-exit-status` in its work directory, since a restarted agent is not the run's parent and cannot
wait for it.

Each claim gets a work directory of its own, `<work root>/<workset id>/attempt-<n>/<workdir_name, else the id>`
(names percent-encoded, see `dirname`), emptied before the folder is copied into it: two worksets with the same
`workdir_name`, or two attempts of one workset, never share files.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import threading
import time
from dataclasses import asdict, dataclass, replace
from enum import Enum
from pathlib import Path
from typing import Any
from urllib.parse import quote

EXIT_STATUS_FILE = "workset-exit-status"

KILL_WAIT_SECONDS = 5.0
"""How long a process group is waited for after KILL (a process stuck in the kernel may take a moment)."""

DIRNAME_LIMIT = 200
"""The longest directory name the agent makes (file systems allow 255 bytes)."""


@dataclass(frozen=True)
class HeldRun:
    """A workset this agent holds the lease of, and its run (pgid None until the run has started)."""

    workset_id: str
    lease_token: int
    workdir: str
    bucket: str
    folder: str
    attempt: int
    pgid: int | None = None

    @property
    def exit_status_path(self) -> Path:
        return Path(self.workdir) / EXIT_STATUS_FILE

    def started(self, pgid: int) -> HeldRun:
        return replace(self, pgid=pgid)


class RunBook:
    """The held runs, in memory and in their file; every change is written at once (atomically, by rename).

    Limitations: one agent per cluster and work root; two agents sharing a file would overwrite each other."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._runs: dict[str, HeldRun] = {}
        if path.is_file():
            for entry in json.loads(path.read_text(encoding="utf-8")):
                run = HeldRun(**entry)
                self._runs[run.workset_id] = run

    def runs(self) -> list[HeldRun]:
        with self._lock:
            return list(self._runs.values())

    def holds(self, workset_id: str) -> bool:
        with self._lock:
            return workset_id in self._runs

    def put(self, run: HeldRun) -> None:
        with self._lock:
            self._runs[run.workset_id] = run
            self._write()

    def forget(self, workset_id: str) -> None:
        with self._lock:
            if self._runs.pop(workset_id, None) is not None:
                self._write()

    def _write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_suffix(".partial")
        entries: list[dict[str, Any]] = [asdict(run) for run in self._runs.values()]
        partial.write_text(json.dumps(entries, indent=1), encoding="utf-8")
        os.replace(partial, self.path)


class Resume(Enum):
    """What a restarted agent does with a run it held before."""

    ADOPT = "adopt"
    """The lease is ours and the run goes on: heartbeat it, wait for it, report it."""
    REPORT_EXIT = "report_exit"
    """The lease is ours and the run ended while the agent was away: report its recorded exit status."""
    REPORT_LOST = "report_lost"
    """The lease is ours but the run is gone without an exit status: report a transient error, so it retries."""
    GIVE_BACK = "give_back"
    """The lease is ours but the run never started: give the lease back, the workset is ready again."""
    STOP = "stop"
    """The lease is not ours any more (lost or canceled) but the run goes on: stop its process group."""
    FORGET = "forget"
    """The lease is not ours and nothing runs: forget the run."""


def resume_decision(lease_state: str | None, run: HeldRun, exit_status: int | None, group_alive: bool) -> Resume:
    """What to do with `run` after a restart. `lease_state` is the state the heartbeat with the run's lease token
    answered (`locked`, `in_progress`, `canceled`...), `lease_lost` when it was refused, None when the API could not
    be asked (the lease is then taken as ours: the reports that follow are fenced by its token anyway)."""
    ours = lease_state in (None, "locked", "in_progress")
    if not ours:
        return Resume.STOP if group_alive else Resume.FORGET

    if exit_status is not None:
        return Resume.REPORT_EXIT
    if group_alive:
        return Resume.ADOPT
    if run.pgid is None and lease_state == "locked":
        return Resume.GIVE_BACK
    return Resume.REPORT_LOST


def read_exit_status(path: Path) -> int | None:
    """The exit status the run's wrapper wrote, or None when there is none (yet)."""
    try:
        return int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def group_alive(pgid: int | None) -> bool:
    """Whether any process of the group still runs (zombies, which only wait to be reaped, do not count).

    Limitations: a process group id can be reused after the group is gone (a reboot, a long outage); the agent would
    then wait for, or stop, a stranger's group. The work root under /tmp, wiped at boot, keeps this unlikely."""
    if pgid is None:
        return False
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True

    proc = Path("/proc")
    if not proc.is_dir():
        return True
    for stat in proc.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            return True
    return False


def stop_group(pgid: int, grace_seconds: float) -> bool:
    """Stop the whole process group: TERM, wait up to `grace_seconds` until no process of the group is left (not only
    its leader: a child may ignore TERM, or outlive the shell that started it), then KILL what is left and wait for it
    to go. Whether the group is gone.

    Limitations: only the group is stopped; a process that left it (`setsid`, a daemon the run started) runs on."""
    _signal_group(pgid, signal.SIGTERM)
    if _gone_within(pgid, grace_seconds):
        return True

    _signal_group(pgid, signal.SIGKILL)
    return _gone_within(pgid, KILL_WAIT_SECONDS)


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signum)


def _gone_within(pgid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while group_alive(pgid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def dirname(name: str) -> str:
    """`name` as one directory name, distinct for distinct names: percent-encoded (letters, digits and `-_.~` kept, a
    leading dot encoded so that no name is hidden, `.` or `..`); a name too long keeps its start and gets a hash of
    the whole (after a `+`, which the encoding never writes)."""
    encoded = quote(name, safe="-_.~")
    if encoded.startswith("."):
        encoded = "%2E" + encoded[1:]
    if len(encoded) > DIRNAME_LIMIT:
        digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:32]
        encoded = f"{encoded[: DIRNAME_LIMIT - len(digest) - 1]}+{digest}"
    return encoded


def run_workdir(work_root: Path, workset_id: str, attempt: int, workdir_name: str | None) -> Path:
    """The work directory of a claim of attempt `attempt` of the workset: `<work root>/<id>/attempt-<n>/<name>`."""
    return work_root / dirname(workset_id) / f"attempt-{attempt}" / dirname(workdir_name or workset_id)
