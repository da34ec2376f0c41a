"""The `workset` CLI against the local stack, as a person runs it: its own process, in a folder where `make local`
wrote `.local/stack.json`, with no AWS or WORKSET_ variable set, so it finds the API, the emulator (for S3) and the
credentials in that file alone.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from local.demo import EXAMPLES, ROOT, Stack, local_stack

pytestmark = pytest.mark.integration

FOLDER = EXAMPLES / "hg002-giab-wgs-30x"


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with local_stack("cli", schedule_seconds=0.5) as running:
        yield running


@pytest.fixture(scope="module")
def workdir(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding the running stack's `.local/stack.json`, as `make local` writes it."""
    folder = tmp_path_factory.mktemp("cli")
    (folder / ".local").mkdir()
    (folder / ".local" / "stack.json").write_text(json.dumps(stack.description))
    return folder


class Workset:
    """`python -m workset_cli ...` run in `workdir`, with the checkout's packages on PYTHONPATH (as an install of the
    project provides them) and no AWS_ or WORKSET_ variables."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.env = {name: value for name, value in os.environ.items() if not name.startswith(("AWS_", "WORKSET_"))}
        self.env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "layers" / "common")])

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "workset_cli", *args],
            cwd=self.workdir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def json(self, *args: str) -> Any:
        result = self(*args, "--output", "json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)


@pytest.fixture(scope="module")
def workset(workdir: Path) -> Workset:
    return Workset(workdir)


@pytest.fixture(scope="module")
def submitted(workset: Workset) -> dict[str, Any]:
    """The example folder submitted with --wait: uploaded, then registered, and the workset printed as JSON."""
    result = workset("submit", str(FOLDER), "--wait", "--timeout", "30", "-o", "json")
    assert result.returncode == 0, result.stderr
    assert "[7/7] stage_samples.tsv" in result.stderr
    return dict(json.loads(result.stdout))


def test_submit_uploads_the_folder_with_the_ready_sentinel_last_and_waits_for_registration(
    stack: Stack, submitted: dict[str, Any]
) -> None:
    assert submitted["workset_id"] == FOLDER.name
    assert submitted["state"] == "ready"
    assert submitted["priority"] == "urgent"
    assert submitted["history"][0]["event"] == "registered"

    listed = stack.client("s3").list_objects_v2(Bucket=stack.bucket, Prefix=f"{stack.prefix}{FOLDER.name}/")
    keys = {item["Key"].rsplit(f"{FOLDER.name}/", 1)[1] for item in listed["Contents"]}
    assert {"daylily.ready", "stage_samples.tsv", "daylily_work.yaml", "sample_data/HG002_L001_R1.fastq.gz"} <= keys


def test_list_finds_it_as_a_table_and_as_json(workset: Workset, submitted: dict[str, Any]) -> None:
    table = workset("list", "--state", "ready")
    answer = workset.json("list", "--all")

    assert table.returncode == 0, table.stderr
    assert table.stdout.splitlines()[0].split()[:3] == ["WORKSET", "STATE", "PRIORITY"]
    assert any(line.split()[:3] == [FOLDER.name, "ready", "urgent"] for line in table.stdout.splitlines())
    assert FOLDER.name in [item["workset_id"] for item in answer["worksets"]]
    assert answer["next_token"] is None


def test_list_filters_by_priority(workset: Workset, submitted: dict[str, Any]) -> None:
    urgent = workset.json("list", "--priority", "urgent")
    low = workset.json("list", "--priority", "low")

    assert FOLDER.name in [item["workset_id"] for item in urgent["worksets"]]
    assert FOLDER.name not in [item["workset_id"] for item in low["worksets"]]


def test_show_has_the_key_fields_and_the_timeline(workset: Workset, submitted: dict[str, Any]) -> None:
    shown = workset("show", FOLDER.name)
    answer = workset.json("show", FOLDER.name)

    assert shown.returncode == 0, shown.stderr
    assert f"workset   {FOLDER.name}" in shown.stdout
    assert "registered (ready)" in shown.stdout
    assert answer["workset_id"] == FOLDER.name
    assert answer["history_complete"] is True


def test_history_pages_through_the_history(workset: Workset, submitted: dict[str, Any]) -> None:
    answer = workset.json("history", FOLDER.name, "--limit", "1", "--all")

    assert answer["history"][0]["event"] == "registered"
    assert answer["next_token"] is None


def test_cancel_is_recorded_and_ends_a_watch_with_exit_1(workset: Workset, submitted: dict[str, Any]) -> None:
    # GIVEN the same folder submitted as another workset
    name = "hg002 canceled é"
    assert workset("submit", str(FOLDER), "--id", name, "--wait", "--timeout", "30").returncode == 0

    # WHEN a person cancels it
    canceled = workset.json("cancel", name, "--reason", "wrong sheet", "--actor", "alice@lab")

    # THEN it is canceled, with who and why in its history; watching it ends at once, not complete
    assert canceled["state"] == "canceled"
    last = workset.json("history", name)["history"][-1]
    assert (last["from_state"], last["to_state"], last["actor"], last["reason"]) == (
        "ready",
        "canceled",
        "alice@lab",
        "wrong sheet",
    )
    watched = workset("watch", name, "--interval", "0.2")
    assert watched.returncode == 1
    assert "ready -> canceled" in watched.stdout
    assert watched.stderr == f"workset: {name} ended canceled, not complete\n"

    # AND a fresh submit of it is refused, pointing at retry
    again = workset("submit", str(FOLDER), "--id", name)
    assert again.returncode == 1
    assert "`workset retry 'hg002 canceled é'` gives it one" in again.stderr


def test_stats_and_clusters_answer_as_json(workset: Workset, submitted: dict[str, Any]) -> None:
    stats = workset.json("stats")
    clusters = workset.json("clusters")

    assert stats["queue"]["by_state"]["ready"] >= 1
    assert stats["scheduler"]["ready"] >= 1
    assert clusters == {"clusters": []}


def test_an_unknown_workset_or_cluster_is_one_line_and_exit_1(workset: Workset) -> None:
    missing = workset("show", "no-such-workset")
    no_cluster = workset("clusters", "no-such-cluster")

    assert missing.returncode == no_cluster.returncode == 1
    assert missing.stdout == ""
    assert missing.stderr.startswith("workset: 404 not_found: ")
    assert missing.stderr.count("\n") == 1
    assert no_cluster.stderr.startswith("workset: 404 not_found: ")
