"""`workset dashboard`: the address of the web dashboard, signed in by credentials carried in its fragment.

A browser never sends an address's fragment (what follows `#`) to a server; the page takes the credentials from it
into the tab's sessionStorage and removes them from the address bar at once, then uses them only to sign its
requests. Long-term keys never go into an address: for them, STS `GetSessionToken` gives temporary credentials that
expire by themselves. Credentials that are temporary already (a role, SSO) are handed over as they are. Against the
local stack, its own keys are handed over, since it knows no others.

    $ workset dashboard
    https://abc123.execute-api.us-west-2.amazonaws.com/dev/dashboard#access_key_id=ASIA...&secret_access_key=...
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING
from urllib.parse import quote, urlencode

if TYPE_CHECKING:
    from .config import Settings

DASHBOARD_PATH = "/dashboard"
DEFAULT_SECONDS = 3600
"""How long the temporary credentials made for the browser last, by default."""


class NoCredentials(Exception):
    """The standard AWS credential chain found no credentials to hand to the browser."""


@dataclass(frozen=True)
class ViewerCredentials:
    """The credentials the browser signs with, and when they expire (None: not known, or never)."""

    access_key_id: str
    secret_access_key: str
    session_token: str | None = None
    expires_at: datetime | None = None


def dashboard_url(api_url: str, credentials: ViewerCredentials | None, region: str) -> str:
    """The dashboard's address under the API's base URL; with `credentials`, signed in through its fragment."""
    address = api_url.rstrip("/") + DASHBOARD_PATH
    if credentials is None:
        return address

    fields = {
        "access_key_id": credentials.access_key_id,
        "secret_access_key": credentials.secret_access_key,
        "session_token": credentials.session_token,
        "region": region,
        "expires": credentials.expires_at.isoformat() if credentials.expires_at else None,
    }
    fragment = urlencode({name: value for name, value in fields.items() if value}, quote_via=quote)
    return f"{address}#{fragment}"


def viewer_credentials(settings: Settings, seconds: int = DEFAULT_SECONDS) -> ViewerCredentials:
    """Credentials to hand to the browser: the local stack's keys; temporary credentials as they are; for long-term
    keys, temporary ones from STS `GetSessionToken` that last `seconds`.

    Limitations:
        credentials that are temporary already are handed over without their expiry (botocore does not publish
        it), so the page learns that they expired from the API's refusal.
    """
    found = settings.session.get_credentials()
    frozen = found.get_frozen_credentials() if found is not None else None
    if frozen is None or not frozen.access_key or not frozen.secret_key:
        raise NoCredentials("no AWS credentials were found to sign the dashboard in: configure them as for the AWS CLI")

    if settings.local or frozen.token:
        return ViewerCredentials(frozen.access_key, frozen.secret_key, frozen.token or None)

    sts = settings.session.client("sts", region_name=settings.region)
    issued = sts.get_session_token(DurationSeconds=seconds)["Credentials"]
    return ViewerCredentials(
        issued["AccessKeyId"], issued["SecretAccessKey"], issued["SessionToken"], issued["Expiration"]
    )
