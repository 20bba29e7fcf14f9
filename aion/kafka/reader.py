"""Reading aion's topics back from Kafka, as ``aionctl audit verify`` and ``aionctl events tail
--from kafka`` do: :class:`TopicReader`, one confluent-kafka consumer that is assigned partitions at
offsets it works out itself and never commits.

A reader belongs to no one's consumer group: its group id is new each time (``aionctl-<purpose>-<random>``)
and it neither subscribes nor commits, so it moves no one's offsets and shows up in no one's lag.
Where to read is computed, per partition: from the offset of a time (``offsets_for_times``, the
start of a window) or from the newest N records, to the high watermark seen when reading began;
:meth:`TopicReader.read` stops there, and :meth:`TopicReader.more` goes on past it for as long as
the caller wants (a ``--follow``, or a ``--wait`` for events still in aiond's outbox).

Everything is bounded: each call to the brokers by the reader's ``timeout``; a read by a count of
records (the caller's), and by progress (no record for ``timeout`` seconds while the end is not
reached is an unreachable cluster); a record's value by :data:`MAX_VALUE_BYTES`. Failures are aion's
errors, so aionctl exits with their codes and no traceback: brokers that cannot be reached in time
:class:`~aion.errors.DaemonUnavailable` (exit 5), refused credentials
:class:`~aion.errors.Unauthenticated` and a missing READ grant :class:`~aion.errors.Forbidden`
(exit 4), a topic the cluster does not have :class:`~aion.errors.NotFound` (exit 3). librdkafka
reports a refused SASL login only through its error callback while the call waits out its timeout,
so the first call polls in short steps and stops once the callback has seen one. librdkafka's own
log lines go to the ``aion.kafka.client`` logger, never to stderr.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

from aion.errors import (
    DaemonUnavailable,
    Error,
    Forbidden,
    InputError,
    NotFound,
    ServiceError,
    Unauthenticated,
)
from aion.kafka.client import ReportedErrors

MAX_VALUE_BYTES = 1024 * 1024
"""Records with a longer value are skipped and counted (aion never writes one; the local log's limit)."""
MAX_PARTITIONS = 10_000
"""The most partitions of one topic a reader reads (a bound on what a cluster can make it hold)."""
_POLL_SECONDS = 0.5
"""One wait for records: short, so that Ctrl-C is seen between two."""
_AUTH_HINT = (
    "check the SASL user and its password secret (--sasl-username, --sasl-password-secret), or the "
    "client certificate"
)


@dataclasses.dataclass(frozen=True, slots=True)
class Record:
    """One record read: where it is, the broker's timestamp (ms; None when it has none) and its value."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None
    value: bytes


@dataclasses.dataclass(frozen=True, slots=True)
class Span:
    """The offsets of one partition to read: ``start`` up to, not including, ``end``."""

    start: int
    end: int


class TopicReader(ReportedErrors):
    """One consumer, made from librdkafka settings (:func:`aion.kafka.config.client_settings`);
    ``timeout`` bounds each call to the brokers, in seconds. Use it in a ``with`` block."""

    def __init__(self, settings: Mapping[str, str], *, timeout: float, purpose: str) -> None:
        from confluent_kafka import Consumer

        super().__init__(settings, timeout=timeout)
        self.skipped = 0
        """Records skipped for a value over :data:`MAX_VALUE_BYTES`, or with none."""
        self._probed = False
        self._assigned = False
        self._client = Consumer(
            self.options(
                {
                    **settings,
                    "group.id": f"aionctl-{purpose}-{uuid.uuid4().hex}",
                    "enable.auto.commit": False,
                    "enable.auto.offset.store": False,
                    "auto.offset.reset": "earliest",
                    "enable.partition.eof": True,
                    "fetch.message.max.bytes": str(MAX_VALUE_BYTES + 64 * 1024),
                }
            )
        )

    def __enter__(self) -> TopicReader:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the consumer now, its threads joined (left to the interpreter's shutdown, librdkafka
        threads may call into Python while it is torn down). It has committed nothing."""
        client = self.__dict__.pop("_client", None)
        if client is not None:
            client.close()

    # -- errors -------------------------------------------------------------------------------------

    def _auth_error(self) -> Any | None:
        return self._reported_auth_error()

    def _unreachable(self, what: str, text: str = "") -> DaemonUnavailable:
        detail = f": {text}" if text else ""
        return DaemonUnavailable(
            f"Kafka at {self.where} did not answer in {self.timeout:g}s ({what}){detail}",
            hint="check bootstrap_servers and security.protocol in kafka.yml, and that the brokers run "
            "and are reachable from here; --timeout waits longer",
        )

    def _translate(self, error: Any, what: str, topic: str | None = None) -> Error:
        """The aion error for a KafkaError met doing ``what``."""
        from confluent_kafka import KafkaError

        if not isinstance(error, KafkaError):
            return ServiceError(f"Kafka at {self.where}: {what} failed: {error}")
        code, text = error.code(), error.str()
        auth = self._auth_error()
        if auth is not None or code in (KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED):
            reason = (auth or error).str()
            return Unauthenticated(
                f"Kafka at {self.where} refused the credentials of {self._who()}: {reason}", hint=_AUTH_HINT
            )
        if code == KafkaError.TOPIC_AUTHORIZATION_FAILED:
            return Forbidden(
                f"Kafka at {self.where}: {self._who()} may not read {topic or 'the topic'}: {text}",
                hint="read as a principal kafka.yml's acls: grant the topic to (role consumer), with "
                "--sasl-username and --sasl-password-secret",
            )
        if code in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError.UNKNOWN_TOPIC_ID):
            return NotFound(
                f"Kafka at {self.where} has no topic {topic or ''}".rstrip(),
                hint="check the topic names in kafka.yml; aionctl kafka topics ensure creates them",
            )
        if code in (
            KafkaError._TRANSPORT,
            KafkaError._ALL_BROKERS_DOWN,
            KafkaError._TIMED_OUT,
            KafkaError._RESOLVE,
            KafkaError.REQUEST_TIMED_OUT,
            KafkaError.NETWORK_EXCEPTION,
            KafkaError.LEADER_NOT_AVAILABLE,
            KafkaError.NOT_LEADER_FOR_PARTITION,
        ):
            return self._unreachable(what, text)
        return ServiceError(f"Kafka at {self.where}: {what} failed: {text} ({error.name()})")

    def _exception(self, exc: BaseException, what: str, topic: str | None = None) -> Error:
        error = exc.args[0] if exc.args else exc
        return self._translate(error, what, topic)

    # -- where to read ------------------------------------------------------------------------------

    def partitions(self, topic: str) -> list[int]:
        """The partition numbers of ``topic``. The first call also finds out whether the brokers can
        be reached and take the login, without waiting the whole timeout when they refuse it."""
        from confluent_kafka import KafkaException

        what = f"read the partitions of {topic}"
        deadline = time.monotonic() + self.timeout
        while True:
            step = self.timeout if self._probed else max(0.1, min(1.0, deadline - time.monotonic()))
            try:
                metadata = self._client.list_topics(topic, timeout=step)
            except KafkaException as exc:
                if not self._assigned:
                    self._client.poll(0)  # serves the error callback (nothing is assigned to return)
                if self._probed or self._auth_error() is not None or time.monotonic() >= deadline:
                    raise self._exception(exc, what, topic) from exc
                continue
            described = metadata.topics.get(topic)
            error = described.error if described is not None else None
            if error is not None and error.code() == _leader_not_available() and time.monotonic() < deadline:
                continue  # a topic just made: its leader is being elected
            self._probed = True
            if described is None or error is not None:
                raise self._translate(error if error is not None else _unknown_topic(), what, topic)
            numbers = sorted(described.partitions)
            if len(numbers) > MAX_PARTITIONS:
                raise ServiceError(
                    f"Kafka at {self.where}: {topic} has {len(numbers)} partitions; the limit is "
                    f"{MAX_PARTITIONS}"
                )
            return numbers

    def watermarks(self, topic: str, partition: int) -> tuple[int, int]:
        """The partition's low watermark (its oldest record kept) and high watermark (the offset the
        next record gets)."""
        from confluent_kafka import KafkaException, TopicPartition

        try:
            low, high = self._client.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=self.timeout
            )
        except KafkaException as exc:
            raise self._exception(exc, f"read the offsets of {topic} [{partition}]", topic) from exc
        return int(low), int(high)

    def spans(
        self, topic: str, *, since_ms: int | None = None, newest: int | None = None
    ) -> dict[tuple[str, int], Span]:
        """Per partition of ``topic``, what to read: from the first record at or after ``since_ms``
        (epoch milliseconds; None: the oldest kept), or only the last ``newest`` records when that is
        later, up to the high watermark as it is now."""
        from confluent_kafka import KafkaException, TopicPartition

        numbers = self.partitions(topic)
        bounds = {number: self.watermarks(topic, number) for number in numbers}
        starts = {number: low for number, (low, _high) in bounds.items()}
        if since_ms is not None and numbers:
            asked = [TopicPartition(topic, number, since_ms) for number in numbers]
            try:
                found = self._client.offsets_for_times(asked, timeout=self.timeout)
            except KafkaException as exc:
                raise self._exception(exc, f"find the offsets of {topic} at a time", topic) from exc
            for tp in found:
                if tp.error is not None:
                    raise self._translate(tp.error, f"find the offsets of {topic} at a time", topic)
                # -1: no record that late, so nothing of the window is there yet
                starts[tp.partition] = int(tp.offset) if tp.offset >= 0 else bounds[tp.partition][1]
        spans = {}
        for number, (low, high) in bounds.items():
            start = max(starts[number], low)
            if newest is not None:
                start = max(start, high - newest)
            spans[(topic, number)] = Span(min(start, high), high)
        return spans

    # -- reading ------------------------------------------------------------------------------------

    def read(self, spans: Mapping[tuple[str, int], Span], *, limit: int) -> Iterator[Record]:
        """The records of ``spans``, in each partition's order (partitions interleaved), until every
        partition has reached its span's end. InputError past ``limit`` records; DaemonUnavailable
        when nothing arrives for ``timeout`` seconds before the end."""
        from confluent_kafka import TopicPartition

        self._client.assign([TopicPartition(t, p, span.start) for (t, p), span in spans.items()])
        self._assigned = True
        ends = {key: span.end for key, span in spans.items()}
        waiting = {key for key, span in spans.items() if span.start < span.end}
        count = 0
        heard = time.monotonic()
        while waiting:
            message = self._client.poll(_POLL_SECONDS)
            if message is None or (kind := self._kind(message)) == _NOTHING:
                if time.monotonic() - heard >= self.timeout:
                    raise self._unreachable(f"reading {len(waiting)} partitions to their end")
                continue
            heard = time.monotonic()
            key = (str(message.topic()), int(message.partition() or 0))
            offset = int(message.offset() or 0)
            if kind == _END:
                if offset >= ends.get(key, offset + 1):
                    waiting.discard(key)
                continue
            if offset + 1 >= ends.get(key, offset + 2):
                waiting.discard(key)
            record = self._take(message)
            if record is None:
                continue
            count += 1
            if count > limit:
                raise InputError(
                    f"Kafka at {self.where}: more than {limit:,} records to read, the limit",
                    hint="read a shorter window (--since)",
                )
            yield record

    def more(self, *, until: float | None) -> Iterator[Record]:
        """After :meth:`read`: the records that arrive next on the same partitions, until the
        monotonic time ``until`` (None: until the caller stops iterating). Brokers that go away
        meanwhile are waited for (librdkafka reconnects), except for a refused login or grant."""
        while until is None or time.monotonic() < until:
            step = _POLL_SECONDS if until is None else max(0.0, min(_POLL_SECONDS, until - time.monotonic()))
            message = self._client.poll(step)
            if message is None:
                auth = self._auth_error()
                if auth is not None:
                    raise self._translate(auth, "read")
                continue
            if self._kind(message) == _RECORD and (record := self._take(message)) is not None:
                yield record

    def _kind(self, message: Any) -> str:
        """What a polled message is: a record, the end of a partition, or nothing to act on (an
        error librdkafka recovers from by itself). Any other error raises its aion error."""
        from confluent_kafka import KafkaError

        error = message.error()
        if error is None:
            return _RECORD
        code = error.code()
        if code == KafkaError._PARTITION_EOF:
            return _END
        if self._auth_error() is None and code in (
            KafkaError._TRANSPORT,
            KafkaError._ALL_BROKERS_DOWN,
            KafkaError.NOT_COORDINATOR,
            KafkaError.COORDINATOR_NOT_AVAILABLE,
            # A reader joins no group, so a principal that may read the topic but no group of this
            # name still reads: the group's refusal concerns nothing it does.
            KafkaError.GROUP_AUTHORIZATION_FAILED,
        ):
            return _NOTHING
        raise self._translate(error, "read", message.topic())

    def _take(self, message: Any) -> Record | None:
        value = message.value()
        if value is None or len(value) > MAX_VALUE_BYTES:
            self.skipped += 1
            return None
        kind, stamp = message.timestamp()
        return Record(
            topic=str(message.topic()),
            partition=int(message.partition() or 0),
            offset=int(message.offset() or 0),
            timestamp_ms=int(stamp) if kind != 0 and stamp >= 0 else None,
            value=bytes(value),
        )


_RECORD, _END, _NOTHING = "record", "end", "nothing"


def _leader_not_available() -> int:
    from confluent_kafka import KafkaError

    return int(KafkaError.LEADER_NOT_AVAILABLE)


def _unknown_topic() -> Any:
    from confluent_kafka import KafkaError

    return KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART)


__all__ = ["MAX_PARTITIONS", "MAX_VALUE_BYTES", "Record", "Span", "TopicReader"]
