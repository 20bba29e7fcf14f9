"""TaskService: submit, read, watch and cancel tasks (the work is done by :mod:`aiond.execution.executor`).

Errors reach the caller through the error table (:mod:`aion.errors`): a task the hard rules or the
budget refuse is FAILED_PRECONDITION ("CODE: message"); a saturated route is RESOURCE_EXHAUSTED with
the suggested wait in the ``retry-after-ms`` trailer (and in the message); an unknown task is
NOT_FOUND; a malformed request INVALID_ARGUMENT.

A task submitted with ``stream`` keeps its answer's text as the model writes it
(:class:`aiond.execution.taskstore.TokenStream`); WatchTask sends each piece in a message of its own,
between the task's states: the pieces that have arrived go before the next state, so the terminal state
(which the executor records after the stream is closed) comes after the last piece.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf import json_format

from aion.api.v1 import common_pb2, tasks_pb2, tasks_pb2_grpc
from aion.config.model import Route
from aion.errors import NotFound, UsageError
from aion.inputs import quoted
from aiond.execution.executor import Executor, Submission
from aiond.execution.taskstore import Stored, TaskRecord, TaskStore, TokenStream

SERVICE_NAME = tasks_pb2.DESCRIPTOR.services_by_name["TaskService"].full_name
MAX_LABELS = 32
MAX_KEY = 256
_ROUTES = {
    common_pb2.ROUTE_LOCAL: Route.LOCAL,
    common_pb2.ROUTE_API: Route.API,
    common_pb2.ROUTE_HYBRID: Route.HYBRID,
}


def input_text(task_input: tasks_pb2.TaskInput) -> str:
    """The task's input as the text sent to a model. Raises UsageError for binary data."""
    which = task_input.WhichOneof("content")
    if which == "text":
        return task_input.text
    if which == "json":
        return json.dumps(json_format.MessageToDict(task_input.json), ensure_ascii=False, sort_keys=True)
    if which == "data":
        try:
            return bytes(task_input.data).decode("utf-8")
        except UnicodeDecodeError:
            raise UsageError("binary input needs a module to run it; send text or JSON to a model") from None
    return ""


class TaskServicer(tasks_pb2_grpc.TaskServiceServicer):
    def __init__(self, executor: Executor) -> None:
        self._executor = executor

    async def SubmitTask(
        self, request: tasks_pb2.SubmitTaskRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> tasks_pb2.SubmitTaskResponse:
        hints = request.hints
        if not request.intent:
            raise UsageError("intent is required")
        if len(request.idempotency_key) > MAX_KEY or len(request.labels) > MAX_LABELS:
            raise UsageError(f"at most {MAX_KEY} characters of idempotency key and {MAX_LABELS} labels")
        if hints.route_override not in _ROUTES and hints.route_override != common_pb2.ROUTE_UNSPECIFIED:
            raise UsageError(f"route_override {hints.route_override} is not a route")
        text = input_text(request.input)
        remaining = context.time_remaining()
        submission = Submission(
            intent=request.intent,
            text=text,
            budget_nano=hints.budget.nano_usd if hints.HasField("budget") else None,
            latency_target_ms=hints.latency_target_ms if hints.HasField("latency_target_ms") else None,
            route_override=_ROUTES.get(hints.route_override),
            idempotency_key=request.idempotency_key,
            labels=dict(request.labels),
            deadline=max(0.0, remaining - 0.05) if request.wait and remaining is not None else None,
            stream=request.stream,
        )
        task, deduplicated = self._executor.submit(submission)  # raises Refused or Saturated
        if request.wait:
            await self._executor.store.until_finished(task)
        response = tasks_pb2.SubmitTaskResponse(deduplicated=deduplicated)
        task.message(into=response.task)
        return response

    async def GetTask(
        self, request: tasks_pb2.GetTaskRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> tasks_pb2.GetTaskResponse:
        return tasks_pb2.GetTaskResponse(task=(await self._find(request.task_id, context)).message())

    async def WatchTask(
        self, request: tasks_pb2.WatchTaskRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[tasks_pb2.WatchTaskResponse]:
        task = await self._find(request.task_id, context)
        store = self._executor.store
        if isinstance(task, TaskRecord) and task.stream is not None:
            async for change in _with_pieces(store, task, task.stream):
                yield change
            return
        async for state in store.watch(task):
            yield tasks_pb2.WatchTaskResponse(task=state.message())

    async def CancelTask(
        self, request: tasks_pb2.CancelTaskRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> tasks_pb2.CancelTaskResponse:
        task = await self._find(request.task_id, context)
        with contextlib.suppress(asyncio.CancelledError):
            await self._executor.cancel(task, request.reason)
        return tasks_pb2.CancelTaskResponse(task=task.message())

    async def _find(self, task_id: str, context: grpc.aio.ServicerContext[Any, Any]) -> Stored:
        task = self._executor.store.get(task_id)
        if task is None:
            raise NotFound(f"no task {quoted(task_id)} (finished tasks are kept for a while)")
        return task


async def _with_pieces(
    store: TaskStore, task: TaskRecord, stream: TokenStream
) -> AsyncIterator[tasks_pb2.WatchTaskResponse]:
    """The task's states, as :meth:`TaskStore.watch` gives them, with its answer's pieces between them:
    the current state first, then every piece from the first; before each later state, the pieces
    that arrived before it. Ends after the terminal state."""
    seen = task.version
    state, ended = _state(task)
    yield state
    if ended:
        return
    states = store.watch(task)
    # None once the watch has ended: it ends when it finds the task terminal, which may be after it
    # last yielded it (while the pieces were being sent), so its terminal state is sent from here.
    changed: asyncio.Future[Stored | None] = asyncio.ensure_future(anext(states, None))
    grown: asyncio.Future[None] | None = None
    read = 0
    try:
        while True:
            while read < len(stream):  # the pieces that arrive while these are sent go too
                read += 1
                yield tasks_pb2.WatchTaskResponse(delta=stream.piece(read - 1))
            if changed.done():
                over = changed.result() is None  # else the task, which is sent as it is now
                if task.version != seen:
                    seen = task.version
                    state, ended = _state(task)
                    yield state
                    if ended:
                        return
                if over:  # pragma: no cover - the watch ends only with the task, sent just above
                    return
                changed = asyncio.ensure_future(anext(states, None))
                continue
            waits: set[asyncio.Future[Any]] = {changed}
            if not stream.closed:  # closed, no piece comes any more: only the end is left to wait for
                if grown is None or grown.done():
                    grown = asyncio.ensure_future(stream.grown(read))
                waits.add(grown)
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        changed.cancel()
        if grown is not None:
            grown.cancel()


def _state(task: TaskRecord) -> tuple[tasks_pb2.WatchTaskResponse, bool]:
    """The task's state as a message, and whether it is the last (the task is terminal)."""
    return tasks_pb2.WatchTaskResponse(task=task.message()), task.status.terminal


def add_to_server(server: grpc.aio.Server, executor: Executor) -> str:
    tasks_pb2_grpc.add_TaskServiceServicer_to_server(TaskServicer(executor), server)
    return SERVICE_NAME
