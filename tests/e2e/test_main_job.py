"""The main job, end to end through the local stack: a folder dropped into S3 reaches `complete`.

Everything goes through the public entry points: S3 for the folder, the HTTP API for reads, and the agent as a
separate process, exactly as `make demo` does.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import boto3
import pytest

from agent.client import ApiClient, ApiError
from local.demo import EXAMPLES, Inbox, start_agent, upload_workset
from local.stack import LocalStack

pytestmark = pytest.mark.e2e

T = TypeVar("T")


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    with LocalStack(emulator_port=0, api_port=0, schedule_seconds=0.5) as running:
        yield running


@pytest.fixture(scope="module")
def api(stack: LocalStack) -> ApiClient:
    session = boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name=stack.region)
    return ApiClient(stack.api_url, region=stack.region, session=session, retries=0)


@pytest.fixture(scope="module")
def s3(stack: LocalStack) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=stack.emulator_url,
        region_name=stack.region,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def wait_for(probe: Callable[[], T | None], seconds: float) -> T:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = probe()
        if value is not None:
            return value
        time.sleep(0.1)
    raise AssertionError(f"nothing after {seconds} s")


def find(api: ApiClient, workset_id: str) -> dict[str, Any] | None:
    try:
        return api.get_workset(workset_id)
    except ApiError as exc:
        if exc.status == 404:
            return None
        raise


def finished(api: ApiClient, workset_id: str) -> dict[str, Any] | None:
    workset = api.get_workset(workset_id)
    return workset if workset["state"] in ("complete", "error", "canceled") else None


def test_a_folder_put_by_an_s3_client_is_ready_within_ten_seconds(stack: LocalStack, api: ApiClient, s3: Any) -> None:
    # GIVEN a valid folder whose name has a space and a non-ASCII letter, put by a plain S3 client
    info = stack.describe()
    name = "hg003 exomé"
    folder = f"{info['prefix']}{name}/"
    source = EXAMPLES / "hg003-wes-normal"
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        s3.upload_file(str(path), info["bucket"], folder + path.relative_to(source).as_posix())

    # WHEN the ready sentinel lands
    started = time.monotonic()
    s3.put_object(Bucket=info["bucket"], Key=folder + "daylily.ready", Body=b"2026-12-03T09:15:02Z")

    # THEN the API shows the workset, ready, within 10 seconds
    workset = wait_for(lambda: find(api, name), seconds=10)
    assert time.monotonic() - started < 10
    assert workset["workset_id"] == name
    assert workset["state"] == "ready"
    assert workset["sample_count"] == 1


def test_the_example_workset_runs_to_complete_and_is_announced(stack: LocalStack, api: ApiClient, s3: Any) -> None:
    info = stack.describe()
    upload_workset(s3, info["bucket"], info["prefix"], EXAMPLES / "hg002-giab-wgs-30x")
    upload_workset(s3, info["bucket"], info["prefix"], EXAMPLES / "broken-sheet-example")
    wait_for(lambda: find(api, "hg002-giab-wgs-30x"), seconds=10)

    agent = start_agent(stack)
    try:
        final = wait_for(lambda: finished(api, "hg002-giab-wgs-30x"), seconds=60)
    finally:
        agent.kill()
        agent.communicate()

    assert final["state"] == "complete", json.dumps(final, indent=2)
    moves = [(entry["event"], entry.get("from_state"), entry["to_state"]) for entry in final["history"]]
    assert moves == [
        ("registered", None, "ready"),
        ("assigned", "ready", "ready"),
        ("transition", "ready", "locked"),
        ("transition", "locked", "in_progress"),
        ("transition", "in_progress", "complete"),
    ]

    broken = api.get_workset("broken-sheet-example")
    assert broken["state"] == "error"
    assert broken["error_category"] == "validation"
    assert "daylily_info.yaml is missing" in broken["error_reasons"]

    inbox = Inbox(stack, info["inbox_queue_url"])
    messages = wait_for(lambda: inbox.until_completion_of("hg002-giab-wgs-30x"), seconds=20)
    events = [
        (m["MessageAttributes"]["event_type"]["Value"], m["MessageAttributes"]["state"]["Value"])
        for m in messages
        if m["MessageAttributes"]["workset_id"]["Value"] == "hg002-giab-wgs-30x"
    ]
    assert events == [
        ("registered", "ready"),
        ("state_change", "locked"),
        ("state_change", "in_progress"),
        ("completion", "complete"),
    ]
