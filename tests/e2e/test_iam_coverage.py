"""Every AWS call each function makes in the product's flows is one its IAM policies in template.yaml allow.

The emulator does not enforce IAM, so a handler calling an action its role lacks passes every other test and fails in
AWS (the API's lease heartbeat once called `dynamodb:UpdateItem` without it). Here one local stack, with every
function's real code, runs what people, agents and AWS do: folders dropped into S3 (valid, broken, ignored, dropped
again), a folder registered through the API, clusters registering, heartbeating and retiring, worksets claimed,
heartbeated, run, failed with a transient error and retried by the scheduler, canceled, retried, released, archived,
restored, a broken folder retried through the API (validated again), a lease left to expire, every read route, and
the notifications to SNS, a webhook (signing secret in SSM) and Linear (API key in Secrets Manager). The stack records
each call of each handler (`LocalStack.aws_call_details`); `local.iam` checks each against the role SAM builds from
the function's `Policies`.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import quote

import boto3
import pytest

from agent.client import ApiClient, ApiError
from local.demo import EXAMPLES, INVALID, RETRIED, VALID, upload_workset
from local.emulator import ACCESS_KEY_ID, SECRET_ACCESS_KEY
from local.iam import AwsCall, Violation, find_violations, function_policies
from local.receivers import FakeLinear, WebhookReceiver
from local.stack import LocalStack
from local.template import FUNCTION, Template

pytestmark = pytest.mark.e2e

T = TypeVar("T")

SIGNING_SECRET = "whsec-iam-coverage"
LINEAR_KEY = "lin_api_iam_coverage"
SECRETS = "workset-monitor/local/notify/"
"""Where the notify function may read its channels' secrets (the template's NOTIFY_SECRETS_PREFIX, Stage=local)."""

CLUSTER = "iam-cluster"
TRANSIENT = "iam transient é"
EXPIRING = "iam-expiring"
IGNORED = "iam-ignored"
BY_API = "iam-registered-by-api"


@pytest.fixture(scope="module")
def receivers() -> Iterator[tuple[WebhookReceiver, FakeLinear]]:
    with WebhookReceiver(SIGNING_SECRET) as webhook, FakeLinear(LINEAR_KEY) as linear:
        yield webhook, linear  # type: ignore[misc]


@pytest.fixture(scope="module")
def stack(receivers: tuple[WebhookReceiver, FakeLinear]) -> Iterator[LocalStack]:
    webhook, linear = receivers
    channels = [
        {"name": "sns", "type": "sns"},
        {
            "name": "hook",
            "type": "webhook",
            "url": webhook.url + "/hooks",
            "signing_secret": f"ssm:/{SECRETS}signing",
            "timeout_seconds": 2,
        },
        {
            "name": "linear",
            "type": "linear",
            "team_id": linear.team_id,
            "api_key": f"secretsmanager:{SECRETS}linear",
            "url": linear.url + "/graphql",
            "timeout_seconds": 2,
        },
    ]
    parameters = {"RetryBaseSeconds": "1", "NotifyChannels": json.dumps(channels)}
    with LocalStack(
        emulator_port=0, api_port=0, poll_interval=0.05, schedule_seconds=0.3, parameters=parameters
    ) as running:
        # The channels read their secrets at their first delivery, after these exist.
        running.client("ssm").put_parameter(Name=f"/{SECRETS}signing", Value=SIGNING_SECRET, Type="SecureString")
        running.client("secretsmanager").create_secret(Name=f"{SECRETS}linear", SecretString=LINEAR_KEY)
        yield running


@pytest.fixture(scope="module")
def calls(stack: LocalStack, receivers: tuple[WebhookReceiver, FakeLinear]) -> dict[str, set[AwsCall]]:
    """Run every flow once; the distinct calls each function made, by logical id."""
    session = boto3.Session(
        aws_access_key_id=ACCESS_KEY_ID, aws_secret_access_key=SECRET_ACCESS_KEY, region_name=stack.region
    )
    api = ApiClient(str(stack.api_url), region=stack.region, session=session, retries=0)
    flows = Flows(stack, api)

    flows.drop_folders()
    flows.register_through_the_api()
    flows.run_a_workset_to_complete()
    flows.fail_transiently_and_retry_by_itself()
    flows.cancel_retry_and_release()
    flows.archive_and_restore()
    flows.let_a_lease_expire()
    flows.retire_the_cluster_holding_an_assignment()
    flows.read_every_route()
    flows.wait_for_the_stream_to_settle(receivers[0])
    return stack.aws_call_details()


def test_every_call_of_every_function_is_allowed_by_its_policies(
    stack: LocalStack, calls: dict[str, set[AwsCall]]
) -> None:
    # WHEN every call of the flows is checked against the role SAM builds from the template
    violations = find_violations(calls, function_policies(stack.template))

    # THEN none would be refused in AWS
    assert violations == [], report(violations)


def test_the_flows_reach_every_function_and_the_calls_that_matter(
    stack: LocalStack, calls: dict[str, set[AwsCall]]
) -> None:
    # Every function ran its real code and made calls (a flow that stopped reaching one would check nothing)
    operations = stack.aws_calls()
    assert set(operations) == set(stack.template.resources(FUNCTION)), operations

    # AND the calls that only some paths make were made
    expected = {
        "RegisterFunction": {"s3:ListObjectsV2", "s3:GetObject", "dynamodb:GetItem", "dynamodb:TransactWriteItems"},
        "ApiWriteFunction": {"dynamodb:UpdateItem", "dynamodb:TransactWriteItems", "s3:GetObject"},
        "ApiReadFunction": {"dynamodb:GetItem", "dynamodb:Query"},
        "ScheduleFunction": {"dynamodb:Query", "dynamodb:TransactWriteItems", "dynamodb:PutItem", "events:PutEvents"},
        "MirrorFunction": {"s3:PutObject", "s3:DeleteObjects"},
        "NotifyFunction": {
            "sns:Publish",
            "ssm:GetParameter",
            "secretsmanager:GetSecretValue",
            "dynamodb:PutItem",
            "dynamodb:UpdateItem",
            "dynamodb:GetItem",
        },
    }
    for function_id, wanted in expected.items():
        assert wanted <= operations[function_id], f"{function_id} made {sorted(operations[function_id])}"


def test_a_policy_without_the_heartbeat_s_update_item_fails_the_check(
    stack: LocalStack, calls: dict[str, set[AwsCall]]
) -> None:
    # GIVEN a scratch copy of the template whose write API function lacks dynamodb:UpdateItem, as it once did
    document = copy.deepcopy(dict(stack.template.document))
    for policy in document["Resources"]["ApiWriteFunction"]["Properties"]["Policies"]:
        for statement in policy.get("Statement", []):
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            statement["Action"] = [action for action in actions if action != "dynamodb:UpdateItem"]
    scratch = Template(
        document,
        root=stack.template.root,
        parameters=stack.parameters,
        stack_name=stack.stack_name,
        region=stack.region,
    )

    # WHEN the same calls are checked against it
    violations = find_violations(calls, function_policies(scratch))

    # THEN the heartbeat's update is reported: function, action, resource, and the statement to change
    table_arn = stack.template.physical("WorksetTable").attributes["Arn"]
    [violation] = [v for v in violations if v.function_id == "ApiWriteFunction"]
    assert (violation.permission.action, violation.permission.resource) == ("dynamodb:UpdateItem", table_arn)
    assert "add dynamodb:UpdateItem to the Action of Policies[0].Statement[0]" in str(violation)
    assert {v.function_id for v in violations} == {"ApiWriteFunction"}


def report(violations: list[Violation]) -> str:
    """The assertion's message: each refused call on a line of its own, saying what to change."""
    shown = "\n".join(f"  - {violation}" for violation in violations[:30])
    more = f"\n  ... and {len(violations) - 30} more" if len(violations) > 30 else ""
    return f"{len(violations)} calls would be refused by IAM in AWS:\n{shown}{more}"


def eventually(probe: Callable[[], T | None], what: str, seconds: float = 60.0) -> T:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = probe()
        if value is not None:
            return value
        time.sleep(0.1)
    raise AssertionError(f"gave up waiting for {what} after {seconds:.0f} s")


class Flows:
    """What people, agents and AWS do with the product, through its public entry points (S3 and the signed API)."""

    def __init__(self, stack: LocalStack, api: ApiClient) -> None:
        self.stack = stack
        self.api = api
        description = stack.describe()
        self.bucket, self.prefix = str(description["bucket"]), str(description["prefix"])
        self.table = str(description["table"])
        self.s3 = stack.client("s3")

    # --- S3 and registration ---------------------------------------------------------------------------------------

    def drop_folders(self) -> None:
        """A valid folder, a broken one, one failing transiently later, one ignored; the broken one dropped again."""
        upload_workset(self.s3, self.bucket, self.prefix, EXAMPLES / VALID)
        upload_workset(self.s3, self.bucket, self.prefix, EXAMPLES / INVALID)
        upload_workset(self.s3, self.bucket, self.prefix, EXAMPLES / RETRIED, TRANSIENT)
        upload_workset(self.s3, self.bucket, self.prefix, EXAMPLES / RETRIED, EXPIRING)
        self._upload_files(RETRIED, IGNORED)
        self.s3.put_object(Bucket=self.bucket, Key=f"{self.prefix}{IGNORED}/daylily.ignore", Body=b"not this one")
        for name, state in ((VALID, "ready"), (INVALID, "error"), (TRANSIENT, "ready"), (IGNORED, "ignored")):
            self.wait_for_state(name, state)

        # A fresh sentinel in a failed folder asks for a retry: validated again (still broken, so nothing to wait
        # for; the flows after this one take far longer than its registration)
        self.s3.put_object(Bucket=self.bucket, Key=f"{self.prefix}{INVALID}/daylily.ready", Body=b"again")

    def register_through_the_api(self) -> None:
        self._upload_files(RETRIED, BY_API)
        answer = self.api.request("POST", "/worksets", {"bucket": self.bucket, "prefix": f"{self.prefix}{BY_API}/"})
        assert answer["state"] == "ready", answer

    def _upload_files(self, example: str, name: str) -> None:
        folder = EXAMPLES / example
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            self.s3.upload_file(str(path), self.bucket, f"{self.prefix}{name}/{path.relative_to(folder).as_posix()}")

    # --- an agent's work -------------------------------------------------------------------------------------------

    def run_a_workset_to_complete(self) -> None:
        self.api.register_cluster({"name": CLUSTER, "max_worksets": 20, "vcpus": 640, "cost_per_vcpu_hour": 0.04})
        self.api.request("POST", f"/clusters/{CLUSTER}/heartbeat", {"status": "active"})
        token = self.claim(VALID)
        self.api.heartbeat(VALID, token, progress="staging")
        self.api.change_state(VALID, "in_progress", lease_token=token, actor="iam-agent", reason="run started")
        self.api.heartbeat(VALID, token, progress="pipeline running")
        self.api.change_state(VALID, "complete", lease_token=token, actor="iam-agent", reason="run ended well")
        self.wait_for_sentinel(VALID, "daylily.complete")

    def fail_transiently_and_retry_by_itself(self) -> None:
        token = self.claim(TRANSIENT)
        self.api.change_state(TRANSIENT, "in_progress", lease_token=token, actor="iam-agent")
        self.api.change_state(
            TRANSIENT, "error", lease_token=token, actor="iam-agent", error_category="transient", reason="spot lost"
        )
        eventually(lambda: self._attempt(TRANSIENT, 2), "the scheduler's automatic retry")

    def cancel_retry_and_release(self) -> None:
        token = self.claim(TRANSIENT)
        self.api.change_state(TRANSIENT, "in_progress", lease_token=token, actor="iam-agent")
        self.api.act(TRANSIENT, "cancel", actor="alice", reason="wrong sheet")
        assert self.api.heartbeat(TRANSIENT, token)["state"] == "canceled"
        self.api.act(TRANSIENT, "retry", actor="alice", reason="sheet fixed")
        self.api.act(IGNORED, "retry", actor="alice", reason="wanted after all")
        with pytest.raises(ApiError) as still_broken:  # its folder is validated again, by the write function
            self.api.act(INVALID, "retry", actor="alice", reason="try again")
        assert (still_broken.value.status, still_broken.value.code) == (422, "not_a_workset_folder")

        token = self.claim(TRANSIENT)
        self.api.request(
            "DELETE", f"/worksets/{quote(TRANSIENT, safe='')}/lock", {"lease_token": token, "actor": "iam-agent"}
        )
        self.wait_for_state(TRANSIENT, "ready")

    def archive_and_restore(self) -> None:
        self.api.act(VALID, "archive", actor="alice")
        self.api.act(VALID, "restore", actor="alice", reason="run it again")

    def let_a_lease_expire(self) -> None:
        """A claim whose agent went silent: its lease is set long past (by hand), and the scheduler expires it."""
        self.claim(EXPIRING)
        past = (datetime.now(UTC) - timedelta(hours=2)).isoformat().replace("+00:00", "Z")
        self.stack.client("dynamodb").update_item(
            TableName=self.table,
            Key={"pk": {"S": f"WORKSET#{EXPIRING}"}, "sk": {"S": "WORKSET"}},
            UpdateExpression="SET #lease.expires_at = :past",
            ExpressionAttributeNames={"#lease": "lease"},
            ExpressionAttributeValues={":past": {"S": past}},
        )
        eventually(
            lambda: next((e for e in self._history(EXPIRING) if e.get("error_category") == "lease_expired"), None),
            "the scheduler to expire the lease",
        )

    def retire_the_cluster_holding_an_assignment(self) -> None:
        """The restored workset waits, assigned to the cluster; retired, the cluster gives it back at the next tick."""
        eventually(lambda: self._assigned(VALID, CLUSTER), "the restored workset to be assigned")
        self.api.request("DELETE", f"/clusters/{CLUSTER}")
        eventually(
            lambda: next((e for e in self._history(VALID) if e["event"] == "unassigned"), None),
            "the scheduler to take the assignment back",
        )

    def claim(self, workset_id: str) -> int:
        """Wait for the scheduler to assign the workset to the cluster, then claim it; the lease token."""
        eventually(lambda: self._assigned(workset_id, CLUSTER), f"{workset_id} to be assigned")
        claimed = self.api.claim(workset_id, owner="iam-agent", cluster=CLUSTER)
        return int(claimed["lease"]["token"])

    # --- reads -----------------------------------------------------------------------------------------------------

    def read_every_route(self) -> None:
        api = self.api
        api.request("GET", "/")
        api.request("GET", "/openapi.json")
        api.next_workset(CLUSTER)
        first = api.list_worksets(limit=1)
        api.list_worksets(limit=1, next_token=first["next_token"])
        api.list_worksets(state="ready")
        api.list_worksets(priority="normal")
        api.list_worksets(cluster=CLUSTER)
        api.get_workset(TRANSIENT)
        page = api.workset_history(TRANSIENT, limit=2)
        api.workset_history(TRANSIENT, limit=2, next_token=page["next_token"])
        api.queue_stats()
        api.scheduler_stats()
        api.list_clusters()
        api.get_cluster(CLUSTER)
        with pytest.raises(ApiError, match="404"):
            api.get_workset("no-such-workset")
        with pytest.raises(ApiError, match="404"):
            api.get_cluster("no-such-cluster")

    def wait_for_the_stream_to_settle(self, webhook: WebhookReceiver) -> None:
        """The notify and mirror functions run behind the table's stream: wait until the webhook has heard nothing
        new for a second, so their calls are recorded."""
        last, quiet_since = -1, time.monotonic()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            count = len(webhook.requests())
            if count != last:
                last, quiet_since = count, time.monotonic()
            elif time.monotonic() - quiet_since > 1.0:
                return
            time.sleep(0.1)

    # --- probes ----------------------------------------------------------------------------------------------------

    def wait_for_state(self, workset_id: str, state: str) -> dict[str, Any]:
        return eventually(lambda: self._in_state(workset_id, state), f"{workset_id} to be {state}")

    def wait_for_sentinel(self, workset_id: str, name: str) -> None:
        key = f"{self.prefix}{workset_id}/{name}"
        eventually(
            lambda: self.s3.list_objects_v2(Bucket=self.bucket, Prefix=key).get("KeyCount") or None,
            f"{name} in {workset_id}'s folder",
        )

    def _in_state(self, workset_id: str, state: str) -> dict[str, Any] | None:
        try:
            workset = self.api.get_workset(workset_id)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise
        return workset if workset["state"] == state else None

    def _assigned(self, workset_id: str, cluster: str) -> dict[str, Any] | None:
        workset = self.api.get_workset(workset_id)
        return workset if workset["state"] == "ready" and workset.get("assigned_cluster") == cluster else None

    def _attempt(self, workset_id: str, attempt: int) -> dict[str, Any] | None:
        workset = self.api.get_workset(workset_id)
        return workset if workset["state"] == "ready" and workset["attempt"] == attempt else None

    def _history(self, workset_id: str) -> list[dict[str, Any]]:
        return list(self.api.get_workset(workset_id)["history"])
