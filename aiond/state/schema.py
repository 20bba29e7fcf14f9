"""The SQLite state database's schema, and what aiond checks about a database before using it.

A state database is made whole or not at all (:func:`create`): built under a temporary name and linked
into place, so that an existing ``state.db`` without aiond's schema is never a first start cut short;
it is damage (a truncated or emptied file), and :func:`inspect` refuses it unless told to initialise.
At every open :func:`inspect` also runs SQLite's ``quick_check`` over every page, and checks that every
table and index of the schema version the database claims exists, so that a damaged database stops
aiond at start-up with one message, instead of a traceback at the first call that reads the broken
part. ``quick_check`` reads every page once, so an open costs time in proportion to the file; it
leaves out ``integrity_check``'s comparison of each index with its table, whose cost grows faster.
Damage inside a stored value (a policy file's bytes) is no structural damage, and neither finds it.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sqlite3
import tempfile
from collections.abc import Sequence
from pathlib import Path

from aion.errors import InputError

SCHEMA_VERSION = 6

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE blobs (sha256 TEXT PRIMARY KEY, content BLOB NOT NULL);
CREATE TABLE policy_versions (
    number INTEGER PRIMARY KEY,
    tag TEXT NOT NULL,
    author TEXT NOT NULL,
    created_at TEXT NOT NULL,
    source TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT ''
);
CREATE INDEX policy_versions_tag ON policy_versions (tag);
CREATE TABLE policy_files (
    version INTEGER NOT NULL REFERENCES policy_versions (number),
    path TEXT NOT NULL,
    blob TEXT NOT NULL REFERENCES blobs (sha256),
    PRIMARY KEY (version, path)
);
CREATE TABLE policy_activations (
    sequence INTEGER PRIMARY KEY AUTOINCREMENT,
    version INTEGER NOT NULL REFERENCES policy_versions (number),
    at TEXT NOT NULL
);
CREATE TABLE tokens (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    secret_sha256 TEXT NOT NULL,
    identity TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL,
    created_by TEXT NOT NULL,
    expires_at TEXT,
    revoked_at TEXT
);
CREATE UNIQUE INDEX tokens_live_name ON tokens (name) WHERE revoked_at IS NULL;
CREATE UNIQUE INDEX tokens_live_identity ON tokens (identity) WHERE revoked_at IS NULL AND identity != '';
"""


_SCHEMA_2 = """
CREATE TABLE intent_modes (
    intent TEXT PRIMARY KEY,
    mode TEXT NOT NULL,
    set_by TEXT NOT NULL,
    set_at TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT ''
);
"""
_SCHEMA_3 = """
CREATE TABLE spend (day TEXT PRIMARY KEY, nano_usd INTEGER NOT NULL);
"""
_SCHEMA_4 = """
CREATE TABLE module_parallelism (
    module TEXT PRIMARY KEY,
    parallelism INTEGER NOT NULL,
    set_by TEXT NOT NULL,
    set_at TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT ''
);
"""
_SCHEMA_5 = """
CREATE TABLE outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL,
    topic TEXT NOT NULL,
    key TEXT NOT NULL,
    body BLOB NOT NULL,
    audit INTEGER NOT NULL,
    logged INTEGER NOT NULL,
    delivered INTEGER NOT NULL,
    held INTEGER NOT NULL DEFAULT 0,
    at REAL NOT NULL
);
CREATE INDEX outbox_unlogged ON outbox (seq) WHERE logged = 0;
CREATE INDEX outbox_undelivered ON outbox (seq) WHERE delivered = 0;
"""
"""The event outbox: every audit event, written in the transaction of the change it records, and,
with Kafka, every task event, until the local log (``logged``) and Kafka (``delivered``) both have it.
``body`` is the encoded event (one line of the log); ``key`` its Kafka partition key. A ``held`` event
records a change made outside the database (a module install renames files): it is written before
the change and released after it, or reconciled with the files at the next start."""
_SCHEMA_6 = """
ALTER TABLE tokens ADD COLUMN last_used_at TEXT;
ALTER TABLE tokens ADD COLUMN replaced_by TEXT NOT NULL DEFAULT '';
DROP INDEX tokens_live_name;
CREATE UNIQUE INDEX tokens_live_name ON tokens (name) WHERE revoked_at IS NULL AND replaced_by = '';
"""
"""Credentials' last use and rotation. ``last_used_at`` is written coarsely (at most once a minute per
credential, by the daemon's flusher). ``replaced_by`` is the id of the credential a rotation issued
in this one's place: the old one keeps its name and works until its ``expires_at`` (the end of the
overlap), so a name is unique among live credentials that nothing replaced. Columns are only added
(a database of schema 5, from a backup say, gains them empty); the one index is re-made with the
narrower condition under its old name."""
_MIGRATIONS = (_SCHEMA, _SCHEMA_2, _SCHEMA_3, _SCHEMA_4, _SCHEMA_5, _SCHEMA_6)
"""Step i brings a database at schema i to schema i + 1."""


_PROBLEMS_SHOWN = 3
_DAMAGED_HINT = "restore it from a backup, or move it away to start with empty state"
_EMPTY_HINT = (
    "if it held state, restore it from a backup; to start with empty state, start aiond once with "
    "--init-state (or AIOND_INIT_STATE=1), or move the file away"
)


class DamagedState(InputError):
    """The state database is unreadable, damaged, or not aiond's."""


def apply_migrations(db: sqlite3.Connection, from_version: int) -> None:
    """Bring ``db`` from schema ``from_version`` to :data:`SCHEMA_VERSION`, inside the caller's
    transaction: statement by statement, since ``executescript()`` would commit it first."""
    for step in _MIGRATIONS[from_version:]:
        for statement in step.split(";\n"):
            if statement.strip():
                db.execute(statement)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def create(path: Path) -> None:
    """Create the state database at ``path`` with the whole schema, unless one appeared meanwhile.

    It is built under a temporary name in the same directory, then hard-linked to ``path``, which
    fails rather than replaces when another process (``aiond token create``, say) created it first.
    """
    fd, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".new")
    os.close(fd)
    temp = Path(temp_name)
    try:
        db = sqlite3.connect(temp, isolation_level=None)
        try:
            db.execute("PRAGMA synchronous = FULL")
            db.execute("BEGIN IMMEDIATE")
            apply_migrations(db, 0)
            db.execute("COMMIT")
        finally:
            db.close()
        with contextlib.suppress(FileExistsError):  # the one created first stands
            os.link(temp, path)
        _sync_directory(path.parent)
    except (OSError, sqlite3.Error) as exc:
        raise InputError(
            f"cannot create the state database {path}: {exc}",
            hint="choose a writable directory with --state-dir",
        ) from exc
    finally:
        temp.unlink(missing_ok=True)


def _sync_directory(directory: Path) -> None:
    """Make the new name durable: the database's own fsyncs cover its contents, not its directory."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def inspect(db: sqlite3.Connection, path: Path, *, initialise: bool) -> int:
    """Check the database ``db`` (opened on ``path``) before anything else touches it, and return its
    schema version: 0 only for an empty database that ``initialise`` allows to be set up."""
    report = [str(row[0]) for row in db.execute(f"PRAGMA quick_check({_PROBLEMS_SHOWN})")]
    if report != ["ok"]:
        # One line per problem, without SQLite's "*** in database main ***" headings.
        problems = [line for text in report for line in text.splitlines() if not line.startswith("***")]
        raise DamagedState(
            f"the state database {path} is damaged: {'; '.join(problems[:_PROBLEMS_SHOWN])}",
            hint=_DAMAGED_HINT,
        )
    version = int(db.execute("PRAGMA user_version").fetchone()[0])
    if version == 0:
        if db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
            raise DamagedState(
                f"{path} is not an aiond state database: it holds tables, but no aiond schema version",
                hint="check --state-dir; move the file away to start with empty state",
            )
        if not initialise:
            raise DamagedState(
                f"the state database {path} is empty: it holds no aiond schema, so any tokens and "
                "policy history it had are gone",
                hint=_EMPTY_HINT,
            )
        return 0
    if version > SCHEMA_VERSION:
        raise InputError(
            f"the state database {path} was written by a newer aiond "
            f"(schema {version}; this aiond knows {SCHEMA_VERSION})",
            hint="run the newer aiond, or restore a backup made by this version",
        )
    missing = sorted(objects_at(version) - _objects(db), key=lambda kind_name: kind_name[::-1])
    if missing:
        listed = ", ".join(f"{kind} {name}" for kind, name in missing)
        raise DamagedState(
            f"the state database {path} is damaged: it lacks {listed}, which schema {version} needs",
            hint=_DAMAGED_HINT,
        )
    return version


def damaged(path: Path, exc: sqlite3.Error) -> InputError:
    """The error for a database SQLite failed to read: damaged when SQLite finds a broken page
    (``quick_check`` itself stops so on some), unreadable when the file is no database at all."""
    reason = getattr(exc, "sqlite_errorname", "")
    if reason == "SQLITE_CORRUPT":
        return DamagedState(f"the state database {path} is damaged: {exc}", hint=_DAMAGED_HINT)
    if reason == "SQLITE_NOTADB":
        return DamagedState(f"the state database {path} is unreadable: {exc}", hint=_DAMAGED_HINT)
    return InputError(
        f"cannot read the state database {path}: {exc}", hint="check the disk and the file's permissions"
    )


@functools.cache
def objects_at(version: int) -> frozenset[tuple[str, str]]:
    """The tables and indexes of schema ``version``, found by building it in memory, so that the
    migrations above stay the one definition of the schema."""
    db = sqlite3.connect(":memory:", isolation_level=None)
    try:
        for step in _MIGRATIONS[:version]:
            db.executescript(step)
        return _objects(db)
    finally:
        db.close()


def _objects(db: sqlite3.Connection) -> frozenset[tuple[str, str]]:
    """Tables and indexes by (type, name), without SQLite's own (which follow from these)."""
    rows: Sequence[tuple[str, str]] = db.execute(
        "SELECT type, name FROM sqlite_master WHERE type IN ('table', 'index') AND name NOT LIKE 'sqlite_%'"
    ).fetchall()
    return frozenset((str(kind), str(name)) for kind, name in rows)


__all__ = ["SCHEMA_VERSION", "DamagedState", "apply_migrations", "create", "damaged", "inspect", "objects_at"]
