"""What Lambda's Python runtime does around a handler, in this process: import it, give it a context, time it.

- `HandlerLoader` imports each function's handler file under a module name of its own (every function's file is
  `app.py`), with the function's CodeUri and its layers' ContentUri on `sys.path`, and forgets them on `unload`.
- `function_environment` merges the functions' environments into the one this process can have.
- `FunctionRunner.invoke` calls a handler with a Lambda-like context; it logs every invocation and never raises.
- `AwsCallRecorder` keeps, per function, every AWS API call its handler made (as `local.iam.AwsCall`), so a test can
  check them against the function's IAM policies, which the emulator does not enforce.
"""

from __future__ import annotations

import functools
import importlib.util
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import botocore.session

from local.iam import AwsCall, Deployment, Permission, permissions_needed
from local.observability import logger
from local.template import FunctionSpec, TemplateError

Handler = Callable[[Any, Any], Any]
"""A Lambda handler: `handler(event, context) -> result`."""

ASYNC_RETRIES = 2
"""Lambda retries a failed asynchronous invocation (S3, schedules) twice by default."""

MAX_RECORDED_CALLS = 20_000
"""Distinct calls kept per function (a call on another S3 key is another call); more are counted, not kept."""


@dataclass
class LambdaContext:
    """The context object of Lambda's Python runtime, with the attributes Powertools and handlers read."""

    function_name: str
    function_version: str
    invoked_function_arn: str
    memory_limit_in_mb: int
    aws_request_id: str
    log_group_name: str
    log_stream_name: str
    deadline: float = field(repr=False)
    identity: Any = None
    client_context: Any = None

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.deadline - time.monotonic()) * 1000))


@dataclass(frozen=True)
class Invocation:
    """The outcome of one invocation: the handler's result, or the exception it raised."""

    function_id: str
    request_id: str
    result: Any
    error: BaseException | None
    duration_ms: float

    @property
    def ok(self) -> bool:
        return self.error is None


class FunctionRunner:
    """Invokes one function's handler as Lambda would. Callers may invoke from several threads at once; the
    invocations of one function run one at a time, as in one Lambda execution environment, whose module-level state
    (the API's resolver, Powertools' per-invocation keys and metrics) serves one invocation at a time."""

    def __init__(self, spec: FunctionSpec, handler: Handler, *, calls: AwsCallRecorder | None = None) -> None:
        self.spec = spec
        self.handler = handler
        self.calls = calls
        # NOTE: one execution environment per function: Lambda would run concurrent invocations in several, each
        # with its own module state; here they share one module, so they take turns.
        self._environment = threading.Lock()

    def invoke(self, event: Any, *, trigger: str) -> Invocation:
        """Call the handler with `event`; the result or the exception comes back, never raised.

        Limitations:
            the function's Timeout is not enforced (a thread cannot be stopped), only reported when exceeded.
        """
        context = self._context()
        result: Any = None
        error: BaseException | None = None

        # Whatever the handler raises is the invocation's outcome, as on Lambda; it never reaches the caller.
        with self._environment:
            started = time.monotonic()
            try:
                with attributed_to(self.calls, self.spec.logical_id):
                    result = self.handler(event, context)
            except (Exception, SystemExit) as exc:  # noqa: BLE001
                error = exc
            duration_ms = round((time.monotonic() - started) * 1000, 1)

        fields = {
            "function": self.spec.logical_id,
            "trigger": trigger,
            "request_id": context.aws_request_id,
            "duration_ms": duration_ms,
            "error": None if error is None else f"{type(error).__name__}: {error}",
        }
        if error is None:
            logger.info("function invoked", extra=fields)
        else:
            logger.error("function invoked", exc_info=error, extra=fields)
        if duration_ms > self.spec.timeout * 1000:
            logger.warning("function ran past its timeout", function=self.spec.logical_id, timeout_s=self.spec.timeout)
        return Invocation(self.spec.logical_id, context.aws_request_id, result, error, duration_ms)

    def invoke_async(self, event: Any, *, trigger: str, retries: int = ASYNC_RETRIES) -> Invocation:
        """An asynchronous invocation: retried on error, up to `retries` more times.

        Limitations:
            Lambda waits about a minute, then two, between retries; here they follow at once.
        """
        invocation = self.invoke(event, trigger=trigger)
        for _ in range(retries):
            if invocation.ok:
                break
            invocation = self.invoke(event, trigger=f"{trigger} (retry)")
        return invocation

    def _context(self) -> LambdaContext:
        name = self.spec.function_name
        today = datetime.now(UTC).strftime("%Y/%m/%d")
        return LambdaContext(
            function_name=name,
            function_version="$LATEST",
            invoked_function_arn=self.spec.arn,
            memory_limit_in_mb=self.spec.memory_size,
            aws_request_id=str(uuid.uuid4()),
            log_group_name=f"/aws/lambda/{name}",
            log_stream_name=f"{today}/[$LATEST]{uuid.uuid4().hex}",
            deadline=time.monotonic() + self.spec.timeout,
        )


def function_environment(specs: Iterable[FunctionSpec]) -> dict[str, str]:
    """The one environment all functions share in this process; fails when two functions disagree on a variable.

    Limitations:
        the functions share one process, so a variable that differs between functions cannot be emulated.
    """
    merged: dict[str, str] = {}
    owner: dict[str, str] = {}
    for spec in specs:
        for name, value in spec.environment.items():
            if name in merged and merged[name] != value:
                raise TemplateError(
                    f"{owner[name]} and {spec.logical_id} set {name} to different values "
                    f"({merged[name]!r}, {value!r}); one process cannot give both"
                )
            merged[name] = value
            owner.setdefault(name, spec.logical_id)
    return merged


class HandlerLoader:
    """Imports handlers from their files and, on `unload`, forgets every module and path it brought in."""

    def __init__(self) -> None:
        self._modules_before: set[str] | None = None
        self._paths_added: list[str] = []
        self._roots: list[Path] = []

    def load(self, specs: Iterable[FunctionSpec], *, calls: AwsCallRecorder | None = None) -> dict[str, Handler]:
        """Import the handler of each function; fails before importing anything if two functions clash.

        A client a handler module creates as it is imported belongs to its function: `calls` records its calls.
        """
        specs = list(specs)
        _check_sibling_modules(specs)
        if self._modules_before is None:
            self._modules_before = set(sys.modules)

        handlers: dict[str, Handler] = {}
        for spec in specs:
            with attributed_to(calls, spec.logical_id):
                handlers[spec.logical_id] = self._load(spec)
        return handlers

    def _load(self, spec: FunctionSpec) -> Handler:
        # Lambda puts the function's code first, then its layers, then the runtime's own packages.
        for path in reversed((spec.code_uri, *spec.layers)):
            self._add_path(path)

        module_name = f"_local_{spec.logical_id}_{spec.handler_file.stem}"
        import_spec = importlib.util.spec_from_file_location(module_name, spec.handler_file)
        if import_spec is None or import_spec.loader is None or not spec.handler_file.is_file():
            raise TemplateError(f"{spec.logical_id}: no handler file at {spec.handler_file}")
        module = importlib.util.module_from_spec(import_spec)
        sys.modules[module_name] = module
        import_spec.loader.exec_module(module)

        handler = getattr(module, spec.handler_function, None)
        if not callable(handler):
            raise TemplateError(f"{spec.logical_id}: {spec.handler_file} has no callable {spec.handler_function}")
        logger.info("handler loaded", function=spec.logical_id, module_name=module_name, path=str(spec.handler_file))
        return handler  # type: ignore[no-any-return]

    def _add_path(self, path: Path) -> None:
        self._roots.append(path)
        text = str(path)
        if text in sys.path:
            return
        sys.path.insert(0, text)
        self._paths_added.append(text)

    def unload(self) -> None:
        """Forget the handlers' modules and the modules they imported from their code or layers, and the paths.

        Limitations:
            a layer module imported before the stack started (by a test, say) is kept, with whatever it cached.
        """
        for name in set(sys.modules) - (self._modules_before or set(sys.modules)):
            module = sys.modules.get(name)
            location = getattr(module, "__file__", None)
            if name.startswith("_local_") or (location and self._is_ours(Path(location))):
                del sys.modules[name]
        for text in self._paths_added:
            if text in sys.path:
                sys.path.remove(text)
        self._paths_added.clear()
        self._modules_before = None

    def _is_ours(self, location: Path) -> bool:
        return any(location.is_relative_to(root) for root in self._roots)


def _check_sibling_modules(specs: list[FunctionSpec]) -> None:
    """Two functions' code folders may not both hold a module of one name: in one process the first would win."""
    seen: dict[str, tuple[str, Path]] = {}
    for spec in specs:
        for name in top_level_modules(spec.code_uri) - {spec.handler_file.stem}:
            if name in seen and seen[name][1] != spec.code_uri:  # functions of one code folder share its modules
                raise TemplateError(
                    f"{seen[name][0]} and {spec.logical_id} both have a module {name!r}; one process cannot import both"
                )
            seen[name] = (spec.logical_id, spec.code_uri)


def top_level_modules(folder: Path) -> set[str]:
    if not folder.is_dir():
        return set()
    files = {path.stem for path in folder.glob("*.py")}
    packages = {path.parent.name for path in folder.glob("*/__init__.py")}
    return files | packages


# --- the AWS calls of each function ----------------------------------------------------------------------------------


class AwsCallRecorder:
    """Every AWS API call the handlers made, by function logical id, with the authorizations each needs in AWS.

    A call is attributed to the function whose invocation (or handler import) is running in the thread that makes
    it, through a context variable `FunctionRunner.invoke` sets around the handler. A call made from a thread with no
    invocation (a worker thread of a handler) is attributed to the function whose invocation or import created the
    client; the driver's and the tests' own calls are not recorded. Creating a recorder installs the hook that sees
    the calls (`install_call_hook`).

    Limitations:
        a client created before the hook was installed (by a module imported before the stack started) reports
        nothing; at most MAX_RECORDED_CALLS distinct calls are kept per function (`dropped` counts the rest).
    """

    def __init__(self, deployment: Deployment, *, limit: int = MAX_RECORDED_CALLS) -> None:
        install_call_hook()
        self.deployment = deployment
        self.limit = limit
        self.dropped = 0
        self._lock = threading.Lock()
        self._calls: dict[str, set[AwsCall]] = {}

    def record(self, function_id: str, service: str, operation: str, params: Mapping[str, Any]) -> None:
        """Keep one call of `service` (its IAM prefix) `operation` with `params` (the call's keyword arguments)."""
        try:
            permissions = permissions_needed(service, operation, params, self.deployment)
        except Exception:  # noqa: BLE001 - a call the table cannot read is kept with its action only
            logger.exception("aws call not understood", function=function_id, operation=f"{service}:{operation}")
            permissions = (Permission(f"{service}:{operation}"),)
        call = AwsCall(f"{service}:{operation}", permissions)

        with self._lock:
            calls = self._calls.setdefault(function_id, set())
            if call in calls:
                return
            if len(calls) >= self.limit:
                self.dropped += 1
                return
            calls.add(call)

    def calls(self) -> dict[str, set[AwsCall]]:
        """Every distinct call so far, by function logical id."""
        with self._lock:
            return {function_id: set(calls) for function_id, calls in self._calls.items()}

    def operations(self) -> dict[str, set[str]]:
        """The operations each function called, e.g. `{"ApiWriteFunction": {"dynamodb:UpdateItem", ...}}`."""
        return {function_id: {call.operation for call in calls} for function_id, calls in self.calls().items()}

    def clear(self) -> None:
        """Forget every call so far."""
        with self._lock:
            self._calls.clear()
            self.dropped = 0


_Attribution = tuple[AwsCallRecorder, str]

_current_function: ContextVar[_Attribution | None] = ContextVar("local_current_function", default=None)
"""The recorder and the function whose handler runs in this thread (threads start without one)."""

_hook_lock = threading.Lock()
_HOOK_MARK = "_local_aws_call_hook"


@contextmanager
def attributed_to(recorder: AwsCallRecorder | None, function_id: str) -> Iterator[None]:
    """Attribute the AWS calls made in this thread, inside the block, to `function_id` (nothing if no recorder)."""
    if recorder is None:
        yield
        return
    token = _current_function.set((recorder, function_id))
    try:
        yield
    finally:
        _current_function.reset(token)


def install_call_hook() -> None:
    """Make every botocore client created from now on, from any session, report each call to the recorder of the
    function that makes it; idempotent.

    boto3's default session is not enough: Powertools creates a session of its own for its idempotency table and its
    parameter providers. So `botocore.session.Session.create_client` is wrapped to register a `before-parameter-build`
    handler on each new client: it fires once per API call (each page of a paginator, not each retry) with the call's
    own keyword arguments, and costs a context variable lookup when no function is running.
    """
    with _hook_lock:
        if getattr(botocore.session.Session.create_client, _HOOK_MARK, False):
            return
        create_client = botocore.session.Session.create_client

        @functools.wraps(create_client)
        def create_recorded_client(self: botocore.session.Session, *args: Any, **kwargs: Any) -> Any:
            client = create_client(self, *args, **kwargs)
            owner = _current_function.get()
            client.meta.events.register("before-parameter-build", functools.partial(_on_call, owner))
            return client

        setattr(create_recorded_client, _HOOK_MARK, True)
        botocore.session.Session.create_client = create_recorded_client  # type: ignore[method-assign]


def _on_call(owner: _Attribution | None, params: Mapping[str, Any], model: Any, **_: Any) -> None:
    """botocore's `before-parameter-build` handler: record the call for the running function, else the client's."""
    attribution = _current_function.get() or owner
    if attribution is None:
        return
    recorder, function_id = attribution
    service_model = model.service_model
    service = service_model.signing_name or service_model.endpoint_prefix
    recorder.record(function_id, service, model.name, params)
