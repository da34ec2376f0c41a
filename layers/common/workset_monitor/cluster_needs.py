"""The EventBridge adapter: tell an operator's automation which cluster the waiting worksets need."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import boto3

from .observability import logger

SOURCE = "workset-monitor"
DETAIL_TYPE = "Cluster needed"
ENTRIES_PER_CALL = 10
"""PutEvents takes at most 10 entries a call."""


class ClusterNeedEvents:
    """Puts one `Cluster needed` event per needed cluster on an event bus (the default bus unless told)."""

    def __init__(self, client: Any = None, *, bus: str = "default") -> None:
        # NOTE: typed Any: the project installs no type stubs for EventBridge for this one call.
        self.client = client or boto3.client("events")
        self.bus = bus

    def announce(self, needed: Sequence[Mapping[str, Any]]) -> None:
        """Put an event per needed cluster; its detail is the need (`vcpus`, `worksets`, `workset_ids`, and
        `region`, `availability_zone`, `cluster_name` when asked for).

        Limitations: each tick announces the needs it finds, so an unmet need is announced every tick; an operator's
        automation must be idempotent (e.g. keyed on region and size).
        """
        entries = [
            {"Source": SOURCE, "DetailType": DETAIL_TYPE, "Detail": json.dumps(dict(need)), "EventBusName": self.bus}
            for need in needed
        ]
        for start in range(0, len(entries), ENTRIES_PER_CALL):
            response = self.client.put_events(Entries=entries[start : start + ENTRIES_PER_CALL])
            if response.get("FailedEntryCount"):
                logger.warning("cluster needed events not put", failed=response["FailedEntryCount"])
