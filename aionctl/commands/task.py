"""``aionctl task submit|get|watch|cancel``: run tasks on aiond and follow them.

``submit`` prints the task once it is admitted, or, with ``--wait``, once it has finished (bounded by
``--timeout``). Exit codes: 0 admitted (or finished OK with ``--wait``); 1 finished with ERROR, TIMEOUT
or CANCELED (``--wait``), or refused by the hard rules or the budget; 3 the input cannot be read or
is larger than the daemon's message cap (``--max-message-bytes``); 5 the route is saturated (the
message says when to retry) or aiond is unreachable; 4 no token or too weak a role.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from aion.errors import DaemonUnavailable, FindingsError, InputError, UsageError
from aionctl.client import Endpoint, call, channel, rpc_status, translate_rpc_error
from aionctl.connect import (
    DEFAULT_MAX_MESSAGE_BYTES,
    MaxMessageBytes,
    check_request_size,
    daemon_command,
    oversized,
)
from aionctl.options import Output, budget_nano, command_app, global_options
from aionctl.output import OutputFormat, document, emit

app = command_app()
app.info.help = "Submit tasks to aiond, and read, watch or cancel them."
app.info.no_args_is_help = True

TaskId = Annotated[str, typer.Argument(metavar="TASK_ID", help="The task's id, as submit printed it.")]


def _plain(task: dict[str, Any]) -> dict[str, Any]:
    task["status"] = task.get("status", "").removeprefix("TASK_STATUS_").lower()
    return task


def _text(task: dict[str, Any]) -> str:
    decision = task.get("decision", {})
    target = decision.get("target", {})
    lines = [
        f"task:    {task['taskId']}",
        f"status:  {task['status']}",
        f"route:   {decision.get('route', '').removeprefix('ROUTE_').lower()} -> "
        f"{target.get('provider', '')}:{target.get('name', '')}",
    ]
    usage = task.get("usage")
    if usage:
        cost = int(usage.get("cost", {}).get("nanoUsd", 0)) / 1e9
        lines.append(
            f"usage:   {usage.get('latencyMs', 0)} ms, {usage.get('inputTokens', 0)} in / "
            f"{usage.get('outputTokens', 0)} out tokens, ${cost:.6f}"
        )
    for attempt in task.get("attempts", []):
        t = attempt.get("target", {})
        outcome = attempt.get("outcome", "").removeprefix("TASK_STATUS_").lower()
        error = attempt.get("error", {}).get("code", "")
        where = f"{t.get('provider')}:{t.get('name')}"
        lines.append(f"  attempt {attempt.get('number')}: {where} {outcome} {error}".rstrip())
    if task.get("error"):
        lines.append(f"error:   {task['error'].get('code')}: {task['error'].get('message')}")
    if task.get("result"):
        lines.append("result:")
        lines.append(task["result"].get("text", ""))
    return "\n".join(lines) + "\n"


def _show(
    ctx: typer.Context, message: Any, output: OutputFormat, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    from google.protobuf import json_format

    body = _plain(json_format.MessageToDict(message, always_print_fields_with_no_presence=True))
    if not (global_options(ctx).quiet and output is OutputFormat.TEXT):
        emit(document("Task", {**body, **(extra or {})}), output, text=lambda: _text(body))
    return body


@daemon_command(app, "submit", timeout=30.0)
def submit(
    ctx: typer.Context,
    target: Endpoint,
    intent: Annotated[str, typer.Argument(help="Intent name, as in intents.yml.")],
    input_file: Annotated[
        str | None, typer.Option("--input", "-i", metavar="FILE", help="The input ('-' for stdin).")
    ] = None,
    text: Annotated[
        str | None, typer.Option("--text", "-t", metavar="TEXT", help="The input, inline.")
    ] = None,
    route: Annotated[
        str | None, typer.Option("--route", metavar="ROUTE", help="local, api or hybrid.")
    ] = None,
    budget: Annotated[str | None, typer.Option("--budget", metavar="USD", help="The task's budget.")] = None,
    wait: Annotated[bool, typer.Option("--wait", "-w", help="Return when the task has finished.")] = False,
    key: Annotated[
        str,
        typer.Option(
            "--idempotency-key", metavar="KEY", help="Submitting the same key again returns the first task."
        ),
    ] = "",
    label: Annotated[
        list[str] | None, typer.Option("--label", metavar="K=V", help="A label (repeatable).")
    ] = None,
    max_message_bytes: MaxMessageBytes = DEFAULT_MAX_MESSAGE_BYTES,
    output: Output = OutputFormat.TEXT,
) -> None:
    """Submit a task for INTENT (role operator)."""
    import grpc

    from aion.api.v1 import common_pb2, tasks_pb2, tasks_pb2_grpc

    content = _read_input(input_file, text, max_message_bytes)
    hints = tasks_pb2.RoutingHints()
    if route is not None:
        if route not in ("local", "api", "hybrid"):
            raise UsageError(f"--route {route!r} is not one of local, api, hybrid")
        hints.route_override = getattr(common_pb2, f"ROUTE_{route.upper()}")
    if budget is not None:
        hints.budget.CopyFrom(common_pb2.UsdAmount(nano_usd=budget_nano(budget)))
    labels = {}
    for item in label or []:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise UsageError(f"--label {item!r} is not K=V")
        labels[name] = value
    request = tasks_pb2.SubmitTaskRequest(
        intent=intent,
        input=tasks_pb2.TaskInput(text=content),
        hints=hints,
        idempotency_key=key,
        labels=labels,
        wait=wait,
    )
    check_request_size(request, max_message_bytes, "task submit")
    with channel(target) as ch:
        try:
            reply = tasks_pb2_grpc.TaskServiceStub(ch).SubmitTask(
                request, timeout=target.timeout, metadata=target.metadata()
            )
        except grpc.RpcError as exc:
            if (too_large := oversized(exc, "task submit")) is not None:
                raise too_large from exc
            code, detail = rpc_status(exc)
            if code is grpc.StatusCode.RESOURCE_EXHAUSTED:
                raise DaemonUnavailable(
                    f"task submit: {detail}", hint="retry later, or ask for another route"
                ) from exc
            if code is grpc.StatusCode.FAILED_PRECONDITION:
                raise FindingsError(f"task submit refused: {detail}") from exc
            raise translate_rpc_error(exc, target, "task submit") from exc
    body = _show(ctx, reply.task, output, {"deduplicated": reply.deduplicated})
    if wait and body["status"] != "ok":
        raise typer.Exit(1)


def _read_input(input_file: str | None, text: str | None, limit: int) -> str:
    """The task's input: ``--text``, or ``--input FILE|-`` read up to ``limit`` (the daemon's message
    cap: a larger input could not be sent anyway)."""
    from aion.inputs import read_bounded

    if input_file is not None and text is not None:
        raise UsageError("--input and --text go one at a time")
    if text is not None:
        return text
    if input_file is None:
        return ""
    hint = "a task travels in one message: for a daemon with a larger cap, pass --max-message-bytes"
    data = read_bounded(input_file, limit, what="--input", hint=hint)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(
            f"{input_file}: not UTF-8 text", hint="models take text; modules (later) take data"
        ) from None


@daemon_command(app, "get", timeout=5.0)
def get(
    ctx: typer.Context,
    target: Endpoint,
    task_id: TaskId,
    output: Output = OutputFormat.TEXT,
) -> None:
    """Show a task (role viewer)."""
    from aion.api.v1 import tasks_pb2, tasks_pb2_grpc

    with channel(target) as ch:
        reply = call(
            target,
            tasks_pb2_grpc.TaskServiceStub(ch).GetTask,
            tasks_pb2.GetTaskRequest(task_id=task_id),
            "task get",
        )
    _show(ctx, reply.task, output)


@daemon_command(app, "watch", timeout=300.0)
def watch(
    ctx: typer.Context,
    target: Endpoint,
    task_id: TaskId,
    output: Output = OutputFormat.TEXT,
) -> None:
    """Print a task's state, then every change, until it finishes (role viewer). Exit 0 when it ends OK."""
    import grpc

    from aion.api.v1 import tasks_pb2, tasks_pb2_grpc

    last: dict[str, Any] = {}
    with channel(target) as ch:
        stream = tasks_pb2_grpc.TaskServiceStub(ch).WatchTask(
            tasks_pb2.WatchTaskRequest(task_id=task_id), timeout=target.timeout, metadata=target.metadata()
        )
        try:
            for reply in stream:
                last = _show(ctx, reply.task, output)
        except grpc.RpcError as exc:
            raise translate_rpc_error(exc, target, "task watch") from exc
    if last.get("status") != "ok":
        raise typer.Exit(1)


@daemon_command(app, "cancel", timeout=10.0)
def cancel(
    ctx: typer.Context,
    target: Endpoint,
    task_id: TaskId,
    reason: Annotated[str, typer.Option("--reason", "-r", metavar="TEXT", help="Why.")] = "",
    output: Output = OutputFormat.TEXT,
) -> None:
    """Cancel a task that has not finished (role operator)."""
    from aion.api.v1 import tasks_pb2, tasks_pb2_grpc

    request = tasks_pb2.CancelTaskRequest(task_id=task_id, reason=reason)
    with channel(target) as ch:
        reply = call(target, tasks_pb2_grpc.TaskServiceStub(ch).CancelTask, request, "task cancel")
    _show(ctx, reply.task, output)
