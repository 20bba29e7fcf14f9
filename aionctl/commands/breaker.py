"""``aionctl breaker list|open|close|auto``: see the circuit breakers, and force them during an incident.

``open`` keeps traffic away from a provider (or one model: ``provider:model``) whatever its health;
``close`` sends traffic to it whatever its failures; ``auto`` hands it back to the failure-ratio window.
Forcing needs role operator and is audited with ``--reason``.

``list`` reads every page of the daemon's answer. The text is rendered from the typed Breaker
messages; ``-o json|yaml`` prints their documents (schema ``output/breaker``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from aionctl.client import Endpoint, call, channel, every_page
from aionctl.connect import daemon_command
from aionctl.options import Output, command_app, global_options
from aionctl.output import OutputFormat, document, emit

if TYPE_CHECKING:
    from aion.api.v1 import admin_pb2

app = command_app()
app.info.help = "List circuit breakers, or force one open or closed."
app.info.no_args_is_help = True

Key = Annotated[str, typer.Argument(metavar="PROVIDER[:MODEL]", help="A provider, or one of its models.")]
Reason = Annotated[
    str, typer.Option("--reason", "-r", metavar="TEXT", help="Why; recorded in the audit event.")
]


def _row(b: admin_pb2.Breaker) -> str:
    from aion.api.v1 import admin_pb2
    from aion.documents import enum_word

    key = f"{b.provider}:{b.model}" if b.model else b.provider
    state = enum_word(admin_pb2.BreakerState.DESCRIPTOR, b.state) or "unknown"
    override = enum_word(admin_pb2.BreakerOverride.DESCRIPTOR, b.override)
    forced = "" if override in (None, "none") else f" ({override})"
    return f"{key:<32} {state + forced:<24} {b.failure_ratio:>6.0%} of {b.window_requests}"


def render_text(breakers: list[admin_pb2.Breaker]) -> str:
    header = f"{'BREAKER':<32} {'STATE':<24} FAILURES\n"
    return header + "".join(_row(b) + "\n" for b in breakers)


@daemon_command(app, "list")
def list_(ctx: typer.Context, target: Endpoint, output: Output = OutputFormat.TEXT) -> None:
    """List every breaker the daemon has seen (role viewer)."""
    from aion.documents import to_dict

    breakers = every_breaker(target)
    if not (global_options(ctx).quiet and output is OutputFormat.TEXT):
        doc = document("BreakerList", {"breakers": [to_dict(b) for b in breakers]})
        emit(doc, output, text=lambda: render_text(breakers))


def every_breaker(target: Endpoint) -> list[admin_pb2.Breaker]:
    """Every breaker, page after page: the daemon answers at most one page per call."""
    from aion.api.v1 import admin_pb2, admin_pb2_grpc

    with channel(target) as ch:
        return every_page(
            target, admin_pb2_grpc.AdminServiceStub(ch).ListBreakers,
            lambda token: admin_pb2.ListBreakersRequest(page_token=token),
            lambda reply: reply.breakers, "breaker list",
        )  # fmt: skip


def _set(
    ctx: typer.Context, target: Endpoint, key: str, override: str, reason: str, output: OutputFormat
) -> None:
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
    if not (global_options(ctx).quiet and output is OutputFormat.TEXT):
        emit(document("BreakerChange", reply), output, text=lambda: _row(reply.breaker) + "\n")


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
