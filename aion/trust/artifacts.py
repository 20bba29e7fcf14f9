"""The SHA-256 of a file a user names for verification, computed streaming.

A signed artifact can be a release tarball of gigabytes, so it is never read whole: it is hashed a
chunk at a time, in constant memory. Like every user-named input (:mod:`aion.inputs`) it must be a
regular file or ``-`` (standard input): a device, a FIFO or a directory is refused before a byte is
read, so ``/dev/zero`` cannot keep aion hashing forever and a FIFO cannot hang it.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path
from typing import BinaryIO

from aion.errors import InputError
from aion.inputs import STDIN, file_kind

CHUNK = 1 << 20


def sha256_of(path: str | Path, *, what: str = "the artifact", stdin: BinaryIO | None = None) -> bytes:
    """The SHA-256 digest of ``path`` (``-``: standard input). InputError when it cannot be opened or
    read, or is not a regular file; ``what`` names it in errors."""
    if str(path) == STDIN:
        try:
            return _sha256(stdin or sys.stdin.buffer)
        except OSError as exc:
            raise InputError(f"{what}: cannot read standard input: {exc.strerror}") from exc
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused just below.
        fd = os.open(Path(path).expanduser(), os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as exc:
        raise InputError(f"{what} {path}: cannot open: {exc.strerror}", hint="check the path") from exc
    try:
        kind = file_kind(os.fstat(fd).st_mode)
    except OSError as exc:
        os.close(fd)
        raise InputError(f"{what} {path}: cannot read: {exc.strerror}") from exc
    if kind is not None:
        os.close(fd)
        raise InputError(
            f"{what} {path} is {kind}, not a regular file",
            hint="give the signed file itself, or its sha256:<hex> digest",
        )
    with os.fdopen(fd, "rb", buffering=0) as stream:
        try:
            return _sha256(stream)
        except OSError as exc:
            raise InputError(f"{what} {path}: cannot read: {exc.strerror}") from exc


def _sha256(stream: BinaryIO) -> bytes:
    digest = hashlib.sha256()
    while chunk := stream.read(CHUNK):
        digest.update(chunk)
    return digest.digest()


__all__ = ["sha256_of"]
