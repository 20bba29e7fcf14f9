"""``aionctl status``: what the running aiond reports about itself (AdminService.GetStatus)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from aionctl.client import Endpoint, call, channel
from aionctl.connect import daemon_command
from aionctl.options import Output, command_app, global_options
from aionctl.output import OutputFormat, document, emit

if TYPE_CHECKING:
    from aion.api.v1 import admin_pb2

app = command_app()


@daemon_command(app, timeout=5.0)
def status(
    ctx: typer.Context,
    target: Endpoint,
    output: Output = OutputFormat.TEXT,
) -> None:
    """Show what the running aiond reports about itself (role viewer)."""
    from aion.api.v1 import admin_pb2, admin_pb2_grpc

    with channel(target) as ch:
        reply = call(
            target, admin_pb2_grpc.AdminServiceStub(ch).GetStatus, admin_pb2.GetStatusRequest(), "status"
        )
    if not (global_options(ctx).quiet and output is OutputFormat.TEXT):
        emit(document("DaemonStatus", reply), output, text=lambda: render_text(reply))


def render_text(reply: admin_pb2.GetStatusResponse) -> str:
    from aion.api.v1 import admin_pb2
    from aion.documents import enum_word

    rows = [
        ("version", reply.version),
        ("state", enum_word(admin_pb2.ServingState.DESCRIPTOR, reply.state) or "unknown"),
        ("started", reply.started_at.ToJsonString() if reply.HasField("started_at") else ""),
        ("pid", reply.pid),
        ("gRPC", reply.grpc_address),
        ("HTTP", reply.http_address),
        ("config", reply.config_dir),
        ("state dir", reply.state_dir),
        ("policy version", reply.active_policy_version or "none active"),
        ("calls in flight", reply.inflight_rpcs),
    ]
    return "".join(f"{name + ':':<16} {value}\n" for name, value in rows)
