"""Turning one stream record of the workset table into notifications on every channel."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from .events import WorksetEvent, describe_change
from .observability import logger
from .store import workset_from_image


class Channel(Protocol):
    name: str

    def deliver(self, event: WorksetEvent) -> str: ...


class ChannelFailed(Exception):
    def __init__(self, failures: Mapping[str, Exception]) -> None:
        super().__init__("; ".join(f"{name}: {exc}" for name, exc in failures.items()))
        self.failures = dict(failures)


class Notifier:
    def __init__(self, channels: Sequence[Channel]) -> None:
        self.channels = list(channels)

    def on_change(
        self, old_image: Mapping[str, Any] | None, new_image: Mapping[str, Any] | None
    ) -> WorksetEvent | None:
        """Deliver the event of one change to every channel. Every channel is tried even when one fails; then
        `ChannelFailed` names the ones that did, so the record is retried."""
        if not new_image:
            return None  # a removal: nothing happened to a workset that people need to hear

        old = workset_from_image(old_image) if old_image else None
        new = workset_from_image(new_image)
        event = describe_change(old, new)
        if event is None:
            return None

        failures: dict[str, Exception] = {}
        for channel in self.channels:
            try:
                delivery_id = channel.deliver(event)
            except Exception as exc:  # noqa: BLE001 - one channel's failure must not stop the others
                logger.exception("delivery failed", workset_id=event.workset_id, channel=channel.name)
                failures[channel.name] = exc
                continue
            logger.info(
                "event delivered",
                workset_id=event.workset_id,
                channel=channel.name,
                event_type=event.event_type,
                state=event.state,
                delivery_id=delivery_id,
            )

        if failures:
            raise ChannelFailed(failures)
        return event
