"""Admission and backpressure: at most ``limits.concurrency[route]`` tasks run on a route at once, at
most ``limits.queue_depth[route]`` more wait for a slot, and anything beyond is refused at once with a
retry-after hint. Nothing grows without bound.

The hint is how long the queue ahead should take to drain: the queued tasks, divided by the route's
concurrency, times the route's recent median task time (a moving average), at least 100 ms.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Mapping

from aion.config.model import Route


@dataclasses.dataclass
class _Lane:
    limit: int
    depth: int
    running: int = 0
    waiters: collections.deque[asyncio.Future[None]] = dataclasses.field(default_factory=collections.deque)
    seconds: float = 0.5
    """Moving average of task time on this route."""


class Saturated(Exception):
    """The route's queue is full: refuse now, and suggest when to retry."""

    def __init__(self, route: Route, retry_after: float) -> None:
        super().__init__(f"route {route} is saturated")
        self.route = route
        self.retry_after = retry_after


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

    def check(self, route: Route) -> None:
        """Raise Saturated when a new task on ``route`` would be refused (before anything is reserved)."""
        lane = self._lanes[route]
        if lane.running >= lane.limit and len(lane.waiters) >= lane.depth:
            raise Saturated(route, self._hint(lane))

    @contextlib.asynccontextmanager
    async def slot(self, route: Route) -> AsyncIterator[None]:
        """Hold a running slot on ``route`` for the block; waits in the queue when all are taken."""
        lane = self._lanes[route]
        if lane.running >= lane.limit or lane.waiters:
            if len(lane.waiters) >= lane.depth:
                raise Saturated(route, self._hint(lane))
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            lane.waiters.append(waiter)
            try:
                await waiter
            except BaseException:
                if waiter in lane.waiters:
                    lane.waiters.remove(waiter)
                elif waiter.done() and not waiter.cancelled():
                    lane.running -= 1  # the slot was handed to us as we were cancelled: give it back
                    self._wake(lane)
                raise
        else:
            lane.running += 1
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            yield
        finally:
            lane.seconds = 0.9 * lane.seconds + 0.1 * (loop.time() - started)
            lane.running -= 1
            self._wake(lane)

    def _wake(self, lane: _Lane) -> None:
        while lane.waiters and lane.running < lane.limit:
            waiter = lane.waiters.popleft()
            if not waiter.done():
                lane.running += 1  # handed over: counted before the waiter runs
                waiter.set_result(None)

    @staticmethod
    def _hint(lane: _Lane) -> float:
        return max(0.1, (len(lane.waiters) + 1) / lane.limit * lane.seconds)


__all__ = ["Admission", "Saturated"]
