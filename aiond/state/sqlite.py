"""The embedded state backend: one SQLite database (``STATE_DIR/state.db``) in WAL mode. Its schema,
how a new one is created and what is checked before an existing one is used live in
:mod:`aiond.state.schema`."""

from __future__ import annotations

import dataclasses
import datetime as dt
import errno
import hashlib
import json
import os
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from aion.errors import ConflictError, InputError, storage_error
from aiond.state import schema
from aiond.state.backend import (
    Activation,
    IntentMode,
    ModuleParallelism,
    StaleActiveVersion,
    StoredVersion,
    TokenRecord,
)
from aiond.state.schema import SCHEMA_VERSION

DB_NAME = "state.db"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _iso(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).isoformat(timespec="microseconds")


def _when(text: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(text) if text else None


class SqliteState:
    """The embedded backend: one SQLite database in WAL mode.

    ``synchronous=FULL`` makes every committed change durable before the call returns, so an
    acknowledged apply survives a crash or power loss. Other processes (``aiond token`` on the same
    state directory) may open the database while the daemon runs; WAL lets them read and write
    without stopping the daemon, and ``busy_timeout`` makes writers queue instead of failing.
    """

    def __init__(self, path: Path, *, initialise: bool = False) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._read_lock = threading.Lock()
        try:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10.0)
        except sqlite3.Error as exc:
            raise InputError(f"cannot open the state database {path}: {exc}") from exc
        self._reader: sqlite3.Connection | None = None
        try:
            try:
                path.chmod(0o600)
            except OSError as exc:
                raise InputError(
                    f"cannot make the state database {path} private: {exc.strerror}",
                    hint="the state directory must belong to the user aiond runs as",
                ) from exc
            self._db.execute("PRAGMA busy_timeout = 10000")
            # Before anything writes to it: a refused database keeps the contents it was found with.
            version = schema.inspect(self._db, path, initialise=initialise)
            mode = self._db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode != "wal":
                raise InputError(f"{path}: cannot switch the state database to WAL mode (got {mode})")
            self._db.execute("PRAGMA synchronous = FULL")
            self._db.execute("PRAGMA foreign_keys = ON")
            if version < SCHEMA_VERSION:
                self._migrate()
            # Reads get their own connection: in WAL mode they never wait for a writer's lock or fsync,
            # so a token lookup on the event loop is not held up by a commit in progress.
            self._reader = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10.0)
            self._reader.execute("PRAGMA busy_timeout = 10000")
            self._reader.execute("PRAGMA query_only = ON")
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise schema.damaged(path, exc) from exc
        except BaseException:
            self._db.close()
            raise

    @classmethod
    def open(cls, state_dir: Path, *, initialise: bool = False) -> SqliteState:
        """Open ``STATE_DIR/state.db``, creating it with the whole schema when there is none (a first
        start). An existing one must be intact and hold aiond's schema; one with no schema at all (a
        0-byte file, say) is set up only with ``initialise``: it may be state that lost its contents."""
        try:
            state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(
                f"cannot create state directory {state_dir}: {exc.strerror}",
                hint="choose a writable directory with --state-dir",
            ) from exc
        path = state_dir / DB_NAME
        if not os.path.lexists(path):
            schema.create(path)
        return cls(path, initialise=initialise)

    def _migrate(self) -> None:
        with self._tx():
            # Read again inside the transaction: another process may have migrated it meanwhile.
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version < SCHEMA_VERSION:
                schema.apply_migrations(self._db, version)

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken up front (BEGIN IMMEDIATE) so it never fails half-way on a
        lock upgrade; committed on success, rolled back on any error."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                    self._db.execute("COMMIT")
                except BaseException:
                    if self._db.in_transaction:  # SQLite may have rolled back already (a failed COMMIT)
                        self._db.execute("ROLLBACK")
                    raise
            except sqlite3.OperationalError as exc:
                raise _storage_error(exc, self.path) from exc

    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[sqlite3.Row | tuple[Any, ...]]:
        assert self._reader is not None
        with self._read_lock:
            return list(self._reader.execute(sql, args).fetchall())

    # -- policy versions ---------------------------------------------------------------------------

    def add_version(
        self,
        files: Sequence[tuple[str, bytes]],
        *,
        tag: str,
        author: str,
        source: str,
        description: str,
        expected_active_tag: str | None = None,
    ) -> StoredVersion:
        created = _now()
        with self._tx() as db:
            if expected_active_tag is not None:
                row = db.execute(
                    "SELECT v.tag FROM policy_activations a JOIN policy_versions v ON v.number = a.version "
                    "ORDER BY a.sequence DESC LIMIT 1"
                ).fetchone()
                current = row[0] if row else ""
                if current != expected_active_tag:
                    raise StaleActiveVersion(
                        f"the active version changed: expected tag {expected_active_tag}, "
                        f"found {current or 'no active version'}",
                        hint="look at `aionctl policy status`, then apply again",
                    )
            number = db.execute("SELECT COALESCE(MAX(number), 0) + 1 FROM policy_versions").fetchone()[0]
            db.execute(
                "INSERT INTO policy_versions (number, tag, author, created_at, source, description) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (number, tag, author, _iso(created), source, description),
            )
            for path, content in files:
                digest = hashlib.sha256(content).hexdigest()
                db.execute("INSERT OR IGNORE INTO blobs (sha256, content) VALUES (?, ?)", (digest, content))
                db.execute(
                    "INSERT INTO policy_files (version, path, blob) VALUES (?, ?, ?)", (number, path, digest)
                )
            db.execute("INSERT INTO policy_activations (version, at) VALUES (?, ?)", (number, _iso(created)))
        return StoredVersion(number, tag, author, created, source, description)

    _VERSION_COLUMNS = "number, tag, author, created_at, source, description"

    @staticmethod
    def _version(row: Sequence[Any]) -> StoredVersion:
        return StoredVersion(int(row[0]), row[1], row[2], dt.datetime.fromisoformat(row[3]), row[4], row[5])

    def versions(self, *, limit: int, before: int | None = None) -> list[StoredVersion]:
        rows = self._read(
            f"SELECT {self._VERSION_COLUMNS} FROM policy_versions WHERE number < ? "
            "ORDER BY number DESC LIMIT ?",
            (before if before is not None else 2**62, limit),
        )
        return [self._version(r) for r in rows]

    def version(self, number: int) -> StoredVersion | None:
        rows = self._read(f"SELECT {self._VERSION_COLUMNS} FROM policy_versions WHERE number = ?", (number,))
        return self._version(rows[0]) if rows else None

    def versions_with_tag_prefix(self, prefix: str) -> list[StoredVersion]:
        rows = self._read(
            f"SELECT {self._VERSION_COLUMNS} FROM policy_versions WHERE substr(tag, 1, ?) = ? "
            "ORDER BY number DESC",
            (len(prefix), prefix),
        )
        return [self._version(r) for r in rows]

    def files(self, number: int) -> list[tuple[str, bytes]]:
        rows = self._read(
            "SELECT f.path, b.content FROM policy_files f JOIN blobs b ON b.sha256 = f.blob "
            "WHERE f.version = ? ORDER BY f.path",
            (number,),
        )
        return [(str(r[0]), bytes(r[1])) for r in rows]

    def active(self) -> tuple[StoredVersion, dt.datetime] | None:
        rows = self._read(
            f"SELECT {', '.join('v.' + c for c in self._VERSION_COLUMNS.split(', '))}, a.at "
            "FROM policy_activations a JOIN policy_versions v ON v.number = a.version "
            "ORDER BY a.sequence DESC LIMIT 1"
        )
        if not rows:
            return None
        return self._version(rows[0]), dt.datetime.fromisoformat(rows[0][6])

    def activations(self, *, limit: int) -> list[Activation]:
        rows = self._read(
            "SELECT sequence, version, at FROM policy_activations ORDER BY sequence DESC LIMIT ?", (limit,)
        )
        return [Activation(int(r[0]), int(r[1]), dt.datetime.fromisoformat(r[2])) for r in rows]

    def record_error(self, error: dict[str, Any]) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO meta (key, value) VALUES ('last_error', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (json.dumps(error, separators=(",", ":")),),
            )

    def last_error(self) -> dict[str, Any] | None:
        rows = self._read("SELECT value FROM meta WHERE key = 'last_error'")
        if not rows:
            return None
        value: dict[str, Any] = json.loads(rows[0][0])
        return value

    # -- spending -------------------------------------------------------------------------------------

    def spent(self, day: str) -> int:
        rows = self._read("SELECT nano_usd FROM spend WHERE day = ?", (day,))
        return int(rows[0][0]) if rows else 0

    def add_spend(self, spends: Mapping[str, int]) -> None:
        with self._tx() as db:
            db.executemany(
                "INSERT INTO spend (day, nano_usd) VALUES (?, ?) "
                "ON CONFLICT (day) DO UPDATE SET nano_usd = nano_usd + excluded.nano_usd",
                sorted(spends.items()),
            )

    # -- intent modes ---------------------------------------------------------------------------------

    def intent_modes(self) -> list[IntentMode]:
        rows = self._read("SELECT intent, mode, set_by, set_at, reason FROM intent_modes ORDER BY intent")
        return [IntentMode(r[0], r[1], r[2], dt.datetime.fromisoformat(r[3]), r[4]) for r in rows]

    def set_intent_mode(self, mode: IntentMode | None, intent: str) -> None:
        with self._tx() as db:
            if mode is None:
                db.execute("DELETE FROM intent_modes WHERE intent = ?", (intent,))
            else:
                db.execute(
                    "INSERT INTO intent_modes (intent, mode, set_by, set_at, reason) VALUES (?, ?, ?, ?, ?) "
                    "ON CONFLICT (intent) DO UPDATE SET mode = excluded.mode, set_by = excluded.set_by, "
                    "set_at = excluded.set_at, reason = excluded.reason",
                    (intent, mode.mode, mode.set_by, _iso(mode.set_at), mode.reason),
                )

    # -- module parallelism -----------------------------------------------------------------------------

    def module_parallelism(self) -> list[ModuleParallelism]:
        rows = self._read(
            "SELECT module, parallelism, set_by, set_at, reason FROM module_parallelism ORDER BY module"
        )
        return [ModuleParallelism(r[0], int(r[1]), r[2], dt.datetime.fromisoformat(r[3]), r[4]) for r in rows]

    def set_module_parallelism(self, setting: ModuleParallelism) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO module_parallelism (module, parallelism, set_by, set_at, reason) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (module) DO UPDATE SET "
                "parallelism = excluded.parallelism, set_by = excluded.set_by, set_at = excluded.set_at, "
                "reason = excluded.reason",
                (setting.module, setting.parallelism, setting.set_by, _iso(setting.set_at), setting.reason),
            )

    # -- credentials ---------------------------------------------------------------------------------

    _TOKEN_COLUMNS = "id, name, role, secret_sha256, created_at, created_by, expires_at, revoked_at, identity"  # noqa: S105

    @staticmethod
    def _token(row: Sequence[Any]) -> TokenRecord:
        return TokenRecord(
            id=row[0],
            name=row[1],
            role=row[2],
            secret_sha256=row[3],
            created_at=dt.datetime.fromisoformat(row[4]),
            created_by=row[5],
            expires_at=_when(row[6]),
            revoked_at=_when(row[7]),
            identity=row[8],
        )

    def add_token(self, record: TokenRecord) -> None:
        try:
            with self._tx() as db:
                db.execute(
                    f"INSERT INTO tokens ({self._TOKEN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        record.id,
                        record.name,
                        record.role,
                        record.secret_sha256,
                        _iso(record.created_at),
                        record.created_by,
                        _iso(record.expires_at) if record.expires_at else None,
                        None,
                        record.identity,
                    ),
                )
        except sqlite3.IntegrityError as exc:
            what = f"identity {record.identity!r}" if record.identity else f"name {record.name!r}"
            raise ConflictError(
                f"a live credential already has the {what}",
                hint="revoke it first (aiond token revoke), or choose another name",
            ) from exc

    def token(self, token_id: str) -> TokenRecord | None:
        rows = self._read(f"SELECT {self._TOKEN_COLUMNS} FROM tokens WHERE id = ?", (token_id,))
        return self._token(rows[0]) if rows else None

    def token_for_identity(self, identity: str) -> TokenRecord | None:
        rows = self._read(
            f"SELECT {self._TOKEN_COLUMNS} FROM tokens WHERE identity = ? AND identity != '' "
            "AND revoked_at IS NULL",
            (identity,),
        )
        return self._token(rows[0]) if rows else None

    def tokens(self, *, include_revoked: bool = False) -> list[TokenRecord]:
        where = "" if include_revoked else "WHERE revoked_at IS NULL"
        rows = self._read(f"SELECT {self._TOKEN_COLUMNS} FROM tokens {where} ORDER BY created_at, id")
        return [self._token(r) for r in rows]

    def revoke_token(self, name_or_id: str, at: dt.datetime) -> TokenRecord:
        with self._tx() as db:
            # An id names one credential exactly; only when no live id matches is it taken as a name.
            row = (
                db.execute(
                    f"SELECT {self._TOKEN_COLUMNS} FROM tokens WHERE revoked_at IS NULL AND id = ?",
                    (name_or_id,),
                ).fetchone()
                or db.execute(
                    f"SELECT {self._TOKEN_COLUMNS} FROM tokens WHERE revoked_at IS NULL AND name = ?",
                    (name_or_id,),
                ).fetchone()
            )
            if row is None:
                raise InputError(
                    f"no live credential is named {name_or_id!r}", hint="list them with: aiond token list"
                )
            db.execute("UPDATE tokens SET revoked_at = ? WHERE id = ?", (_iso(at), row[0]))
        return dataclasses.replace(self._token(row), revoked_at=at)

    def close(self) -> None:
        with self._lock, self._read_lock:
            if self._reader is not None:
                self._reader.close()
            self._db.close()


_FULL = frozenset({sqlite3.SQLITE_FULL})
_UNWRITABLE = frozenset(
    {sqlite3.SQLITE_READONLY, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PERM}
)


def _storage_error(exc: sqlite3.OperationalError, path: Path) -> Exception:
    """A write that SQLite could not make: a full disk, or one that cannot be written, as the errors
    users see; anything else unchanged (a bug, or a lock held too long)."""
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None  # extended codes keep the primary below
    if primary in _FULL:
        return storage_error(OSError(errno.ENOSPC, "no space left on device"), f"the state database {path}")
    if primary in _UNWRITABLE:
        return storage_error(OSError(errno.EROFS, str(exc)), f"the state database {path}")
    return exc


__all__ = ["DB_NAME", "SCHEMA_VERSION", "SqliteState"]
