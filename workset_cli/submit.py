"""`workset submit`: check a workset folder on disk by the register function's own rules, then upload it to S3 with
the `daylily.ready` sentinel last, since that sentinel is what registers the workset.

The rules are the domain package's (`workset_monitor.layout`), so a folder refused here would be registered in
`error` by the register function, for the same reasons.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from workset_monitor.layout import (
    MAX_TEXT_FILE_BYTES,
    SAMPLE_SHEET,
    SENTINEL_READY,
    SYSTEM_SENTINELS,
    TRIGGER_SENTINELS,
    WORK_FILE,
    validate_folder,
    workset_name_problem,
)

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client


@dataclass(frozen=True)
class LocalFolder:
    """A workset folder on disk: its files by key relative to the folder, without the sentinels found in it."""

    path: Path
    files: dict[str, Path]
    sentinels: tuple[str, ...] = ()
    """Sentinels in the folder, left out: the ready one is written fresh, last; the others are the system's."""

    @property
    def size(self) -> int:
        return sum(path.stat().st_size for path in self.files.values())


def read_folder(path: Path) -> LocalFolder:
    """The folder's files; raises NotADirectoryError when `path` is not a folder."""
    if not path.is_dir():
        raise NotADirectoryError(f"{path} is not a folder")

    files: dict[str, Path] = {}
    sentinels: list[str] = []
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        key = file.relative_to(path).as_posix()
        if key in TRIGGER_SENTINELS | SYSTEM_SENTINELS:
            sentinels.append(key)
        else:
            files[key] = file
    return LocalFolder(path=path, files=files, sentinels=tuple(sentinels))


def folder_problems(folder: LocalFolder, workset_id: str) -> list[str]:
    """Every reason the register function would put this folder in `error`, as it would word them."""
    problems = [problem] if (problem := workset_name_problem(workset_id)) else []

    texts: dict[str, str] = {}
    for name in (SAMPLE_SHEET, WORK_FILE):
        file = folder.files.get(name)
        if file is None:
            continue
        if file.stat().st_size > MAX_TEXT_FILE_BYTES:
            problems.append(f"{name} is {file.stat().st_size} bytes, more than the {MAX_TEXT_FILE_BYTES} read")
            continue
        try:
            texts[name] = file.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            problems.append(f"{name} is not UTF-8 text (byte {exc.start})")

    report = validate_folder(folder.files, texts.get(SAMPLE_SHEET), texts.get(WORK_FILE))
    return [*problems, *report.reasons]


def upload(s3: S3Client, bucket: str, key_prefix: str, folder: LocalFolder, progress: Progress) -> None:
    """Upload the folder's files under `key_prefix`, then the ready sentinel (body: the time), once all are there."""
    for number, (key, path) in enumerate(folder.files.items(), start=1):
        progress.start(f"[{number}/{len(folder.files)}] {key}", path.stat().st_size)
        s3.upload_file(str(path), bucket, key_prefix + key, Callback=progress.advance)
        progress.finish()

    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    s3.put_object(Bucket=bucket, Key=key_prefix + SENTINEL_READY, Body=stamp.encode(), ContentType="text/plain")


def uploaded_text(folder: LocalFolder, uri: str) -> str:
    return f"uploaded {len(folder.files)} files ({size_text(folder.size)}) to {uri}, then {SENTINEL_READY}"


class Progress:
    """Upload progress on stderr: on a terminal, the current file's bytes and percent, redrawn as they go; otherwise
    one line per file once it is uploaded. Stdout is left alone, for the command's answer."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.live = stream.isatty()
        self._lock = threading.Lock()  # boto3 calls back from its transfer threads
        self._name = ""
        self._size = 0
        self._sent = 0

    def start(self, name: str, size: int) -> None:
        self._name, self._size, self._sent = name, size, 0
        if self.live:
            self._draw("\r\033[K")

    def advance(self, sent: int) -> None:
        with self._lock:
            self._sent += sent
            if self.live:
                self._draw("\r\033[K")

    def finish(self) -> None:
        self._sent = self._size
        self._draw("\r\033[K" if self.live else "")
        self.stream.write("\n")
        self.stream.flush()

    def _draw(self, start: str) -> None:
        percent = 100 * self._sent // self._size if self._size else 100
        self.stream.write(f"{start}{self._name}  {size_text(self._sent)} of {size_text(self._size)}  {percent:3d}%")
        self.stream.flush()


def size_text(count: int) -> str:
    """A number of bytes for people: `812 B`, `12.3 KiB`, `1.2 GiB`."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{count} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")
