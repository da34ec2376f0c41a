"""Schemathesis against the OpenAPI document the API serves, on the local stack, every request signed with SigV4.

For every documented route it sends generated requests, valid and invalid, and checks that the API never answers
with a 5xx, and that each answer's status, content type and body are the ones the document declares. The stack holds
the demo's worksets (valid, failed, broken) and two clusters, and half the valid requests name one of them in their
path, so they reach the workset and cluster answers, the lifecycle's rules and the store, not only a 404.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import boto3
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from agent.client import SignedWithSigV4
from local.demo import EXAMPLES as EXAMPLE_FOLDERS
from local.demo import INVALID, RETRIED, VALID, upload_workset
from local.iam import find_violations, function_policies
from local.stack import LocalStack
from tools.openapi import DOCUMENT

pytestmark = pytest.mark.e2e

EXAMPLES = 30
"""Generated requests per route and mode."""

KNOWN = {"workset_id": (VALID, RETRIED, INVALID), "name": ("schema-c1", "schema-c2")}
"""Path parameter values that name what the stack holds."""

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    with LocalStack(emulator_port=0, api_port=0, poll_interval=0.05, schedule_seconds=0.5) as running:
        yield running


@pytest.fixture(scope="module")
def session(stack: LocalStack) -> requests.Session:
    signed = requests.Session()
    signed.auth = SignedWithSigV4(boto3.Session(), stack.region)
    return signed


@pytest.fixture(scope="module", autouse=True)
def holdings(stack: LocalStack, session: requests.Session) -> None:
    """The demo's three worksets registered, and the clusters of KNOWN, before any generated request."""
    description = stack.describe()
    for folder in KNOWN["workset_id"]:
        upload_workset(
            stack.client("s3"), str(description["bucket"]), str(description["prefix"]), EXAMPLE_FOLDERS / folder
        )
    for name in KNOWN["name"]:
        session.post(f"{stack.api_url}/clusters", json={"name": name, "max_worksets": 2}, timeout=10).raise_for_status()

    deadline = time.monotonic() + 30
    while any(session.get(f"{stack.api_url}/worksets/{w}", timeout=10).status_code != 200 for w in KNOWN["workset_id"]):
        assert time.monotonic() < deadline, "the demo's worksets were not registered within 30 s"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def served_schema(stack: LocalStack, session: requests.Session) -> schemathesis.BaseSchema:
    answer = session.get(f"{stack.api_url}/openapi.json", timeout=10)
    answer.raise_for_status()
    return schemathesis.openapi.from_dict(answer.json())


# NOTE: one test per route, named from the committed document (the served one equals it, as another test checks);
# schemathesis's own pytest plugin does not run under this pytest, so hypothesis drives each route's strategy here.
ROUTES = sorted(
    f"{method.upper()} {path}" for path, item in json.loads(DOCUMENT.read_text())["paths"].items() for method in item
)
CASES = [(route, GenerationMode.POSITIVE) for route in ROUTES] + [
    (route, GenerationMode.NEGATIVE)
    for route in ROUTES
    if route != "GET /"  # it takes nothing to get wrong
]


@pytest.mark.parametrize(("route", "mode"), CASES, ids=[f"{mode.value}-{route}" for route, mode in CASES])
def test_the_api_keeps_to_its_document(
    route: str,
    mode: GenerationMode,
    served_schema: schemathesis.BaseSchema,
    stack: LocalStack,
    session: requests.Session,
) -> None:
    operation = served_schema.find_operation_by_label(route)
    assert operation is not None, f"the served document has no {route}"

    @given(case=operation.as_strategy(generation_mode=mode), known=st.booleans(), pick=st.integers(0, 2))
    @settings(
        max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None
    )
    def keeps_to_its_document(case: schemathesis.Case, known: bool, pick: int) -> None:
        if known and mode is GenerationMode.POSITIVE:
            for name in set(case.path_parameters or {}) & set(KNOWN):
                case.path_parameters[name] = KNOWN[name][pick % len(KNOWN[name])]  # type: ignore[index]
        # A case that left out the Authorization header (the document says it is required) goes unsigned.
        signed = "Authorization" in (case.headers or {})
        response = case.call(base_url=stack.api_url, session=session if signed else requests.Session(), timeout=10)
        case.validate_response(response, checks=CHECKS)

    keeps_to_its_document()


def test_every_call_the_generated_requests_made_was_allowed(stack: LocalStack) -> None:
    """Runs after the routes' tests (pytest keeps file order): what the API functions called for all that traffic,
    checked against the roles SAM builds from the template, since the emulator enforces no IAM."""
    violations = find_violations(stack.aws_call_details(), function_policies(stack.template))

    assert violations == [], "\n".join(str(violation) for violation in violations)
