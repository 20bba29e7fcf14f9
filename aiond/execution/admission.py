"""Admission and backpressure: at most ``limits.concurrency[route]`` tasks run on a route at once, at
most ``limits.queue_depth[route]`` more wait for a slot, and anything beyond is refused at once with a
retry-after hint. Nothing grows without bound.

The hint is how long the queue ahead should take to drain: the queued tasks, divided by the route's
concurrency, times the route's recent median task time (a moving average), at least 100 ms.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
from collections.abc import Mapping

from aion.config.model import Route
from aion.errors import Saturated


@dataclasses.dataclass
class _Lane:
    limit: int
    depth: int
    running: int = 0
    waiters: collections.deque[asyncio.Future[None]] = dataclasses.field(default_factory=collections.deque)
    seconds: float = 0.5
    """Moving average of task time on this route."""


class Admission:
    def __init__(self, concurrency: Mapping[Route, int], queue_depth: Mapping[Route, int]) -> None:
        self._lanes = {r: _Lane(max(1, concurrency[r]), max(0, queue_depth[r])) for r in concurrency}

    def reconfigure(self, concurrency: Mapping[Route, int], queue_depth: Mapping[Route, int]) -> None:
        for route, lane in self._lanes.items():
            lane.limit, lane.depth = max(1, concurrency[route]), max(0, queue_depth[route])
            self._wake(lane)

    def depth(self, route: Route) -> tuple[int, int]:
        """(running, waiting) on ``route``."""
        lane = self._lanes[route]
        return lane.running, len(lane.waiters)

    def admit(self, route: Route) -> Ticket:
        """Take a running slot or a place in the queue on ``route`` now, or raise Saturated. Synchronous,
        so a task is refused or counted in the same step as the checks before it."""
        lane = self._lanes[route]
        if lane.running < lane.limit and not lane.waiters:
            lane.running += 1
            return Ticket(self, lane, None)
        if len(lane.waiters) >= lane.depth:
            wait = self._hint(lane)
            raise Saturated(
                f"route {route} is saturated (all slots and queue places taken); "
                f"retry after {round(wait * 1000)} ms",
                retry_after=wait,
                hint="retry later, or ask for another route",
            )
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        lane.waiters.append(waiter)
        return Ticket(self, lane, waiter)

    def _wake(self, lane: _Lane) -> None:
        while lane.waiters and lane.running < lane.limit:
            waiter = lane.waiters.popleft()
            if not waiter.done():
                lane.running += 1  # handed over: counted before the waiter runs
                waiter.set_result(None)

    @staticmethod
    def _hint(lane: _Lane) -> float:
        return max(0.1, (len(lane.waiters) + 1) / lane.limit * lane.seconds)


class Ticket:
    """A task's place on a route: ``async with ticket:`` waits for a running slot (when queued) and
    gives it back at the end; :meth:`release` gives back a ticket that is never used."""

    def __init__(self, admission: Admission, lane: _Lane, waiter: asyncio.Future[None] | None) -> None:
        self._admission = admission
        self._lane = lane
        self._waiter = waiter
        self._started = 0.0
        self._held = waiter is None

    @property
    def waiting(self) -> bool:
        """True while the ticket holds a queue place rather than a running slot."""
        return self._waiter is not None and not self._held

    async def __aenter__(self) -> None:
        if self._waiter is not None:
            try:
                await self._waiter
            except BaseException:
                self.release()
                raise
            self._waiter = None
            self._held = True
        self._started = asyncio.get_running_loop().time()

    async def __aexit__(self, *exc: object) -> None:
        lane = self._lane
        lane.seconds = 0.9 * lane.seconds + 0.1 * (asyncio.get_running_loop().time() - self._started)
        self.release()

    def release(self) -> None:
        """Give back whatever the ticket holds: its running slot, or its place in the queue."""
        lane = self._lane
        waiter, self._waiter = self._waiter, None
        if waiter is not None:
            if waiter in lane.waiters:
                lane.waiters.remove(waiter)
                waiter.cancel()
                return
            if waiter.done() and not waiter.cancelled():
                self._held = True  # the slot was handed over just as the task gave up
        if self._held:
            self._held = False
            lane.running -= 1
            self._admission._wake(lane)


__all__ = ["Admission", "Ticket"]
