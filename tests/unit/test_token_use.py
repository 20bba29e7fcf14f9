"""Tokens' last use and rotation in the state: uses noted in memory and written in one transaction per
flush (never one write per call), rotation's overlap, what cannot be rotated, revocation of a rotated
name, the audit events, and the migration from schema 5. Real SQLite databases in tmp_path."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from aion.envelopes import audit
from aion.errors import ConflictError, InputError, Unauthenticated, UsageError
from aiond.security.auth import Authenticator, Role, TokenUses, mint, rotate
from aiond.state import schema
from aiond.state.backend import TokenRecord
from aiond.state.sqlite import SqliteState


def _token(state: SqliteState, name: str, role: Role = Role.ADMIN, **changes: object) -> str:
    record, text = mint(name, role, created_by="test")
    state.add_token(dataclasses.replace(record, **changes))  # type: ignore[arg-type]
    return text


def _writes(state: SqliteState) -> int:
    """Rows the daemon's connection changed so far (SQLite counts every insert, update and delete)."""
    return int(state._db.total_changes)


def _audit_actions(state: SqliteState) -> list[dict[str, object]]:
    return [json.loads(row.body) for row in state.outbox_unlogged(limit=100)]


def test_calls_are_noted_in_memory_and_written_once_per_flush(tmp_path: Path) -> None:
    state = SqliteState.open(tmp_path)
    text = _token(state, "ci")
    other = _token(state, "ops", Role.VIEWER)
    uses = TokenUses(state)
    auth = Authenticator(state, uses=uses)
    before = _writes(state)
    for _ in range(200):
        auth.authenticate(text, None)
    auth.authenticate(other, None)
    assert _writes(state) == before, "a call wrote to the state"
    assert all(r.last_used_at is None for r in state.tokens())
    assert uses.flush() == 2
    assert _writes(state) == before + 2  # one row per credential, however many calls
    used = {r.name: r.last_used_at for r in state.tokens()}
    assert used["ci"] is not None
    assert used["ops"] is not None
    assert dt.datetime.now(dt.UTC) - used["ci"] < dt.timedelta(minutes=1)
    assert uses.flush() == 0  # nothing used since: nothing written
    assert _writes(state) == before + 2
    state.close()


def test_a_credential_that_failed_is_not_noted(tmp_path: Path) -> None:
    state = SqliteState.open(tmp_path)
    text = _token(state, "ci")
    uses = TokenUses(state)
    auth = Authenticator(state, uses=uses)
    with pytest.raises(Unauthenticated):
        auth.authenticate(text[:-1] + ("A" if text[-1] != "A" else "B"), None)
    assert uses.flush() == 0
    state.close()


def test_an_older_use_never_replaces_a_newer_one(tmp_path: Path) -> None:
    state = SqliteState.open(tmp_path)
    _token(state, "ci")
    token_id = state.tokens()[0].id
    late = dt.datetime(2030, 1, 2, tzinfo=dt.UTC)
    state.note_token_use({token_id: late})
    state.note_token_use({token_id: late - dt.timedelta(hours=1)})
    assert state.token(token_id).last_used_at == late  # type: ignore[union-attr]
    state.close()


def test_the_flusher_writes_at_close(tmp_path: Path) -> None:
    state = SqliteState.open(tmp_path)
    text = _token(state, "ci")

    async def serve() -> None:
        uses = TokenUses(state, interval=3600)
        uses.start()
        Authenticator(state, uses=uses).authenticate(text, None)
        await uses.close()

    asyncio.run(serve())
    assert state.tokens()[0].last_used_at is not None
    state.close()


def test_rotation_keeps_the_old_secret_for_the_overlap_then_refuses_it(tmp_path: Path) -> None:
    state = SqliteState.open(tmp_path)
    old_text = _token(state, "ci", Role.OPERATOR)
    rotation, new_text = rotate(state, "ci", overlap=dt.timedelta(hours=1), principal="alice")
    assert (rotation.new.name, rotation.new.role) == ("ci", "operator")
    assert rotation.old.replaced_by == rotation.new.id
    assert rotation.old.expires_at is not None
    left = rotation.old.expires_at - dt.datetime.now(dt.UTC)
    assert dt.timedelta(minutes=59) < left <= dt.timedelta(hours=1)
    auth = Authenticator(state)
    assert auth.authenticate(old_text, None).role is Role.OPERATOR  # during the overlap
    assert auth.authenticate(new_text, None).name == "ci"
    rotation, newest = rotate(state, "ci", overlap=dt.timedelta(0), principal="alice")
    fresh = Authenticator(state)  # no cached lookups
    with pytest.raises(Unauthenticated, match="has expired"):
        fresh.authenticate(new_text, None)  # an overlap of 0 ends it at once
    assert fresh.authenticate(old_text, None).name == "ci"  # the first one's overlap still runs
    assert fresh.authenticate(newest, None).name == "ci"
    events = [e for e in _audit_actions(state) if e["action"] == "token.rotate"]
    assert [(e["principal"], e["before"], e["after"]) for e in events][-1] == (
        "alice",
        rotation.old.id,
        rotation.new.id,
    )
    state.close()


def test_rotation_keeps_a_lifetime_and_never_extends_the_old_one(tmp_path: Path) -> None:
    state = SqliteState.open(tmp_path)
    now = dt.datetime.now(dt.UTC)
    _token(state, "ci", created_at=now - dt.timedelta(days=10), expires_at=now + dt.timedelta(minutes=5))
    rotation, _ = rotate(state, "ci", overlap=dt.timedelta(hours=1), principal="alice")
    assert rotation.old.expires_at == now + dt.timedelta(minutes=5)  # sooner than the overlap's end
    assert rotation.new.expires_at is not None
    assert rotation.new.expires_at - rotation.new.created_at == dt.timedelta(days=10, minutes=5)
    state.close()


def test_what_cannot_be_rotated(tmp_path: Path) -> None:
    state = SqliteState.open(tmp_path)
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    _token(state, "gone", expires_at=past)
    grant, _ = mint("robot", Role.VIEWER, created_by="test", identity="robot.aion.test")
    state.add_token(grant)
    _token(state, "ci")
    first, _ = rotate(state, "ci", principal="alice")
    with pytest.raises(InputError, match="no live credential is named 'nobody'"):
        rotate(state, "nobody", principal="alice")
    with pytest.raises(ConflictError, match="expired"):
        rotate(state, "gone", principal="alice")
    with pytest.raises(ConflictError, match="no secret to rotate"):
        rotate(state, "robot", principal="alice")
    with pytest.raises(ConflictError, match=f"{first.new.id} replaced it"):
        rotate(state, first.old.id, principal="alice")  # by id: the replaced one
    with pytest.raises(UsageError, match="outside 0 to 30 days"):
        rotate(state, "ci", overlap=dt.timedelta(days=31), principal="alice")
    with pytest.raises(UsageError):
        rotate(state, "ci", overlap=dt.timedelta(seconds=-1), principal="alice")
    assert len([r for r in state.tokens() if r.name == "ci"]) == 2  # nothing changed by the refusals
    state.close()


def test_a_name_holds_one_current_token_and_revoking_it_ends_the_overlap_too(tmp_path: Path) -> None:
    state = SqliteState.open(tmp_path)
    old_text = _token(state, "ci")
    rotation, new_text = rotate(state, "ci", principal="alice")
    with pytest.raises(ConflictError, match="already has the name 'ci'"):
        _token(state, "ci")

    def recorded(record: TokenRecord) -> dict[str, Any]:
        return audit(principal="alice", action="token.revoke", target="ci", outcome="success",
                     before=record.id)  # fmt: skip

    current = state.revoke_token("ci", dt.datetime.now(dt.UTC), audit=recorded)
    assert current.id == rotation.new.id
    assert state.tokens() == []
    revoked = [e["before"] for e in _audit_actions(state) if e["action"] == "token.revoke"]
    assert sorted(revoked) == sorted([rotation.new.id, rotation.old.id])  # type: ignore[type-var]
    auth = Authenticator(state)
    for text in (old_text, new_text):
        with pytest.raises(Unauthenticated, match="revoked"):
            auth.authenticate(text, None)
    state.close()


def test_schema_5_gains_last_use_and_rotation_and_keeps_its_tokens(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    db = sqlite3.connect(path, isolation_level=None)
    db.executescript("".join(schema._MIGRATIONS[:5]) + "PRAGMA user_version = 5;")
    db.execute(
        "INSERT INTO tokens (id, name, role, secret_sha256, created_at, created_by) "
        "VALUES ('0123456789ab', 'ci', 'admin', 'x', '2030-01-01T00:00:00.000000+00:00', 'test')"
    )
    db.close()
    state = SqliteState.open(tmp_path)
    (record,) = state.tokens()
    assert (record.name, record.last_used_at, record.replaced_by) == ("ci", None, "")
    assert schema.objects_at(5) <= schema.objects_at(6)  # nothing of schema 5 went away
    rotation, _ = rotate(state, "ci", principal="alice")
    assert rotation.old.id == "0123456789ab"
    state.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == schema.SCHEMA_VERSION
    db.close()
