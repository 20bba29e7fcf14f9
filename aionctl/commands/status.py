"""``aionctl status``: what the running aiond reports about itself (AdminService.GetStatus)."""

from __future__ import annotations

from typing import Any

import typer

from aionctl.client import Endpoint, call, channel
from aionctl.connect import daemon_command
from aionctl.options import Output, command_app, global_options
from aionctl.output import OutputFormat, document, emit

app = command_app()


@daemon_command(app, timeout=5.0)
def status(
    ctx: typer.Context,
    target: Endpoint,
    output: Output = OutputFormat.TEXT,
) -> None:
    """Show what the running aiond reports about itself (role viewer)."""
    from google.protobuf import json_format

    from aion.api.v1 import admin_pb2, admin_pb2_grpc

    with channel(target) as ch:
        reply = call(
            target, admin_pb2_grpc.AdminServiceStub(ch).GetStatus, admin_pb2.GetStatusRequest(), "status"
        )
    body = json_format.MessageToDict(reply, always_print_fields_with_no_presence=True)
    body["state"] = admin_pb2.ServingState.Name(reply.state).removeprefix("SERVING_STATE_").lower()
    if not (global_options(ctx).quiet and output is OutputFormat.TEXT):
        emit(document("DaemonStatus", body), output, text=lambda: render_text(body))


def render_text(body: dict[str, Any]) -> str:
    rows = [
        ("version", body["version"]),
        ("state", body["state"]),
        ("started", body.get("startedAt", "")),
        ("pid", body["pid"]),
        ("gRPC", body["grpcAddress"]),
        ("HTTP", body["httpAddress"]),
        ("config", body["configDir"]),
        ("state dir", body["stateDir"]),
        ("policy version", int(body["activePolicyVersion"]) or "none active"),
        ("calls in flight", body["inflightRpcs"]),
    ]
    return "".join(f"{name + ':':<16} {value}\n" for name, value in rows)
