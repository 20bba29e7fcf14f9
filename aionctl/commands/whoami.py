"""``aionctl whoami``: the principal and role the daemon sees for this invocation's credentials
(AdminService.WhoAmI), to check a token, a context or a client certificate before relying on it."""

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
def whoami(ctx: typer.Context, target: Endpoint, output: Output = OutputFormat.TEXT) -> None:
    """Show the principal and role aiond takes this caller to be (any role)."""
    from aion.api.v1 import admin_pb2, admin_pb2_grpc

    with channel(target) as ch:
        reply = call(target, admin_pb2_grpc.AdminServiceStub(ch).WhoAmI, admin_pb2.WhoAmIRequest(), "whoami")
    if not (global_options(ctx).quiet and output is OutputFormat.TEXT):
        emit(document("Identity", reply), output, text=lambda: render_text(reply))


def render_text(reply: admin_pb2.WhoAmIResponse) -> str:
    from aion.api.v1 import admin_pb2
    from aion.documents import enum_word

    transport = "mTLS" if reply.client_certificate else ("TLS" if reply.tls else "plain text")
    rows = [
        ("principal", reply.principal),
        ("role", enum_word(admin_pb2.Role.DESCRIPTOR, reply.role) or "none"),
        ("credential", reply.credential),
        ("connection", transport),
    ]
    return "".join(f"{name + ':':<12} {value}\n" for name, value in rows)
