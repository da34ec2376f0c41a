"""The main job, end to end through the local stack: a folder dropped into S3 reaches `complete`.

Everything goes through the public entry points: S3 for the folder, the HTTP API for reads, and the agent as a
separate process, exactly as `make demo` does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest

from agent.client import ApiClient
from local.demo import (
    CLUSTER,
    EXAMPLES,
    ROOT,
    Inbox,
    Stack,
    attributes,
    find,
    finished,
    local_stack,
    settled_sentinels,
    start_agent,
    upload_workset,
    wait_for,
)

pytestmark = pytest.mark.e2e

T = TypeVar("T")


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    """The stack as `make local` runs it: its own process, known to its clients through its state file."""
    with local_stack("e2e", schedule_seconds=0.5, parameters={"RetryBaseSeconds": "1"}) as running:
        yield running


@pytest.fixture(scope="module")
def api(stack: Stack) -> ApiClient:
    return stack.api(retries=0)


@pytest.fixture(scope="module")
def s3(stack: Stack) -> Any:
    return stack.client("s3")


def test_a_folder_put_by_an_s3_client_is_ready_within_ten_seconds(stack: Stack, api: ApiClient, s3: Any) -> None:
    # GIVEN a valid folder whose name has a space and a non-ASCII letter, put by a plain S3 client
    name = "hg003 exomé"
    folder = f"{stack.prefix}{name}/"
    source = EXAMPLES / "hg003-wes-normal"
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        s3.upload_file(str(path), stack.bucket, folder + path.relative_to(source).as_posix())

    # WHEN the ready sentinel lands
    started = time.monotonic()
    s3.put_object(Bucket=stack.bucket, Key=folder + "daylily.ready", Body=b"2026-12-03T09:15:02Z")

    # THEN the API shows the workset, ready, within 10 seconds
    workset = wait_for(lambda: find(api, name), "the workset to be registered", seconds=10)
    assert time.monotonic() - started < 10
    assert workset["workset_id"] == name
    assert workset["state"] == "ready"
    assert workset["sample_count"] == 1


def test_the_example_workset_runs_to_complete_and_is_announced(stack: Stack, api: ApiClient, s3: Any) -> None:
    upload_workset(s3, stack.bucket, stack.prefix, EXAMPLES / "hg002-giab-wgs-30x")
    upload_workset(s3, stack.bucket, stack.prefix, EXAMPLES / "broken-sheet-example")
    wait_for(lambda: find(api, "hg002-giab-wgs-30x"), "the workset to be registered", seconds=10)

    agent = start_agent(stack)
    try:
        final = wait_for(lambda: finished(api, "hg002-giab-wgs-30x"), "the workset to finish", seconds=60)
    finally:
        agent.kill()
        agent.communicate()
        # The agent is gone: its cluster, still live until its heartbeats are missed, must get no more work.
        api.request("DELETE", f"/clusters/{CLUSTER}")

    assert final["state"] == "complete", json.dumps(final, indent=2)
    moves = [(entry["event"], entry.get("from_state"), entry["to_state"]) for entry in final["history"]]
    assert moves == [
        ("registered", None, "ready"),
        ("assigned", "ready", "ready"),
        ("transition", "ready", "locked"),
        ("transition", "locked", "in_progress"),
        ("transition", "in_progress", "complete"),
    ]

    # The folder shows the outcome to people and old tools, and the system's own sentinels registered nothing again
    folder = f"{stack.prefix}hg002-giab-wgs-30x/"
    sentinels = wait_for(lambda: settled_sentinels(s3, stack.bucket, folder), "the sentinels", seconds=10)
    assert sentinels == ["daylily.complete", "daylily.ready"]
    assert len(api.get_workset("hg002-giab-wgs-30x")["history"]) == len(moves)

    broken = api.get_workset("broken-sheet-example")
    assert broken["state"] == "error"
    assert broken["error_category"] == "validation"
    assert "daylily_info.yaml is missing" in broken["error_reasons"]

    inbox = Inbox(stack)
    messages = wait_for(lambda: inbox.until_completion_of("hg002-giab-wgs-30x"), "the completion", seconds=20)
    events = [
        (attributes(m)["event_type"], attributes(m)["state"])
        for m in messages
        if attributes(m)["workset_id"] == "hg002-giab-wgs-30x"
    ]
    assert events == [
        ("registered", "ready"),
        ("state_change", "locked"),
        ("state_change", "in_progress"),
        ("completion", "complete"),
    ]


def test_make_demo_exits_0_and_shows_the_states_up_to_complete_and_the_reasons() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "local.demo"], cwd=ROOT, capture_output=True, text=True, timeout=240, check=False
    )

    assert result.returncode == 0, result.stdout + result.stderr
    for line in (
        "registered (ready)",
        "assigned (ready)",
        "ready -> locked",
        "locked -> in_progress",
        "in_progress -> complete",
        "- daylily_info.yaml is missing",
        "error -> ready",
        "automatic retry: attempt 2 of 3 after a transient error",
        "retry_scheduled hg003-wes-normal",
        "completion      hg002-giab-wgs-30x",
        "in_progress -> canceled  by demo",
        "its agent stopped the run's process group",
        "none twice",
        "/dashboard#access_key_id=testing&secret_access_key=testing&region=us-east-1",
        "demo passed",
    ):
        assert line in result.stdout


def drop(name: str, state_file: Path) -> subprocess.CompletedProcess[str]:
    """`python -m local.drop` of the exome example under `name`, as a person runs it in the checkout."""
    return subprocess.run(
        [
            *(sys.executable, "-m", "local.drop", "examples/worksets/hg003-wes-normal"),
            *("--name", name, "--state-file", str(state_file)),
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'layers' / 'common'}"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_local_drop_puts_a_folder_into_the_running_stack_and_says_how_to_read_it(stack: Stack, api: ApiClient) -> None:
    # GIVEN the stack's state file, as `make local` writes it
    state_file = ROOT / ".local" / "e2e-stack.json"

    # WHEN a person drops an example folder with the helper command, under a name that needs percent-encoding
    result = drop("dropped by hand é", state_file)
    assert result.returncode == 0, result.stderr

    # THEN the workset shows up as ready
    workset = wait_for(lambda: find(api, "dropped by hand é"), "the workset to be registered", seconds=10)
    assert workset["state"] == "ready"

    # AND the command it printed reads it (curl, which signs an encoded path wrongly, is not offered for this id)
    [command] = [line.removeprefix("read it with: ") for line in result.stdout.splitlines() if "read it" in line]
    assert "curl" not in result.stdout
    env = {name: value for name, value in os.environ.items() if not name.startswith(("AWS_", "WORKSET_"))}
    shown = subprocess.run(
        ["bash", "-c", command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert shown.returncode == 0, shown.stderr
    assert "workset   dropped by hand é" in shown.stdout


def test_local_drop_offers_curl_for_an_id_that_needs_no_encoding(stack: Stack) -> None:
    result = drop("dropped-plain", ROOT / ".local" / "e2e-stack.json")

    assert result.returncode == 0, result.stderr
    assert f"or with: curl -s --aws-sigv4 aws:amz:{stack.region}:execute-api" in result.stdout
    assert result.stdout.rstrip().endswith("/worksets/dropped-plain")


def test_a_transient_failure_backs_off_retries_and_succeeds_visibly(stack: Stack, api: ApiClient, s3: Any) -> None:
    # GIVEN a workset whose first attempt fails with a transient error (the stack's backoff starts at 1 s)
    upload_workset(s3, stack.bucket, stack.prefix, EXAMPLES / "hg003-wes-normal", "flaky run")
    wait_for(lambda: find(api, "flaky run"), "the workset to be registered", seconds=10)

    # WHEN an agent runs it
    agent = start_agent(stack, "flaky-cluster", fail_first_attempt_of="flaky run")
    try:
        final = wait_for(lambda: finished(api, "flaky run"), "the workset to finish", seconds=60)
    finally:
        agent.kill()
        agent.communicate()

    # THEN it failed, waited, went back to the queue as attempt 2 by itself, and completed
    assert (final["state"], final["attempt"]) == ("complete", 2)
    moves = [
        (entry["to_state"], entry["attempt"], entry["actor"])
        for entry in final["history"]
        if entry["event"] == "transition"
    ]
    assert [(state, attempt) for state, attempt, _ in moves] == [
        ("locked", 1),
        ("in_progress", 1),
        ("error", 1),
        ("ready", 2),
        ("locked", 2),
        ("in_progress", 2),
        ("complete", 2),
    ]
    failure, retry = final["history"][4], final["history"][5]
    assert failure["error_category"] == "transient"
    assert (retry["actor"], retry["reason"]) == ("scheduler", "automatic retry: attempt 2 of 3 after a transient error")
    assert (_time(retry["at"]) - _time(failure["at"])).total_seconds() >= 1

    # AND the folder showed the failure while it lasted, then the success
    folder = f"{stack.prefix}flaky run/"
    assert wait_for(lambda: settled_sentinels(s3, stack.bucket, folder), "the sentinels", seconds=10) == [
        "daylily.complete",
        "daylily.ready",
    ]
    versions = s3.list_object_versions(Bucket=stack.bucket, Prefix=folder + "daylily.error")
    error_bodies = [
        s3.get_object(Bucket=stack.bucket, Key=v["Key"], VersionId=v["VersionId"])["Body"].read().decode()
        for v in versions.get("Versions", [])
    ]
    assert len(error_bodies) == 1 and "\trun command exited with 75" in error_bodies[0]
    assert [marker["IsLatest"] for marker in versions.get("DeleteMarkers", [])] == [True]


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value)
