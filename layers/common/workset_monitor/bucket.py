"""The S3 adapter: what a workset folder holds, read once for validation."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import boto3

from .layout import MAX_TEXT_FILE_BYTES, SAMPLE_SHEET, WORK_FILE
from .sentinels import SentinelPlan

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client
    from mypy_boto3_s3.type_defs import ObjectIdentifierTypeDef

MAX_FOLDER_OBJECTS = 100_000


@dataclass(frozen=True)
class FolderSnapshot:
    """A folder's object keys (relative to the folder) with sizes, the texts validation needs, and read problems."""

    sizes: dict[str, int]
    texts: dict[str, str] = field(default_factory=dict)
    problems: tuple[str, ...] = ()


class WorksetBucket:
    def __init__(self, bucket: str, client: S3Client | None = None) -> None:
        self.bucket = bucket
        self.client: S3Client = client or boto3.client("s3")

    def snapshot(self, folder: str) -> FolderSnapshot:
        """List the folder and read its sample sheet and work file.

        Limitations: a folder of more than MAX_FOLDER_OBJECTS objects is listed only that far.
        """
        sizes: dict[str, int] = {}
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=folder):
            for obj in page.get("Contents", []):
                sizes[obj["Key"][len(folder) :]] = obj["Size"]
            if len(sizes) >= MAX_FOLDER_OBJECTS:
                break

        texts: dict[str, str] = {}
        problems: list[str] = []
        for name in (SAMPLE_SHEET, WORK_FILE):
            if name not in sizes:
                continue
            if sizes[name] > MAX_TEXT_FILE_BYTES:
                problems.append(f"{name} is {sizes[name]} bytes, more than the {MAX_TEXT_FILE_BYTES} read")
                continue
            body = self.client.get_object(Bucket=self.bucket, Key=folder + name)["Body"].read()
            try:
                texts[name] = body.decode("utf-8")
            except UnicodeDecodeError as exc:
                problems.append(f"{name} is not UTF-8 text (byte {exc.start})")

        return FolderSnapshot(sizes=sizes, texts=texts, problems=tuple(problems))

    def apply(self, folder: str, plan: SentinelPlan) -> None:
        """Write and remove a folder's system sentinels: one PUT per sentinel written, one DeleteObjects call."""
        for name, body in sorted(plan.put.items()):
            self.client.put_object(Bucket=self.bucket, Key=folder + name, Body=body.encode(), ContentType="text/plain")
        if plan.remove:
            objects: list[ObjectIdentifierTypeDef] = [{"Key": folder + name} for name in sorted(plan.remove)]
            self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": objects, "Quiet": True})
