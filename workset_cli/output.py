"""Plain text for people: aligned tables, label-value blocks, and times shown compact (UTC) or relative to now."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

ELLIPSIS = "…"
CELL_WIDTH = 40
"""The most characters a cell shows unless its column says otherwise; longer ones end with an ellipsis."""


@dataclass(frozen=True)
class Column:
    header: str
    width: int = CELL_WIDTH
    right: bool = False
    """Numbers align right."""


def table(columns: Sequence[Column], rows: Iterable[Sequence[str]]) -> str:
    """Rows under their headers in aligned columns, two spaces apart, each cell on one line and cut to its width.

    Limitations:
        a cell's width is its number of characters, so East Asian wide letters and emoji push their row's later
        columns out of line.
    """
    cells = [[cell(text, column.width) for text, column in zip(row, columns, strict=True)] for row in rows]
    widths = [max([len(column.header), *(len(row[index]) for row in cells)]) for index, column in enumerate(columns)]

    lines = []
    for row in [[column.header for column in columns], *cells]:
        aligned = [
            text.rjust(width) if column.right else text.ljust(width)
            for text, width, column in zip(row, widths, columns, strict=True)
        ]
        lines.append("  ".join(aligned).rstrip())
    return "\n".join(lines)


def labelled(pairs: Iterable[tuple[str, str]]) -> str:
    """A block of `label  value` lines, the values aligned; pairs with an empty value are left out."""
    shown = [(label, value) for label, value in pairs if value]
    width = max((len(label) for label, _ in shown), default=0)
    return "\n".join(f"{label.ljust(width)}  {value}" for label, value in shown)


def cell(text: str, width: int = CELL_WIDTH) -> str:
    """A text as one table cell: white space runs (new lines included) made one space, cut to `width` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + ELLIPSIS


def parse_time(value: str | None) -> datetime | None:
    """An ISO-8601 time of the API, in UTC; None for None or a text that is no time."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def compact_time(value: str | None, now: datetime) -> str:
    """A time in UTC, as short as it can be next to `now`: `18:41:02` today, `Dec 01 18:41` this year, else the date."""
    at = parse_time(value)
    if at is None:
        return value or ""
    if at.date() == now.date():
        return at.strftime("%H:%M:%S")
    if at.year == now.year:
        return at.strftime("%b %d %H:%M")
    return at.strftime("%Y-%m-%d")


def ago(value: str | None, now: datetime) -> str:
    """A time relative to `now`, in its largest unit: `5m ago`, or `in 40s` for a time to come."""
    at = parse_time(value)
    if at is None:
        return value or ""
    seconds = (now - at).total_seconds()
    return f"{span(seconds, units=1)} ago" if seconds >= 0 else f"in {span(-seconds, units=1)}"


def span(seconds: float, units: int = 2) -> str:
    """A duration in its largest `units` units (one or two): `12s`, `5m03s`, `2h05m`, `3d04h`; `5m`, `2h`, `3d`."""
    whole = int(seconds)
    days, rest = divmod(whole, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, secs = divmod(rest, 60)
    parts = [(days, "d"), (hours, "h"), (minutes, "m"), (secs, "s")]
    first = next((index for index, (count, _) in enumerate(parts) if count), len(parts) - 1)
    shown = parts[first : first + units]
    return "".join(f"{count:02d}{unit}" if index else f"{count}{unit}" for index, (count, unit) in enumerate(shown))
