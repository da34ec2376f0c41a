"""`python -m agent` as its own process, stopped by SIGTERM or SIGINT as a service manager or a person would stop it,
against a small fake of the API on localhost: the run's processes go with it (a child that ignores TERM too, after
the grace period), the workset is reported, and the cluster is marked unavailable."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
TOKEN = 3
WORKSET = {
    "workset_id": "ws-1",
    "bucket": "bucket",
    "folder": "daylily_monitoring/active_worksets/ws-1/",
    "attempt": 1,
    "work": {"workdir_name": "ws-1", "run_command": ""},
}


class FakeApi(ThreadingHTTPServer):
    """Hands out one workset (when given one), grants its lease and records every request."""

    def __init__(self, workset: dict[str, Any] | None) -> None:
        super().__init__(("127.0.0.1", 0), FakeApiHandler)
        self.workset = workset
        self.requests: list[tuple[str, str, Any]] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def seen(self, method: str, path: str) -> list[Any]:
        with self.lock:
            return [body for *request, body in self.requests if tuple(request) == (method, path)]

    def last(self) -> tuple[str, str, Any]:
        with self.lock:
            return self.requests[-1]


class FakeApiHandler(BaseHTTPRequestHandler):
    server: FakeApi

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _answer(self, status: int, body: Any = None) -> None:
        data = json.dumps(body).encode() if body is not None else b""
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _handle(self) -> None:
        path = urlsplit(self.path).path
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        with self.server.lock:
            self.server.requests.append((self.command, path, body))
            if (self.command, path) == ("GET", "/worksets/next"):
                workset, self.server.workset = self.server.workset, None
                return self._answer(200, workset) if workset else self._answer(204)
        if path == "/clusters":
            return self._answer(200, {**body, "status": "active"})
        if path == "/clusters/c1/heartbeat":
            return self._answer(200, {"name": "c1", "status": (body or {}).get("status", "active")})
        if path == "/worksets/ws-1/lock":
            return self._answer(200, {**WORKSET, "state": "locked", "lease": {"token": TOKEN}})
        if path == "/worksets/ws-1/heartbeat":
            return self._answer(200, {**WORKSET, "state": "in_progress"})
        if path == "/worksets/ws-1/state":
            return self._answer(200, {**WORKSET, "state": body["state"]})
        return self._answer(404, {"error": {"code": "not_found", "message": f"no route {self.command} {path}"}})

    do_GET = do_POST = do_PUT = _handle


@pytest.fixture
def serve() -> Iterator[Callable[[dict[str, Any] | None], FakeApi]]:
    servers: list[FakeApi] = []

    def start(workset: dict[str, Any] | None) -> FakeApi:
        server = FakeApi(workset)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def start_agent(api: FakeApi, tmp_path: Path) -> subprocess.Popen[str]:
    """The agent, with a run whose child ignores TERM (it writes its pid once the trap is set) and outlives its bash,
    and a grace period of 0.5 s before KILL."""
    run = tmp_path / "run.sh"
    run.write_text(
        '#!/bin/bash\necho $$ > "$PWD/bash.pid"\n'
        '( trap "" TERM; echo $BASHPID > "$PWD/child.pid"; exec sleep 30 ) &\nwait\n'
    )
    env = {
        **os.environ,
        "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'layers' / 'common'}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    command = [sys.executable, "-m", "agent", "--api", api.url, "--cluster", "c1", "--run-prefix", f"/bin/bash {run}"]
    command += ["--heartbeat-seconds", "0.2", "--poll-seconds", "0.1", "--work-root", str(tmp_path / "work"), "--no-s3"]
    command += ["--vcpus", "64", "--cost-per-vcpu-hour", "0.04", "--stop-grace-seconds", "0.5"]
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for(probe: Callable[[], bool], seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    while not probe():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize(("signum", "exit_code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_stopping_the_agent_during_a_run_stops_the_run_and_reports_it(
    serve: Callable[[dict[str, Any] | None], FakeApi], tmp_path: Path, signum: int, exit_code: int
) -> None:
    api = serve(WORKSET)
    agent = start_agent(api, tmp_path)
    workdir = tmp_path / "work" / "ws-1" / "attempt-1" / "ws-1"
    try:
        wait_for(lambda: (workdir / "child.pid").exists() and bool(api.seen("POST", "/worksets/ws-1/heartbeat")))
        pids = [int((workdir / name).read_text()) for name in ("bash.pid", "child.pid")]

        agent.send_signal(signum)
        output, _ = agent.communicate(timeout=20)

        assert agent.returncode == exit_code, output
        assert "Traceback" not in output
        wait_for(lambda: not any(alive(pid) for pid in pids), seconds=5)
        [*_, last] = api.seen("PUT", "/worksets/ws-1/state")
        assert (last["state"], last["error_category"], last["lease_token"]) == ("error", "transient", TOKEN)
        assert last["reason"] == f"agent stopped by {signal.Signals(signum).name} during the run"
        assert api.last() == ("POST", "/clusters/c1/heartbeat", {"status": "unavailable"})
    finally:
        agent.kill()
        agent.communicate()
        for pid_file in workdir.glob("*.pid"):
            if alive(pid := int(pid_file.read_text())):
                os.kill(pid, signal.SIGKILL)


Serve = Callable[[dict[str, Any] | None], FakeApi]


def test_stopping_an_idle_agent_exits_cleanly(serve: Serve, tmp_path: Path) -> None:
    api = serve(None)
    agent = start_agent(api, tmp_path)
    try:
        wait_for(lambda: bool(api.seen("GET", "/worksets/next")))

        agent.send_signal(signal.SIGTERM)
        output, _ = agent.communicate(timeout=20)

        assert agent.returncode == 0, output
        assert "agent stopped by SIGTERM between runs" in output
        assert api.seen("PUT", "/worksets/ws-1/state") == []
        assert api.last() == ("POST", "/clusters/c1/heartbeat", {"status": "unavailable"})
        assert "cluster c1 marked unavailable" in output
    finally:
        agent.kill()
        agent.communicate()
