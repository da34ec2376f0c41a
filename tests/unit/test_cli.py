"""The `workset` CLI against a fake API: a local HTTP server answering from a script, so no AWS is used.

The commands run through `main()`, as the console script does: arguments parsed, requests signed and sent over
HTTP, answers shown as tables or as JSON, failures turned into one line on stderr and an exit code.
"""

from __future__ import annotations

import io
import json
import shutil
import threading
import webbrowser
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from moto import mock_aws

from workset_cli import submit
from workset_cli.__main__ import main
from workset_cli.commands import Context
from workset_cli.config import DEFAULT_PREFIX, ConfigError, resolve
from workset_cli.output import Column, ago, cell, compact_time, span, table
from workset_cli.views import history_table, queue_line, workset_view, worksets_table

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "worksets"
NOW = datetime(2026, 12, 3, 18, 45, tzinfo=UTC)


# --- a fake API ------------------------------------------------------------------------------------------------------


@dataclass
class Request:
    method: str
    path: str
    """As sent: percent-encoded."""
    query: dict[str, str]
    body: Any
    headers: dict[str, str]


class FakeApi:
    """Answers each (method, path) with its scripted replies in turn, the last one again and again; any other route
    with the API's 404. Records every request."""

    def __init__(self) -> None:
        self.replies: dict[tuple[str, str], list[tuple[int, Any]]] = {}
        self.requests: list[Request] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/dev"

    def answer(self, method: str, path: str, *replies: tuple[int, Any]) -> None:
        self.replies[(method, "/dev" + path)] = list(replies)

    def sent(self, method: str | None = None) -> list[Request]:
        return [request for request in self.requests if method is None or request.method == method]

    def _reply(self, request: Request) -> tuple[int, Any]:
        self.requests.append(request)
        replies = self.replies.get((request.method, request.path))
        if not replies:
            return 404, {"error": {"code": "not_found", "message": f"no route {request.method} {request.path}"}}
        return replies.pop(0) if len(replies) > 1 else replies[0]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                url = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                request = Request(
                    self.command,
                    url.path,
                    dict(parse_qsl(url.query)),
                    json.loads(raw) if raw else None,
                    dict(self.headers.items()),
                )
                status, body = api._reply(request)
                data = json.dumps(body).encode() if body is not None else b""
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _serve

            def log_message(self, *args: Any) -> None:
                pass

        return Handler


@pytest.fixture
def api() -> Iterator[FakeApi]:
    fake = FakeApi()
    thread = threading.Thread(target=fake.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield fake
    fake.server.shutdown()
    fake.server.server_close()


@dataclass
class Run:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@pytest.fixture
def cli(api: FakeApi, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Any:
    """Run `workset ARGS...` in an empty folder, with the fake API's URL in WORKSET_API_URL and test credentials."""
    monkeypatch.chdir(tmp_path)
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "WORKSET_BUCKET", "WORKSET_PREFIX"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WORKSET_API_URL", api.url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setattr(Context, "pause", lambda self, seconds: None)

    def run(*argv: str) -> Run:
        try:
            code = main(list(argv))
        except SystemExit as exit:  # argparse's usage errors and --help
            code = int(exit.code or 0)
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err)

    return run


def a_workset(workset_id: str = "hg002-giab-wgs-30x", state: str = "ready", **fields: Any) -> dict[str, Any]:
    return {
        "workset_id": workset_id,
        "bucket": "workset-bucket",
        "folder": f"{DEFAULT_PREFIX}{workset_id}/",
        "state": state,
        "version": 1,
        "priority": "urgent",
        "attempt": 1,
        "max_attempts": 3,
        "created_at": "2026-12-03T18:41:02Z",
        "updated_at": "2026-12-03T18:42:00Z",
        "sample_count": 2,
        **fields,
    }


def an_entry(version: int, event: str, to_state: str, from_state: str | None = None, **fields: Any) -> dict[str, Any]:
    entry = {
        "workset_id": "hg002-giab-wgs-30x",
        "version": version,
        "event": event,
        "to_state": to_state,
        "at": f"2026-12-03T18:41:{version:02d}Z",
        "actor": "register" if event == "registered" else "vm:11203",
        "reason": f"step {version}",
        "attempt": 1,
        **fields,
    }
    if from_state:
        entry["from_state"] = from_state
    return entry


HISTORY = [
    an_entry(1, "registered", "ready"),
    an_entry(2, "transition", "locked", "ready"),
    an_entry(3, "transition", "in_progress", "locked"),
]


# --- the command line ------------------------------------------------------------------------------------------------


def test_global_options_are_taken_before_or_after_the_command(cli: Any, api: FakeApi) -> None:
    page = {"worksets": [a_workset()], "next_token": None}
    api.answer("GET", "/worksets", (200, page))

    before = cli("--output", "json", "list")
    after = cli("list", "-o", "json")

    assert before.code == after.code == 0
    assert before.json() == after.json() == page


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["list", "--state", "finished"],
        ["list", "--limit", "0"],
        ["history", "x", "--limit", "many"],
        ["watch", "x", "--interval", "-1"],
        ["show"],
        ["list", "--output", "yaml"],
    ],
)
def test_a_usage_error_exits_2_without_calling_the_api(cli: Any, api: FakeApi, argv: list[str]) -> None:
    result = cli(*argv)

    assert result.code == 2
    assert "usage: workset" in result.err
    assert api.requests == []


def test_without_an_api_url_it_says_how_to_configure_one(cli: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORKSET_API_URL")

    result = cli("list")

    assert result.code == 2
    assert result.err.startswith("workset: no API URL: pass --api-url or set WORKSET_API_URL")
    assert result.err.count("\n") == 1


# --- reading worksets ------------------------------------------------------------------------------------------------


def test_list_sends_the_filters_signed_and_shows_a_table(cli: Any, api: FakeApi) -> None:
    api.answer(
        "GET", "/worksets", (200, {"worksets": [a_workset(assigned_cluster="demo-cluster-usw2a")], "next_token": None})
    )

    result = cli("list", "--state", "ready", "--priority", "urgent", "--cluster", "demo-cluster-usw2a", "--limit", "5")

    assert result.code == 0
    request = api.sent("GET")[0]
    assert request.query == {"state": "ready", "priority": "urgent", "cluster": "demo-cluster-usw2a", "limit": "5"}
    assert request.headers["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=testing/")
    assert "/us-east-1/execute-api/aws4_request" in request.headers["Authorization"]
    header, row = result.out.splitlines()
    assert header.split() == ["WORKSET", "STATE", "PRIORITY", "ATTEMPT", "SAMPLES", "CLUSTER", "DETAIL", "UPDATED"]
    assert row.split()[:7] == ["hg002-giab-wgs-30x", "ready", "urgent", "1/3", "2", "demo-cluster-usw2a", "(assigned)"]


def test_list_all_follows_the_next_token_and_answers_one_page(cli: Any, api: FakeApi) -> None:
    api.answer(
        "GET",
        "/worksets",
        (200, {"worksets": [a_workset("a")], "next_token": "t1"}),
        (200, {"worksets": [a_workset("b")], "next_token": "t2"}),
        (200, {"worksets": [a_workset("c")], "next_token": None}),
    )

    result = cli("list", "--all", "-o", "json")

    assert result.code == 0
    assert [workset["workset_id"] for workset in result.json()["worksets"]] == ["a", "b", "c"]
    assert result.json()["next_token"] is None
    assert [request.query.get("next_token") for request in api.sent()] == [None, "t1", "t2"]


def test_list_without_all_says_on_stderr_that_there_is_more(cli: Any, api: FakeApi) -> None:
    api.answer("GET", "/worksets", (200, {"worksets": [a_workset()], "next_token": "t1"}))

    table_run = cli("list")
    json_run = cli("list", "-o", "json")

    assert "more worksets" in table_run.err
    assert json_run.json()["next_token"] == "t1"
    assert json_run.err == ""


def test_show_puts_the_id_in_the_path_as_one_encoded_segment(cli: Any, api: FakeApi) -> None:
    workset = {**a_workset("hg002 runé/1"), "history": HISTORY, "history_complete": True}
    api.answer("GET", "/worksets/hg002%20run%C3%A9%2F1", (200, workset))

    shown = cli("show", "hg002 runé/1")
    as_json = cli("show", "hg002 runé/1", "--output", "json")

    assert shown.code == 0
    assert as_json.json() == workset
    assert "workset   hg002 runé/1" in shown.out
    assert "history (3 entries):" in shown.out
    assert "locked -> in_progress" in shown.out


def test_an_api_error_is_one_line_on_stderr_and_exit_1(cli: Any, api: FakeApi) -> None:
    missing = {"error": {"code": "not_found", "message": "no workset 'x'", "request_id": "r"}}
    api.answer("GET", "/worksets/x", (404, missing))

    result = cli("show", "x")

    assert result.code == 1
    assert result.out == ""
    assert result.err == "workset: 404 not_found: no workset 'x'\n"


def test_an_unreachable_api_is_one_line_on_stderr(cli: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("agent.client.time.sleep", lambda seconds: None)
    unused = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    url = f"http://127.0.0.1:{unused.server_address[1]}"
    unused.server_close()

    result = cli("list", "--api-url", url)

    assert result.code == 1
    assert result.err.startswith(f"workset: cannot reach the API at {url}: ConnectionError")
    assert result.err.count("\n") == 1


def test_a_refusal_without_credentials_says_none_were_found(
    cli: Any, api: FakeApi, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.delenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", raising=False)
    api.answer("GET", "/worksets", (403, {"message": "Missing Authentication Token"}))

    result = cli("list")

    assert result.code == 1
    assert "403 http_error: Missing Authentication Token" in result.err
    assert "no AWS credentials were found" in result.err


def test_history_all_follows_every_page(cli: Any, api: FakeApi) -> None:
    api.answer(
        "GET",
        "/worksets/hg002-giab-wgs-30x/history",
        (200, {"history": HISTORY[:2], "next_token": "p2"}),
        (200, {"history": HISTORY[2:], "next_token": None}),
    )

    result = cli("history", "hg002-giab-wgs-30x", "--all", "--limit", "2")

    assert result.code == 0
    assert [request.query for request in api.sent()] == [{"limit": "2"}, {"limit": "2", "next_token": "p2"}]
    lines = result.out.splitlines()
    assert lines[0].split() == ["AT", "(UTC)", "#", "CHANGE", "BY", "REASON"]
    assert len(lines) == 4


# --- acting on worksets ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("action", ["cancel", "retry", "archive", "restore"])
def test_an_action_posts_who_and_why(cli: Any, api: FakeApi, action: str) -> None:
    api.answer("POST", f"/worksets/hg002-giab-wgs-30x/{action}", (200, a_workset(state="canceled")))

    result = cli(action, "hg002-giab-wgs-30x", "--reason", "wrong sheet", "--actor", "alice@lab")

    assert result.code == 0
    assert api.sent("POST")[0].body == {"actor": "alice@lab", "reason": "wrong sheet"}
    assert result.out == "hg002-giab-wgs-30x is canceled (attempt 1 of 3)\n"


def test_an_action_names_the_user_and_host_by_default(cli: Any, api: FakeApi) -> None:
    api.answer("POST", "/worksets/x/cancel", (200, a_workset("x", state="canceled")))

    cli("cancel", "x")

    actor = api.sent("POST")[0].body["actor"]
    assert "@" in actor
    assert api.sent("POST")[0].body["reason"] == ""


def test_a_refused_action_exits_1_with_the_rule(cli: Any, api: FakeApi) -> None:
    refusal = {"error": {"code": "transition_refused", "message": "archived -> canceled refused", "request_id": "r"}}
    api.answer("POST", "/worksets/x/cancel", (409, refusal))

    result = cli("cancel", "x")

    assert result.code == 1
    assert result.err == "workset: 409 transition_refused: archived -> canceled refused\n"


# --- stats and clusters ----------------------------------------------------------------------------------------------

QUEUE = {"by_state": {"error": 1, "ready": 3, "complete": 10}, "ready_by_priority": {"normal": 2, "urgent": 1}}


def test_stats_shows_the_queue_alone_when_the_scheduler_stats_are_missing(cli: Any, api: FakeApi) -> None:
    api.answer("GET", "/queue/stats", (200, QUEUE))

    shown = cli("stats")
    as_json = cli("stats", "-o", "json")

    assert shown.code == as_json.code == 0
    assert as_json.json() == {"queue": QUEUE, "scheduler": None}
    lines = shown.out.splitlines()
    assert [line.split() for line in lines[:5]] == [
        ["STATE", "WORKSETS"],
        ["ready", "3"],
        ["complete", "10"],
        ["error", "1"],
        ["total", "14"],
    ]
    assert ["urgent", "1"] in [line.split() for line in lines]
    assert "scheduler" not in shown.out


def test_stats_shows_the_scheduler_when_the_api_serves_it(cli: Any, api: FakeApi) -> None:
    scheduler = {
        "ready": 3,
        "unassigned": 1,
        "clusters": [{"name": "c1", "status": "active", "live": True, "active_worksets": 1, "max_worksets": 2}],
        "last_tick": {
            "at": "2026-12-03T18:41:00Z",
            "expired": 0,
            "retried": 0,
            "assigned": 1,
            "waiting": 1,
            "conflicts": 0,
            "assignments": [{"workset_id": "a", "cluster": "c1", "reason": "cheapest"}],
            "waits": [{"workset_id": "b", "cluster": None, "reason": "waits: no live cluster fits"}],
        },
    }
    api.answer("GET", "/queue/stats", (200, QUEUE))
    api.answer("GET", "/scheduler/stats", (200, scheduler))

    result = cli("stats")

    assert result.code == 0
    assert "scheduler: 3 ready, 1 not yet assigned" in result.out
    assert ["c1", "active", "yes", "1/2"] in [line.split() for line in result.out.splitlines()]
    assert "1 assigned, 1 waiting, 0 expired, 0 retried, 0 conflicts" in result.out
    assert "waits: no live cluster fits" in result.out


def test_clusters_lists_them_and_shows_one(cli: Any, api: FakeApi) -> None:
    cluster = {
        "name": "demo-cluster-usw2a",
        "region": "us-west-2",
        "max_worksets": 2,
        "vcpus": 192,
        "cost_per_vcpu_hour": 0.0425,
        "status": "active",
        "last_heartbeat_at": "2026-12-03T18:41:00Z",
    }
    api.answer("GET", "/clusters", (200, {"clusters": [cluster]}))
    api.answer("GET", "/clusters/demo-cluster-usw2a", (200, cluster))

    listed = cli("clusters")
    shown = cli("clusters", "demo-cluster-usw2a")

    assert listed.out.splitlines()[1].split()[:6] == ["demo-cluster-usw2a", "active", "us-west-2", "2", "192", "0.0425"]
    assert "cost_per_vcpu_hour  0.0425" in shown.out


# --- watching --------------------------------------------------------------------------------------------------------


def test_watch_prints_each_change_once_and_exits_0_when_complete(cli: Any, api: FakeApi) -> None:
    # GIVEN a workset that runs, then completes
    running = {**a_workset(state="in_progress", progress="staging"), "history": HISTORY}
    done = {
        **a_workset(state="complete"),
        "history": [*HISTORY, an_entry(4, "transition", "complete", "in_progress")],
    }
    api.answer("GET", "/worksets/hg002-giab-wgs-30x", (200, running), (200, running), (200, done))

    # WHEN it is watched
    result = cli("watch", "hg002-giab-wgs-30x", "--interval", "0.01")

    # THEN every history entry shows once, the progress once, and the exit code says it completed
    assert result.code == 0
    lines = result.out.splitlines()
    assert sum("progress: staging" in line for line in lines) == 1
    assert [line.split("  ")[3].strip() for line in lines if "#1" in line] == [
        "registered (ready)",
        "ready -> locked",
        "locked -> in_progress",
        "in_progress -> complete",
    ]


def test_watch_exits_1_when_the_workset_fails_for_good_and_waits_out_a_retry(cli: Any, api: FakeApi) -> None:
    failed_once = {**a_workset(state="error", error_category="transient", retry_at="2026-12-03T18:50:00Z")}
    failed = {**a_workset(state="error", error_category="data"), "history": HISTORY}
    api.answer("GET", "/worksets/x", (200, {**failed_once, "history": HISTORY}), (200, failed))

    result = cli("watch", "x", "-o", "json")

    assert result.code == 1
    assert [json.loads(line)["version"] for line in result.out.splitlines()] == [1, 2, 3]
    assert len(api.sent()) == 2
    assert result.err == "workset: hg002-giab-wgs-30x ended error (data), not complete\n"


def test_watch_without_an_id_follows_the_queue_until_interrupted(
    cli: Any, api: FakeApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    api.answer("GET", "/queue/stats", (200, QUEUE))

    def interrupt(self: Context, seconds: float) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(Context, "pause", interrupt)

    result = cli("watch")

    assert result.code == 130
    assert result.err == ""
    assert result.out.count("\n") == 1
    assert "ready 3 (urgent 1, normal 2) · complete 10 · error 1" in result.out


# --- submitting ------------------------------------------------------------------------------------------------------


def test_submit_refuses_an_invalid_folder_with_every_reason_before_any_call(cli: Any, api: FakeApi) -> None:
    result = cli("submit", str(EXAMPLES / "broken-sheet-example"), "--bucket", "b")

    assert result.code == 1
    assert "  - daylily_info.yaml is missing" in result.err
    assert "  - daylily_work.yaml: the run command (dy-r) is missing" in result.err
    assert result.err.splitlines()[-1].startswith("workset: ")
    assert "nothing uploaded" in result.err
    assert api.requests == []


def test_submit_refuses_a_missing_folder(cli: Any, tmp_path: Path) -> None:
    result = cli("submit", str(tmp_path / "nowhere"), "--bucket", "b")

    assert result.code == 1
    assert result.err == f"workset: {tmp_path / 'nowhere'} is not a folder\n"


def test_submit_does_not_upload_over_a_workset_that_is_registered_and_not_in_error(cli: Any, api: FakeApi) -> None:
    api.answer("GET", "/worksets/hg002-giab-wgs-30x", (200, a_workset(state="canceled")))

    result = cli("submit", str(EXAMPLES / "hg002-giab-wgs-30x"), "--bucket", "b")

    assert result.code == 1
    assert "is already registered (canceled)" in result.err
    assert "`workset retry hg002-giab-wgs-30x` gives it one" in result.err


def test_submit_needs_a_bucket(cli: Any) -> None:
    result = cli("submit", str(EXAMPLES / "hg002-giab-wgs-30x"))

    assert result.code == 2
    assert "no bucket: pass --bucket or set WORKSET_BUCKET" in result.err


class FakeS3:
    """The two calls `submit.upload` makes, with boto3's argument names."""

    def __init__(self) -> None:
        self.keys: list[str] = []

    def upload_file(self, filename: str, bucket: str, key: str, Callback: Any) -> None:
        size = Path(filename).stat().st_size
        Callback(size // 2)
        Callback(size - size // 2)
        self.keys.append(key)

    def put_object(self, Bucket: str, Key: str, Body: bytes, ContentType: str) -> None:
        self.keys.append(Key)


def test_upload_puts_the_files_then_the_ready_sentinel_last_leaving_sentinels_found_out(tmp_path: Path) -> None:
    # GIVEN a copy of a valid folder holding sentinels of an earlier life
    folder = tmp_path / "hg002-giab-wgs-30x"
    shutil.copytree(EXAMPLES / "hg002-giab-wgs-30x", folder)
    (folder / "daylily.ready").write_text("old")
    (folder / "daylily.complete").write_text("old")

    # WHEN it is read, checked and uploaded
    local = submit.read_folder(folder)
    s3, progress = FakeS3(), io.StringIO()
    submit.upload(s3, "b", "p/hg002-giab-wgs-30x/", local, submit.Progress(progress))  # type: ignore[arg-type]

    # THEN it is valid, its sentinels are left out, and daylily.ready comes last, written fresh
    assert submit.folder_problems(local, folder.name) == []
    assert local.sentinels == ("daylily.complete", "daylily.ready")
    assert s3.keys[-1] == "p/hg002-giab-wgs-30x/daylily.ready"
    assert sorted(s3.keys[:-1]) == sorted(f"p/hg002-giab-wgs-30x/{key}" for key in local.files)
    assert len(s3.keys) == 8
    lines = progress.getvalue().splitlines()
    assert len(lines) == 7
    assert lines[0].startswith("[1/7] daylily_info.yaml  ")
    assert all(line.endswith("100%") for line in lines)


def test_a_folder_name_that_cannot_be_an_id_is_a_problem(tmp_path: Path) -> None:
    local = submit.read_folder(EXAMPLES / "hg002-giab-wgs-30x")

    assert submit.folder_problems(local, " padded ") == [
        "a workset name must be non-empty and not start or end with white space"
    ]


# --- the dashboard's address ---------------------------------------------------------------------------------------

DEPLOYED = "https://abc123.execute-api.eu-west-1.amazonaws.com/dev"
LOCAL_KEYS = {"aws_access_key_id": "local-key", "aws_secret_access_key": "local/secret+"}
LOCAL_FRAGMENT = {"access_key_id": "local-key", "secret_access_key": "local/secret+"}


def fragment_of(url: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(url).fragment))


def test_dashboard_on_the_local_stack_hands_over_its_keys(cli: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN `make local`'s state file, and no API URL given
    monkeypatch.delenv("WORKSET_API_URL")
    (Path.cwd() / ".local").mkdir()
    stack = {"api_url": "http://127.0.0.1:3000", "region": "us-east-1", "credentials": LOCAL_KEYS}
    (Path.cwd() / ".local" / "stack.json").write_text(json.dumps(stack))

    run = cli("dashboard")

    assert run.code == 0, run.err
    url = run.out.strip()
    assert url.startswith("http://127.0.0.1:3000/dashboard#")
    assert fragment_of(url) == {
        "access_key_id": "local-key",
        "secret_access_key": "local/secret+",
        "region": "us-east-1",
    }
    assert "keep it to yourself" in run.err


def test_dashboard_hands_temporary_credentials_from_sts_for_long_term_keys(
    cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a deployed API and long-term keys (no session token)
    monkeypatch.setenv("WORKSET_API_URL", DEPLOYED)

    # WHEN the address is asked for, for two hours
    with mock_aws():
        run = cli("dashboard", "--duration", "7200", "-o", "json")

    # THEN it carries temporary credentials from STS, never the long-term secret, and says until when
    assert run.code == 0, run.err
    answer = run.json()
    fields = fragment_of(answer["url"])
    assert answer["url"].startswith(f"{DEPLOYED}/dashboard#")
    assert fields["secret_access_key"] != "testing" and fields["session_token"]
    assert fields["region"] == "eu-west-1"
    assert fields["expires"] == answer["expires_at"]
    lasts = datetime.fromisoformat(answer["expires_at"]) - datetime.now(UTC)
    assert 7000 < lasts.total_seconds() <= 7200
    assert "until" in run.err


def test_dashboard_hands_temporary_credentials_over_as_they_are(cli: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKSET_API_URL", DEPLOYED)
    monkeypatch.setenv("AWS_SESSION_TOKEN", "a-session-token")

    run = cli("dashboard")  # NOTE: no emulator: a call to STS would fail this test

    assert run.code == 0, run.err
    assert fragment_of(run.out.strip()) == {
        "access_key_id": "testing",
        "secret_access_key": "testing",
        "session_token": "a-session-token",
        "region": "eu-west-1",
    }


def test_dashboard_without_credentials_is_the_bare_address_and_open_opens_it(
    cli: Any, monkeypatch: pytest.MonkeyPatch, api: FakeApi
) -> None:
    opened: list[str] = []
    monkeypatch.setattr(webbrowser, "open", opened.append)

    run = cli("dashboard", "--without-credentials", "--open")

    assert (run.code, run.out.strip()) == (0, f"{api.url}/dashboard")
    assert opened == [f"{api.url}/dashboard"]
    assert "sign in on the page" in run.err
    assert api.sent() == []


def test_dashboard_without_any_credentials_says_so(cli: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(Path.cwd() / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(Path.cwd() / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")

    run = cli("dashboard")

    assert run.code == 1
    assert "no AWS credentials were found" in run.err


# --- configuration ---------------------------------------------------------------------------------------------------


def test_the_local_stack_file_gives_api_emulator_bucket_and_credentials(tmp_path: Path) -> None:
    (tmp_path / ".local").mkdir()
    stack = {
        "api_url": "http://127.0.0.1:3000",
        "emulator_url": "http://127.0.0.1:4566",
        "region": "us-east-1",
        "bucket": "local-bucket",
        "prefix": "daylily_monitoring/active_worksets/",
        "credentials": {"aws_access_key_id": "local-key", "aws_secret_access_key": "local-secret"},
    }
    (tmp_path / ".local" / "stack.json").write_text(json.dumps(stack))

    settings = resolve(api_url=None, region=None, bucket=None, prefix=None, environ={}, cwd=tmp_path)

    assert (settings.api_url, settings.region) == ("http://127.0.0.1:3000", "us-east-1")
    assert settings.bucket == "local-bucket"
    assert settings.s3_endpoint == "http://127.0.0.1:4566"
    assert settings.prefix == "daylily_monitoring/active_worksets/"
    credentials = settings.session.get_credentials()
    assert credentials is not None and credentials.access_key == "local-key"


def test_a_given_api_url_wins_over_the_local_stack_file(tmp_path: Path) -> None:
    (tmp_path / ".local").mkdir()
    (tmp_path / ".local" / "stack.json").write_text(json.dumps({"api_url": "http://127.0.0.1:3000"}))
    url = "https://abc123.execute-api.eu-west-1.amazonaws.com/dev"

    settings = resolve(
        api_url=None,
        region=None,
        bucket=None,
        prefix="runs",
        environ={"WORKSET_API_URL": url, "WORKSET_BUCKET": "bkt"},
        cwd=tmp_path,
    )

    assert (settings.api_url, settings.region, settings.bucket, settings.prefix) == (url, "eu-west-1", "bkt", "runs/")
    assert settings.s3_endpoint is None


@pytest.mark.parametrize("url", ["ftp://host/x", "localhost:3000", ""])
def test_an_api_url_must_be_http(tmp_path: Path, url: str) -> None:
    with pytest.raises(ConfigError):
        resolve(api_url=url or None, region=None, bucket=None, prefix=None, environ={}, cwd=tmp_path)


# --- views -----------------------------------------------------------------------------------------------------------


def test_a_table_aligns_columns_and_cuts_long_cells() -> None:
    text = table(
        (Column("NAME", width=8), Column("N", right=True)),
        [("short", "1"), ("a very long name", "100"), ("two\nlines", "7")],
    )

    assert text.splitlines() == [
        "NAME        N",
        "short       1",
        "a very …  100",
        "two lin…    7",
    ]


def test_times_are_compact_and_relative() -> None:
    assert compact_time("2026-12-03T18:41:02.123456Z", NOW) == "18:41:02"
    assert compact_time("2026-11-30T08:00:00+00:00", NOW) == "Nov 30 08:00"
    assert compact_time("2025-01-02T08:00:00Z", NOW) == "2025-01-02"
    assert ago("2026-12-03T18:41:02Z", NOW) == "3m ago"
    assert ago("2026-12-03T18:45:40Z", NOW) == "in 40s"
    assert ago(None, NOW) == ""
    assert [span(s) for s in (0, 59, 61, 7_500, 90_000)] == ["0s", "59s", "1m01s", "2h05m", "1d01h"]
    assert span(7_500, units=1) == "2h"
    assert cell("x" * 50, 10) == "x" * 9 + "…"


def test_the_worksets_table_says_what_goes_on_with_each() -> None:
    worksets = [
        a_workset("running", state="in_progress", cluster="c1", progress="pipeline running"),
        a_workset("failed", state="error", error_category="transient", retry_at="2026-12-03T18:46:00Z"),
        a_workset("waiting", assigned_cluster="c2"),
        a_workset("again", attempt=2, cluster="c1", assigned_cluster="c3"),
        a_workset("queued", attempt=2, cluster="c1"),
        a_workset("done", state="complete", cluster="c1"),
    ]

    rows = [line.split("  ") for line in worksets_table(worksets, NOW).splitlines()[1:]]

    # the cluster a ready workset is assigned to now, never the one an earlier attempt ran on; else its holder
    assert [[part.strip() for part in row if part.strip()] for row in rows] == [
        ["running", "in_progress", "urgent", "1/3", "2", "c1", "pipeline running", "3m ago"],
        ["failed", "error", "urgent", "1/3", "2", "transient; retry in 1m", "3m ago"],
        ["waiting", "ready", "urgent", "1/3", "2", "c2 (assigned)", "3m ago"],
        ["again", "ready", "urgent", "2/3", "2", "c3 (assigned)", "3m ago"],
        ["queued", "ready", "urgent", "2/3", "2", "3m ago"],
        ["done", "complete", "urgent", "1/3", "2", "c1", "3m ago"],
    ]
    assert worksets_table([], NOW) == "no worksets"


def test_the_workset_view_shows_its_reasons_and_says_when_history_is_cut() -> None:
    workset = {
        **a_workset(state="error", error_category="validation", error_reasons=["daylily_info.yaml is missing"]),
        "lease": {"owner": "vm:1", "token": 3, "expires_at": "2026-12-03T18:46:00Z"},
        "history": HISTORY,
        "history_complete": False,
    }

    text = workset_view(workset, NOW)

    assert "lease     vm:1, token 3, expires in 1m" in text
    assert "error     validation" in text
    assert "reasons:\n  - daylily_info.yaml is missing" in text
    assert "history (3 entries, the newest; `workset history hg002-giab-wgs-30x --all` shows all):" in text
    assert "created   18:41:02 (3m ago)" in text


def test_the_history_timeline_names_each_change() -> None:
    entries = [*HISTORY, an_entry(4, "transition", "error", "in_progress", error_category="transient")]

    lines = history_table(entries, NOW).splitlines()

    assert lines[1].split("  ")[0] == "18:41:01"
    assert "in_progress -> error (transient)" in lines[4]
    assert history_table([], NOW) == "no history"


def test_the_queue_line_leaves_out_empty_states() -> None:
    stats = {"by_state": {"ready": 0, "locked": 0, "in_progress": 2, "complete": 1}, "ready_by_priority": {}}

    assert queue_line(stats, NOW) == "18:45:00  in_progress 2 · complete 1"
    assert queue_line({"by_state": {}}, NOW) == "18:45:00  no worksets"
