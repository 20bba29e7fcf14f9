"""``aionctl events tail``: read the daemon's event log (audit events now), and follow it.

Each event is printed as it arrives: text is one line per event; ``-o json`` is JSON Lines (one object
per line, the event with its ``sequence``), so ``jq`` and log shippers can consume a followed stream;
``-o yaml`` is one YAML document per event. Without ``--follow`` the call has the usual deadline; with
it the stream stays open until Ctrl-C or until the daemon stops (exit 0 after a clean end, 5 when the
connection is lost).
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer

from aionctl.client import Endpoint, channel, translate_rpc_error
from aionctl.connect import daemon_command
from aionctl.options import Output, command_app
from aionctl.output import OutputFormat

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


def _print(event: Any, output: OutputFormat) -> None:
    payload: dict[str, Any] = json.loads(event.payload_json or b"{}")
    record = {"sequence": event.sequence, **payload}
    if output is OutputFormat.JSON:
        line = json.dumps(record, ensure_ascii=False, separators=(",", ":"))
    elif output is OutputFormat.YAML:
        import yaml

        line = "---\n" + yaml.safe_dump(record, sort_keys=False, allow_unicode=True).rstrip("\n")
    else:
        parts = [
            str(event.sequence),
            str(payload.get("time", "")),
            str(payload.get("principal", "")),
            str(payload.get("action", "")),
            str(payload.get("target", "")),
            str(payload.get("outcome", "")),
        ]
        before, after_ = payload.get("before"), payload.get("after")
        if before or after_:
            parts.append(f"{before or '-'}->{after_ or '-'}")
        if payload.get("reason"):
            parts.append(str(payload["reason"]))
        line = " ".join(parts)
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
