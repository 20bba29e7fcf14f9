"""Reading what users hand aion: every read is bounded, and only regular files (or standard input)
are read.

A path on a command line can name anything: ``/dev/zero``, a FIFO nobody writes to, a directory, a
file of many gigabytes. :func:`read_bounded` opens it without blocking, refuses anything that is not a
regular file, and reads at most ``limit`` bytes, so a mistyped or hostile path costs neither memory
nor a hang. Every refusal is an :class:`~aion.errors.InputError` (exit 3) that names the file and,
for size, the limit.
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path
from typing import BinaryIO

from aion.errors import InputError

STDIN = "-"

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def human_size(value: int) -> str:
    """A byte count as people read it: ``16 MiB``, ``4 KiB``, ``300 bytes``."""
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if value >= size and value % size == 0:
            return f"{value // size} {unit}"
    return f"{value} bytes"


def quoted(value: str, limit: int = 80) -> str:
    """A value from a request or a file as a message shows it: quoted with escapes (no control
    character reaches a terminal or a log), and cut short when long (a request may carry a
    megabyte-long name)."""
    return repr(value if len(value) <= limit else value[:limit] + "...")


def file_kind(mode: int) -> str | None:
    """What a file that is not a regular file is (``a FIFO``, ``a directory``, ...); None for a
    regular file."""
    if stat.S_ISREG(mode):
        return None
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def read_bounded(
    path: str | Path,
    limit: int,
    *,
    what: str,
    hint: str | None = None,
    stdin: BinaryIO | None = None,
) -> bytes:
    """The bytes of ``path`` (``-``: standard input), at most ``limit`` of them.

    ``what`` names the input in errors (``"--bundle"``, ``"the token file"``). Raises InputError when
    the file cannot be opened, is not a regular file, or is larger than ``limit``."""
    if str(path) == STDIN:
        source = stdin if stdin is not None else sys.stdin.buffer
        try:
            data = source.read(limit + 1)
        except OSError as exc:
            raise InputError(f"{what}: cannot read standard input: {exc.strerror}") from exc
        return _within(data, limit, f"{what} (standard input)", hint)
    name = str(path)
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused just below.
        fd = os.open(Path(path).expanduser(), os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as exc:
        raise InputError(
            f"{what} {name}: cannot open: {exc.strerror}", hint=hint or "check the path"
        ) from exc
    try:
        kind = file_kind(os.fstat(fd).st_mode)
        if kind is not None:
            raise InputError(f"{what} {name} is {kind}, not a regular file", hint=hint or "give a file")
        chunks: list[bytes] = []
        size = 0
        while size <= limit and (chunk := os.read(fd, min(1 << 20, limit + 1 - size))):
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise InputError(f"{what} {name}: cannot read: {exc.strerror}", hint=hint) from exc
    finally:
        os.close(fd)
    return _within(b"".join(chunks), limit, f"{what} {name}", hint)


def _within(data: bytes, limit: int, label: str, hint: str | None) -> bytes:
    if len(data) > limit:
        raise InputError(f"{label} is larger than {human_size(limit)}, the limit", hint=hint)
    return data


__all__ = ["STDIN", "file_kind", "human_size", "quoted", "read_bounded"]
