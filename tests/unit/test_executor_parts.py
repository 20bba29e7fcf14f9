"""The executor's parts that need no provider: admission and backpressure, the daily budget ledger, the
retry budget. Real asyncio, an injected clock where time matters; no sleeps."""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import shutil
from collections.abc import Mapping
from pathlib import Path

import pytest

from aion.api.v1 import tasks_pb2
from aion.config.model import Route
from aion.config.validate import validate_directory
from aion.errors import Saturated
from aion.routing import Decision, LiveState, Request, compile_table
from aiond.execution.admission import Admission
from aiond.execution.breakers import BreakerBoard
from aiond.execution.budget import BudgetLedger
from aiond.execution.controls import Controls
from aiond.execution.executor import RETRY_FLOOR, Executor, RetryBudget, Submission
from aiond.execution.taskstore import Finished, Status, TaskRecord, TaskStore
from aiond.policy.store import PolicyStore
from aiond.state.sqlite import SqliteState

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

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
        assert full.value.retry_after is not None
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
        assert ledger.settle("a", 25) == 25  # actual cost is recorded; the rest is freed
        await ledger.flush()
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


class CountingState(SqliteState):
    """The real SQLite backend, counting its spend writes (and failing the first ``fail`` of them)."""

    writes = 0
    fail = 0

    def add_spend(self, spends: Mapping[str, int]) -> None:
        type(self).writes += 1
        if type(self).fail:
            type(self).fail -= 1
            raise OSError("disk full")
        super().add_spend(spends)


def test_costs_are_stored_before_flush_returns_with_one_write_per_group(tmp_path: Path) -> None:
    state = CountingState.open(tmp_path)
    CountingState.writes = 0
    day = "2026-11-26"
    seen: list[tuple[int, int]] = []

    async def task(ledger: BudgetLedger, number: int) -> None:
        assert ledger.reserve(f"t{number}", 10)
        await asyncio.sleep(0)
        ledger.settle(f"t{number}", 1)
        await ledger.flush()
        seen.append((number, state.spent(day)))

    async def scenario() -> None:
        ledger = BudgetLedger(state, today=lambda: day)
        await ledger.load()
        await asyncio.gather(*(task(ledger, n) for n in range(200)))
        await ledger.flush()  # nothing left: returns at once

    try:
        asyncio.run(scenario())
        assert state.spent(day) == 200
        # Every task saw its own cost (and all settled before it) stored when flush returned.
        assert all(stored >= number + 1 for number, stored in seen)
        assert 1 <= CountingState.writes <= 20, CountingState.writes  # grouped, not one per task
    finally:
        state.close()


def test_a_failed_spend_write_keeps_the_costs_for_the_next_one(tmp_path: Path) -> None:
    state = CountingState.open(tmp_path)
    CountingState.writes, CountingState.fail = 0, 1
    day = "2026-11-26"

    async def scenario() -> None:
        ledger = BudgetLedger(state, today=lambda: day)
        await ledger.load()
        ledger.settle("a", 7)
        await ledger.flush()  # the write fails: logged, not raised
        assert state.spent(day) == 0
        assert ledger.spent_nano == 7  # still counted against today's cap
        ledger.settle("b", 5)
        await ledger.flush()
        assert state.spent(day) == 12

    try:
        asyncio.run(scenario())
        assert CountingState.writes == 2
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


def test_the_retry_budget_keeps_only_its_window_when_nothing_is_retried() -> None:
    """A daemon whose calls all succeed asks for no retry: its window still forgets old calls."""
    now = [0.0]
    budget = RetryBudget(0.1, window=10, clock=lambda: now[0])
    for _ in range(100_000):  # 1,000 calls a second for 100 seconds
        budget.call()
        now[0] += 0.001
    assert budget.held <= 10_001
    assert sum(budget.allow_retry() for _ in range(2_000)) == RETRY_FLOOR + 1_000


def test_utc_day_is_the_calendar_day_in_utc() -> None:
    from aiond.execution.budget import utc_day

    assert utc_day(dt.datetime(2026, 11, 26, 23, 59, tzinfo=dt.UTC)) == "2026-11-26"


def test_a_task_canceled_before_its_runner_starts_still_ends_cleanly(tmp_path: Path) -> None:
    """Cancel lands before the runner's first step (so the runner never enters its own cleanup):
    the slot, the reservation and the task's state are still settled, and the store keeps it."""
    config = tmp_path / "config"
    shutil.copytree(EXAMPLES, config)
    state = SqliteState.open(tmp_path / "state")
    events: list[dict[str, object]] = []

    async def emit(event: dict[str, object]) -> None:
        events.append(event)

    async def scenario() -> None:
        policies = PolicyStore(state, config, emit=emit)
        await policies.start()
        assert policies.active is not None
        controls = Controls(state, BreakerBoard(policies.active.snapshot.policies.breakers), emit)
        await controls.load()
        ledger = BudgetLedger(state)
        await ledger.load()
        admission = Admission(dict.fromkeys(Route, 1), dict.fromkeys(Route, 1))
        executor = Executor(policies=policies, controls=controls, ledger=ledger, admission=admission)
        try:
            task, deduplicated = executor.submit(Submission(intent="summarize", text="hello"))
            assert not deduplicated
            assert isinstance(task, TaskRecord)
            assert ledger.reserved_nano > 0 or task.decision.estimated_max_nano == 0
            await executor.cancel(task, "changed my mind")
            assert task.status is Status.CANCELED
            assert task.error is not None
            assert task.error.code == "CANCELED"
            assert admission.depth(task.decision.route) == (0, 0)
            assert ledger.reserved_nano == 0
            kept = executor.store.get(task.task_id)
            assert isinstance(kept, Finished)
            assert kept.message().status == tasks_pb2.TASK_STATUS_CANCELED
            # The slot is free again: the next task is admitted and runs, not queued.
            again, _ = executor.submit(Submission(intent="summarize", text="again"))
            assert isinstance(again, TaskRecord)
            assert admission.depth(again.decision.route) == (1, 0)
            await executor.cancel(again, "done")
        finally:
            await executor.close()

    try:
        asyncio.run(scenario())
    finally:
        state.close()


def test_finished_tasks_are_kept_compact_and_still_found(tmp_path: Path) -> None:
    """A finished task is stored as its serialized message, in a tuple the cyclic collector ignores;
    get, idempotency keys and eviction work the same."""
    report = validate_directory(EXAMPLES)
    assert report.snapshot is not None
    decision = compile_table(report.snapshot).decide(Request(intent="summarize", input_bytes=5), LiveState())
    assert isinstance(decision, Decision)
    store = TaskStore(capacity=2)
    first = TaskRecord(task_id="t1", intent="summarize", decision=decision, policy_version=3,
                       idempotency_key="key-1", labels={"team": "sre"})  # fmt: skip
    store.add(first)
    running = store.get("t1")
    assert running is first
    first.status, first.result = Status.OK, "done"
    first.finished_at = dt.datetime.now(dt.UTC)
    store.changed(first)
    kept = store.get("t1")
    assert isinstance(kept, Finished)
    assert kept.status is Status.OK
    assert kept.message() == first.message()
    assert kept.message().labels["team"] == "sre"
    assert kept.message().result.text == "done"
    by_key = store.by_key("key-1")
    assert isinstance(by_key, Finished)
    assert by_key.task_id == "t1"
    gc.collect()
    assert not any(gc.is_tracked(v) for v in store._tasks.values())
    # Full: the finished task is forgotten first, with its key; a running one never is.
    second = TaskRecord(task_id="t2", intent="summarize", decision=decision, policy_version=3)
    third = TaskRecord(task_id="t3", intent="summarize", decision=decision, policy_version=3)
    store.add(second)
    store.add(third)
    assert store.get("t1") is None
    assert store.by_key("key-1") is None
    assert [t.task_id for t in store.running()] == ["t2", "t3"]


def test_finished_tasks_are_forgotten_oldest_first_past_the_byte_budget(tmp_path: Path) -> None:
    report = validate_directory(EXAMPLES)
    assert report.snapshot is not None
    decision = compile_table(report.snapshot).decide(Request(intent="summarize", input_bytes=5), LiveState())
    assert isinstance(decision, Decision)
    store = TaskStore(capacity=1000, max_bytes=50_000)
    running = TaskRecord(task_id="running", intent="summarize", decision=decision, policy_version=1)
    store.add(running)
    for n in range(10):
        task = TaskRecord(task_id=f"t{n}", intent="summarize", decision=decision, policy_version=1)
        store.add(task)
        task.status, task.result = Status.OK, "x" * 10_000  # about 10 kB serialized
        task.finished_at = dt.datetime.now(dt.UTC)
        store.changed(task)
    kept = [n for n in range(10) if store.get(f"t{n}") is not None]
    assert kept == [6, 7, 8, 9]  # the newest that fit in 50 kB
    assert store.get("running") is running  # never dropped, whatever the budget
