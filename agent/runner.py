"""The agent's loop: register the cluster, take the next workset, run it under a lease, report the outcome."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .client import ApiClient, ApiError

logger = logging.getLogger("workset_agent")

LOG_TAIL_LINES = 5
"""How many of the run's last log lines go into the error reason."""


@dataclass(frozen=True)
class AgentConfig:
    cluster: str
    run_prefix: str
    """Prepended to the workset's `dy-r` run command, e.g. `source dyoa && dy-r`; the demo uses a harmless script."""
    region: str = "us-west-2"
    availability_zone: str | None = None
    max_worksets: int = 1
    vcpus: int = 0
    cost_per_vcpu_hour: float = 0.0
    heartbeat_seconds: float = 60.0
    poll_seconds: float = 10.0
    work_root: Path = field(default_factory=lambda: Path(tempfile.gettempdir()) / "workset-agent")
    owner: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")


@dataclass(frozen=True)
class Outcome:
    workset_id: str
    state: str
    exit_code: int | None
    reason: str = ""


class Agent:
    def __init__(self, client: ApiClient, config: AgentConfig) -> None:
        self.client = client
        self.config = config

    def register(self) -> None:
        """Register the cluster, or renew its heartbeat."""
        self.client.register_cluster(
            {
                "name": self.config.cluster,
                "region": self.config.region,
                "availability_zone": self.config.availability_zone,
                "max_worksets": self.config.max_worksets,
                "vcpus": self.config.vcpus,
                "cost_per_vcpu_hour": self.config.cost_per_vcpu_hour,
            }
        )
        logger.debug("cluster %s registered", self.config.cluster)

    def run_once(self) -> Outcome | None:
        """Take and run the next workset of this cluster, if there is one."""
        workset = self.client.next_workset(self.config.cluster)
        if workset is None:
            return None

        workset_id = workset["workset_id"]
        try:
            claimed = self.client.claim(workset_id, owner=self.config.owner, cluster=self.config.cluster)
        except ApiError as exc:
            if exc.status == 409:
                logger.info("workset %s taken by someone else: %s", workset_id, exc.message)
                return None
            raise

        token = claimed["lease"]["token"]
        logger.info("workset %s claimed, lease token %s", workset_id, token)
        self.client.change_state(
            workset_id, "in_progress", lease_token=token, actor=self.config.owner, reason="run started"
        )
        return self._run(claimed, token)

    def run_forever(self, *, idle_exit_seconds: float | None = None) -> list[Outcome]:
        """Run worksets as they come. With `idle_exit_seconds`, return after that long without work."""
        outcomes: list[Outcome] = []
        self.register()
        logger.info("cluster %s registered; waiting for work", self.config.cluster)
        last_registration = idle_since = time.monotonic()
        while True:
            outcome = self.run_once()
            if outcome is not None:
                outcomes.append(outcome)
                idle_since = time.monotonic()
                continue
            if idle_exit_seconds is not None and time.monotonic() - idle_since >= idle_exit_seconds:
                return outcomes
            if time.monotonic() - last_registration > self.config.heartbeat_seconds:
                self.register()  # the cluster's own heartbeat
                last_registration = time.monotonic()
            time.sleep(self.config.poll_seconds)

    def _run(self, workset: dict[str, Any], token: int) -> Outcome:
        workset_id = workset["workset_id"]
        workdir = self.config.work_root / _safe_dirname(workset.get("work", {}).get("workdir_name") or workset_id)
        workdir.mkdir(parents=True, exist_ok=True)
        log_path = workdir / "workset-agent.log"
        progress_path = workdir / "workset-progress"
        progress_path.unlink(missing_ok=True)
        command = f"{self.config.run_prefix} {workset.get('work', {}).get('run_command', '')}"
        env = {
            **os.environ,
            "WORKSET_ID": workset_id,
            "WORKSET_URI": f"s3://{workset['bucket']}/{workset['folder']}",
            "WORKSET_ATTEMPT": str(workset.get("attempt", 1)),
            "WORKSET_PROGRESS_FILE": str(progress_path),
        }

        logger.info("workset %s running: %s", workset_id, command)
        # NOTE: the command runs through bash, as `dy-r` did over SSH: whoever can write a workset folder chooses
        # the run command's arguments, so write access to the bucket prefix is the trust boundary.
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                ["/bin/bash", "-c", command],
                cwd=workdir,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            stopped_because = self._watch(process, workset_id, token, progress_path)

        tail = _tail(log_path)
        return self._report(workset_id, token, process.returncode, stopped_because, tail)

    def _watch(self, process: subprocess.Popen[bytes], workset_id: str, token: int, progress_path: Path) -> str | None:
        """Heartbeat while the process runs, with the step the run last wrote into its progress file. Stop the run's
        whole process group if the workset is canceled or the lease is lost; return why it was stopped, or None when
        it ended by itself."""
        next_beat = time.monotonic() + self.config.heartbeat_seconds
        while process.poll() is None:
            time.sleep(min(0.2, self.config.heartbeat_seconds))
            if time.monotonic() < next_beat:
                continue
            next_beat = time.monotonic() + self.config.heartbeat_seconds

            try:
                state = str(self.client.heartbeat(workset_id, token, _progress(progress_path))["state"])
            except ApiError as exc:
                if exc.code != "lease_lost":
                    logger.warning("heartbeat of %s failed: %s", workset_id, exc)
                    continue
                state = "lease_lost"
            if state in ("locked", "in_progress"):
                continue

            logger.warning("workset %s is %s: stopping its run", workset_id, state)
            _stop(process)
            return state
        return None

    def _report(self, workset_id: str, token: int, exit_code: int, stopped_because: str | None, tail: str) -> Outcome:
        if stopped_because is not None:
            return Outcome(workset_id, stopped_because, exit_code, f"run stopped: workset {stopped_because}")

        if exit_code == 0:
            self.client.change_state(
                workset_id, "complete", lease_token=token, actor=self.config.owner, reason="run ended well"
            )
            logger.info("workset %s complete", workset_id)
            return Outcome(workset_id, "complete", exit_code)

        category = _error_category(exit_code)
        reason = f"run command exited with {exit_code}" + (f"; last lines: {tail}" if tail else "")
        self.client.change_state(
            workset_id,
            "error",
            lease_token=token,
            actor=self.config.owner,
            reason=reason[:4000],
            error_category=category,
        )
        logger.info("workset %s failed (%s): exit %s", workset_id, category, exit_code)
        return Outcome(workset_id, "error", exit_code, reason)


def _error_category(exit_code: int) -> str:
    if exit_code in (126, 127):
        return "configuration"  # not executable, or not found: the run prefix or the cluster's set-up is wrong
    if exit_code < 0 or exit_code in (137, 143):
        return "resource"  # killed by a signal, typically out of memory or a reclaimed node
    if exit_code == 75:
        return "transient"  # EX_TEMPFAIL: the run says trying again later may work
    return "permanent"


def _stop(process: subprocess.Popen[bytes], grace_seconds: float = 10.0) -> None:
    """Stop the run's whole process group: TERM, then KILL after a grace period."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=grace_seconds)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        pass


def _progress(path: Path) -> str | None:
    """The last step the run wrote into its progress file, if any (at most 200 characters, one line)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip()
    except FileNotFoundError:
        return None
    return " ".join(text.splitlines()[-1].split())[:200] if text else None


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    with path.open("rb") as log:
        last = deque(log, maxlen=lines)
    return " | ".join(line.decode("utf-8", "replace").rstrip() for line in last if line.strip())


def _safe_dirname(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)[:200] or "workset"
