"""The one interface every secret backend implements, its errors, and the rule for secret names.

A backend answers :meth:`SecretsBackend.get` with the value of one secret, by name. It raises
:class:`SecretMissing` when the backend answered and the secret is not there (or is empty, or is not
text), and :class:`SecretsUnavailable` when the backend could not answer at all (a file that cannot
be decrypted, a Vault that cannot be reached or refuses the credentials): a caller that treats an
optional secret's absence as normal (a module's ``NAME?``) must not mistake a broken backend for it.

No error, log line or repr ever carries a value: errors name the secret and where it was looked for.
Backends are safe to share between threads; aiond calls them from worker threads.
"""

from __future__ import annotations

import re
from typing import Protocol

from aion.errors import InputError

MAX_NAME_CHARS = 255
"""The longest secret name: a file name, which most file systems cap at 255 bytes."""
MAX_SECRET_BYTES = 64 * 1024
"""The largest value of one secret (no API key is anywhere near this)."""

_NAME = re.compile(rf"[A-Za-z0-9_][A-Za-z0-9_.-]{{0,{MAX_NAME_CHARS - 1}}}")


class SecretMissing(InputError):
    """A secret that is not there (or is empty, or unreadable); names the secret, never a value."""

    def __init__(self, name: str, message: str, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.name = name


class SecretsUnavailable(InputError):
    """The backend could not say whether the secret is there: it cannot be read, decrypted or reached.
    Names the secret and the backend, never a value."""

    def __init__(self, name: str, message: str, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.name = name


class SecretNameInvalid(InputError):
    """A secret name that cannot be a file name in the secret directory."""


class SecretsBackend(Protocol):
    def get(self, name: str) -> str:
        """The value of the secret ``name``; :class:`SecretMissing` when there is none,
        :class:`SecretsUnavailable` when the backend cannot answer."""
        ...


NAME_HINT = "a secret name is the name of one file in the secrets directory (aiond's --secrets-dir)"


def check_name(name: str, *, hint: str = NAME_HINT) -> str:
    """``name`` when it is a plain file name: one path segment of letters, digits, ``_``, ``.`` and
    ``-``, not starting with a dot (so neither ``.``, ``..`` nor Kubernetes' hidden ``..data``
    entries), at most :data:`MAX_NAME_CHARS` characters. Every backend takes names by this rule, so a
    secret can move from one backend to another under the same name."""
    if _NAME.fullmatch(name) is None:
        shown = name if len(name) <= 80 and name.isprintable() else repr(name[:80])
        raise SecretNameInvalid(
            f"invalid secret name {shown!r}: use letters, digits, '_', '.' and '-', not starting with a "
            f"dot, without path separators, at most {MAX_NAME_CHARS} characters",
            hint=hint,
        )
    return name


def value_of(raw: object) -> str | None:
    """A secret's value as a backend that stores text holds it: surrounding whitespace stripped; None
    when it is not text or is empty once stripped."""
    if not isinstance(raw, str):
        return None
    value = raw.strip()
    return value or None


def kind_of(raw: object) -> str:
    """What a non-text value is, in words (never the value itself)."""
    match raw:
        case bool():
            return "a boolean"
        case int() | float():
            return "a number"
        case dict():
            return "a mapping"
        case list():
            return "a list"
        case None:
            return "null"
        case str():
            return "empty"
        case _:
            return type(raw).__name__


__all__ = [
    "MAX_NAME_CHARS",
    "MAX_SECRET_BYTES",
    "NAME_HINT",
    "SecretMissing",
    "SecretNameInvalid",
    "SecretsBackend",
    "SecretsUnavailable",
    "check_name",
    "kind_of",
    "value_of",
]
