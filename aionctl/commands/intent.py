"""``aionctl intent mode|modes``: switch an intent's privacy at runtime, the runbook's lever for privacy
and outage concerns (for example ``aionctl intent mode summarize local-only``), and list the switches.

A runtime mode can only make an intent stricter than its policy; ``policy`` removes the switch. The
switch survives daemon restarts, needs role operator, and is audited with ``--reason``. Exit 6 when
the mode would loosen the policy, 3 for an intent the active policy does not define.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from aion.errors import UsageError
from aionctl.client import Endpoint, call, channel
from aionctl.connect import daemon_command
from aionctl.options import Output, command_app, global_options
from aionctl.output import OutputFormat, document, emit

app = command_app()
app.info.help = "Switch an intent's privacy at runtime (local-only, ...) and list the switches."
app.info.no_args_is_help = True

MODES = ("local-only", "allow-api", "hybrid", "policy")


def _plain(state: dict[str, Any]) -> dict[str, Any]:
    state["mode"] = state.get("mode", "").removeprefix("INTENT_MODE_").lower().replace("_", "-")
    return state


@daemon_command(app, "mode", timeout=5.0)
def mode(
    ctx: typer.Context,
    target: Endpoint,
    intent: Annotated[str, typer.Argument(help="Intent name.")],
    new_mode: Annotated[str, typer.Argument(metavar="MODE", help="local-only, allow-api, hybrid or policy.")],
    reason: Annotated[
        str, typer.Option("--reason", "-r", metavar="TEXT", help="Why; recorded in the audit.")
    ] = "",
    output: Output = OutputFormat.TEXT,
) -> None:
    """Switch INTENT to MODE at runtime (role operator)."""
    from google.protobuf import json_format

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
    state = _plain(json_format.MessageToDict(reply.state, always_print_fields_with_no_presence=True))
    previous = (
        admin_pb2.IntentMode.Name(reply.previous_mode).removeprefix("INTENT_MODE_").lower().replace("_", "-")
    )
    body = {"state": state, "previousMode": previous}
    if not (global_options(ctx).quiet and output is OutputFormat.TEXT):
        emit(document("IntentModeChange", body), output,
             text=lambda: f"{intent}: {previous} -> {state['mode']}\n")  # fmt: skip


@daemon_command(app, "modes", timeout=5.0)
def modes(
    ctx: typer.Context,
    target: Endpoint,
    output: Output = OutputFormat.TEXT,
) -> None:
    """List the intents switched at runtime (role viewer)."""
    from google.protobuf import json_format

    from aion.api.v1 import admin_pb2, admin_pb2_grpc

    with channel(target) as ch:
        stub = admin_pb2_grpc.AdminServiceStub(ch)
        reply = call(target, stub.ListIntentModes, admin_pb2.ListIntentModesRequest(), "intent modes")
    states = [
        _plain(json_format.MessageToDict(s, always_print_fields_with_no_presence=True)) for s in reply.intents
    ]
    if not (global_options(ctx).quiet and output is OutputFormat.TEXT):
        rows = "".join(
            f"{s['intent']:<24} {s['mode']:<11} {s.get('setBy', '')}  {s.get('reason', '')}\n" for s in states
        )
        table = f"{'INTENT':<24} {'MODE':<11} SET BY  REASON\n" + rows if states else "no runtime modes\n"
        emit(document("IntentModeList", {"intents": states}), output, text=lambda: table)
