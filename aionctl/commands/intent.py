"""``aionctl intent mode|modes``: switch an intent's privacy at runtime, the runbook's lever for privacy
and outage concerns (for example ``aionctl intent mode summarize local-only``), and list the switches.

A runtime mode can only make an intent stricter than its policy; ``policy`` removes the switch. The
switch survives daemon restarts, needs role operator, and is audited with ``--reason``. Exit 6 when
the mode would loosen the policy, 3 for an intent the active policy does not define.

``modes`` reads every page of the daemon's answer. The text is rendered from the typed messages;
``-o json|yaml`` prints their documents (schema ``output/intent-mode``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from aion.errors import UsageError
from aionctl import completing
from aionctl.client import Endpoint, call, channel, every_page
from aionctl.connect import daemon_command
from aionctl.options import Output, command_app, global_options
from aionctl.output import OutputFormat, document, emit

if TYPE_CHECKING:
    from aion.api.v1 import admin_pb2

app = command_app()
app.info.help = "Switch an intent's privacy at runtime (local-only, ...) and list the switches."
app.info.no_args_is_help = True

MODES = completing.INTENT_MODES


def _word(mode: int) -> str:
    from aion.api.v1 import admin_pb2
    from aion.documents import enum_word

    return enum_word(admin_pb2.IntentMode.DESCRIPTOR, mode) or "unknown"


@daemon_command(app, "mode", timeout=5.0)
def mode(
    ctx: typer.Context,
    target: Endpoint,
    intent: Annotated[str, typer.Argument(help="Intent name.", autocompletion=completing.intent_names)],
    new_mode: Annotated[
        str,
        typer.Argument(
            metavar="MODE",
            help="local-only, allow-api, hybrid or policy.",
            autocompletion=completing.intent_modes,
        ),
    ],
    reason: Annotated[
        str, typer.Option("--reason", "-r", metavar="TEXT", help="Why; recorded in the audit.")
    ] = "",
    output: Output = OutputFormat.TEXT,
) -> None:
    """Switch INTENT to MODE at runtime (role operator)."""
    from aion.api.v1 import admin_pb2, admin_pb2_grpc

    if new_mode not in MODES:
        raise UsageError(f"{new_mode!r} is not a mode", hint=f"one of {', '.join(MODES)}")
    request = admin_pb2.SetIntentModeRequest(
        intent=intent,
        mode=getattr(admin_pb2, "INTENT_MODE_" + new_mode.upper().replace("-", "_")),
        reason=reason,
    )
    with channel(target) as ch:
        reply = call(target, admin_pb2_grpc.AdminServiceStub(ch).SetIntentMode, request, "intent mode")
    if not (global_options(ctx).quiet and output is OutputFormat.TEXT):
        change = f"{reply.state.intent}: {_word(reply.previous_mode)} -> {_word(reply.state.mode)}\n"
        emit(document("IntentModeChange", reply), output, text=lambda: change)


@daemon_command(app, "modes", timeout=5.0)
def modes(
    ctx: typer.Context,
    target: Endpoint,
    output: Output = OutputFormat.TEXT,
) -> None:
    """List the intents switched at runtime (role viewer)."""
    from aion.documents import to_dict

    states = every_mode(target)
    if not (global_options(ctx).quiet and output is OutputFormat.TEXT):
        doc = document("IntentModeList", {"intents": [to_dict(s) for s in states]})
        emit(doc, output, text=lambda: render_text(states))


def render_text(states: list[admin_pb2.IntentModeState]) -> str:
    if not states:
        return "no runtime modes\n"
    rows = "".join(f"{s.intent:<24} {_word(s.mode):<11} {s.set_by}  {s.reason}\n" for s in states)
    return f"{'INTENT':<24} {'MODE':<11} SET BY  REASON\n" + rows


def every_mode(target: Endpoint) -> list[admin_pb2.IntentModeState]:
    """Every runtime switch, page after page: the daemon answers at most one page per call."""
    from aion.api.v1 import admin_pb2, admin_pb2_grpc

    with channel(target) as ch:
        return every_page(
            target, admin_pb2_grpc.AdminServiceStub(ch).ListIntentModes,
            lambda token: admin_pb2.ListIntentModesRequest(page_token=token),
            lambda reply: reply.intents, "intent modes",
        )  # fmt: skip
