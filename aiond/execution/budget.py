"""The daily spending pool (``budget.daily_cap_usd``): reserve a task's worst case at admission, settle
its actual cost when it ends.

Reservation happens in the event loop right after the routing decision, with no ``await`` in between,
so two tasks admitted at once cannot both take the same headroom: the sum of what is spent today and
what is reserved never exceeds the cap. Settling moves the actual cost (never more than was reserved)
into today's spend, which is stored in the state backend so a restart does not reset the day.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable

from aiond.state.backend import StateBackend

log = logging.getLogger("aiond.execution.budget")


_day: list[tuple[int, str]] = [(-1, "")]


def utc_day(now: dt.datetime | None = None) -> str:
    """Today's UTC date, YYYY-MM-DD (or that of ``now``). Formatted once a day: admission asks for it
    a few times per task."""
    if now is not None:
        return now.strftime("%Y-%m-%d")
    number = int(time.time() // 86400)
    known, text = _day[0]
    if known != number:
        text = time.strftime("%Y-%m-%d", time.gmtime(number * 86400))
        _day[0] = (number, text)
    return text


class BudgetLedger:
    def __init__(self, backend: StateBackend, *, today: Callable[[], str] = utc_day) -> None:
        self._backend = backend
        self._today = today
        self.cap_nano: int | None = None
        self._day = ""
        self._spent = 0
        self._reserved: dict[str, tuple[str, int]] = {}
        self._unsaved: dict[str, int] = {}
        """Settled costs not yet stored, by day."""
        self._batch = 1
        """The number of the write that costs settled now will go in."""
        self._stored = 0
        """The number of the last write that is stored."""
        self._writer: asyncio.Task[bool] | None = None

    @property
    def reserved_nano(self) -> int:
        return sum(nano for _day, nano in self._reserved.values())

    @property
    def spent_nano(self) -> int:
        self._roll()
        return self._spent

    async def load(self) -> None:
        self._day = self._today()
        self._spent = await asyncio.to_thread(self._backend.spent, self._day)

    def _roll(self) -> None:
        day = self._today()
        if day != self._day:
            self._day, self._spent = day, 0  # a new UTC day; yesterday's spend stays stored

    def available(self) -> int | None:
        """What a new task may still reserve today; None when there is no daily cap."""
        if self.cap_nano is None:
            return None
        self._roll()
        today = sum(nano for day, nano in self._reserved.values() if day == self._day)
        return max(0, self.cap_nano - self._spent - today)

    def reserve(self, task_id: str, nano: int) -> bool:
        """Reserve ``nano`` for a task. Synchronous on purpose: see the module docstring."""
        available = self.available()
        if available is not None and nano > available:
            return False
        self._reserved[task_id] = (self._day or self._today(), nano)
        return True

    def settle(self, task_id: str, actual_nano: int) -> int:
        """End a task's reservation with its actual cost, which is recorded as it is (it cannot exceed
        the worst case reserved unless a provider bills beyond the tokens it was allowed). Returns the
        amount recorded; :meth:`flush` stores it."""
        day, _reserved = self._reserved.pop(task_id, (self._today(), 0))
        if actual_nano:
            if day == self._day:
                self._spent += actual_nano
            self._unsaved[day] = self._unsaved.get(day, 0) + actual_nano
        return actual_nano

    async def flush(self) -> None:
        """Return once every cost settled so far is stored.

        Group commit: one write (one transaction, one fsync) stores every cost settled since the last
        write began, and the tasks that end while it runs wait for the next one. So a task is reported
        only after its cost is on disk, and a busy daemon does not pay a disk sync per task."""
        target = self._batch if self._unsaved else self._batch - 1
        while self._stored < target:
            if self._writer is None:
                batch, self._unsaved = self._unsaved, {}
                self._writer = asyncio.get_running_loop().create_task(self._write(self._batch, batch))
                self._batch += 1
            if not await asyncio.shield(self._writer):
                return  # logged; the costs stay queued for the next write

    async def _write(self, number: int, batch: dict[str, int]) -> bool:
        try:
            await asyncio.to_thread(self._backend.add_spend, batch)
        except Exception:
            log.exception("cannot store today's spend; it stays counted in memory and is retried")
            for day, nano in batch.items():
                self._unsaved[day] = self._unsaved.get(day, 0) + nano
            return False
        else:
            self._stored = number
            return True
        finally:
            self._writer = None


__all__ = ["BudgetLedger", "utc_day"]
