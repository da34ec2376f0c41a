"""Where the CLI finds the API, the credentials and the bucket.

In order: the flags, then the environment (`WORKSET_API_URL`, `WORKSET_BUCKET`, `WORKSET_PREFIX`, the standard AWS
variables and profiles), then, when no API URL is given at all, `.local/stack.json` in the current directory, which
`make local` writes: the local stack's API, its emulator (for S3) and its credentials.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import boto3

from agent.client import DEFAULT_REGION, ApiClient, signing_region

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

LOCAL_STACK_FILE = Path(".local") / "stack.json"
DEFAULT_PREFIX = "daylily_monitoring/active_worksets/"
"""The template's default `WorksetPrefix`: the register function only sees folders under the deployment's prefix."""

HOW_TO_CONFIGURE = (
    "no API URL: pass --api-url or set WORKSET_API_URL (the stack's ApiUrl output), "
    "or run where `make local` wrote .local/stack.json"
)


class ConfigError(Exception):
    """The CLI is not told, or told wrongly, where the API or the bucket is."""


@dataclass(frozen=True)
class Settings:
    """Everything the commands need to reach the product."""

    api_url: str
    region: str
    session: boto3.Session
    bucket: str | None = None
    prefix: str = DEFAULT_PREFIX
    s3_endpoint: str | None = None
    """The local stack's emulator; None for AWS (or for the standard AWS_ENDPOINT_URL, which boto3 reads itself)."""
    local: bool = False
    """Whether this is the local stack (from `.local/stack.json`), which knows only its own keys."""

    def api(self) -> ApiClient:
        # NOTE: two retries, not the agent's four: a person waits at the prompt, and an action (cancel, retry...)
        # retried after a lost answer may come back as a 409 for the state it already reached.
        return ApiClient(self.api_url, region=self.region, session=self.session, retries=2)

    def s3(self) -> S3Client:
        return self.session.client("s3", region_name=self.region, endpoint_url=self.s3_endpoint)


def resolve(
    *,
    api_url: str | None,
    region: str | None,
    bucket: str | None,
    prefix: str | None,
    environ: Mapping[str, str],
    cwd: Path,
) -> Settings:
    """The settings from the flags given (None when not given), the environment, or the local stack's file."""
    api_url = api_url or environ.get("WORKSET_API_URL")
    bucket = bucket or environ.get("WORKSET_BUCKET")
    prefix = prefix if prefix is not None else environ.get("WORKSET_PREFIX")

    stack_file = cwd / LOCAL_STACK_FILE
    if not api_url and stack_file.is_file():
        return _local_stack(_read_stack(stack_file), region=region, bucket=bucket, prefix=prefix)
    if not api_url:
        raise ConfigError(HOW_TO_CONFIGURE)

    _check_url(api_url)
    session = boto3.Session()
    region = signing_region(api_url, region, environ=environ, session=session)
    return Settings(api_url, region, session, bucket=bucket, prefix=_folder_prefix(prefix, DEFAULT_PREFIX))


def _local_stack(stack: Mapping[str, Any], *, region: str | None, bucket: str | None, prefix: str | None) -> Settings:
    if not stack.get("api_url"):
        raise ConfigError(f"{LOCAL_STACK_FILE} names no API URL: its stack runs no API function")
    _check_url(stack["api_url"])

    region = region or stack.get("region") or DEFAULT_REGION
    credentials = stack.get("credentials", {})
    session = boto3.Session(
        aws_access_key_id=credentials.get("aws_access_key_id"),
        aws_secret_access_key=credentials.get("aws_secret_access_key"),
        region_name=region,
    )
    return Settings(
        stack["api_url"],
        region,
        session,
        bucket=bucket or stack.get("bucket"),
        prefix=_folder_prefix(prefix, stack.get("prefix") or DEFAULT_PREFIX),
        s3_endpoint=stack.get("emulator_url"),
        local=True,
    )


def _read_stack(path: Path) -> Mapping[str, Any]:
    try:
        stack = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {LOCAL_STACK_FILE}: {exc}") from exc
    if not isinstance(stack, dict):
        raise ConfigError(f"{LOCAL_STACK_FILE} is not a JSON object")
    return stack


def _check_url(api_url: str) -> None:
    url = urlsplit(api_url)
    if url.scheme not in ("http", "https") or not url.netloc:
        raise ConfigError(
            f"the API URL must be an http(s) URL, such as https://<api-id>.execute-api.<region>.amazonaws.com/dev "
            f"(not {api_url!r})"
        )


def _folder_prefix(prefix: str | None, default: str) -> str:
    """A key prefix under which folders are workset folders: empty, or ending with one slash."""
    prefix = default if prefix is None else prefix.lstrip("/")
    return prefix if not prefix or prefix.endswith("/") else prefix + "/"
