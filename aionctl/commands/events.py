"""``aionctl events tail``: read the daemon's event log (audit events now), and follow it.

Each event is printed as it arrives: text is one line per event; ``-o json`` is JSON Lines (one object
per line), so ``jq`` and log shippers can consume a followed stream; ``-o yaml`` is one YAML document
per event, each after a ``---``. Every object is a document like every other aionctl prints:
``apiVersion``, ``kind: EventRecord`` and the event's ``sequence``, then the event's own fields
(schema ``output/event``).

Without ``--follow`` the call has the usual deadline; with it the stream stays open until Ctrl-C or
until the daemon stops (exit 0 after a clean end, 5 when the connection is lost).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer

from aion.errors import ServiceError
from aionctl.client import Endpoint, channel, translate_rpc_error
from aionctl.connect import daemon_command
from aionctl.options import Output, command_app
from aionctl.output import OutputFormat, document, emit_streamed

if TYPE_CHECKING:
    from aion.api.v1 import events_pb2

app = command_app()
app.info.help = "Read the daemon's event log (audit events), and follow it."
app.info.no_args_is_help = True


@app.callback()
def events() -> None:
    """Read the daemon's event log (audit events), and follow it."""


@daemon_command(app, "tail", timeout=5.0)
def tail(
    ctx: typer.Context,
    target: Endpoint,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new events as they are recorded.")
    ] = False,
    topic: Annotated[
        list[str] | None, typer.Option("--topic", metavar="TOPIC", help="Only this topic (repeatable).")
    ] = None,
    limit: Annotated[
        int, typer.Option("--limit", "-n", min=1, max=10_000, help="Recorded events to print first.")
    ] = 20,
    after: Annotated[
        int,
        typer.Option(
            "--after", min=0, max=2**63 - 1, metavar="SEQ", help="Start after this sequence number."
        ),
    ] = 0,
    output: Output = OutputFormat.TEXT,
) -> None:
    """Print the last events of the daemon's event log (role viewer)."""
    import grpc

    from aion.api.v1 import events_pb2, events_pb2_grpc

    request = events_pb2.TailEventsRequest(
        topics=topic or [], after_sequence=after, limit=limit, follow=follow
    )
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


_ENVELOPE = ("apiVersion", "kind", "sequence")
"""The record's own keys, ahead of the event's: an event never sets them (schemas/events/)."""


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


def render_text(sequence: int, payload: dict[str, Any]) -> str:
    """One line per event: sequence, time, who did what to what, how it ended, and why."""
    parts = [
        str(sequence),
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
