"""The daemon's one event sink, :class:`Journal`, and its local log.

Every producer of events in aiond gets the journal, and nothing else, to record them: the policy store,
the runtime levers, the denial reporter and the module store (audit events, durable before the change
is reported), and the executor's observer (decisions and task lifecycle, many per second, batched:
:meth:`Journal.emit_soon`). An audit event goes to the outbox first (the state database's table, in
the transaction of the change it records: the producer passes it to the state method, then calls
:meth:`Journal.committed`; :meth:`Journal.emit` and :meth:`Journal.append` for actions that store no
state; :meth:`Journal.hold` for changes made in files), and from there to the journal's sink
(:class:`LocalSink`: ``STATE_DIR/audit.jsonl``, which aiond never deletes, then the event log
``STATE_DIR/events.jsonl``). With Kafka, task events go to the outbox too, and
:mod:`aiond.events.kafka` delivers it all.

The journal also reads the local log back, for ``aionctl events tail`` (EventService.TailEvents). An
event's sequence number is its line number in the log (from 1), so it is stable across restarts and
readers can resume after the last one they saw. Followers are woken on every append, and also poll,
because other processes (``aiond token``) may append too.

The log is bounded: past :data:`SEGMENT_BYTES` the current file is sealed into a segment named after
its first and last sequence numbers, and segments beyond :data:`KEEP_BYTES` are deleted, oldest first.
Numbers stay stable across sealing; readers go through the segments, then the current file.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import json
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any, BinaryIO, Protocol

from aion.errors import Error
from aion.eventlog import Segment, encode, segments
from aiond.events.sink import AUDIT_NAME, LOG_NAME, LocalSink, Sink

log = logging.getLogger("aiond")

POLL_SECONDS = 0.5
MAX_LINE = 1024 * 1024
"""Longer lines are skipped (never produced by aion; defends readers against a damaged file)."""
_FOLLOW_BATCH = 1000
BATCH_SECONDS = 0.05
MAX_PENDING = 50_000
SEGMENT_BYTES = 64 * 1024 * 1024
"""The current file is sealed into a segment past this size."""
KEEP_BYTES = 1024 * 1024 * 1024
"""Sealed segments beyond this, in total, are deleted oldest first."""
_DRAIN_BATCH = 1000
_RECENT_IDS = 10_000
"""Ids of audit events this journal wrote that a replay checks against, besides the trail's end."""


@dataclasses.dataclass(frozen=True, slots=True)
class Recorded:
    sequence: int
    event: dict[str, Any]


class Outbox(Protocol):
    """The part of the state backend the journal writes through (aiond.state.backend.StateBackend):
    the outbox table, in the same database as the state, so that a change and its audit event are one
    transaction."""

    def outbox_add(self, events: Sequence[dict[str, Any]]) -> None: ...
    def outbox_add_tasks(self, rows: Sequence[tuple[str, str, str, str]]) -> dict[str, int]: ...
    def outbox_unlogged(self, *, limit: int) -> Sequence[Any]: ...
    def outbox_logged(self, seqs: Sequence[int]) -> None: ...
    def outbox_hold(self, event: dict[str, Any]) -> int: ...
    def outbox_release(self, seq: int) -> None: ...
    def outbox_discard(self, seq: int) -> None: ...
    def outbox_held(self) -> Sequence[Any]: ...


class Held:
    """An audit event written before the change it records (one made outside the state database);
    :meth:`release` it once the change is done, :meth:`discard` it if the change failed."""

    def __init__(self, journal: Journal, seq: int, event: dict[str, Any]) -> None:
        self._journal, self._seq, self._event = journal, seq, event

    def release(self) -> None:
        outbox = self._journal._outbox
        assert outbox is not None
        outbox.outbox_release(self._seq)
        self._journal._drained_from_thread()

    def discard(self) -> None:
        outbox = self._journal._outbox
        assert outbox is not None
        outbox.outbox_discard(self._seq)


class Journal:
    """The daemon's one event sink (see the module's docstring). Make it inside the running loop.

    With an ``outbox`` (the daemon's state), an audit event is first written to the outbox, in the
    transaction of the change it records when there is one (the producer passes it to the state
    method and then calls :meth:`committed`), and only then to the local log; what a crash left in
    the outbox reaches the log at the next start (:meth:`drain`). With ``kafka``, task events are
    written to the outbox too, for the relay (:mod:`aiond.events.kafka`) to deliver; ``on_outbox`` is
    told whenever rows were added."""

    def __init__(
        self,
        sink: Sink,
        on_emit: Callable[[dict[str, Any]], None] | None = None,
        *,
        outbox: Outbox | None = None,
        kafka: bool = False,
        on_outbox: Callable[[float], None] | None = None,
    ) -> None:
        self._sink = sink
        self.path = sink.path
        self._on_emit = on_emit
        self._outbox = outbox
        self._kafka = kafka and outbox is not None
        self._on_outbox = on_outbox
        try:
            self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:  # made to read the log only (tools, tests)
            self._loop = None
        self._changed = asyncio.Condition()
        self._pending: list[str] = []
        """Encoded events (lines) waiting for the next batch."""
        self._rows: list[tuple[str, str, str, str]] = []
        """With Kafka, the same events as outbox rows (id, topic, key, line)."""
        self._flush: asyncio.Task[None] | None = None
        self._notifying: set[asyncio.Task[None]] = set()
        self._draining = threading.Lock()
        self._logged: collections.deque[str] = collections.deque(maxlen=_RECENT_IDS)
        self._logged_set: set[str] = set()
        self._seen_trail = False
        self.dropped = 0

    def emit_soon(self, event: dict[str, Any]) -> None:
        """Queue an event for the next batch (task decisions and lifecycle: many per second, so one
        write and one fsync per batch rather than per event). The event is encoded here, in the event
        loop, where it costs a few microseconds; a worker thread encoding whole batches would contend
        with the loop for the GIL, and delay the calls being served. The batch is written within
        :data:`BATCH_SECONDS`; when :data:`MAX_PENDING` events wait, the oldest are dropped and counted."""
        line = encode(event)
        self._pending.append(line)
        if self._kafka:
            self._rows.append((event["id"], event["topic"], str(event.get("task_id") or ""), line))
        if len(self._pending) > MAX_PENDING:
            del self._pending[0]
            if self._kafka:
                del self._rows[0]
            self.dropped += 1
        if self._flush is None:
            self._flush = asyncio.get_running_loop().create_task(self._write_batch())

    def _take(self) -> tuple[bytes, list[tuple[str, str, str, str]]]:
        batch, self._pending = self._pending, []
        rows, self._rows = self._rows, []
        return "".join(batch).encode(), rows

    def _write_tasks(self, lines: bytes, rows: list[tuple[str, str, str, str]]) -> None:
        """A batch of task events: into the outbox for Kafka first (one transaction), then the log."""
        if rows and self._outbox is not None:
            started = time.perf_counter()
            self._outbox.outbox_add_tasks(rows)
            if self._on_outbox is not None:
                self._on_outbox(time.perf_counter() - started)
        self._sink.append_lines(lines)

    async def _write_batch(self) -> None:
        try:
            await asyncio.sleep(BATCH_SECONDS)
            while self._pending:
                await asyncio.to_thread(self._write_tasks, *self._take())
                await self._notify()
        finally:
            self._flush = None

    async def flush(self) -> None:
        """Write whatever is queued now (on shutdown)."""
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        if self._pending:
            await asyncio.to_thread(self._write_tasks, *self._take())

    async def emit(self, event: dict[str, Any]) -> None:
        """Record an audit event that no state change carries, now, durably, off the event loop."""
        recorded = await asyncio.to_thread(self._record, event)
        for one in recorded:
            self._recorded(one)
        await self._notify()

    async def committed(self) -> None:
        """A state change carrying its audit event (``audit=``) was committed: write what the outbox
        holds on to the local log. The change and its event are durable already, so a local log that
        cannot be written now (a full disk) is logged, not raised: the next change, or the next
        start, writes the event."""
        try:
            recorded = await asyncio.to_thread(self.drain)
        except Error as exc:
            log.error("an audit event waits in the outbox for the local log: %s", exc.message)
            return
        for one in recorded:
            self._recorded(one)
        await self._notify()

    def append(self, event: dict[str, Any]) -> None:
        """Record an event now, durably, from a worker thread (the module store's installs run in one);
        the loop learns of it afterwards."""
        recorded = self._record(event)
        if self._loop is not None:
            for one in recorded:
                self._loop.call_soon_threadsafe(self._recorded_in_loop, one)

    def hold(self, event: dict[str, Any]) -> Held | None:
        """Write ``event`` for a change about to be made outside the state database (a module install
        renames files), from a worker thread; None without an outbox (record it after the change)."""
        if self._outbox is None:
            return None
        return Held(self, self._outbox.outbox_hold(event), event)

    def reconcile(self, happened: Callable[[dict[str, Any]], bool]) -> int:
        """At start-up: each event still held (aiond stopped between writing it and releasing it) is
        released when ``happened`` finds its change done, else discarded. Returns how many were
        released."""
        if self._outbox is None:
            return 0
        released = 0
        for row in self._outbox.outbox_held():
            try:
                event = json.loads(row.body)
            except ValueError:
                event = None
            if isinstance(event, dict) and happened(event):
                self._outbox.outbox_release(row.seq)
                released += 1
            else:
                self._outbox.outbox_discard(row.seq)
        return released

    def _drained_from_thread(self) -> None:
        recorded = self.drain()
        if self._loop is not None:
            for one in recorded:
                self._loop.call_soon_threadsafe(self._recorded_in_loop, one)

    def _record(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        if self._outbox is None:
            self._sink.append(event)
            return [event]
        self._outbox.outbox_add([event])
        return self.drain()

    def drain(self) -> list[dict[str, Any]]:
        """Write the audit events the outbox holds that the local log has not got yet (after a change,
        and at start-up for what a crash left), oldest first; return them. An event found among the
        last ones the audit trail holds is not written again."""
        if self._outbox is None:
            return []
        recorded: list[dict[str, Any]] = []
        with self._draining:
            if not self._seen_trail:
                for known in self._sink.recent_audit_ids():
                    self._remember(known)
                self._seen_trail = True
            while rows := self._outbox.outbox_unlogged(limit=_DRAIN_BATCH):
                fresh = [row for row in rows if row.id not in self._logged_set]
                if fresh:
                    self._sink.append_audit_lines(b"".join(row.body for row in fresh))
                for row in fresh:
                    self._remember(row.id)
                    with contextlib.suppress(ValueError):
                        recorded.append(json.loads(row.body))
                self._outbox.outbox_logged([row.seq for row in rows])
                if self._on_outbox is not None:
                    self._on_outbox(0.0)
                if len(rows) < _DRAIN_BATCH:
                    break
        return recorded

    def _remember(self, event_id: str) -> None:
        if len(self._logged) == self._logged.maxlen:
            self._logged_set.discard(self._logged[0])
        self._logged.append(event_id)
        self._logged_set.add(event_id)

    def _recorded(self, event: dict[str, Any]) -> None:
        if self._on_emit is not None:
            self._on_emit(event)

    def _recorded_in_loop(self, event: dict[str, Any]) -> None:
        self._recorded(event)
        task = asyncio.get_running_loop().create_task(self._notify())
        self._notifying.add(task)
        task.add_done_callback(self._notifying.discard)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    def scan(
        self,
        *,
        after: int,
        limit: int,
        topics: frozenset[str],
        position: Position | None = None,
        newest: bool = False,
    ) -> tuple[list[Recorded], Position]:
        """Read the log, sealed segments and current file, streaming: with ``newest``, the last
        ``limit`` matching events; else the first ``limit`` after sequence ``after``, resuming at
        ``position`` (where the previous scan stopped) when that file is still there. Returns them
        with the position where reading stopped. Memory stays within ``limit`` events whatever the
        log's size; a line still being written is left for later."""
        for _ in range(10):
            try:
                return self._scan(after, limit, topics, position, newest)
            except _Sealed:
                continue  # the current file was sealed while this scan opened it: look again
        raise OSError(f"the event log {self.path} kept changing under the reader")

    def _scan(
        self, after: int, limit: int, topics: frozenset[str], position: Position | None, newest: bool
    ) -> tuple[list[Recorded], Position]:
        with contextlib.ExitStack() as stack:
            sources = self._sources(stack)
            if newest:
                return self._newest(sources, limit, topics)
            found: list[Recorded] = []
            start = _resume_at(sources, position, after)
            end = Position(sources[-1].inode, sources[-1].first, 0, sources[-1].first - 1)
            for source in sources[start[0] :] if start is not None else sources:
                offset, sequence = (start[1], start[2]) if start is not None else (0, source.first - 1)
                start = None
                handle = source.handle()
                if handle is None:
                    continue  # deleted by retention meanwhile: its events are gone
                handle.seek(offset)
                for line, size in _lines(handle):
                    sequence += 1
                    offset += size
                    if sequence <= after or line is None:
                        continue
                    record = _parse(sequence, line)
                    if record is None or (topics and record.event.get("topic") not in topics):
                        continue
                    found.append(record)
                    if len(found) >= limit:
                        return found, Position(source.inode, source.first, offset, sequence)
                end = Position(source.inode, source.first, offset, sequence)
            return found, end

    def _newest(
        self, sources: list[_Source], limit: int, topics: frozenset[str]
    ) -> tuple[list[Recorded], Position]:
        """The last ``limit`` matching events: the current file first, then sealed segments backwards
        until enough are found."""
        newest: list[Recorded] = []
        end: Position | None = None
        for source in reversed(sources):
            last: collections.deque[Recorded] = collections.deque(maxlen=limit)
            offset, sequence = 0, source.first - 1
            handle = source.handle()
            if handle is not None:
                for line, size in _lines(handle):
                    sequence += 1
                    offset += size
                    record = None if line is None else _parse(sequence, line)
                    if record is not None and (not topics or record.event.get("topic") in topics):
                        last.append(record)
            if end is None:
                end = Position(source.inode, source.first, offset, sequence)
            newest = [*last, *newest][-limit:]
            if len(newest) >= limit:
                break
        assert end is not None  # there is always a current-file source
        return newest, end

    def _sources(self, stack: contextlib.ExitStack) -> list[_Source]:
        """The sealed segments and the current file, in order, each with its first sequence number.
        Raises _Sealed when the current file is sealed between being opened and being checked."""
        try:
            current: BinaryIO | None = stack.enter_context(self.path.open("rb"))
        except FileNotFoundError:
            current = None
        inode = os.fstat(current.fileno()).st_ino if current is not None else 0
        sealed = segments(self.path)
        if current is not None:
            try:
                if self.path.stat().st_ino != inode:
                    raise _Sealed
            except FileNotFoundError:
                raise _Sealed from None
        sources = [_Source.sealed(segment, stack) for segment in sealed]
        sources.append(_Source(sealed[-1].last + 1 if sealed else 1, inode, lambda: current))
        return sources

    async def tail(
        self, *, topics: Sequence[str], after: int, limit: int, follow: bool
    ) -> AsyncIterator[Recorded]:
        """Recorded events in order (the last ``limit``, or those after sequence ``after``), then, with
        ``follow``, new ones as they arrive, until the caller stops iterating."""
        wanted = frozenset(topics)
        records, position = await asyncio.to_thread(
            self.scan, after=after, limit=limit, topics=wanted, newest=not after
        )
        for record in records:
            yield record
        if not follow:
            return
        while True:
            records, position = await asyncio.to_thread(
                self.scan, after=position.sequence, limit=_FOLLOW_BATCH, topics=wanted, position=position
            )
            for record in records:
                yield record
            if len(records) == _FOLLOW_BATCH:
                continue  # more to catch up on before waiting
            async with self._changed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), timeout=POLL_SECONDS)


@dataclasses.dataclass(frozen=True, slots=True)
class Position:
    """Where a reader stopped: after line ``sequence``, which ends at byte ``offset`` of the file that
    starts at line ``first`` and has inode ``inode``. A sealed segment keeps the inode and first line
    the current file had; the pair tells a file apart from a later one that reuses a deleted inode."""

    inode: int
    first: int
    offset: int
    sequence: int


class _Sealed(Exception):
    pass


@dataclasses.dataclass(slots=True)
class _Source:
    """One file of the log, opened only when read."""

    first: int
    inode: int
    handle: Callable[[], BinaryIO | None]

    @classmethod
    def sealed(cls, segment: Segment, stack: contextlib.ExitStack) -> _Source:
        try:
            inode = segment.path.stat().st_ino
        except FileNotFoundError:
            inode = -1

        def handle() -> BinaryIO | None:
            try:
                return stack.enter_context(segment.path.open("rb"))
            except FileNotFoundError:
                return None

        return cls(segment.first, inode, handle)


def _resume_at(sources: list[_Source], position: Position | None, after: int) -> tuple[int, int, int] | None:
    """(source index, offset, sequence) to continue from ``position``; else the source holding the
    line after ``after``, from its start (None: from the first source)."""
    if position is not None and position.sequence == after:
        for index, source in enumerate(sources):
            if source.inode == position.inode and source.first == position.first and source.inode > 0:
                return index, position.offset, position.sequence
    for index in range(len(sources) - 1, -1, -1):
        if sources[index].first <= after + 1:
            return index, 0, sources[index].first - 1
    return None


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


__all__ = ["AUDIT_NAME", "LOG_NAME", "Held", "Journal", "LocalSink", "Position", "Recorded", "Sink"]
