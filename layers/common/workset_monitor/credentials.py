"""Reading the channels' secrets from SSM Parameter Store or Secrets Manager, through Powertools parameters.

A reference is `ssm:<parameter name>` (a SecureString is decrypted) or `secretsmanager:<secret name or ARN>` (its
string value, whole). Values are cached for `max_age` seconds, so a rotated secret is picked up within that time
without a call per notification.
"""

from __future__ import annotations

from aws_lambda_powertools.utilities.parameters import GetParameterError, SecretsProvider, SSMProvider

from .routing import SECRETS_MANAGER_SCHEME, SSM_SCHEME

DEFAULT_MAX_AGE_SECONDS = 300


class SecretUnavailable(Exception):
    """A secret could not be read (missing, not allowed, or the service failed)."""


class SecretReader:
    """Reads secrets by reference; the providers (and their boto3 clients) are created on first use.

    Each reader has providers of its own rather than Powertools' process-wide defaults, so a reader's cache and
    endpoint belong to the notifier that made it.
    """

    def __init__(
        self,
        *,
        ssm: SSMProvider | None = None,
        secrets: SecretsProvider | None = None,
        max_age: int = DEFAULT_MAX_AGE_SECONDS,
    ) -> None:
        self._ssm = ssm
        self._secrets = secrets
        self.max_age = max_age

    def read(self, reference: str) -> str:
        try:
            if reference.startswith(SSM_SCHEME):
                value = self._ssm_provider().get(reference[len(SSM_SCHEME) :], max_age=self.max_age, decrypt=True)
            elif reference.startswith(SECRETS_MANAGER_SCHEME):
                name = reference[len(SECRETS_MANAGER_SCHEME) :]
                value = self._secrets_provider().get(name, max_age=self.max_age)
            else:
                raise SecretUnavailable(f"{reference!r} is not an ssm: or secretsmanager: reference")
        except GetParameterError as exc:
            raise SecretUnavailable(f"cannot read {reference}: {exc}") from exc

        if isinstance(value, bytes):
            value = value.decode()
        if not isinstance(value, str) or not value.strip():
            raise SecretUnavailable(f"{reference} holds no text")
        return value.strip()

    def _ssm_provider(self) -> SSMProvider:
        if self._ssm is None:
            self._ssm = SSMProvider()
        return self._ssm

    def _secrets_provider(self) -> SecretsProvider:
        if self._secrets is None:
            self._secrets = SecretsProvider()
        return self._secrets
