"""The logger and metrics every module imports, so all lines share one service name and format."""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics

logger = Logger(service="workset-monitor")
metrics = Metrics(namespace="WorksetMonitor", service="workset-monitor")
