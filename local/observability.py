"""The logger every module of the local stack imports: one service name, structured lines, short lowercase messages."""

from __future__ import annotations

from aws_lambda_powertools import Logger

logger = Logger(service="workset-monitor-local")
