"""``aionctl breaker list|open|close|auto``: see the circuit breakers, and force them during an incident.

``open`` keeps traffic away from a provider (or one model: ``provider:model``) whatever its health;
``close`` sends traffic to it whatever its failures; ``auto`` hands it back to the failure-ratio window.
Forcing needs role operator and is audited with ``--reason``.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from aionctl.client import Endpoint, call, channel
from aionctl.connect import daemon_command
from aionctl.options import Output, command_app, global_options
from aionctl.output import OutputFormat, document, emit

app = command_app()
app.info.help = "List circuit breakers, or force one open or closed."
app.info.no_args_is_help = True

Key = Annotated[str, typer.Argument(metavar="PROVIDER[:MODEL]", help="A provider, or one of its models.")]
Reason = Annotated[
    str, typer.Option("--reason", "-r", metavar="TEXT", help="Why; recorded in the audit event.")
]


def _plain(b: dict[str, Any]) -> dict[str, Any]:
    """A breaker in the proto3 JSON mapping, with its enums as short lowercase words."""
    b["state"] = b.get("state", "").removeprefix("BREAKER_STATE_").lower().replace("_", "-")
    b["override"] = b.get("override", "").removeprefix("BREAKER_OVERRIDE_").lower().replace("_", "-")
    return b


def _row(b: dict[str, Any]) -> str:
    key = f"{b['provider']}:{b['model']}" if b.get("model") else b["provider"]
    forced = "" if b["override"] == "none" else f" ({b['override']})"
    ratio, seen = b.get("failureRatio", 0), b.get("windowRequests", 0)
    return f"{key:<32} {b['state'] + forced:<24} {ratio:>6.0%} of {seen}"


@daemon_command(app, "list")
def list_(ctx: typer.Context, target: Endpoint, output: Output = OutputFormat.TEXT) -> None:
    """List every breaker the daemon has seen (role viewer)."""
    from google.protobuf import json_format

    from aion.api.v1 import admin_pb2, admin_pb2_grpc

    with channel(target) as ch:
        stub = admin_pb2_grpc.AdminServiceStub(ch)
        reply = call(target, stub.ListBreakers, admin_pb2.ListBreakersRequest(), "breaker list")
    breakers = [
        _plain(json_format.MessageToDict(b, always_print_fields_with_no_presence=True))
        for b in reply.breakers
    ]
    if not (global_options(ctx).quiet and output is OutputFormat.TEXT):
        header = f"{'BREAKER':<32} {'STATE':<24} FAILURES\n"
        emit(document("BreakerList", {"breakers": breakers}), output,
             text=lambda: header + "".join(_row(b) + "\n" for b in breakers))  # fmt: skip


def _set(
    ctx: typer.Context, target: Endpoint, key: str, override: str, reason: str, output: OutputFormat
) -> None:
    from google.protobuf import json_format

    from aion.api.v1 import admin_pb2, admin_pb2_grpc

    provider, _, model = key.partition(":")
    request = admin_pb2.SetBreakerStateRequest(
        provider=provider,
        model=model,
        override=getattr(admin_pb2, f"BREAKER_OVERRIDE_{override}"),
        reason=reason,
    )
    with channel(target) as ch:
        stub = admin_pb2_grpc.AdminServiceStub(ch)
        reply = call(target, stub.SetBreakerState, request, f"breaker {override.lower()}")
    body = {k: _plain(json_format.MessageToDict(getattr(reply, k), always_print_fields_with_no_presence=True))
            for k in ("breaker", "previous")}  # fmt: skip
    if not (global_options(ctx).quiet and output is OutputFormat.TEXT):
        emit(document("BreakerChange", body), output, text=lambda: _row(body["breaker"]) + "\n")


def _make(override: str, doc: str) -> None:
    def command(
        ctx: typer.Context,
        target: Endpoint,
        key: Key,
        reason: Reason = "",
        output: Output = OutputFormat.TEXT,
    ) -> None:
        _set(ctx, target, key, override, reason, output)

    command.__doc__ = doc
    daemon_command(app, {"FORCED_OPEN": "open", "FORCED_CLOSED": "close", "NONE": "auto"}[override])(command)


_make("FORCED_OPEN", "Force a breaker open: no traffic to it until `auto` (role operator).")
_make("FORCED_CLOSED", "Force a breaker closed: traffic goes to it whatever its failures (role operator).")
_make("NONE", "Hand a breaker back to automatic control (role operator).")
