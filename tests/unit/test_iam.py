"""The IAM check of the local stack (`local.iam`) and the recorder of the handlers' AWS calls (`local.runtime`).

The templates here are minimal snippets of what template.yaml declares; the calls are what boto3 would send.
Clients are stubbed with botocore's Stubber: nothing goes to the network.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from local.iam import (
    AwsCall,
    Deployment,
    PolicyError,
    Statement,
    find_violations,
    function_policy,
    permissions_needed,
)
from local.runtime import AwsCallRecorder, attributed_to
from local.template import Template

REGION = "us-east-1"
ACCOUNT = "123456789012"
TABLE_ARN = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/worksets"
BUCKET_ARN = "arn:aws:s3:::workset-bucket"
DEPLOYMENT = Deployment(region=REGION, account_id=ACCOUNT, partition_keys={"worksets": "pk"})


def template(function: Mapping[str, Any], **resources: Mapping[str, Any]) -> Template:
    """A template with a table `Table` (named worksets, partition key pk), a queue, and `Fn` as given."""
    document = {
        "Resources": {
            "Table": {
                "Type": "AWS::DynamoDB::Table",
                "Properties": {"TableName": "worksets", "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}]},
            },
            "Failures": {"Type": "AWS::SQS::Queue", "Properties": {"QueueName": "failures"}},
            "Fn": {"Type": "AWS::Serverless::Function", "Properties": dict(function)},
            **resources,
        }
    }
    return Template(document, root=Path("."), region=REGION, account_id=ACCOUNT)


def statements(*declared: Mapping[str, Any]) -> dict[str, Any]:
    return {"Policies": [{"Statement": list(declared)}]}


def check(fn: Template, service: str, operation: str, **params: Any) -> list[str]:
    """What the check says of one call of `Fn`: one line per refused authorization."""
    call = AwsCall(f"{service}:{operation}", permissions_needed(service, operation, params, DEPLOYMENT))
    return [str(violation) for violation in find_violations({"Fn": [call]}, {"Fn": function_policy(fn, "Fn")})]


# --- the matcher -----------------------------------------------------------------------------------------------------


def test_a_missing_action_is_reported_with_the_function_the_resource_and_the_statement_to_change() -> None:
    # GIVEN a function allowed to read and put items, but not to update them (the API's heartbeat bug)
    fn = template(
        statements(
            {
                "Effect": "Allow",
                "Action": ["dynamodb:GetItem", "dynamodb:PutItem"],
                "Resource": {"Fn::GetAtt": "Table.Arn"},
            }
        )
    )

    # WHEN it updates an item
    refused = check(fn, "dynamodb", "UpdateItem", TableName="worksets", Key={"pk": {"S": "WORKSET#a"}})

    # THEN the check names the function, the action, the table and the statement that lacks it
    assert refused == [
        f"Fn: dynamodb:UpdateItem on {TABLE_ARN} is not allowed: add dynamodb:UpdateItem to the Action of "
        f"Policies[0].Statement[0] (Action ['dynamodb:GetItem', 'dynamodb:PutItem'], Resource ['{TABLE_ARN}'])"
    ]
    assert check(fn, "dynamodb", "GetItem", TableName="worksets", Key={"pk": {"S": "WORKSET#a"}}) == []


def test_action_wildcards_match_as_iam_does_and_ignore_case() -> None:
    fn = template(statements({"Effect": "Allow", "Action": ["dynamodb:get*", "dynamodb:?uery"], "Resource": "*"}))

    assert check(fn, "dynamodb", "GetItem", TableName="worksets", Key={"pk": {"S": "x"}}) == []
    assert check(fn, "dynamodb", "Query", TableName="worksets") == []
    [refused] = check(fn, "dynamodb", "PutItem", TableName="worksets", Item={"pk": {"S": "x"}})
    assert refused.startswith(f"Fn: dynamodb:PutItem on {TABLE_ARN} is not allowed")


def test_a_query_on_an_index_needs_the_index_resource() -> None:
    # GIVEN Query allowed on the table only
    fn = template(statements({"Effect": "Allow", "Action": "dynamodb:Query", "Resource": {"Fn::GetAtt": "Table.Arn"}}))

    # THEN a query of the table passes, and one of an index is refused, naming the index's ARN
    assert check(fn, "dynamodb", "Query", TableName="worksets") == []
    [refused] = check(fn, "dynamodb", "Query", TableName="worksets", IndexName="by-state")
    assert refused.startswith(f"Fn: dynamodb:Query on {TABLE_ARN}/index/by-state is not allowed: add {TABLE_ARN}/")
    assert "to the Resource of Policies[0].Statement[0]" in refused

    # AND the usual `${Table.Arn}/index/*` allows every index
    indexes = template(
        statements(
            {
                "Effect": "Allow",
                "Action": "dynamodb:Query",
                "Resource": [{"Fn::GetAtt": "Table.Arn"}, {"Fn::Sub": "${Table.Arn}/index/*"}],
            }
        )
    )
    assert check(indexes, "dynamodb", "Query", TableName="worksets", IndexName="by-state") == []


def test_a_transaction_needs_the_action_of_each_item_on_its_table() -> None:
    fn = template(
        statements({"Effect": "Allow", "Action": ["dynamodb:PutItem"], "Resource": {"Fn::GetAtt": "Table.Arn"}})
    )
    items = [
        {"Put": {"TableName": "worksets", "Item": {"pk": {"S": "WORKSET#a"}}}},
        {"ConditionCheck": {"TableName": "worksets", "Key": {"pk": {"S": "CLUSTER#c"}}, "ConditionExpression": "x"}},
    ]

    [refused] = check(fn, "dynamodb", "TransactWriteItems", TransactItems=items)

    assert refused.startswith(
        f"Fn: dynamodb:ConditionCheckItem on {TABLE_ARN} (needed by dynamodb:TransactWriteItems) is not allowed"
    )


def test_a_leading_keys_condition_allows_only_its_items() -> None:
    # GIVEN the notify function's rule: incident items of the workset table only
    fn = template(
        statements(
            {
                "Effect": "Allow",
                "Action": ["dynamodb:GetItem", "dynamodb:PutItem"],
                "Resource": {"Fn::GetAtt": "Table.Arn"},
                "Condition": {"ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["INCIDENT#*"]}},
            }
        )
    )

    assert check(fn, "dynamodb", "GetItem", TableName="worksets", Key={"pk": {"S": "INCIDENT#a"}}) == []
    [refused] = check(fn, "dynamodb", "PutItem", TableName="worksets", Item={"pk": {"S": "WORKSET#a"}})
    assert "allows it, but ForAllValues:StringLike dynamodb:LeadingKeys ['INCIDENT#*'] (the request has WORKSET#a)" in (
        refused
    )


def test_an_s3_prefix_condition_is_evaluated_on_the_listed_prefix() -> None:
    fn = template(
        statements(
            {
                "Effect": "Allow",
                "Action": "s3:ListBucket",
                "Resource": BUCKET_ARN,
                "Condition": {"StringLike": {"s3:prefix": "active/*"}},
            }
        )
    )

    assert check(fn, "s3", "ListObjectsV2", Bucket="workset-bucket", Prefix="active/hg002/") == []
    [outside] = check(fn, "s3", "ListObjectsV2", Bucket="workset-bucket", Prefix="archive/")
    [everything] = check(fn, "s3", "ListObjectsV2", Bucket="workset-bucket")
    assert "(the request has archive/)" in outside
    assert "(the request has nothing)" in everything


def test_object_resources_are_matched_with_the_key_and_s3_names_its_own_actions() -> None:
    fn = template(
        statements(
            {"Effect": "Allow", "Action": "s3:GetObject", "Resource": f"{BUCKET_ARN}/active/*"},
            {"Effect": "Allow", "Action": "s3:DeleteObject", "Resource": f"{BUCKET_ARN}/active/*/daylily.lock"},
        )
    )

    assert check(fn, "s3", "HeadObject", Bucket="workset-bucket", Key="active/hg002/stage_samples.tsv") == []
    [versioned] = check(fn, "s3", "GetObject", Bucket="workset-bucket", Key="active/a/x", VersionId="v1")
    assert versioned.startswith("Fn: s3:GetObjectVersion on")
    objects = [{"Key": "active/a/daylily.lock"}, {"Key": "active/a/daylily.ready"}]
    [refused] = check(fn, "s3", "DeleteObjects", Bucket="workset-bucket", Delete={"Objects": objects})
    assert refused.startswith(
        f"Fn: s3:DeleteObject on {BUCKET_ARN}/active/a/daylily.ready (needed by s3:DeleteObjects)"
    )


def test_an_explicit_deny_wins_over_an_allow() -> None:
    fn = template(
        statements(
            {"Effect": "Allow", "Action": "dynamodb:*", "Resource": "*"},
            {"Effect": "Deny", "Action": "dynamodb:DeleteItem", "Resource": "*"},
        )
    )

    [refused] = check(fn, "dynamodb", "DeleteItem", TableName="worksets", Key={"pk": {"S": "x"}})
    assert "denied by Policies[0].Statement[1]" in refused


def test_a_condition_that_cannot_be_evaluated_allows_nothing_and_says_so() -> None:
    fn = template(
        statements(
            {
                "Effect": "Allow",
                "Action": "dynamodb:Query",
                "Resource": "*",
                "Condition": {"ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["INCIDENT#*"]}},
            },
            {
                "Effect": "Allow",
                "Action": "sns:Publish",
                "Resource": "*",
                "Condition": {"Bool": {"aws:SecureTransport": "true"}},
            },
        )
    )

    [query] = check(fn, "dynamodb", "Query", TableName="worksets")
    [publish] = check(fn, "sns", "Publish", TopicArn=f"arn:aws:sns:{REGION}:{ACCOUNT}:events")
    assert "needs the request's value, which is not derived locally" in query
    assert "its condition Bool on aws:SecureTransport is not evaluated locally" in publish


# --- the role SAM builds ---------------------------------------------------------------------------------------------


def test_sam_policy_templates_and_event_sources_are_expanded_as_sam_does() -> None:
    # GIVEN a stream-triggered function with a failure queue, by SAM policy template and by destination
    fn = template(
        {
            "Policies": [{"SQSSendMessagePolicy": {"QueueName": {"Fn::GetAtt": "Failures.QueueName"}}}],
            "Events": {
                "Changes": {
                    "Type": "DynamoDB",
                    "Properties": {
                        "Stream": {"Fn::GetAtt": "Table.StreamArn"},
                        "DestinationConfig": {
                            "OnFailure": {"Type": "SQS", "Destination": {"Fn::GetAtt": "Failures.Arn"}}
                        },
                    },
                }
            },
        }
    )
    queue_arn = f"arn:aws:sqs:{REGION}:{ACCOUNT}:failures"

    policy = function_policy(fn, "Fn")

    by_source = {statement.source: statement for statement in policy.statements}
    assert by_source["Policies[0] SQSSendMessagePolicy.Statement[0]"] == Statement(
        source="Policies[0] SQSSendMessagePolicy.Statement[0]",
        effect="Allow",
        actions=("sqs:SendMessage*",),
        resources=(queue_arn,),
    )
    assert by_source["Events.Changes.DestinationConfig.OnFailure (SAM adds it for the SQS destination)"].resources == (
        queue_arn,
    )
    assert (
        "dynamodb:GetRecords"
        in by_source["AWSLambdaDynamoDBExecutionRole (SAM adds it for the DynamoDB event Changes)"].actions
    )
    url = f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/failures"
    assert check(fn, "sqs", "SendMessageBatch", QueueUrl=url, Entries=[]) == []
    assert check(fn, "logs", "PutLogEvents") == []


def test_what_cannot_be_expanded_fails_instead_of_being_guessed() -> None:
    with pytest.raises(PolicyError, match="DynamoDBCrudPolicy is not a policy template known here"):
        function_policy(template({"Policies": [{"DynamoDBCrudPolicy": {"TableName": "worksets"}}]}), "Fn")
    with pytest.raises(PolicyError, match="managed policy AmazonS3FullAccess is not known here"):
        function_policy(template({"Policies": "AmazonS3FullAccess"}), "Fn")
    with pytest.raises(PolicyError, match="uses its own Role"):
        function_policy(template({"Role": "arn:aws:iam::123456789012:role/x"}), "Fn")
    with pytest.raises(PolicyError, match="for a Kafka event is not known here"):
        function_policy(template({"Events": {"Topic": {"Type": "Kafka"}}}), "Fn")


def test_a_secret_is_named_with_the_suffix_secrets_manager_adds() -> None:
    fn = template(
        statements(
            {
                "Effect": "Allow",
                "Action": "secretsmanager:GetSecretValue",
                "Resource": {
                    "Fn::Sub": "arn:${AWS::Partition}:secretsmanager:${AWS::Region}:${AWS::AccountId}:secret:app/*"
                },
            }
        )
    )

    assert check(fn, "secretsmanager", "GetSecretValue", SecretId="app/linear") == []
    assert check(fn, "secretsmanager", "GetSecretValue", SecretId="other/linear") != []


# --- the recorder ----------------------------------------------------------------------------------------------------


def stubbed_client(service: str) -> Any:
    return boto3.client(
        service,  # type: ignore[call-overload]
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def test_the_recorder_attributes_calls_to_the_running_function_and_counts_each_page() -> None:
    # GIVEN a recorder, and a client created outside any function (as a test or the driver would)
    recorder = AwsCallRecorder(DEPLOYMENT)
    s3 = stubbed_client("s3")
    with Stubber(s3) as stub:
        first = {"IsTruncated": True, "NextContinuationToken": "t", "Contents": [{"Key": "active/a/x", "Size": 1}]}
        stub.add_response("list_objects_v2", first)
        stub.add_response("list_objects_v2", {"IsTruncated": False, "Contents": []})
        stub.add_response("head_object", {})

        # WHEN a function's handler walks a paginator and heads an object, and then the test heads one
        with attributed_to(recorder, "RegisterFunction"):
            pages = list(s3.get_paginator("list_objects_v2").paginate(Bucket="workset-bucket", Prefix="active/a/"))
        s3.head_object(Bucket="workset-bucket", Key="active/a/x")

    # THEN only the function's calls are recorded, both pages (as one distinct call)
    assert len(pages) == 2
    assert recorder.operations() == {"RegisterFunction": {"s3:ListObjectsV2"}}
    [call] = recorder.calls()["RegisterFunction"]
    [permission] = call.permissions
    assert (permission.action, permission.resource) == ("s3:ListBucket", BUCKET_ARN)
    assert permission.context == (("s3:prefix", ("active/a/",)),)


def test_a_client_created_by_a_function_reports_its_calls_from_other_threads() -> None:
    # GIVEN a client the function created (at import or in an invocation)
    recorder = AwsCallRecorder(DEPLOYMENT)
    with attributed_to(recorder, "NotifyFunction"):
        sns = stubbed_client("sns")

    # WHEN it publishes from a worker thread, where no invocation is current
    with Stubber(sns) as stub:
        stub.add_response("publish", {"MessageId": "m"})
        topic = f"arn:aws:sns:{REGION}:{ACCOUNT}:events"
        worker = threading.Thread(target=lambda: sns.publish(TopicArn=topic, Message="hello"))
        worker.start()
        worker.join()

    # THEN the call is the function's
    [call] = recorder.calls()["NotifyFunction"]
    assert call.operation == "sns:Publish"
    assert [permission.resource for permission in call.permissions] == [topic]
