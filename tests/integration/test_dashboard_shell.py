"""The web dashboard's static shell, as the read function serves it: the page and every file it loads, each with its
security headers; nothing else under its routes; no data read; no markup built from data; the vendored signer as
published.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.conftest import FakeLambdaContext, api_event, files_the_page_loads

pytestmark = pytest.mark.integration

SHELL = Path(__file__).resolve().parents[2] / "functions" / "api" / "dashboard"
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
CONTENT_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}


def get(module: ModuleType, path: str) -> dict[str, Any]:
    """The read function's answer to `GET path`, with its body as text."""
    response: dict[str, Any] = module.lambda_handler(api_event("GET", path), FakeLambdaContext("api"))
    body = response.get("body") or ""
    response["text"] = base64.b64decode(body).decode() if response.get("isBase64Encoded") else body
    headers = {name: [value] for name, value in (response.get("headers") or {}).items()}
    headers.update(response.get("multiValueHeaders") or {})
    response["headers"] = {name.lower(): ", ".join(values) for name, values in headers.items()}
    return response


@pytest.fixture
def reads(load_function: Callable[..., ModuleType]) -> ModuleType:
    return load_function("ApiReadFunction")


def assert_secured(response: dict[str, Any]) -> None:
    policy = response["headers"]["content-security-policy"]
    directives = dict(part.strip().split(" ", 1) for part in policy.split(";"))
    assert directives["default-src"] == "'none'"
    assert directives["script-src"] == "'self'"
    assert directives["style-src"] == "'self'"
    assert directives["connect-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    assert "unsafe" not in policy
    for name, value in SECURITY_HEADERS.items():
        assert response["headers"][name.lower()] == value


def test_the_page_and_every_file_it_loads_are_served_with_the_security_headers(reads: ModuleType) -> None:
    page = get(reads, "/dashboard")

    assert page["statusCode"] == 200
    assert page["headers"]["content-type"] == "text/html; charset=utf-8"
    assert_secured(page)

    loaded = files_the_page_loads(page["text"], lambda name: (SHELL / name).read_text(encoding="utf-8"))
    assert {"app.js", "api.js", "views.js", "dom.js", "aws4fetch.esm.js", "style.css", "icon.svg"} <= loaded
    for name in sorted(loaded):
        served = get(reads, f"/dashboard/{name}")
        assert served["statusCode"] == 200, name
        assert served["headers"]["content-type"] == CONTENT_TYPES[Path(name).suffix]
        assert served["text"] == (SHELL / name).read_text(encoding="utf-8")
        assert_secured(served)


@pytest.mark.parametrize(
    "path",
    [
        "/dashboard/index.html",  # the page is at /dashboard only: its relative addresses would be one level off
        "/dashboard/README.md",
        "/dashboard/aws4fetch.LICENSE",
        "/dashboard/..%2Fread.py",
        "/dashboard/%2E%2E%2Fapi_base.py",
        "/dashboard/dashboard_shell.py",
        "/dashboard/app.js%00.css",
    ],
)
def test_nothing_but_the_shells_files_is_served_under_its_routes(reads: ModuleType, path: str) -> None:
    response = get(reads, path)

    assert response["statusCode"] == 404
    assert '"code":"not_found"' in response["text"].replace(" ", "")


def test_the_shell_reads_no_data(load_function: Callable[..., ModuleType]) -> None:
    # GIVEN the read function pointed at a table that does not exist
    reads = load_function("ApiReadFunction", WORKSET_TABLE="no-such-table")

    # WHEN the page and a script are asked for, and a data route
    page = get(reads, "/dashboard")
    script = get(reads, "/dashboard/app.js")

    # THEN the shell is served, while the data route cannot answer without its table
    assert (page["statusCode"], script["statusCode"]) == (200, 200)
    with pytest.raises(Exception, match=r"ResourceNotFound|Requested resource not found"):
        get(reads, "/queue/stats")


def test_the_page_runs_no_inline_script_or_style_and_builds_no_markup_from_data() -> None:
    page = (SHELL / "index.html").read_text(encoding="utf-8")
    scripts = {path.name: path.read_text(encoding="utf-8") for path in SHELL.glob("*.js")}

    assert re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", page) == []
    assert re.findall(r"<style|\sstyle=|\son[a-z]+=", page) == []
    markup = re.compile(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function")
    for name, script in scripts.items():
        assert markup.findall(script) == [], name


def test_the_vendored_signer_is_aws4fetch_as_published() -> None:
    recorded = re.search(r"sha256 of `aws4fetch.esm.js`: `([0-9a-f]{64})`", (SHELL / "README.md").read_text())

    assert recorded is not None
    assert hashlib.sha256((SHELL / "aws4fetch.esm.js").read_bytes()).hexdigest() == recorded.group(1)
    assert "@license MIT" in (SHELL / "aws4fetch.esm.js").read_text()
    assert "Permission is hereby granted" in (SHELL / "aws4fetch.LICENSE").read_text()
