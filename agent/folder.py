"""The workset's folder in S3, as the agent uses it: copied into the run's work directory, and the run's log tail
written back next to it.

The agent reads S3 with its own credentials (the standard AWS chain; `AWS_ENDPOINT_URL_S3` or `AWS_ENDPOINT_URL`
points it at an emulator, as the local stack's demo does).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Protocol

import boto3

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

AGENT_LOG_PREFIX = "logs/workset-agent."
"""Where the agent writes each attempt's log tail in the folder: `logs/workset-agent.attempt-<n>.log`. The register
function's trigger (`daylily.ready`, `daylily.ignore`) and the mirrored sentinels (`daylily.lock`, ...) never see it."""


def agent_log_key(folder: str, attempt: int) -> str:
    return f"{folder}{AGENT_LOG_PREFIX}attempt-{attempt}.log"


def is_copied(relative_key: str) -> bool:
    """Whether an object of the folder goes into the work directory: not the sentinels (`daylily.*`, which say the
    folder's state, not what to run), nor the agent's own earlier logs, nor "folder" markers."""
    if not relative_key or relative_key.endswith("/"):
        return False
    name = PurePosixPath(relative_key).name
    return not name.startswith("daylily.") and not relative_key.startswith(AGENT_LOG_PREFIX)


class WorksetFolders(Protocol):
    """What the agent does with workset folders; tests pass a fake."""

    def copy(self, bucket: str, folder: str, workdir: Path, keep_alive: Callable[[], None]) -> int:
        """Copy the folder's objects below `workdir`; call `keep_alive` between objects. The count copied."""
        ...

    def put_log(self, bucket: str, key: str, text: str) -> None: ...


class S3WorksetFolders:
    def __init__(self, s3: S3Client | None = None) -> None:
        self.s3 = s3 if s3 is not None else boto3.client("s3")

    def copy(self, bucket: str, folder: str, workdir: Path, keep_alive: Callable[[], None]) -> int:
        """Limitations: objects are copied one at a time, whole; a folder holding the sample data itself (rather than
        `s3://` URIs in the sheet) is copied in full before the run starts."""
        copied = 0
        paginator = self.s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket, Prefix=folder):
            for listed in page.get("Contents", []):
                relative = listed["Key"][len(folder) :]
                if not is_copied(relative):
                    continue
                target = (workdir / relative).resolve()
                if not target.is_relative_to(workdir.resolve()):
                    continue  # a key with `..` in it stays out of the work directory
                target.parent.mkdir(parents=True, exist_ok=True)
                self.s3.download_file(bucket, listed["Key"], str(target))
                copied += 1
                keep_alive()
        return copied

    def put_log(self, bucket: str, key: str, text: str) -> None:
        self.s3.put_object(Bucket=bucket, Key=key, Body=text.encode("utf-8"), ContentType="text/plain; charset=utf-8")


def describe_s3_error(exc: Any) -> tuple[str, str]:
    """(category, reason) of a failure to copy the folder: missing or forbidden is `configuration` (the agent's
    credentials or the bucket are wrong), anything else (network, throttling, 5xx) `transient`."""
    code = ""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = str(response.get("Error", {}).get("Code", ""))
    if code in ("AccessDenied", "NoSuchBucket", "403", "404", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
        return "configuration", f"the workset folder could not be read ({code}): {exc}"
    return "transient", f"the workset folder could not be copied: {exc}"
