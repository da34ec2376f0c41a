"""`make demo`: a real workset folder dropped into S3 flows through the whole product on the local stack.

It starts the local stack as its own process (what `make local` runs, on free ports, logging to
`.local/demo-stack.log`), then acts as people and machines would: it uploads the example folders under
`examples/worksets/` (files first, the `daylily.ready` sentinel last), starts two cluster agents on two clusters (a
cheap one with room for one workset, a dearer one with room for two), each as its own process, and prints what
happened through the API and a queue subscribed to the SNS topic: the valid workset's timeline up to
`complete`, the invalid one's reasons, and the notifications. A fourth workset, whose run is slow, is canceled while
it runs: its agent stops the run's process group. It exits 0 only when the valid worksets reached `complete`, the
invalid one is in `error`, the canceled one stayed `canceled` with its run stopped, and no run started twice.

`python -m local.demo --stay` keeps the stack up after the demo, until Ctrl-C, to look at it (the dashboard, the
`workset` command with the printed environment).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import boto3

from agent.client import ApiClient
from agent.runbook import group_alive
from local.receivers import FakeLinear, WebhookReceiver
from workset_cli.dashboard import ViewerCredentials, dashboard_url

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "worksets"
FAKE_DY_R = ROOT / "examples" / "pipeline" / "fake-dy-r.sh"
LOCAL_DIR = ROOT / ".local"
VALID = "hg002-giab-wgs-30x"
RETRIED = "hg003-wes-normal"
INVALID = "broken-sheet-example"
RETRY_BASE_SECONDS = 2
"""The demo's stack retries a transient failure after 2 s (deployed, the default is 60 s)."""
CLUSTER = "demo-cluster-usw2a"
SECOND_CLUSTER = "demo-cluster-usw2b"
"""A cheaper cluster with room for one workset: the scheduler fills it first, the other cluster takes the rest."""
CANCELED = "wes-canceled-mid-run"
"""A copy of the exome example whose run is slow (FAKE_DYR_SLOW_WORKSETS): the demo cancels it while it runs."""
RUNS_FILE = LOCAL_DIR / "demo-runs.tsv"
"""Where the stand-in for dy-r writes a line per run it starts: how the demo sees that no run started twice."""
TIMEOUT_SECONDS = 90.0
LOCAL_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}

T = TypeVar("T")


@dataclass(frozen=True)
class Stack:
    """A running local stack as `.local/stack.json` describes it: what any client of it knows."""

    description: dict[str, Any]

    @property
    def api_url(self) -> str:
        return str(self.description["api_url"])

    @property
    def emulator_url(self) -> str:
        return str(self.description["emulator_url"])

    @property
    def region(self) -> str:
        return str(self.description["region"])

    @property
    def bucket(self) -> str:
        return str(self.description["bucket"])

    @property
    def prefix(self) -> str:
        return str(self.description["prefix"])

    @property
    def inbox_queue_url(self) -> str:
        return str(self.description["inbox_queue_url"])

    def client(self, service: str) -> Any:
        return boto3.client(
            service,  # type: ignore[call-overload]
            endpoint_url=self.emulator_url,
            region_name=self.region,
            aws_access_key_id=LOCAL_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=LOCAL_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        )

    def api(self, **options: Any) -> ApiClient:
        session = boto3.Session(
            aws_access_key_id=LOCAL_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=LOCAL_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            region_name=self.region,
        )
        return ApiClient(self.api_url, region=self.region, session=session, **options)


@contextmanager
def local_stack(
    name: str = "demo", schedule_seconds: float = 1.0, parameters: dict[str, str] | None = None
) -> Iterator[Stack]:
    """Run `python -m local.stack` on free ports until the block ends; its log goes to `.local/<name>-stack.log`.
    `parameters` override the template's."""
    LOCAL_DIR.mkdir(exist_ok=True)
    state_file = LOCAL_DIR / f"{name}-stack.json"
    state_file.unlink(missing_ok=True)
    command = [
        sys.executable,
        "-m",
        "local.stack",
        "--emulator-port",
        "0",
        "--api-port",
        "0",
        "--schedule-seconds",
        str(schedule_seconds),
        "--poll-interval",
        "0.2",
        "--state-file",
        str(state_file),
        *(f"--parameter={key}={value}" for key, value in (parameters or {}).items()),
    ]
    with (LOCAL_DIR / f"{name}-stack.log").open("w") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=_environment(), stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: state_file.exists() or process.poll() is not None or None, "the local stack to start")
            if process.poll() is not None:
                raise SystemExit(f"demo: the local stack did not start; see {log.name}")
            yield Stack(json.loads(state_file.read_text()))
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--stay", action="store_true", help="keep the local stack up after the demo, until Ctrl-C")
    args = parser.parse_args(argv)
    # SIGTERM ends the demo as Ctrl-C does: the agents and the stack it started are stopped on the way out.
    signal.signal(signal.SIGTERM, _exit_on_signal)

    with (
        DemoChannels() as channels,
        local_stack(parameters={"RetryBaseSeconds": str(RETRY_BASE_SECONDS), **channels.parameters()}) as stack,
        running_agents() as agents,  # stopped first, while the stack still answers them
    ):
        _say(f"local stack up: emulator {stack.emulator_url}, API {stack.api_url} (log: .local/demo-stack.log)")
        channels.store_secrets(stack)
        s3 = stack.client("s3")
        api = stack.api()

        for name, folder in ((VALID, VALID), (RETRIED, RETRIED), (INVALID, INVALID), (CANCELED, RETRIED)):
            count = upload_workset(s3, stack.bucket, stack.prefix, EXAMPLES / folder, name)
            _say(f"uploaded {count} files to s3://{stack.bucket}/{stack.prefix}{name}/, then daylily.ready")
        for name in (VALID, RETRIED, INVALID, CANCELED):
            workset = wait_for(partial(find, api, name), f"{name} to be registered")
            _say(f"{name} registered: {workset['state']}, priority {workset['priority']}, attempt {workset['attempt']}")

        _say(f"{RETRIED}'s first attempt will fail with a transient error (exit 75), then retry by itself")
        _say(f"{CANCELED}'s run is slow: the demo cancels it while it runs")
        _say("two agents, two clusters: the scheduler gives each workset to the cheapest cluster with room")
        RUNS_FILE.unlink(missing_ok=True)
        slow = {"FAKE_DYR_SLOW_WORKSETS": CANCELED, "FAKE_DYR_RUNS_FILE": str(RUNS_FILE)}
        agents[SECOND_CLUSTER] = start_agent(
            stack,
            SECOND_CLUSTER,
            fail_first_attempt_of=RETRIED,
            max_worksets=1,
            cost_per_vcpu_hour=0.03,
            environment=slow,
        )
        agents[CLUSTER] = start_agent(stack, CLUSTER, fail_first_attempt_of=RETRIED, environment=slow)
        stopped = cancel_mid_run(api, CANCELED)
        outcomes = {name: wait_for(partial(finished, api, name), f"{name} to finish") for name in (VALID, RETRIED)}
        agent_outputs = {cluster: _stop(agent) for cluster, agent in agents.items()}
        inbox = Inbox(stack)
        wait_for(lambda: inbox.until_completion_of(RETRIED), "the completion notifications")
        folders = {name: f"{stack.prefix}{name}/" for name in outcomes}
        sentinels = {
            name: wait_for(partial(settled_sentinels, s3, stack.bucket, folders[name]), "sentinels") for name in folders
        }

        for cluster, output in agent_outputs.items():
            print_agent(output, cluster)
        for name, workset in outcomes.items():
            print_timeline(workset)
            print(f"  ran on cluster {workset.get('cluster')}")
            print(f"  sentinels now in its folder: {', '.join(sentinels[name])}")
            print(f"  the agent's log tails: {', '.join(agent_logs(s3, stack.bucket, folders[name]))}")
        print_cancel(stopped)
        twice = print_runs(started_runs())
        invalid = api.get_workset(INVALID)
        print_reasons(invalid)
        print_notifications(inbox.messages)
        wait_for(lambda: channels.until_settled(RETRIED), "the notifications of every channel", seconds=30)
        channels.print_deliveries(stack)
        print_dashboard(stack)
        print_metrics(LOCAL_DIR / "demo-stack.log")

        summary = {name: (workset["state"], workset["attempt"]) for name, workset in outcomes.items()}
        canceled = api.get_workset(CANCELED)
        ok = (
            summary == {VALID: ("complete", 1), RETRIED: ("complete", 2)}
            and invalid["state"] == "error"
            and canceled["state"] == "canceled"
            and not twice
        )
        print()
        _say(
            f"{VALID} is {outcomes[VALID]['state']}, {RETRIED} is {outcomes[RETRIED]['state']} "
            f"after {outcomes[RETRIED]['attempt']} attempts, {INVALID} is {invalid['state']}, {CANCELED} is "
            f"{canceled['state']} with its run stopped: demo {'passed' if ok else 'FAILED'}"
        )
        if args.stay:
            stay(stack)
        return 0 if ok else 1


@dataclass(frozen=True)
class StoppedRun:
    """A workset canceled mid-run, and how its run ended: the process group the agent stopped."""

    workset: dict[str, Any]
    cluster: str
    pgid: int
    gone_after: float
    """Seconds from the cancel until no process of the run's group was left."""


def cancel_mid_run(api: ApiClient, workset_id: str) -> StoppedRun:
    """Cancel a workset once its (slow) run is going, as a person would, and wait for its agent to stop the run's
    whole process group: the run's processes are gone and the workset stays canceled."""
    running = wait_for(partial(_running, api, workset_id), f"{workset_id} to be running")
    run = wait_for(lambda: next((r for r in started_runs() if r["workset_id"] == workset_id), None), "its run")
    _say(f"{workset_id} runs on {running['cluster']} (process group {run['pgid']}): canceling it")

    api.act(workset_id, "cancel", actor="demo", reason="canceled mid-run by the demo")
    canceled_at = time.monotonic()
    wait_for(lambda: None if group_alive(run["pgid"]) else True, f"the run of {workset_id} to stop", seconds=30)
    gone_after = time.monotonic() - canceled_at

    workset = wait_for(partial(finished, api, workset_id), f"{workset_id} to settle")
    return StoppedRun(workset, str(running["cluster"]), run["pgid"], gone_after)


def _running(api: ApiClient, workset_id: str) -> dict[str, Any] | None:
    workset = api.get_workset(workset_id)
    return workset if workset["state"] == "in_progress" and workset.get("progress") == "pipeline running" else None


def started_runs() -> list[dict[str, Any]]:
    """The runs the stand-in for dy-r started, from its runs file: workset id, attempt, pid and process group."""
    if not RUNS_FILE.exists():
        return []
    runs = []
    for line in RUNS_FILE.read_text().splitlines():
        workset_id, attempt, pid, pgid = line.split("\t")
        if not pgid:
            continue  # the stand-in could not read its process group
        runs.append({"workset_id": workset_id, "attempt": int(attempt), "pid": int(pid), "pgid": int(pgid)})
    return runs


def print_cancel(stopped: StoppedRun) -> None:
    print_timeline(stopped.workset)
    print(
        f"  canceled mid-run on {stopped.cluster}: its agent stopped the run's process group {stopped.pgid}, gone "
        f"{stopped.gone_after:.1f} s after the cancel; the workset stayed {stopped.workset['state']}"
    )


def print_runs(runs: list[dict[str, Any]]) -> list[tuple[str, int]]:
    """Print the runs started, and return the (workset, attempt) pairs that started more than once."""
    counts: dict[tuple[str, int], int] = {}
    for run in runs:
        key = (run["workset_id"], run["attempt"])
        counts[key] = counts.get(key, 0) + 1
    twice = [key for key, count in counts.items() if count > 1]
    shown = ", ".join(f"{workset_id} #{attempt}" for workset_id, attempt in counts)
    verdict = "none twice" if not twice else f"TWICE: {twice}"
    print(f"\nruns the pipeline started ({len(runs)}): {shown}; {verdict}")
    return twice


def stay(stack: Stack) -> None:
    """Keep the stack up until Ctrl-C, saying how to reach it."""
    print()
    _say(f"the stack stays up until Ctrl-C: API {stack.api_url}, emulator {stack.emulator_url}")
    # S3 and STS (for `workset dashboard`, which trades long-term keys for temporary ones) are the emulator's.
    environment = (
        f"WORKSET_API_URL={stack.api_url} WORKSET_BUCKET={stack.bucket} AWS_ACCESS_KEY_ID=testing "
        f"AWS_SECRET_ACCESS_KEY=testing AWS_REGION={stack.region} AWS_ENDPOINT_URL_S3={stack.emulator_url} "
        f"AWS_ENDPOINT_URL_STS={stack.emulator_url}"
    )
    _say(f"in another terminal: export {environment}")
    _say("  then e.g. .venv/bin/workset list, .venv/bin/workset show hg002-giab-wgs-30x, .venv/bin/workset dashboard")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        _say("stopping the stack")


@contextmanager
def running_agents() -> Iterator[dict[str, subprocess.Popen[str]]]:
    """The agents the demo starts, by cluster; any still running when the block ends (an error, Ctrl-C, SIGTERM)
    is stopped, as a head node's init system would stop it."""
    agents: dict[str, subprocess.Popen[str]] = {}
    try:
        yield agents
    finally:
        for agent in agents.values():
            if agent.poll() is None:
                agent.send_signal(signal.SIGTERM)
        for agent in agents.values():
            try:
                agent.wait(timeout=30)
            except subprocess.TimeoutExpired:
                agent.kill()
                agent.wait()


def _exit_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def print_dashboard(stack: Stack) -> None:
    """The dashboard's local address, signed in with the local keys through its fragment (see `workset dashboard`)."""
    keys = ViewerCredentials(LOCAL_CREDENTIALS["AWS_ACCESS_KEY_ID"], LOCAL_CREDENTIALS["AWS_SECRET_ACCESS_KEY"])
    print()
    _say(
        f"dashboard, while this stack runs: {dashboard_url(stack.api_url, keys, stack.region)} "
        "(or sign in at /dashboard with testing / testing). The stack stops when the demo ends: "
        "`.venv/bin/python -m local.demo --stay` keeps it up; with `make local` up: .venv/bin/workset dashboard --open"
    )


def upload_workset(s3: Any, bucket: str, prefix: str, folder: Path, name: str | None = None) -> int:
    """Upload a workset folder as a person would: its files first, the ready sentinel last."""
    name = name or folder.name
    files = sorted(path for path in folder.rglob("*") if path.is_file())
    for path in files:
        s3.upload_file(str(path), bucket, f"{prefix}{name}/{path.relative_to(folder).as_posix()}")

    stamp = datetime.now(UTC).isoformat()
    s3.put_object(Bucket=bucket, Key=f"{prefix}{name}/daylily.ready", Body=stamp.encode())
    return len(files)


def start_agent(
    stack: Stack,
    cluster: str = CLUSTER,
    *,
    fail_first_attempt_of: str = "",
    max_worksets: int = 2,
    cost_per_vcpu_hour: float = 0.0425,
    work_root: Path | None = None,
    exit_when_idle: float | None = 5,
    environment: dict[str, str] | None = None,
) -> subprocess.Popen[str]:
    """The cluster agent as its own process, as it runs on a head node, with the harmless stand-in for dy-r (which
    fails the first attempt of `fail_first_attempt_of` with a transient error). It copies workset folders from the
    emulator's S3 and writes its log tails back there. `environment` adds to the agent's (e.g. the stand-in's
    FAKE_DYR_* options)."""
    command = [
        sys.executable,
        "-m",
        "agent",
        "--api",
        stack.api_url,
        "--cluster",
        cluster,
        "--run-prefix",
        str(FAKE_DY_R),
        "--region",
        stack.region,
        "--max-worksets",
        str(max_worksets),
        "--vcpus",
        "192",
        "--cost-per-vcpu-hour",
        str(cost_per_vcpu_hour),
        "--heartbeat-seconds",
        "1",
        "--poll-seconds",
        "0.5",
        "--work-root",
        str(work_root or LOCAL_DIR / "agent-work" / cluster),
    ]
    if exit_when_idle is not None:
        command += ["--exit-when-idle", str(exit_when_idle)]
    env = {
        **_environment(),
        "AWS_ENDPOINT_URL_S3": stack.emulator_url,
        "FAKE_DYR_FAIL_WORKSETS": fail_first_attempt_of,
        "FAKE_DYR_STEP_SECONDS": "0.4",
        **(environment or {}),
    }
    _say(f"agent started for cluster {cluster} (up to {max_worksets} worksets at once, ${cost_per_vcpu_hour}/vCPU-h)")
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


class Inbox:
    """The queue subscribed to the SNS topic: what a subscriber of the topic received."""

    def __init__(self, stack: Stack) -> None:
        self.sqs = stack.client("sqs")
        self.queue_url = stack.inbox_queue_url
        self.messages: list[dict[str, Any]] = []

    def until_completion_of(self, workset_id: str) -> list[dict[str, Any]] | None:
        """Every message so far, or None until the completion of `workset_id` has arrived."""
        while batch := self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10).get("Messages"):
            for message in batch:
                self.messages.append(json.loads(message["Body"]))
                self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])

        wanted = {"event_type": "completion", "workset_id": workset_id}
        for message in self.messages:
            if wanted.items() <= attributes(message).items():
                return list(self.messages)
        return None


def attributes(message: dict[str, Any]) -> dict[str, str]:
    """An SNS message's attributes as plain strings."""
    return {name: value["Value"] for name, value in message.get("MessageAttributes", {}).items()}


def agent_logs(s3: Any, bucket: str, folder: str) -> list[str]:
    """The log tails the agents wrote into the folder, one per attempt."""
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=folder + "logs/").get("Contents", [])
    return sorted(obj["Key"][len(folder) :] for obj in listed)


def print_agent(output: str, cluster: str = CLUSTER) -> None:
    print(f"\nagent log ({cluster}):")
    for line in output.splitlines():
        print(f"  {line}")


def print_timeline(workset: dict[str, Any]) -> None:
    print(f"\ntimeline of {workset['workset_id']} (attempt {workset['attempt']}):")
    start = datetime.fromisoformat(workset["history"][0]["at"])
    for entry in workset["history"]:
        offset = (datetime.fromisoformat(entry["at"]) - start).total_seconds()
        if entry["event"] == "transition":
            label = f"{entry['from_state']} -> {entry['to_state']}"
        else:
            label = f"{entry['event']} ({entry['to_state']})"
        print(f"  +{offset:6.2f}s  #{entry['attempt']}  {label:<24} by {entry['actor']:<14} {entry.get('reason', '')}")


def print_reasons(workset: dict[str, Any]) -> None:
    print(f"\n{workset['workset_id']} is {workset['state']} ({workset.get('error_category')}) because:")
    for reason in workset.get("error_reasons", []):
        print(f"  - {reason}")


def print_notifications(messages: list[dict[str, Any]]) -> None:
    print(f"\nSNS messages received by a queue subscribed to the topic ({len(messages)}):")
    for message in messages:
        seen = attributes(message)
        print(
            f"  {seen.get('event_type', '?'):<15} {seen.get('workset_id', '?'):<21} {seen.get('state', '?'):<11} "
            f"{seen.get('priority', '?'):<6}  {message.get('Subject', '')}"
        )


# --- notifications per channel ---------------------------------------------------------------------------------------
# Besides the SNS topic, the demo's stack notifies a fake Linear and a webhook receiver that run in this process (see
# local/receivers.py): a signed JSON webhook, a Slack-shaped one and PagerDuty Events v2. The stack is told where they
# are through the NotifyChannels parameter; their secrets go into the emulator's SSM and Secrets Manager, as an
# operator would put them, before any workset is dropped.

DEMO_SECRETS = "workset-monitor/local/notify/"
"""The prefix the local stack's notify function may read secrets under (Stage=local)."""
LINEAR_API_KEY = "lin_api_demo_not_a_real_key"
WEBHOOK_SIGNING_SECRET = "whsec_demo_not_a_real_secret"
PAGERDUTY_ROUTING_KEY = "R0UT1NGKEYDEMO"
FAILURES_AND_COMPLETIONS = {"event_types": ["error", "lease_expired", "retry_scheduled", "completion"]}


class DemoChannels:
    """The receivers of the demo's notification channels, their configuration and their secrets."""

    WEBHOOK_PATH = "/lab/workset-events"
    SLACK_PATH = "/services/T0DEMO/B0DEMO/demo"
    PAGERDUTY_PATH = "/v2/enqueue"

    def __init__(self) -> None:
        self.linear = FakeLinear(LINEAR_API_KEY)
        self.receiver = WebhookReceiver(WEBHOOK_SIGNING_SECRET)
        self.pagerduty = WebhookReceiver()

    def __enter__(self) -> DemoChannels:
        for server in (self.linear, self.receiver, self.pagerduty):
            server.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        for server in (self.linear, self.receiver, self.pagerduty):
            server.stop()

    def parameters(self) -> dict[str, str]:
        """The NotifyChannels parameter that points the stack's channels at these receivers."""
        channels = [
            {"name": "sns", "type": "sns"},
            {
                "name": "linear",
                "type": "linear",
                "team_id": self.linear.team_id,
                "api_key": f"ssm:/{DEMO_SECRETS}linear-api-key",
                "url": f"{self.linear.url}/graphql",
                "filter": FAILURES_AND_COMPLETIONS,
            },
            {
                "name": "lab-webhook",
                "type": "webhook",
                "url": self.receiver.url + self.WEBHOOK_PATH,
                "signing_secret": f"ssm:/{DEMO_SECRETS}webhook-signing-secret",
            },
            {
                "name": "lab-slack",
                "type": "webhook",
                "format": "slack",
                "url": f"secretsmanager:{DEMO_SECRETS}slack-webhook-url",
                "signing_secret": f"ssm:/{DEMO_SECRETS}webhook-signing-secret",
                "filter": FAILURES_AND_COMPLETIONS,
            },
            {
                "name": "oncall",
                "type": "webhook",
                "format": "pagerduty",
                "url": self.pagerduty.url + self.PAGERDUTY_PATH,
                "routing_key": f"secretsmanager:{DEMO_SECRETS}pagerduty-routing-key",
            },
        ]
        return {"NotifyChannels": json.dumps(channels)}

    def store_secrets(self, stack: Stack) -> None:
        ssm, secrets = stack.client("ssm"), stack.client("secretsmanager")
        ssm.put_parameter(Name=f"/{DEMO_SECRETS}linear-api-key", Value=LINEAR_API_KEY, Type="SecureString")
        ssm.put_parameter(
            Name=f"/{DEMO_SECRETS}webhook-signing-secret", Value=WEBHOOK_SIGNING_SECRET, Type="SecureString"
        )
        secrets.create_secret(Name=f"{DEMO_SECRETS}slack-webhook-url", SecretString=self.receiver.url + self.SLACK_PATH)
        secrets.create_secret(Name=f"{DEMO_SECRETS}pagerduty-routing-key", SecretString=PAGERDUTY_ROUTING_KEY)
        _say(f"notification secrets stored in the emulator's SSM and Secrets Manager under {DEMO_SECRETS}")

    def until_settled(self, workset_id: str) -> bool | None:
        """True once every channel has had the completion of `workset_id` (the issue closed, the webhooks posted)."""
        issues = self.linear.issues_of(workset_id)
        closed = bool(issues) and all(self.linear.is_done(issue) for issue in issues)
        completions = [
            item
            for item in self.receiver.deliveries(self.WEBHOOK_PATH)
            if item.json()["event"]["workset_id"] == workset_id and item.json()["type"] == "completion"
        ]
        resolved = [item for item in self.pagerduty.deliveries() if item.json()["event_action"] == "resolve"]
        return True if closed and completions and resolved else None

    def print_deliveries(self, stack: Stack) -> None:
        print("\nnotifications per channel, besides the SNS topic:")

        print(f"  linear: fake Linear GraphQL API at {self.linear.url}/graphql")
        for issue in self.linear.issues_of(""):
            status = "done" if self.linear.is_done(issue) else "open"
            print(f"    {issue.identifier}  {status:<4}  {len(issue.comments)} comments  {issue.title[:90]}")

        hooks = self.receiver.deliveries(self.WEBHOOK_PATH)
        verified = sum(1 for item in hooks if item.verified)
        print(f"  lab-webhook: {len(hooks)} signed JSON posts, {verified} signatures verified by the receiver")
        for item in hooks:
            event = item.json()["event"]
            print(f"    {event['event_type']:<15} {event['workset_id']:<21} {event['state']:<11} v{event['version']}")

        slack = self.receiver.deliveries(self.SLACK_PATH)
        print(f"  lab-slack: {len(slack)} Slack messages (text and blocks)")
        for item in slack:
            print(f"    {item.json()['text'][:100]}")

        pagerduty = self.pagerduty.deliveries()
        print(f"  oncall: {len(pagerduty)} PagerDuty Events v2 events, one alert per workset")
        for item in pagerduty:
            body = item.json()
            summary = body.get("payload", {}).get("summary", "")
            print(f"    {body['event_action']:<8} {body['dedup_key'].rsplit('/', 1)[-1]:<21} {summary[:70]}")

        failures = stack.client("sqs").get_queue_attributes(
            QueueUrl=stack.description["resources"]["NotifyFailureQueue"],
            AttributeNames=["ApproximateNumberOfMessages"],
        )["Attributes"]["ApproximateNumberOfMessages"]
        print(f"  undeliverable (stream batches in the notify failure queue): {failures}")


# --- end of notifications per channel --------------------------------------------------------------------------------


# --- the metrics the functions emitted ------------------------------------------------------------------------------
# The functions print their metrics in CloudWatch's embedded metric format (EMF): one JSON line each, which Lambda's
# log would turn into CloudWatch metrics. Locally they land in the stack's log, read back here.

MetricKey = tuple[str, tuple[tuple[str, str], ...]]
"""A metric's name and its dimensions (name, value), as CloudWatch tells metrics apart."""


def emitted_metrics(lines: Iterable[str], *, hidden: Collection[str] = ("service",)) -> dict[MetricKey, list[float]]:
    """Every data point in the EMF lines among `lines`, by metric name and dimensions (those in `hidden` left out).
    Lines that are not EMF are skipped."""
    points: dict[MetricKey, list[float]] = {}
    for document in _emf_documents(lines):
        if document is None:
            continue  # a cut line: `print_metrics` says how many

        for directive in document["_aws"]["CloudWatchMetrics"]:
            for dimension_names in directive["Dimensions"]:
                dimensions = tuple((name, str(document[name])) for name in dimension_names if name not in hidden)
                for metric in directive["Metrics"]:
                    values = document[metric["Name"]]
                    key = (metric["Name"], dimensions)
                    points.setdefault(key, []).extend(values if isinstance(values, list) else [values])
    return points


def print_metrics(log: Path) -> None:
    """A summary of the metrics the functions emitted: per metric and dimensions, the data points and their sum and
    largest value."""
    lines = log.read_text(errors="replace").splitlines()
    points = emitted_metrics(lines)
    unreadable = sum(1 for document in _emf_documents(lines) if document is None)
    print(f"\nmetrics the functions emitted (EMF lines in {log.relative_to(ROOT)}, namespace WorksetMonitor):")
    if unreadable:
        print(f"  ({unreadable} EMF lines could not be read and are left out)")
    print(f"  {'metric':<20} {'dimensions':<44} {'points':>6} {'sum':>10} {'max':>10}")
    shown = ""
    for (name, dimensions), values in sorted(points.items()):
        label = " ".join(f"{dimension}={value}" for dimension, value in dimensions) or "-"
        totals = f"{len(values):>6} {sum(values):>10.6g} {max(values):>10.6g}"
        print(f"  {name if name != shown else '':<20} {label:<44} {totals}")
        shown = name


def _emf_documents(lines: Iterable[str]) -> Iterator[dict[str, Any] | None]:
    """The EMF documents among `lines`, parsed; None for a line that holds one but is not whole JSON."""
    for line in lines:
        if '"_aws"' not in line:
            continue
        try:
            yield json.loads(line)
        except ValueError:
            yield None


def settled_sentinels(s3: Any, bucket: str, folder: str) -> list[str] | None:
    """The folder's sentinels once the mirror has written the outcome and removed the lock."""
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=folder + "daylily.").get("Contents", [])
    names = sorted(obj["Key"][len(folder) :] for obj in listed)
    return names if "daylily.lock" not in names and {"daylily.complete", "daylily.error"} & set(names) else None


def find(api: ApiClient, workset_id: str) -> dict[str, Any] | None:
    return api.find_workset(workset_id)


def finished(api: ApiClient, workset_id: str) -> dict[str, Any] | None:
    """The workset once nothing more will happen to it by itself: complete, canceled, or failed with no retry due."""
    workset = api.get_workset(workset_id)
    final = workset["state"] in ("complete", "canceled") or (
        workset["state"] == "error" and not workset.get("retry_at")
    )
    return workset if final else None


def wait_for(probe: Callable[[], T | None], what: str, seconds: float = TIMEOUT_SECONDS) -> T:
    """Poll `probe` until it returns something other than None, or give up after `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = probe()
        if value is not None:
            return value
        time.sleep(0.2)
    raise SystemExit(f"demo: gave up waiting for {what} after {seconds:.0f} s")


def _stop(process: subprocess.Popen[str]) -> str:
    try:
        output, _ = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
    return output


def _environment() -> dict[str, str]:
    path = os.pathsep.join(filter(None, [str(ROOT), str(ROOT / "layers" / "common"), os.environ.get("PYTHONPATH")]))
    return {**os.environ, **LOCAL_CREDENTIALS, "PYTHONPATH": path}


def _say(text: str) -> None:
    print(f"[demo] {text}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
