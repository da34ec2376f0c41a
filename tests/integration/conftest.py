"""What the race tests share: the emulator in server mode (each request on its own server thread), the template's
table in it, and a store with connections of its own, as each agent or function has."""

from __future__ import annotations

from collections.abc import Iterator

import boto3
import pytest
from botocore.config import Config

from local.emulator import Emulator, start_emulator
from local.template import Template
from tests.conftest import ROOT
from workset_monitor.store import WorksetStore


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with start_emulator(port=0) as running:
        yield running


@pytest.fixture(scope="module")
def table(emulator: Emulator) -> str:
    template = Template.load(ROOT / "template.yaml", parameters={"Stage": "race"}, region=emulator.region)
    template.deploy(emulator.client)
    return template.physical("WorksetTable").ref


def store_for(emulator: Emulator, table: str) -> WorksetStore:
    """A store with its own client and connections, as each agent or function has."""
    client = boto3.client(
        "dynamodb",
        endpoint_url=emulator.url,
        region_name=emulator.region,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"max_attempts": 1}, max_pool_connections=4),
    )
    return WorksetStore(table, client=client)
