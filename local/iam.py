"""What IAM would allow each function, checked against the AWS calls its handler made on the local stack.

moto does not enforce IAM: a handler that calls an action its role lacks passes every local test and fails in AWS with
AccessDenied. This module closes that gap.

- `permissions_needed` turns one API call (service, operation, parameters) into the authorizations AWS checks for it:
  the IAM action (mostly the operation's name; `IAM_ACTIONS` lists the exceptions), the resource's ARN, and the
  condition keys the request carries that policies here test (`s3:prefix`, `dynamodb:LeadingKeys`).
- `function_policy` reads a function's statements from template.yaml as SAM builds its role: the inline statements,
  the SAM policy templates expanded (`SAM_POLICY_TEMPLATES`), and what SAM adds by itself for the function's event
  sources and destinations.
- `find_violations` evaluates each needed authorization against those statements as IAM does (wildcards in actions
  and resources, explicit deny wins, the conditions it can evaluate) and says, for each refusal, which statement
  would have to change.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any
from urllib.parse import unquote, urlsplit

from local.template import FUNCTION, NO_VALUE, PARTITION, TABLE, Template

ConditionValues = tuple[str, ...] | None
"""A condition key's values in a request; None when the request carries the key but its value was not derived."""

IAM_ACTIONS: Mapping[str, str] = {
    # S3 names its permissions after what they allow, not after the call.
    "s3:ListObjectsV2": "s3:ListBucket",
    "s3:ListObjects": "s3:ListBucket",
    "s3:HeadBucket": "s3:ListBucket",
    "s3:ListObjectVersions": "s3:ListBucketVersions",
    "s3:HeadObject": "s3:GetObject",
    "s3:GetObjectAttributes": "s3:GetObject",
    "s3:DeleteObjects": "s3:DeleteObject",
    "s3:CreateMultipartUpload": "s3:PutObject",
    "s3:UploadPart": "s3:PutObject",
    "s3:CompleteMultipartUpload": "s3:PutObject",
    "s3:AbortMultipartUpload": "s3:AbortMultipartUpload",
    "s3:ListParts": "s3:ListMultipartUploadParts",
    # A transaction is authorized item by item, each with the action of its kind.
    "dynamodb:TransactGetItems": "dynamodb:GetItem",
    "dynamodb:TransactWriteItems.Put": "dynamodb:PutItem",
    "dynamodb:TransactWriteItems.Update": "dynamodb:UpdateItem",
    "dynamodb:TransactWriteItems.Delete": "dynamodb:DeleteItem",
    "dynamodb:TransactWriteItems.ConditionCheck": "dynamodb:ConditionCheckItem",
    # Batches of SNS and SQS need the single message's action.
    "sns:PublishBatch": "sns:Publish",
    "sqs:SendMessageBatch": "sqs:SendMessage",
    "sqs:DeleteMessageBatch": "sqs:DeleteMessage",
    "sqs:ChangeMessageVisibilityBatch": "sqs:ChangeMessageVisibility",
}
"""The IAM action of each operation whose action is not named as the operation (`dynamodb:Query` needs
`dynamodb:Query`, `s3:ListObjectsV2` needs `s3:ListBucket`).

An operation on several keys or items needs its action on each: `DeleteObjects` needs `s3:DeleteObject` on every key,
`TransactWriteItems` needs the action of each item's kind (`TransactWriteItems.Put` and so on) on that item's table.
A versioned read or delete (a `VersionId` given) needs `s3:GetObjectVersion` or `s3:DeleteObjectVersion` instead;
`CopyObject` needs `s3:GetObject` on its source and `s3:PutObject` on its target. A paginator's pages are calls of
their own operation.
"""

SAM_POLICY_TEMPLATES: Mapping[str, Mapping[str, Any]] = {
    "SQSSendMessagePolicy": {
        "Statement": [
            {
                "Effect": "Allow",
                "Action": ["sqs:SendMessage*"],
                "Resource": {
                    "Fn::Sub": [
                        "arn:${AWS::Partition}:sqs:${AWS::Region}:${AWS::AccountId}:${queueName}",
                        {"queueName": {"Ref": "QueueName"}},
                    ]
                },
            }
        ]
    },
    "SNSPublishMessagePolicy": {
        "Statement": [
            {
                "Effect": "Allow",
                "Action": ["sns:Publish"],
                "Resource": {
                    "Fn::Sub": [
                        "arn:${AWS::Partition}:sns:${AWS::Region}:${AWS::AccountId}:${topicName}",
                        {"topicName": {"Ref": "TopicName"}},
                    ]
                },
            }
        ]
    },
}
"""The SAM policy templates template.yaml uses, as SAM defines them (`Definition` in samtranslator's
`policy_templates_data/policy_templates.json`, aws-sam-translator 1.110.0); `{"Ref": "QueueName"}` is the template's
parameter. A template not listed here fails `function_policy` instead of being guessed."""

_LOGS = ("logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents")

MANAGED_POLICIES: Mapping[str, tuple[str, ...]] = {
    "AWSLambdaBasicExecutionRole": _LOGS,
    "AWSLambdaDynamoDBExecutionRole": (
        "dynamodb:DescribeStream",
        "dynamodb:GetRecords",
        "dynamodb:GetShardIterator",
        "dynamodb:ListStreams",
        *_LOGS,
    ),
    "AWSLambdaSQSQueueExecutionRole": ("sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes", *_LOGS),
    "AWSLambdaKinesisExecutionRole": (
        "kinesis:DescribeStream",
        "kinesis:DescribeStreamSummary",
        "kinesis:GetRecords",
        "kinesis:GetShardIterator",
        "kinesis:ListShards",
        "kinesis:ListStreams",
        "kinesis:SubscribeToShard",
        *_LOGS,
    ),
}
"""The AWS managed policies SAM attaches, by name: their actions, all on `*`."""

EVENT_MANAGED_POLICIES: Mapping[str, str | None] = {
    # Lambda's poller reads the stream or queue with the function's role: SAM attaches the managed policy for it.
    "DynamoDB": "AWSLambdaDynamoDBExecutionRole",
    "Kinesis": "AWSLambdaKinesisExecutionRole",
    "SQS": "AWSLambdaSQSQueueExecutionRole",
    # These push to the function through its resource policy, not its role.
    "S3": None,
    "Api": None,
    "HttpApi": None,
    "Schedule": None,
    "ScheduleV2": None,
    "CloudWatchEvent": None,
    "EventBridgeRule": None,
    "SNS": None,
}
"""What SAM adds to a function's role for each event type (by managed policy name), or None for nothing."""

DESTINATION_ACTIONS: Mapping[str, tuple[str, ...]] = {
    "SQS": ("sqs:SendMessage",),
    "SNS": ("sns:Publish",),
    "Lambda": ("lambda:InvokeFunction",),
    "EventBridge": ("events:PutEvents",),
}
"""What SAM allows on a destination of a given `Type` (an event source's or `EventInvokeConfig`'s `OnFailure` and
`OnSuccess`, a `DeadLetterQueue`); Lambda sends there with the function's role. S3 destinations are handled apart."""

EVALUATED_CONDITION_KEYS = frozenset({"s3:prefix", "dynamodb:LeadingKeys"})
"""The condition keys `permissions_needed` derives from a request; a condition on any other key is not evaluated."""

_STRING_OPERATORS = ("StringEquals", "StringNotEquals", "StringLike", "StringNotLike")


class PolicyError(Exception):
    """A function's policies use something this module cannot expand or evaluate."""


# --- what a call needs -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Permission:
    """One authorization a call needs: an action on a resource (None when not derived: only the action is checked),
    with the values of the condition keys the request carries."""

    action: str
    resource: str | None = None
    context: tuple[tuple[str, ConditionValues], ...] = ()

    def values(self, key: str) -> ConditionValues:
        """The request's values of a condition key: none when it lacks the key, None when they were not derived."""
        return next((values for name, values in self.context if name == key), ())


@dataclass(frozen=True)
class AwsCall:
    """One call a handler made, e.g. `dynamodb:TransactWriteItems`, with the authorizations AWS checks for it."""

    operation: str
    permissions: tuple[Permission, ...]


@dataclass(frozen=True)
class Deployment:
    """Where calls go: the partition, region and account of the ARNs, and each table's partition key attribute (the
    value of `dynamodb:LeadingKeys`)."""

    region: str
    account_id: str
    partition: str = PARTITION
    partition_keys: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, template: Template) -> Deployment:
        """The deployment of the template's stack, with the partition key of each of its tables."""
        keys: dict[str, str] = {}
        for logical_id, table in template.resources(TABLE).items():
            schema = table.get("Properties", {}).get("KeySchema", [])
            hash_keys = [str(key["AttributeName"]) for key in schema if key.get("KeyType") == "HASH"]
            if hash_keys:
                keys[template.physical(logical_id).ref] = hash_keys[0]
        return cls(region=template.region, account_id=template.account_id, partition_keys=keys)

    def arn(self, service: str, resource: str) -> str:
        """The ARN of a regional resource of this account, e.g. `arn("dynamodb", "table/worksets")`."""
        return f"arn:{self.partition}:{service}:{self.region}:{self.account_id}:{resource}"


def permissions_needed(
    service: str, operation: str, params: Mapping[str, Any], deployment: Deployment
) -> tuple[Permission, ...]:
    """The authorizations AWS checks for one call of `service` (its IAM prefix, e.g. `dynamodb`) `operation` with
    `params` (the call's keyword arguments).

    Limitations:
        resources are derived for DynamoDB, DynamoDB Streams, S3, SNS, SQS, SSM and Secrets Manager; a call of
        another service is checked on its action only. `dynamodb:LeadingKeys` is not derived for Query.
    """
    name = f"{service}:{operation}"
    action = IAM_ACTIONS.get(name, name)
    if service == "dynamodb":
        return tuple(_dynamodb(operation, action, params, deployment))
    if service == "s3":
        return tuple(_s3(operation, action, params, deployment))
    if service == "sns":
        topic = params.get("TopicArn") or params.get("TargetArn")
        return (Permission(action, str(topic) if topic else None),)
    if service == "sqs":
        return (Permission(action, _queue_arn(params, deployment)),)
    if service == "ssm":
        names = params.get("Names") or [params.get("Name") or params.get("Path")]
        return tuple(Permission(action, _parameter_arn(name, deployment)) for name in names)
    if service == "secretsmanager":
        return (Permission(action, _secret_arn(params.get("SecretId"), deployment)),)
    return (Permission(action),)


def _dynamodb(operation: str, action: str, params: Mapping[str, Any], deployment: Deployment) -> Iterator[Permission]:
    if operation == "TransactWriteItems":
        for item in params.get("TransactItems", []):
            (kind, request), *_ = item.items()
            table = str(request["TableName"])
            key = request.get("Key") or request.get("Item") or {}
            yield Permission(
                IAM_ACTIONS[f"dynamodb:TransactWriteItems.{kind}"],
                _table_arn(table, None, deployment),
                _leading_keys(table, [key], deployment),
            )
        return
    if operation == "TransactGetItems":
        for item in params.get("TransactItems", []):
            table = str(item["Get"]["TableName"])
            yield Permission(
                action, _table_arn(table, None, deployment), _leading_keys(table, [item["Get"]["Key"]], deployment)
            )
        return
    if operation in ("BatchGetItem", "BatchWriteItem"):
        for table, request in params.get("RequestItems", {}).items():
            if operation == "BatchGetItem":
                keys = list(request.get("Keys", []))
            else:
                keys = [
                    entry.get("PutRequest", {}).get("Item") or entry.get("DeleteRequest", {}).get("Key")
                    for entry in request
                ]
            yield Permission(action, _table_arn(table, None, deployment), _leading_keys(table, keys, deployment))
        return
    if "StreamArn" in params:
        yield Permission(action, str(params["StreamArn"]))
        return
    if "TableName" not in params:
        yield Permission(action, None if operation == "GetRecords" else "*")
        return

    table = str(params["TableName"])
    resource = _table_arn(table, params.get("IndexName"), deployment)
    if "Key" in params or "Item" in params:
        yield Permission(action, resource, _leading_keys(table, [params.get("Key") or params["Item"]], deployment))
    elif operation == "Query":
        # NOTE: a Query's partition key value sits in its KeyConditionExpression, which is not parsed here.
        yield Permission(action, resource, (("dynamodb:LeadingKeys", None),))
    else:
        yield Permission(action, resource)


def _table_arn(table: str, index: Any, deployment: Deployment) -> str:
    arn = table if table.startswith("arn:") else deployment.arn("dynamodb", f"table/{table}")
    return f"{arn}/index/{index}" if index else arn


def _leading_keys(
    table: str, keys: Iterable[Mapping[str, Any] | None], deployment: Deployment
) -> tuple[tuple[str, ConditionValues], ...]:
    """`dynamodb:LeadingKeys`: the partition key values of the items a request touches."""
    attribute = deployment.partition_keys.get(table.rsplit("/", 1)[-1])
    if attribute is None:
        return (("dynamodb:LeadingKeys", None),)
    values = []
    for key in keys:
        typed = (key or {}).get(attribute)
        if not isinstance(typed, Mapping) or not typed:
            return (("dynamodb:LeadingKeys", None),)
        values.append(str(next(iter(typed.values()))))
    return (("dynamodb:LeadingKeys", tuple(dict.fromkeys(values))),)


def _s3(operation: str, action: str, params: Mapping[str, Any], deployment: Deployment) -> Iterator[Permission]:
    bucket = str(params.get("Bucket", ""))
    bucket_arn = f"arn:{deployment.partition}:s3:::{bucket}"
    if operation == "DeleteObjects":
        for item in params.get("Delete", {}).get("Objects", []):
            versioned = "VersionId" in item
            yield Permission("s3:DeleteObjectVersion" if versioned else action, f"{bucket_arn}/{item['Key']}")
        return
    if operation == "CopyObject":
        source = params.get("CopySource", "")
        if isinstance(source, Mapping):
            source_arn, versioned = f"{source['Bucket']}/{source['Key']}", "VersionId" in source
        else:
            path, _, query = str(source).lstrip("/").partition("?versionId=")
            source_arn, versioned = unquote(path), bool(query)
        yield Permission(
            "s3:GetObjectVersion" if versioned else "s3:GetObject", f"arn:{deployment.partition}:s3:::{source_arn}"
        )
        yield Permission("s3:PutObject", f"{bucket_arn}/{params['Key']}")
        return
    if "Key" not in params:
        # A listing is authorized on the bucket, with the prefix it asks for as `s3:prefix`.
        prefix = params.get("Prefix")
        listing = action.startswith("s3:ListBucket") and prefix is not None
        yield Permission(action, bucket_arn, (("s3:prefix", (str(prefix),)),) if listing else ())
        return

    if "VersionId" in params and action in ("s3:GetObject", "s3:DeleteObject"):
        action += "Version"
    yield Permission(action, f"{bucket_arn}/{params['Key']}")


def _queue_arn(params: Mapping[str, Any], deployment: Deployment) -> str | None:
    if "QueueUrl" in params:
        account, _, name = urlsplit(str(params["QueueUrl"])).path.strip("/").rpartition("/")
        return f"arn:{deployment.partition}:sqs:{deployment.region}:{account or deployment.account_id}:{name}"
    if "QueueName" in params:
        account = params.get("QueueOwnerAWSAccountId") or deployment.account_id
        return f"arn:{deployment.partition}:sqs:{deployment.region}:{account}:{params['QueueName']}"
    return None


def _parameter_arn(name: Any, deployment: Deployment) -> str | None:
    if not name:
        return None
    text = str(name)
    return text if text.startswith("arn:") else deployment.arn("ssm", "parameter/" + text.lstrip("/"))


def _secret_arn(secret_id: Any, deployment: Deployment) -> str | None:
    if not secret_id:
        return None
    text = str(secret_id)
    # A secret's ARN ends with six random characters Secrets Manager adds to its name; "??????" stands for them.
    return text if text.startswith("arn:") else deployment.arn("secretsmanager", f"secret:{text}-??????")


# --- what a function's role allows -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Condition:
    """One test of a statement's `Condition` block: `operator` on `key` against `values`."""

    operator: str
    key: str
    values: tuple[str, ...]

    def refusal(self, permission: Permission) -> str | None:
        """None when the condition holds for the request; otherwise why not, in words."""
        qualifier, _, base = self.operator.rpartition(":")
        if self.key not in EVALUATED_CONDITION_KEYS or base not in _STRING_OPERATORS:
            return f"its condition {self.operator} on {self.key} is not evaluated locally"
        values = permission.values(self.key)
        if values is None:
            return f"its condition on {self.key} needs the request's value, which is not derived locally"
        present: tuple[str, ...] = values

        negated = "Not" in base
        like = base.endswith("Like")

        def matches(value: str) -> bool:
            return any(_matches(expected, value, ignore_case=False, wildcards=like) for expected in self.values)

        # IAM: ForAllValues holds when every value matches (no value at all included), ForAnyValue when one does;
        # a plain operator on a key the request lacks fails, and its negated form holds.
        if qualifier == "ForAllValues":
            holds = all(matches(value) != negated for value in present)
        elif qualifier == "ForAnyValue":
            holds = any(matches(value) != negated for value in present)
        elif not present:
            holds = negated
        else:
            holds = any(matches(value) for value in present) != negated
        if holds:
            return None
        shown = ", ".join(present) if present else "nothing"
        return f"{self.operator} {self.key} {list(self.values)} (the request has {shown})"


@dataclass(frozen=True)
class Statement:
    """One statement of a function's role, and where it comes from, to say what to change."""

    source: str
    effect: str
    actions: tuple[str, ...]
    resources: tuple[str, ...]
    conditions: tuple[Condition, ...] = ()
    not_actions: bool = False
    not_resources: bool = False

    def covers_action(self, action: str) -> bool:
        return any(_matches(pattern, action, ignore_case=True) for pattern in self.actions) != self.not_actions

    def covers_resource(self, resource: str | None) -> bool:
        if resource is None:
            return True
        return any(_matches(pattern, resource, ignore_case=False) for pattern in self.resources) != self.not_resources

    def refusal(self, permission: Permission) -> str | None:
        """None when every condition of the statement holds for the request; otherwise the first that does not."""
        return next((reason for reason in (c.refusal(permission) for c in self.conditions) if reason), None)

    def applies(self, permission: Permission) -> bool:
        return (
            self.covers_action(permission.action)
            and self.covers_resource(permission.resource)
            and self.refusal(permission) is None
        )

    def describe(self) -> str:
        what = "NotAction" if self.not_actions else "Action"
        where = "NotResource" if self.not_resources else "Resource"
        return f"{self.source} ({what} {list(self.actions)}, {where} {list(self.resources)})"


@dataclass(frozen=True)
class FunctionPolicy:
    """Every statement of one function's role as SAM builds it."""

    function_id: str
    statements: tuple[Statement, ...]

    def allows(self, permission: Permission) -> bool:
        """IAM's evaluation within one role: an explicit deny wins, then any allow; nothing allows by default."""
        if any(s.effect == "Deny" and s.applies(permission) for s in self.statements):
            return False
        return any(s.effect == "Allow" and s.applies(permission) for s in self.statements)


def function_policies(template: Template) -> dict[str, FunctionPolicy]:
    """The role of every serverless function of the template, by logical id."""
    return {logical_id: function_policy(template, logical_id) for logical_id in template.resources(FUNCTION)}


def function_policy(template: Template, logical_id: str) -> FunctionPolicy:
    """The statements of the role SAM creates for one function.

    SAM's role holds `AWSLambdaBasicExecutionRole`, the function's `Policies` (inline statements, SAM policy
    templates, managed policies by name), the managed policy of each polled event source (a DynamoDB stream's
    `AWSLambdaDynamoDBExecutionRole`), and a statement per destination given with a `Type` (an event source's
    `DestinationConfig`, `EventInvokeConfig`, `DeadLetterQueue`).

    Limitations:
        a function with its own `Role`, a managed policy not in `MANAGED_POLICIES`, a policy template not in
        `SAM_POLICY_TEMPLATES` and an unknown event type raise PolicyError; `PermissionsBoundary` is not applied.
    """
    declared = template.resources(FUNCTION)[logical_id].get("Properties", {})
    globals_ = template.document.get("Globals", {}).get("Function", {})
    if "Role" in declared:
        raise PolicyError(f"{logical_id}: uses its own Role; its statements are not in the template")

    statements = list(_managed("AWSLambdaBasicExecutionRole", "AWSLambdaBasicExecutionRole (SAM adds it)"))
    policies = declared.get("Policies", [])
    for index, policy in enumerate(policies if isinstance(policies, list) else [policies]):
        statements += _policy(template, policy, f"Policies[{index}]")

    for name, event in declared.get("Events", {}).items():
        statements += _event_statements(template, name, event, logical_id)

    invoke_config = declared.get("EventInvokeConfig", globals_.get("EventInvokeConfig")) or {}
    for kind in ("OnSuccess", "OnFailure"):
        destination = invoke_config.get("DestinationConfig", {}).get(kind)
        if destination:
            statements += _destination(template, destination, f"EventInvokeConfig.DestinationConfig.{kind}")
    dead_letters = declared.get("DeadLetterQueue", globals_.get("DeadLetterQueue"))
    if dead_letters:
        target = {"Type": dead_letters["Type"], "Destination": dead_letters["TargetArn"]}
        statements += _destination(template, target, "DeadLetterQueue")
    return FunctionPolicy(logical_id, tuple(statements))


def _policy(template: Template, policy: Any, where: str) -> list[Statement]:
    if isinstance(policy, str):
        if policy.rsplit("/", 1)[-1] not in MANAGED_POLICIES:
            raise PolicyError(f"{where}: the managed policy {policy} is not known here; add it to MANAGED_POLICIES")
        return list(_managed(policy.rsplit("/", 1)[-1], f"{where} {policy}"))
    if not isinstance(policy, Mapping):
        raise PolicyError(f"{where}: a policy is a name, a document or a SAM policy template, not {policy!r}")
    if len(policy) == 1 and next(iter(policy)) in SAM_POLICY_TEMPLATES:
        name, parameters = next(iter(policy.items()))
        return _statements(template, _expand(template, name, parameters, where), f"{where} {name}")
    if "Statement" in policy:
        return _statements(template, policy, where)
    resolved = template.resolve(policy)  # an intrinsic (Fn::If) around a policy
    if resolved is NO_VALUE:
        return []
    if resolved == policy:
        raise PolicyError(f"{where}: {next(iter(policy))} is not a policy template known here; add its definition")
    return _policy(template, resolved, where)


def _expand(template: Template, name: str, parameters: Any, where: str) -> Any:
    """A SAM policy template's definition with its parameters put in, as SAM does before CloudFormation resolves it."""
    values = template.resolve(parameters or {})

    def put_in(node: Any) -> Any:
        if isinstance(node, Mapping):
            if set(node) == {"Ref"} and not str(node["Ref"]).startswith("AWS::"):
                if node["Ref"] not in values:
                    raise PolicyError(f"{where}: {name} needs the parameter {node['Ref']}")
                return values[node["Ref"]]
            return {key: put_in(item) for key, item in node.items()}
        if isinstance(node, list):
            return [put_in(item) for item in node]
        return node

    return put_in(copy.deepcopy(SAM_POLICY_TEMPLATES[name]))


def _statements(template: Template, document: Any, where: str) -> list[Statement]:
    resolved = template.resolve(document)
    declared = resolved["Statement"]
    statements = []
    for index, statement in enumerate(declared if isinstance(declared, list) else [declared]):
        source = f"{where}.Statement[{index}]" + (f" (Sid {statement['Sid']})" if "Sid" in statement else "")
        statements.append(_statement(statement, source))
    return statements


def _statement(declared: Mapping[str, Any], source: str) -> Statement:
    not_actions, not_resources = "NotAction" in declared, "NotResource" in declared
    actions = declared.get("NotAction" if not_actions else "Action", [])
    resources = declared.get("NotResource" if not_resources else "Resource", [])
    conditions = tuple(
        Condition(str(operator), str(key), tuple(str(value) for value in _as_list(values)))
        for operator, tests in declared.get("Condition", {}).items()
        for key, values in tests.items()
    )
    return Statement(
        source=source,
        effect=str(declared.get("Effect", "Allow")),
        actions=tuple(str(action) for action in _as_list(actions)),
        resources=tuple(str(resource) for resource in _as_list(resources)),
        conditions=conditions,
        not_actions=not_actions,
        not_resources=not_resources,
    )


def _managed(name: str, source: str) -> Iterator[Statement]:
    yield Statement(source=source, effect="Allow", actions=MANAGED_POLICIES[name], resources=("*",))


def _event_statements(template: Template, name: str, event: Mapping[str, Any], logical_id: str) -> list[Statement]:
    kind = str(event.get("Type"))
    if kind not in EVENT_MANAGED_POLICIES:
        raise PolicyError(f"{logical_id}: what SAM adds to the role for a {kind} event is not known here")

    statements: list[Statement] = []
    managed = EVENT_MANAGED_POLICIES[kind]
    if managed is not None:
        statements += _managed(managed, f"{managed} (SAM adds it for the {kind} event {name})")
    destination = event.get("Properties", {}).get("DestinationConfig", {}).get("OnFailure")
    if destination:
        statements += _destination(template, destination, f"Events.{name}.DestinationConfig.OnFailure")
    return statements


def _destination(template: Template, destination: Mapping[str, Any], where: str) -> list[Statement]:
    """What SAM allows for a destination: only one whose `Type` is given gets a statement."""
    kind = destination.get("Type")
    if not kind:
        return []
    arn = str(template.resolve(destination["Destination"]))
    source = f"{where} (SAM adds it for the {kind} destination)"
    if kind in ("S3", "S3Bucket"):
        return [
            Statement(source=source, effect="Allow", actions=("s3:PutObject",), resources=(f"{arn}/*",)),
            Statement(source=source, effect="Allow", actions=("s3:ListBucket",), resources=(arn,)),
        ]
    if kind not in DESTINATION_ACTIONS:
        raise PolicyError(f"{where}: a destination of Type {kind} is not known here")
    return [Statement(source=source, effect="Allow", actions=DESTINATION_ACTIONS[kind], resources=(arn,))]


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else [value]


# --- the check -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Violation:
    """A call a function made that its role would not allow in AWS, and what to change."""

    function_id: str
    operation: str
    permission: Permission
    fix: str

    def __str__(self) -> str:
        resource = self.permission.resource or "(resource not derived)"
        called = "" if self.operation == self.permission.action else f" (needed by {self.operation})"
        return f"{self.function_id}: {self.permission.action} on {resource}{called} is not allowed: {self.fix}"


def find_violations(calls: Mapping[str, Iterable[AwsCall]], policies: Mapping[str, FunctionPolicy]) -> list[Violation]:
    """Every authorization the functions' calls needed that their roles would refuse, once per function, action and
    resource, sorted.

    Limitations:
        conditions are evaluated only on `EVALUATED_CONDITION_KEYS` with the String operators; a statement whose
        condition cannot be evaluated allows nothing (and denies nothing) here, and the violation says so. Resource
        policies (bucket, queue, topic, key policies), permission boundaries and SCPs are not considered.
    """
    found: dict[tuple[str, str, str | None], Violation] = {}
    for function_id, function_calls in calls.items():
        policy = policies.get(function_id)
        for call in function_calls:
            for permission in call.permissions:
                key = (function_id, permission.action, permission.resource)
                if key in found or (policy is not None and policy.allows(permission)):
                    continue
                fix = _fix(permission, policy) if policy is not None else "the function is not in the template"
                found[key] = Violation(function_id, call.operation, permission, fix)
    return [found[key] for key in sorted(found, key=lambda k: (k[0], k[1], k[2] or ""))]


def _fix(permission: Permission, policy: FunctionPolicy) -> str:
    """Which statement would need the permission: the nearest miss first."""
    action, resource = permission.action, permission.resource
    deny = [s for s in policy.statements if s.effect == "Deny" and s.applies(permission)]
    if deny:
        return "denied by " + "; ".join(s.describe() for s in deny)

    allows = [s for s in policy.statements if s.effect == "Allow"]
    conditioned = [
        (s, s.refusal(permission)) for s in allows if s.covers_action(action) and s.covers_resource(resource)
    ]
    if conditioned:
        return "; ".join(f"{s.describe()} allows it, but {reason}" for s, reason in conditioned)

    service = action.split(":", 1)[0].lower()
    same_resource = [
        s for s in allows if s.covers_resource(resource) and s.resources != ("*",) and _services(s) == {service}
    ]
    if same_resource:
        return "; ".join(f"add {action} to the Action of {s.describe()}" for s in same_resource)

    same_action = [s for s in allows if s.covers_action(action) and s.actions != ("*",)]
    if same_action:
        return "; ".join(
            f"add {resource} (or a pattern matching it) to the Resource of {s.describe()}" for s in same_action
        )

    return f"no statement of its Policies allows {service} actions on this resource: add one with {action}"


def _services(statement: Statement) -> set[str]:
    return {action.split(":", 1)[0].lower() for action in statement.actions}


@lru_cache(maxsize=4096)
def _pattern(pattern: str, ignore_case: bool, wildcards: bool) -> re.Pattern[str]:
    if not wildcards:
        return re.compile(re.escape(pattern), re.IGNORECASE if ignore_case else 0)
    text = "".join(".*" if char == "*" else "." if char == "?" else re.escape(char) for char in pattern)
    return re.compile(text, re.DOTALL | (re.IGNORECASE if ignore_case else 0))


def _matches(pattern: str, value: str, *, ignore_case: bool, wildcards: bool = True) -> bool:
    """IAM's matching: `*` any run of characters (slashes too), `?` one character; actions ignore case."""
    return _pattern(pattern, ignore_case, wildcards).fullmatch(value) is not None
