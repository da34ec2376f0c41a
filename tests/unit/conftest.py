"""Shared fixtures of the unit tests: example folders read from disk, and factories of domain objects.

Everything here is pure: no AWS client is created and no network is used.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from workset_monitor.bucket import FolderSnapshot
from workset_monitor.models import Cluster, State, Workset

EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "examples" / "worksets"
PREFIX = "daylily_monitoring/active_worksets/"
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@dataclass(frozen=True)
class ExampleFolder:
    """A workset folder of examples/worksets as the validator sees it: keys relative to the folder, and two texts."""

    sizes: dict[str, int]
    sample_sheet: str | None
    work_file: str | None

    @property
    def keys(self) -> list[str]:
        return sorted(self.sizes)

    def snapshot(self) -> FolderSnapshot:
        """The folder as the S3 adapter would hand it to the registrar."""
        texts = {"stage_samples.tsv": self.sample_sheet, "daylily_work.yaml": self.work_file}
        return FolderSnapshot(
            sizes=dict(self.sizes), texts={name: text for name, text in texts.items() if text is not None}
        )


def _read_example(name: str) -> ExampleFolder:
    root = EXAMPLES_DIR / name
    assert root.is_dir(), f"example folder {root} is missing"
    sizes = {path.relative_to(root).as_posix(): path.stat().st_size for path in root.rglob("*") if path.is_file()}

    def text(file_name: str) -> str | None:
        path = root / file_name
        return path.read_text(encoding="utf-8") if path.is_file() else None

    return ExampleFolder(sizes=sizes, sample_sheet=text("stage_samples.tsv"), work_file=text("daylily_work.yaml"))


@pytest.fixture
def example() -> Callable[[str], ExampleFolder]:
    """Read an example workset folder from examples/worksets by its name."""
    return _read_example


@pytest.fixture
def now() -> datetime:
    """The tests' fixed "now"; worksets and clusters built by the factories are created at it."""
    return NOW


@pytest.fixture
def make_workset() -> Callable[..., Workset]:
    """Build a workset with plausible defaults; keyword arguments override any field."""

    def build(**overrides: Any) -> Workset:
        workset_id = overrides.get("workset_id", "ws-1")
        fields: dict[str, Any] = {
            "workset_id": workset_id,
            "bucket": "workset-bucket",
            "folder": f"{PREFIX}{workset_id}/",
            "state": State.READY,
            "created_at": NOW,
            "updated_at": NOW,
        }
        fields.update(overrides)
        return Workset(**fields)

    return build


@pytest.fixture
def make_cluster() -> Callable[..., Cluster]:
    """Build a live, active cluster that heartbeated at NOW; keyword arguments override any field."""

    def build(name: str, **overrides: Any) -> Cluster:
        fields: dict[str, Any] = {"name": name, "registered_at": NOW, "last_heartbeat_at": NOW}
        fields.update(overrides)
        return Cluster(**fields)

    return build
