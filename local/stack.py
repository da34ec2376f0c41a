"""The local stack: the emulator, the template's resources in it, and the driver running the functions against them.

    with LocalStack(emulator_port=0, api_port=0) as stack:
        boto3.client("s3", endpoint_url=stack.emulator_url, ...)
        requests.get(stack.api_url + "/")  # the health check; every other route asks for SigV4 (see local.sigv4)

`python -m local.stack` (`make local`) keeps it up on 127.0.0.1:4566 (emulator) and 127.0.0.1:3000 (API) until
SIGINT or SIGTERM, and writes `.local/stack.json` with the endpoints, resource names, region and local credentials,
so any program (an S3 client, curl, the agent) can use it.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import signal
import sys
import threading
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any, TextIO

from local.driver import Driver
from local.emulator import (
    ACCESS_KEY_ID,
    DEFAULT_HOST,
    DEFAULT_PORT,
    REGION,
    SECRET_ACCESS_KEY,
    Emulator,
    start_emulator,
)
from local.iam import AwsCall, Deployment
from local.observability import logger
from local.runtime import AwsCallRecorder, FunctionRunner, Handler, HandlerLoader, function_environment
from local.template import API, TOPIC, FunctionSpec, Template, TemplateError

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE_PATH = ROOT / "template.yaml"
STATE_FILE = ROOT / ".local" / "stack.json"
STACK_NAME = "workset-monitor-local"
LOCAL_PARAMETERS = {"Stage": "local"}
DEFAULT_API_PORT = 3000
INBOX_SUFFIX = "-local-inbox"


class LocalStack:
    """The whole stack in this process; a context manager that starts it on entry and stops it on exit.

    `handlers` replaces the code of functions by logical id (tests pass their own handlers); `functions` limits
    the functions driven to these logical ids (all by default). Ports set to 0 are picked free. With
    `record_aws_calls` (the default), every AWS call a handler makes is kept by function: see `aws_calls`.

    Limitations:
        the functions share this process: one environment (see `function_environment`), one `sys.path`, and
        moto's state, so one LocalStack runs at a time per process.
    """

    def __init__(
        self,
        *,
        template_path: Path = TEMPLATE_PATH,
        parameters: Mapping[str, str] | None = None,
        stack_name: str = STACK_NAME,
        host: str = DEFAULT_HOST,
        emulator_port: int = DEFAULT_PORT,
        api_port: int = DEFAULT_API_PORT,
        schedule_seconds: float = 5.0,
        poll_interval: float = 0.5,
        handlers: Mapping[str, Handler] | None = None,
        functions: Collection[str] | None = None,
        record_aws_calls: bool = True,
    ) -> None:
        self.template_path = template_path
        self.parameters = {**LOCAL_PARAMETERS, **(parameters or {})}
        self.stack_name = stack_name
        self.host = host
        self.emulator_port = emulator_port
        self.api_port = api_port
        self.schedule_seconds = schedule_seconds
        self.poll_interval = poll_interval
        self.handlers = dict(handlers or {})
        self.functions = None if functions is None else set(functions)
        self.inbox_queue_urls: dict[str, str] = {}
        self.record_aws_calls = record_aws_calls
        self.call_recorder: AwsCallRecorder | None = None
        self._template: Template | None = None
        self._emulator: Emulator | None = None
        self._driver: Driver | None = None
        self._loader = HandlerLoader()
        self._environment = _EnvironmentPatch()

    # --- lifecycle -----------------------------------------------------------------------------------------------

    def start(self) -> LocalStack:
        """Start the emulator, create the template's resources, load the handlers and start the driver."""
        try:
            self._template = Template.load(
                self.template_path, parameters=self.parameters, stack_name=self.stack_name, region=REGION
            )
            self._emulator = start_emulator(self.host, self.emulator_port)
            self._template.deploy(self._emulator.client)
            self._subscribe_inboxes()

            specs = {spec.logical_id: spec for spec in self._template.functions()}
            driven = self._driven(specs)
            self._environment.apply({**function_environment(specs.values()), **self._emulator.environment()})
            _forget_cached_settings()
            if self.record_aws_calls:
                self.call_recorder = AwsCallRecorder(Deployment.of(self._template))
            loaded = self._loader.load(
                (spec for spec in driven if spec.logical_id not in self.handlers), calls=self.call_recorder
            )
            runners = {
                spec.logical_id: FunctionRunner(
                    spec, self.handlers.get(spec.logical_id) or loaded[spec.logical_id], calls=self.call_recorder
                )
                for spec in driven
            }

            self._driver = Driver(
                self._template,
                runners,
                client=self._emulator.client,
                host=self.host,
                api_port=self.api_port,
                schedule_seconds=self.schedule_seconds,
                poll_interval=self.poll_interval,
            )
            self._driver.start()
        except BaseException:
            self.stop()
            raise

        logger.info("local stack started", emulator=self.emulator_url, api=self.api_url)
        return self

    def stop(self) -> None:
        """Stop the driver and the emulator, forget the handlers' modules and restore the environment."""
        if self._driver is not None:
            self._driver.stop()
            self._driver = None
        if self._emulator is not None:
            self._emulator.stop()
            self._emulator = None
        self._loader.unload()
        self._environment.restore()
        _forget_cached_settings()

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _driven(self, specs: Mapping[str, FunctionSpec]) -> list[FunctionSpec]:
        wanted = set(specs) if self.functions is None else self.functions
        unknown = (wanted | set(self.handlers)) - set(specs)
        if unknown:
            raise TemplateError(f"no such functions in the template: {', '.join(sorted(unknown))}")
        return [specs[logical_id] for logical_id in specs if logical_id in wanted]

    def _subscribe_inboxes(self) -> None:
        """Subscribe a queue to every topic, so tests and the demo can read what was published (raw delivery off)."""
        sqs, sns = self.emulator.client("sqs"), self.emulator.client("sns")
        for logical_id in self.template.resources(TOPIC):
            topic = self.template.physical(logical_id)
            name = topic.attributes["TopicName"]
            fifo = name.endswith(".fifo")
            queue_name = name.removesuffix(".fifo") + INBOX_SUFFIX + (".fifo" if fifo else "")

            url = sqs.create_queue(QueueName=queue_name, Attributes={"FifoQueue": "true"} if fifo else {})["QueueUrl"]
            arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
            sns.subscribe(TopicArn=topic.ref, Protocol="sqs", Endpoint=arn, Attributes={"RawMessageDelivery": "false"})
            self.inbox_queue_urls[logical_id] = url
            logger.info("topic inbox subscribed", topic=logical_id, queue_url=url)

    # --- what the stack is ---------------------------------------------------------------------------------------

    @property
    def template(self) -> Template:
        if self._template is None:
            raise RuntimeError("the local stack is not started")
        return self._template

    @property
    def emulator(self) -> Emulator:
        if self._emulator is None:
            raise RuntimeError("the local stack is not started")
        return self._emulator

    @property
    def emulator_url(self) -> str:
        return self.emulator.url

    @property
    def api_url(self) -> str | None:
        return self._driver.api_url if self._driver is not None else None

    @property
    def region(self) -> str:
        return self.template.region

    @property
    def resources(self) -> dict[str, str]:
        """Every resource's `Ref` by logical id: a table's name, a topic's ARN, a queue's URL, a function's name."""
        return {logical_id: self.template.physical(logical_id).ref for logical_id in self.template.resources()}

    def client(self, service_name: str) -> Any:
        """A boto3 client bound to the emulator."""
        return self.emulator.client(service_name)

    def aws_calls(self) -> dict[str, set[str]]:
        """The AWS operations each function's handler called so far, by logical id: `{"ApiWriteFunction":
        {"dynamodb:UpdateItem", ...}}`; empty when `record_aws_calls` is off."""
        return self.call_recorder.operations() if self.call_recorder is not None else {}

    def aws_call_details(self) -> dict[str, set[AwsCall]]:
        """The distinct calls each function's handler made, with the IAM action, resource and condition keys each
        needs (see `local.iam`)."""
        return self.call_recorder.calls() if self.call_recorder is not None else {}

    def describe(self) -> dict[str, Any]:
        """Everything a program needs to use the stack, JSON-able."""
        template = self.template
        resources = self.resources
        kinds = {logical_id: resource["Type"] for logical_id, resource in template.resources().items()}

        def only(kind: str) -> str | None:
            refs = [ref for logical_id, ref in resources.items() if kinds[logical_id] == kind]
            return refs[0] if len(refs) == 1 else None

        functions = {
            spec.logical_id: {
                "function_name": spec.function_name,
                "handler": spec.handler,
                "code_uri": str(spec.code_uri),
                "driven": self.functions is None or spec.logical_id in self.functions,
                "events": {event.name: event.type for event in spec.events},
            }
            for spec in template.functions()
        }
        return {
            "stack_name": self.stack_name,
            "region": self.region,
            "account_id": template.account_id,
            "emulator_url": self.emulator_url,
            "api_url": self.api_url,
            "credentials": {"aws_access_key_id": ACCESS_KEY_ID, "aws_secret_access_key": SECRET_ACCESS_KEY},
            "environment": self.emulator.environment(),
            "parameters": dict(template.parameters),
            "resources": resources,
            "outputs": self._outputs(),
            "functions": functions,
            "inbox_queue_urls": dict(self.inbox_queue_urls),
            "inbox_queue_url": next(iter(self.inbox_queue_urls.values()), None)
            if len(self.inbox_queue_urls) == 1
            else None,
            # The workset table by name: the notify function's idempotency table is a table too.
            "table": resources.get("WorksetTable") or only("AWS::DynamoDB::Table"),
            "bucket": only("AWS::S3::Bucket"),
            "topic_arn": only(TOPIC),
            "prefix": template.parameters.get("WorksetPrefix"),
        }

    def _outputs(self) -> dict[str, Any]:
        # NOTE: an output built on the API's execute-api address and stage (ApiUrl, DashboardUrl) is given the local
        # API's address instead, which serves the paths without the stage.
        api_ids = [self.template.physical(logical_id).ref for logical_id in self.template.resources(API)]
        hosts = "|".join(re.escape(api) for api in api_ids)
        deployed = re.compile(rf"^https://(?:{hosts})\.execute-api\.[^/]+/[^/]+")
        outputs = self.template.outputs()
        for name, value in outputs.items():
            if api_ids and isinstance(value, str) and deployed.match(value):
                outputs[name] = deployed.sub(lambda _: self.api_url or "", value, count=1)
        return outputs


class _EnvironmentPatch:
    """Sets variables of `os.environ` and puts back what was there before."""

    def __init__(self) -> None:
        self._saved: dict[str, str | None] = {}

    def apply(self, variables: Mapping[str, str]) -> None:
        for name, value in variables.items():
            self._saved.setdefault(name, os.environ.get(name))
            os.environ[name] = value

    def restore(self) -> None:
        for name, value in self._saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._saved.clear()


def _forget_cached_settings() -> None:
    """The functions read their settings from the environment once per process (`workset_monitor.settings`); the
    layer's modules outlive a stack when they were imported before it started (by a test, say), so each stack forgets
    the cached settings whenever it changes the environment."""
    module = sys.modules.get("workset_monitor.settings")
    if module is not None:
        module.settings.cache_clear()


class WholeLines(io.TextIOBase):
    """A text stream that writes whole lines only, each in one write: what a thread writes waits for its newline.

    The functions run in threads of this one process, and `print` writes its text and its newline in two calls, so
    two functions printing at once (Powertools prints each EMF document) could cut each other's lines; Lambda gives
    each function a log of its own.
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._pending = threading.local()
        self._lock = threading.Lock()

    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return self._stream.encoding

    def write(self, text: str) -> int:
        pending = getattr(self._pending, "text", "") + text
        cut = pending.rfind("\n") + 1
        self._pending.text = pending[cut:]
        if cut:
            with self._lock:
                self._stream.write(pending[:cut])
                self._stream.flush()
        return len(text)

    def flush(self) -> None:
        with self._lock:
            self._stream.flush()


def main(argv: list[str] | None = None) -> int:
    """Run the local stack in the foreground until SIGINT or SIGTERM."""
    sys.stdout = WholeLines(sys.stdout)
    parser = argparse.ArgumentParser(prog="python -m local.stack", description="Run the local stack until stopped.")
    parser.add_argument("--host", default=DEFAULT_HOST)
    parser.add_argument("--emulator-port", type=int, default=DEFAULT_PORT, help="0 picks a free port")
    parser.add_argument("--api-port", type=int, default=DEFAULT_API_PORT, help="0 picks a free port")
    parser.add_argument("--schedule-seconds", type=float, default=5.0, help="how often scheduled functions run")
    parser.add_argument("--poll-interval", type=float, default=0.5, help="how often queues and streams are read")
    parser.add_argument("--parameter", action="append", default=[], metavar="NAME=VALUE", help="template parameter")
    parser.add_argument("--state-file", type=Path, default=STATE_FILE)
    args = parser.parse_args(argv)
    parameters = dict(item.split("=", 1) for item in args.parameter)

    stopping = threading.Event()
    for signal_number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signal_number, lambda *_: stopping.set())

    with LocalStack(
        parameters=parameters,
        host=args.host,
        emulator_port=args.emulator_port,
        api_port=args.api_port,
        schedule_seconds=args.schedule_seconds,
        poll_interval=args.poll_interval,
        # NOTE: nothing reads the calls of a stack run from the command line, so they are not kept.
        record_aws_calls=False,
    ) as stack:
        args.state_file.parent.mkdir(parents=True, exist_ok=True)
        args.state_file.write_text(json.dumps(stack.describe(), indent=2) + "\n", encoding="utf-8")
        print(f"local stack up: emulator {stack.emulator_url}, api {stack.api_url}; see {args.state_file}", flush=True)
        stopping.wait()

    args.state_file.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
