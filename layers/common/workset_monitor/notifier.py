"""Turning records of the workset table's stream into notifications: each event to each channel that wants it, once.

One stream record is one event (`read_record`). Each channel's filter says whether it wants the event; each wanted
delivery runs under Powertools idempotency keyed by (channel, workset id, version), so when Lambda retries a batch
(after one channel failed, or a timeout), channels that already had an event are not given it again while the one
that failed is. A failure of one channel never stops the others; the record is then reported as a batch item
failure, so Lambda retries it (and the records after it) and, once its retries are spent, sends the batch's
description to the on-failure destination.

Order per workset holds on every channel: once a delivery to a channel fails for a workset, that channel gets no
later event of the same workset in this batch (those records fail too, and come back in order on the retry). Once a
channel fails transiently (an outage), it gets nothing more in this batch, so an outage costs one delivery's bounded
retries, not one per record.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, cast

import boto3
from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyAlreadyInProgressError,
    IdempotencyPersistenceLayerError,
)
from botocore.config import Config
from pydantic import BaseModel, ConfigDict, ValidationError

from . import measures
from .channels.http import Deadline, DeliveryFailed
from .channels.linear import LinearChannel
from .channels.sns import SnsChannel
from .channels.webhook import WebhookChannel
from .credentials import SecretReader
from .events import WorksetEvent, describe_change
from .incidents import IncidentStore
from .observability import logger, publish
from .routing import (
    ChannelConfig,
    ConfigurationError,
    LinearChannelConfig,
    RouteFilter,
    SnsChannelConfig,
    WebhookChannelConfig,
    parse_channels,
)
from .settings import Settings
from .store import WORKSET_SK, workset_from_image

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.idempotency.persistence.base import BasePersistenceLayer
    from aws_lambda_powertools.utilities.typing import LambdaContext

DELIVERY_MEMORY_SECONDS = 25 * 3600
"""How long a delivery is remembered: longer than a stream record can be redelivered (the stream keeps 24 h)."""

SNS_CLIENT_CONFIG = Config(connect_timeout=5, read_timeout=10, retries={"mode": "standard", "max_attempts": 3})
"""An SNS publish may not take the invocation's whole time (botocore's defaults wait 60 s per read)."""

IDEMPOTENCY_KEY_PREFIX = "notify"
SAFETY_MARGIN_SECONDS = 5.0
"""Deliveries stop starting this long before the invocation's timeout, so the function can still report."""


class Channel(Protocol):
    name: str

    def deliver(self, event: WorksetEvent) -> str:
        """Deliver `event`; returns what was done (an id, a note). Raises on failure."""
        ...


@dataclass(frozen=True)
class Route:
    """A channel and the events it wants."""

    channel: Channel
    filter: RouteFilter


@dataclass(frozen=True)
class Skipped:
    """A stream record that says nothing to notify: a removal, a heartbeat, an item that is not a workset."""

    reason: str


class UnreadableRecord(Exception):
    """A workset record whose image does not validate: reported as a batch item failure, never dropped silently."""


class ChannelFailed(Exception):
    """Some channels could not take an event; the others did. `failures` names them."""

    def __init__(self, event: WorksetEvent, failures: Mapping[str, Exception]) -> None:
        super().__init__(
            f"workset {event.workset_id} version {event.version}: "
            + "; ".join(f"{name}: {exc}" for name, exc in failures.items())
        )
        self.event = event
        self.failures = dict(failures)


class HeldBack(DeliveryFailed):
    """Not tried: an earlier event of the same workset failed on this channel in this batch, or the channel is out."""

    transient = True


class Delivery(BaseModel):
    """What one delivery is about; its idempotency key is (channel, workset id, version)."""

    model_config = ConfigDict(frozen=True)

    channel: str
    event: WorksetEvent


def read_record(record: Mapping[str, Any]) -> WorksetEvent | Skipped:
    """The event a stream record (in Lambda's shape) stands for, or why there is none.

    Raises UnreadableRecord for a workset item whose image does not validate.
    """
    change = record.get("dynamodb") or {}
    keys = change.get("Keys") or {}
    sort_key = (keys.get("sk") or {}).get("S")
    if sort_key != WORKSET_SK:
        return Skipped(f"not a workset item (sort key {sort_key!r})")
    if record.get("eventName") == "REMOVE" or not change.get("NewImage"):
        return Skipped("a removal")
    if record.get("eventName") not in ("INSERT", "MODIFY"):
        return Skipped(f"an event named {record.get('eventName')!r}")

    try:
        old = workset_from_image(change["OldImage"]) if change.get("OldImage") else None
        new = workset_from_image(change["NewImage"])
    except (ValidationError, KeyError, TypeError, ValueError) as exc:
        raise UnreadableRecord(f"the workset image does not validate: {exc}") from exc

    event = describe_change(old, new)
    return event if event is not None else Skipped("no change of state")


class Notifier:
    """Delivers the event of each record to the channels whose filter admits it.

    `persistence` remembers deliveries (Powertools idempotency); without it, a retried batch redelivers.

    Limitations:
        "at most once" holds for what the function learns: a delivery whose answer was lost (a timeout after the
        receiver acted) is tried again, and a delivery cut off by the invocation's end is redone once its "in
        progress" record expires (at that invocation's timeout).
    """

    def __init__(
        self,
        routes: Sequence[Route],
        *,
        persistence: BasePersistenceLayer | None,
        deadline: Deadline | None = None,
    ) -> None:
        self.routes = list(routes)
        self.channels = {route.channel.name: route.channel for route in self.routes}
        self.deadline = deadline or Deadline()
        self.config = IdempotencyConfig(
            event_key_jmespath="[channel, event.workset_id, event.version]",
            raise_on_no_idempotency_key=True,
            expires_after_seconds=DELIVERY_MEMORY_SECONDS,
            response_hook=lambda response, record: {**response, "repeated": True},
        )
        self._deliver_once = (
            idempotent_function(
                self._deliver,
                data_keyword_argument="delivery",
                persistence_store=persistence,
                config=self.config,
                key_prefix=IDEMPOTENCY_KEY_PREFIX,
            )
            if persistence is not None
            else self._deliver
        )
        self._held: set[tuple[str, str]] = set()
        self._out: set[str] = set()
        self._counts: Counter[tuple[str, str]] = Counter()

    # --- a batch -------------------------------------------------------------------------------------------------

    def begin_batch(self, context: LambdaContext | None = None) -> None:
        """Forget the last batch's failures; take the invocation's deadline from its context."""
        self._held.clear()
        self._out.clear()
        self._counts.clear()
        if context is None:
            self.deadline.start(None)
            return
        self.config.register_lambda_context(context)
        self.deadline.start(context.get_remaining_time_in_millis() / 1000 - SAFETY_MARGIN_SECONDS)

    def finish_batch(self) -> dict[tuple[str, str], int]:
        """Publish the batch's counts per channel (Delivered, AlreadyDelivered, DeliveryFailed) as metrics."""
        publish(measures.deliveries(self._counts))
        return dict(self._counts)

    # --- a record ------------------------------------------------------------------------------------------------

    def notify(self, record: Mapping[str, Any]) -> WorksetEvent | None:
        """Deliver the event of one stream record to every channel that wants it.

        Every wanted channel is tried, even when one fails; then ChannelFailed names the ones that did, so the
        record is retried (and the channels that had it are skipped by idempotency).
        """
        try:
            reading = read_record(record)
        except UnreadableRecord:
            logger.exception("stream record unreadable", sequence=_sequence(record))
            publish([measures.point("RecordsUnreadable", 1)])
            raise
        if isinstance(reading, Skipped):
            logger.debug("stream record skipped", sequence=_sequence(record), reason=reading.reason)
            return None

        event = reading
        failures: dict[str, Exception] = {}
        for route in self.routes:
            if route.filter.admits(event):
                failure = self._deliver_to(route.channel, event)
                if failure is not None:
                    failures[route.channel.name] = failure

        if failures:
            raise ChannelFailed(event, failures)
        return event

    def _deliver_to(self, channel: Channel, event: WorksetEvent) -> Exception | None:
        """Deliver to one channel, at most once; returns the failure instead of raising it."""
        workset_id, name, version = event.workset_id, channel.name, event.version
        held = (channel.name, event.workset_id)
        if channel.name in self._out or held in self._held:
            if channel.name in self._out:
                reason = "the channel failed earlier in this batch"
            else:
                reason = "an earlier event of this workset failed on this channel"
            logger.warning("delivery held back", workset_id=workset_id, channel=name, version=version, reason=reason)
            self._held.add(held)
            self._counts["DeliveryFailed", channel.name] += 1
            return HeldBack(f"held back: {reason}")

        try:
            outcome = self._deliver_once(delivery=Delivery(channel=channel.name, event=event))
        except Exception as exc:  # noqa: BLE001 - one channel's failure must not stop the others
            self._held.add(held)
            if _transient(exc):
                self._out.add(channel.name)
            logger.error(
                "delivery failed",
                workset_id=workset_id,
                channel=name,
                version=version,
                event_type=event.event_type,
                error=f"{type(exc).__name__}: {exc}",
            )
            self._counts["DeliveryFailed", channel.name] += 1
            return exc

        if outcome.get("repeated"):
            logger.info(
                "event already delivered",
                workset_id=workset_id,
                channel=name,
                version=version,
                delivery=outcome.get("delivery"),
            )
            self._counts["AlreadyDelivered", channel.name] += 1
        else:
            logger.info(
                "event delivered",
                workset_id=workset_id,
                channel=name,
                version=version,
                event_type=event.event_type,
                state=event.state,
                delivery=outcome["delivery"],
            )
            self._counts["Delivered", channel.name] += 1
        return None

    def _deliver(self, *, delivery: Delivery) -> dict[str, Any]:
        return {"delivery": self.channels[delivery.channel].deliver(delivery.event)}


def _transient(exc: Exception) -> bool:
    """Whether a failure says the channel (or the delivery memory) is down, not that this one event was refused."""
    if isinstance(exc, DeliveryFailed):
        return exc.transient
    if isinstance(exc, IdempotencyAlreadyInProgressError):
        return False
    return isinstance(exc, IdempotencyPersistenceLayerError) or cast(bool, getattr(exc, "transient", False))


def _sequence(record: Mapping[str, Any]) -> str | None:
    sequence = (record.get("dynamodb") or {}).get("SequenceNumber")
    return str(sequence) if sequence is not None else None


def notifier_from_settings(settings: Settings) -> Notifier:
    """The notifier the function's environment configures. Raises ConfigurationError, naming every problem, for
    channels that cannot work; the function then fails at start rather than at its first failure."""
    configs = parse_channels(settings.notify_channels, secrets_prefix=settings.notify_secrets_prefix)
    deadline = Deadline()
    secrets = SecretReader()
    incidents = IncidentStore(settings.table_name)
    routes = [Route(_channel(config, settings, secrets, incidents, deadline), config.filter) for config in configs]

    persistence = DynamoDBPersistenceLayer(settings.idempotency_table) if settings.idempotency_table else None
    if persistence is None:
        logger.warning("delivery memory off: a retried batch redelivers", reason="IDEMPOTENCY_TABLE is not set")
    logger.info("notifier ready", channels={config.name: config.type for config in configs})
    return Notifier(routes, persistence=persistence, deadline=deadline)


def _channel(
    config: ChannelConfig, settings: Settings, secrets: SecretReader, incidents: IncidentStore, deadline: Deadline
) -> Channel:
    if isinstance(config, SnsChannelConfig):
        topic_arn = config.topic_arn or settings.topic_arn
        if not topic_arn:
            raise ConfigurationError(f"NOTIFY_CHANNELS: channel {config.name}: no topic_arn and no WORKSET_TOPIC_ARN")
        return SnsChannel(topic_arn, boto3.client("sns", config=SNS_CLIENT_CONFIG), name=config.name)
    if isinstance(config, LinearChannelConfig):
        return LinearChannel(config, secrets, incidents, deadline=deadline, scope=settings.table_name)
    if isinstance(config, WebhookChannelConfig):
        return WebhookChannel(config, secrets, deadline=deadline, scope=settings.table_name)
    raise ConfigurationError(f"unknown channel type {config!r}")  # pragma: no cover - the union is closed
