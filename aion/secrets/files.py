"""The ``files`` backend: a directory with one file per secret, named after it, holding the value
(surrounding whitespace stripped).

That is what a mounted Kubernetes or Docker secret looks like, so symbolic links are followed as long
as they stay inside the directory (Kubernetes swaps a ``..data`` link to rotate); a link that leads out
of it is refused, so a secret name can never make aiond read another file of the host. Each read opens
the file again, bounded and only if it is a regular file (:func:`aion.inputs.read_bounded`), so a
rotated key is picked up without a restart.
"""

from __future__ import annotations

import os
from pathlib import Path

from aion.errors import InputError
from aion.inputs import read_bounded
from aion.secrets.base import MAX_SECRET_BYTES, SecretMissing, check_name

DEFAULT_DIRECTORY = Path("/run/secrets/aion")
"""The same directory as models.yml's secrets.directory default (aion.config.model), not imported
from there: choosing a backend must not wait for the config model to load."""


class FileSecrets:
    """The ``files`` backend: ``directory/NAME`` holds the secret ``NAME``. Safe to share between threads
    (it keeps no state between reads)."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def __repr__(self) -> str:
        return f"FileSecrets(directory={str(self.directory)!r})"

    def describe(self) -> str:
        """Where the values come from, in words (for ``aionctl secrets check``)."""
        return f"files in {self.directory}"

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


__all__ = ["DEFAULT_DIRECTORY", "FileSecrets"]
