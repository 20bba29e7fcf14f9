"""``aionctl audit verify``: confirm that every audit event aiond recorded in a window is in Kafka.

The runbook applies a policy and then confirms its audit event in ``aion.audit.activity``; this is
that confirmation, for every audit event of the window at once. Two sides are compared by event
``id``:

- **aiond's local record**, by default read from the daemon (EventService.TailEvents on the audit
  topic, role viewer): the newest page first, and when the window reaches further back, forward
  from a point found by probing backwards, page by page. ``--state-dir DIR`` reads the daemon's
  trail itself instead (``DIR/audit.jsonl``, which aiond never deletes), on the daemon's host,
  backwards from its end. Either way the window is read as far back as its start, and a little
  further (:data:`SLACK`): events are recorded in time order within seconds, save one that a crash
  left in the outbox, which is recorded at the next start.
- **the audit topic** named by kafka.yml, read by a consumer of its own (a new group id, no
  commits): every partition from the offset of the window's start (``offsets_for_times``, less
  :data:`SLACK` for clocks that differ) to its high watermark, stopping early once every event has
  been found. Then, while some are missing, it goes on reading what arrives, until they come or
  ``--wait`` (10s by default) is up: an event may still be in aiond's outbox, on its way (a check
  run just after a ``policy apply`` need not be timed). A check that finds everything ends at once.

Exit codes: 0 every audit event of the window is in Kafka (or there was none); 1 some are not (the
output names each: id, time, action, target); 2 a bad flag, or a window that holds more than
:data:`MAX_EVENTS`; 3 kafka.yml, a secret or the trail cannot be read, or the topic does not exist;
4 aiond or Kafka refused the credentials or the grant; 5 aiond or Kafka cannot be reached in time.
Document: ``output/audit-verification``.

The daemon's API numbers events by their line in its log and reads forward *after* a line, so the
log's very first line is out of reach of a forward read: a window that holds more than
:data:`PAGE` audit events and reaches back to the first line of the daemon's log is read whole only
with ``--state-dir``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import errno
import json
import os
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from aionctl.client import Endpoint
from aionctl.connect import daemon_command
from aionctl.kafka_reading import KafkaSource, kafka_options, open_reader
from aionctl.options import Output, command_app, global_options
from aionctl.output import OutputFormat, document, emit

if TYPE_CHECKING:
    from aion.kafka.reader import TopicReader

app = command_app()
app.info.help = "Confirm that aiond's audit events reached Kafka."
app.info.no_args_is_help = True

SLACK = dt.timedelta(minutes=15)
"""How far before the window both sides are read (see the module's docstring)."""
PAGE = 10_000
"""Events per TailEvents call: the most aiond returns (aiond's EventService MAX_LIMIT)."""
MAX_EVENTS = 100_000
"""The most audit events one window may hold (they are all held in memory to be compared)."""
MAX_SCANNED = 10 * MAX_EVENTS
"""The most audit events read from aiond for one window, those outside it included."""
MAX_RECORDS = 10_000_000
"""The most records of the audit topic read for one window."""
MAX_LINE = 1024 * 1024
"""Longer lines of the trail are skipped (aiond never writes one)."""
_BLOCK = 1024 * 1024
MIN_SINCE, MAX_SINCE = dt.timedelta(seconds=1), dt.timedelta(days=366)
MAX_WAIT = dt.timedelta(hours=1)

_DURATION = re.compile(r"([0-9]{1,9})(s|m|h|d|w)")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400}


def duration(text: str, *, low: dt.timedelta, high: dt.timedelta) -> dt.timedelta:
    """``90s``, ``10m``, ``24h``, ``7d``, ``2w`` (``0`` too when ``low`` is 0), from ``low`` to
    ``high``; typer.BadParameter, naming the range, otherwise."""
    said = f"from {_words(low)} to {_words(high)}"
    if text == "0" and not low:
        return dt.timedelta(0)
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise typer.BadParameter(
            f"{text[:40]!r} is not a duration: a number and s, m, h, d or w (for example 10m), {said}"
        )
    value = dt.timedelta(seconds=int(match[1]) * _UNITS[match[2]])
    if not low <= value <= high:
        raise typer.BadParameter(f"{text} is out of range: {said}")
    return value


def _words(value: dt.timedelta) -> str:
    seconds = int(value.total_seconds())
    for unit, size in (("d", 86_400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _since(text: str) -> str:
    duration(text, low=MIN_SINCE, high=MAX_SINCE)
    return text


def _wait(text: str) -> str:
    duration(text, low=dt.timedelta(0), high=MAX_WAIT)
    return text


Since = Annotated[
    str,
    typer.Option("--since", metavar="DURATION", callback=_since,
                 help="The window: audit events of the last DURATION (1s to 366d; 10m, 24h, 7d)."),
]  # fmt: skip
Wait = Annotated[
    str,
    typer.Option("--wait", metavar="DURATION", callback=_wait,
                 help="Keep reading Kafka up to this long for events still on their way (0 to 1h)."),
]  # fmt: skip
StateDir = Annotated[
    Path | None,
    typer.Option("--state-dir", metavar="DIR", show_default=False,
                 help="Read aiond's trail (DIR/audit.jsonl) on its host instead of asking aiond."),
]  # fmt: skip


@app.callback()
def audit() -> None:
    """Confirm that aiond's audit events reached Kafka."""


@dataclasses.dataclass(frozen=True, slots=True)
class Local:
    """One audit event of aiond's local record."""

    id: str
    time: dt.datetime
    text_time: str
    action: str
    target: str


@daemon_command(app, "verify", timeout=10.0)
@kafka_options
def verify(
    ctx: typer.Context,
    target: Endpoint,
    kafka: KafkaSource,
    since: Since = "24h",
    wait: Wait = "10s",
    state_dir: StateDir = None,
    output: Output = OutputFormat.TEXT,
) -> None:
    """Check that every audit event aiond recorded in the window is in Kafka's audit topic (by id);
    exit 1 naming those that are not. The local record comes from aiond (role viewer), or with
    --state-dir from its trail on this host; the topic is read with a consumer that commits nothing."""
    from aion.envelopes import AUDIT_TOPIC

    window = duration(since, low=MIN_SINCE, high=MAX_SINCE)
    waiting = duration(wait, low=dt.timedelta(0), high=MAX_WAIT).total_seconds()
    end = dt.datetime.now(dt.UTC)
    start = end - window
    if state_dir is not None:
        local, source, location = _from_trail(state_dir, start, end), "trail", str(state_dir / "audit.jsonl")
    else:
        local, source, location = _from_daemon(target, start, end), "daemon", str(target.grpc)
    config, reader = open_reader(ctx, kafka, timeout=target.timeout, purpose="audit-verify")
    topic = config.topic_for(AUDIT_TOPIC)
    with reader:
        missing, read, waited = _look_up(reader, topic, {e.id for e in local}, start - SLACK, waiting)
    body = {
        "verified": not missing,
        "window": {"since": since, "start": _iso(start), "end": _iso(end)},
        "local": {"source": source, "location": location, "events": len(local)},
        "kafka": {
            "bootstrapServers": list(config.bootstrap_servers),
            "topic": topic,
            "recordsRead": read,
            "waitedSeconds": round(waited, 3),
        },
        "found": len(local) - len(missing),
        "missing": [
            {"id": e.id, "time": e.text_time, "action": e.action, "target": e.target}
            for e in sorted(local, key=lambda e: (e.time, e.id))
            if e.id in missing
        ],
    }
    if not (global_options(ctx).quiet and output is OutputFormat.TEXT):
        emit(document("AuditVerification", body), output, text=lambda: _text(body))
    if missing:
        if output is OutputFormat.TEXT and not global_options(ctx).quiet:
            sys.stderr.write(
                "hint: an event may still be in aiond's outbox (--wait 1m reads longer; aiond's "
                "aion_outbox_events metric counts them); events recorded while aiond ran without "
                "--kafka-config never reach Kafka\n"
            )
        raise typer.Exit(1)


def _iso(moment: dt.datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _text(body: dict[str, Any]) -> str:
    window, kafka = body["window"], body["kafka"]
    count = body["local"]["events"]
    where = f"{kafka['topic']} at {','.join(kafka['bootstrapServers'])}"
    span = f"since {window['start']} (the last {window['since']})"
    if body["verified"]:
        noun = "audit event" if count == 1 else "audit events"
        said = f"all {count} {noun}" if count else "no audit events: nothing to verify"
        return f"verified: {said} {span}" + (f" are in {where}\n" if count else "\n")
    lines = [f"missing {m['id']} {m['time']} {m['action']} {m['target']}" for m in body["missing"]]
    lines.append(f"not verified: {len(body['missing'])} of {count} audit events {span} are not in {where}")
    return "\n".join(lines) + "\n"


# -- the local record ---------------------------------------------------------------------------------


def _event(payload: Any) -> Local | None:
    """The audit event of one recorded object; None when it is not one or has no readable time."""
    if not isinstance(payload, dict) or not isinstance(payload.get("id"), str):
        return None
    text = payload.get("time")
    try:
        moment = dt.datetime.fromisoformat(str(text))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return Local(
        payload["id"], moment, str(text), str(payload.get("action", "")), str(payload.get("target", ""))
    )


class _Window:
    """The audit events of the window, as they are found, bounded."""

    def __init__(self, start: dt.datetime, end: dt.datetime) -> None:
        self.start, self.end = start, end
        self.events: dict[str, Local] = {}

    def add(self, event: Local) -> None:
        if self.start <= event.time <= self.end:
            self.events.setdefault(event.id, event)
            if len(self.events) > MAX_EVENTS:
                from aion.errors import UsageError

                raise UsageError(
                    f"the window holds more than {MAX_EVENTS:,} audit events, the limit",
                    hint="verify a shorter window (--since), in several runs",
                )


def _from_daemon(target: Endpoint, start: dt.datetime, end: dt.datetime) -> list[Local]:
    """The window's audit events in aiond's log, read over the API (see the module's docstring)."""
    from aion.api.v1 import events_pb2_grpc
    from aionctl.client import channel

    found = _Window(start, end)
    with channel(target) as ch:
        stub = events_pb2_grpc.EventServiceStub(ch)
        newest = _page(stub, target, after=0, limit=PAGE)
        for _sequence, event in newest:
            found.add(event)
        if len(newest) < PAGE or newest[0][1].time < start - SLACK:
            return list(found.events.values())
        last = newest[-1][0]
        after = _reach_back(stub, target, start - SLACK, newest[0][0])
        scanned = 0
        while True:
            page = _page(stub, target, after=after, limit=PAGE)
            scanned += len(page)
            if scanned > MAX_SCANNED:
                from aion.errors import UsageError

                raise UsageError(
                    f"reading the window took more than {MAX_SCANNED:,} audit events from aiond, the limit",
                    hint="verify a shorter window (--since), or read the trail with --state-dir",
                )
            for sequence, event in page:
                if sequence <= last:
                    found.add(event)
            if len(page) < PAGE or page[-1][0] >= last:
                return list(found.events.values())
            after = page[-1][0]


def _reach_back(stub: Any, target: Endpoint, before: dt.datetime, oldest: int) -> int:
    """A sequence number from which reading forward covers every event since ``before``: probed
    backwards from ``oldest`` in steps that grow fourfold, each probe one event."""
    step = PAGE
    while True:
        after = max(1, oldest - step)
        probe = _page(stub, target, after=after, limit=1)
        if after == 1 or (probe and probe[0][1].time < before):
            return after
        step *= 4


def _page(stub: Any, target: Endpoint, *, after: int, limit: int) -> list[tuple[int, Local]]:
    """One TailEvents call on the audit topic: the last ``limit`` events (``after`` 0), or the first
    ``limit`` after sequence ``after``; with their sequence numbers, in order."""
    import grpc

    from aion.api.v1 import events_pb2
    from aion.envelopes import AUDIT_TOPIC
    from aionctl.client import translate_rpc_error

    request = events_pb2.TailEventsRequest(topics=[AUDIT_TOPIC], after_sequence=after, limit=limit)
    found: list[tuple[int, Local]] = []
    try:
        for reply in stub.TailEvents(request, timeout=target.timeout, metadata=target.metadata()):
            if len(found) >= limit:
                break  # never more than asked, whatever the server sends
            try:
                payload = json.loads(reply.event.payload_json or b"{}")
            except ValueError:
                continue
            event = _event(payload)
            if event is not None:
                found.append((int(reply.event.sequence), event))
    except grpc.RpcError as exc:
        raise translate_rpc_error(exc, target, "audit verify") from exc
    return found


def _from_trail(state_dir: Path, start: dt.datetime, end: dt.datetime) -> list[Local]:
    """The window's audit events in ``STATE_DIR/audit.jsonl``, read backwards from its end until a
    line older than the window by :data:`SLACK`. A regular file only (opened without following a
    link, and without waiting on a FIFO); a line still being written at its end is left out."""
    from aion.errors import InputError
    from aion.inputs import file_kind

    path = state_dir / "audit.jsonl"
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY | os.O_NOFOLLOW
    hint = "give aiond's --state-dir (the directory holding state.db and audit.jsonl)"
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        reason = "a symbolic link" if exc.errno == errno.ELOOP else exc.strerror  # O_NOFOLLOW refused it
        raise InputError(f"--state-dir: cannot open {path}: {reason}", hint=hint) from exc
    found = _Window(start, end)
    oldest = start - SLACK
    try:
        info = os.fstat(fd)
        kind = file_kind(info.st_mode)
        if kind is not None:
            raise InputError(f"--state-dir: {path} is {kind}, not a regular file", hint=hint)
        for line in _lines_backward(fd, info.st_size, path):
            if not line:
                continue
            try:
                event = _event(json.loads(line))
            except ValueError:
                continue
            if event is None:
                continue
            if event.time < oldest:
                break
            found.add(event)
    except OSError as exc:
        raise InputError(f"--state-dir: cannot read {path}: {exc.strerror}") from exc
    finally:
        os.close(fd)
    return list(found.events.values())


def _lines_backward(fd: int, size: int, path: Path) -> Iterator[bytes | None]:
    """The complete lines of the file, last first; None for one longer than :data:`MAX_LINE`, which
    is skipped without being held. Memory stays within a block and a line."""
    position, held = _to_newline(fd, size, path)  # what follows the last newline is unfinished
    while held or position > 0:
        cut = held.rfind(b"\n", 0, len(held) - 1)
        if cut >= 0 or position == 0:
            yield held[cut + 1 : -1]
            held = held[: cut + 1]
        elif len(held) > MAX_LINE:
            yield None
            position, held = _to_newline(fd, position, path)
        else:
            size = min(_BLOCK, position)
            position -= size
            held = _read(fd, size, position, path) + held


def _to_newline(fd: int, end: int, path: Path) -> tuple[int, bytes]:
    """Reading backwards from ``end``: where the block holding the last newline before it starts,
    and the bytes from there to that newline, included (0 and nothing when there is none)."""
    position = end
    while position > 0:
        size = min(_BLOCK, position)
        position -= size
        block = _read(fd, size, position, path)
        cut = block.rfind(b"\n")
        if cut >= 0:
            return position, block[: cut + 1]
    return 0, b""


def _read(fd: int, size: int, position: int, path: Path) -> bytes:
    from aion.errors import InputError

    block = os.pread(fd, size, position)
    if len(block) != size:
        raise InputError(
            f"--state-dir: {path} became shorter while it was read (rotated?)", hint="run the check again"
        )
    return block


# -- Kafka ------------------------------------------------------------------------------------------


def _look_up(
    reader: TopicReader, topic: str, wanted: set[str], since: dt.datetime, wait: float
) -> tuple[set[str], int, float]:
    """The ids of ``wanted`` that ``topic`` lacks, how many records were read, and how long was
    waited for more: every partition from the offset of ``since`` to its end, then, while some are
    missing, what arrives for up to ``wait`` seconds more."""
    spans = reader.spans(topic, since_ms=int(since.timestamp() * 1000))
    missing = set(wanted)
    read = 0
    if missing:
        for record in reader.read(spans, limit=MAX_RECORDS):
            read += 1
            missing.discard(_id(record.value))
            if not missing:
                break
    waited = 0.0
    if missing and wait > 0:
        began = time.monotonic()
        for record in reader.more(until=began + wait):
            read += 1
            missing.discard(_id(record.value))
            if not missing:
                break
        waited = time.monotonic() - began
    return missing, read, waited


def _id(value: bytes) -> str:
    try:
        event = json.loads(value)
    except ValueError:
        return ""
    return str(event.get("id", "")) if isinstance(event, dict) else ""
