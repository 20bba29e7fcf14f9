"""Secret backends: where provider API keys and module secrets come from, behind one interface.

- :mod:`aion.secrets.base`: the interface (``get(name) -> str``), its errors and the name rule;
- :mod:`aion.secrets.files`: one file per secret in a directory (a mounted Kubernetes secret);
- :mod:`aion.secrets.sops`: one sops-encrypted YAML or JSON file, age recipients;
- :mod:`aion.secrets.vault`: one HashiCorp Vault KV v2 secret, one key per name;
- :mod:`aion.secrets.select`: the backend that aiond's (or aionctl's) settings choose.

Importing this package loads only the interface: a backend's module (and hvac) loads when it is chosen.
"""

from __future__ import annotations

from aion.secrets.base import (
    MAX_NAME_CHARS,
    MAX_SECRET_BYTES,
    SecretMissing,
    SecretNameInvalid,
    SecretsBackend,
    SecretsUnavailable,
    check_name,
)

__all__ = [
    "MAX_NAME_CHARS",
    "MAX_SECRET_BYTES",
    "SecretMissing",
    "SecretNameInvalid",
    "SecretsBackend",
    "SecretsUnavailable",
    "check_name",
]
