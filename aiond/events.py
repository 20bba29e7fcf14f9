"""The daemon's local event log (``STATE_DIR/events.jsonl``): audit events now, decisions and task
lifecycle with the router. It is what a daemon without Kafka keeps, and what ``aionctl events tail``
reads through EventService.TailEvents.

An event's sequence number is its line number in the log (from 1), so it is stable across restarts
and readers can resume after the last one they saw. Appends go through :class:`aion.events.EventLog`
(exclusive lock, fsync), in a worker thread so the event loop never waits on the disk. Followers are
woken on every append, and also poll, because other processes may append too.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

from aion.events import EventLog

LOG_NAME = "events.jsonl"
POLL_SECONDS = 0.5
MAX_LINE = 1024 * 1024
"""Longer lines are skipped (never produced by aion; defends readers against a damaged file)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Recorded:
    sequence: int
    event: dict[str, Any]


class DaemonEvents:
    def __init__(self, state_dir: Path, on_emit: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.path = state_dir / LOG_NAME
        self._log = EventLog(self.path)
        self._on_emit = on_emit
        self._changed = asyncio.Condition()

    async def emit(self, event: dict[str, Any]) -> None:
        await asyncio.to_thread(self._log.append, event)
        if self._on_emit is not None:
            self._on_emit(event)
        async with self._changed:
            self._changed.notify_all()

    def read(self, offset: int = 0, sequence: int = 0) -> tuple[list[Recorded], int, int]:
        """Complete lines after byte ``offset`` (where line ``sequence`` ended). Returns the events,
        the new offset and the new sequence."""
        try:
            with self.path.open("rb") as handle:
                handle.seek(offset)
                data = handle.read()
        except FileNotFoundError:
            return [], offset, sequence
        end = data.rfind(b"\n") + 1  # a line still being written is left for the next read
        found: list[Recorded] = []
        for line in data[:end].splitlines():
            sequence += 1
            if not line.strip() or len(line) > MAX_LINE:
                continue
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if isinstance(event, dict):
                    found.append(Recorded(sequence, event))
        return found, offset + end, sequence

    async def tail(
        self, *, topics: Sequence[str], after: int, limit: int, follow: bool
    ) -> AsyncIterator[Recorded]:
        """Recorded events in order (the last ``limit``, or those after sequence ``after``), then, with
        ``follow``, new ones as they arrive, until the caller stops iterating."""
        wanted = set(topics)

        def keep(r: Recorded) -> bool:
            return r.sequence > after and (not wanted or r.event.get("topic") in wanted)

        records, offset, sequence = await asyncio.to_thread(self.read)
        chosen = [r for r in records if keep(r)]
        chosen = chosen[:limit] if after else chosen[-limit:]
        for record in chosen:
            yield record
        if not follow:
            return
        if chosen and after and len(chosen) == limit:
            # More recorded events than the page: resume right after the last one sent.
            records, offset, sequence = await asyncio.to_thread(self.read)
            rest = [r for r in records if keep(r) and r.sequence > chosen[-1].sequence]
            for record in rest:
                yield record
        while True:
            async with self._changed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), timeout=POLL_SECONDS)
            records, offset, sequence = await asyncio.to_thread(self.read, offset, sequence)
            for record in records:
                if not wanted or record.event.get("topic") in wanted:
                    yield record


__all__ = ["LOG_NAME", "DaemonEvents", "Recorded"]
