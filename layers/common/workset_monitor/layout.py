"""The workset folder: sentinel names, required files, the sample sheet and the work file. Pure, no AWS.

A workset is a folder directly under the deployment's prefix::

    <prefix><workset-name>/
      daylily.ready          sentinel: "pick me up"
      stage_samples.tsv      sample sheet, tab separated, the 20 columns of SAMPLE_SHEET_COLUMNS
      daylily_work.yaml      what to run (see WORK_FILE_KEYS for the keys and their aliases)
      daylily_info.yaml      free-form info; must exist
      sample_data/           at least one object below it
"""

from __future__ import annotations

import csv
import io
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from pydantic import ValidationError

from .models import AWS_REGION_PATTERN, AWS_ZONE_PATTERN, Priority, WorkSpec

SENTINEL_READY = "daylily.ready"
SENTINEL_IGNORE = "daylily.ignore"
SENTINEL_LOCK = "daylily.lock"
SENTINEL_IN_PROGRESS = "daylily.in_progress"
SENTINEL_COMPLETE = "daylily.complete"
SENTINEL_ERROR = "daylily.error"

TRIGGER_SENTINELS = frozenset({SENTINEL_READY, SENTINEL_IGNORE})
"""Sentinels people drop; the register function reacts to these only, never to the ones the system writes."""

SYSTEM_SENTINELS = frozenset({SENTINEL_LOCK, SENTINEL_IN_PROGRESS, SENTINEL_COMPLETE, SENTINEL_ERROR})

SAMPLE_SHEET = "stage_samples.tsv"
WORK_FILE = "daylily_work.yaml"
INFO_FILE = "daylily_info.yaml"
SAMPLE_DATA = "sample_data/"

SAMPLE_SHEET_COLUMNS: tuple[str, ...] = (
    "RUN_ID",
    "SAMPLE_ID",
    "EXPERIMENTID",
    "SAMPLE_TYPE",
    "LIB_PREP",
    "SEQ_VENDOR",
    "SEQ_PLATFORM",
    "LANE",
    "SEQBC_ID",
    "PATH_TO_CONCORDANCE_DATA_DIR",
    "R1_FQ",
    "R2_FQ",
    "STAGE_DIRECTIVE",
    "STAGE_TARGET",
    "SUBSAMPLE_PCT",
    "IS_POS_CTRL",
    "IS_NEG_CTRL",
    "N_X",
    "N_Y",
    "EXTERNAL_SAMPLE_ID",
)

WORK_FILE_KEYS: dict[str, tuple[str, ...]] = {
    "run_command": ("dy-r", "dy_r", "run", "run_cmd", "run-command"),
    "clone_args": ("day-clone", "day_clone_args", "clone"),
    "export_uri": ("export_uri",),
    "workdir_name": ("workdir_name",),
    "budget": ("budget",),
    "cluster_name": ("cluster_name",),
    "region": ("region",),
    "availability_zone": ("availability_zone", "az"),
    "priority": ("priority",),
    "depends_on": ("depends_on",),
    "deadline": ("deadline",),
    "max_attempts": ("max_attempts",),
    "pipeline": ("pipeline",),
    "coverage": ("coverage",),
    "vcpus": ("vcpus",),
}
"""Each WorkSpec field and the keys of `daylily_work.yaml` that may carry it, the canonical key first."""

MAX_REASONS = 50
MAX_REASON_CHARS = 500
"""A folder's reasons are stored on the workset item, which DynamoDB limits to 400 KB: at most 50 of 500 characters."""

MAX_RUN_COMMAND_CHARS = 8192
MAX_VALUE_CHARS = 2048
"""A `dy-r` longer than this is surely not a command line."""

MAX_ATTEMPTS_LIMIT = 10
"""The most attempts a work file may allow; each one may cost a cluster's worth of compute."""

MAX_COVERAGE = 10_000
MAX_VCPUS = 100_000
"""Bounds of the work file's run-size hints (`coverage`, `vcpus`): beyond them a value is a typo."""

MAX_WORKSET_NAME_BYTES = 512
MAX_TEXT_FILE_BYTES = 5 * 1024 * 1024
"""The sample sheet and work file are read whole; larger ones are refused rather than read."""


@dataclass(frozen=True)
class SentinelKey:
    """An S3 key that is a sentinel of a workset folder."""

    workset_id: str
    folder: str
    sentinel: str


@dataclass(frozen=True)
class FolderReport:
    """What validating a folder found: the work to run, the samples, and every reason it is invalid."""

    work: WorkSpec | None
    samples: tuple[Mapping[str, str], ...] = ()
    reasons: tuple[str, ...] = ()

    @property
    def valid(self) -> bool:
        return not self.reasons and self.work is not None

    @property
    def sample_count(self) -> int:
        return len({row["SAMPLE_ID"] for row in self.samples})


@dataclass
class _Findings:
    """The reasons found so far: each cut to MAX_REASON_CHARS, and at most MAX_REASONS of them, then a count."""

    reasons: list[str] = field(default_factory=list)
    dropped: int = 0

    def add(self, reason: str) -> None:
        if len(self.reasons) >= MAX_REASONS:
            self.dropped += 1
            return
        self.reasons.append(reason if len(reason) <= MAX_REASON_CHARS else reason[: MAX_REASON_CHARS - 3] + "...")

    def all(self) -> tuple[str, ...]:
        more = (f"... and {self.dropped} more problems",) if self.dropped else ()
        return (*self.reasons, *more)


def parse_sentinel_key(key: str, prefix: str) -> SentinelKey | None:
    """The workset and sentinel a decoded key names, or None unless it is a sentinel directly in a workset folder."""
    if not key.startswith(prefix):
        return None

    parts = key[len(prefix) :].split("/")
    if len(parts) != 2:
        return None

    name, sentinel = parts
    if sentinel not in TRIGGER_SENTINELS | SYSTEM_SENTINELS or workset_name_problem(name) is not None:
        return None
    # NOTE: the id is the name in Unicode's composed form (NFC), so "café" typed on Linux and written by macOS
    # (decomposed, NFD) is one workset; the folder keeps the key's own bytes.
    return SentinelKey(workset_id=unicodedata.normalize("NFC", name), folder=f"{prefix}{name}/", sentinel=sentinel)


def sentinel_key_problem(key: str, prefix: str) -> str:
    """Why a decoded key is not a sentinel of a workset folder (for a key `parse_sentinel_key` refused)."""
    relative = key.removeprefix(prefix)
    if relative == key:
        return f"outside the workset prefix {prefix}"
    folder, _, _ = relative.rpartition("/")
    if "/" in folder:
        return "a workset is a folder directly under the prefix; this one is nested deeper"
    return workset_name_problem(folder) or "not a sentinel people drop"


def workset_name_problem(name: str) -> str | None:
    """Why a folder name cannot be a workset id, or None. Spaces and non-ASCII letters are legal."""
    if not name or name.strip() != name:
        return "a workset name must be non-empty and not start or end with white space"
    if name in (".", ".."):
        return "a workset name cannot be . or .."
    if any(unicodedata.category(ch) == "Cc" for ch in name):
        return "a workset name cannot hold control characters"
    if len(name.encode("utf-8")) > MAX_WORKSET_NAME_BYTES:
        return f"a workset name is at most {MAX_WORKSET_NAME_BYTES} bytes"
    return None


def validate_folder(
    relative_keys: Iterable[str],
    sample_sheet: str | None,
    work_file: str | None,
) -> FolderReport:
    """Check a workset folder against the layout rules and report every problem, not only the first.

    `relative_keys` are the folder's object keys relative to the folder; `sample_sheet` and `work_file` are the
    texts of `stage_samples.tsv` and `daylily_work.yaml`, or None when they are absent.
    """
    findings = _Findings()
    keys = set(relative_keys)

    if SAMPLE_SHEET not in keys:
        findings.add(f"{SAMPLE_SHEET} is missing")
    if WORK_FILE not in keys:
        findings.add(f"{WORK_FILE} is missing")
    if INFO_FILE not in keys:
        findings.add(f"{INFO_FILE} is missing")
    if not any(key.startswith(SAMPLE_DATA) and key != SAMPLE_DATA for key in keys):
        findings.add(f"{SAMPLE_DATA} holds no object")

    samples = _check_sample_sheet(sample_sheet, keys, findings) if sample_sheet is not None else ()
    work = _check_work_file(work_file, findings) if work_file is not None else None

    return FolderReport(work=work, samples=samples, reasons=findings.all())


def _check_sample_sheet(text: str, keys: set[str], findings: _Findings) -> tuple[Mapping[str, str], ...]:
    # NOTE: a TSV sample sheet does not quote its fields, so quotes are taken literally (QUOTE_NONE).
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff")), delimiter="\t", quoting=csv.QUOTE_NONE)
    try:
        rows = [(reader.line_num, row) for row in reader if any(cell.strip() for cell in row)]
    except csv.Error as exc:
        findings.add(f"{SAMPLE_SHEET} line {reader.line_num} cannot be read: {exc}")
        return ()
    if not rows:
        findings.add(f"{SAMPLE_SHEET} is empty")
        return ()

    header = [column.strip() for column in rows[0][1]]
    header_valid = tuple(header) == SAMPLE_SHEET_COLUMNS
    if not header_valid:
        findings.add(_header_problem(header))

    samples: list[Mapping[str, str]] = []
    seen: set[tuple[str, str, str]] = set()
    for line_number, row in rows[1:]:
        if len(row) != len(SAMPLE_SHEET_COLUMNS):
            findings.add(f"{SAMPLE_SHEET} line {line_number}: {len(row)} fields, expected {len(SAMPLE_SHEET_COLUMNS)}")
            continue

        if not header_valid:
            continue  # the columns' meaning is unknown; the header's problem is reported once

        sample = {column: value.strip() for column, value in zip(SAMPLE_SHEET_COLUMNS, row, strict=True)}
        _check_sample_row(sample, line_number, keys, findings)

        identity = (sample["RUN_ID"], sample["SAMPLE_ID"], sample["LANE"])
        if identity in seen:
            findings.add(f"{SAMPLE_SHEET} line {line_number}: RUN_ID, SAMPLE_ID and LANE repeat an earlier row")
        seen.add(identity)
        samples.append(sample)

    if len(rows) == 1:
        findings.add(f"{SAMPLE_SHEET} has a header but no sample rows")
    return tuple(samples) if header_valid else ()


def _header_problem(header: list[str]) -> str:
    expected = list(SAMPLE_SHEET_COLUMNS)
    missing = [column for column in expected if column not in header]
    unexpected = [column for column in header if column not in expected]

    details = [f"{len(header)} columns, expected {len(expected)}"]
    if missing:
        details.append("missing " + ", ".join(missing))
    if unexpected:
        details.append("unexpected " + ", ".join(unexpected))
    if not missing and not unexpected:
        details.append("columns out of order")
    return f"{SAMPLE_SHEET} header: " + "; ".join(details)


def _check_sample_row(sample: Mapping[str, str], line_number: int, keys: set[str], findings: _Findings) -> None:
    where = f"{SAMPLE_SHEET} line {line_number}"
    if not sample["SAMPLE_ID"]:
        findings.add(f"{where}: SAMPLE_ID is empty")
    if not sample["RUN_ID"]:
        findings.add(f"{where}: RUN_ID is empty")

    for column in ("R1_FQ", "R2_FQ"):
        value = sample[column]
        if not value and column == "R2_FQ":
            continue  # single-end data has no R2
        problem = _fastq_location_problem(value, keys)
        if problem:
            findings.add(f"{where}: {column} {problem}")


def _fastq_location_problem(value: str, keys: set[str]) -> str | None:
    if value.startswith("s3://"):
        bucket, _, key = value[len("s3://") :].partition("/")
        return None if bucket and key else f"{value!r} is not a full s3://bucket/key URI"

    relative = value.removeprefix("./")
    if not relative.startswith(SAMPLE_DATA):
        return f"{value!r} is neither an s3:// URI nor a path under {SAMPLE_DATA}"
    if relative not in keys:
        return f"{value!r} is not in the folder"
    return None


def _check_work_file(text: str, findings: _Findings) -> WorkSpec | None:
    # NOTE: imported here, not at the top: only the register function reads work files, and every other function
    # imports this module for its names; PyYAML would add about 20 ms to their cold starts.
    import yaml

    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        findings.add(f"{WORK_FILE} is not valid YAML{where}")
        return None
    except ValueError as exc:  # a date-shaped scalar that is no date, e.g. 2027-02-30
        findings.add(f"{WORK_FILE} holds a value YAML cannot read: {exc}")
        return None

    if not isinstance(document, dict):
        findings.add(f"{WORK_FILE} must be a mapping of keys to values")
        return None

    fields: dict[str, Any] = {}
    for name, aliases in WORK_FILE_KEYS.items():
        given = [alias for alias in aliases if alias in document]
        if len(given) > 1:
            findings.add(f"{WORK_FILE}: {' and '.join(given)} say the same thing; give one")
        if given and document[given[0]] is not None:
            fields[name] = document[given[0]]

    return _work_spec(fields, findings)


def _work_spec(fields: dict[str, Any], findings: _Findings) -> WorkSpec | None:
    problems_before = len(findings.reasons)
    run_command = fields.get("run_command")
    if run_command is None:
        findings.add(f"{WORK_FILE}: the run command (dy-r) is missing")
    elif not isinstance(run_command, str) or not run_command.strip():
        findings.add(f"{WORK_FILE}: dy-r must be a non-empty string")
    elif len(run_command) > MAX_RUN_COMMAND_CHARS:
        findings.add(f"{WORK_FILE}: dy-r is {len(run_command)} characters, more than {MAX_RUN_COMMAND_CHARS}")

    for name in ("clone_args", "export_uri", "workdir_name", "budget", "cluster_name", "region", "availability_zone"):
        if name in fields and not isinstance(fields[name], str | int | float):
            findings.add(f"{WORK_FILE}: {WORK_FILE_KEYS[name][0]} must be a single value")
        elif name in fields and len(str(fields[name])) > MAX_VALUE_CHARS:
            findings.add(f"{WORK_FILE}: {WORK_FILE_KEYS[name][0]} is longer than {MAX_VALUE_CHARS} characters")
        elif name in fields:
            fields[name] = str(fields[name])

    if "priority" in fields and not (isinstance(fields["priority"], str) and fields["priority"] in set(Priority)):
        choices = "|".join(p.value for p in Priority)
        findings.add(f"{WORK_FILE}: priority {_shown(fields['priority'])} is not one of {choices}")

    if "depends_on" in fields:
        depends_on = fields["depends_on"]
        depends_on = [depends_on] if isinstance(depends_on, str) else depends_on
        if not isinstance(depends_on, list) or not all(isinstance(name, str) and name for name in depends_on):
            findings.add(f"{WORK_FILE}: depends_on must be a list of workset names")
        else:
            fields["depends_on"] = tuple(depends_on)

    for name, pattern, example in (
        ("region", AWS_REGION_PATTERN, "us-west-2"),
        ("availability_zone", AWS_ZONE_PATTERN, "us-west-2b"),
    ):
        value = fields.get(name)
        if isinstance(value, str) and len(value) <= MAX_VALUE_CHARS and not re.fullmatch(pattern, value):
            findings.add(f"{WORK_FILE}: {WORK_FILE_KEYS[name][0]} {value!r} is not an AWS name such as {example}")

    if "pipeline" in fields and not (isinstance(fields["pipeline"], str) and 0 < len(fields["pipeline"]) <= 64):
        findings.add(f"{WORK_FILE}: pipeline must be a short name such as wgs or wes")

    if "coverage" in fields:
        coverage = fields["coverage"]
        if isinstance(coverage, bool) or not isinstance(coverage, int | float) or not 0 < coverage <= MAX_COVERAGE:
            findings.add(f"{WORK_FILE}: coverage must be a number of x above 0 and at most {MAX_COVERAGE}")

    if "vcpus" in fields:
        vcpus = fields["vcpus"]
        if isinstance(vcpus, bool) or not isinstance(vcpus, int) or not 1 <= vcpus <= MAX_VCPUS:
            findings.add(f"{WORK_FILE}: vcpus must be a whole number from 1 to {MAX_VCPUS}")

    if "max_attempts" in fields:
        attempts = fields["max_attempts"]
        if isinstance(attempts, bool) or not isinstance(attempts, int) or not 1 <= attempts <= MAX_ATTEMPTS_LIMIT:
            findings.add(f"{WORK_FILE}: max_attempts must be a whole number from 1 to {MAX_ATTEMPTS_LIMIT}")

    if "deadline" in fields:
        deadline = _parse_deadline(fields["deadline"])
        if deadline is None:
            findings.add(f"{WORK_FILE}: deadline {_shown(fields['deadline'])} is not an ISO-8601 date or time")
        fields["deadline"] = deadline

    if len(findings.reasons) > problems_before:
        return None
    try:
        return WorkSpec(**fields)
    except ValidationError as exc:
        findings.add(f"{WORK_FILE}: {exc.errors()[0]['msg']}")
        return None


def _shown(value: object) -> str:
    """A value of the work file as a reason shows it: a short scalar quoted, anything else by its kind only (the repr
    of a YAML structure built from aliases can be gigabytes)."""
    if isinstance(value, str | int | float | bool):
        text = repr(value)
        return text if len(text) <= 60 else text[:57] + "..."
    return "a list" if isinstance(value, list) else "a mapping" if isinstance(value, dict) else type(value).__name__


def _parse_deadline(value: object) -> datetime | None:
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, date):
        parsed = datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            return None
    else:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
