"""The append-only local event log: one JSON object per line, appended under an exclusive lock and
flushed to disk, so concurrent writers never interleave and a crash loses at most the line being
written; sealed into numbered segments as it grows.

It is what a daemon without Kafka keeps, and what aionctl writes for local actions (the module
store's audit trail).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
from pathlib import Path
from typing import Any, Protocol

from aion.errors import storage_error


def encode(event: dict[str, Any]) -> str:
    """An event as one line of the log: compact JSON, UTF-8 kept as it is, then a newline."""
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False) + "\n"


class EventSink(Protocol):
    """Where an event is appended: an :class:`EventLog`, or the daemon's audit writer."""

    def append(self, event: dict[str, Any]) -> None: ...


@dataclasses.dataclass(frozen=True, slots=True)
class Segment:
    """A sealed part of an event log: the lines numbered ``first`` to ``last`` (from 1, across the
    whole log), in a file named after them next to the log."""

    first: int
    last: int
    path: Path


def segments(path: Path) -> list[Segment]:
    """The sealed segments of the log at ``path``, oldest first."""
    found = []
    try:
        names = [entry.name for entry in path.parent.iterdir()]
    except FileNotFoundError:
        return []
    prefix, suffix = f"{path.stem}-", path.suffix
    for name in names:
        if not (name.startswith(prefix) and name.endswith(suffix)):
            continue
        first, _, last = name[len(prefix) : len(name) - len(suffix)].partition("-")
        if first.isdigit() and last.isdigit() and len(first) == len(last) == _DIGITS:
            found.append(Segment(int(first), int(last), path.parent / name))
    return sorted(found, key=lambda s: s.first)


_DIGITS = 12


class EventLog:
    """An append-only JSON-lines file of events, sealed into segments as it grows.

    Lines are numbered from 1 across the whole log, and the numbers never change: when the file
    passes ``segment_bytes``, the writer that notices (under the lock) renames it to
    ``<stem>-<first>-<last><suffix>`` (for example ``events-000000000001-000000183210.jsonl``) and
    starts a new one; sealed segments beyond ``keep_bytes`` in total are deleted, oldest first (the
    newest is always kept, as the numbering continues from it). A writer that had the file open
    before it was sealed sees so once it holds the lock, and opens the new one. Without
    ``segment_bytes`` the file is never sealed (aionctl's local logs)."""

    def __init__(self, path: Path, *, segment_bytes: int | None = None, keep_bytes: int = 0) -> None:
        self.path = path
        self.segment_bytes = segment_bytes
        self.keep_bytes = keep_bytes

    def append(self, event: dict[str, Any]) -> None:
        self.append_many([event])

    def append_many(self, events: list[dict[str, Any]]) -> None:
        """Append several events with one write and one fsync."""
        self.append_lines("".join(encode(e) for e in events).encode())

    def append_lines(self, lines: bytes) -> None:
        """Append already encoded events (see :func:`encode`; the daemon encodes each one as it is
        made, so the thread that writes only writes)."""
        try:
            fd = self._locked()
            try:
                size = os.fstat(fd).st_size
                if self.segment_bytes is not None and size and size + len(lines) > self.segment_bytes:
                    self._seal(fd, size)
                    os.close(fd)
                    fd = self._locked()  # the new file (another writer may have written to it first)
                    size = os.fstat(fd).st_size
                if size and os.pread(fd, 1, size - 1) != b"\n":
                    lines = b"\n" + lines  # end a line a crash cut short, so this event stays readable
                os.write(fd, lines)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise storage_error(exc, f"the event log {self.path}") from exc

    def _locked(self) -> int:
        """The current file, open and exclusively locked (reopened if it was sealed meanwhile)."""
        while True:
            fd = self._open()
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                current = self.path.stat().st_ino
            except FileNotFoundError:
                current = -1
            if os.fstat(fd).st_ino == current:
                return fd
            os.close(fd)  # sealed while this writer waited for the lock

    def _seal(self, fd: int, size: int) -> None:
        """Rename the locked file ``fd`` to its segment name and apply the retention."""
        if os.pread(fd, 1, size - 1) != b"\n":
            os.write(fd, b"\n")  # a line a crash cut short ends here, and is counted
        count = _count_lines(fd)
        sealed = segments(self.path)
        first = sealed[-1].last + 1 if sealed else 1
        last = first + count - 1
        os.fsync(fd)
        name = f"{self.path.stem}-{first:0{_DIGITS}d}-{last:0{_DIGITS}d}{self.path.suffix}"
        self.path.rename(self.path.parent / name)
        sealed = segments(self.path)
        total = sum(_size(s.path) for s in sealed)
        for old in sealed[:-1]:
            if total <= self.keep_bytes:
                break
            total -= _size(old.path)
            with contextlib.suppress(FileNotFoundError):
                old.path.unlink()
        directory = os.open(self.path.parent, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(directory)  # the rename survives a crash
        finally:
            os.close(directory)

    def _open(self) -> int:
        flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        try:
            return os.open(self.path, flags, 0o640)
        except FileNotFoundError:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            return os.open(self.path, flags, 0o640)

    def read(self) -> list[dict[str, Any]]:
        """The events of the current file (not of sealed segments)."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in text.splitlines() if line.strip()]


def _count_lines(fd: int) -> int:
    count, offset = 0, 0
    while chunk := os.pread(fd, 1 << 20, offset):
        count += chunk.count(b"\n")
        offset += len(chunk)
    return count


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


__all__ = ["EventLog", "EventSink", "Segment", "encode", "segments"]
