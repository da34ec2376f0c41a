"""HTTP delivery shared by the Linear and webhook channels: bounded retries with backoff, within the invocation.

A delivery tries at most `attempts` times, each request with `timeout` seconds to connect and as long to wait for
each read. Between attempts it waits what the server asked (`Retry-After`, or a rate-limit reset) or an exponential
backoff with jitter, never more than `max_wait`; and never past the invocation's deadline, so a slow or failing
endpoint fails this delivery in time for the function to report it (Lambda then retries the record later).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TypeVar
from urllib.parse import urlsplit

import requests

from ..observability import logger

T = TypeVar("T")

RETRYABLE_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
USER_AGENT = "workset-monitor/1"
MIN_ATTEMPT_SECONDS = 0.2
"""An attempt is not started with less time than this left before the deadline."""


class DeliveryFailed(Exception):
    """A channel could not deliver an event. `transient` failures may pass by themselves (outages, rate limits)."""

    transient = False


class TransientFailure(DeliveryFailed):
    """Worth another attempt: a timeout, a refused connection, a 5xx, a rate limit. `retry_after` is the server's
    own wait, in seconds, when it said one."""

    transient = True

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentFailure(DeliveryFailed):
    """Another attempt now would fail the same way: a 4xx, an error the API says is the request's fault."""


@dataclass
class Deadline:
    """When the current invocation must stop starting work; None while there is no limit (outside Lambda)."""

    clock: Callable[[], float] = field(default=time.monotonic)
    at: float | None = None

    def start(self, seconds: float | None) -> None:
        self.at = None if seconds is None else self.clock() + seconds

    def remaining(self) -> float | None:
        return None if self.at is None else self.at - self.clock()


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 3
    timeout: float = 4.0
    max_wait: float = 5.0
    backoff_base: float = 0.5


def with_retries(
    attempt: Callable[[float], T],
    policy: RetryPolicy,
    deadline: Deadline,
    *,
    channel: str,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call `attempt(timeout)` until it returns, retrying TransientFailure within the policy and the deadline.

    Raises the last TransientFailure when attempts, the longest wait or the deadline run out, and a PermanentFailure
    at once.

    Limitations:
        `timeout` bounds connecting and each read, not a whole response: a server trickling bytes can take longer.
    """
    last: TransientFailure | None = None
    for number in range(1, policy.attempts + 1):
        remaining = deadline.remaining()
        if remaining is not None and remaining < MIN_ATTEMPT_SECONDS:
            break
        timeout = policy.timeout if remaining is None else min(policy.timeout, remaining)

        try:
            return attempt(timeout)
        except TransientFailure as exc:
            last = exc
        if number == policy.attempts:
            break

        wait = last.retry_after if last.retry_after is not None else _backoff(policy, number)
        remaining = deadline.remaining()
        if wait > policy.max_wait or (remaining is not None and wait + MIN_ATTEMPT_SECONDS > remaining):
            raise TransientFailure(
                f"{last}; the next attempt would be in {wait:.1f} s, later than this invocation can wait",
                retry_after=last.retry_after,
            ) from last
        logger.info(
            "delivery attempt failed", channel=channel, attempt=number, wait_seconds=round(wait, 2), error=str(last)
        )
        sleep(wait)

    if last is None:
        raise TransientFailure("no time left in this invocation to try")
    raise last


def post(
    session: requests.Session, url: str, *, body: bytes, headers: Mapping[str, str], timeout: float
) -> requests.Response:
    """One POST; connection failures and timeouts become TransientFailure. Redirects are not followed.

    A failure names the host and the kind of failure only, never the URL: requests and urllib3 write the URL, path
    and query included, into their messages, and a URL can be a credential (a Slack webhook's is). The exception is
    not chained for the same reason.
    """
    where = _host(url)
    try:
        return session.post(
            url,
            data=body,
            headers={"Content-Type": "application/json", "User-Agent": USER_AGENT, **headers},
            timeout=(timeout, timeout),
            allow_redirects=False,
        )
    except requests.Timeout:
        raise TransientFailure(f"no answer from {where} within {timeout:.1f} s") from None
    except requests.ConnectionError as exc:
        raise TransientFailure(f"cannot connect to {where} ({_failure_kind(exc)})") from None
    except requests.RequestException as exc:
        raise PermanentFailure(f"request to {where} not sent ({_failure_kind(exc)})") from None


def check_status(response: requests.Response) -> None:
    """Raise the failure an HTTP status stands for; 2xx passes."""
    status = response.status_code
    if 200 <= status < 300:
        return
    detail = f"HTTP {status}: {response.text[:200].strip()}"
    if status in RETRYABLE_STATUSES:
        raise TransientFailure(detail, retry_after=retry_after(response))
    raise PermanentFailure(detail)


def retry_after(response: requests.Response, *, now: datetime | None = None) -> float | None:
    """The wait a response asks for, in seconds: `Retry-After` (seconds or an HTTP date), else None."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (moment - (now or datetime.now(UTC))).total_seconds())


def _backoff(policy: RetryPolicy, number: int) -> float:
    """Exponential backoff with equal jitter: half the step fixed, half random."""
    step = policy.backoff_base * 2 ** (number - 1)
    return float(step / 2 + random.uniform(0, step / 2))


def _host(url: str) -> str:
    """The host (and port) of a URL, which is all a message may say of it."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:  # a port that is no number
        return "an unnamed host"
    if not host:
        return "an unnamed host"
    return f"{host}:{port}" if port else host


def _failure_kind(exc: requests.RequestException) -> str:
    """What failed, by the name of its innermost cause (NewConnectionError, NameResolutionError, SSLError, ...):
    urllib3 wraps the cause in a MaxRetryError whose `reason` it is."""
    cause = exc.args[0] if exc.args else None
    cause = getattr(cause, "reason", cause)
    return type(cause).__name__ if isinstance(cause, BaseException) else type(exc).__name__
