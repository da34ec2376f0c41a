"""The web dashboard's static shell: its page, scripts, style sheet and icon, each served with strict security headers.

The shell holds no data and reads none, so API Gateway serves its two routes without a signature (`GET /dashboard`
and `GET /dashboard/{asset}`, `Auth: {Authorizer: NONE}` in template.yaml). The page then calls the API's read routes
itself, each call signed with SigV4 in the browser, and builds every value it shows as text, never as markup.

The files are those directly in `dashboard/` beside this module whose type is in `CONTENT_TYPES`; they are read on
first use and kept for the life of the function, so a cold start reads none of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.exceptions import NotFoundError

SHELL_FOLDER = Path(__file__).resolve().parent / "dashboard"
PAGE = "index.html"

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
"""What the shell may serve, by file suffix; any other file in the folder (the README, the vendored license) is not
served."""

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)
"""Only the shell's own files run or style the page, it talks only to its own API, and no site may frame it: no
inline script, no inline style, no other origin."""

SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    # NOTE: revalidated on every load rather than cached for a while, so a deployment's new page and its new scripts
    # are never mixed with an old copy; the whole shell is a few tens of kilobytes.
    "Cache-Control": "no-cache",
}


@dataclass(frozen=True)
class ShellFile:
    body: str
    content_type: str


@cache
def shell_files() -> dict[str, ShellFile]:
    """Every file the shell serves, by its name."""
    return {
        path.name: ShellFile(path.read_text(encoding="utf-8"), CONTENT_TYPES[path.suffix])
        for path in sorted(SHELL_FOLDER.iterdir())
        if path.is_file() and path.suffix in CONTENT_TYPES
    }


def page() -> Response[str]:
    """The dashboard's page, `GET /dashboard`."""
    return _response(shell_files()[PAGE])


def asset(name: str) -> Response[str]:
    """A script, the style sheet or the icon of the page, `GET /dashboard/{asset}`; NotFoundError (the API's 404)
    for any other name.

    The name is looked up whole among the served files, so no path (`..%2F...`) reaches anything else, and the page
    is not served again under the folder (its relative addresses would then point one level too deep).
    """
    served = shell_files().get(name) if name != PAGE else None
    if served is None:
        raise NotFoundError(f"the dashboard has no file {name!r}")
    return _response(served)


def _response(served: ShellFile) -> Response[str]:
    return Response(status_code=200, content_type=served.content_type, body=served.body, headers=dict(SECURITY_HEADERS))
