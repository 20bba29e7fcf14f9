"""Where provider API keys come from: the secret backends of :mod:`aion.secrets`, under the names this
module has always had, and the backend models.yml names (``secrets.backend``) for tools other than
aiond.

aiond chooses its backend from its own settings only (``--secrets-backend``, ``--secrets-dir``,
``--sops-file``, ``--vault-addr``, ...: :func:`backend_for`), fixed when it starts; a config set never
decides where keys are read (``secrets.directory`` in models.yml is for other tools, see the schema).

Values are never logged, and no error or repr carries one: errors name the secret and where it was
looked for.
"""

from __future__ import annotations

from aion.config.model import Models
from aion.errors import ConfigError
from aion.secrets.base import (
    MAX_NAME_CHARS,
    MAX_SECRET_BYTES,
    SecretMissing,
    SecretNameInvalid,
    SecretsBackend,
    SecretsUnavailable,
    check_name,
)
from aion.secrets.files import DEFAULT_DIRECTORY, FileSecrets
from aion.secrets.select import BackendSettings, backend_for


def secrets_from(models: Models) -> SecretsBackend:
    """The secret backend models.yml names (``secrets.backend``), for tools other than aiond (which
    reads keys from the backend its own settings choose)."""
    if models.secrets_backend == "files":
        return FileSecrets(models.secrets_directory or DEFAULT_DIRECTORY)
    raise ConfigError(
        f"unknown secrets backend {models.secrets_backend!r} in models.yml; the backends are: files",
        hint="set secrets.backend to files and secrets.directory to the directory of secret files",
    )


__all__ = [
    "DEFAULT_DIRECTORY",
    "MAX_NAME_CHARS",
    "MAX_SECRET_BYTES",
    "BackendSettings",
    "FileSecrets",
    "SecretMissing",
    "SecretNameInvalid",
    "SecretsBackend",
    "SecretsUnavailable",
    "backend_for",
    "check_name",
    "secrets_from",
]
