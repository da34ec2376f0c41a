"""The agent's loop: register the cluster, take the worksets assigned to it, run each under its lease (up to
`max_worksets` at once, one thread each), report the outcomes, and resume the runs it held after a restart."""

from __future__ import annotations

import io
import logging
import os
import queue
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any

import requests
from botocore.exceptions import BotoCoreError, ClientError

from .categories import error_category
from .client import ApiClient, ApiError, moved_by
from .folder import WorksetFolders, agent_log_key, describe_s3_error
from .runbook import (
    KILL_WAIT_SECONDS,
    HeldRun,
    Resume,
    RunBook,
    dirname,
    group_alive,
    read_exit_status,
    resume_decision,
    run_workdir,
    stop_group,
)

logger = logging.getLogger("workset_agent")

LOG_TAIL_LINES = 5
"""How many of the run's last log lines go into the error reason."""

CATEGORY_LOG_LINES = 50
"""How many of the run's last log lines the error category is read from."""

SHIPPED_LOG_BYTES = 64 * 1024
"""How much of the end of the run's log is written to the workset's folder."""

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
"""The signals that stop the agent: a run in progress is stopped and reported as a transient error first."""

REPORT_BACKOFF_SECONDS = 1.0
"""The first wait before reporting to an unreachable API again; it doubles each try, up to 15 s."""

STOP_REPORT_SECONDS = 20.0
"""How long the agent, stopped by a signal, keeps trying to report the run it stopped (a service manager waits
only so long before it kills the agent)."""

STOP_NOTICE_SECONDS = 5.0
"""How long the agent, stopping, waits for the API to take note that its cluster is `unavailable` (one try)."""

RETIRED_EXIT_STATUS = 3
"""The agent's exit status when its cluster was retired: a service manager should not start it again (a start
registers the cluster again, undoing the retirement)."""

TAKING_WORK = "active"
"""The one cluster status under which the agent claims new work; under `draining` or `unavailable` it finishes
the runs it holds and claims nothing."""

RUN_WRAPPER = 'bash -c "$1"; status=$?; echo "$status" > "$2.partial" && mv "$2.partial" "$2"; exit "$status"'
"""Runs the command (`$1`) and writes its exit status into a file (`$2`): a restarted agent, which is not the run's
parent, reads it there."""


@dataclass(frozen=True)
class AgentConfig:
    cluster: str
    run_prefix: str
    """Prepended to the workset's `dy-r` run command, e.g. `source dyoa && dy-r`; the demo uses a harmless script."""
    region: str = "us-west-2"
    """The cluster's region, as registered (the scheduler matches a work file's `region` against it)."""
    availability_zone: str | None = None
    """The cluster's availability zone, as registered (matched against a work file's `availability_zone`)."""
    max_worksets: int = 1
    """The cluster's capacity in concurrent worksets: the scheduler assigns it no more, and the agent runs no more
    at once."""
    vcpus: int = 0
    cost_per_vcpu_hour: float = 0.0
    heartbeat_seconds: float = 60.0
    """How often the agent heartbeats the lease of each workset it runs, heartbeats its cluster and
    writes the run's log tail to the workset's folder."""
    poll_seconds: float = 10.0
    work_root: Path = field(default_factory=lambda: Path(tempfile.gettempdir()) / "workset-agent")
    owner: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    report_retry_seconds: float = 120.0
    """How long the agent keeps trying to report a run's outcome (or its start) while the API is unreachable; then
    it gives up and exits, and the lease expires so the scheduler retries the workset."""
    stop_grace_seconds: float = 10.0
    """How long a run's process group has after TERM (a cancel, a lost lease, the agent stopping) before KILL."""


@dataclass(frozen=True)
class Outcome:
    workset_id: str
    state: str
    exit_code: int | None
    reason: str = ""


class AgentStopped(BaseException):
    """The agent got SIGTERM or SIGINT. `workset_id` names a workset whose run it stopped (and reported as a
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


class ClusterRetired(Exception):
    """An operator retired the agent's cluster (`DELETE /clusters/{name}`): the agent finished the runs it held and
    stops, with exit status 3 (`RETIRED_EXIT_STATUS`)."""

    exit_code = RETIRED_EXIT_STATUS

    def __init__(self, cluster: str) -> None:
        super().__init__(cluster)
        self.cluster = cluster


@dataclass
class Run:
    """A run the agent follows: one it started (`process` set), or one it adopted after a restart (only its process
    group is known; its exit status is read from the file its wrapper writes)."""

    held: HeldRun
    process: subprocess.Popen[bytes] | None = None

    @property
    def workset_id(self) -> str:
        return self.held.workset_id

    @property
    def workdir(self) -> Path:
        return Path(self.held.workdir)

    @property
    def log_path(self) -> Path:
        return self.workdir / "workset-agent.log"

    @property
    def progress_path(self) -> Path:
        return self.workdir / "workset-progress"

    def finished(self) -> bool:
        if self.process is not None:
            return self.process.poll() is not None
        return self.held.exit_status_path.exists() or not group_alive(self.held.pgid)

    def exit_code(self) -> int | None:
        """The run's exit status; None for a run that vanished without one (e.g. its wrapper was killed)."""
        recorded = read_exit_status(self.held.exit_status_path)
        if recorded is not None:
            return recorded
        return self.process.returncode if self.process is not None else None

    def stop(self, grace_seconds: float) -> None:
        """Stop the run's whole process group, whether the agent started the run or adopted it: TERM, then KILL
        whatever of the group is left after the grace period. The wrapper the agent started is then reaped."""
        if self.held.pgid is not None and not stop_group(self.held.pgid, grace_seconds):
            logger.error("workset %s: process group %s outlived KILL", self.workset_id, self.held.pgid)
        if self.process is not None:
            with suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=KILL_WAIT_SECONDS)


class Agent:
    def __init__(self, client: ApiClient, config: AgentConfig, folders: WorksetFolders | None = None) -> None:
        """`folders`: where the agent copies workset folders from and writes log tails to (S3); None to do neither,
        for a run prefix that reads the folder itself."""
        self.client = client
        run_prefix = resolve_run_prefix(config.run_prefix)
        if run_prefix != config.run_prefix:
            logger.info("run prefix %r resolved to %r", config.run_prefix, run_prefix)
        self.config = replace(config, run_prefix=run_prefix)
        self.folders = folders
        self.runbook = RunBook(config.work_root / f"{dirname(config.cluster)}.runs.json")
        self.cluster_status = TAKING_WORK
        """The cluster's status as the API last answered it: `active`, `draining`, `unavailable` or `retired`."""
        self._last_cluster_heartbeat = float("-inf")
        self._cluster_lock = threading.Lock()
        self._unsettled_claim: str | None = None
        self._stop_signal: int | None = None
        self._interruptible = False
        self._workers: dict[str, threading.Thread] = {}
        self._finished: queue.Queue[tuple[str, Outcome | BaseException]] = queue.Queue()
        self._wake = threading.Event()

    # --- the cluster ---------------------------------------------------------------------------------------------

    def register(self) -> None:
        """Register the cluster, active: done once, at start (a person started the agent), and again only when the
        API lost the cluster's record. `ClusterRetired` when the API refuses it as retired."""
        try:
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
        except ApiError as exc:
            if exc.code == "cluster_retired":
                raise ClusterRetired(self.config.cluster) from None
            raise

        self.cluster_status = TAKING_WORK
        self._last_cluster_heartbeat = time.monotonic()
        logger.debug("cluster %s registered", self.config.cluster)

    def _cluster_heartbeat_if_due(self) -> None:
        """The cluster's own heartbeat, once per heartbeat period whatever the number of runs (the main loop and
        every run's thread ask); a failure is logged, and tried again next period."""
        with self._cluster_lock:
            if self.cluster_status == "retired":
                return
            if time.monotonic() - self._last_cluster_heartbeat < self.config.heartbeat_seconds:
                return
            self._last_cluster_heartbeat = time.monotonic()
            try:
                self._cluster_heartbeat()
            except (requests.RequestException, ApiError) as exc:
                logger.warning("heartbeat of cluster %s failed: %s", self.config.cluster, _one_line(exc))

    def _cluster_heartbeat(self) -> None:
        """Keep the cluster live without touching its status, and learn that status: an operator may have drained
        or retired the cluster. A cluster the API no longer knows is registered again."""
        try:
            cluster = self.client.cluster_heartbeat(self.config.cluster)
        except ApiError as exc:
            if exc.code == "cluster_retired":
                self._note_cluster_status("retired")
                return
            if exc.status != 404:
                raise
            logger.warning("cluster %s is not registered (any more): registering it again", self.config.cluster)
            try:
                self.register()
            except ClusterRetired:
                self._note_cluster_status("retired")
            return
        self._note_cluster_status(str(cluster.get("status", TAKING_WORK)))

    def _note_cluster_status(self, status: str) -> None:
        if status == self.cluster_status:
            return
        self.cluster_status = status
        runs = len(self.runbook.runs())
        if status == "retired":
            logger.warning(
                "cluster %s was retired: no new work; the agent stops once its %s runs are finished",
                self.config.cluster,
                runs,
            )
        elif status == TAKING_WORK:
            logger.info("cluster %s is active again: taking work", self.config.cluster)
        else:
            logger.warning("cluster %s is %s: no new work; its %s runs go on", self.config.cluster, status, runs)

    def _takes_work(self) -> bool:
        return self.cluster_status == TAKING_WORK and len(self._workers) < self.config.max_worksets

    def _say_unavailable(self) -> None:
        """Tell the API the cluster is `unavailable` as the agent stops, so the scheduler stops assigning it work at
        once rather than when its heartbeats are missed; one try, in bounded time, and a failure is only logged."""
        if self.cluster_status == "retired":
            return
        try:
            self.client.cluster_heartbeat(self.config.cluster, "unavailable", retries=0, timeout=STOP_NOTICE_SECONDS)
        except (requests.RequestException, ApiError) as exc:
            # NOTE: the cluster then stays live until its heartbeats are missed (5 minutes), as after a crash.
            logger.warning("cluster %s not marked unavailable: %s", self.config.cluster, _one_line(exc))
            return
        logger.info("cluster %s marked unavailable: no new work until the agent starts again", self.config.cluster)

    # --- the loop ------------------------------------------------------------------------------------------------

    def run_once(self) -> Outcome | None:
        """Take and run the next workset of this cluster, if there is one, in this thread."""
        claimed = self._claim_next()
        if claimed is None:
            return None
        workset, held = claimed
        return self._carry_out(workset, held)

    def run_forever(self, *, idle_exit_seconds: float | None = None) -> list[Outcome]:
        """Run worksets as they come, up to `max_worksets` at once. With `idle_exit_seconds`, return after that long
        without work. First, resume the runs the agent held when it last stopped (its run book).

        SIGTERM and SIGINT stop the agent: between runs at once; during runs, after stopping each run's process group
        and reporting its workset as a transient error. Either way `AgentStopped` is raised. Once registered, the
        agent rides out API outages between runs (it logs them and polls again). It claims nothing while its cluster
        is draining or unavailable; once the cluster is retired, it finishes its runs and raises `ClusterRetired`.
        Stopping by a signal or when idle, it marks its cluster unavailable."""
        outcomes: list[Outcome] = []
        self._stop_signal = None
        with self._stop_signal_handlers():
            try:
                with self._interruptible_section():
                    self.register()
                logger.info("cluster %s registered; waiting for work", self.config.cluster)
                self._resume()
                idle_since = time.monotonic()
                while True:
                    outcomes.extend(self._collect_finished())
                    self._raise_if_stopped()
                    if self.cluster_status == "retired" and not self._workers:
                        raise ClusterRetired(self.config.cluster)

                    while self._takes_work() and self._between_runs(self._start_next):
                        pass
                    self._raise_if_stopped()

                    if self._workers:
                        idle_since = time.monotonic()
                    elif idle_exit_seconds is not None and time.monotonic() - idle_since >= idle_exit_seconds:
                        self._say_unavailable()
                        return outcomes
                    with self._interruptible_section():
                        self._cluster_heartbeat_if_due()
                        self._wake.wait(self.config.poll_seconds)
                    self._wake.clear()
            except AgentStopped as stop:
                stopped = self._wait_for_stopped_runs()
                self._say_unavailable()
                if stop.workset_id is None and not stopped:
                    logger.info("agent stopped by %s between runs", stop.signal_name)
                    raise
                raise AgentStopped(stop.signum, stop.workset_id or stopped[0]) from None

    # --- taking work -----------------------------------------------------------------------------------------------

    def _claim_next(self) -> tuple[dict[str, Any], HeldRun] | None:
        """Claim the next workset, or take up a claim of this agent's whose answer was lost; None when there is
        none, or someone else took it."""
        claimed = self._settle_unsettled_claim() or self._claim_assigned()
        if claimed is None:
            return None

        workset_id = str(claimed["workset_id"])
        token = claimed["lease"]["token"]
        held = HeldRun(
            workset_id=workset_id,
            lease_token=token,
            workdir=str(self._workdir(claimed)),
            bucket=str(claimed.get("bucket", "")),
            folder=str(claimed.get("folder", "")),
            attempt=int(claimed.get("attempt", 1)),
        )
        self.runbook.put(held)
        logger.info("workset %s claimed, lease token %s", workset_id, token)

        if self._stop_signal is not None:
            self._report_agent_stopped(workset_id, token, self._stop_signal, "before the run started")
            self.runbook.forget(workset_id)
            raise AgentStopped(self._stop_signal, workset_id)
        return claimed, held

    def _claim_assigned(self) -> dict[str, Any] | None:
        """Ask for the next workset assigned to the cluster and claim it; the claimed workset, or None."""
        with self._interruptible_section():
            workset = self.client.next_workset(self.config.cluster)
        if workset is None:
            return None

        workset_id = str(workset["workset_id"])
        if self.runbook.holds(workset_id):
            logger.warning("workset %s is already held by this agent: not claimed again", workset_id)
            return None
        return self._claim(workset_id)

    def _claim(self, workset_id: str) -> dict[str, Any] | None:
        """Claim the workset; None when someone else holds it.

        A claim may land and lose its answer. Then the client's retry gets 409 (the workset is locked already), and
        the lease turns out to be this agent's own: the claim is taken up. When no answer comes at all (the API
        stays unreachable, or fails), the claim stays unsettled, and the next poll looks whether it landed."""
        self._unsettled_claim = workset_id
        claimed: dict[str, Any] | None
        try:
            claimed = self.client.claim(workset_id, owner=self.config.owner, cluster=self.config.cluster)
        except ApiError as exc:
            if exc.status != 409:
                if not _is_outage(exc):
                    self._unsettled_claim = None
                raise
            claimed = self._own_claim(workset_id)
            if claimed is None:
                logger.info("workset %s taken by someone else: %s", workset_id, exc.message)
        self._unsettled_claim = None
        return claimed

    def _settle_unsettled_claim(self) -> dict[str, Any] | None:
        """The workset of a claim whose answer never came, if the claim landed; it is settled either way (an outage
        while looking leaves it for the next poll)."""
        workset_id = self._unsettled_claim
        if workset_id is None:
            return None

        claimed = self._own_claim(workset_id)
        self._unsettled_claim = None
        return claimed

    def _own_claim(self, workset_id: str) -> dict[str, Any] | None:
        """The workset if this agent's claim holds it (locked, the lease's owner this agent, on its cluster): a claim
        that landed though its answer was lost. Else None."""
        try:
            workset = self.client.get_workset(workset_id)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise
        lease = workset.get("lease") or {}
        if workset.get("state") != "locked" or workset.get("cluster") != self.config.cluster:
            return None
        if lease.get("owner") != self.config.owner:
            return None
        logger.info("workset %s: the claim landed though its answer was lost; taking it up", workset_id)
        return workset

    def _start_next(self) -> bool:
        """Claim the next workset and start its run in a thread of its own; whether one was started."""
        claimed = self._claim_next()
        if claimed is None:
            return False
        workset, held = claimed
        self._start_worker(held.workset_id, lambda: self._carry_out(workset, held))
        return True

    def _start_worker(self, workset_id: str, work: Callable[[], Outcome]) -> None:
        def follow() -> None:
            result: Outcome | BaseException
            try:
                result = work()
            except BaseException as exc:  # noqa: BLE001 - handed to the main loop, which decides what ends the agent
                result = exc
            self._finished.put((workset_id, result))
            self._wake.set()

        thread = threading.Thread(target=follow, name=f"run {workset_id}", daemon=True)
        self._workers[workset_id] = thread
        thread.start()

    def _collect_finished(self) -> list[Outcome]:
        """The outcomes of the runs that ended since last asked. A run whose outcome could not be reported (the API
        stayed unreachable), or that failed unexpectedly, ends the agent: its error is raised here."""
        outcomes: list[Outcome] = []
        while True:
            try:
                workset_id, result = self._finished.get_nowait()
            except queue.Empty:
                return outcomes
            self._workers.pop(workset_id).join()
            if isinstance(result, Outcome):
                outcomes.append(result)
            elif not isinstance(result, AgentStopped):
                raise result

    def _wait_for_stopped_runs(self) -> list[str]:
        """After a stop signal: wait for each run's thread to stop its run and report it; the worksets stopped."""
        stopped: list[str] = []
        for workset_id, thread in list(self._workers.items()):
            thread.join()
            stopped.append(workset_id)
        self._workers.clear()
        return stopped

    def _workdir(self, workset: dict[str, Any]) -> Path:
        """The claim's work directory, its own: by workset, attempt and the folder's `workdir_name` (else its id)."""
        work = workset.get("work") or {}
        return run_workdir(
            self.config.work_root, str(workset["workset_id"]), int(workset.get("attempt", 1)), work.get("workdir_name")
        )

    # --- resuming after a restart ----------------------------------------------------------------------------------

    def _resume(self) -> None:
        """Take up the runs the run book says this agent held when it stopped: follow the ones still running under
        a lease that is still ours, report the ones that ended meanwhile, and let go of the rest. None is started
        again."""
        for held in self.runbook.runs():
            lease_state = self._heartbeat(held.workset_id, held.lease_token, None)
            exit_status = read_exit_status(held.exit_status_path) if held.pgid is not None else None
            decision = resume_decision(lease_state, held, exit_status, group_alive(held.pgid))
            logger.info(
                "workset %s held before the restart: lease %s, exit status %s: %s",
                held.workset_id,
                lease_state or "unknown",
                exit_status,
                decision.value,
            )

            if decision in (Resume.ADOPT, Resume.REPORT_EXIT, Resume.REPORT_LOST):
                run = Run(held)
                self._start_worker(held.workset_id, partial(self._follow, run))
            elif decision is Resume.GIVE_BACK:
                self._give_back(held)
            else:
                if decision is Resume.STOP:
                    Run(held).stop(self.config.stop_grace_seconds)
                self.runbook.forget(held.workset_id)

    def _give_back(self, held: HeldRun) -> None:
        """Give the lease back (`ready` again, in the same attempt); a 409 after a try whose answer was lost is fine
        when that try landed."""
        try:
            self.client.release(
                held.workset_id, held.lease_token, actor=self.config.owner, reason="agent restarted before the run"
            )
        except (requests.RequestException, ApiError) as exc:
            landed = isinstance(exc, ApiError) and exc.status == 409 and exc.may_have_landed
            if not (landed and moved_by(self._current(held.workset_id), "ready", self.config.owner)):
                # NOTE: a lease that cannot be given back expires by itself; the scheduler then retries the workset.
                logger.warning(
                    "lease of workset %s not given back (%s); it will expire", held.workset_id, _one_line(exc)
                )
        self.runbook.forget(held.workset_id)

    def _between_runs(self, call: Callable[[], Any]) -> Any:
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
        """A step a stop signal may cut short at once. Only the main thread has such steps: a signal handler runs
        there, and a run's own thread notices the signal when it next looks (every 0.2 s)."""
        self._raise_if_stopped()
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        self._interruptible = True
        try:
            yield
        finally:
            self._interruptible = False

    def _raise_if_stopped(self) -> None:
        if self._stop_signal is not None:
            raise AgentStopped(self._stop_signal)

    # --- one run ---------------------------------------------------------------------------------------------------

    def _carry_out(self, workset: dict[str, Any], held: HeldRun) -> Outcome:
        """Copy the claimed workset's folder into its work directory, move it to `in_progress`, start its run and
        follow it to its outcome."""
        workset_id = held.workset_id
        workdir = Path(held.workdir)
        failed = self._empty_workdir(held) or self._stage(held)
        if failed is not None:
            return failed
        refused = self._move(
            workset_id, held.lease_token, "in_progress", reason="run started", what="the start of the run"
        )
        if refused is not None:
            self.runbook.forget(workset_id)
            return Outcome(workset_id, refused, None, f"run not started: workset {refused}")

        command = f"{self.config.run_prefix} {workset.get('work', {}).get('run_command', '')}"
        run = Run(held)
        run.progress_path.unlink(missing_ok=True)
        env = {
            **os.environ,
            "WORKSET_ID": workset_id,
            "WORKSET_URI": f"s3://{held.bucket}/{held.folder}",
            "WORKSET_ATTEMPT": str(held.attempt),
            "WORKSET_PROGRESS_FILE": str(run.progress_path),
        }
        if self._stop_signal is not None:
            self._report_agent_stopped(workset_id, held.lease_token, self._stop_signal, "before the run started")
            self.runbook.forget(workset_id)
            raise AgentStopped(self._stop_signal, workset_id)

        logger.info("workset %s running: %s", workset_id, command)
        # NOTE: the command runs through bash, as `dy-r` did over SSH: whoever can write a workset folder chooses
        # the run command's arguments, so write access to the bucket prefix is the trust boundary.
        with run.log_path.open("wb") as log:
            run.process = subprocess.Popen(
                ["/bin/bash", "-c", RUN_WRAPPER, "workset-run", command, str(held.exit_status_path)],
                cwd=workdir,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        run.held = held.started(run.process.pid)
        self.runbook.put(run.held)
        return self._follow(run)

    def _empty_workdir(self, held: HeldRun) -> Outcome | None:
        """Make the claim's work directory, empty: files left by an earlier claim of the same attempt (a lease given
        back, a stack whose table started again) must not reach the run. The outcome when that failed, else None."""
        workdir = Path(held.workdir)
        try:
            if workdir.exists():
                shutil.rmtree(workdir)
            workdir.mkdir(parents=True)
        except OSError as exc:
            return self._fail_before_run(held, "transient", f"the work directory could not be emptied: {exc}")
        return None

    def _fail_before_run(self, held: HeldRun, category: str, reason: str) -> Outcome:
        """Report the workset as an error of `category` before its run started, and let it go."""
        logger.error("workset %s: %s (%s)", held.workset_id, reason, category)
        refused = self._move(
            held.workset_id,
            held.lease_token,
            "error",
            reason=reason[:4000],
            error_category=category,
            what="the failure before the run",
        )
        self.runbook.forget(held.workset_id)
        return Outcome(held.workset_id, refused or "error", None, reason)

    def _stage(self, held: HeldRun) -> Outcome | None:
        """Copy the workset's folder into the work directory, heartbeating the lease as it goes; the outcome when
        the copy failed (reported as an error) or the workset was canceled meanwhile, else None."""
        if self.folders is None or not held.bucket:
            return None
        last_beat = time.monotonic()

        def keep_alive() -> None:
            nonlocal last_beat
            if time.monotonic() - last_beat >= self.config.heartbeat_seconds:
                last_beat = time.monotonic()
                state = self._heartbeat(held.workset_id, held.lease_token, "staging")
                if state not in (None, "locked", "in_progress"):
                    raise _StagingStopped(str(state))

        try:
            count = self.folders.copy(held.bucket, held.folder, Path(held.workdir), keep_alive)
        except _StagingStopped as stopped:
            self.runbook.forget(held.workset_id)
            return Outcome(held.workset_id, stopped.state, None, f"run not started: workset {stopped.state}")
        except (BotoCoreError, ClientError, OSError) as exc:
            category, reason = describe_s3_error(exc)
            return self._fail_before_run(held, category, reason)
        logger.info("workset %s: %s objects of its folder copied to %s", held.workset_id, count, held.workdir)
        return None

    def _follow(self, run: Run) -> Outcome:
        """Heartbeat the run until it ends (or stop it), write its log tail to the folder, and report its outcome.
        Also for a run adopted after a restart, or one that ended while the agent was away."""
        workset_id, token = run.workset_id, run.held.lease_token
        try:
            with self._interruptible_section():
                stopped_because = self._watch(run)
        except AgentStopped as stop:
            logger.warning("agent stopped by %s: stopping the run of workset %s", stop.signal_name, workset_id)
            run.stop(self.config.stop_grace_seconds)
            self._ship_log(run)
            self._report_agent_stopped(workset_id, token, stop.signum, "during the run")
            self.runbook.forget(workset_id)
            raise AgentStopped(stop.signum, workset_id) from None
        self._ship_log(run)

        exit_code = run.exit_code()
        if self._stop_signal is not None and stopped_because is None and exit_code != 0:
            # The run ended as the agent was told to stop (a service manager signals the whole group): the signal,
            # not the pipeline, is the likely cause.
            self._report_agent_stopped(workset_id, token, self._stop_signal, "during the run")
            self.runbook.forget(workset_id)
            raise AgentStopped(self._stop_signal, workset_id)
        outcome = self._report(run, exit_code, stopped_because)
        self.runbook.forget(workset_id)
        return outcome

    def _watch(self, run: Run) -> str | None:
        """Heartbeat while the run goes on, with the step the run last wrote into its progress file; heartbeat the
        cluster and write the log tail to the folder as often. Stop the run's whole process group if the workset is
        canceled or the lease is lost; return why it was stopped (`canceled`, `lease_lost`), or None when it ended
        by itself. A failed heartbeat (API unreachable, 5xx) does not stop the run: the next period tries again."""
        next_beat = time.monotonic() + self.config.heartbeat_seconds
        while not run.finished():
            self._raise_if_stopped()
            time.sleep(min(0.2, self.config.heartbeat_seconds))
            if time.monotonic() < next_beat:
                continue
            next_beat = time.monotonic() + self.config.heartbeat_seconds

            state = self._heartbeat(run.workset_id, run.held.lease_token, _progress(run.progress_path))
            if state is None:
                continue  # the API is unreachable or failing: no point heartbeating the cluster now
            if state in ("locked", "in_progress"):
                self._cluster_heartbeat_if_due()
                self._ship_log(run)
                continue

            if state == "lease_lost":
                logger.warning("workset %s lost its lease (409 lease_lost): stopping its run", run.workset_id)
            else:
                logger.warning("workset %s is %s: stopping its run", run.workset_id, state)
            run.stop(self.config.stop_grace_seconds)
            return state
        return None

    def _heartbeat(self, workset_id: str, token: int, progress: str | None) -> str | None:
        """The workset's state as the heartbeat's answer says it (`canceled` for a canceled workset), `lease_lost`
        for a 409 lease_lost, `not_found` for a workset the API does not know (any more), or None when the heartbeat
        failed otherwise (logged; the run goes on)."""
        try:
            answer = self.client.heartbeat(workset_id, token, progress)
        except (requests.RequestException, ApiError) as exc:
            if isinstance(exc, ApiError) and exc.code == "lease_lost":
                return "lease_lost"
            if isinstance(exc, ApiError) and exc.status == 404:
                return "not_found"
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

    def _ship_log(self, run: Run) -> None:
        """Write the end of the run's log to `logs/workset-agent.attempt-<n>.log` in the workset's folder; a failure
        is logged, and the next period tries again."""
        if self.folders is None or not run.held.bucket:
            return
        try:
            text = _last_bytes(run.log_path, SHIPPED_LOG_BYTES)
            self.folders.put_log(run.held.bucket, agent_log_key(run.held.folder, run.held.attempt), text)
        except (BotoCoreError, ClientError, OSError) as exc:
            logger.warning("log tail of workset %s not written to its folder: %s", run.workset_id, _one_line(exc))

    # --- reporting -------------------------------------------------------------------------------------------------

    def _report(self, run: Run, exit_code: int | None, stopped_because: str | None) -> Outcome:
        workset_id, token = run.workset_id, run.held.lease_token
        if stopped_because is not None:
            return Outcome(workset_id, stopped_because, exit_code, f"run stopped: workset {stopped_because}")

        if exit_code == 0:
            refused = self._move(workset_id, token, "complete", reason="run ended well", what="the outcome")
            if refused is not None:
                return Outcome(workset_id, refused, exit_code, f"run ended well, not reported: workset {refused}")
            logger.info("workset %s complete", workset_id)
            return Outcome(workset_id, "complete", exit_code)

        if exit_code is None:
            category = "transient"
            reason = "agent restarted; run lost (it ended without an exit status)"
        else:
            category = error_category(exit_code, _last_lines(run.log_path, CATEGORY_LOG_LINES))
            tail = _tail(run.log_path)
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
                    if moved_by(current, state, self.config.owner):
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


class _StagingStopped(Exception):
    """The workset was canceled, or its lease lost, while its folder was being copied."""

    def __init__(self, state: str) -> None:
        super().__init__(state)
        self.state = state


def _progress(path: Path) -> str | None:
    """The last step the run wrote into its progress file, if any (at most 200 characters, one line)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip()
    except FileNotFoundError:
        return None
    return " ".join(text.splitlines()[-1].split())[:200] if text else None


def _last_lines(path: Path, lines: int) -> list[str]:
    """The log's last non-blank lines ([] when there is no log)."""
    try:
        with path.open("rb") as log:
            last = deque(log, maxlen=lines)
    except FileNotFoundError:
        return []
    return [line.decode("utf-8", "replace").rstrip() for line in last if line.strip()]


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    return " | ".join(_last_lines(path, lines))


def _last_bytes(path: Path, size: int) -> str:
    with path.open("rb") as log:
        log.seek(max(0, log.seek(0, os.SEEK_END) - size))
        return log.read().decode("utf-8", "replace")
