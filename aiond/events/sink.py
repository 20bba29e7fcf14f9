"""Where the daemon's journal records events: the :class:`Sink` interface, and :class:`LocalSink`, the
local files a daemon without Kafka keeps. Light to import (no asyncio): ``aiond token`` writes its
audit events through the same sink, offline."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from aion.envelopes import AUDIT_TOPIC
from aion.eventlog import EventLog

LOG_NAME = "events.jsonl"
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


__all__ = ["AUDIT_NAME", "LOG_NAME", "LocalSink", "Sink"]
