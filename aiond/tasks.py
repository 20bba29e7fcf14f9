"""Tasks as the daemon holds them: a bounded in-memory store with idempotency keys and change
notification, and the conversion to the aion.v1 Task message.

The store keeps at most ``capacity`` tasks; when full, the oldest finished task is forgotten first
(a running task is never dropped: admission bounds how many can run or wait). An idempotency key maps
to its first task for as long as that task is kept.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import datetime as dt
import enum
from collections.abc import AsyncIterator

from google.protobuf import timestamp_pb2

from aion.api.v1 import common_pb2, tasks_pb2
from aion.routing import Decision, Target
from aion.routing.wire import decision_message, target_message

DEFAULT_CAPACITY = 100_000


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
    attempts: list[Attempt] = dataclasses.field(default_factory=list)
    version: int = 0
    """Bumped on every change, so watchers see each one."""
    runner: asyncio.Task[None] | None = None
    wakeup: asyncio.Event | None = None
    """Set (and replaced) on each change; only this task's watchers wait on it."""

    def message(self) -> tasks_pb2.Task:
        task = tasks_pb2.Task(
            task_id=self.task_id,
            intent=self.intent,
            status=self.status.value,
            decision=decision_message(self.decision, self.policy_version),
            idempotency_key=self.idempotency_key,
            labels=self.labels,
            created_at=_stamp(self.created_at),
            attempts=[_attempt(a) for a in self.attempts],
        )
        if self.started_at is not None:
            task.started_at.CopyFrom(_stamp(self.started_at))
        if self.finished_at is not None:
            task.finished_at.CopyFrom(_stamp(self.finished_at))
            elapsed = (self.finished_at - (self.started_at or self.created_at)).total_seconds()
            task.usage.CopyFrom(
                tasks_pb2.Usage(
                    latency_ms=max(0, round(elapsed * 1000)),
                    input_tokens=self.input_tokens,
                    output_tokens=self.output_tokens,
                    cost=common_pb2.UsdAmount(nano_usd=self.cost_nano),
                )
            )
        if self.result is not None:
            task.result.CopyFrom(tasks_pb2.TaskOutput(text=self.result, content_type="text/plain"))
        if self.error is not None:
            task.error.CopyFrom(_error(self.error))
        return task


def _stamp(when: dt.datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(when)
    return stamp


def _error(error: TaskError) -> tasks_pb2.TaskError:
    return tasks_pb2.TaskError(code=error.code, message=error.message, retryable=error.retryable)


def _attempt(attempt: Attempt) -> tasks_pb2.Attempt:
    message = tasks_pb2.Attempt(
        number=attempt.number,
        target=target_message(attempt.target),
        outcome=attempt.outcome.value,
        latency_ms=attempt.latency_ms,
        started_at=_stamp(attempt.started_at),
    )
    if attempt.error is not None:
        message.error.CopyFrom(_error(attempt.error))
    return message


class TaskStore:
    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self._capacity = capacity
        self._tasks: collections.OrderedDict[str, TaskRecord] = collections.OrderedDict()
        self._keys: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self._tasks)

    def records(self) -> list[TaskRecord]:
        return list(self._tasks.values())

    def get(self, task_id: str) -> TaskRecord | None:
        return self._tasks.get(task_id)

    def by_key(self, key: str) -> TaskRecord | None:
        task_id = self._keys.get(key)
        return self._tasks.get(task_id) if task_id else None

    def add(self, task: TaskRecord) -> None:
        while len(self._tasks) >= self._capacity and self._forget_one():
            pass
        self._tasks[task.task_id] = task
        if task.idempotency_key:
            self._keys[task.idempotency_key] = task.task_id

    def _forget_one(self) -> bool:
        for task_id, task in self._tasks.items():
            if task.status.terminal:
                del self._tasks[task_id]
                if task.idempotency_key and self._keys.get(task.idempotency_key) == task_id:
                    del self._keys[task.idempotency_key]
                return True
        return False

    async def changed(self, task: TaskRecord) -> None:
        """Record a change and wake this task's watchers (and only them)."""
        task.version += 1
        if task.wakeup is not None:
            task.wakeup.set()
            task.wakeup = None

    async def watch(self, task: TaskRecord) -> AsyncIterator[TaskRecord]:
        """The task now, then after each change, until it is terminal."""
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


__all__ = ["Attempt", "Status", "TaskError", "TaskRecord", "TaskStore"]
