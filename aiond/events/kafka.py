"""Delivery of the outbox to Kafka: :class:`KafkaRelay`, one thread with one idempotent producer.

The journal writes every event to the outbox first (audit events in the transaction of the change
they record); the relay reads what Kafka has not acknowledged yet, in outbox order, produces it
(``enable.idempotence``, ``acks=all``, keyed by the task's id for task events and by the target for
audit events) and marks a row delivered only when its delivery report says the broker has it. So an
event is never lost between the outbox and Kafka: a broker that is down, a producer that fails or a
daemon that is killed leaves the row where it was, and it is produced again (after
:data:`REPLAY_SECONDS`, or at the next start). What can happen is a duplicate, when aiond dies after
the broker took an event but before its report was seen: the copy carries the same event ``id``, and
consumers that must count once deduplicate on it.

Errors never stop the daemon: librdkafka retries by itself (``message.timeout.ms`` is unlimited, so
an event waits in the producer's queue while the broker is away), reports what it meets through the
error callback and failed delivery reports, and the relay counts those and logs them, throttled. A
fatal producer error (a fenced idempotent producer) makes a new producer, which produces again
whatever had not been acknowledged.

confluent-kafka is imported only when a relay is made: a daemon without Kafka never loads it.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from aion import tracing

log = logging.getLogger("aiond.kafka")

REPLAY_SECONDS = 5.0
"""How soon rows whose delivery failed are produced again; also how often the relay looks for rows
that other processes (``aiond token``) added."""
BATCH = 5000
"""Rows read from the outbox at a time."""
MAX_IN_FLIGHT = 100_000
"""Events handed to the producer and not yet reported on, at most; past it the relay waits."""
FLUSH_SECONDS = 5.0
"""At shutdown, how long the producer may take to deliver what it holds (the rest stays in the outbox)."""
LEVELS_SECONDS = 1.0
ACK_SECONDS = 0.2
"""Delivery reports are marked in the outbox at most this often (or every :data:`ACK_ROWS`): each mark
is a transaction, and the journal's writes wait for it."""
ACK_ROWS = 20_000
_LOG_EVERY = 30.0
"""A repeated producer error is logged once per this many seconds, with the count meanwhile."""

PRODUCER_SETTINGS: Mapping[str, Any] = {
    "enable.idempotence": True,
    "acks": "all",
    "message.timeout.ms": 0,  # no limit: an event waits for the broker rather than failing
    "linger.ms": 10,
    "batch.num.messages": 10_000,
    "compression.type": "lz4",
    "queue.buffering.max.messages": MAX_IN_FLIGHT,
    "queue.buffering.max.kbytes": 64 * 1024,
    "reconnect.backoff.ms": 100,
    "reconnect.backoff.max.ms": 5000,
    "socket.keepalive.enable": True,
}
"""What the relay sets on top of the connection settings; the idempotence and acks are not optional."""


class Outbox(Protocol):
    """The outbox as the relay uses it (aiond.state.backend.StateBackend)."""

    shed: dict[str, int]

    def outbox_undelivered(self, *, after: int, limit: int) -> Sequence[Any]: ...
    def outbox_delivered(self, seqs: Sequence[int]) -> None: ...
    def outbox_levels(self) -> Any: ...


class DeliveryObserver(Protocol):
    """What the relay reports (metrics, in aiond.serving.reporting)."""

    def delivered(self, topic: str, seconds: float) -> None: ...
    def failed(self, reason: str) -> None: ...
    def connected(self, up: bool) -> None: ...
    def levels(self, levels: Any, shed: Mapping[str, int]) -> None: ...


class KafkaRelay:
    """Delivers the outbox to Kafka from its own thread (see the module's docstring)."""

    def __init__(
        self,
        outbox: Outbox,
        topic_for: Callable[[str], str],
        settings: Mapping[str, str],
        *,
        observer: DeliveryObserver,
        replay_seconds: float = REPLAY_SECONDS,
    ) -> None:
        self._outbox = outbox
        self._topic_for = functools.cache(topic_for)
        self._settings = {**settings, **PRODUCER_SETTINGS}
        self._observer = observer
        self._replay_seconds = replay_seconds
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._in_flight: set[int] = set()
        self._acked: list[int] = []
        self._failed = False
        self._fatal = False
        self._errors: dict[str, tuple[float, int]] = {}
        """Per error name: when it was last logged, and how many came since."""

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="aiond-kafka", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Rows were added to the outbox."""
        self._wake.set()

    def close(self) -> None:
        """Deliver what the producer holds within :data:`FLUSH_SECONDS`, then stop."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(FLUSH_SECONDS + 10)

    # -- the relay's thread -----------------------------------------------------------------------

    def _producer(self) -> Any:
        from confluent_kafka import Producer

        self._fatal = False
        return Producer({**self._settings, "error_cb": self._error})

    def _run(self) -> None:
        try:
            self._loop()
        except Exception:  # the thread must say why it stopped; events stay in the outbox
            log.exception("Kafka delivery stopped; events wait in the outbox until aiond restarts")

    def _loop(self) -> None:
        producer = self._producer()
        cursor = 0
        replay_at = 0.0
        levels_at = 0.0
        acked_at = 0.0
        while not self._stop.is_set():
            if self._fatal:
                log.error(
                    "the Kafka producer failed fatally; a new one produces again what was not acknowledged"
                )
                producer = self._producer()
                self._in_flight.clear()
                cursor = 0
            now = time.monotonic()
            if self._failed and now >= replay_at:
                self._failed = False
                cursor = 0  # produce again what failed (rows in flight are skipped)
            produced, cursor = self._produce(producer, cursor)
            if produced < 0:
                produced = 0
                self._failed = True
                replay_at = now + self._replay_seconds
            producer.poll(0 if produced else 0.05)
            if self._acked and (
                len(self._acked) >= ACK_ROWS or now - acked_at >= ACK_SECONDS or not self._in_flight
            ):
                acked, self._acked = self._acked, []
                self._outbox.outbox_delivered(acked)
                acked_at = now
            if self._failed and replay_at <= now:
                replay_at = now + self._replay_seconds
            if now >= levels_at:
                self._observer.levels(self._outbox.outbox_levels(), dict(self._outbox.shed))
                levels_at = now + LEVELS_SECONDS
            if not produced and not self._in_flight:
                self._wake.wait(
                    min(self._replay_seconds, max(0.05, replay_at - now) if self._failed else 1.0)
                )
                self._wake.clear()
        self._shutdown(producer, cursor)

    def _produce(self, producer: Any, cursor: int) -> tuple[int, int]:
        """Hand the producer the rows after ``cursor`` (skipping those in flight), as many as it takes;
        returns how many (-1 after an error) and the new cursor."""
        produced = 0
        if len(self._in_flight) >= MAX_IN_FLIGHT:
            return produced, cursor
        rows = self._outbox.outbox_undelivered(after=cursor, limit=BATCH)
        batch = _Batch(rows[0], self._topic_for(rows[0].topic)) if rows and tracing.active() else None
        headers = batch.span.headers if batch is not None else None
        try:
            for row in rows:
                if row.seq in self._in_flight:
                    cursor = row.seq
                    continue
                try:
                    producer.produce(
                        self._topic_for(row.topic),
                        row.body.rstrip(b"\n"),
                        key=row.key.encode(),
                        headers=headers,
                        on_delivery=functools.partial(self._report, row.seq, row.topic, row.at, batch),
                    )
                except BufferError:
                    break  # the producer's queue is full: poll, then go on from here
                except Exception as exc:  # a topic name the client refuses, say
                    self._note(type(exc).__name__, str(exc))
                    return -1, cursor
                self._in_flight.add(row.seq)
                cursor = row.seq
                produced += 1
                if batch is not None:
                    batch.waiting += 1
        finally:
            if batch is not None:
                batch.sealed()
        return produced, cursor

    def _shutdown(self, producer: Any, cursor: int) -> None:
        """What the journal wrote last (its final batch comes just before this) is produced too, then
        the producer has :data:`FLUSH_SECONDS` to deliver it all."""
        deadline = time.monotonic() + FLUSH_SECONDS
        while time.monotonic() < deadline:
            produced, cursor = self._produce(producer, cursor)
            producer.poll(0)
            if produced <= 0:
                break
        left = producer.flush(max(0.0, deadline - time.monotonic()))
        if self._acked:
            self._outbox.outbox_delivered(self._acked)
            self._acked = []
        if left:
            log.warning(
                "%d events were not acknowledged by Kafka before shutdown; they stay in the outbox", left
            )

    def _report(self, seq: int, topic: str, at: float, batch: _Batch | None, err: Any, _msg: Any) -> None:
        """A delivery report (called from poll, in the relay's thread)."""
        self._in_flight.discard(seq)
        if batch is not None:
            batch.reported(None if err is None else err.name(), "" if err is None else err.str())
        if err is None:
            self._acked.append(seq)
            self._observer.delivered(topic, max(0.0, time.time() - at))
            self._observer.connected(True)
            return
        self._failed = True
        self._note(err.name(), err.str())

    def _error(self, err: Any) -> None:
        """librdkafka's error callback: the broker connection and the producer's state."""
        name = err.name()
        if err.fatal():
            self._fatal = True
        if name in ("_ALL_BROKERS_DOWN", "_TRANSPORT", "_AUTHENTICATION", "_RESOLVE"):
            self._observer.connected(False)
        self._note(name, err.str())

    def _note(self, name: str, text: str) -> None:
        self._observer.failed(name)
        now = time.monotonic()
        logged, count = self._errors.get(name, (0.0, 0))
        if now - logged >= _LOG_EVERY:
            extra = f" ({count} more since the last report)" if count else ""
            log.warning("Kafka delivery: %s: %s%s", name, text, extra)
            self._errors[name] = (now, 0)
        else:
            self._errors[name] = (logged, count + 1)


class _Batch:
    """With tracing on, one producer span for the rows handed to the producer in one pass, ended when
    the last of their delivery reports comes (the messages carry its ``traceparent``). Reports are
    served by ``poll``, in the relay's thread, only after the pass: no report can end it early."""

    def __init__(self, first: Any, destination: str) -> None:
        self.span = tracing.delivery(destination, event_id=str(first.id))
        self.waiting = 0
        self._open = True
        self._error: tuple[str, str] | None = None

    def sealed(self) -> None:
        self._open = False
        self._maybe_end()

    def reported(self, error: str | None, text: str) -> None:
        self.waiting -= 1
        if error is not None and self._error is None:
            self._error = (error, text)
        self._maybe_end()

    def _maybe_end(self) -> None:
        if not self._open and self.waiting <= 0:
            if self._error is not None:
                self.span.end(*self._error)
            else:
                self.span.end()
            self.waiting = 1 << 30  # ended once


__all__ = ["FLUSH_SECONDS", "PRODUCER_SETTINGS", "REPLAY_SECONDS", "DeliveryObserver", "KafkaRelay", "Outbox"]
