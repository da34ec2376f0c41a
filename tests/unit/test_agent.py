"""The cluster agent against a fake API: stopping on signals, riding out API outages, its cluster's registration,
heartbeats, drain and retirement, cancel and lease loss, claims whose answer was lost, the command line, a relative
run prefix, error categories, the workset folder and the work directories, several runs at once, and resuming after
a restart. Runs are real, short bash processes."""

from __future__ import annotations

import logging
import os
import signal
import socket
import stat
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import requests
from botocore.exceptions import ClientError

import agent.__main__ as cli
from agent import runner
from agent.categories import error_category
from agent.client import ApiClient, ApiError
from agent.folder import is_copied
from agent.runbook import HeldRun, Resume, RunBook, dirname, group_alive, resume_decision, run_workdir
from agent.runner import Agent, AgentConfig, AgentStopped, resolve_run_prefix

TOKEN = 7
OWNER = "head-node:123"
WORKSET = {
    "workset_id": "ws-1",
    "bucket": "bucket",
    "folder": "daylily_monitoring/active_worksets/ws-1/",
    "attempt": 1,
    "work": {"workdir_name": "ws-1", "run_command": ""},
}
ENV_VARS = (
    "WORKSET_API_URL",
    "WORKSET_CLUSTER",
    "WORKSET_RUN_PREFIX",
    "AWS_REGION",
    "WORKSET_CLUSTER_REGION",
    "WORKSET_AVAILABILITY_ZONE",
    "WORKSET_STOP_GRACE_SECONDS",
    "WORKSET_MAX_WORKSETS",
    "WORKSET_VCPUS",
    "WORKSET_COST_PER_VCPU_HOUR",
    "WORKSET_HEARTBEAT_SECONDS",
    "WORKSET_POLL_SECONDS",
    "WORKSET_WORK_ROOT",
    "WORKSET_NO_S3",
)


class FakeApi:
    """The calls of ApiClient the agent makes, in memory, with a workset that follows the lease rules.

    `heartbeat_answers`: answers (or exceptions to raise) for the next heartbeats, then `in_progress`.
    `failures[state]`: exceptions raised by the next moves to `state`, before they land.
    `lost_answers[state]`: how many moves to `state` land but lose their answer (a connection error).
    `claim_failures`: exceptions raised by the next claims after they landed (their answer lost).
    `cluster_answers`: statuses (or exceptions to raise) for the next cluster heartbeats, then `cluster_status`.
    `on_heartbeat`, `on_next`, `on_claim`, `on_cluster_heartbeat`: hooks, e.g. to send the agent a signal then.
    `calls`: the name of each call, in order.
    """

    def __init__(self, *worksets: dict[str, Any]) -> None:
        self.queue = list(worksets)
        self.handed_out: list[dict[str, Any]] = []
        self.state: dict[str, str] = {}
        self.history: dict[str, list[dict[str, Any]]] = {}
        self.moves: list[tuple[str, str, dict[str, Any]]] = []
        self.leases: dict[str, dict[str, Any]] = {}
        self.registrations: list[dict[str, Any]] = []
        self.heartbeats = 0
        self.heartbeat_answers: list[Any] = []
        self.failures: dict[str, list[BaseException]] = {}
        self.lost_answers: dict[str, int] = {}
        self.claim_failures: list[BaseException] = []
        self.cluster_status = "active"
        self.cluster_answers: list[Any] = []
        self.cluster_heartbeats: list[dict[str, Any]] = []
        self.calls: list[str] = []
        self.on_heartbeat: Callable[[], None] | None = None
        self.on_next: Callable[[], None] | None = None
        self.on_claim: Callable[[], None] | None = None
        self.on_cluster_heartbeat: Callable[[], None] | None = None
        self.next_failures: list[BaseException] = []
        self.session = SimpleNamespace(get_credentials=lambda: object())

    def register_cluster(self, cluster: dict[str, Any]) -> dict[str, Any]:
        self.calls.append("register")
        self.registrations.append(cluster)
        self.cluster_status = "active"
        return {**cluster, "status": "active"}

    def cluster_heartbeat(
        self, name: str, status: str | None = None, *, retries: int | None = None, timeout: float | None = None
    ) -> dict[str, Any]:
        self.calls.append(f"cluster heartbeat {status}" if status else "cluster heartbeat")
        self.cluster_heartbeats.append({"status": status, "retries": retries, "timeout": timeout})
        if self.on_cluster_heartbeat:
            self.on_cluster_heartbeat()
        if status is not None:
            self.cluster_status = status
        elif self.cluster_answers:
            answer = self.cluster_answers.pop(0)
            if isinstance(answer, BaseException):
                raise answer
            self.cluster_status = answer
        return {"name": name, "status": self.cluster_status}

    def next_workset(self, cluster: str) -> dict[str, Any] | None:
        self.calls.append("next")
        if self.on_next:
            self.on_next()
        if self.next_failures:
            raise self.next_failures.pop(0)
        if not self.queue:
            return None
        self.handed_out.append(self.queue.pop(0))
        return self.handed_out[-1]

    def claim(self, workset_id: str, owner: str, cluster: str) -> dict[str, Any]:
        self.calls.append(f"claim {workset_id}")
        claimed = next((workset for workset in self.handed_out if workset["workset_id"] == workset_id), WORKSET)
        self.state[workset_id] = "locked"
        self.leases[workset_id] = {"token": TOKEN, "owner": owner, "cluster": cluster}
        if self.on_claim:
            self.on_claim()
        if self.claim_failures:
            raise self.claim_failures.pop(0)
        return {**claimed, "workset_id": workset_id, "state": "locked", "lease": {"token": TOKEN, "owner": owner}}

    def heartbeat(self, workset_id: str, lease_token: int, progress: str | None = None) -> dict[str, Any]:
        self.heartbeats += 1
        if self.on_heartbeat:
            self.on_heartbeat()
        if self.heartbeat_answers:
            answer = self.heartbeat_answers.pop(0)
            if isinstance(answer, BaseException):
                raise answer
            return dict(answer)
        return {"workset_id": workset_id, "state": self.state.get(workset_id, "in_progress")}

    def change_state(self, workset_id: str, state: str, **fields: Any) -> dict[str, Any]:
        if self.failures.get(state):
            raise self.failures[state].pop(0)
        if fields.get("lease_token") != TOKEN or self.state.get(workset_id) not in ("locked", "in_progress"):
            raise ApiError(409, "lease_lost", f"workset {workset_id} is not leased with token {TOKEN}")
        self.state[workset_id] = state
        self.moves.append((workset_id, state, fields))
        self.history.setdefault(workset_id, []).append(
            {"event": "transition", "to_state": state, "actor": fields.get("actor")}
        )
        if self.lost_answers.get(state):
            self.lost_answers[state] -= 1
            raise requests.ConnectionError("connection reset by peer")
        return {"workset_id": workset_id, "state": state}

    def get_workset(self, workset_id: str) -> dict[str, Any]:
        self.calls.append(f"get {workset_id}")
        handed_out = next((workset for workset in self.handed_out if workset["workset_id"] == workset_id), WORKSET)
        lease = self.leases.get(workset_id, {})
        return {
            **handed_out,
            "workset_id": workset_id,
            "state": self.state[workset_id],
            "history": self.history.get(workset_id, []),
            "lease": {"token": lease.get("token"), "owner": lease.get("owner")},
            "cluster": lease.get("cluster"),
        }

    def final_moves(self) -> list[tuple[str, str, dict[str, Any]]]:
        return [move for move in self.moves if move[1] != "in_progress"]


class UnexpectedSignal(Exception):
    """The test's own handler: a signal the agent did not handle ends the test, not the test run."""


@pytest.fixture
def guard_signals() -> Iterator[Callable[..., None]]:
    def handler(signum: int, frame: Any) -> None:
        raise UnexpectedSignal(signal.Signals(signum).name)

    previous = {signum: signal.signal(signum, handler) for signum in (signal.SIGTERM, signal.SIGINT)}
    yield handler
    for signum, old in previous.items():
        signal.signal(signum, old)


@pytest.fixture
def work_root(tmp_path: Path) -> Iterator[Path]:
    """The agent's work root; any process a run left behind (its pid files) is killed afterwards."""
    root = tmp_path / "work"
    yield root
    for pid_file in root.rglob("*.pid"):
        pid = int(pid_file.read_text())
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def script(tmp_path: Path) -> Callable[[str], str]:
    """A bash script of the given body; its run prefix."""

    def write(body: str) -> str:
        path = tmp_path / f"run-{len(list(tmp_path.glob('run-*')))}.sh"
        path.write_text(f"#!/bin/bash\n{body}\n")
        return f"/bin/bash {path}"

    return write


# A run that records its own pid and its child's, then waits on the child for 30 s.
LONG_RUN = 'echo $$ > "$PWD/bash.pid"\nsleep 30 &\necho $! > "$PWD/child.pid"\nwait'


SIZED = ("--vcpus", "64", "--cost-per-vcpu-hour", "0.04")
"""The cluster's size and price, which the command requires."""


def cli_args(run_prefix: str, work_root: Path) -> list[str]:
    return [
        *("--api", "http://api.test", "--cluster", "c1", "--run-prefix", run_prefix, "--work-root", str(work_root)),
        *("--heartbeat-seconds", "0.1", "--poll-seconds", "0.05", "--no-s3"),
        *(*SIZED, "--stop-grace-seconds", "0.5"),
    ]


def make_agent(api: FakeApi, run_prefix: str, work_root: Path, folders: Any = None, **overrides: Any) -> Agent:
    fields: dict[str, Any] = {
        "cluster": "c1",
        "run_prefix": run_prefix,
        "heartbeat_seconds": 0.1,
        "poll_seconds": 0.05,
        "work_root": work_root,
        "owner": OWNER,
        "report_retry_seconds": 5.0,
        "stop_grace_seconds": 0.5,
        **overrides,
    }
    return Agent(api, AgentConfig(**fields), folders)


def alive(pid: int) -> bool:
    """Whether the process runs (a zombie, dead but not yet reaped by its new parent, does not)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return False
    return fields[0] != "Z"


def wait_for(probe: Callable[[], bool], seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if probe():
            return True
        time.sleep(0.02)
    return probe()


def workdir(work_root: Path, workset_id: str = "ws-1", attempt: int = 1) -> Path:
    """The work directory of the workset's claim (its `workdir_name` being `ws-1`, as WORKSET's)."""
    return work_root / workset_id / f"attempt-{attempt}" / "ws-1"


def pids(work_root: Path) -> dict[str, int]:
    return {path.stem: int(path.read_text()) for path in workdir(work_root).glob("*.pid")}


def signal_when_running(work_root: Path, signum: int) -> Callable[[], None]:
    """A heartbeat hook: once the run's child process is up, send the agent `signum`."""

    def hook() -> None:
        assert wait_for(lambda: (workdir(work_root) / "child.pid").exists() and len(pids(work_root)) == 2)
        os.kill(os.getpid(), signum)

    return hook


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "REPORT_BACKOFF_SECONDS", 0.01)


# --- 1. SIGTERM / SIGINT -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("signum", "exit_code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_during_a_run_stops_its_process_group_and_reports_a_transient_error(
    guard_signals: Any, work_root: Path, script: Callable[[str], str], signum: int, exit_code: int
) -> None:
    api = FakeApi(WORKSET)
    api.on_heartbeat = signal_when_running(work_root, signum)
    agent = make_agent(api, script(LONG_RUN), work_root)

    started = time.monotonic()
    with pytest.raises(AgentStopped) as stopped:
        agent.run_forever()

    assert (stopped.value.workset_id, stopped.value.exit_code) == ("ws-1", exit_code)
    assert time.monotonic() - started < 25  # well before the run's 30 s: the agent did not wait for it to end
    # the run's bash and its child are gone, not re-parented and running on
    running = pids(work_root)
    assert wait_for(lambda: not any(alive(pid) for pid in running.values())), running
    # the workset is reported at once, with the lease token, as an error the scheduler retries
    [(workset_id, state, fields)] = api.final_moves()
    assert (workset_id, state, fields["error_category"], fields["lease_token"]) == ("ws-1", "error", "transient", TOKEN)
    assert fields["reason"] == f"agent stopped by {signal.Signals(signum).name} during the run"
    # and the handlers the agent installed are gone with it
    assert signal.getsignal(signal.SIGTERM) is guard_signals
    assert signal.getsignal(signal.SIGINT) is guard_signals


def test_a_signal_while_idle_just_stops_the_agent(guard_signals: Any, work_root: Path) -> None:
    api = FakeApi()
    api.on_next = lambda: os.kill(os.getpid(), signal.SIGTERM)
    agent = make_agent(api, "true", work_root)

    with pytest.raises(AgentStopped) as stopped:
        agent.run_forever()

    assert (stopped.value.workset_id, stopped.value.exit_code) == (None, 0)
    assert api.moves == []


def test_a_signal_while_claiming_reports_the_workset_before_any_run(
    guard_signals: Any, work_root: Path, script: Callable[[str], str]
) -> None:
    api = FakeApi(WORKSET)
    api.on_claim = lambda: os.kill(os.getpid(), signal.SIGTERM)
    agent = make_agent(api, script("touch ran"), work_root)

    with pytest.raises(AgentStopped) as stopped:
        agent.run_forever()

    assert stopped.value.exit_code == 143
    [(_, state, fields)] = api.moves
    assert (state, fields["error_category"]) == ("error", "transient")
    assert fields["reason"] == "agent stopped by SIGTERM before the run started"
    assert not (workdir(work_root) / "ran").exists()


@pytest.mark.parametrize(("queue", "signum", "exit_code"), [((), 15, 0), ((WORKSET,), 15, 143), ((WORKSET,), 2, 130)])
def test_the_command_exits_0_when_stopped_idle_and_128_plus_the_signal_when_stopped_in_a_run(
    guard_signals: Any,
    work_root: Path,
    script: Callable[[str], str],
    monkeypatch: pytest.MonkeyPatch,
    queue: tuple[dict[str, Any], ...],
    signum: int,
    exit_code: int,
) -> None:
    api = FakeApi(*queue)
    if queue:
        api.on_heartbeat = signal_when_running(work_root, signum)
    else:
        api.on_next = lambda: os.kill(os.getpid(), signum)
    monkeypatch.setattr(cli, "ApiClient", lambda *args, **kwargs: api)

    code = cli.main(cli_args(script(LONG_RUN), work_root))

    assert code == exit_code


# --- 2. API outages ------------------------------------------------------------------------------------------------


def test_failed_heartbeats_do_not_end_the_run(
    work_root: Path, script: Callable[[str], str], caplog: pytest.LogCaptureFixture
) -> None:
    api = FakeApi(WORKSET)
    api.heartbeat_answers = [
        requests.ConnectionError("connection refused"),
        requests.Timeout("read timed out"),
        ApiError(503, "http_error", "service unavailable"),
    ]
    agent = make_agent(api, script("sleep 0.8"), work_root)

    outcome = agent.run_once()

    assert outcome is not None and outcome.state == "complete"
    assert api.heartbeats >= 4
    assert [state for _, state, _ in api.final_moves()] == ["complete"]
    assert "heartbeat of ws-1 failed (connection refused); the run goes on" in caplog.text


def test_reporting_the_outcome_is_retried_through_an_outage(work_root: Path, script: Callable[[str], str]) -> None:
    api = FakeApi(WORKSET)
    api.failures["complete"] = [requests.ConnectionError("refused"), ApiError(502, "http_error", "bad gateway")]
    agent = make_agent(api, script("exit 0"), work_root)

    outcome = agent.run_once()

    assert outcome is not None and outcome.state == "complete"
    assert [state for _, state, _ in api.final_moves()] == ["complete"]


def test_a_report_that_landed_but_lost_its_answer_is_not_taken_for_a_lost_lease(
    work_root: Path, script: Callable[[str], str]
) -> None:
    api = FakeApi(WORKSET)
    api.lost_answers["error"] = 1  # the move lands, the answer is lost, the retry gets 409
    agent = make_agent(api, script("exit 3"), work_root)

    outcome = agent.run_once()

    assert outcome is not None and (outcome.state, outcome.exit_code) == ("error", 3)
    assert [state for _, state, _ in api.final_moves()] == ["error"]


def test_when_the_api_stays_unreachable_the_agent_gives_up_on_the_report_and_exits_1(
    work_root: Path,
    script: Callable[[str], str],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    api = FakeApi(WORKSET)
    api.failures["complete"] = [requests.ConnectionError("refused") for _ in range(1000)]
    monkeypatch.setattr(
        cli, "AgentConfig", lambda **fields: AgentConfig(**fields, owner=OWNER, report_retry_seconds=0.3)
    )
    monkeypatch.setattr(cli, "ApiClient", lambda *args, **kwargs: api)

    started = time.monotonic()
    code = cli.main(cli_args(script("exit 0"), work_root))

    assert code == 1
    assert 0.3 <= time.monotonic() - started < 60  # retried for report_retry_seconds, not for the default 2 minutes
    assert "its lease will expire and the scheduler will retry the workset" in caplog.text
    assert "Traceback" not in capsys.readouterr().err


def test_an_outage_between_runs_is_waited_out(work_root: Path, caplog: pytest.LogCaptureFixture) -> None:
    api = FakeApi()
    api.next_failures = [requests.ConnectionError("refused"), ApiError(500, "http_error", "oops")]
    agent = make_agent(api, "true", work_root)

    assert agent.run_forever(idle_exit_seconds=0.3) == []
    assert "API unreachable (refused)" in caplog.text


# --- 3. the cluster: registered once, heartbeated, drained, retired, marked unavailable on the way out ---------------


def test_the_cluster_is_registered_once_then_only_heartbeated_without_a_status(
    work_root: Path, script: Callable[[str], str]
) -> None:
    # GIVEN an agent running a workset for 0.8 s, heartbeat period 0.1 s
    api = FakeApi(WORKSET)
    agent = make_agent(api, script("sleep 0.8"), work_root)

    # WHEN it runs until idle
    outcomes = agent.run_forever(idle_exit_seconds=0.2)

    # THEN it registered its cluster once, and kept it live with heartbeats that leave its status alone
    assert [outcome.state for outcome in outcomes] == ["complete"]
    assert len(api.registrations) == 1
    during_the_run = [beat for beat in api.cluster_heartbeats if beat["status"] is None]
    assert len(during_the_run) >= 3


def test_a_failed_cluster_heartbeat_does_not_end_the_run(work_root: Path, script: Callable[[str], str]) -> None:
    api = FakeApi(WORKSET)
    api.cluster_answers = [requests.ConnectionError("refused") for _ in range(1000)]
    agent = make_agent(api, script("sleep 0.5"), work_root)

    outcome = agent.run_once()

    assert outcome is not None and outcome.state == "complete"


def test_a_draining_cluster_claims_nothing_until_it_is_active_again(
    work_root: Path, script: Callable[[str], str], caplog: pytest.LogCaptureFixture
) -> None:
    # GIVEN an operator drained the cluster: its next three heartbeats answer `draining`, and a workset waits for it
    api = FakeApi()
    api.cluster_answers = ["draining", "draining", "draining", "active"]

    def hand_out_once_draining() -> None:
        if api.cluster_status == "draining" and not api.handed_out and not api.queue:
            api.queue.append(WORKSET)

    api.on_cluster_heartbeat = hand_out_once_draining
    agent = make_agent(api, script("exit 0"), work_root)

    # WHEN the agent runs until idle
    outcomes = agent.run_forever(idle_exit_seconds=1.0)

    # THEN it did not even ask for work while draining, and claimed the workset once the cluster was active again
    assert [outcome.state for outcome in outcomes] == ["complete"]
    asked = [index for index, call in enumerate(api.calls) if call in ("next", "claim ws-1")]
    fourth_heartbeat = [index for index, call in enumerate(api.calls) if call == "cluster heartbeat"][3]
    first_draining = api.calls.index("cluster heartbeat")
    assert not [index for index in asked if first_draining < index < fourth_heartbeat], api.calls
    assert api.calls.index("claim ws-1") > fourth_heartbeat
    assert "cluster c1 is draining: no new work" in caplog.text
    assert "cluster c1 is active again: taking work" in caplog.text


def test_a_cluster_drained_during_a_run_finishes_the_run_and_claims_no_other(
    work_root: Path, script: Callable[[str], str]
) -> None:
    # GIVEN two worksets for the cluster, and the cluster drained while the first runs
    api = FakeApi(WORKSET, {**WORKSET, "workset_id": "ws-2"})
    api.cluster_answers = ["draining"] * 1000
    agent = make_agent(api, script("sleep 0.6"), work_root)

    # WHEN the agent runs until idle
    outcomes = agent.run_forever(idle_exit_seconds=0.5)

    # THEN the first run was finished and reported, the cluster kept heartbeating, and the second was not claimed
    assert [(outcome.workset_id, outcome.state) for outcome in outcomes] == [("ws-1", "complete")]
    assert "claim ws-2" not in api.calls
    assert len([beat for beat in api.cluster_heartbeats if beat["status"] is None]) >= 3


def test_a_retired_cluster_finishes_its_run_then_the_agent_exits_3(
    work_root: Path,
    script: Callable[[str], str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # GIVEN an operator retires the cluster while its agent runs a workset, and another workset waits
    api = FakeApi(WORKSET, {**WORKSET, "workset_id": "ws-2"})
    api.cluster_answers = [ApiError(409, "cluster_retired", "cluster c1 is retired")] * 1000
    monkeypatch.setattr(cli, "ApiClient", lambda *args, **kwargs: api)

    # WHEN the agent runs
    code = cli.main(cli_args(script("sleep 0.6"), work_root))

    # THEN it finished and reported the run, claimed nothing more, did not register again, and exited 3
    assert code == 3
    assert [(workset_id, state) for workset_id, state, _ in api.final_moves()] == [("ws-1", "complete")]
    assert "claim ws-2" not in api.calls
    assert len(api.registrations) == 1
    assert "unavailable" not in " ".join(api.calls)
    assert "cluster c1 was retired; its runs are finished, so the agent stops" in capsys.readouterr().err


def test_a_cluster_whose_record_is_gone_is_registered_again(work_root: Path, script: Callable[[str], str]) -> None:
    api = FakeApi(WORKSET)
    api.cluster_answers = [ApiError(404, "not_found", "no cluster 'c1'")]
    agent = make_agent(api, script("sleep 0.5"), work_root, availability_zone="us-west-2b")
    agent.register()

    outcome = agent.run_once()

    assert outcome is not None and outcome.state == "complete"
    assert len(api.registrations) == 2
    assert api.registrations[1]["availability_zone"] == "us-west-2b"


@pytest.mark.parametrize("busy", [False, True])
def test_an_agent_stopped_by_a_signal_marks_its_cluster_unavailable_after_stopping_its_runs(
    guard_signals: Any, work_root: Path, script: Callable[[str], str], busy: bool
) -> None:
    api = FakeApi(*([WORKSET] if busy else []))
    if busy:
        api.on_heartbeat = signal_when_running(work_root, signal.SIGTERM)
    else:
        api.on_next = lambda: os.kill(os.getpid(), signal.SIGTERM)
    agent = make_agent(api, script(LONG_RUN), work_root)

    with pytest.raises(AgentStopped):
        agent.run_forever()

    # the notice is the agent's last call, after the stopped run's report, one try in bounded time
    assert api.calls[-1] == "cluster heartbeat unavailable"
    assert api.cluster_heartbeats[-1] == {"status": "unavailable", "retries": 0, "timeout": runner.STOP_NOTICE_SECONDS}
    if busy:
        assert [state for _, state, _ in api.final_moves()] == ["error"]


def test_an_agent_that_cannot_mark_its_cluster_unavailable_still_stops(
    guard_signals: Any, work_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    api = FakeApi()
    api.on_next = lambda: os.kill(os.getpid(), signal.SIGTERM)
    cluster_heartbeat = api.cluster_heartbeat

    def unreachable(name: str, status: str | None = None, **options: Any) -> dict[str, Any]:
        cluster_heartbeat(name, status, **options)
        raise requests.ConnectionError("refused")

    api.cluster_heartbeat = unreachable  # type: ignore[method-assign]
    agent = make_agent(api, "true", work_root)

    with pytest.raises(AgentStopped) as stopped:
        agent.run_forever()

    assert stopped.value.exit_code == 0
    assert "cluster c1 not marked unavailable: refused" in caplog.text


def test_an_agent_that_exits_when_idle_marks_its_cluster_unavailable(work_root: Path) -> None:
    api = FakeApi()
    agent = make_agent(api, "true", work_root)

    assert agent.run_forever(idle_exit_seconds=0.1) == []
    assert api.calls[-1] == "cluster heartbeat unavailable"


# --- 4. cancel and lease loss --------------------------------------------------------------------------------------


def test_a_canceled_workset_stops_its_run_as_canceled(
    work_root: Path, script: Callable[[str], str], caplog: pytest.LogCaptureFixture
) -> None:
    api = FakeApi(WORKSET)

    def cancel() -> None:
        assert wait_for(lambda: len(pids(work_root)) == 2)
        api.state["ws-1"] = "canceled"  # a person canceled it: the heartbeat answers with the workset

    api.on_heartbeat = cancel
    agent = make_agent(api, script(LONG_RUN), work_root)

    outcome = agent.run_once()

    assert outcome is not None
    assert (outcome.state, outcome.reason) == ("canceled", "run stopped: workset canceled")
    assert "workset ws-1 is canceled: stopping its run" in caplog.text
    assert "lease_lost" not in caplog.text
    assert api.final_moves() == []
    assert wait_for(lambda: not any(alive(pid) for pid in pids(work_root).values()))


def test_a_workset_canceled_as_its_run_ends_is_reported_as_canceled(
    work_root: Path, script: Callable[[str], str]
) -> None:
    api = FakeApi(WORKSET)
    change_state = api.change_state

    def canceled_first(workset_id: str, state: str, **fields: Any) -> dict[str, Any]:
        if state == "complete":
            api.state[workset_id] = "canceled"  # a person was quicker: the move is refused with 409
        return change_state(workset_id, state, **fields)

    api.change_state = canceled_first
    agent = make_agent(api, script("exit 0"), work_root)

    outcome = agent.run_once()

    assert outcome is not None and outcome.state == "canceled"


def test_a_lost_lease_stops_its_run_as_lease_lost(work_root: Path, script: Callable[[str], str]) -> None:
    api = FakeApi(WORKSET)
    api.heartbeat_answers = [ApiError(409, "lease_lost", "lease 7 of ws-1 is not current")]
    agent = make_agent(api, script(LONG_RUN), work_root)

    outcome = agent.run_once()

    assert outcome is not None and outcome.state == "lease_lost"
    assert api.final_moves() == []


# A run whose child ignores TERM (it writes its pid once the trap is set) and outlives the bash that started it.
STUBBORN_RUN = 'echo $$ > "$PWD/bash.pid"\n( trap "" TERM; echo $BASHPID > "$PWD/child.pid"; exec sleep 30 ) &\nwait'


def test_a_canceled_run_whose_child_ignores_term_is_killed_after_the_grace_period(
    work_root: Path, script: Callable[[str], str]
) -> None:
    # GIVEN a run whose child ignores TERM and outlives its bash, and a grace period of 0.5 s
    api = FakeApi(WORKSET)

    def cancel() -> None:
        assert wait_for(lambda: len(pids(work_root)) == 2)
        api.state["ws-1"] = "canceled"

    api.on_heartbeat = cancel
    agent = make_agent(api, script(STUBBORN_RUN), work_root, stop_grace_seconds=0.5)

    # WHEN the workset is canceled
    outcome = agent.run_once()

    # THEN by the time the agent is done with the run, its whole process group is gone: TERM, the grace, then KILL
    assert outcome is not None and outcome.state == "canceled"
    running = pids(work_root)
    assert not any(alive(pid) for pid in running.values()), running


def test_a_signal_kills_a_child_that_ignores_term_after_the_grace_period(
    guard_signals: Any, work_root: Path, script: Callable[[str], str]
) -> None:
    api = FakeApi(WORKSET)
    api.on_heartbeat = signal_when_running(work_root, signal.SIGTERM)
    agent = make_agent(api, script(STUBBORN_RUN), work_root, stop_grace_seconds=0.5)

    with pytest.raises(AgentStopped) as stopped:
        agent.run_forever()

    assert stopped.value.exit_code == 143
    running = pids(work_root)
    assert not any(alive(pid) for pid in running.values()), running
    [(_, state, fields)] = api.final_moves()
    assert (state, fields["error_category"]) == ("error", "transient")


# --- 4b. claims whose answer was lost ---------------------------------------------------------------------------------


def test_a_claim_whose_answer_was_lost_is_taken_up(
    work_root: Path, script: Callable[[str], str], caplog: pytest.LogCaptureFixture
) -> None:
    # GIVEN the claim lands but its answer is lost, and the client's retry gets 409: the workset is locked already
    api = FakeApi(WORKSET)
    api.claim_failures = [ApiError(409, "transition_refused", "ws-1: locked -> locked refused", may_have_landed=True)]
    agent = make_agent(api, script("exit 0"), work_root)

    # WHEN the agent takes its next workset
    outcome = agent.run_once()

    # THEN it finds the lease is its own (owner and cluster), takes the claim up and runs the workset
    assert outcome is not None and outcome.state == "complete"
    assert [state for _, state, _ in api.moves] == ["in_progress", "complete"]
    assert "workset ws-1: the claim landed though its answer was lost; taking it up" in caplog.text


@pytest.mark.parametrize(("owner", "cluster"), [("other-node:9", "c1"), (OWNER, "c2")])
def test_a_workset_locked_by_another_agent_or_for_another_cluster_is_left_alone(
    work_root: Path, script: Callable[[str], str], owner: str, cluster: str
) -> None:
    api = FakeApi(WORKSET)
    claim = api.claim

    def taken(workset_id: str, **claimant: str) -> dict[str, Any]:
        claim(workset_id, owner, cluster)  # someone else's claim landed first
        raise ApiError(409, "transition_refused", "ws-1: locked -> locked refused", may_have_landed=True)

    api.claim = taken  # type: ignore[method-assign]
    agent = make_agent(api, script("touch ran"), work_root)

    assert agent.run_once() is None
    assert api.moves == []
    assert agent.runbook.runs() == []


def test_a_claim_that_got_no_answer_at_all_is_settled_at_the_next_poll(
    work_root: Path, script: Callable[[str], str]
) -> None:
    # GIVEN the claim lands, and every try of the client loses its answer
    api = FakeApi(WORKSET)
    api.claim_failures = [requests.ConnectionError("connection reset by peer")]
    agent = make_agent(api, script("exit 0"), work_root)

    # WHEN the agent runs until idle
    outcomes = agent.run_forever(idle_exit_seconds=0.3)

    # THEN its next poll found the claim its own and ran the workset, claimed once
    assert [(outcome.workset_id, outcome.state) for outcome in outcomes] == [("ws-1", "complete")]
    assert api.calls.count("claim ws-1") == 1


# --- 5. the command line -----------------------------------------------------------------------------------------


def test_help_names_the_environment_variable_of_every_flag_even_with_a_bad_value_set(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("WORKSET_VCPUS", "abc")
    monkeypatch.setenv("WORKSET_HEARTBEAT_SECONDS", "often")
    monkeypatch.setenv("COLUMNS", "100")

    with pytest.raises(SystemExit) as exited:
        cli.main(["--help"])

    assert exited.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for name in ENV_VARS:
        assert name in text, name
    assert "the agent runs at once" in text


def test_a_bad_environment_value_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("WORKSET_VCPUS", "abc")

    with pytest.raises(SystemExit) as exited:
        cli.main(["--api", "http://api.test", "--cluster", "c1"])

    assert exited.value.code == 2
    assert "argument --vcpus: invalid int value: 'abc'" in capsys.readouterr().err


def test_an_api_that_is_not_a_url_is_one_clear_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--api", "api.example.com", "--cluster", "c1", *SIZED]) == 1

    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("workset-agent: --api must be an http(s) URL")


def test_an_unreachable_api_is_one_clear_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setattr(cli, "ApiClient", lambda *args, **kwargs: ApiClient(*args, **kwargs, retries=0))
    url = f"http://127.0.0.1:{closed_port()}"

    assert cli.main(["--api", url, "--cluster", "c1", "--work-root", str(tmp_path), *SIZED]) == 1

    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith(f"workset-agent: cannot reach the API at {url}: ConnectionError: ")
    assert "Connection refused" in err


def test_without_credentials_the_agent_warns_that_requests_go_unsigned(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_SECURITY_TOKEN",
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_ROLE_ARN",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setattr(cli, "ApiClient", lambda *args, **kwargs: ApiClient(*args, **kwargs, retries=0))

    assert cli.main(["--api", f"http://127.0.0.1:{closed_port()}", "--cluster", "c1", *SIZED]) == 1

    assert "no AWS credentials found: requests to the API go unsigned" in caplog.text


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def test_the_clusters_size_and_price_are_required(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("WORKSET_VCPUS", raising=False)
    monkeypatch.delenv("WORKSET_COST_PER_VCPU_HOUR", raising=False)

    with pytest.raises(SystemExit) as exited:
        cli.main(["--api", "http://api.test", "--cluster", "c1", "--vcpus", "64"])

    assert exited.value.code == 2
    assert "--vcpus and --cost-per-vcpu-hour are required" in capsys.readouterr().err


def test_a_free_and_unsized_cluster_is_allowed_with_a_loud_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, work_root: Path
) -> None:
    api = FakeApi()
    monkeypatch.setattr(cli, "ApiClient", lambda *args, **kwargs: api)

    code = cli.main(
        [*cli_args("true", work_root), "--vcpus", "0", "--cost-per-vcpu-hour", "0", "--exit-when-idle", "0"]
    )

    assert code == 0
    assert (api.registrations[0]["vcpus"], api.registrations[0]["cost_per_vcpu_hour"]) == (0, 0)
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert any("costs 0 per vCPU-hour" in line and "wins every placement" in line for line in warnings), warnings
    assert any("declares 0 vCPUs" in line and "any size fits" in line for line in warnings), warnings


EXECUTE_API = "https://a1b2c3d4e5.execute-api.us-west-2.amazonaws.com/dev"


@pytest.mark.parametrize(
    ("flags", "environment", "signing", "cluster_region", "zone"),
    [
        (["--api", EXECUTE_API], {}, "us-west-2", "us-west-2", None),
        (["--api", EXECUTE_API, "--availability-zone", "us-west-2b"], {}, "us-west-2", "us-west-2", "us-west-2b"),
        (["--api", EXECUTE_API, "--cluster-region", "us-east-2"], {}, "us-west-2", "us-east-2", None),
        (["--api", "http://127.0.0.1:3000", "--region", "eu-west-1"], {}, "eu-west-1", "eu-west-1", None),
        (["--api", "http://127.0.0.1:3000"], {"AWS_REGION": "ap-south-1"}, "ap-south-1", "ap-south-1", None),
        (["--api", "http://127.0.0.1:3000"], {}, "us-east-1", "us-east-1", None),
        (
            ["--api", EXECUTE_API],
            {"WORKSET_CLUSTER_REGION": "us-west-1", "WORKSET_AVAILABILITY_ZONE": "us-west-1a"},
            "us-west-2",
            "us-west-1",
            "us-west-1a",
        ),
    ],
)
def test_the_signing_region_the_clusters_region_and_its_zone(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    work_root: Path,
    flags: list[str],
    environment: dict[str, str],
    signing: str,
    cluster_region: str,
    zone: str | None,
) -> None:
    # GIVEN a head node with no region configured but what the case says
    for name in (
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_PROFILE",
        "WORKSET_CLUSTER_REGION",
        "WORKSET_AVAILABILITY_ZONE",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    api = FakeApi()
    clients: list[dict[str, Any]] = []
    monkeypatch.setattr(cli, "ApiClient", lambda url, **options: clients.append(options) or api)

    # WHEN the agent starts
    options = ["--cluster", "c1", "--work-root", str(work_root), "--no-s3", "--exit-when-idle", "0", *SIZED]
    assert cli.main([*flags, *options]) == 0

    # THEN it signs for the API's region, and registers the cluster's region and zone
    assert clients[0]["region"] == signing
    [registration] = api.registrations
    assert (registration["region"], registration["availability_zone"]) == (cluster_region, zone)


# --- 6. a relative run prefix --------------------------------------------------------------------------------------


def test_a_relative_run_prefix_is_taken_from_the_agents_directory(
    tmp_path: Path, work_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    launcher = tmp_path / "pipeline" / "fake-dy-r.sh"
    launcher.parent.mkdir()
    launcher.write_text('#!/bin/bash\necho "run $*"\n')
    launcher.chmod(launcher.stat().st_mode | stat.S_IXUSR)
    monkeypatch.chdir(tmp_path)
    api = FakeApi({**WORKSET, "work": {"workdir_name": "ws-1", "run_command": "--profile x"}})
    agent = make_agent(api, "pipeline/fake-dy-r.sh", work_root)

    outcome = agent.run_once()

    assert outcome is not None and (outcome.state, outcome.exit_code) == ("complete", 0)
    assert agent.config.run_prefix == str(launcher)


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        ("bin/run.sh", "{root}/bin/run.sh"),
        ("./bin/run.sh --fast && dy-r ~/x", "{root}/bin/run.sh --fast && dy-r ~/x"),
        ("'my dir/run.sh' a", "'{root}/my dir/run.sh' a"),
        ("dy-r", "dy-r"),
        ("source ~/projects/daylily/dyoa && dy-r", "source ~/projects/daylily/dyoa && dy-r"),
        ("bin/missing.sh", "bin/missing.sh"),
        ("/usr/bin/env dy-r", "/usr/bin/env dy-r"),
        ("bin/run.sh 'unbalanced", "{root}/bin/run.sh 'unbalanced"),
        ("'unbalanced", "'unbalanced"),
    ],
)
def test_resolve_run_prefix(tmp_path: Path, prefix: str, expected: str) -> None:
    for name in ("bin/run.sh", "my dir/run.sh"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("")

    assert resolve_run_prefix(prefix, cwd=tmp_path) == expected.format(root=tmp_path)


@pytest.fixture(autouse=True)
def _agent_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="workset_agent")


# --- 6. error categories from the exit status and the log -------------------------------------------------------------


@pytest.mark.parametrize(
    ("exit_code", "log", "category"),
    [
        (127, ["bash: dy-r: command not found"], "configuration"),
        (126, [], "configuration"),
        (75, ["No such file or directory"], "transient"),  # the exit status says it first
        (137, [], "resource"),
        (-9, [], "resource"),
        (1, ["bwa-mem2: Killed"], "resource"),
        (1, ["write error: No space left on device"], "resource"),
        (1, ["slurmstepd: error: Detected 1 oom-kill event(s)"], "resource"),
        (1, ["Spot instance interruption notice received"], "transient"),
        (1, ["botocore: ThrottlingException: Rate exceeded"], "transient"),
        (1, ["cannot open R1.fastq.gz: No such file or directory"], "data"),
        (1, ["gzip: stdin: unexpected end of file; truncated file"], "data"),
        (1, ["snakemake: invalid config: aligners must be a list"], "configuration"),
        (66, [], "data"),
        (1, ["something else went wrong"], "permanent"),
        (1, [], "permanent"),
        (1, ["No such file or directory: tmp.bam", "then Killed"], "resource"),  # the last telling line wins
        (-6, [], "resource"),
    ],
)
def test_the_error_category_comes_from_the_exit_status_then_the_log(
    exit_code: int, log: list[str], category: str
) -> None:
    assert error_category(exit_code, log) == category


def test_a_failed_run_is_reported_with_the_category_its_log_tells(
    work_root: Path, script: Callable[[str], str]
) -> None:
    api = FakeApi(WORKSET)
    agent = make_agent(
        api, script("echo 'samtools sort: write failed: No space left on device' >&2\nexit 1"), work_root
    )

    outcome = agent.run_once()

    assert outcome is not None and outcome.state == "error"
    [(_, _, fields)] = api.final_moves()
    assert fields["error_category"] == "resource"
    assert "No space left on device" in fields["reason"]


# --- 7. the workset folder: copied in, log tail shipped back ----------------------------------------------------------


class FakeFolders:
    """Workset folders in memory: `objects` by key; `logs` written by key."""

    def __init__(self, objects: dict[str, bytes]) -> None:
        self.objects = objects
        self.logs: dict[str, str] = {}
        self.fail_copy: Exception | None = None

    def copy(self, bucket: str, folder: str, workdir: Path, keep_alive: Callable[[], None]) -> int:
        if self.fail_copy is not None:
            raise self.fail_copy
        copied = 0
        for key, body in self.objects.items():
            relative = key[len(folder) :]
            if key.startswith(folder) and is_copied(relative):
                (workdir / relative).parent.mkdir(parents=True, exist_ok=True)
                (workdir / relative).write_bytes(body)
                copied += 1
                keep_alive()
        return copied

    def put_log(self, bucket: str, key: str, text: str) -> None:
        self.logs[key] = text


FOLDER = WORKSET["folder"]


def test_the_folder_is_copied_without_sentinels_and_the_log_tail_is_shipped_back(
    work_root: Path, script: Callable[[str], str]
) -> None:
    # GIVEN a folder with its files, the system's sentinels and an earlier attempt's log
    folders = FakeFolders(
        {
            f"{FOLDER}daylily_work.yaml": b"dy-r: -p all\n",
            f"{FOLDER}sample_data/R1.fastq.gz": b"reads",
            f"{FOLDER}daylily.ready": b"now",
            f"{FOLDER}daylily.lock": b"now",
            f"{FOLDER}logs/workset-agent.attempt-1.log": b"old",
        }
    )
    api = FakeApi(WORKSET)
    agent = make_agent(api, script("ls -R; cat daylily_work.yaml"), work_root, folders)

    # WHEN the agent runs the workset
    outcome = agent.run_once()

    # THEN the run saw the folder's files and not the sentinels, and its log went back to the folder
    assert outcome is not None and outcome.state == "complete"
    log = folders.logs[f"{FOLDER}logs/workset-agent.attempt-1.log"]
    assert "R1.fastq.gz" in log and "dy-r: -p all" in log
    assert "daylily.ready" not in log and "daylily.lock" not in log and "workset-agent.attempt" not in log


def test_a_folder_that_cannot_be_read_is_an_error_before_the_run(work_root: Path, script: Callable[[str], str]) -> None:
    folders = FakeFolders({})
    folders.fail_copy = ClientError({"Error": {"Code": "AccessDenied", "Message": "denied"}}, "ListObjectsV2")
    api = FakeApi(WORKSET)
    agent = make_agent(api, script("touch ran"), work_root, folders)

    outcome = agent.run_once()

    assert outcome is not None and outcome.state == "error"
    assert [(state, fields["error_category"]) for _, state, fields in api.final_moves()] == [("error", "configuration")]
    assert not (workdir(work_root) / "ran").exists()
    assert agent.runbook.runs() == []


@pytest.mark.parametrize(
    ("key", "copied"),
    [
        ("stage_samples.tsv", True),
        ("sample_data/a.fastq.gz", True),
        ("daylily.ready", False),
        ("daylily.error", False),
        ("sample_data/", False),
        ("logs/workset-agent.attempt-2.log", False),
        ("logs/other.log", True),
    ],
)
def test_which_objects_of_the_folder_are_copied(key: str, copied: bool) -> None:
    assert is_copied(key) is copied


def test_worksets_with_the_same_workdir_name_run_in_directories_of_their_own(
    work_root: Path, script: Callable[[str], str]
) -> None:
    # GIVEN two worksets whose work files name the same work directory, run one after the other
    shared = {"workdir_name": "shared", "run_command": ""}
    api = FakeApi(
        {**WORKSET, "workset_id": "wd-first", "work": shared}, {**WORKSET, "workset_id": "wd-second", "work": shared}
    )
    run = 'if [[ -e result.txt ]]; then echo "stale: $(cat result.txt)"; exit 1; fi\necho "$WORKSET_ID" > result.txt'
    agent = make_agent(api, script(run), work_root)

    # WHEN the agent runs both
    outcomes = agent.run_forever(idle_exit_seconds=0.2)

    # THEN the second did not see the first one's files: each ran in a directory of its own
    assert [(outcome.workset_id, outcome.state) for outcome in outcomes] == [
        ("wd-first", "complete"),
        ("wd-second", "complete"),
    ]
    for workset_id in ("wd-first", "wd-second"):
        assert (work_root / workset_id / "attempt-1" / "shared" / "result.txt").read_text() == f"{workset_id}\n"


def test_a_claim_starts_in_an_empty_work_directory(work_root: Path, script: Callable[[str], str]) -> None:
    # GIVEN files an earlier claim of the same attempt left behind (its lease given back, say)
    stale = workdir(work_root) / "result.txt"
    stale.parent.mkdir(parents=True)
    stale.write_text("from an earlier claim")
    api = FakeApi(WORKSET)
    agent = make_agent(api, script("[[ ! -e result.txt ]]"), work_root)

    # WHEN the workset is claimed and run again
    outcome = agent.run_once()

    # THEN its run found the directory empty
    assert outcome is not None and outcome.state == "complete"


def test_a_work_directory_that_cannot_be_emptied_is_a_transient_error(
    work_root: Path, script: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    workdir(work_root).mkdir(parents=True)

    def refuse(path: Path) -> None:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(runner.shutil, "rmtree", refuse)
    api = FakeApi(WORKSET)
    agent = make_agent(api, script("touch ran"), work_root)

    outcome = agent.run_once()

    assert outcome is not None and outcome.state == "error"
    [(_, state, fields)] = api.moves
    assert (state, fields["error_category"]) == ("error", "transient")
    assert "the work directory could not be emptied" in fields["reason"]
    assert agent.runbook.runs() == []


def test_each_attempt_of_a_workset_has_a_directory_of_its_own(tmp_path: Path) -> None:
    assert run_workdir(tmp_path, "ws-1", 1, "shared") == tmp_path / "ws-1" / "attempt-1" / "shared"
    assert run_workdir(tmp_path, "ws-1", 2, "shared") == tmp_path / "ws-1" / "attempt-2" / "shared"
    assert run_workdir(tmp_path, "ws 1", 1, None) == tmp_path / "ws%201" / "attempt-1" / "ws%201"


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("a b", "a_b"),
        ("a/b", "a_b"),
        ("a b", "a%20b"),
        (".x", "%2Ex"),
        ("runé", "rune\u0301"),
        ("x" * 300 + "1", "x" * 300 + "2"),
    ],
)
def test_distinct_names_get_distinct_directory_names(one: str, other: str) -> None:
    assert dirname(one) != dirname(other)
    for name in (one, other):
        assert "/" not in dirname(name) and not dirname(name).startswith(".") and len(dirname(name)) <= 200


@pytest.mark.parametrize("name", [".", "..", ".hidden"])
def test_no_directory_name_is_hidden_or_a_path_step(name: str) -> None:
    assert dirname(name).startswith("%2E")


# --- 8. several worksets at once ------------------------------------------------------------------------------------


class CountingApi(FakeApi):
    """Counts the runs in progress at once (between the moves to in_progress and to complete)."""

    def __init__(self, *worksets: dict[str, Any]) -> None:
        super().__init__(*worksets)
        self.lock = threading.Lock()
        self.running = 0
        self.most_at_once = 0

    def claim(self, workset_id: str, owner: str, cluster: str) -> dict[str, Any]:
        claimed = super().claim(workset_id, owner, cluster)
        return {**claimed, "work": {"workdir_name": "shared-name", "run_command": ""}}

    def change_state(self, workset_id: str, state: str, **fields: Any) -> dict[str, Any]:
        with self.lock:
            answer = super().change_state(workset_id, state, **fields)
            self.running += 1 if state == "in_progress" else -1
            self.most_at_once = max(self.most_at_once, self.running)
            return answer


@pytest.mark.parametrize(("max_worksets", "most"), [(1, 1), (2, 2), (5, 3)])
def test_the_agent_runs_up_to_max_worksets_at_once(
    work_root: Path, script: Callable[[str], str], max_worksets: int, most: int
) -> None:
    # GIVEN three worksets for the cluster, each run taking 0.4 s (all with the same work directory name)
    api = CountingApi(*({**WORKSET, "workset_id": f"ws-{n}"} for n in (1, 2, 3)))
    agent = make_agent(
        api, script('echo "$WORKSET_ID" > who; sleep 0.4; cat who'), work_root, max_worksets=max_worksets
    )

    # WHEN the agent runs until idle
    outcomes = agent.run_forever(idle_exit_seconds=0.3)

    # THEN all three completed, never more than max_worksets at once, each in a work directory of its own
    assert sorted((outcome.workset_id, outcome.state) for outcome in outcomes) == [
        ("ws-1", "complete"),
        ("ws-2", "complete"),
        ("ws-3", "complete"),
    ]
    assert api.most_at_once == most
    assert agent.runbook.runs() == []


def test_a_signal_stops_every_run_in_progress(
    guard_signals: Any, work_root: Path, script: Callable[[str], str]
) -> None:
    api = FakeApi(*({**WORKSET, "workset_id": f"ws-{n}"} for n in (1, 2)))
    api.on_heartbeat = lambda: os.kill(os.getpid(), signal.SIGTERM) if len(api.moves) == 2 else None
    agent = make_agent(api, script("sleep 30"), work_root, max_worksets=2)

    with pytest.raises(AgentStopped) as stopped:
        agent.run_forever()

    assert stopped.value.exit_code == 143
    assert sorted((workset_id, state, fields["error_category"]) for workset_id, state, fields in api.final_moves()) == [
        ("ws-1", "error", "transient"),
        ("ws-2", "error", "transient"),
    ]
    assert agent.runbook.runs() == []


# --- 9. resuming after a restart ------------------------------------------------------------------------------------

HELD = HeldRun(
    workset_id="ws-1", lease_token=TOKEN, workdir="/work/ws-1", bucket="bucket", folder=FOLDER, attempt=1, pgid=4242
)


@pytest.mark.parametrize(
    ("lease_state", "started", "exit_status", "alive_group", "decision"),
    [
        ("in_progress", True, None, True, Resume.ADOPT),
        (None, True, None, True, Resume.ADOPT),  # the API could not say: its answers to the reports will
        ("in_progress", True, 0, False, Resume.REPORT_EXIT),
        ("in_progress", True, 137, True, Resume.REPORT_EXIT),  # the wrapper wrote its status as it ended
        ("in_progress", True, None, False, Resume.REPORT_LOST),
        ("locked", False, None, False, Resume.GIVE_BACK),
        ("in_progress", False, None, False, Resume.REPORT_LOST),
        ("canceled", True, None, True, Resume.STOP),
        ("lease_lost", True, None, True, Resume.STOP),
        ("lease_lost", True, 0, False, Resume.FORGET),
        ("not_found", False, None, False, Resume.FORGET),
    ],
)
def test_what_a_restarted_agent_does_with_a_run_it_held(
    lease_state: str | None, started: bool, exit_status: int | None, alive_group: bool, decision: Resume
) -> None:
    held = HELD if started else replace(HELD, pgid=None)

    assert resume_decision(lease_state, held, exit_status, alive_group) is decision


def test_the_run_book_survives_a_restart(tmp_path: Path) -> None:
    book = RunBook(tmp_path / "c1.runs.json")
    book.put(replace(HELD, pgid=None))
    book.put(HELD)
    book.put(replace(HELD, workset_id="ws-2"))
    book.forget("ws-2")

    assert RunBook(tmp_path / "c1.runs.json").runs() == [HELD]


def held_run(work_root: Path, command: str, api: FakeApi) -> subprocess.Popen[bytes]:
    """A run started as the agent starts one (its own process group, its exit status written by the wrapper),
    recorded in the agent's run book, as an agent that was killed leaves it; the workset is in_progress."""
    workdir = work_root / "ws-1"
    workdir.mkdir(parents=True)
    held = HeldRun("ws-1", TOKEN, str(workdir), "bucket", FOLDER, 1)
    with (workdir / "workset-agent.log").open("wb") as log:
        process = subprocess.Popen(
            ["/bin/bash", "-c", runner.RUN_WRAPPER, "workset-run", command, str(held.exit_status_path)],
            cwd=workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    held = held.started(process.pid)
    RunBook(work_root / "c1.runs.json").put(held)
    api.state["ws-1"] = "in_progress"
    return process


def test_a_restarted_agent_adopts_a_run_that_goes_on_and_reports_it_without_running_it_again(
    work_root: Path,
) -> None:
    # GIVEN a run left by a killed agent, still going, and the same workset handed out again while it runs (the
    # agent has room for a second run)
    api = FakeApi(WORKSET)
    process = held_run(work_root, "sleep 0.6; echo first run; exit 0", api)
    agent = make_agent(api, "echo second run; exit 0", work_root, max_worksets=2)

    # WHEN the agent starts again
    outcomes = agent.run_forever(idle_exit_seconds=0.3)
    process.wait()

    # THEN it waited for the run and reported it, and did not claim or run the workset again
    assert [(outcome.workset_id, outcome.state) for outcome in outcomes] == [("ws-1", "complete")]
    assert [state for _, state, _ in api.moves] == ["complete"]
    assert api.heartbeats >= 2
    assert "second run" not in (work_root / "ws-1" / "workset-agent.log").read_text()
    assert agent.runbook.runs() == []


def test_a_run_that_ended_while_the_agent_was_away_is_reported_from_its_exit_status_and_log(work_root: Path) -> None:
    api = FakeApi()
    process = held_run(work_root, "echo 'bwa-mem2: Killed'; exit 137", api)
    process.wait()
    agent = make_agent(api, "true", work_root)

    outcomes = agent.run_forever(idle_exit_seconds=0.2)

    assert [(outcome.state, outcome.exit_code) for outcome in outcomes] == [("error", 137)]
    [(_, _, fields)] = api.final_moves()
    assert fields["error_category"] == "resource"


def test_a_run_gone_without_an_exit_status_is_reported_as_lost_and_transient(work_root: Path) -> None:
    api = FakeApi()
    process = held_run(work_root, "sleep 30", api)
    os.killpg(process.pid, signal.SIGKILL)  # the wrapper goes too: no exit status is written
    process.wait()
    agent = make_agent(api, "true", work_root)

    outcomes = agent.run_forever(idle_exit_seconds=0.2)

    assert [(outcome.state, outcome.exit_code) for outcome in outcomes] == [("error", None)]
    [(_, _, fields)] = api.final_moves()
    assert fields["error_category"] == "transient"
    assert "agent restarted; run lost" in fields["reason"]


def test_a_run_whose_lease_was_lost_meanwhile_is_stopped_and_forgotten(work_root: Path) -> None:
    api = FakeApi()
    process = held_run(work_root, "sleep 30", api)
    api.heartbeat_answers = [ApiError(409, "lease_lost", "expired")]
    agent = make_agent(api, "true", work_root)

    outcomes = agent.run_forever(idle_exit_seconds=0.2)

    assert outcomes == []
    assert process.wait(timeout=5) != 0
    assert api.moves == []
    assert agent.runbook.runs() == []


def test_an_adopted_run_whose_child_ignores_term_is_killed_after_the_grace_period(work_root: Path) -> None:
    # GIVEN a run left by a killed agent, whose child ignores TERM, and whose lease was lost meanwhile
    api = FakeApi()
    process = held_run(work_root, '( trap "" TERM; echo $BASHPID > "$PWD/child.pid"; exec sleep 30 ) & wait', api)
    assert wait_for(lambda: (work_root / "ws-1" / "child.pid").exists())
    api.heartbeat_answers = [ApiError(409, "lease_lost", "expired")]
    agent = make_agent(api, "true", work_root, stop_grace_seconds=0.3)

    # WHEN the agent starts again
    agent.run_forever(idle_exit_seconds=0.2)

    # THEN no process of the run's group is left
    process.wait(timeout=5)
    assert not group_alive(process.pid)


def test_a_workset_claimed_but_not_started_is_given_back(work_root: Path) -> None:
    api = FakeApi()
    released: list[tuple[str, int]] = []

    def release(workset_id: str, lease_token: int, **fields: Any) -> dict[str, Any]:
        released.append((workset_id, lease_token))
        return {}

    api.release = release  # type: ignore[attr-defined]
    RunBook(work_root / "c1.runs.json").put(HeldRun("ws-1", TOKEN, str(work_root / "ws-1"), "bucket", FOLDER, 1))
    api.state["ws-1"] = "locked"
    agent = make_agent(api, "true", work_root)

    agent.run_forever(idle_exit_seconds=0.2)

    assert released == [("ws-1", TOKEN)]
    assert agent.runbook.runs() == []


def test_a_lease_given_back_whose_answer_was_lost_is_not_taken_for_a_failure(
    work_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # GIVEN giving the lease back lands, its answer is lost, and the client's retry gets 409 (ready already)
    api = FakeApi()

    def release(workset_id: str, lease_token: int, *, actor: str, reason: str) -> dict[str, Any]:
        api.state[workset_id] = "ready"
        api.history.setdefault(workset_id, []).append({"event": "transition", "to_state": "ready", "actor": actor})
        raise ApiError(409, "transition_refused", "ready -> ready refused", may_have_landed=True)

    api.release = release  # type: ignore[attr-defined]
    RunBook(work_root / "c1.runs.json").put(HeldRun("ws-1", TOKEN, str(work_root / "ws-1"), "bucket", FOLDER, 1))
    api.state["ws-1"] = "locked"
    agent = make_agent(api, "true", work_root)

    # WHEN the agent starts again
    agent.run_forever(idle_exit_seconds=0.2)

    # THEN it knows the lease was given back: no warning that it will expire
    assert "not given back" not in caplog.text
    assert agent.runbook.runs() == []


def test_a_workset_the_agent_holds_is_not_claimed_again(work_root: Path, script: Callable[[str], str]) -> None:
    api = FakeApi(WORKSET)
    RunBook(work_root / "c1.runs.json").put(HELD)
    agent = make_agent(api, script("touch ran"), work_root)

    assert agent.run_once() is None
    assert "ws-1" not in api.state  # not claimed
