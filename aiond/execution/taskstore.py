"""Tasks as the daemon holds them: a bounded in-memory store with idempotency keys and change
notification, and the conversion to the aion.v1 Task message.

The store keeps at most ``capacity`` tasks, and finished ones take at most ``max_bytes`` together; past
either, the oldest finished tasks are forgotten first (a running task is never dropped: admission
bounds how many can run or wait). An idempotency key maps
to its first task for as long as that task is kept.

A finished task is kept as its final message, serialized, in a tuple of plain values (see
:class:`Finished`), not as the graph of Python objects it was while it ran. The cyclic garbage collector
ignores such tuples, so the full collections of a daemon that keeps 100,000 finished tasks do not walk
millions of objects and pause the event loop; and the store takes a fraction of the memory.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import datetime as dt
import enum
from collections.abc import AsyncIterator
from typing import TypeAlias

from google.protobuf import timestamp_pb2

from aion.api.v1 import tasks_pb2
from aion.providers import Sampling
from aion.routing import Decision, Target
from aion.routing.wire import fill_decision, fill_target

DEFAULT_CAPACITY = 100_000
DEFAULT_MAX_BYTES = 256 * 1024 * 1024
"""What finished tasks may take together (their serialized messages, results included)."""


class Status(enum.Enum):
    QUEUED = tasks_pb2.TASK_STATUS_QUEUED
    RUNNING = tasks_pb2.TASK_STATUS_RUNNING
    OK = tasks_pb2.TASK_STATUS_OK
    ERROR = tasks_pb2.TASK_STATUS_ERROR
    TIMEOUT = tasks_pb2.TASK_STATUS_TIMEOUT
    CANCELED = tasks_pb2.TASK_STATUS_CANCELED

    @property
    def terminal(self) -> bool:
        return self in (Status.OK, Status.ERROR, Status.TIMEOUT, Status.CANCELED)


@dataclasses.dataclass(frozen=True, slots=True)
class TaskError:
    code: str
    message: str
    retryable: bool = False


class TokenStream:
    """The text of a streaming task's answer as the provider sends it, piece by piece, for every caller
    that reads it: each reader gets every piece once, in order, from the first, however late it starts.

    Every piece is kept until the stream itself is dropped, with its task's record (the store keeps a
    finished task as its final message only): no more than the answer, which is bounded
    (``aion.providers.base.MAX_RESPONSE_BYTES`` of the provider's events, each piece came in one of
    them), for no more tasks than can run at once."""

    def __init__(self) -> None:
        self._parts: list[str] = []
        self._wakeup: asyncio.Event | None = None
        """Set (and replaced) on each piece and at the close; only readers waiting for more wait on it."""
        self.started = False
        """Whether any text has arrived: from then on the task no longer falls back to another
        target (a caller has seen part of this one's answer)."""
        self.closed = False

    def push(self, text: str) -> None:
        self.started = True
        self._parts.append(text)
        self._wake()

    def close(self) -> None:
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()
            self._wakeup = None

    def __len__(self) -> int:
        """How many pieces have arrived so far."""
        return len(self._parts)

    def piece(self, index: int) -> str:
        """The piece at ``index`` (0 is the first), for a reader that counts what it has read."""
        return self._parts[index]

    async def grown(self, beyond: int) -> None:
        """Return once there are more than ``beyond`` pieces, or the stream is closed."""
        while len(self._parts) <= beyond and not self.closed:
            if self._wakeup is None:
                self._wakeup = asyncio.Event()
            await self._wakeup.wait()

    async def pieces(self) -> AsyncIterator[str]:
        """Each piece of text once, from the first, as it comes, until the task ends. Every call is a
        reader of its own."""
        read = 0
        while True:
            while read < len(self._parts):
                read += 1
                yield self._parts[read - 1]
            if self.closed:
                return
            await self.grown(read)


@dataclasses.dataclass
class Attempt:
    number: int
    target: Target
    outcome: Status
    started_at: dt.datetime
    latency_ms: int = 0
    error: TaskError | None = None
    step: str = "complete"
    """"prepare" for a hybrid route's local step, else "complete"."""


@dataclasses.dataclass
class TaskRecord:
    task_id: str
    intent: str
    decision: Decision
    policy_version: int
    idempotency_key: str = ""
    labels: dict[str, str] = dataclasses.field(default_factory=dict)
    status: Status = Status.QUEUED
    created_at: dt.datetime = dataclasses.field(default_factory=lambda: dt.datetime.now(dt.UTC))
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    result: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_nano: int = 0
    error: TaskError | None = None
    first_error: TaskError | None = None
    """When more than one attempt failed: the first failure (``error`` is the last)."""
    attempts: list[Attempt] = dataclasses.field(default_factory=list)
    version: int = 0
    """Bumped on every change, so watchers see each one."""
    runner: asyncio.Task[None] | None = None
    wakeup: asyncio.Event | None = None
    """Set (and replaced) on each change; only this task's watchers wait on it."""
    final: bytes | None = None
    """The serialized message, once the task has finished (made once, for the store)."""
    enders: list[asyncio.Future[None]] | None = None
    """One future for each caller waiting for the end (:meth:`TaskStore.until_finished`)."""
    conversation: tuple[dict[str, str], ...] = ()
    """The chat the caller sent (OpenAI-compatible callers), sent on to models as it is; empty when
    the input is one text."""
    max_tokens: int | None = None
    """The caller's limit on the answer's length (never above the model's own)."""
    sampling: Sampling | None = None
    stream: TokenStream | None = None
    """For a caller that reads the answer as it is made."""
    finish_reason: str | None = None
    """Why the model that answered stopped, as its provider says it."""

    def message(self, into: tasks_pb2.Task | None = None) -> tasks_pb2.Task:
        """The task as the aion.v1 message: ``into`` (filled in place: an empty Task that is part of
        a response, which saves a copy) or a new one."""
        task = tasks_pb2.Task() if into is None else into
        if self.final is not None:
            task.MergeFromString(self.final)
            return task
        task.task_id = self.task_id
        task.intent = self.intent
        task.status = self.status.value
        fill_decision(task.decision, self.decision, self.policy_version)
        task.idempotency_key = self.idempotency_key
        if self.labels:
            task.labels.update(self.labels)
        _stamp(task.created_at, self.created_at)
        for attempt in self.attempts:
            _attempt(task.attempts.add(), attempt)
        if self.started_at is not None:
            _stamp(task.started_at, self.started_at)
        if self.finished_at is not None:
            _stamp(task.finished_at, self.finished_at)
            elapsed = (self.finished_at - (self.started_at or self.created_at)).total_seconds()
            usage = task.usage
            usage.latency_ms = max(0, round(elapsed * 1000))
            usage.input_tokens = self.input_tokens
            usage.output_tokens = self.output_tokens
            usage.cost.nano_usd = self.cost_nano
        if self.result is not None:
            task.result.text = self.result
            task.result.content_type = "text/plain"
        if self.error is not None:
            _error(task.error, self.error)
        if self.first_error is not None:
            _error(task.first_error, self.first_error)
        return task


def _stamp(stamp: timestamp_pb2.Timestamp, when: dt.datetime) -> None:
    """Set ``stamp`` to ``when`` (aware). Computed here rather than with ``FromDatetime``, which is
    several times slower and runs a few times for every task answered."""
    stamp.seconds = int(when.timestamp())
    stamp.nanos = when.microsecond * 1000


def _error(message: tasks_pb2.TaskError, error: TaskError) -> None:
    message.code = error.code
    message.message = error.message
    message.retryable = error.retryable


def _attempt(message: tasks_pb2.Attempt, attempt: Attempt) -> None:
    message.number = attempt.number
    fill_target(message.target, attempt.target)
    message.outcome = attempt.outcome.value
    message.latency_ms = attempt.latency_ms
    _stamp(message.started_at, attempt.started_at)
    if attempt.error is not None:
        _error(message.error, attempt.error)


class Finished:
    """A finished task as the store hands it out: its final message, parsed on demand."""

    __slots__ = ("data", "idempotency_key", "status", "task_id")
    runner: asyncio.Task[None] | None = None
    version = 1

    def __init__(self, task_id: str, status: Status, idempotency_key: str, data: bytes) -> None:
        self.task_id = task_id
        self.status = status
        self.idempotency_key = idempotency_key
        self.data = data

    def message(self, into: tasks_pb2.Task | None = None) -> tasks_pb2.Task:
        task = tasks_pb2.Task() if into is None else into
        task.MergeFromString(self.data)
        return task


Stored: TypeAlias = "TaskRecord | Finished"
_Kept: TypeAlias = "TaskRecord | tuple[int, str, bytes]"
"""A running task, or a finished one as (status, idempotency key, serialized message)."""


class TaskStore:
    def __init__(self, capacity: int = DEFAULT_CAPACITY, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self._capacity = capacity
        self._max_bytes = max_bytes
        self._bytes = 0
        self._tasks: collections.OrderedDict[str, _Kept] = collections.OrderedDict()
        self._keys: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self._tasks)

    def running(self) -> list[TaskRecord]:
        """The tasks not finished yet."""
        return [t for t in self._tasks.values() if isinstance(t, TaskRecord)]

    def get(self, task_id: str) -> Stored | None:
        kept = self._tasks.get(task_id)
        if kept is None or isinstance(kept, TaskRecord):
            return kept
        status, key, data = kept
        return Finished(task_id, Status(status), key, data)

    def by_key(self, key: str) -> Stored | None:
        task_id = self._keys.get(key)
        return self.get(task_id) if task_id else None

    def add(self, task: TaskRecord) -> None:
        while len(self._tasks) >= self._capacity and self._forget_one():
            pass
        self._tasks[task.task_id] = task
        if task.idempotency_key:
            self._keys[task.idempotency_key] = task.task_id

    def _forget_one(self) -> bool:
        for task_id, kept in self._tasks.items():
            if isinstance(kept, tuple):
                del self._tasks[task_id]
                self._bytes -= len(kept[2])
                key = kept[1]
                if key and self._keys.get(key) == task_id:
                    del self._keys[key]
                return True
        return False

    def changed(self, task: TaskRecord) -> None:
        """Record a change and wake this task's watchers (and only them). A task that has finished
        is kept from now on as its final message (see the module's docstring); whoever holds the
        record still sees it whole."""
        task.version += 1
        if task.status.terminal:
            task.final = None
            task.final = task.message().SerializeToString()
            kept = self._tasks.get(task.task_id)
            if kept is not None:
                if isinstance(kept, tuple):
                    self._bytes -= len(kept[2])
                self._tasks[task.task_id] = (task.status.value, task.idempotency_key, task.final)
                self._bytes += len(task.final)
                while self._bytes > self._max_bytes and self._forget_one():
                    pass
            enders, task.enders = task.enders, None
            for ender in enders or ():
                if not ender.done():
                    ender.set_result(None)
        if task.wakeup is not None:
            task.wakeup.set()
            task.wakeup = None

    async def until_finished(self, task: Stored) -> None:
        """Return when the task has finished. The caller is woken once, at the end, and straight from
        the change that ends the task (a watch wakes for every change; waiting for the runner to end
        takes two more turns of the event loop). Canceling the caller never touches the task."""
        if isinstance(task, Finished) or task.status.terminal:
            return
        ender: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        enders = task.enders
        if enders is None:
            enders = task.enders = []
        enders.append(ender)
        try:
            await ender  # canceled, this cancels only the caller's own future
        finally:
            if ender in enders:
                enders.remove(ender)

    async def watch(self, task: Stored) -> AsyncIterator[Stored]:
        """The task now, then after each change, until it is terminal."""
        if isinstance(task, Finished):
            yield task
            return
        seen = -1
        while True:
            if task.version != seen:
                seen = task.version
                yield task
                if task.status.terminal:
                    return
            while task.version == seen:
                if task.wakeup is None:
                    task.wakeup = asyncio.Event()
                await task.wakeup.wait()


__all__ = ["Attempt", "Finished", "Status", "Stored", "TaskError", "TaskRecord", "TaskStore", "TokenStream"]
