"""``aionctl task submit|get|watch|cancel``: run tasks on aiond and follow them.

``submit`` prints the task once it is admitted, or, with ``--wait``, once it has finished (bounded by
``--timeout``). With ``--stream`` (which implies ``--wait``) it prints the answer's text on stdout as the
model writes it, then a newline, and ends as ``--wait`` does; a task that does not end OK adds its error
on stderr. It submits the task with ``stream`` and follows it with WatchTask; a task still running when
``--timeout`` passes is canceled. With ``-o json|yaml`` only the final document is printed, as with
``--wait``. Exit codes: 0 admitted (or finished OK with ``--wait``); 1 finished with ERROR, TIMEOUT
or CANCELED (``--wait``), or refused by the hard rules or the budget; 3 the input cannot be read or
is larger than the daemon's message cap (``--max-message-bytes``); 5 the route is saturated (the
message says when to retry) or aiond is unreachable; 4 no token or too weak a role.

The text is rendered from the typed Task message; ``-o json|yaml`` prints the task's document
(schema ``output/task``: numbers as numbers, enums as the words the text shows). ``watch`` prints one
document per change: JSON Lines with ``-o json``, a ``---`` before each YAML document. In text, ``watch``
also prints the answer of a task submitted with ``stream`` as ``submit --stream`` does (the same code):
the states until the first piece, then the text as it comes and a newline, then the final state
without its result (the text above is it); with ``-o json|yaml`` the documents alone, as with
``submit --stream``.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from typing import TYPE_CHECKING, Annotated, Any

import typer

from aion.errors import DaemonUnavailable, FindingsError, InputError, UsageError
from aionctl import completing
from aionctl.client import Endpoint, call, channel, rpc_status, translate_rpc_error
from aionctl.connect import (
    DEFAULT_MAX_MESSAGE_BYTES,
    MaxMessageBytes,
    check_request_size,
    daemon_command,
    oversized,
)
from aionctl.options import Output, budget_nano, command_app, global_options
from aionctl.output import OutputFormat, document, emit, emit_streamed

if TYPE_CHECKING:
    from collections.abc import Callable

    import grpc

    from aion.api.v1 import tasks_pb2

app = command_app()
app.info.help = "Submit tasks to aiond, and read, watch or cancel them."
app.info.no_args_is_help = True

TaskId = Annotated[str, typer.Argument(metavar="TASK_ID", help="The task's id, as submit printed it.")]


def render_text(task: tasks_pb2.Task, *, result: bool = True) -> str:
    """The task for a person, from the typed message: what ran where, what it cost, how it ended (and
    its result, unless ``result`` is false: ``watch`` has just printed it as it streamed)."""
    from aion.api.v1 import common_pb2, tasks_pb2
    from aion.documents import enum_word

    lines = [f"task:    {task.task_id}", f"status:  {_status(task.status)}"]
    if task.HasField("decision"):
        route = enum_word(common_pb2.Route.DESCRIPTOR, task.decision.route) or "none"
        lines.append(f"route:   {route} -> {_key(task.decision.target)}")
    if task.HasField("usage"):
        usage = task.usage
        lines.append(
            f"usage:   {usage.latency_ms} ms, {usage.input_tokens} in / {usage.output_tokens} out tokens, "
            f"${usage.cost.nano_usd / 1e9:.6f}"
        )
    for attempt in task.attempts:
        outcome = enum_word(tasks_pb2.TaskStatus.DESCRIPTOR, attempt.outcome) or ""
        line = f"  attempt {attempt.number}: {_key(attempt.target)} {outcome} {attempt.error.code}"
        lines.append(line.rstrip())
    if task.HasField("first_error"):
        lines.append(f"first error: {task.first_error.code}: {task.first_error.message}")
    if task.HasField("error"):
        lines.append(f"error:   {task.error.code}: {task.error.message}")
    if result and task.HasField("result"):
        lines += ["result:", _output_text(task.result)]
    return "\n".join(lines) + "\n"


def _status(status: int) -> str:
    from aion.api.v1 import tasks_pb2
    from aion.documents import enum_word

    return enum_word(tasks_pb2.TaskStatus.DESCRIPTOR, status) or "unknown"


def _key(target: tasks_pb2.Target) -> str:
    return f"{target.provider}:{target.name}" if target.provider else target.name


def _output_text(output: tasks_pb2.TaskOutput) -> str:
    """A task's result as text: the text itself; JSON as JSON; data by its size (it is not text)."""
    import json

    from google.protobuf import json_format

    match output.WhichOneof("content"):
        case "text":
            return output.text
        case "json":
            return json.dumps(json_format.MessageToDict(output.json), indent=2, ensure_ascii=False)
        case "data":
            kind = f" of {output.content_type}" if output.content_type else ""
            return f"({len(output.data)} bytes{kind}; -o json carries them, base64)"
        case _:
            return ""


def _show(
    ctx: typer.Context,
    task: tasks_pb2.Task,
    output: OutputFormat,
    deduplicated: bool | None = None,
    *,
    result: bool = True,
) -> None:
    """Print one task: text from the typed message, or its document (``submit`` adds whether the
    idempotency key matched an earlier task; ``result``: as :func:`render_text` takes it)."""
    if global_options(ctx).quiet and output is OutputFormat.TEXT:
        return
    body: Any = task
    if deduplicated is not None:
        from aion.documents import to_dict

        body = {**to_dict(task), "deduplicated": deduplicated}
    emit(document("Task", body), output, text=lambda: render_text(task, result=result))


def _show_change(ctx: typer.Context, task: tasks_pb2.Task, output: OutputFormat, streamed: bool) -> None:
    """One state of a watched task (``streamed``: after its text, which is its result). A watch
    prints a stream of documents, so JSON is one document per line (JSON Lines) and YAML one document
    after each ``---``, as ``events tail`` prints them."""
    if output is OutputFormat.TEXT:
        _show(ctx, task, output, result=not streamed)
        return
    emit_streamed(document("Task", task), output, text=lambda: "")


@daemon_command(app, "submit", timeout=30.0)
def submit(
    ctx: typer.Context,
    target: Endpoint,
    intent: Annotated[
        str, typer.Argument(help="Intent name, as in intents.yml.", autocompletion=completing.intent_names)
    ],
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
    stream: Annotated[
        bool,
        typer.Option(
            "--stream",
            help="Print the answer's text as the model writes it, then exit as --wait does (implies "
            "--wait; with -o json|yaml only the final document is printed).",
        ),
    ] = False,
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
        wait=wait and not stream,
        stream=stream,
    )
    check_request_size(request, max_message_bytes, "task submit")
    started = time.monotonic()
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
        if stream:
            _streamed(ctx, ch, target, reply, output, deadline=started + target.timeout)
            return
    _show(ctx, reply.task, output, deduplicated=reply.deduplicated)
    if wait and reply.task.status != tasks_pb2.TASK_STATUS_OK:
        raise typer.Exit(1)


def _streamed(
    ctx: typer.Context,
    ch: grpc.Channel,
    target: Endpoint,
    reply: tasks_pb2.SubmitTaskResponse,
    output: OutputFormat,
    *,
    deadline: float,
) -> None:
    """``submit --stream`` once the task is admitted: its text as it comes (or its final document), then
    the exit ``--wait`` gives; in text, a task that did not end OK is an error line on stderr."""
    from aion.api.v1 import tasks_pb2

    text = _Text() if output is OutputFormat.TEXT else None
    task = _follow(ch, target, reply.task, "task submit", text=text, deadline=deadline, cancel_late=True)
    ok = task.status == tasks_pb2.TASK_STATUS_OK
    if text is not None and not text.written and ok and task.HasField("result"):
        # Nothing streamed: a module answered, or the task ended before the watch began.
        sys.stdout.write(_output_text(task.result) + "\n")
        sys.stdout.flush()
    if output is not OutputFormat.TEXT:
        _show(ctx, task, output, deduplicated=reply.deduplicated)
    if task.status != tasks_pb2.TASK_STATUS_OK:
        if output is OutputFormat.TEXT:
            raise FindingsError(_ending(task))
        raise typer.Exit(1)


class _Text:
    """A streamed answer on stdout, as ``submit --stream`` and ``watch`` print it: each piece written
    as it comes, a newline after the last."""

    def __init__(self) -> None:
        self.written = False
        self._open = False

    def piece(self, piece: str) -> None:
        if piece:
            sys.stdout.write(piece)
            sys.stdout.flush()
            self.written = self._open = True

    def end(self) -> None:
        if self._open:
            sys.stdout.write("\n")
            sys.stdout.flush()
            self._open = False


def _follow(
    ch: grpc.Channel,
    target: Endpoint,
    task: tasks_pb2.Task,
    command: str,
    *,
    text: _Text | None,
    deadline: float,
    cancel_late: bool,
    show: Callable[[tasks_pb2.Task, bool], None] | None = None,
) -> tasks_pb2.Task:
    """Watch ``task`` until it ends and return its final state (``task`` itself when the watch sends
    none). The answer's pieces go to ``text`` as they come, ended by a newline. ``show`` (``watch``) is
    given each state and whether the text came before it: once pieces have been printed, the states
    that follow are held, and the last is given after the text has ended. At ``deadline``
    (``--timeout``) a task still running is canceled with ``cancel_late`` (``submit``: no task outlives
    the command that waits for it, as ``--wait`` bounds it); else the timeout is the command's error."""
    import grpc

    from aion.api.v1 import tasks_pb2, tasks_pb2_grpc

    stub = tasks_pb2_grpc.TaskServiceStub(ch)
    last = task
    watch = stub.WatchTask(
        tasks_pb2.WatchTaskRequest(task_id=task.task_id),
        timeout=max(0.001, deadline - time.monotonic()),
        metadata=target.metadata(),
    )
    streamed = False
    try:
        try:
            for reply in watch:
                if reply.WhichOneof("change") == "delta":
                    if text is not None:
                        text.piece(reply.delta)
                        streamed = text.written
                elif reply.HasField("task"):
                    last = reply.task
                    if show is not None and not streamed:
                        show(last, False)
        except grpc.RpcError as exc:
            code, _ = rpc_status(exc)
            if not cancel_late or code is not grpc.StatusCode.DEADLINE_EXCEEDED:
                raise translate_rpc_error(exc, target, command) from exc
            # --timeout passed: the task ends here too.
            request = tasks_pb2.CancelTaskRequest(task_id=task.task_id, reason="aionctl: --timeout passed")
            last = call(dataclasses.replace(target, timeout=5.0), stub.CancelTask, request, command).task
    finally:
        if text is not None:
            text.end()
    if show is not None and streamed:
        show(last, True)
    return last


def _ending(task: tasks_pb2.Task) -> str:
    """How a task that did not end OK ended, for the error line."""
    why = f": {task.error.code}: {task.error.message}" if task.HasField("error") else ""
    return f"task {task.task_id} ended {_status(task.status)}{why}"


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
    """Print a task's state, then every change, until it finishes (role viewer); in text, a streamed
    answer as it comes, as submit --stream prints it. Exit 0 when it ends OK."""
    from aion.api.v1 import tasks_pb2

    text = output is OutputFormat.TEXT
    with channel(target) as ch:
        last = _follow(
            ch,
            target,
            tasks_pb2.Task(task_id=task_id),
            "task watch",
            text=_Text() if text else None,
            deadline=time.monotonic() + target.timeout,
            cancel_late=False,
            show=lambda task, streamed: _show_change(ctx, task, output, streamed),
        )
    if last.status != tasks_pb2.TASK_STATUS_OK:
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
