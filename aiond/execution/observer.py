"""What the executor reports as tasks come and go, as one typed interface.

The executor knows nothing of metrics or event logs: it tells an :class:`ExecutionObserver` what
happened, one method per kind of news, and the daemon's observer turns that into metrics and task
events (:mod:`aiond.serving.reporting`). A method that does not exist cannot be called by mistake,
and a new kind of news is a new method that every observer must implement.
"""

from __future__ import annotations

from typing import Protocol

from aion.routing import Target
from aiond.execution.taskstore import TaskRecord


class ExecutionObserver(Protocol):
    """Told by the executor, synchronously, on the event loop. Implementations must be cheap: they
    run on the task path."""

    def decided(self, seconds: float) -> None:
        """The router took ``seconds`` to decide a task's route (admitted or refused)."""

    def refused(self, code: str) -> None:
        """A task was refused at admission, with the reason code."""

    def deduplicated(self) -> None:
        """A submission named an idempotency key that is known: its first task is returned."""

    def admitted(self, task: TaskRecord) -> None:
        """A task was admitted with its decision (it runs or waits for a slot)."""

    def changed(self, task: TaskRecord, state: str) -> None:
        """A task entered ``state``: admitted, queued, running, or its final status in lower case."""

    def retried(self, target: Target) -> None:
        """A call to ``target`` is being tried again."""

    def retry_denied(self, target: Target) -> None:
        """The retry budget refused another call to ``target``."""

    def fell_back(self, target: Target) -> None:
        """A task moved on to ``target``, the next of its chain."""

    def spent(self, nano_usd: int) -> None:
        """A finished task's cost was settled."""

    def module_called(self, name: str, seconds: float, failure: str | None) -> None:
        """A call of module ``name`` took ``seconds``; ``failure`` is its failure kind, None when it
        answered."""

    def finished(self, task: TaskRecord) -> None:
        """A task reached a terminal state."""


class Unobserved:
    """An observer that ignores everything (tests and tools that run an executor alone)."""

    def decided(self, seconds: float) -> None:
        pass

    def refused(self, code: str) -> None:
        pass

    def deduplicated(self) -> None:
        pass

    def admitted(self, task: TaskRecord) -> None:
        pass

    def changed(self, task: TaskRecord, state: str) -> None:
        pass

    def retried(self, target: Target) -> None:
        pass

    def retry_denied(self, target: Target) -> None:
        pass

    def fell_back(self, target: Target) -> None:
        pass

    def spent(self, nano_usd: int) -> None:
        pass

    def module_called(self, name: str, seconds: float, failure: str | None) -> None:
        pass

    def finished(self, task: TaskRecord) -> None:
        pass


__all__ = ["ExecutionObserver", "Unobserved"]
