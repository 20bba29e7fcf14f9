"""``aionctl route explain``: what the router would decide for a task, and why, without running it.

Online (the default) the daemon decides under its active policy version and live state (breakers,
runtime intent modes). Offline (``--config DIR``) the same engine decides against a local config set
with everything closed and no runtime modes: a CI check of what a policy change does to routing.

Exit codes: 0 a route was found; 1 the hard rules refuse every route (or, offline, the config set has
errors); 2 usage; 3 unreadable input; 4/5 as for every daemon call.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from aion.errors import FindingsError, InputError, UsageError
from aionctl import completing
from aionctl.client import call, channel
from aionctl.connect import TlsCa, TlsCert, TlsKey, TlsServerName, TokenFile, endpoint
from aionctl.options import Address, Output, Timeout, budget_nano, command_app, global_options
from aionctl.output import OutputFormat, document, emit

if TYPE_CHECKING:
    from aion.api.v1 import router_pb2, tasks_pb2

app = command_app()
app.info.help = "Explain what the router would decide for a task (online, or offline against a config set)."
app.info.no_args_is_help = True

_ROUTES = ("local", "api", "hybrid")


@app.callback()
def route() -> None:
    """Explain what the router would decide for a task."""


@app.command("explain")
def explain(
    ctx: typer.Context,
    intent: Annotated[
        str, typer.Argument(help="Intent name, as in intents.yml.", autocompletion=completing.intent_names)
    ],
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", metavar="DIR", help="Decide offline against this config set, not the daemon."
        ),
    ] = None,
    input_file: Annotated[
        str | None,
        typer.Option("--input", metavar="FILE", help="The would-be input ('-' for stdin); its size counts."),
    ] = None,
    input_bytes: Annotated[
        int | None,
        typer.Option("--input-bytes", min=0, max=2**40, metavar="N", help="Input size, without a file."),
    ] = None,
    budget: Annotated[
        str | None, typer.Option("--budget", metavar="USD", help="The task's budget in dollars, e.g. 0.05.")
    ] = None,
    route_override: Annotated[
        str | None, typer.Option("--route", metavar="ROUTE", help="Ask for a route: local, api or hybrid.")
    ] = None,
    latency_ms: Annotated[
        int | None, typer.Option("--latency-ms", min=1, max=3_600_000, metavar="MS", help="Latency target.")
    ] = None,
    addr: Address = None,
    timeout: Timeout = 5.0,
    output: Output = OutputFormat.TEXT,
    token_file: TokenFile = None,
    tls_ca: TlsCa = None,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
    tls_server_name: TlsServerName = None,
) -> None:
    """Explain the route the router would choose for INTENT (role viewer online)."""
    from aion.api.v1 import common_pb2, router_pb2, router_pb2_grpc, tasks_pb2

    size = _input_size(input_file, input_bytes)
    hints = tasks_pb2.RoutingHints()
    if budget is not None:
        hints.budget.CopyFrom(common_pb2.UsdAmount(nano_usd=budget_nano(budget)))
    if route_override is not None:
        if route_override not in _ROUTES:
            raise UsageError(f"--route {route_override!r} is not one of local, api, hybrid")
        hints.route_override = getattr(common_pb2, f"ROUTE_{route_override.upper()}")
    if latency_ms is not None:
        hints.latency_target_ms = latency_ms
    if config is not None:
        reply = _offline(config, intent, hints, size)
    else:
        target = endpoint(
            ctx, addr=addr, timeout=timeout, token_file=token_file,
            tls_ca=tls_ca, tls_cert=tls_cert, tls_key=tls_key, tls_server_name=tls_server_name,
        )  # fmt: skip
        request = router_pb2.ExplainRouteRequest(intent=intent, hints=hints, input_size_bytes=size)
        with channel(target) as ch:
            reply = call(target, router_pb2_grpc.RouterServiceStub(ch).ExplainRoute, request, "route explain")
    if not (global_options(ctx).quiet and output is OutputFormat.TEXT):
        from aion.documents import to_dict

        body = {**to_dict(reply), "offline": config is not None}
        emit(document("RouteExplanation", body), output, text=lambda: render_text(reply))
    if reply.refused:
        raise typer.Exit(1)


def _offline(
    config: Path, intent: str, hints: tasks_pb2.RoutingHints, size: int
) -> router_pb2.ExplainRouteResponse:
    """The explanation against a local config set, built by the same mapping the daemon answers
    with (aion.routing.wire), so the document is the same online and offline."""
    from aion.config.validate import validate_directory
    from aion.routing import LiveState, compile_table
    from aion.routing.wire import explanation, request_from

    if not config.is_dir():
        raise InputError(f"{config}: not a directory", hint="give the directory of a config set")
    report = validate_directory(config)
    if report.snapshot is None:
        errors = [f for f in report.findings if f.severity.value == "error"]
        raise FindingsError(
            f"{config} is not a valid config set ({len(errors)} errors)", hint=f"aionctl validate {config}"
        )
    table = compile_table(report.snapshot)
    return explanation(table.decide(request_from(intent, hints, size), LiveState(), explain=True), 0)


def _input_size(input_file: str | None, input_bytes: int | None) -> int:
    """The would-be input's size. Only its size counts, so a regular file is measured, not read;
    a pipe on standard input is read, bounded like ``task submit`` reads it. A FIFO or a device is
    refused: it has no size, and reading it could wait or run forever."""
    if input_file is not None and input_bytes is not None:
        raise UsageError("--input and --input-bytes go one at a time")
    if input_file is None:
        return input_bytes or 0
    if input_file == "-":
        return _stdin_size()
    from aion.inputs import file_kind

    try:
        info = Path(input_file).expanduser().stat()
    except OSError as exc:
        raise InputError(f"--input {input_file}: cannot read: {exc.strerror}", hint="check the path") from exc
    if (kind := file_kind(info.st_mode)) is not None:
        raise InputError(
            f"--input {input_file} is {kind}, not a regular file",
            hint="give a file, pipe the input to --input -, or give its size with --input-bytes N",
        )
    return info.st_size


def _stdin_size() -> int:
    """Standard input's size: measured when it is a file (``< FILE``), else read, bounded."""
    import os
    import stat
    import sys

    from aion.inputs import read_bounded
    from aionctl.connect import DEFAULT_MAX_MESSAGE_BYTES

    with contextlib.suppress(OSError, ValueError):  # ValueError: standard input is closed
        fd = sys.stdin.fileno()
        info = os.fstat(fd)
        if stat.S_ISREG(info.st_mode):
            return max(0, info.st_size - os.lseek(fd, 0, os.SEEK_CUR))
    hint = "for a larger input, give its size with --input-bytes N"
    return len(read_bounded("-", DEFAULT_MAX_MESSAGE_BYTES, what="--input", hint=hint))


def _usd(nano: int) -> str:
    return f"${nano / 1e9:.6f}".rstrip("0").rstrip(".")


def _target(target: tasks_pb2.Target) -> str:
    from aion.api.v1 import common_pb2, tasks_pb2
    from aion.documents import enum_word

    if target.kind == tasks_pb2.TARGET_KIND_MODULE:
        return f"module {target.name}"
    route = enum_word(common_pb2.Route.DESCRIPTOR, target.route) or "no route"
    return f"{target.provider}:{target.name} ({target.tier}, {route})"


def render_text(reply: router_pb2.ExplainRouteResponse) -> str:
    """The explanation for a person, from the typed message."""
    from aion.api.v1 import common_pb2, tasks_pb2
    from aion.documents import enum_word

    if reply.refused:
        lines = [f"refused: {reply.refusal_reason}"]
        lines += [f"  {r.reason_code:<18} {_target(r.target)}" for r in reply.rejected]
        return "\n".join(lines) + "\n"
    d = reply.decision
    route = enum_word(common_pb2.Route.DESCRIPTOR, d.route) or "no route"
    chooser = enum_word(tasks_pb2.RouteChooser.DESCRIPTOR, d.chosen_by) or "unknown"
    tier = f" (tier {d.tier})" if d.tier else ""
    lines = [f"route:   {route}{tier}, chosen by {chooser}"]
    if d.HasField("prepare"):
        lines.append(f"prepare: {_target(d.prepare)}")
    lines += [f"  {i}. {_target(t)}" for i, t in enumerate([d.target, *d.fallback_chain], 1)]
    worst = _usd(d.estimated_max_cost.nano_usd)
    budget = f" of a {_usd(d.budget.nano_usd)} budget" if d.HasField("budget") else ", no budget"
    lines.append(f"worst case {worst}{budget}")
    lines.append(f"why:     {d.reason}")
    return "\n".join(lines) + "\n"
