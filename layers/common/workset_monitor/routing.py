"""Which notifications go where: the channels' configuration, validated once at start, and their filters. Pure.

The notify function reads one JSON list from `NOTIFY_CHANNELS` (the template's `NotifyChannels` parameter). Each
entry is one channel with a unique `name`, a `type` (`sns`, `linear`, `webhook`) and an optional `filter`:

    [
      {"name": "ops", "type": "sns"},
      {"name": "linear", "type": "linear", "team_id": "9cfb...", "api_key": "ssm:/workset-monitor/dev/notify/linear",
       "filter": {"event_types": ["error", "lease_expired", "completion"], "priorities": ["urgent"]}},
      {"name": "lab-slack", "type": "webhook", "format": "slack",
       "url": "secretsmanager:workset-monitor/dev/notify/slack"},
      {"name": "oncall", "type": "webhook", "format": "pagerduty", "url": "https://events.pagerduty.com/v2/enqueue",
       "routing_key": "ssm:/workset-monitor/dev/notify/pagerduty", "filter": {"priorities": ["urgent"]}}
    ]

Secrets (a Linear API key, a webhook signing secret, a PagerDuty routing key, a Slack webhook URL) are never in the
configuration itself: a value `ssm:<parameter name>` or `secretsmanager:<secret name or ARN>` names where the
function reads it, under the prefix its IAM policy allows.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator, model_validator

from .events import EventType, WorksetEvent
from .models import Priority, State

DEFAULT_CHANNELS = '[{"name": "sns", "type": "sns"}]'
"""Without configuration, every event goes to the SNS topic and nowhere else."""

SSM_SCHEME = "ssm:"
SECRETS_MANAGER_SCHEME = "secretsmanager:"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
LINEAR_GRAPHQL_URL = "https://api.linear.app/graphql"
PAGERDUTY_EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"


class ConfigurationError(Exception):
    """The channels' configuration cannot be used; the message says every problem."""


class RouteFilter(BaseModel):
    """Which events a channel wants. A missing list admits every value; all given lists must admit the event."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event_types: frozenset[EventType] | None = Field(default=None, min_length=1)
    states: frozenset[State] | None = Field(default=None, min_length=1, description="the state the workset entered")
    priorities: frozenset[Priority] | None = Field(default=None, min_length=1)

    def admits(self, event: WorksetEvent) -> bool:
        return (
            (self.event_types is None or event.event_type in self.event_types)
            and (self.states is None or event.state in self.states)
            and (self.priorities is None or event.priority in self.priorities)
        )


class _Channel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,39}$", description="unique; part of the idempotency key")
    filter: RouteFilter = RouteFilter()


class _HttpChannel(_Channel):
    timeout_seconds: float = Field(default=4.0, gt=0, le=30, description="per request, connect and read each")
    max_attempts: int = Field(default=3, ge=1, le=5, description="per delivery, within one invocation")
    max_wait_seconds: float = Field(
        default=5.0, ge=0, le=30, description="longest pause between attempts; a longer Retry-After ends the delivery"
    )


class SnsChannelConfig(_Channel):
    type: Literal["sns"]
    topic_arn: str | None = Field(default=None, description="default: the stack's topic (WORKSET_TOPIC_ARN)")


class LinearChannelConfig(_HttpChannel):
    type: Literal["linear"]
    team_id: str = Field(min_length=1)
    api_key: str = Field(description="ssm:<name> or secretsmanager:<name>")
    url: str = LINEAR_GRAPHQL_URL
    completed_state_id: str | None = Field(default=None, description="default: the team's first completed state")
    label_ids: tuple[str, ...] = ()

    @field_validator("api_key")
    @classmethod
    def _api_key_is_a_reference(cls, value: str) -> str:
        return _secret_reference(value)

    @field_validator("url")
    @classmethod
    def _url_is_https(cls, value: str) -> str:
        return _endpoint(value)


class WebhookChannelConfig(_HttpChannel):
    type: Literal["webhook"]
    url: str = Field(description="https URL (http only to this machine), or ssm:/secretsmanager: naming it")
    format: Literal["json", "slack", "pagerduty"] = "json"
    signing_secret: str | None = Field(default=None, description="HMAC-SHA256 key; required for format json")
    routing_key: str | None = Field(default=None, description="PagerDuty integration key; format pagerduty only")

    @field_validator("url")
    @classmethod
    def _url_is_https_or_a_reference(cls, value: str) -> str:
        return value if _is_reference(value) else _endpoint(value)

    @field_validator("signing_secret", "routing_key")
    @classmethod
    def _secrets_are_references(cls, value: str | None) -> str | None:
        return None if value is None else _secret_reference(value)

    @model_validator(mode="after")
    def _format_has_what_it_needs(self) -> WebhookChannelConfig:
        if not _is_reference(self.url) and (self.format == "slack" or _is_slack_webhook(self.url)):
            raise ValueError(
                "a Slack webhook URL is a credential: keep it in Secrets Manager or SSM and give url as "
                "secretsmanager:<secret name> or ssm:/<parameter name>"
            )
        if self.format == "json" and self.signing_secret is None:
            raise ValueError("a json webhook needs a signing_secret, so its receiver can verify what it gets")
        if (self.format == "pagerduty") != (self.routing_key is not None):
            raise ValueError("routing_key is required for format pagerduty, and only there")
        return self


def _is_slack_webhook(url: str) -> bool:
    """Whether a URL is a Slack incoming webhook's, a credential whatever format it is posted in."""
    host = (urlsplit(url).hostname or "").lower()
    return host == "hooks.slack.com" or host.endswith(".hooks.slack.com")


ChannelConfig = Annotated[SnsChannelConfig | LinearChannelConfig | WebhookChannelConfig, Field(discriminator="type")]
_channels_adapter: TypeAdapter[list[ChannelConfig]] = TypeAdapter(list[ChannelConfig])


def parse_channels(text: str | None, *, secrets_prefix: str = "") -> list[ChannelConfig]:
    """The channels `text` (JSON) configures, or the default ones for an empty text.

    Every secret reference must lie under `secrets_prefix` (the notify function may read nothing else); raises
    ConfigurationError naming every problem.
    """
    text = (text or "").strip() or DEFAULT_CHANNELS
    try:
        document: Any = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigurationError(f"NOTIFY_CHANNELS is not JSON: {exc}") from exc

    try:
        channels = _channels_adapter.validate_python(document)
    except ValidationError as exc:
        details = "; ".join(f"{_where(error['loc'], document)}: {error['msg']}" for error in exc.errors())
        raise ConfigurationError(f"NOTIFY_CHANNELS is not a valid channel list: {details}") from exc

    problems = _duplicates([channel.name for channel in channels])
    problems += [
        f"channel {channel.name}: {reference!r} is outside what the function may read ({_allowed(secrets_prefix)})"
        for channel in channels
        for reference in secret_references(channel)
        if not _under(reference, secrets_prefix)
    ]
    if problems:
        raise ConfigurationError("NOTIFY_CHANNELS: " + "; ".join(problems))
    return channels


def secret_references(channel: ChannelConfig) -> list[str]:
    """Every `ssm:` or `secretsmanager:` value of one channel."""
    if isinstance(channel, LinearChannelConfig):
        return [channel.api_key]
    if isinstance(channel, WebhookChannelConfig):
        candidates = [channel.url, channel.signing_secret, channel.routing_key]
        return [value for value in candidates if value is not None and _is_reference(value)]
    return []


def _is_reference(value: str) -> bool:
    return value.startswith((SSM_SCHEME, SECRETS_MANAGER_SCHEME))


def _secret_reference(value: str) -> str:
    if value.startswith(SSM_SCHEME) and value[len(SSM_SCHEME) :].startswith("/"):
        return value
    if value.startswith(SECRETS_MANAGER_SCHEME) and len(value) > len(SECRETS_MANAGER_SCHEME):
        return value
    raise ValueError("must be ssm:/<parameter name> or secretsmanager:<secret name>, never the secret itself")


def _endpoint(value: str) -> str:
    """A URL written in the configuration: https (plain http only to this machine), and holding no credential."""
    parts = urlsplit(value)
    if parts.username is not None or parts.password is not None or parts.query:
        raise ValueError(
            "a URL with a user name, a password or a query string holds credentials: keep it in Secrets Manager or "
            "SSM and give url as secretsmanager:<secret name> or ssm:/<parameter name>"
        )
    if parts.scheme == "https" and parts.hostname:
        return value
    if parts.scheme == "http" and parts.hostname in LOOPBACK_HOSTS:
        return value
    raise ValueError("must be an https URL (plain http only to this machine)")


def _under(reference: str, prefix: str) -> bool:
    """Whether the function's policy lets it read `reference`: SSM names under "/<prefix>", secrets under prefix."""
    if not prefix:
        return True
    if reference.startswith(SSM_SCHEME):
        return reference[len(SSM_SCHEME) :].startswith("/" + prefix)
    name = reference[len(SECRETS_MANAGER_SCHEME) :]
    return name.startswith(prefix) or f":secret:{prefix}" in name


def _allowed(prefix: str) -> str:
    return f"ssm:/{prefix}... or secretsmanager:{prefix}..."


def _duplicates(names: list[str]) -> list[str]:
    repeated = sorted({name for name in names if names.count(name) > 1})
    return [f"channel name {name!r} is used more than once" for name in repeated]


def _where(location: tuple[int | str, ...], document: Any) -> str:
    """A validation error's place, naming the channel by its name when it has one: `channel ops-sns: filter`."""
    if not location or not isinstance(location[0], int) or not isinstance(document, list):
        return ".".join(str(part) for part in location) or "(top)"
    entry = document[location[0]] if location[0] < len(document) else None
    name = entry.get("name") if isinstance(entry, dict) else None
    # Pydantic puts the discriminator's value (sns, linear, webhook) second; it says nothing to a reader.
    rest = [str(part) for part in location[1:] if part not in ("sns", "linear", "webhook")]
    label = f"channel {name}" if name else f"channel #{location[0] + 1}"
    return f"{label}: {'.'.join(rest)}" if rest else label
