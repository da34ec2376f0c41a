"""The local stack's function runtime and log stream: what keeps the functions of one process from mixing, as Lambda
keeps them apart with execution environments and logs of their own."""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path
from typing import Any

from local.runtime import FunctionRunner
from local.stack import WholeLines
from local.template import FunctionSpec


def spec(name: str) -> FunctionSpec:
    return FunctionSpec(
        logical_id=name,
        function_name=f"workset-monitor-test-{name}",
        arn=f"arn:aws:lambda:us-east-1:123456789012:function:{name}",
        code_uri=Path("."),
        handler="app.lambda_handler",
        runtime="python3.12",
        timeout=60,
        memory_size=512,
        environment={},
        layers=(),
        events=(),
    )


def test_invocations_of_one_function_take_turns_as_in_one_execution_environment() -> None:
    # GIVEN a handler that notes how many of its invocations run at once
    running, most = 0, 0
    lock = threading.Lock()

    def handler(event: Any, context: Any) -> None:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.02)
        with lock:
            running -= 1

    runner = FunctionRunner(spec("Api"), handler)

    # WHEN eight threads invoke it at once
    threads = [threading.Thread(target=runner.invoke, args=({},), kwargs={"trigger": "test"}) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # THEN one ran at a time: its module-level state (the API's resolver, Powertools' keys) served one invocation
    assert most == 1


def test_invocations_of_two_functions_still_run_at_once() -> None:
    both = threading.Barrier(2, timeout=5)

    def handler(event: Any, context: Any) -> None:
        both.wait()  # returns only when the other function's invocation is running too

    first, second = FunctionRunner(spec("Register"), handler), FunctionRunner(spec("Notify"), handler)
    thread = threading.Thread(target=first.invoke, args=({},), kwargs={"trigger": "test"})
    thread.start()

    outcome = second.invoke({}, trigger="test")
    thread.join()

    assert outcome.ok, outcome.error


class SlowStream(io.StringIO):
    """A log that yields to other threads after every write, as a pipe to a busy reader may."""

    def write(self, text: str) -> int:
        written = super().write(text)
        time.sleep(0.0005)
        return written


def test_lines_printed_by_threads_at_once_stay_whole() -> None:
    # GIVEN the stack's stdout, and threads printing long lines as Powertools prints EMF (text, then its newline)
    target = SlowStream()
    stream = WholeLines(target)
    line = {name: name * 400 for name in "abcdefgh"}

    def say(name: str) -> None:
        for _ in range(20):
            print(line[name], file=stream)

    threads = [threading.Thread(target=say, args=(name,)) for name in line]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # THEN every line came out whole
    written = target.getvalue().splitlines()
    assert len(written) == 8 * 20
    assert set(written) == set(line.values())


def test_a_line_written_in_pieces_waits_for_its_newline() -> None:
    target = io.StringIO()
    stream = WholeLines(target)

    stream.write('{"_aws": ')
    assert target.getvalue() == ""

    stream.write('{}}\n{"next"')
    assert target.getvalue() == '{"_aws": {}}\n'
