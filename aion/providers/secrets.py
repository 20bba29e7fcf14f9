"""Where provider API keys come from: the secret backends models.yml can name (``secrets.backend``).

The one backend is ``files``: a directory with one file per secret, named after it, holding the value
(surrounding whitespace stripped). That is what a mounted Kubernetes or Docker secret looks like, so
symbolic links are followed as long as they stay inside the directory (Kubernetes swaps a ``..data``
link to rotate); a link that leads out of it is refused, so a secret name can never make aiond read
another file of the host. Each read opens the file again, bounded and only if it is a regular file
(:func:`aion.inputs.read_bounded`), so a rotated key is picked up without a restart.

Which directory is not for a config set to say in aiond: aiond reads keys only from its own
``--secrets-dir``; ``secrets.directory`` in models.yml is for other tools (see the schema).

Values are never logged, and no error or repr carries one: errors name the secret and the directory.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Protocol

from aion.config.model import DEFAULT_SECRETS_DIRECTORY, Models
from aion.errors import ConfigError, InputError
from aion.inputs import read_bounded

MAX_SECRET_BYTES = 64 * 1024
"""The largest secret file read; a larger one is refused (no API key is anywhere near this)."""
MAX_NAME_CHARS = 255
"""The longest secret name: a file name, which most file systems cap at 255 bytes."""
DEFAULT_DIRECTORY = Path(DEFAULT_SECRETS_DIRECTORY)

_NAME = re.compile(rf"[A-Za-z0-9_][A-Za-z0-9_.-]{{0,{MAX_NAME_CHARS - 1}}}")


class SecretMissing(InputError):
    """A secret that is not there (or is empty, or unreadable); names the secret, never a value."""

    def __init__(self, name: str, message: str, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.name = name


class SecretNameInvalid(InputError):
    """A secret name that cannot be a file name in the secret directory."""


class SecretsBackend(Protocol):
    def get(self, name: str) -> str:
        """The value of the secret ``name``; :class:`SecretMissing` when there is none."""
        ...


def check_name(name: str) -> str:
    """``name`` when it is a plain file name: one path segment of letters, digits, ``_``, ``.`` and
    ``-``, not starting with a dot (so neither ``.``, ``..`` nor Kubernetes' hidden ``..data``
    entries), at most :data:`MAX_NAME_CHARS` characters."""
    if _NAME.fullmatch(name) is None:
        shown = name if len(name) <= 80 and name.isprintable() else repr(name[:80])
        raise SecretNameInvalid(
            f"invalid secret name {shown!r}: use letters, digits, '_', '.' and '-', not starting with a "
            f"dot, without path separators, at most {MAX_NAME_CHARS} characters",
            hint="a secret name is the name of one file in the secrets directory (aiond's --secrets-dir)",
        )
    return name


class FileSecrets:
    """The ``files`` backend: ``directory/NAME`` holds the secret ``NAME``. Safe to share between threads
    (it keeps no state between reads)."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def __repr__(self) -> str:
        return f"FileSecrets(directory={str(self.directory)!r})"

    def _missing(self, name: str, why: str) -> SecretMissing:
        return SecretMissing(
            name,
            f"secret {name!r} {why} (looked in {self.directory})",
            hint=f"put the value in the file {self.directory / name}, readable only by aiond "
            "(for example mode 0400)",
        )

    def get(self, name: str) -> str:
        check_name(name)
        path = self._inside(name)
        try:
            raw = read_bounded(path, MAX_SECRET_BYTES, what="its file")
        except InputError as exc:
            raise self._missing(name, f"cannot be used: {exc.message}") from None
        try:
            value = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise self._missing(name, "is not UTF-8 text") from None
        if not value:
            raise self._missing(name, "is empty")
        return value

    def _inside(self, name: str) -> Path:
        """The real path of the secret's file, links followed, when it is inside the directory."""
        try:
            root = os.path.realpath(self.directory, strict=True)
            real = os.path.realpath(self.directory / name, strict=True)
        except FileNotFoundError:
            raise self._missing(name, "is not set") from None
        except OSError as exc:  # a link loop, a directory that cannot be searched
            raise self._missing(name, f"cannot be read ({exc.strerror or type(exc).__name__})") from None
        if real == root or not Path(real).is_relative_to(root):
            # Followed anywhere, a link in the directory could have any file of the host read and sent
            # to a provider as its key. Where it leads is not shown: task errors reach every viewer.
            raise self._missing(name, "is a link that leads out of the directory; refused")
        return Path(real)


def secrets_from(models: Models) -> SecretsBackend:
    """The secret backend models.yml names (``secrets.backend``), for tools other than aiond (which
    reads keys from its own ``--secrets-dir`` only)."""
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
    "FileSecrets",
    "SecretMissing",
    "SecretNameInvalid",
    "SecretsBackend",
    "check_name",
    "secrets_from",
]
