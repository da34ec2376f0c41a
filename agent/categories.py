"""Which error category a failed run belongs to, from its exit status and the last lines of its log.

The category decides what happens next: `transient` and `resource` errors are retried by the scheduler with backoff,
`configuration`, `data` and `permanent` ones wait for a person. The rules are one small table each, read top down;
the first that matches wins.
"""

from __future__ import annotations

import re

EXIT_STATUS_RULES: tuple[tuple[frozenset[int], str, str], ...] = (
    (frozenset({126, 127}), "configuration", "the run command is not executable or not found"),
    (frozenset({75}), "transient", "the run asked to be tried again later (EX_TEMPFAIL)"),
    (frozenset({137, 143, -9, -15}), "resource", "the run was killed (out of memory, or a reclaimed node)"),
    (frozenset({78}), "configuration", "the run found its configuration wrong (EX_CONFIG)"),
    (frozenset({65, 66}), "data", "the run found its input wrong or missing (EX_DATAERR, EX_NOINPUT)"),
)
"""(exit statuses, category, why): the statuses that say on their own what went wrong. A negative status is the
signal that killed a run the agent started itself; 128 + the signal is what a shell reports for it."""

LOG_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(r"out of memory|oom[- ]?kill|\bKilled\b|MemoryError|Cannot allocate memory|std::bad_alloc", re.I),
        "resource",
    ),
    (re.compile(r"No space left on device|Disk quota exceeded", re.I), "resource"),
    (
        re.compile(
            r"spot (instance )?(interruption|reclaim)|capacity reclaimed|InsufficientInstanceCapacity|throttl"
            r"|RequestLimitExceeded|SlowDown|Connection (reset|timed out|refused)|temporarily unavailable",
            re.I,
        ),
        "transient",
    ),
    (
        re.compile(r"command not found|invalid (config|configuration)|missing (config|parameter)|yaml\.\w*Error", re.I),
        "configuration",
    ),
    (
        re.compile(r"No such file or directory|FileNotFoundError|NoSuchKey|truncated (file|gzip)|corrupt", re.I),
        "data",
    ),
)
"""(pattern, category): what the run's last log lines say went wrong, when the exit status alone does not."""

DEFAULT_CATEGORY = "permanent"


def error_category(exit_code: int | None, log_lines: list[str]) -> str:
    """The error category of a run that ended with `exit_code` (None: unknown) and whose log ended with `log_lines`.

    Limitations: the log rules read only the lines given (the agent passes the last 50), and match words, so a
    pipeline that prints "No such file or directory" as a warning before failing for another reason is filed as
    `data`."""
    for statuses, category, _why in EXIT_STATUS_RULES:
        if exit_code in statuses:
            return category

    for line in reversed(log_lines):
        for pattern, category in LOG_RULES:
            if pattern.search(line):
                return category

    if exit_code is not None and exit_code < 0:
        return "resource"  # killed by another signal
    return DEFAULT_CATEGORY
