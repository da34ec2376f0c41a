"""template.yaml read the way CloudFormation and SAM would: intrinsics resolved, resources created, functions described.

The template is the one source of truth of the local stack: every table, bucket, topic and queue it declares is
created in the emulator from its own properties, and every function's environment, code and events come from it.

- `Template.load` parses the YAML (short tags included, through cfn-lint's decoder) and fixes the parameters.
- `Template.resolve` resolves `Ref`, `Fn::GetAtt`, `Fn::Sub`, `Fn::Join`, `Fn::Select`, `Fn::Split`, `Fn::If` (with
  the template's conditions), `Fn::FindInMap`, `Fn::Base64` and `Fn::GetAZs` against parameters, pseudo parameters
  and the resources' physical names, ARNs, URLs and attributes.
- `Template.deploy` creates the resources in the emulator; attributes only known after creation (a table's
  `StreamArn`, a queue's URL) are filled in then.
- `Template.functions` describes each `AWS::Serverless::Function` with `Globals.Function` merged in.
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cfnlint.decode import decode  # type: ignore[import-untyped]

from local.observability import logger

ACCOUNT_ID = "123456789012"
PARTITION = "aws"
URL_SUFFIX = "amazonaws.com"

TABLE = "AWS::DynamoDB::Table"
BUCKET = "AWS::S3::Bucket"
TOPIC = "AWS::SNS::Topic"
SUBSCRIPTION = "AWS::SNS::Subscription"
QUEUE = "AWS::SQS::Queue"
FUNCTION = "AWS::Serverless::Function"
LAYER = "AWS::Serverless::LayerVersion"
API = "AWS::Serverless::Api"
KMS_KEY = "AWS::KMS::Key"

# Queues first: a topic or a bucket may name a queue's URL; tables and buckets only need names known beforehand.
# Subscriptions last: they name a topic and an endpoint.
DEPLOY_ORDER = (QUEUE, TOPIC, TABLE, BUCKET, SUBSCRIPTION)

ClientFactory = Callable[[str], Any]
"""Returns a boto3 client of the emulator for a service name."""


class TemplateError(Exception):
    """The template cannot be read, resolved or deployed locally."""


@dataclass
class PhysicalResource:
    """What a resource is once it exists: the value of its `Ref` and the attributes `Fn::GetAtt` can read."""

    logical_id: str
    type: str
    ref: str
    attributes: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class EventSource:
    """One entry of a function's `Events`, with its properties resolved."""

    name: str
    type: str
    properties: dict[str, Any]


@dataclass(frozen=True)
class FunctionSpec:
    """One `AWS::Serverless::Function`, `Globals.Function` merged in and every value resolved."""

    logical_id: str
    function_name: str
    arn: str
    code_uri: Path
    handler: str
    runtime: str
    timeout: int
    memory_size: int
    environment: dict[str, str]
    layers: tuple[Path, ...]
    events: tuple[EventSource, ...]

    @property
    def handler_file(self) -> Path:
        """The file that holds the handler: "app.lambda_handler" is `app.py` under CodeUri."""
        module, _, _ = self.handler.rpartition(".")
        return self.code_uri / (module.replace(".", "/") + ".py")

    @property
    def handler_function(self) -> str:
        return self.handler.rpartition(".")[2]


class _NoValue:
    """`AWS::NoValue`: the property it stands for is removed."""


NO_VALUE = _NoValue()


class Template:
    """A parsed template with fixed parameters, able to resolve intrinsics and to deploy itself into the emulator."""

    def __init__(
        self,
        document: Mapping[str, Any],
        *,
        root: Path,
        parameters: Mapping[str, str] | None = None,
        stack_name: str = "workset-monitor-local",
        region: str = "us-east-1",
        account_id: str = ACCOUNT_ID,
    ) -> None:
        self.document = document
        self.root = root
        self.stack_name = stack_name
        self.region = region
        self.account_id = account_id
        self.parameters = self._parameter_values(dict(parameters or {}))
        self.pseudo_parameters = {
            "AWS::StackName": stack_name,
            "AWS::StackId": f"arn:{PARTITION}:cloudformation:{region}:{account_id}:stack/{stack_name}/local",
            "AWS::AccountId": account_id,
            "AWS::Region": region,
            "AWS::Partition": PARTITION,
            "AWS::URLSuffix": URL_SUFFIX,
            "AWS::NotificationARNs": [],
        }
        self._conditions: dict[str, bool] = {}
        self._physical: dict[str, PhysicalResource] = {}
        self._planning: set[str] = set()

    @classmethod
    def load(cls, path: Path, **options: Any) -> Template:
        """Parse `path` (YAML or JSON, CloudFormation short tags included) into a template."""
        document, problems = decode(str(path))
        if problems or document is None:
            raise TemplateError(f"cannot parse {path}: {'; '.join(str(problem) for problem in problems)}")
        return cls(document, root=path.resolve().parent, **options)

    # --- the template's parts ------------------------------------------------------------------------------------

    def resources(self, resource_type: str | None = None) -> dict[str, Mapping[str, Any]]:
        """Declared resources (of one type), without those whose condition is false."""
        declared: Mapping[str, Mapping[str, Any]] = self.document.get("Resources", {})
        return {
            logical_id: resource
            for logical_id, resource in declared.items()
            if (resource_type is None or resource["Type"] == resource_type) and self._included(resource)
        }

    def physical(self, logical_id: str) -> PhysicalResource:
        """The physical identity of a resource: planned from its properties, completed when it is created."""
        if logical_id not in self._physical:
            if logical_id in self._planning:
                raise TemplateError(f"circular reference through {logical_id}")
            self._planning.add(logical_id)
            try:
                self._physical[logical_id] = self._plan(logical_id)
            finally:
                self._planning.discard(logical_id)
        return self._physical[logical_id]

    def outputs(self) -> dict[str, Any]:
        declared: Mapping[str, Mapping[str, Any]] = self.document.get("Outputs", {})
        return {name: self.resolve(output["Value"]) for name, output in declared.items() if self._included(output)}

    def functions(self) -> list[FunctionSpec]:
        """Every serverless function, resolved; call it after `deploy`, as events name created resources."""
        return [self._function(logical_id) for logical_id in self.resources(FUNCTION)]

    # --- intrinsics ----------------------------------------------------------------------------------------------

    def resolve(self, value: Any) -> Any:
        """`value` with every intrinsic function replaced by its value and `AWS::NoValue` removed."""
        if isinstance(value, Mapping):
            if len(value) == 1:
                (name, argument), *_ = value.items()
                intrinsic = self._intrinsics().get(name)
                if intrinsic is not None:
                    return intrinsic(argument)
            resolved = {key: self.resolve(item) for key, item in value.items()}
            return {key: item for key, item in resolved.items() if item is not NO_VALUE}
        if isinstance(value, list):
            return [item for item in (self.resolve(item) for item in value) if item is not NO_VALUE]
        return value

    def _intrinsics(self) -> dict[str, Callable[[Any], Any]]:
        return {
            "Ref": self._ref,
            "Fn::GetAtt": self._get_att,
            "Fn::Sub": self._sub,
            "Fn::Join": self._join,
            "Fn::Select": self._select,
            "Fn::Split": self._split,
            "Fn::If": self._if,
            "Fn::FindInMap": self._find_in_map,
            "Fn::Base64": lambda argument: base64.b64encode(str(self.resolve(argument)).encode()).decode(),
            "Fn::GetAZs": lambda argument: [f"{self.region}{zone}" for zone in "abc"],
        }

    def _ref(self, name: Any) -> Any:
        name = self.resolve(name)
        if name == "AWS::NoValue":
            return NO_VALUE
        if name in self.pseudo_parameters:
            return self.pseudo_parameters[name]
        if name in self.parameters:
            return self.parameters[name]
        if name in self.resources():
            return self.physical(name).ref
        raise TemplateError(f"Ref to unknown name {name!r}")

    def _get_att(self, argument: Any) -> str:
        argument = self.resolve(argument)
        logical_id, attribute = argument.split(".", 1) if isinstance(argument, str) else argument
        if logical_id not in self.resources():
            raise TemplateError(f"Fn::GetAtt of unknown resource {logical_id!r}")

        physical = self.physical(logical_id)
        if attribute not in physical.attributes:
            raise TemplateError(
                f"{logical_id}.{attribute} is not known locally"
                + (" before the resource is created" if physical.type == TABLE else "")
            )
        return physical.attributes[attribute]

    def _sub(self, argument: Any) -> str:
        text, variables = (argument, {}) if isinstance(argument, str) else argument
        values = {name: self.resolve(value) for name, value in variables.items()}

        def substitute(match: re.Match[str]) -> str:
            name = match.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in values:
                return str(values[name])
            if "." in name and name.split(".", 1)[0] in self.resources():
                return self._get_att(name)
            return str(self._ref(name))

        return re.sub(r"\$\{([^}]+)\}", substitute, text)

    def _join(self, argument: Any) -> str:
        delimiter, items = argument
        return str(delimiter).join(str(item) for item in self.resolve(items))

    def _select(self, argument: Any) -> Any:
        index, items = self.resolve(argument)
        return items[int(index)]

    def _split(self, argument: Any) -> list[str]:
        delimiter, text = self.resolve(argument)
        return str(text).split(delimiter)

    def _if(self, argument: Any) -> Any:
        condition, when_true, when_false = argument
        return self.resolve(when_true if self._condition(condition) else when_false)

    def _find_in_map(self, argument: Any) -> Any:
        map_name, top_key, second_key = self.resolve(argument)
        try:
            return self.document["Mappings"][map_name][top_key][second_key]
        except KeyError as exc:
            raise TemplateError(f"Fn::FindInMap found nothing at {map_name}/{top_key}/{second_key}") from exc

    # --- conditions ----------------------------------------------------------------------------------------------

    def _included(self, declaration: Mapping[str, Any]) -> bool:
        condition = declaration.get("Condition")
        return condition is None or self._condition(condition)

    def _condition(self, name: str) -> bool:
        if name not in self._conditions:
            declared = self.document.get("Conditions", {})
            if name not in declared:
                raise TemplateError(f"unknown condition {name!r}")
            self._conditions[name] = self._evaluate(declared[name])
        return self._conditions[name]

    def _evaluate(self, expression: Any) -> bool:
        (function, argument), *_ = expression.items()
        if function == "Fn::Equals":
            left, right = (self.resolve(item) for item in argument)
            return str(left) == str(right)
        if function == "Fn::Not":
            return not self._evaluate(argument[0])
        if function == "Fn::And":
            return all(self._evaluate(item) for item in argument)
        if function == "Fn::Or":
            return any(self._evaluate(item) for item in argument)
        if function == "Condition":
            return self._condition(argument)
        raise TemplateError(f"unsupported condition function {function}")

    # --- parameters ----------------------------------------------------------------------------------------------

    def _parameter_values(self, overrides: dict[str, str]) -> dict[str, Any]:
        declared: Mapping[str, Mapping[str, Any]] = self.document.get("Parameters", {})
        unknown = set(overrides) - set(declared)
        if unknown:
            raise TemplateError(f"unknown parameters: {', '.join(sorted(unknown))}")

        values: dict[str, Any] = {}
        for name, declaration in declared.items():
            if name in overrides:
                value = str(overrides[name])
            elif "Default" in declaration:
                value = _as_text(declaration["Default"])
            else:
                raise TemplateError(f"parameter {name} has no default and no value")
            _check_parameter(name, value, declaration)
            kind = declaration.get("Type", "String")
            values[name] = value.split(",") if kind.startswith("List<") or kind == "CommaDelimitedList" else value
        return values

    # --- physical identities -------------------------------------------------------------------------------------

    def _plan(self, logical_id: str) -> PhysicalResource:
        resource = self.resources()[logical_id]
        kind = resource["Type"]
        properties = resource.get("Properties", {})
        arn_prefix = f"arn:{PARTITION}"

        def name(property_name: str, *, lowercase: bool = False) -> str:
            if property_name in properties:
                return str(self.resolve(properties[property_name]))
            # NOTE: CloudFormation adds a random suffix to generated names; locally a fixed one keeps them stable.
            generated = f"{self.stack_name}-{logical_id}-local"
            return generated.lower() if lowercase else generated

        if kind == TABLE:
            table = name("TableName")
            arn = f"{arn_prefix}:dynamodb:{self.region}:{self.account_id}:table/{table}"
            return PhysicalResource(logical_id, kind, table, {"Arn": arn})
        if kind == BUCKET:
            bucket = name("BucketName", lowercase=True)
            attributes = {
                "Arn": f"{arn_prefix}:s3:::{bucket}",
                "DomainName": f"{bucket}.s3.{URL_SUFFIX}",
                "RegionalDomainName": f"{bucket}.s3.{self.region}.{URL_SUFFIX}",
            }
            return PhysicalResource(logical_id, kind, bucket, attributes)
        if kind == TOPIC:
            topic = name("TopicName")
            arn = f"{arn_prefix}:sns:{self.region}:{self.account_id}:{topic}"
            return PhysicalResource(logical_id, kind, arn, {"TopicArn": arn, "TopicName": topic})
        if kind == QUEUE:
            queue = name("QueueName")
            # NOTE: the URL is AWS's until the queue exists; `deploy` replaces it with the emulator's.
            url = f"https://sqs.{self.region}.{URL_SUFFIX}/{self.account_id}/{queue}"
            arn = f"{arn_prefix}:sqs:{self.region}:{self.account_id}:{queue}"
            return PhysicalResource(logical_id, kind, url, {"Arn": arn, "QueueName": queue, "QueueUrl": url})
        if kind == FUNCTION:
            function = name("FunctionName")
            arn = f"{arn_prefix}:lambda:{self.region}:{self.account_id}:function:{function}"
            return PhysicalResource(logical_id, kind, function, {"Arn": arn})
        if kind == LAYER:
            layer = name("LayerName")
            arn = f"{arn_prefix}:lambda:{self.region}:{self.account_id}:layer:{layer}:1"
            return PhysicalResource(logical_id, kind, arn, {"Arn": arn})
        if kind == API:
            api_id = re.sub(r"[^a-z0-9]", "", logical_id.lower())[:10]
            return PhysicalResource(logical_id, kind, api_id, {"RootResourceId": f"{api_id}root"})
        if kind == KMS_KEY:
            # NOTE: keys are not created locally (the emulator's topics take any key id); the id is a stable stand-in.
            key_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{self.stack_name}/{logical_id}"))
            arn = f"{arn_prefix}:kms:{self.region}:{self.account_id}:key/{key_id}"
            return PhysicalResource(logical_id, kind, key_id, {"Arn": arn, "KeyId": key_id})
        return PhysicalResource(logical_id, kind, f"{self.stack_name}-{logical_id}-local")

    # --- deployment ----------------------------------------------------------------------------------------------

    def deploy(self, client: ClientFactory) -> dict[str, PhysicalResource]:
        """Create every queue, topic, table, bucket and topic subscription of the template in the emulator; returns
        them by logical id.

        Limitations:
            other resource types are not created (functions are run by the driver, the API is served by it);
            `AWS::S3::BucketPolicy` is skipped, as its deny-insecure-transport rule cannot hold over local HTTP.
        """
        services = {QUEUE: "sqs", TOPIC: "sns", TABLE: "dynamodb", BUCKET: "s3", SUBSCRIPTION: "sns"}
        creators: dict[str, Callable[[Any, str, Mapping[str, Any]], None]] = {
            QUEUE: self._create_queue,
            TOPIC: self._create_topic,
            TABLE: self._create_table,
            BUCKET: self._create_bucket,
            SUBSCRIPTION: self._create_subscription,
        }

        created: dict[str, PhysicalResource] = {}
        for kind in DEPLOY_ORDER:
            declared = self.resources(kind)
            service = client(services[kind]) if declared else None
            for logical_id, resource in declared.items():
                creators[kind](service, logical_id, self.resolve(resource.get("Properties", {})))
                created[logical_id] = self.physical(logical_id)
                logger.info("resource created", logical_id=logical_id, type=kind, ref=created[logical_id].ref)

        skipped = sorted({resource["Type"] for resource in self.resources().values()} - set(DEPLOY_ORDER))
        logger.info("resource types not created locally", types=skipped)
        return created

    def _create_queue(self, sqs: Any, logical_id: str, properties: Mapping[str, Any]) -> None:
        physical = self.physical(logical_id)
        attribute_names = (
            "ContentBasedDeduplication",
            "DeduplicationScope",
            "DelaySeconds",
            "FifoQueue",
            "FifoThroughputLimit",
            "KmsDataKeyReusePeriodSeconds",
            "KmsMasterKeyId",
            "MaximumMessageSize",
            "MessageRetentionPeriod",
            "ReceiveMessageWaitTimeSeconds",
            "RedriveAllowPolicy",
            "RedrivePolicy",
            "SqsManagedSseEnabled",
            "VisibilityTimeout",
        )
        attributes = {name: _attribute_text(properties[name]) for name in attribute_names if name in properties}
        tags = {tag["Key"]: tag["Value"] for tag in properties.get("Tags", [])}

        url = sqs.create_queue(QueueName=physical.attributes["QueueName"], Attributes=attributes, tags=tags)["QueueUrl"]
        physical.ref = url
        physical.attributes["QueueUrl"] = url

    def _create_topic(self, sns: Any, logical_id: str, properties: Mapping[str, Any]) -> None:
        physical = self.physical(logical_id)
        attribute_names = (
            "ArchivePolicy",
            "ContentBasedDeduplication",
            "DisplayName",
            "FifoTopic",
            "KmsMasterKeyId",
            "SignatureVersion",
            "TracingConfig",
        )
        attributes = {name: _attribute_text(properties[name]) for name in attribute_names if name in properties}
        tags = list(properties.get("Tags", []))

        arn = sns.create_topic(Name=physical.attributes["TopicName"], Attributes=attributes, Tags=tags)["TopicArn"]
        for subscription in properties.get("Subscription", []):
            sns.subscribe(TopicArn=arn, Protocol=subscription["Protocol"], Endpoint=subscription["Endpoint"])

    def _create_subscription(self, sns: Any, logical_id: str, properties: Mapping[str, Any]) -> None:
        """A topic subscription with its filter policy (a JSON object or text) and the other attributes SNS takes."""
        attribute_names = ("DeliveryPolicy", "FilterPolicy", "FilterPolicyScope", "RawMessageDelivery", "RedrivePolicy")
        attributes = {name: _attribute_text(properties[name]) for name in attribute_names if name in properties}

        arn = sns.subscribe(
            TopicArn=properties["TopicArn"],
            Protocol=properties["Protocol"],
            Endpoint=properties["Endpoint"],
            Attributes=attributes,
            ReturnSubscriptionArn=True,
        )["SubscriptionArn"]
        self.physical(logical_id).ref = arn

    def _create_table(self, dynamodb: Any, logical_id: str, properties: Mapping[str, Any]) -> None:
        physical = self.physical(logical_id)
        request: dict[str, Any] = {
            "TableName": physical.ref,
            "AttributeDefinitions": properties["AttributeDefinitions"],
            "KeySchema": properties["KeySchema"],
            "BillingMode": properties.get("BillingMode", "PROVISIONED"),
        }
        for name in ("ProvisionedThroughput", "TableClass", "DeletionProtectionEnabled", "Tags"):
            if name in properties:
                request[name] = properties[name]
        if "GlobalSecondaryIndexes" in properties:
            index_fields = ("IndexName", "KeySchema", "Projection", "ProvisionedThroughput", "OnDemandThroughput")
            request["GlobalSecondaryIndexes"] = [
                {name: index[name] for name in index_fields if name in index}
                for index in properties["GlobalSecondaryIndexes"]
            ]
        if "LocalSecondaryIndexes" in properties:
            request["LocalSecondaryIndexes"] = [
                {name: index[name] for name in ("IndexName", "KeySchema", "Projection")}
                for index in properties["LocalSecondaryIndexes"]
            ]
        if "StreamSpecification" in properties:
            view_type = properties["StreamSpecification"]["StreamViewType"]
            request["StreamSpecification"] = {"StreamEnabled": True, "StreamViewType": view_type}
        if "SSESpecification" in properties:
            sse = properties["SSESpecification"]
            request["SSESpecification"] = {
                key: value
                for key, value in (
                    ("Enabled", _as_bool(sse.get("SSEEnabled", False))),
                    ("SSEType", sse.get("SSEType")),
                    ("KMSMasterKeyId", sse.get("KMSMasterKeyId")),
                )
                if value is not None
            }

        description = dynamodb.create_table(**request)["TableDescription"]
        if "TimeToLiveSpecification" in properties:
            ttl = properties["TimeToLiveSpecification"]
            dynamodb.update_time_to_live(
                TableName=physical.ref,
                TimeToLiveSpecification={"Enabled": _as_bool(ttl["Enabled"]), "AttributeName": ttl["AttributeName"]},
            )
        if "PointInTimeRecoverySpecification" in properties:
            enabled = _as_bool(properties["PointInTimeRecoverySpecification"].get("PointInTimeRecoveryEnabled"))
            dynamodb.update_continuous_backups(
                TableName=physical.ref,
                PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": enabled},
            )

        physical.attributes["Arn"] = description["TableArn"]
        if "LatestStreamArn" in description:
            physical.attributes["StreamArn"] = description["LatestStreamArn"]

    def _create_bucket(self, s3: Any, logical_id: str, properties: Mapping[str, Any]) -> None:
        bucket = self.physical(logical_id).ref
        if self.region == "us-east-1":
            s3.create_bucket(Bucket=bucket)
        else:
            s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": self.region})

        if "VersioningConfiguration" in properties:
            status = properties["VersioningConfiguration"]["Status"]
            s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": status})
        if "BucketEncryption" in properties:
            rules = [
                {
                    "ApplyServerSideEncryptionByDefault": rule["ServerSideEncryptionByDefault"],
                    **({"BucketKeyEnabled": _as_bool(rule["BucketKeyEnabled"])} if "BucketKeyEnabled" in rule else {}),
                }
                for rule in properties["BucketEncryption"]["ServerSideEncryptionConfiguration"]
            ]
            s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration={"Rules": rules})
        if "PublicAccessBlockConfiguration" in properties:
            block = {key: _as_bool(value) for key, value in properties["PublicAccessBlockConfiguration"].items()}
            s3.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration=block)
        if "OwnershipControls" in properties:
            s3.put_bucket_ownership_controls(Bucket=bucket, OwnershipControls=properties["OwnershipControls"])
        if "Tags" in properties:
            s3.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": properties["Tags"]})

    # --- functions -----------------------------------------------------------------------------------------------

    def _function(self, logical_id: str) -> FunctionSpec:
        globals_ = self.document.get("Globals", {}).get("Function", {})
        declared = _merge_globals(globals_, self.resources(FUNCTION)[logical_id].get("Properties", {}))
        layers = tuple(self._layer_path(layer) for layer in declared.get("Layers", []))
        # NOTE: only what running the code needs is resolved; Policies and the like have no local meaning.
        needed = ("CodeUri", "Handler", "Runtime", "Timeout", "MemorySize", "Environment")
        properties = self.resolve({key: declared[key] for key in needed if key in declared})

        code_uri = properties.get("CodeUri")
        if not isinstance(code_uri, str):
            raise TemplateError(f"{logical_id}: CodeUri must be a local path to run locally")
        variables = properties.get("Environment", {}).get("Variables", {})
        events = tuple(
            EventSource(name=name, type=event["Type"], properties=self.resolve(event.get("Properties", {})))
            for name, event in declared.get("Events", {}).items()
        )

        physical = self.physical(logical_id)
        return FunctionSpec(
            logical_id=logical_id,
            function_name=physical.ref,
            arn=physical.attributes["Arn"],
            code_uri=(self.root / code_uri).resolve(),
            handler=str(properties["Handler"]),
            runtime=str(properties.get("Runtime", "")),
            timeout=int(properties.get("Timeout", 3)),
            memory_size=int(properties.get("MemorySize", 128)),
            environment={name: _as_text(value) for name, value in variables.items()},
            layers=tuple(path for path in layers if path is not None),
            events=events,
        )

    def _layer_path(self, layer: Any) -> Path | None:
        """The local content of a layer of this template; None (and a log line) for a layer given by ARN."""
        if isinstance(layer, Mapping) and set(layer) == {"Ref"} and layer["Ref"] in self.resources(LAYER):
            content_uri = self.resources(LAYER)[layer["Ref"]]["Properties"]["ContentUri"]
            return (self.root / str(self.resolve(content_uri))).resolve()
        logger.warning("layer not in the template, not loaded", layer=str(self.resolve(layer)))
        return None


def _merge_globals(globals_: Mapping[str, Any], own: Mapping[str, Any]) -> dict[str, Any]:
    """SAM's rule: maps merge (the function's keys win), lists concatenate (globals first), scalars are replaced."""
    merged: dict[str, Any] = dict(globals_)
    for key, value in own.items():
        current = merged.get(key)
        if isinstance(current, Mapping) and isinstance(value, Mapping) and not _is_intrinsic(value):
            merged[key] = _merge_globals(current, value)
        elif isinstance(current, list) and isinstance(value, list):
            merged[key] = [*current, *value]
        else:
            merged[key] = value
    return merged


def _is_intrinsic(value: Mapping[str, Any]) -> bool:
    if len(value) != 1:
        return False
    name = str(next(iter(value)))
    return name in ("Ref", "Condition") or name.startswith("Fn::")


def _check_parameter(name: str, value: str, declaration: Mapping[str, Any]) -> None:
    allowed = declaration.get("AllowedValues")
    if allowed is not None and value not in [_as_text(item) for item in allowed]:
        raise TemplateError(f"parameter {name}={value!r} is not one of {allowed}")
    pattern = declaration.get("AllowedPattern")
    if pattern is not None and re.fullmatch(pattern, value) is None:
        raise TemplateError(f"parameter {name}={value!r} does not match {pattern}")
    if declaration.get("Type") == "Number":
        number = float(value)
        if "MinValue" in declaration and number < float(declaration["MinValue"]):
            raise TemplateError(f"parameter {name}={value} is below {declaration['MinValue']}")
        if "MaxValue" in declaration and number > float(declaration["MaxValue"]):
            raise TemplateError(f"parameter {name}={value} is above {declaration['MaxValue']}")


def _as_text(value: Any) -> str:
    """A value as CloudFormation passes it to a string property: booleans lowercase, lists comma-joined."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(_as_text(item) for item in value)
    return str(value)


def _attribute_text(value: Any) -> str:
    """A value as an SQS or SNS attribute: JSON documents serialized, everything else as text."""
    return json.dumps(value) if isinstance(value, Mapping) else _as_text(value)


def _as_bool(value: Any) -> bool:
    return value if isinstance(value, bool) else str(value).lower() == "true"
