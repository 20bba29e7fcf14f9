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
import collections
import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from aion.events import EventLog, encode

LOG_NAME = "events.jsonl"
POLL_SECONDS = 0.5
MAX_LINE = 1024 * 1024
"""Longer lines are skipped (never produced by aion; defends readers against a damaged file)."""
_FOLLOW_BATCH = 1000
BATCH_SECONDS = 0.05
MAX_PENDING = 50_000


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
        self._pending: list[str] = []
        """Encoded events (lines) waiting for the next batch."""
        self._flush: asyncio.Task[None] | None = None
        self.dropped = 0

    def emit_soon(self, event: dict[str, Any]) -> None:
        """Queue an event for the next batch (task decisions and lifecycle: many per second, so one
        write and one fsync per batch rather than per event). The event is encoded here, in the event
        loop, where it costs a few microseconds; a worker thread encoding whole batches would contend
        with the loop for the GIL, and delay the calls being served. The batch is written within
        :data:`BATCH_SECONDS`; when :data:`MAX_PENDING` events wait, the oldest are dropped and counted."""
        self._pending.append(encode(event))
        if len(self._pending) > MAX_PENDING:
            del self._pending[0]
            self.dropped += 1
        if self._flush is None:
            loop = asyncio.get_running_loop()
            self._flush = loop.create_task(self._write_batch())

    async def _write_batch(self) -> None:
        try:
            await asyncio.sleep(BATCH_SECONDS)
            while self._pending:
                batch, self._pending = self._pending, []
                await asyncio.to_thread(self._log.append_lines, "".join(batch).encode())
                async with self._changed:
                    self._changed.notify_all()
        finally:
            self._flush = None

    async def flush(self) -> None:
        """Write whatever is queued now (on shutdown)."""
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        if self._pending:
            batch, self._pending = self._pending, []
            await asyncio.to_thread(self._log.append_lines, "".join(batch).encode())

    async def emit(self, event: dict[str, Any]) -> None:
        await asyncio.to_thread(self._log.append, event)
        if self._on_emit is not None:
            self._on_emit(event)
        async with self._changed:
            self._changed.notify_all()

    def scan(
        self,
        *,
        after: int,
        limit: int,
        topics: frozenset[str],
        offset: int = 0,
        sequence: int = 0,
        newest: bool = False,
    ) -> tuple[list[Recorded], int, int]:
        """Read the log from byte ``offset`` (where line ``sequence`` ended), streaming: with
        ``newest``, the last ``limit`` matching events; else the first ``limit`` after sequence ``after``.
        Returns them with the offset and sequence where reading stopped. Memory stays within
        ``limit`` events whatever the log's size; a line still being written is left for later."""
        last: collections.deque[Recorded] = collections.deque(maxlen=limit)
        found: list[Recorded] = []
        try:
            handle = self.path.open("rb")
        except FileNotFoundError:
            return [], offset, sequence
        with handle:
            handle.seek(offset)
            for line, size in _lines(handle):
                sequence += 1
                offset += size
                if sequence <= after or line is None:
                    continue
                record = _parse(sequence, line)
                if record is None or (topics and record.event.get("topic") not in topics):
                    continue
                if newest:
                    last.append(record)
                else:
                    found.append(record)
                    if len(found) >= limit:
                        break
        return (list(last) if newest else found), offset, sequence

    async def tail(
        self, *, topics: Sequence[str], after: int, limit: int, follow: bool
    ) -> AsyncIterator[Recorded]:
        """Recorded events in order (the last ``limit``, or those after sequence ``after``), then, with
        ``follow``, new ones as they arrive, until the caller stops iterating."""
        wanted = frozenset(topics)
        records, offset, sequence = await asyncio.to_thread(
            self.scan, after=after, limit=limit, topics=wanted, newest=not after
        )
        for record in records:
            yield record
        if not follow:
            return
        while True:
            records, offset, sequence = await asyncio.to_thread(
                self.scan,
                after=sequence,
                limit=_FOLLOW_BATCH,
                topics=wanted,
                offset=offset,
                sequence=sequence,
            )
            for record in records:
                yield record
            if len(records) == _FOLLOW_BATCH:
                continue  # more to catch up on before waiting
            async with self._changed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), timeout=POLL_SECONDS)


def _lines(handle: BinaryIO) -> Iterator[tuple[bytes | None, int]]:
    """(line, its size in bytes) for each complete line; None for a line over MAX_LINE, which is
    skipped without being held in memory. Stops before an unfinished last line."""
    while True:
        line = handle.readline(MAX_LINE + 1)
        if line.endswith(b"\n"):
            yield line, len(line)
            continue
        if len(line) <= MAX_LINE:
            return  # end of file, or an unfinished last line
        size = len(line)
        while not line.endswith(b"\n"):
            line = handle.readline(MAX_LINE + 1)
            if not line:
                return
            size += len(line)
        yield None, size


def _parse(sequence: int, line: bytes) -> Recorded | None:
    try:
        event = json.loads(line)
    except ValueError:
        return None
    return Recorded(sequence, event) if isinstance(event, dict) else None


__all__ = ["LOG_NAME", "DaemonEvents", "Recorded"]
