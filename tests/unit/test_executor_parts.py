"""The executor's parts that need no provider: admission and backpressure, the daily budget ledger, the
retry budget. Real asyncio, an injected clock where time matters; no sleeps."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import pytest

from aion.config.model import Route
from aiond.admission import Admission, Saturated
from aiond.budget import BudgetLedger
from aiond.executor import RETRY_FLOOR, RetryBudget
from aiond.state import SqliteState

LIMITS = {Route.LOCAL: 2, Route.API: 1, Route.HYBRID: 1}
DEPTHS = {Route.LOCAL: 1, Route.API: 0, Route.HYBRID: 0}


def test_admission_runs_queues_then_refuses_with_a_hint() -> None:
    async def scenario() -> None:
        admission = Admission(LIMITS, DEPTHS)
        first, second = admission.admit(Route.LOCAL), admission.admit(Route.LOCAL)
        assert (first.waiting, second.waiting) == (False, False)
        third = admission.admit(Route.LOCAL)  # the queue's one place
        assert third.waiting
        with pytest.raises(Saturated) as full:
            admission.admit(Route.LOCAL)
        assert full.value.retry_after >= 0.1
        assert admission.depth(Route.LOCAL) == (2, 1)
        entered = asyncio.Event()

        async def run_third() -> None:
            async with third:
                entered.set()

        waiter = asyncio.ensure_future(run_third())
        await asyncio.sleep(0)
        assert not entered.is_set()
        async with first:
            pass  # finishing the first hands its slot to the queued one
        await asyncio.wait_for(entered.wait(), 1)
        await waiter
        second.release()
        assert admission.depth(Route.LOCAL) == (0, 0)

    asyncio.run(scenario())


def test_a_queued_ticket_given_up_frees_its_place() -> None:
    async def scenario() -> None:
        admission = Admission(LIMITS, DEPTHS)
        running = admission.admit(Route.LOCAL), admission.admit(Route.LOCAL)
        queued = admission.admit(Route.LOCAL)
        task = asyncio.ensure_future(queued.__aenter__())
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert admission.depth(Route.LOCAL) == (2, 0)
        again = admission.admit(Route.LOCAL)  # the place is free again
        assert again.waiting
        again.release()
        for ticket in running:
            ticket.release()
        assert admission.depth(Route.LOCAL) == (0, 0)

    asyncio.run(scenario())


def test_a_route_without_a_queue_refuses_when_busy() -> None:
    async def scenario() -> None:
        admission = Admission(LIMITS, DEPTHS)
        ticket = admission.admit(Route.API)
        with pytest.raises(Saturated):
            admission.admit(Route.API)
        ticket.release()
        admission.admit(Route.API).release()

    asyncio.run(scenario())


def test_the_ledger_never_lets_reservations_pass_the_cap(tmp_path: Path) -> None:
    days = ["2026-11-26"]
    state = SqliteState.open(tmp_path)

    async def scenario() -> None:
        ledger = BudgetLedger(state, today=lambda: days[0])
        await ledger.load()
        ledger.cap_nano = 100
        assert ledger.reserve("a", 60)
        assert not ledger.reserve("b", 50)  # 60 + 50 > 100
        assert ledger.reserve("b", 40)
        assert ledger.available() == 0
        assert await ledger.settle("a", 25) == 25  # actual cost is recorded; the rest is freed
        assert ledger.available() == 35
        assert ledger.spent_nano == 25
        # Spend survives a restart of the ledger (the state backend keeps it).
        again = BudgetLedger(state, today=lambda: days[0])
        await again.load()
        again.cap_nano = 100
        assert again.spent_nano == 25
        # A new UTC day starts from zero.
        days[0] = "2026-11-27"
        assert again.available() == 100

    try:
        asyncio.run(scenario())
    finally:
        state.close()


def test_the_retry_budget_allows_a_floor_then_a_ratio_of_calls() -> None:
    now = [0.0]
    budget = RetryBudget(0.1, window=10, clock=lambda: now[0])
    allowed = sum(budget.allow_retry() for _ in range(100))
    assert allowed == RETRY_FLOOR  # nothing called yet: only the floor
    for _ in range(200):
        budget.call()
    assert sum(budget.allow_retry() for _ in range(100)) == 20  # 10% of 200 calls
    now[0] += 11  # the window moves on
    assert budget.allow_retry()


def test_utc_day_is_the_calendar_day_in_utc() -> None:
    from aiond.budget import utc_day

    assert utc_day(dt.datetime(2026, 11, 26, 23, 59, tzinfo=dt.UTC)) == "2026-11-26"
