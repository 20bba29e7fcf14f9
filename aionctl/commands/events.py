"""``aionctl events tail``: read the daemon's event log, or aion's topics in Kafka, and follow them.

Each event is printed as it arrives: text is one line per event; ``-o json`` is JSON Lines (one object
per line), so ``jq`` and log shippers can consume a followed stream; ``-o yaml`` is one YAML document
per event, each after a ``---``. Every object is a document like every other aionctl prints:
``apiVersion``, ``kind: EventRecord`` and where the event was read, then the event's own fields
(schema ``output/event``).

``--from local`` (the default) reads the daemon's local log over its API (EventService.TailEvents):
the last ``-n`` events, or those after ``--after SEQ``; each record carries its ``sequence``.
Without ``--follow`` the call has the usual deadline; with it the stream stays open until Ctrl-C or
until the daemon stops (exit 0 after a clean end, 5 when the connection is lost).

``--from kafka`` reads the topics kafka.yml names (all four, or those of ``--topic``, given as the
events' topic or its role) with a consumer of its own that commits nothing
(:mod:`aion.kafka.reader`): the newest ``-n`` records of each topic, or with ``--since`` those from
the window's start (at most ``-n`` per topic, the newest kept), merged in time order; each record
carries ``kafka``, its topic, partition and offset, where the local one has ``sequence``.
``--follow`` then prints new records as they arrive, until Ctrl-C (exit 0). The connection options
are ``aionctl kafka``'s (:mod:`aionctl.kafka_reading`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import enum
import json
from typing import TYPE_CHECKING, Annotated, Any

import typer

from aion.errors import ServiceError, UsageError
from aionctl.client import Endpoint, channel, translate_rpc_error
from aionctl.connect import daemon_command
from aionctl.kafka_reading import KafkaSource, kafka_options, open_reader
from aionctl.options import Output, command_app
from aionctl.output import OutputFormat, document, emit_streamed

if TYPE_CHECKING:
    from aion.api.v1 import events_pb2
    from aion.kafka.reader import Record

app = command_app()
app.info.help = "Read the daemon's event log or aion's Kafka topics, and follow them."
app.info.no_args_is_help = True

DEFAULT_LIMIT = 20
MAX_LIMIT = 10_000
MAX_SINCE = dt.timedelta(days=366)


class Source(enum.StrEnum):
    LOCAL = "local"
    KAFKA = "kafka"


def _since(text: str | None) -> str | None:
    if text is not None:
        from aionctl.commands.audit import MIN_SINCE, duration

        duration(text, low=MIN_SINCE, high=MAX_SINCE)
    return text


@app.callback()
def events() -> None:
    """Read the daemon's event log or aion's Kafka topics, and follow them."""


@daemon_command(app, "tail", timeout=5.0)
@kafka_options
def tail(
    ctx: typer.Context,
    target: Endpoint,
    kafka: KafkaSource,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new events as they are recorded.")
    ] = False,
    topic: Annotated[
        list[str] | None, typer.Option("--topic", metavar="TOPIC", help="Only this topic (repeatable).")
    ] = None,
    limit: Annotated[
        int | None,
        typer.Option("--limit", "-n", min=1, max=MAX_LIMIT, show_default=False,
                     help="Recorded events to print first [default: 20; from Kafka: per topic, and "
                          "with --since 10000]."),
    ] = None,
    after: Annotated[
        int,
        typer.Option(
            "--after", min=0, max=2**63 - 1, metavar="SEQ", help="Start after this sequence number."
        ),
    ] = 0,
    source: Annotated[
        Source,
        typer.Option("--from", case_sensitive=False,
                     help="local: the daemon's event log; kafka: the topics kafka.yml names."),
    ] = Source.LOCAL,
    since: Annotated[
        str | None,
        typer.Option("--since", metavar="DURATION", callback=_since, show_default=False,
                     help="With --from kafka: from the start of the last DURATION (10m, 24h, 7d)."),
    ] = None,
    output: Output = OutputFormat.TEXT,
) -> None:  # fmt: skip
    """Print the last events of the daemon's event log (role viewer), or of aion's Kafka topics."""
    if source is Source.KAFKA:
        if after:
            raise UsageError(
                "--after SEQ is a position in the daemon's log, which Kafka's records do not have",
                hint="use --since DURATION or -n N with --from kafka",
            )
        _tail_kafka(ctx, kafka, target.timeout, topic or [], limit, since, follow, output)
        return
    if since is not None:
        raise UsageError(
            "--since reads Kafka's topics by time; the daemon's log is read by position",
            hint="add --from kafka, or use -n N or --after SEQ",
        )
    _tail_local(target, topic or [], limit or DEFAULT_LIMIT, after, follow, output)


def _tail_local(
    target: Endpoint, topics: list[str], limit: int, after: int, follow: bool, output: OutputFormat
) -> None:
    import grpc

    from aion.api.v1 import events_pb2, events_pb2_grpc

    request = events_pb2.TailEventsRequest(topics=topics, after_sequence=after, limit=limit, follow=follow)
    with channel(target) as ch:
        stream = events_pb2_grpc.EventServiceStub(ch).TailEvents(
            request, timeout=None if follow else target.timeout, metadata=target.metadata()
        )
        try:
            for reply in stream:
                _print(reply.event, output)
        except grpc.RpcError as exc:
            raise translate_rpc_error(exc, target, "events tail") from exc
        except KeyboardInterrupt:
            stream.cancel()
            raise typer.Exit(130) from None


def _tail_kafka(
    ctx: typer.Context,
    kafka: KafkaSource,
    timeout: float,
    topics: list[str],
    limit: int | None,
    since: str | None,
    follow: bool,
    output: OutputFormat,
) -> None:
    """The newest records of each topic (within the window of ``since``), merged in time order, then
    with ``follow`` what arrives, until Ctrl-C."""
    from aion.envelopes import AUDIT_TOPIC, DECISIONS_TOPIC, LIFECYCLE_TOPIC, RUNTIME_TOPIC

    config, reader = open_reader(ctx, kafka, timeout=timeout, purpose="events-tail")
    every = [AUDIT_TOPIC, DECISIONS_TOPIC, LIFECYCLE_TOPIC, RUNTIME_TOPIC]
    names = []
    for asked in topics or every:
        try:
            names.append(config.topic_for(asked))
        except ValueError:
            raise UsageError(
                f"--topic {asked[:80]!r} is not a topic aion writes",
                hint=f"one of {', '.join(every)} (kafka.yml names each one's topic in Kafka), or its "
                "role: audit, decisions, lifecycle or metrics",
            ) from None
    per_topic = limit or (MAX_LIMIT if since is not None else DEFAULT_LIMIT)
    since_ms = None
    if since is not None:
        from aionctl.commands.audit import MIN_SINCE, duration

        start = dt.datetime.now(dt.UTC) - duration(since, low=MIN_SINCE, high=MAX_SINCE)
        since_ms = int(start.timestamp() * 1000)
    try:
        with reader:
            spans = {}
            for name in dict.fromkeys(names):
                spans.update(reader.spans(name, since_ms=since_ms, newest=per_topic))
            by_topic: dict[str, list[tuple[tuple[str, str], Record, dict[str, Any]]]] = {}
            for record in reader.read(spans, limit=per_topic * max(1, len(spans))):
                payload = _payload(record)
                if payload is not None:
                    by_topic.setdefault(record.topic, []).append((_order(payload), record, payload))
            recorded = [
                one for found in by_topic.values() for one in sorted(found, key=lambda e: e[0])[-per_topic:]
            ]
            for _key, record, payload in sorted(recorded, key=lambda e: e[0]):
                _print_kafka(record, payload, output)
            if follow:
                for record in reader.more(until=None):
                    payload = _payload(record)
                    if payload is not None:
                        _print_kafka(record, payload, output)
    except KeyboardInterrupt:
        return  # Ctrl-C is how a follow ends: the consumer is closed, nothing was committed


def _payload(record: Record) -> dict[str, Any] | None:
    """A record's event; None for a value that is not a JSON object (not an aion event)."""
    try:
        payload = json.loads(record.value)
    except ValueError:
        return None
    return payload if isinstance(payload, dict) else None


def _order(payload: dict[str, Any]) -> tuple[str, str]:
    """Events in time order: their time (RFC 3339, UTC, as aion writes it, so text order is time
    order), then their id (a ULID: time-ordered too)."""
    moment = str(payload.get("time", ""))
    with contextlib.suppress(ValueError):
        moment = dt.datetime.fromisoformat(moment).astimezone(dt.UTC).isoformat(timespec="microseconds")
    return moment, str(payload.get("id", ""))


def kafka_record(record: Record, payload: dict[str, Any]) -> dict[str, Any]:
    """The document of one event read from Kafka: apiVersion, kind and where the record is, then the
    event's own fields."""
    fields = {k: v for k, v in payload.items() if k not in _KAFKA_ENVELOPE}
    where = {"topic": record.topic, "partition": record.partition, "offset": record.offset}
    return document("EventRecord", {"kafka": where, **fields})


def _print_kafka(record: Record, payload: dict[str, Any], output: OutputFormat) -> None:
    doc = kafka_record(record, payload)
    emit_streamed(doc, output, text=lambda: render_text(f"{record.partition}:{record.offset}", doc))


_ENVELOPE = ("apiVersion", "kind", "sequence")
"""The record's own keys, ahead of the event's: an event never sets them (schemas/events/)."""
_KAFKA_ENVELOPE = ("apiVersion", "kind", "sequence", "kafka")
"""The same for a record read from Kafka, which says where it is in ``kafka``."""


def record(event: events_pb2.Event) -> dict[str, Any]:
    """The document of one event: apiVersion, kind and the event's sequence, then the event's own
    fields (its JSON payload). A payload that is not a JSON object is a daemon fault, said as one."""
    try:
        payload = json.loads(event.payload_json or b"{}")
    except ValueError:
        payload = None
    if not isinstance(payload, dict):
        raise ServiceError(f"events tail: event {event.sequence} from aiond is not a JSON object")
    fields = {k: v for k, v in payload.items() if k not in _ENVELOPE}
    return document("EventRecord", {"sequence": event.sequence, **fields})


def _print(event: events_pb2.Event, output: OutputFormat) -> None:
    doc = record(event)
    emit_streamed(doc, output, text=lambda: render_text(event.sequence, doc))


def render_text(position: int | str, payload: dict[str, Any]) -> str:
    """One line per event: where it was read (its sequence in the daemon's log, or PARTITION:OFFSET
    in Kafka), time, who did what to what, how it ended, and why."""
    parts = [
        str(position),
        str(payload.get("time", "")),
        str(payload.get("principal", "")),
        str(payload.get("action", "")),
        str(payload.get("target", "")),
        str(payload.get("outcome", "")),
    ]
    before, after = payload.get("before"), payload.get("after")
    if before or after:
        parts.append(f"{before or '-'}->{after or '-'}")
    if payload.get("reason"):
        parts.append(str(payload["reason"]))
    return " ".join(parts)
