"""The alarms and the CloudWatch dashboard of template.yaml against the metrics the functions publish (measures.py):
every metric the dashboard or an alarm names is one the code emits, under the dimensions it emits it with."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from local.demo import emitted_metrics
from local.template import Template
from workset_monitor import measures

ROOT = Path(__file__).resolve().parents[2]
PUBLISHED = {
    measures.QUEUE_DEPTH: ("state",),
    measures.READY_QUEUE_DEPTH: ("priority",),
    measures.OLDEST_READY_AGE: (),
    measures.REGISTRATIONS: ("outcome",),
    measures.TRANSITIONS: ("state", "priority"),
    measures.RUN_DURATION: ("state",),
    measures.LOCK_CONFLICTS: ("code",),
    measures.SCHEDULER_DECISIONS: ("decision",),
    measures.CLUSTER_WORKSETS: ("cluster",),
    "Delivered": ("channel",),
    "DeliveryFailed": ("channel",),
}
"""Each metric the dashboard shows and the dimensions (besides `service`) it is published with."""


@pytest.fixture(scope="module")
def template() -> Template:
    return Template.load(ROOT / "template.yaml", parameters={"Stage": "test"})


@pytest.fixture(scope="module")
def dashboard(template: Template) -> dict[str, Any]:
    """The dashboard's body with every ${...} of its Fn::Sub made a plain value, parsed as JSON."""
    body, variables = template.resources("AWS::CloudWatch::Dashboard")["OperationsDashboard"]["Properties"][
        "DashboardBody"
    ]["Fn::Sub"]
    names = set(template.resources()) | set(template.document["Parameters"]) | set(variables) | {"AWS::Region"}
    for reference in re.findall(r"\$\{([^}]+)\}", body):
        assert reference.split(".")[0] in names, f"the dashboard names {reference}, which the template does not have"
    parsed: dict[str, Any] = json.loads(re.sub(r"\$\{[^}]+\}", "0", body))
    return parsed


def test_the_dashboard_shows_every_published_metric_under_the_dimensions_it_is_published_with(
    dashboard: dict[str, Any],
) -> None:
    searched = {}
    for widget in dashboard["widgets"]:
        for metric in widget["properties"].get("metrics", []):
            expression = metric[0].get("expression", "") if isinstance(metric[0], dict) else ""
            found = re.fullmatch(r"SEARCH\('\{WorksetMonitor,service,?([^}]*)\} MetricName=\"(\w+)\".*", expression)
            if found:
                searched[found.group(2)] = tuple(name for name in found.group(1).split(",") if name)

    assert {name: dims for name, dims in searched.items()} == {name: dims for name, dims in PUBLISHED.items() if dims}


def test_every_alarm_notifies_the_alarm_topic_or_the_stack_s_and_says_it_is_ok_again(template: Template) -> None:
    alarms = template.resources("AWS::CloudWatch::Alarm")
    expected = [{"Fn::If": ["HasAlarmTopic", {"Ref": "AlarmTopicArn"}, {"Ref": "WorksetTopic"}]}]

    assert len(alarms) == 12
    for name, alarm in alarms.items():
        assert alarm["Properties"]["AlarmActions"] == expected, name
        assert alarm["Properties"]["OKActions"] == expected, name
        assert alarm["Properties"]["TreatMissingData"] in ("notBreaching", "breaching"), name


def test_the_oldest_ready_alarm_watches_the_metric_the_tick_publishes(template: Template) -> None:
    alarm = template.resources("AWS::CloudWatch::Alarm")["OldestReadyAlarm"]["Properties"]
    [stat] = [metric["MetricStat"] for metric in alarm["Metrics"] if "MetricStat" in metric]

    assert (stat["Metric"]["Namespace"], stat["Metric"]["MetricName"]) == ("WorksetMonitor", measures.OLDEST_READY_AGE)
    assert [dimension["Name"] for dimension in stat["Metric"]["Dimensions"]] == ["service"]
    assert alarm["Threshold"] == {"Ref": "OldestReadyAlarmMinutes"}


def test_the_demo_summary_reads_each_data_point_of_the_emf_lines() -> None:
    lines = [
        '{"level":"INFO","message":"function invoked"}',
        '{"_aws":{"Timestamp":1,"CloudWatchMetrics":[{"Namespace":"WorksetMonitor",'
        '"Dimensions":[["channel","service"]],'
        '"Metrics":[{"Name":"Delivered","Unit":"Count"}]}]},"channel":"sns","service":"s","Delivered":[2.0]}',
        '{"_aws":{"Timestamp":2,"CloudWatchMetrics":[{"Namespace":"WorksetMonitor","Dimensions":[["service"]],'
        '"Metrics":[{"Name":"Claims","Unit":"Count"}]}]},"service":"s","Claims":[1.0,1.0]}',
        '{"_aws": half a line',
    ]

    assert emitted_metrics(lines) == {("Delivered", (("channel", "sns"),)): [2.0], ("Claims", ()): [1.0, 1.0]}
