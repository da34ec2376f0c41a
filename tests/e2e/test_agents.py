"""Cluster agents on the local stack, each its own process as on a head node: two agents on two clusters share the
worksets by the scheduler's policy, a workset canceled mid-run stops, and an agent killed mid-run and started again
resumes its run without running it twice. Also: an operator's drain and retirement hold while the agent runs, an
agent stopped cleanly marks its cluster unavailable, a claim whose answer was lost is taken up rather than stranded,
and a workset named `next` is reachable by the agent's client and by the `workset` command.

The stand-in pipeline (`examples/pipeline/fake-dy-r.sh`) writes one line per run it starts into a runs file, which
is how "never twice" is checked.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from requests.adapters import HTTPAdapter

from agent.client import ApiClient, ApiError
from agent.runner import Agent, AgentConfig
from local.demo import EXAMPLES, ROOT, Stack, find, finished, local_stack, start_agent, upload_workset, wait_for

pytestmark = pytest.mark.e2e

CHEAP, DEAR, RESTARTED = "agents-cheap", "agents-dear", "agents-restarted"
SHARED = [f"shared-{n}" for n in range(1, 5)]
CANCELED = "canceled-mid-run"
RESUMED = "resumed-after-kill"
DRAINED, STOPPED, LOSING = "agents-drained", "agents-stopped", "agents-losing-answers"


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with local_stack("e2e-agents", schedule_seconds=0.5) as running:
        yield running


@pytest.fixture(scope="module")
def api(stack: Stack) -> ApiClient:
    return stack.api(retries=2)


@pytest.fixture(scope="module")
def s3(stack: Stack) -> Any:
    return stack.client("s3")


@pytest.fixture(scope="module")
def runs_file(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Where the stand-in pipeline writes a line per run started; any run still going at the end is killed."""
    path = tmp_path_factory.mktemp("agents") / "runs.tsv"
    path.touch()
    yield path
    for run in runs(path):
        if alive(run["pid"]):
            os.killpg(run["pgid"], signal.SIGKILL)


@pytest.fixture(scope="module")
def two_agents(
    stack: Stack, api: ApiClient, runs_file: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    """A cheap cluster with room for one workset and a dearer one with room for two, each with its agent."""
    work_root = tmp_path_factory.mktemp("work")
    environment = {
        "FAKE_DYR_RUNS_FILE": str(runs_file),
        "FAKE_DYR_STEP_SECONDS": "0.3",
        "FAKE_DYR_SLOW_WORKSETS": CANCELED,
    }
    agents = [
        start_agent(
            stack,
            CHEAP,
            max_worksets=1,
            cost_per_vcpu_hour=0.02,
            work_root=work_root / CHEAP,
            exit_when_idle=None,
            environment=environment,
        ),
        start_agent(
            stack,
            DEAR,
            max_worksets=2,
            cost_per_vcpu_hour=0.05,
            work_root=work_root / DEAR,
            exit_when_idle=None,
            environment=environment,
        ),
    ]
    try:
        for cluster in (CHEAP, DEAR):
            wait_for(lambda cluster=cluster: registered(api, cluster), f"cluster {cluster} to register", seconds=15)
        yield
    finally:
        for agent in agents:
            agent.send_signal(signal.SIGTERM)
        for agent in agents:
            try:
                agent.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                agent.kill()
                agent.communicate()
        for cluster in (CHEAP, DEAR):
            api.request("DELETE", f"/clusters/{cluster}")


def test_two_agents_on_two_clusters_share_the_worksets_by_policy_and_none_runs_twice(
    stack: Stack, api: ApiClient, s3: Any, runs_file: Path, two_agents: None
) -> None:
    # GIVEN two live clusters: a cheap one with room for one workset, a dearer one with room for two

    # WHEN four worksets are dropped into S3
    for name in SHARED:
        upload_workset(s3, stack.bucket, stack.prefix, EXAMPLES / "hg003-wes-normal", name)

    # THEN all complete, in their first attempt, each run once, and both clusters ran some
    finals = {name: wait_for(lambda name=name: settled(api, name), f"{name} to finish", seconds=60) for name in SHARED}
    assert {name: (workset["state"], workset["attempt"]) for name, workset in finals.items()} == {
        name: ("complete", 1) for name in SHARED
    }
    assert {workset["cluster"] for workset in finals.values()} == {CHEAP, DEAR}
    started = [run["workset_id"] for run in runs(runs_file)]
    assert sorted(name for name in started if name in SHARED) == SHARED
    for workset in finals.values():
        assert [entry["to_state"] for entry in workset["history"] if entry["event"] == "transition"] == [
            "locked",
            "in_progress",
            "complete",
        ]

    # AND the scheduler said why, in its decisions: the cheapest cluster with room
    reasons = [
        entry["reason"] for workset in finals.values() for entry in workset["history"] if entry["event"] == "assigned"
    ]
    assert any(CHEAP in reason and "cheapest" in reason for reason in reasons), reasons

    # AND each run copied its folder and left its log tail in it, where the register function does not look
    folder = f"{stack.prefix}{SHARED[0]}/"
    log = s3.get_object(Bucket=stack.bucket, Key=f"{folder}logs/workset-agent.attempt-1.log")["Body"].read().decode()
    assert "the workset's folder is in" in log and "fake dy-r: done" in log


def test_a_workset_canceled_mid_run_stops_its_process_group_and_stays_canceled(
    stack: Stack, api: ApiClient, s3: Any, runs_file: Path, two_agents: None
) -> None:
    # GIVEN a workset whose run takes 30 s, running on one of the agents
    upload_workset(s3, stack.bucket, stack.prefix, EXAMPLES / "hg003-wes-normal", CANCELED)
    run = wait_for(lambda: started_run(runs_file, CANCELED), "the run to start", seconds=30)
    assert alive(run["pid"])

    # WHEN a person cancels it
    api.act(CANCELED, "cancel", actor="e2e", reason="wrong sample sheet")

    # THEN the agent stops the run's whole process group at its next heartbeat
    wait_for(lambda: not group_alive(run["pgid"]) or None, "the run's process group to stop", seconds=10)

    # AND the workset stays canceled: the agent reported nothing over the person's decision
    final = wait_for(lambda: settled(api, CANCELED), "the workset to settle", seconds=10)
    assert final["state"] == "canceled"
    moves = [entry["to_state"] for entry in final["history"] if entry["event"] == "transition"]
    assert moves == ["locked", "in_progress", "canceled"]
    assert [r["workset_id"] for r in runs(runs_file)].count(CANCELED) == 1


def test_an_agent_killed_mid_run_and_started_again_resumes_the_run_without_running_it_twice(
    stack: Stack, api: ApiClient, s3: Any, runs_file: Path, tmp_path: Path
) -> None:
    # GIVEN an agent on its own cluster, running a workset pinned to that cluster, whose run takes 4 s
    environment = {
        "FAKE_DYR_RUNS_FILE": str(runs_file),
        "FAKE_DYR_STEP_SECONDS": "0.3",
        "FAKE_DYR_SLOW_WORKSETS": RESUMED,
        "FAKE_DYR_SLOW_SECONDS": "4",
    }
    options: dict[str, Any] = {"work_root": tmp_path / "work", "exit_when_idle": None, "environment": environment}
    first = start_agent(stack, RESTARTED, max_worksets=1, **options)
    wait_for(lambda: registered(api, RESTARTED), "the cluster to register", seconds=15)
    folder = pinned_copy(tmp_path, RESTARTED)
    upload_workset(s3, stack.bucket, stack.prefix, folder, RESUMED)
    run = wait_for(lambda: started_run(runs_file, RESUMED), "the run to start", seconds=30)

    # WHEN the agent is killed outright (no chance to clean up), and started again a moment later
    first.kill()
    first.communicate()
    assert alive(run["pid"]), "the run goes on without its agent"
    second = start_agent(stack, RESTARTED, max_worksets=1, **options)
    try:
        final = wait_for(lambda: settled(api, RESUMED), "the workset to finish", seconds=30)
    finally:
        second.send_signal(signal.SIGTERM)
        output, _ = second.communicate(timeout=30)
        api.request("DELETE", f"/clusters/{RESTARTED}")

    # THEN the restarted agent adopted the run, waited for it and reported it: complete, in its first attempt
    assert (final["state"], final["attempt"]) == ("complete", 1), output
    assert "adopt" in output
    moves = [entry["to_state"] for entry in final["history"] if entry["event"] == "transition"]
    assert moves == ["locked", "in_progress", "complete"]

    # AND the pipeline ran once
    assert [r["workset_id"] for r in runs(runs_file)].count(RESUMED) == 1


def test_an_operators_drain_and_retirement_hold_while_the_agent_runs(
    stack: Stack, api: ApiClient, tmp_path: Path
) -> None:
    # GIVEN an agent on its own cluster, heartbeating it every second
    agent = start_agent(stack, DRAINED, max_worksets=1, work_root=tmp_path / "work", exit_when_idle=None)
    try:
        wait_for(lambda: registered(api, DRAINED), "the cluster to register", seconds=15)

        # WHEN an operator drains the cluster
        drained = api.request("POST", f"/clusters/{DRAINED}/heartbeat", {"status": "draining"})

        # THEN the agent's next heartbeats keep it live, and draining
        later = wait_for(lambda: beat_since(api, DRAINED, drained["last_heartbeat_at"]), "a heartbeat", seconds=15)
        assert later["status"] == "draining"

        # AND WHEN the operator retires it, the agent stops with exit status 3, and the cluster stays retired
        api.request("DELETE", f"/clusters/{DRAINED}")
        output, _ = agent.communicate(timeout=30)
        assert agent.returncode == 3, output
        assert f"cluster {DRAINED} was retired" in output
        assert api.get_cluster(DRAINED)["status"] == "retired"
    finally:
        agent.kill()
        agent.communicate()


def test_an_agent_stopped_cleanly_marks_its_cluster_unavailable(stack: Stack, api: ApiClient, tmp_path: Path) -> None:
    # GIVEN an idle agent on its own cluster
    agent = start_agent(stack, STOPPED, max_worksets=1, work_root=tmp_path / "work", exit_when_idle=None)
    try:
        wait_for(lambda: registered(api, STOPPED), "the cluster to register", seconds=15)

        # WHEN it is stopped by SIGTERM
        agent.send_signal(signal.SIGTERM)
        output, _ = agent.communicate(timeout=30)

        # THEN it exits 0 and the scheduler sees the cluster unavailable at once, not after 5 minutes of silence
        assert agent.returncode == 0, output
        assert api.get_cluster(STOPPED)["status"] == "unavailable"
    finally:
        agent.kill()
        agent.communicate()
        api.request("DELETE", f"/clusters/{STOPPED}")


class LosesTheFirstClaimAnswer(HTTPAdapter):
    """A transport that sends every request, but drops the answer of the first claim (`POST .../lock`), as a
    connection reset after the API wrote the lease would."""

    def __init__(self) -> None:
        super().__init__()
        self.lost: list[str] = []

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:
        response = super().send(request, *args, **kwargs)
        if request.method == "POST" and request.path_url.endswith("/lock") and not self.lost:
            self.lost.append(request.path_url)
            raise requests.ConnectionError("connection reset after the claim was written")
        return response


def test_a_claim_whose_answer_was_lost_is_taken_up_not_stranded(
    stack: Stack, api: ApiClient, s3: Any, tmp_path: Path
) -> None:
    # GIVEN an agent on its own cluster whose first claim lands but loses its answer, so the client retries it
    client = stack.api(retries=2, backoff_seconds=0.1)
    transport = LosesTheFirstClaimAnswer()
    client.http.mount("http://", transport)
    config = AgentConfig(
        cluster=LOSING,
        run_prefix="true",
        region=stack.region,
        vcpus=192,
        cost_per_vcpu_hour=0.01,
        heartbeat_seconds=1,
        work_root=tmp_path / "work",
    )
    agent = Agent(client, config)
    agent.register()
    upload_workset(s3, stack.bucket, stack.prefix, pinned_copy(tmp_path, LOSING), LOSING)
    try:
        # WHEN the agent takes its next workset
        outcome = wait_for(agent.run_once, "the workset to be claimed and run", seconds=30)
    finally:
        api.request("DELETE", f"/clusters/{LOSING}")

    # THEN the retried claim's 409 was its own lease: the agent took it up and ran the workset, in its first attempt
    assert transport.lost == [f"/worksets/{LOSING}/lock"]
    assert outcome.state == "complete"
    final = api.get_workset(LOSING)
    assert (final["state"], final["attempt"]) == ("complete", 1)
    moves = [entry["to_state"] for entry in final["history"] if entry["event"] == "transition"]
    assert moves == ["locked", "in_progress", "complete"]


def test_a_workset_named_next_is_reachable_by_the_agents_client_and_the_workset_command(
    stack: Stack, api: ApiClient, s3: Any, tmp_path: Path
) -> None:
    # GIVEN a workset whose folder is named `next` (pinned to a cluster that does not exist, so it waits)
    upload_workset(s3, stack.bucket, stack.prefix, pinned_copy(tmp_path, "nowhere"), "next")

    # WHEN the agent's client reads it, and a person runs `workset show next`
    workset = wait_for(lambda: find(api, "next"), "the workset to be registered", seconds=10)
    shown = workset_command(stack, tmp_path, "show", "next", "--output", "json")

    # THEN both get that workset, not the `GET /worksets/next` route
    assert (workset["workset_id"], workset["state"]) == ("next", "ready")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["workset_id"] == "next"
    assert workset_command(stack, tmp_path, "history", "next").returncode == 0


# --- helpers ---------------------------------------------------------------------------------------------------------


def workset_command(stack: Stack, folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`workset ARGS` as a person runs it, in a folder where `make local` wrote `.local/stack.json`."""
    (folder / ".local").mkdir(exist_ok=True)
    (folder / ".local" / "stack.json").write_text(json.dumps(stack.description))
    env = {name: value for name, value in os.environ.items() if not name.startswith(("AWS_", "WORKSET_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "layers" / "common")])
    command = [sys.executable, "-m", "workset_cli", *args]
    return subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=60, check=False)


def beat_since(api: ApiClient, cluster: str, since: str) -> dict[str, Any] | None:
    """The cluster once its agent heartbeated it after `since`."""
    current = api.get_cluster(cluster)
    return current if _time(current["last_heartbeat_at"]) > _time(since) else None


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value)


def registered(api: ApiClient, cluster: str) -> dict[str, Any] | None:
    try:
        return api.get_cluster(cluster)
    except ApiError as exc:
        if exc.status == 404:
            return None
        raise


def settled(api: ApiClient, workset_id: str) -> dict[str, Any] | None:
    """The workset once registered and finished (complete, canceled, or failed with no retry due)."""
    return finished(api, workset_id) if find(api, workset_id) else None


def runs(path: Path) -> list[dict[str, Any]]:
    """The runs the stand-in pipeline started: workset id, attempt, pid, process group."""
    started = []
    for line in path.read_text().splitlines():
        workset_id, attempt, pid, pgid = line.split("\t")
        started.append({"workset_id": workset_id, "attempt": int(attempt), "pid": int(pid), "pgid": int(pgid)})
    return started


def started_run(path: Path, workset_id: str) -> dict[str, Any] | None:
    return next((run for run in runs(path) if run["workset_id"] == workset_id), None)


def alive(pid: int) -> bool:
    """Whether the process runs (a zombie, dead but not yet reaped, does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def group_alive(pgid: int) -> bool:
    """Whether any process of the group runs."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            return True
    return False


def pinned_copy(tmp_path: Path, cluster: str) -> Path:
    """The example exome workset, pinned to `cluster` (its `cluster_name`), so that no other cluster takes it."""
    folder = tmp_path / "pinned"
    shutil.copytree(EXAMPLES / "hg003-wes-normal", folder)
    work = folder / "daylily_work.yaml"
    work.write_text(work.read_text() + f"cluster_name: {cluster}\n")
    return folder
