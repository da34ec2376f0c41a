"""The agent's loop: register the cluster, take the next workset, run it under a lease, report the outcome."""

from __future__ import annotations

import io
import logging
import os
import shlex
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType
from typing import Any

import requests

from .client import ApiClient, ApiError

logger = logging.getLogger("workset_agent")

LOG_TAIL_LINES = 5
"""How many of the run's last log lines go into the error reason."""

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
"""The signals that stop the agent: a run in progress is stopped and reported as a transient error first."""

REPORT_BACKOFF_SECONDS = 1.0
"""The first wait before reporting to an unreachable API again; it doubles each try, up to 15 s."""

STOP_REPORT_SECONDS = 20.0
"""How long the agent, stopped by a signal, keeps trying to report the run it stopped (a service manager waits
only so long before it kills the agent)."""


@dataclass(frozen=True)
class AgentConfig:
    cluster: str
    run_prefix: str
    """Prepended to the workset's `dy-r` run command, e.g. `source dyoa && dy-r`; the demo uses a harmless script."""
    region: str = "us-west-2"
    availability_zone: str | None = None
    max_worksets: int = 1
    """How many worksets the scheduler may queue for this cluster; the agent runs them one at a time."""
    vcpus: int = 0
    cost_per_vcpu_hour: float = 0.0
    heartbeat_seconds: float = 60.0
    """How often the agent heartbeats the lease of the workset it runs, and renews its cluster's registration."""
    poll_seconds: float = 10.0
    work_root: Path = field(default_factory=lambda: Path(tempfile.gettempdir()) / "workset-agent")
    owner: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    report_retry_seconds: float = 120.0
    """How long the agent keeps trying to report a run's outcome (or its start) while the API is unreachable; then
    it gives up and exits, and the lease expires so the scheduler retries the workset."""


@dataclass(frozen=True)
class Outcome:
    workset_id: str
    state: str
    exit_code: int | None
    reason: str = ""


class AgentStopped(BaseException):
    """The agent got SIGTERM or SIGINT. `workset_id` names the workset whose run it stopped (and reported as a
    transient error), None when it stopped between runs.

    A BaseException, like KeyboardInterrupt, so that no `except Exception` on the way swallows it."""

    def __init__(self, signum: int, workset_id: str | None = None) -> None:
        super().__init__(signum, workset_id)
        self.signum = signum
        self.workset_id = workset_id

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        """128 + the signal when a run was stopped (143 for SIGTERM, 130 for SIGINT); 0 when the agent was idle."""
        return 128 + self.signum if self.workset_id is not None else 0


class ApiUnreachable(Exception):
    """The API stayed unreachable for longer than the agent waits to report a run; the lease will expire."""


class Agent:
    def __init__(self, client: ApiClient, config: AgentConfig) -> None:
        self.client = client
        run_prefix = resolve_run_prefix(config.run_prefix)
        if run_prefix != config.run_prefix:
            logger.info("run prefix %r resolved to %r", config.run_prefix, run_prefix)
        self.config = replace(config, run_prefix=run_prefix)
        self._last_registration = float("-inf")
        self._stop_signal: int | None = None
        self._interruptible = False

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
        self._last_registration = time.monotonic()
        logger.debug("cluster %s registered", self.config.cluster)

    def run_once(self) -> Outcome | None:
        """Take and run the next workset of this cluster, if there is one."""
        with self._interruptible_section():
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
        if self._stop_signal is not None:
            self._report_agent_stopped(workset_id, token, self._stop_signal, "before the run started")
            raise AgentStopped(self._stop_signal, workset_id)
        refused = self._move(workset_id, token, "in_progress", reason="run started", what="the start of the run")
        if refused is not None:
            return Outcome(workset_id, refused, None, f"run not started: workset {refused}")
        return self._run(claimed, token)

    def run_forever(self, *, idle_exit_seconds: float | None = None) -> list[Outcome]:
        """Run worksets as they come, one at a time. With `idle_exit_seconds`, return after that long without work.

        SIGTERM and SIGINT stop the agent: between runs at once; during a run, after stopping the run's process group
        and reporting the workset as a transient error. Either way `AgentStopped` is raised. Once registered, the
        agent rides out API outages between runs (it logs them and polls again)."""
        outcomes: list[Outcome] = []
        self._stop_signal = None
        with self._stop_signal_handlers():
            try:
                with self._interruptible_section():
                    self.register()
                logger.info("cluster %s registered; waiting for work", self.config.cluster)
                idle_since = time.monotonic()
                while True:
                    outcome = self._between_runs(self.run_once)
                    self._raise_if_stopped()
                    if outcome is not None:
                        outcomes.append(outcome)
                        idle_since = time.monotonic()
                        continue
                    if idle_exit_seconds is not None and time.monotonic() - idle_since >= idle_exit_seconds:
                        return outcomes
                    if time.monotonic() - self._last_registration >= self.config.heartbeat_seconds:
                        with self._interruptible_section():
                            self._between_runs(self.register)  # the cluster's own heartbeat
                    with self._interruptible_section():
                        time.sleep(self.config.poll_seconds)
            except AgentStopped as stop:
                if stop.workset_id is None:
                    logger.info("agent stopped by %s between runs", stop.signal_name)
                raise

    def _between_runs(self, call: Callable[[], Outcome | None]) -> Outcome | None:
        """Make an API call of the idle loop; an outage (connection error, timeout, 5xx) is logged, not fatal."""
        try:
            return call()
        except (requests.RequestException, ApiError) as exc:
            if not _is_outage(exc):
                raise
            logger.warning("API unreachable (%s); trying again in %s s", _one_line(exc), self.config.poll_seconds)
            return None

    # --- stopping on SIGTERM / SIGINT ------------------------------------------------------------------------------

    @contextmanager
    def _stop_signal_handlers(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield  # signal handlers can only be installed from the main thread
            return
        previous = {signum: signal.signal(signum, self._on_stop_signal) for signum in STOP_SIGNALS}
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler if handler is not None else signal.SIG_DFL)

    def _on_stop_signal(self, signum: int, frame: FrameType | None) -> None:
        """Note the signal; inside an interruptible section (waiting for work, or watching a run), act on it at once.
        Elsewhere (claiming, reporting) the agent acts on it when that step is done."""
        if self._stop_signal is None:
            self._stop_signal = signum
        if self._interruptible:
            self._interruptible = False
            raise AgentStopped(self._stop_signal)

    @contextmanager
    def _interruptible_section(self) -> Iterator[None]:
        self._raise_if_stopped()
        self._interruptible = True
        try:
            yield
        finally:
            self._interruptible = False

    def _raise_if_stopped(self) -> None:
        if self._stop_signal is not None:
            raise AgentStopped(self._stop_signal)

    # --- one run ---------------------------------------------------------------------------------------------------

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

        if self._stop_signal is not None:
            self._report_agent_stopped(workset_id, token, self._stop_signal, "before the run started")
            raise AgentStopped(self._stop_signal, workset_id)
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
            try:
                with self._interruptible_section():
                    stopped_because = self._watch(process, workset_id, token, progress_path)
            except AgentStopped as stop:
                logger.warning("agent stopped by %s: stopping the run of workset %s", stop.signal_name, workset_id)
                _stop(process)
                self._report_agent_stopped(workset_id, token, stop.signum, "during the run")
                raise AgentStopped(stop.signum, workset_id) from None

        if self._stop_signal is not None and stopped_because is None and process.returncode != 0:
            # The run ended as the agent was told to stop (a service manager signals the whole group): the signal,
            # not the pipeline, is the likely cause.
            self._report_agent_stopped(workset_id, token, self._stop_signal, "during the run")
            raise AgentStopped(self._stop_signal, workset_id)
        tail = _tail(log_path)
        return self._report(workset_id, token, process.returncode, stopped_because, tail)

    def _watch(self, process: subprocess.Popen[bytes], workset_id: str, token: int, progress_path: Path) -> str | None:
        """Heartbeat while the process runs, with the step the run last wrote into its progress file, and renew the
        cluster's registration. Stop the run's whole process group if the workset is canceled or the lease is lost;
        return why it was stopped (`canceled`, `lease_lost`), or None when it ended by itself. A failed heartbeat
        (API unreachable, 5xx) does not stop the run: the next period tries again."""
        next_beat = time.monotonic() + self.config.heartbeat_seconds
        while process.poll() is None:
            time.sleep(min(0.2, self.config.heartbeat_seconds))
            if time.monotonic() < next_beat:
                continue
            next_beat = time.monotonic() + self.config.heartbeat_seconds

            state = self._heartbeat(workset_id, token, progress_path)
            if state is None:
                continue  # the API is unreachable or failing: no point renewing the registration now
            if state in ("locked", "in_progress"):
                self._renew_registration()
                continue

            if state == "lease_lost":
                logger.warning("workset %s lost its lease (409 lease_lost): stopping its run", workset_id)
            else:
                logger.warning("workset %s is %s: stopping its run", workset_id, state)
            _stop(process)
            return state
        return None

    def _heartbeat(self, workset_id: str, token: int, progress_path: Path) -> str | None:
        """The workset's state as the heartbeat's answer says it (`canceled` for a canceled workset), `lease_lost`
        for a 409 lease_lost, or None when the heartbeat failed otherwise (logged; the run goes on)."""
        try:
            answer = self.client.heartbeat(workset_id, token, _progress(progress_path))
        except (requests.RequestException, ApiError) as exc:
            if isinstance(exc, ApiError) and exc.code == "lease_lost":
                return "lease_lost"
            error = _one_line(exc)
        else:
            if isinstance(answer, dict) and isinstance(answer.get("state"), str):
                return str(answer["state"])
            error = f"an answer without a state: {str(answer)[:200]}"
        logger.warning(
            "heartbeat of %s failed (%s); the run goes on, next try in %s s",
            workset_id,
            error,
            self.config.heartbeat_seconds,
        )
        return None

    def _renew_registration(self) -> None:
        """The cluster's own heartbeat, during a run; a failure is logged, and tried again next period."""
        try:
            self.register()
        except (requests.RequestException, ApiError) as exc:
            logger.warning("renewing the registration of cluster %s failed: %s", self.config.cluster, _one_line(exc))

    # --- reporting -------------------------------------------------------------------------------------------------

    def _report(self, workset_id: str, token: int, exit_code: int, stopped_because: str | None, tail: str) -> Outcome:
        if stopped_because is not None:
            return Outcome(workset_id, stopped_because, exit_code, f"run stopped: workset {stopped_because}")

        if exit_code == 0:
            refused = self._move(workset_id, token, "complete", reason="run ended well", what="the outcome")
            if refused is not None:
                return Outcome(workset_id, refused, exit_code, f"run ended well, not reported: workset {refused}")
            logger.info("workset %s complete", workset_id)
            return Outcome(workset_id, "complete", exit_code)

        category = _error_category(exit_code)
        reason = f"run command exited with {exit_code}" + (f"; last lines: {tail}" if tail else "")
        refused = self._move(
            workset_id, token, "error", reason=reason[:4000], error_category=category, what="the outcome"
        )
        if refused is not None:
            return Outcome(workset_id, refused, exit_code, f"{reason}; not reported: workset {refused}")
        logger.info("workset %s failed (%s): exit %s", workset_id, category, exit_code)
        return Outcome(workset_id, "error", exit_code, reason)

    def _report_agent_stopped(self, workset_id: str, token: int, signum: int, when: str) -> None:
        """Report the workset as a transient error (the scheduler retries it), as far as the API lets the agent,
        which is on its way out."""
        reason = f"agent stopped by {signal.Signals(signum).name} {when}"
        try:
            refused = self._move(
                workset_id,
                token,
                "error",
                reason=reason,
                error_category="transient",
                what="the stop of the run",
                patience=min(STOP_REPORT_SECONDS, self.config.report_retry_seconds),
            )
        except (ApiUnreachable, ApiError, requests.RequestException) as exc:
            logger.error("workset %s not reported as stopped (%s)", workset_id, _one_line(exc))
        else:
            if refused is None:
                logger.info("workset %s reported as a transient error: %s", workset_id, reason)

    def _move(
        self,
        workset_id: str,
        token: int,
        state: str,
        *,
        what: str,
        patience: float | None = None,
        **fields: Any,
    ) -> str | None:
        """Move the workset under the lease; None when moved. An outage is retried, with backoff, for up to
        `patience` seconds (`report_retry_seconds` by default), then `ApiUnreachable`. A 409 is fine when an earlier
        try landed (its answer lost); otherwise it is logged, and the answer says why: `canceled` when a person
        canceled the workset, else `lease_lost`."""
        patience = self.config.report_retry_seconds if patience is None else patience
        deadline = time.monotonic() + patience
        delay = REPORT_BACKOFF_SECONDS
        while True:
            try:
                self.client.change_state(workset_id, state, lease_token=token, actor=self.config.owner, **fields)
                return None
            except ApiError as exc:
                if exc.status == 409:
                    current = self._current(workset_id)
                    if _moved_by(current, state, self.config.owner):
                        return None  # an earlier try landed, though its answer was lost
                    refused = "canceled" if current.get("state") == "canceled" else "lease_lost"
                    logger.warning("the API refused %s of workset %s (%s)", what, workset_id, _one_line(exc))
                    return refused
                if not _is_outage(exc):
                    raise
                error: Exception = exc
            except requests.RequestException as exc:
                error = exc
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                logger.error(
                    "could not report %s of workset %s for %.0f s: the API is unreachable (%s); its lease will "
                    "expire and the scheduler will retry the workset",
                    what,
                    workset_id,
                    patience,
                    _one_line(error),
                )
                raise ApiUnreachable(f"could not report {what} of workset {workset_id}: {_one_line(error)}")
            logger.warning(
                "reporting %s of workset %s failed (%s); trying again in %.0f s",
                what,
                workset_id,
                _one_line(error),
                min(delay, remaining),
            )
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, 15.0)

    def _current(self, workset_id: str) -> dict[str, Any]:
        """The workset as the API has it now, or {} when it cannot say."""
        try:
            workset = self.client.get_workset(workset_id)
        except (requests.RequestException, ApiError):
            return {}
        return workset if isinstance(workset, dict) else {}


def _moved_by(workset: dict[str, Any], state: str, owner: str) -> bool:
    """Whether the workset is in `state` by `owner`'s move (its newest history entry says so)."""
    history = workset.get("history") or []
    newest = history[-1] if isinstance(history, list) and history else {}
    return (
        workset.get("state") == state
        and isinstance(newest, dict)
        and newest.get("to_state") == state
        and newest.get("actor") == owner
    )


def resolve_run_prefix(run_prefix: str, cwd: Path | None = None) -> str:
    """The run prefix with its first word made absolute when that word is a relative path (it has a slash) to an
    existing file: the run's working directory is the workset's, not the agent's. Anything else is kept as is."""
    stream = io.StringIO(run_prefix)
    lexer = shlex.shlex(stream, posix=True)
    lexer.whitespace_split = True
    lexer.commenters = ""
    try:
        first = lexer.get_token()
    except ValueError:  # unbalanced quotes: let bash say what it thinks of it
        return run_prefix
    if not first or "/" not in first or os.path.isabs(first) or first.startswith("~"):
        return run_prefix
    path = (cwd or Path.cwd()) / first
    if not path.is_file():
        return run_prefix
    rest = stream.read().lstrip()  # as written: quoting and shell syntax (`&&`, `~`) kept
    resolved = shlex.quote(os.path.abspath(path))
    return f"{resolved} {rest}" if rest else resolved


def _is_outage(exc: BaseException) -> bool:
    """The API could not be reached, or failed on its side: worth trying again later."""
    return isinstance(exc, requests.RequestException) or (isinstance(exc, ApiError) and exc.status >= 500)


def _one_line(exc: BaseException, limit: int = 300) -> str:
    return " ".join(str(exc).split())[:limit] or type(exc).__name__


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
