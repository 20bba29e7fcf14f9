"""Opening the SQLite state: a first open creates it whole; a damaged, foreign or empty database is
refused at open with one message saying what to do, and an empty one is set up only when asked.
Real SQLite files, damaged the way disks and people damage them."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from aiond.security.auth import Role, mint
from aiond.state import schema
from aiond.state.schema import SCHEMA_VERSION, DamagedState
from aiond.state.sqlite import SqliteState


def test_a_file_that_is_no_database_is_refused(tmp_path: Path) -> None:
    (tmp_path / "state.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(DamagedState) as info:
        SqliteState.open(tmp_path)
    assert (
        info.value.message
        == f"the state database {tmp_path / 'state.db'} is unreadable: file is not a database"
    )
    assert info.value.hint == "restore it from a backup, or move it away to start with empty state"


def _populated(state_dir: Path) -> Path:
    """A closed state database with two policy versions and two tokens, its WAL folded in."""
    backend = SqliteState.open(state_dir)
    for n in (1, 2):
        backend.add_version([("a.yml", b"x" * 5000 * n)], tag=f"sha256:{n:064d}", author="a", source="apply",
                            description="")  # fmt: skip
        backend.add_token(mint(f"t{n}", Role.ADMIN, created_by="test")[0])
    backend.close()
    path = state_dir / "state.db"
    assert not path.with_name("state.db-wal").exists()
    return path


def _root_page(path: Path, name: str) -> int:
    db = sqlite3.connect(path)
    try:
        page: int = db.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (name,)).fetchone()[0]
    finally:
        db.close()
    return page


@pytest.mark.parametrize(
    # A broken page header: SQLite stops the check at once on a table's page, and lists it for an index's.
    ("name", "found"),
    [("tokens", "database disk image is malformed"), ("tokens_live_name", "Page {page}: btreeInitPage()")],
    ids=["table-page", "index-page"],
)
def test_a_page_corrupted_database_is_refused_at_open(tmp_path: Path, name: str, found: str) -> None:
    path = _populated(tmp_path)
    page = _root_page(path, name)
    with path.open("r+b") as db_file:  # a page in the middle of the file
        db_file.seek((page - 1) * 4096)
        db_file.write(b"\xff" * 8)
    with pytest.raises(DamagedState) as info:
        SqliteState.open(tmp_path)
    assert info.value.message.startswith(f"the state database {path} is damaged: {found.format(page=page)}")
    assert "\n" not in info.value.message
    assert info.value.hint == "restore it from a backup, or move it away to start with empty state"


def test_a_database_missing_a_table_or_index_is_refused_at_open(tmp_path: Path) -> None:
    path = _populated(tmp_path)
    db = sqlite3.connect(path)
    db.execute("DROP TABLE spend")
    db.execute("DROP INDEX tokens_live_name")
    db.close()
    with pytest.raises(DamagedState) as info:
        SqliteState.open(tmp_path)
    assert info.value.message == (
        f"the state database {path} is damaged: it lacks table spend, index tokens_live_name, "
        f"which schema {SCHEMA_VERSION} needs"
    )


def test_an_older_schema_needs_only_its_own_tables_and_is_migrated(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "state.db", isolation_level=None)
    db.executescript(schema._MIGRATIONS[0] + "PRAGMA user_version = 1;")
    db.close()
    assert schema.objects_at(1) < schema.objects_at(3)
    state = SqliteState.open(tmp_path)
    state.add_spend({"2030-01-01": 5})
    assert state.spent("2030-01-01") == 5
    state.close()


def test_an_empty_database_is_refused_untouched_unless_told_to_initialise(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    path.write_bytes(b"")
    with pytest.raises(DamagedState) as info:
        SqliteState.open(tmp_path)
    assert info.value.message == (
        f"the state database {path} is empty: it holds no aiond schema, so any tokens and policy history "
        "it had are gone"
    )
    assert "--init-state" in (info.value.hint or "")
    assert path.read_bytes() == b""
    state = SqliteState.open(tmp_path, initialise=True)
    assert state.tokens() == []
    assert state.active() is None
    state.close()
    SqliteState.open(tmp_path).close()  # initialised now: no flag needed again


def test_initialise_never_writes_into_a_database_that_is_not_aionds(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "state.db")
    db.execute("CREATE TABLE songs (title TEXT)")
    db.close()
    with pytest.raises(DamagedState, match="is not an aiond state database"):
        SqliteState.open(tmp_path, initialise=True)
    db = sqlite3.connect(tmp_path / "state.db")
    assert db.execute("SELECT name FROM sqlite_master").fetchall() == [("songs",)]
    db.close()


def test_a_first_open_creates_the_whole_database_under_its_name_and_leaves_nothing_else(
    tmp_path: Path,
) -> None:
    SqliteState.open(tmp_path / "new").close()
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == ["state.db"]
    assert (tmp_path / "new" / "state.db").stat().st_mode & 0o777 == 0o600


def test_creating_never_replaces_a_database_another_process_made_first(tmp_path: Path) -> None:
    state = SqliteState.open(tmp_path)
    state.add_token(mint("first", Role.ADMIN, created_by="test")[0])
    state.close()
    schema.create(tmp_path / "state.db")  # a second creator that lost the race
    state = SqliteState.open(tmp_path)
    assert [t.name for t in state.tokens()] == ["first"]
    state.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.db"]
