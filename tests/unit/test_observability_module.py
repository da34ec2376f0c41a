"""The observability module: measures printed as EMF lines, and tracing that costs nothing when it is off."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from workset_monitor.measures import Measure
from workset_monitor.observability import NAMESPACE, publish, traced

ROOT = Path(__file__).resolve().parents[2]


def test_each_measure_is_one_emf_line_with_its_own_dimensions_and_the_service(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN the deployment's service name, as the template sets it
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "workset-monitor-prod")

    # WHEN two measures of different dimensions are published
    publish(
        [
            Measure("Transitions", 1, "Count", (("state", "locked"), ("priority", "urgent"))),
            Measure("RunDuration", 5400, "Seconds", (("state", "complete"),)),
        ]
    )

    # THEN each is a line of its own, in the namespace, under its own dimension set
    documents = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [document["_aws"]["CloudWatchMetrics"] for document in documents] == [
        [
            {
                "Namespace": NAMESPACE,
                "Dimensions": [["state", "priority", "service"]],
                "Metrics": [{"Name": "Transitions", "Unit": "Count"}],
            }
        ],
        [
            {
                "Namespace": NAMESPACE,
                "Dimensions": [["state", "service"]],
                "Metrics": [{"Name": "RunDuration", "Unit": "Seconds"}],
            }
        ],
    ]
    assert [(doc["service"], doc["state"], doc.get("priority")) for doc in documents] == [
        ("workset-monitor-prod", "locked", "urgent"),
        ("workset-monitor-prod", "complete", None),
    ]
    assert documents[0]["Transitions"] == [1.0] and documents[1]["RunDuration"] == [5400.0]


def test_with_tracing_off_a_handler_is_left_as_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")

    def handler(event: object, context: object) -> str:
        return "done"

    assert traced(handler) is handler


def _imports_xray(tracing_disabled: str) -> tuple[bool, bool]:
    """In a fresh interpreter, import a handler's observability and decorate a handler: (wrapped, X-Ray imported)."""
    code = (
        "import sys\n"
        "from workset_monitor.observability import traced\n"
        "def handler(event, context): return None\n"
        "print(traced(handler) is not handler, 'aws_xray_sdk' in sys.modules)\n"
    )
    environment = {
        **os.environ,
        "POWERTOOLS_TRACE_DISABLED": tracing_disabled,
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "layers" / "common")]),
    }
    output = subprocess.run(
        [sys.executable, "-c", code], env=environment, capture_output=True, text=True, check=True
    ).stdout.split()
    return output[0] == "True", output[1] == "True"


def test_with_tracing_off_the_xray_sdk_is_never_imported() -> None:
    assert _imports_xray("true") == (False, False)


def test_with_tracing_on_the_handler_runs_under_the_powertools_tracer() -> None:
    assert _imports_xray("false") == (True, True)
