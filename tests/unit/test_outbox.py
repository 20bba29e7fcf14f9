"""The event outbox: audit events in the transaction of their change, the local log caught up from it,
and its bound (task events shed first, admin actions refused rather than left without a record)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aion.envelopes import AUDIT_TOPIC, LIFECYCLE_TOPIC, audit, event
from aion.errors import EventsBacklogged
from aion.eventlog import encode
from aiond.events.journal import Journal
from aiond.events.sink import AUDIT_NAME, LOG_NAME, LocalSink
from aiond.state.backend import IntentMode, StoredVersion
from aiond.state.sqlite import SqliteState


def _audit(target: str = "policy") -> dict[str, Any]:
    return audit(principal="ops@test", action="intent.mode", target=target, outcome="success")


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture
def state(tmp_path: Path) -> Iterator[SqliteState]:
    opened = SqliteState.open(tmp_path)
    yield opened
    opened.close()


def test_a_version_and_its_audit_event_are_one_transaction(state: SqliteState) -> None:
    def recorded(stored: StoredVersion) -> dict[str, Any]:
        return audit(principal="ops", action="policy.apply", target="policy", outcome="success",
                     after=str(stored.number))  # fmt: skip

    stored = state.add_version([("intents.yml", b"{}")], tag="t1", author="ops", source="apply",
                               description="", audit=recorded)  # fmt: skip
    rows = state.outbox_unlogged(limit=10)
    assert [json.loads(r.body)["after"] for r in rows] == [str(stored.number)]
    assert rows[0].audit
    assert rows[0].topic == AUDIT_TOPIC

    def broken(_stored: StoredVersion) -> dict[str, Any]:
        raise RuntimeError("the event could not be made")

    with pytest.raises(RuntimeError):
        state.add_version([("intents.yml", b"{}")], tag="t2", author="ops", source="apply",
                          description="", audit=broken)  # fmt: skip
    # Neither the version nor an event: the change and its record stand or fall together.
    assert [v.tag for v in state.versions(limit=10)] == ["t1"]
    assert len(state.outbox_unlogged(limit=10)) == 1


def test_without_kafka_a_logged_event_leaves_the_outbox(state: SqliteState, tmp_path: Path) -> None:
    state.configure_outbox(kafka=False, max_bytes=1 << 20)
    state.set_intent_mode(
        IntentMode("summarize", "local-only", "ops", dt.datetime.now(dt.UTC), "incident"), "summarize",
        audit=_audit("summarize"),
    )  # fmt: skip
    journal = Journal(LocalSink(tmp_path), outbox=state)
    recorded = journal.drain()
    assert [e["target"] for e in recorded] == ["summarize"]
    assert [e["id"] for e in _lines(tmp_path / AUDIT_NAME)] == [recorded[0]["id"]]
    assert [e["id"] for e in _lines(tmp_path / LOG_NAME)] == [recorded[0]["id"]]
    assert state.outbox_unlogged(limit=10) == []
    assert state.outbox_levels().audit == 0


def test_with_kafka_an_event_stays_until_delivered(state: SqliteState, tmp_path: Path) -> None:
    state.configure_outbox(kafka=True, max_bytes=1 << 20)
    state.outbox_add([_audit()])
    Journal(LocalSink(tmp_path), outbox=state).drain()
    waiting = state.outbox_undelivered(after=0, limit=10)
    assert len(waiting) == 1
    assert state.outbox_unlogged(limit=10) == []
    state.outbox_delivered([waiting[0].seq])
    assert state.outbox_undelivered(after=0, limit=10) == []
    assert state.outbox_levels().audit == 0


def test_a_delivered_event_stays_until_logged(state: SqliteState, tmp_path: Path) -> None:
    state.configure_outbox(kafka=True, max_bytes=1 << 20)
    state.outbox_add([_audit()])
    [row] = state.outbox_undelivered(after=0, limit=10)
    state.outbox_delivered([row.seq])
    assert [r.seq for r in state.outbox_unlogged(limit=10)] == [row.seq]  # the local log still lacks it
    Journal(LocalSink(tmp_path), outbox=state).drain()
    assert state.outbox_levels().audit == 0


def test_a_restart_writes_what_a_crash_left_once(tmp_path: Path) -> None:
    """Events committed with their change but not yet in the local log (aiond killed in between) reach
    it at the next start; one already there (killed after writing, before marking) is not repeated."""
    state = SqliteState.open(tmp_path)
    state.configure_outbox(kafka=False, max_bytes=1 << 20)
    first, second = _audit("a"), _audit("b")
    state.outbox_add([first, second])
    LocalSink(tmp_path).append(first)  # the crash came after this write and before the mark
    state.close()

    state = SqliteState.open(tmp_path)
    try:
        recorded = Journal(LocalSink(tmp_path), outbox=state).drain()
        assert [e["id"] for e in recorded] == [second["id"]]
        assert [e["id"] for e in _lines(tmp_path / AUDIT_NAME)] == [first["id"], second["id"]]
        assert state.outbox_levels().audit == 0
    finally:
        state.close()


def _task_rows(count: int, size: int = 200) -> list[tuple[str, str, str, str]]:
    rows = []
    for n in range(count):
        e = event(LIFECYCLE_TOPIC, task_id=f"t{n}", status="OK", pad="x" * size)
        rows.append((e["id"], e["topic"], e["task_id"], encode(e)))
    return rows


def test_a_full_outbox_sheds_task_events_and_counts_them(state: SqliteState) -> None:
    state.configure_outbox(kafka=True, max_bytes=10_000)
    shed = state.outbox_add_tasks(_task_rows(100))
    levels = state.outbox_levels()
    assert shed[LIFECYCLE_TOPIC] == 100 - levels.task > 0
    assert levels.bytes <= 10_000
    assert state.shed == shed


def test_an_audit_event_makes_room_by_shedding_the_oldest_task_events(state: SqliteState) -> None:
    state.configure_outbox(kafka=True, max_bytes=10_000)
    state.outbox_add_tasks(_task_rows(100))
    before = state.outbox_undelivered(after=0, limit=1000)
    state.outbox_add([_audit()])
    after = state.outbox_undelivered(after=0, limit=1000)
    assert after[-1].audit
    assert after[0].seq > before[0].seq  # the oldest went first
    assert state.outbox_levels().bytes <= 10_000


def test_an_admin_action_is_refused_when_its_audit_event_cannot_fit(state: SqliteState) -> None:
    state.configure_outbox(kafka=True, max_bytes=2_000)
    while True:
        try:
            state.outbox_add([_audit()])
        except EventsBacklogged:
            break
    mode = IntentMode("summarize", "local-only", "ops", dt.datetime.now(dt.UTC), "incident")
    with pytest.raises(EventsBacklogged, match="outbox is full"):
        state.set_intent_mode(mode, "summarize", audit=_audit("summarize"))
    assert state.intent_modes() == []  # refused whole: no change without its record
    waiting = state.outbox_undelivered(after=0, limit=1000)
    assert all(row.audit for row in waiting)  # no audit event was shed to make room
    state.outbox_delivered([row.seq for row in waiting])
    state.outbox_logged([row.seq for row in waiting])
    state.set_intent_mode(mode, "summarize", audit=_audit("summarize"))  # room again
    assert [m.intent for m in state.intent_modes()] == ["summarize"]


def test_another_process_follows_the_daemons_kafka_setting(tmp_path: Path) -> None:
    """``aiond token`` writes its audit events into the same outbox; with Kafka on they wait for it."""
    daemon = SqliteState.open(tmp_path)
    daemon.configure_outbox(kafka=True, max_bytes=1 << 20)
    tool = SqliteState.open(tmp_path)
    try:
        tool.outbox_add([_audit()])
        Journal(LocalSink(tmp_path), outbox=tool).drain()
        assert len(daemon.outbox_undelivered(after=0, limit=10)) == 1
    finally:
        tool.close()
        daemon.close()


def test_journal_task_events_reach_the_outbox_only_with_kafka(state: SqliteState, tmp_path: Path) -> None:
    async def run(kafka: bool) -> None:
        state.configure_outbox(kafka=kafka, max_bytes=1 << 20)
        journal = Journal(LocalSink(tmp_path), outbox=state, kafka=kafka)
        journal.emit_soon(event(LIFECYCLE_TOPIC, task_id="t1", status="OK"))
        await journal.flush()

    asyncio.run(run(False))
    assert state.outbox_levels().task == 0
    asyncio.run(run(True))
    [row] = state.outbox_undelivered(after=0, limit=10)
    assert (row.key, row.audit) == ("t1", False)
    assert len(_lines(tmp_path / LOG_NAME)) == 2  # the local log has both either way


def _install_event(name: str, digest: str) -> dict[str, Any]:
    return audit(principal="ops", action="module.install", target=name, outcome="success", after=digest)


def test_a_held_event_goes_nowhere_until_released(state: SqliteState, tmp_path: Path) -> None:
    """A module install renames files, outside the database: its event is written before the rename
    and released after it."""
    state.configure_outbox(kafka=True, max_bytes=1 << 20)
    journal = Journal(LocalSink(tmp_path), outbox=state)
    held = journal.hold(_install_event("summarize_text", "sha256:aa"))
    assert held is not None
    assert state.outbox_unlogged(limit=10) == []
    assert state.outbox_undelivered(after=0, limit=10) == []
    held.release()
    assert [e["target"] for e in _lines(tmp_path / AUDIT_NAME)] == ["summarize_text"]
    assert len(state.outbox_undelivered(after=0, limit=10)) == 1


def test_a_failed_change_discards_its_held_event(state: SqliteState, tmp_path: Path) -> None:
    from aion.modules.store import ModuleStore

    store = ModuleStore(tmp_path / "modules", events=Journal(LocalSink(tmp_path), outbox=state))
    event = _install_event("summarize_text", "sha256:aa")
    with pytest.raises(OSError, match="lock file"), store.audited(event):
        raise OSError("the lock file could not be written")
    assert state.outbox_held() == []
    assert state.outbox_levels().audit == 0
    assert not (tmp_path / AUDIT_NAME).exists()


def test_held_events_are_reconciled_with_what_happened_at_start(state: SqliteState, tmp_path: Path) -> None:
    journal = Journal(LocalSink(tmp_path), outbox=state)
    done = journal.hold(_install_event("summarize_text", "sha256:aa"))
    undone = journal.hold(_install_event("pii_redact", "sha256:bb"))
    assert done is not None
    assert undone is not None  # aiond stopped here: neither was released
    released = journal.reconcile(lambda e: e["target"] == "summarize_text")
    assert released == 1
    assert state.outbox_held() == []
    journal.drain()
    assert [e["target"] for e in _lines(tmp_path / AUDIT_NAME)] == ["summarize_text"]


def test_a_start_without_kafka_says_how_many_events_will_not_go_there(state: SqliteState) -> None:
    state.configure_outbox(kafka=True, max_bytes=1 << 20)
    state.outbox_add([_audit(), _audit()])
    assert state.configure_outbox(kafka=False, max_bytes=1 << 20) == 2
    assert state.outbox_undelivered(after=0, limit=10) == []
    assert len(state.outbox_unlogged(limit=10)) == 2  # the local log still gets them
    assert state.configure_outbox(kafka=False, max_bytes=1 << 20) == 0


def test_a_breaker_is_not_forced_when_its_audit_event_cannot_be_recorded(tmp_path: Path) -> None:
    """Breakers live in memory: a force whose event the full outbox refuses is undone."""
    from aion.config.validate import validate_directory
    from aiond.execution.breakers import BreakerBoard, Override
    from aiond.execution.controls import Controls

    snapshot = validate_directory(Path(__file__).resolve().parents[2] / "examples").snapshot
    assert snapshot is not None
    state = SqliteState.open(tmp_path)
    try:
        state.configure_outbox(kafka=True, max_bytes=2_000)
        with contextlib.suppress(EventsBacklogged):
            while True:
                state.outbox_add([_audit()])

        async def scenario() -> None:
            journal = Journal(LocalSink(tmp_path), outbox=state)
            controls = Controls(state, BreakerBoard(snapshot.policies.breakers), journal.emit)
            with pytest.raises(EventsBacklogged):
                await controls.force_breaker(
                    snapshot, "openai", Override.FORCED_OPEN, principal="ops", reason=""
                )
            assert controls.board.get("openai").override is Override.NONE

        asyncio.run(scenario())
    finally:
        state.close()
