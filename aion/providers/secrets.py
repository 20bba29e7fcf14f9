"""Where provider API keys come from: the secret backends models.yml can name (``secrets.backend``).

The one backend is ``files``: a directory with one file per secret, named after it, holding the value
(surrounding whitespace stripped). That is what a mounted Kubernetes or Docker secret looks like, so
symbolic links are followed (Kubernetes swaps a ``..data`` link to rotate), and every read checks the
file's identity and modification time so a rotated key is picked up without a restart.

Values are never logged, and no error or repr carries one: errors name the secret and the directory.
"""

from __future__ import annotations

import os
import re
import stat
import threading
from pathlib import Path
from typing import Protocol

from aion.config.model import Models
from aion.errors import ConfigError, InputError

MAX_SECRET_BYTES = 64 * 1024
"""The largest secret file read; a larger one is refused (no API key is anywhere near this)."""

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,254}")


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
    """``name`` when it is a plain file name: letters, digits, ``_``, ``.`` and ``-``, not starting with
    a dot (so neither ``..`` nor Kubernetes' hidden ``..data`` entries), at most 255 characters."""
    if _NAME.fullmatch(name) is None:
        shown = name if len(name) <= 80 and name.isprintable() else repr(name[:80])
        raise SecretNameInvalid(
            f"invalid secret name {shown!r}: use letters, digits, '_', '.' and '-', not starting with a "
            "dot and without path separators",
            hint="secret names are file names in secrets.directory (models.yml)",
        )
    return name


class FileSecrets:
    """The ``files`` backend: ``directory/NAME`` holds the secret ``NAME``. Safe to share between threads."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[tuple[int, int, int, int], str]] = {}

    def __repr__(self) -> str:
        return f"FileSecrets(directory={str(self.directory)!r})"

    def _missing(self, name: str, why: str) -> SecretMissing:
        return SecretMissing(
            name,
            f"secret {name!r} {why} (looked in {self.directory})",
            hint=f"put the value in the file {self.directory / name}, readable only by aiond "
            "(for example mode 0400), or point secrets.directory in models.yml elsewhere",
        )

    def get(self, name: str) -> str:
        check_name(name)
        path = self.directory / name
        try:
            # O_NONBLOCK: a FIFO in the directory must not hang the caller; it is refused below.
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            self._forget(name)
            raise self._missing(name, "is not set") from None
        except OSError as exc:
            self._forget(name)
            raise self._missing(name, f"cannot be read ({exc.strerror or type(exc).__name__})") from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise self._missing(name, "is not a regular file")
            identity = (info.st_dev, info.st_ino, info.st_mtime_ns, info.st_size)
            with self._lock:
                cached = self._cache.get(name)
            if cached is not None and cached[0] == identity:
                return cached[1]
            if info.st_size > MAX_SECRET_BYTES:
                raise self._missing(name, f"is larger than {MAX_SECRET_BYTES} bytes")
            raw = _read_all(fd, MAX_SECRET_BYTES + 1)
        finally:
            os.close(fd)
        if len(raw) > MAX_SECRET_BYTES:
            raise self._missing(name, f"is larger than {MAX_SECRET_BYTES} bytes")
        try:
            value = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise self._missing(name, "is not UTF-8 text") from None
        if not value:
            self._forget(name)
            raise self._missing(name, "is empty")
        with self._lock:
            self._cache[name] = (identity, value)
        return value

    def _forget(self, name: str) -> None:
        with self._lock:
            self._cache.pop(name, None)


def _read_all(fd: int, limit: int) -> bytes:
    parts: list[bytes] = []
    size = 0
    while size < limit:
        part = os.read(fd, limit - size)
        if not part:
            break
        parts.append(part)
        size += len(part)
    return b"".join(parts)


def secrets_from(models: Models) -> SecretsBackend:
    """The secret backend models.yml names (``secrets.backend``)."""
    if models.secrets_backend == "files":
        return FileSecrets(models.secrets_directory)
    raise ConfigError(
        f"unknown secrets backend {models.secrets_backend!r} in models.yml; the backends are: files",
        hint="set secrets.backend to files and secrets.directory to the directory of secret files",
    )


__all__ = [
    "MAX_SECRET_BYTES",
    "FileSecrets",
    "SecretMissing",
    "SecretNameInvalid",
    "SecretsBackend",
    "check_name",
    "secrets_from",
]
