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
from collections.abc import Callable

from aiond.state import StateBackend


def utc_day(now: dt.datetime | None = None) -> str:
    return (now or dt.datetime.now(dt.UTC)).strftime("%Y-%m-%d")


class BudgetLedger:
    def __init__(self, backend: StateBackend, *, today: Callable[[], str] = utc_day) -> None:
        self._backend = backend
        self._today = today
        self.cap_nano: int | None = None
        self._day = ""
        self._spent = 0
        self._reserved: dict[str, tuple[str, int]] = {}

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

    async def settle(self, task_id: str, actual_nano: int) -> int:
        """End a task's reservation with its actual cost, which is recorded as it is (it cannot exceed
        the worst case reserved unless a provider bills beyond the tokens it was allowed). Returns the
        amount recorded."""
        day, _reserved = self._reserved.pop(task_id, (self._today(), 0))
        spent = actual_nano
        if spent:
            if day == self._day:
                self._spent += spent
            await asyncio.to_thread(self._backend.add_spend, day, spent)
        return spent


__all__ = ["BudgetLedger", "utc_day"]
