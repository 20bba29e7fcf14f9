"""Where the daemon's journal records events: the :class:`Sink` interface, and :class:`LocalSink`, the
local files a daemon without Kafka keeps. Light to import (no asyncio): ``aiond token`` writes its
audit events through the same sink, offline."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from aion.envelopes import AUDIT_TOPIC
from aion.eventlog import EventLog

LOG_NAME = "events.jsonl"
RECENT_BYTES = 1024 * 1024
"""How much of the audit trail's end a replay looks at for events already there."""
AUDIT_NAME = "audit.jsonl"
"""Audit events only, never sealed or deleted by aiond: the record to keep (rotate it with the host's
tools), while the event log makes room for task events."""


class Sink(Protocol):
    """Where the journal records events. Both methods return once the events are durable."""

    path: Path
    """The local log that :meth:`Journal.tail` reads back."""

    def append(self, event: dict[str, Any]) -> None:
        """Record one event (audit events come this way, one at a time)."""
        ...

    def append_lines(self, lines: bytes) -> None:
        """Record already encoded task events (never audit events), in one write."""
        ...

    def append_audit_lines(self, lines: bytes) -> None:
        """Record already encoded audit events (from the outbox), in one write to each file."""
        ...

    def recent_audit_ids(self) -> set[str]:
        """The ids of the audit events last recorded (so that a replay does not record one twice)."""
        ...


class LocalSink:
    """Where a daemon without Kafka (and ``aiond token``, offline) records events: audit events first
    to :data:`AUDIT_NAME`, then every event to the event log. Each :meth:`append` is on disk when it
    returns."""

    def __init__(self, state_dir: Path, *, segment_bytes: int | None = None, keep_bytes: int = 0) -> None:
        self.log = EventLog(state_dir / LOG_NAME, segment_bytes=segment_bytes, keep_bytes=keep_bytes)
        self.path = self.log.path
        self._trail = EventLog(state_dir / AUDIT_NAME)

    def append(self, event: dict[str, Any]) -> None:
        if event.get("topic") == AUDIT_TOPIC:
            self._trail.append(event)
        self.log.append(event)

    def append_lines(self, lines: bytes) -> None:
        """Already encoded task events (never audit events), in one write."""
        self.log.append_lines(lines)

    def append_audit_lines(self, lines: bytes) -> None:
        self._trail.append_lines(lines)
        self.log.append_lines(lines)

    def recent_audit_ids(self) -> set[str]:
        """Ids in the last :data:`RECENT_BYTES` of the audit trail."""
        try:
            with self._trail.path.open("rb") as handle:
                size = handle.seek(0, 2)
                handle.seek(max(0, size - RECENT_BYTES))
                tail = handle.read(RECENT_BYTES)
        except FileNotFoundError:
            return set()
        found = set()
        for line in tail.splitlines()[1:] if len(tail) == RECENT_BYTES else tail.splitlines():
            start = line.find(b'"id":"')
            if start >= 0:
                end = line.find(b'"', start + 6)
                if end > 0:
                    found.add(line[start + 6 : end].decode("ascii", "replace"))
        return found


__all__ = ["AUDIT_NAME", "LOG_NAME", "LocalSink", "Sink"]
