"""Fixtures shared by the integration tests: the template's resources in the in-process emulator, and the functions.

The resources are created from what `template.yaml` declares (Stage=test), so the tests exercise the same table
keys and indexes as a deployment. moto runs in-process here, with the local stack's patch that makes each
DynamoDB operation atomic, as DynamoDB is.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import re
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import pytest
from moto import mock_aws

from local.emulator import install_moto_patches
from local.runtime import top_level_modules
from local.template import Template
from workset_monitor import settings as settings_module
from workset_monitor.store import WorksetStore

ROOT = Path(__file__).resolve().parent.parent
REGION = "us-east-1"


class FakeLambdaContext:
    """What Powertools reads from a Lambda context."""

    def __init__(self, function_name: str) -> None:
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.invoked_function_arn = f"arn:aws:lambda:{REGION}:123456789012:function:{function_name}"
        self.memory_limit_in_mb = 512
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = "local"

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


@pytest.fixture
def stage(request: pytest.FixtureRequest) -> str:
    """The template's Stage parameter: "test", or the test module's STAGE (or override this fixture)."""
    return str(getattr(request.module, "STAGE", "test"))


@pytest.fixture
def region(request: pytest.FixtureRequest) -> str:
    """The region resources are created in: REGION, or the test module's DEPLOYMENT_REGION."""
    return str(getattr(request.module, "DEPLOYMENT_REGION", REGION))


def sample_event(name: str) -> dict[str, Any]:
    """A sample event of events/ (they name the deployment Stage=dev in us-west-2)."""
    event: dict[str, Any] = json.loads((ROOT / "events" / name).read_text())
    return event


def upload_example(event: dict[str, Any], example: str = "hg002-giab-wgs-30x") -> None:
    """Upload examples/worksets/<example> into the folder whose sentinel the S3 event's first record names."""
    folder_path = ROOT / "examples" / "worksets" / example
    s3 = boto3.client("s3", region_name=event["Records"][0]["awsRegion"])
    bucket = event["Records"][0]["s3"]["bucket"]["name"]
    folder = event["Records"][0]["s3"]["object"]["key"].rpartition("/")[0]
    for path in sorted(p for p in folder_path.rglob("*") if p.is_file()):
        s3.upload_file(str(path), bucket, f"{folder}/{path.relative_to(folder_path).as_posix()}")


def invoke(load_function: Callable[[str], ModuleType], logical_id: str, event: Any) -> Any:
    """Run a function's handler, loaded afresh, on `event`."""
    return load_function(logical_id).lambda_handler(event, FakeLambdaContext(logical_id))


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch, region: str) -> Iterator[None]:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": region,
        "AWS_REGION": region,
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    install_moto_patches()
    with mock_aws():
        yield


@pytest.fixture
def deployed(aws: None, stage: str, region: str) -> Template:
    template = Template.load(ROOT / "template.yaml", parameters={"Stage": stage}, region=region)
    template.deploy(lambda service: boto3.client(service, region_name=region))
    return template


@pytest.fixture
def store(deployed: Template) -> WorksetStore:
    return WorksetStore(deployed.physical("WorksetTable").ref)


@pytest.fixture
def load_function(deployed: Template, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., ModuleType]]:
    """Load a function's handler module afresh, with the environment the template gives it. Its own modules are
    forgotten afterwards, so what they cached (a store on this test's table) reaches no later test."""
    specs = {spec.logical_id: spec for spec in deployed.functions()}
    loaded: set[str] = set()

    def load(logical_id: str, **environment: str) -> ModuleType:
        """The handler module, with the template's environment and `environment` over it."""
        spec = specs[logical_id]
        for name, value in {**spec.environment, **environment}.items():
            monkeypatch.setenv(name, value)
        settings_module.settings.cache_clear()
        # The handler's own modules (a function's code folder may hold several) are imported afresh too, on its path.
        monkeypatch.syspath_prepend(str(spec.code_uri))
        for name in top_level_modules(spec.code_uri):
            sys.modules.pop(name, None)
            loaded.add(name)

        module_spec = importlib.util.spec_from_file_location(f"fn_{logical_id}_{uuid.uuid4().hex}", spec.handler_file)
        assert module_spec is not None and module_spec.loader is not None
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[module_spec.name] = module  # pydantic resolves the module's annotations through sys.modules
        module_spec.loader.exec_module(module)
        return module

    yield load
    for name in loaded:
        sys.modules.pop(name, None)
    settings_module.settings.cache_clear()


ApiCall = Callable[..., tuple[int, Any]]


@pytest.fixture
def api(load_function: Callable[[str], ModuleType]) -> ApiCall:
    """Call the API as API Gateway would, GETs to the read function and the rest to the write function:
    `api("GET", "/worksets", query={...})`, `api("POST", "/clusters", body={...})`."""
    reads, writes = load_function("ApiReadFunction"), load_function("ApiWriteFunction")

    def call(
        method: str,
        path: str,
        *,
        query: dict[str, str] | None = None,
        body: Any = None,
        raw_body: str | None = None,
        body_bytes: bytes | None = None,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        event = api_event(method, path, query=query, body=json.dumps(body) if body is not None else raw_body)
        for name, value in {"Content-Type": content_type, **(headers or {})}.items():
            event["headers"][name] = value
            event["multiValueHeaders"][name] = [value]
        if body_bytes is not None:
            event.update(body=base64.b64encode(body_bytes).decode(), isBase64Encoded=True)
        module = reads if method in ("GET", "OPTIONS") else writes
        response = module.lambda_handler(event, FakeLambdaContext("api"))
        payload = json.loads(response["body"]) if response.get("body") else None
        return response["statusCode"], payload

    return call


def api_event(
    method: str, path: str, *, query: dict[str, str] | None = None, body: str | None = None
) -> dict[str, Any]:
    """An API Gateway REST proxy event (payload 1.0) for a request to the `{proxy+}` resource."""
    headers = {"Host": "local", "Content-Type": "application/json"}
    return {
        "resource": "/{proxy+}",
        "path": path,
        "httpMethod": method,
        "headers": headers,
        "multiValueHeaders": {name: [value] for name, value in headers.items()},
        "queryStringParameters": query,
        "multiValueQueryStringParameters": {name: [value] for name, value in query.items()} if query else None,
        "pathParameters": {"proxy": path.lstrip("/")},
        "stageVariables": None,
        "requestContext": {
            "resourcePath": "/{proxy+}",
            "httpMethod": method,
            "path": f"/test{path}",
            "stage": "test",
            "requestId": "test-request-id",
            "identity": {"sourceIp": "127.0.0.1"},
        },
        "body": body,
        "isBase64Encoded": False,
    }


def files_the_page_loads(page: str, read: Callable[[str], str]) -> set[str]:
    """The dashboard shell's files its page names (`dashboard/<file>`) and, in turn, those its scripts import
    (`./<file>`); `read` gives a script's text by its name."""
    found = set(re.findall(r'(?:src|href)="dashboard/([^"]+)"', page))
    pending = [name for name in found if name.endswith(".js")]
    while pending:
        for name in re.findall(r'from "\./([^"]+)"', read(pending.pop())):
            if name not in found:
                found.add(name)
                pending.append(name)
    return found
