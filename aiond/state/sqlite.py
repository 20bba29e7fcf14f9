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
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from aion.errors import ConflictError, EventsBacklogged, InputError, storage_error
from aion.eventlog import encode
from aiond.state import schema
from aiond.state.backend import (
    Activation,
    AuditFor,
    IntentMode,
    ModuleParallelism,
    OutboxLevels,
    OutboxRow,
    Rotation,
    StaleActiveVersion,
    StoredVersion,
    TokenRecord,
)
from aiond.state.schema import SCHEMA_VERSION

DB_NAME = "state.db"
OUTBOX_BYTES = 256 * 1024 * 1024
"""How many bytes of events may wait in the outbox, unless the Kafka settings say otherwise."""
_IN_CHUNK = 500
"""Row numbers per ``IN (...)`` list: well under SQLite's limit on bound parameters."""


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
        self._outbox_reader: sqlite3.Connection | None = None
        self._outbox_read_lock = threading.Lock()
        self._kafka: bool | None = None
        """Whether audit events wait for Kafka too: set by the daemon, which records it in ``meta`` for
        other processes on the same state (``aiond token``) to follow."""
        self._outbox_max = OUTBOX_BYTES
        self._outbox: list[int] | None = None
        """[audit events, task events, bytes] in the outbox, kept with every change (None: not
        counted yet). Changed only under the write lock, and put back when a transaction fails."""
        self.shed: dict[str, int] = {}
        """Task events shed because the outbox was full, by topic, since start."""
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
    def _tx(self, *, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken up front (BEGIN IMMEDIATE) so it never fails half-way on a
        lock upgrade; committed on success, rolled back on any error. Not ``durable``: committed
        without waiting for the disk (``synchronous=NORMAL``; in WAL mode a crash of the process loses
        nothing, a power loss may lose the last such commits), for writes whose loss only repeats work
        (marking events delivered: a lost mark means one more copy, with the same id)."""
        with self._lock:
            counted = None if self._outbox is None else list(self._outbox)
            shed = dict(self.shed)
            if not durable:
                self._db.execute("PRAGMA synchronous = NORMAL")
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                    self._db.execute("COMMIT")
                except BaseException:
                    if self._db.in_transaction:  # SQLite may have rolled back already (a failed COMMIT)
                        self._db.execute("ROLLBACK")
                    self._outbox, self.shed = counted, shed  # the rows they counted are back as they were
                    raise
            except sqlite3.OperationalError as exc:
                raise _storage_error(exc, self.path) from exc
            finally:
                if not durable:
                    self._db.execute("PRAGMA synchronous = FULL")

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
        audit: AuditFor[StoredVersion] = None,
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
            stored = StoredVersion(number, tag, author, created, source, description)
            if audit is not None:
                self._add_audit(db, [audit(stored)])
        return stored

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

    def set_intent_mode(
        self, mode: IntentMode | None, intent: str, *, audit: dict[str, Any] | None = None
    ) -> None:
        with self._tx() as db:
            if audit is not None:
                self._add_audit(db, [audit])
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

    def set_module_parallelism(
        self, setting: ModuleParallelism, *, audit: dict[str, Any] | None = None
    ) -> None:
        with self._tx() as db:
            if audit is not None:
                self._add_audit(db, [audit])
            db.execute(
                "INSERT INTO module_parallelism (module, parallelism, set_by, set_at, reason) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (module) DO UPDATE SET "
                "parallelism = excluded.parallelism, set_by = excluded.set_by, set_at = excluded.set_at, "
                "reason = excluded.reason",
                (setting.module, setting.parallelism, setting.set_by, _iso(setting.set_at), setting.reason),
            )

    # -- credentials ---------------------------------------------------------------------------------

    _TOKEN_COLUMNS = (
        "id, name, role, secret_sha256, created_at, created_by, expires_at, revoked_at, identity, "  # noqa: S105
        "last_used_at, replaced_by"
    )

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
            last_used_at=_when(row[9]),
            replaced_by=row[10],
        )

    def _insert_token(self, db: sqlite3.Connection, record: TokenRecord) -> None:
        try:
            db.execute(
                f"INSERT INTO tokens ({self._TOKEN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
                    _iso(record.last_used_at) if record.last_used_at else None,
                    record.replaced_by,
                ),
            )
        except sqlite3.IntegrityError as exc:
            what = f"identity {record.identity!r}" if record.identity else f"name {record.name!r}"
            raise ConflictError(
                f"a live credential already has the {what}",
                hint="revoke it first (aiond token revoke), or choose another name",
            ) from exc

    def add_token(self, record: TokenRecord, *, audit: dict[str, Any] | None = None) -> None:
        with self._tx() as db:
            if audit is not None:
                self._add_audit(db, [audit])
            self._insert_token(db, record)

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

    def _live(self, db: sqlite3.Connection, name_or_id: str) -> list[TokenRecord]:
        """The live credential of an id; when no live id matches, the live ones of that name, the
        current one (which nothing replaced) first."""
        # An id names one credential exactly; only when no live id matches is it taken as a name.
        found = (
            db.execute(
                f"SELECT {self._TOKEN_COLUMNS} FROM tokens WHERE revoked_at IS NULL AND id = ?", (name_or_id,)
            ).fetchall()
            or db.execute(
                f"SELECT {self._TOKEN_COLUMNS} FROM tokens WHERE revoked_at IS NULL AND name = ? "
                "ORDER BY replaced_by != '', created_at DESC",
                (name_or_id,),
            ).fetchall()
        )
        if not found:
            raise InputError(
                f"no live credential is named {name_or_id!r}",
                hint="list them with: aiond token list (or aionctl token list)",
            )
        return [self._token(row) for row in found]

    def revoke_token(
        self, name_or_id: str, at: dt.datetime, *, audit: AuditFor[TokenRecord] = None
    ) -> TokenRecord:
        with self._tx() as db:
            # By name, the credentials a rotation replaced go too: revoking a name ends all of it.
            revoked = [dataclasses.replace(r, revoked_at=at) for r in self._live(db, name_or_id)]
            for record in revoked:
                db.execute("UPDATE tokens SET revoked_at = ? WHERE id = ?", (_iso(at), record.id))
                if audit is not None:
                    self._add_audit(db, [audit(record)])
        return revoked[0]

    def rotate_token(
        self,
        name_or_id: str,
        issue: Callable[[TokenRecord], TokenRecord],
        *,
        at: dt.datetime,
        overlap: dt.timedelta,
        audit: AuditFor[Rotation] = None,
    ) -> Rotation:
        with self._tx() as db:
            old = self._live(db, name_or_id)[0]
            if old.identity:
                raise ConflictError(
                    f"credential {old.name!r} grants a role to certificate identity {old.identity!r}: "
                    "it has no secret to rotate",
                    hint="create a grant for the new identity (aiond token create --identity), then "
                    "revoke this one",
                )
            if old.replaced_by:
                raise ConflictError(
                    f"credential {old.id} ({old.name!r}) was rotated already: {old.replaced_by} replaced it",
                    hint=f"rotate the current one, by its name: {old.name}",
                )
            if old.expires_at is not None and old.expires_at <= at:
                raise ConflictError(
                    f"credential {old.name!r} expired at {_iso(old.expires_at)}: there is nothing to rotate",
                    hint="revoke it, then create a new one (aiond token create)",
                )
            new = issue(old)
            ends = at + overlap
            if old.expires_at is not None and old.expires_at < ends:
                ends = old.expires_at
            db.execute(
                "UPDATE tokens SET expires_at = ?, replaced_by = ? WHERE id = ?", (_iso(ends), new.id, old.id)
            )
            self._insert_token(db, new)
            rotation = Rotation(dataclasses.replace(old, expires_at=ends, replaced_by=new.id), new)
            if audit is not None:
                self._add_audit(db, [audit(rotation)])
        return rotation

    def note_token_use(self, uses: Mapping[str, dt.datetime]) -> None:
        if not uses:
            return
        # Not durable: a last use lost to a power cut is only a little older than it should be.
        with self._tx(durable=False) as db:
            db.executemany(
                "UPDATE tokens SET last_used_at = ?1 "
                "WHERE id = ?2 AND (last_used_at IS NULL OR last_used_at < ?1)",
                [(_iso(when), token_id) for token_id, when in sorted(uses.items())],
            )

    # -- the event outbox ---------------------------------------------------------------------------

    def configure_outbox(self, *, kafka: bool, max_bytes: int) -> int:
        """Without Kafka, events that waited for it (a daemon that had Kafka before) stay only in the
        local log from now on; returns how many there were."""
        dropped = 0
        with self._tx() as db:
            if not kafka:
                dropped = db.execute("UPDATE outbox SET delivered = 1 WHERE delivered = 0").rowcount
                db.execute("DELETE FROM outbox WHERE logged = 1 AND delivered = 1")
            db.execute(
                "INSERT INTO meta (key, value) VALUES ('outbox_kafka', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                ("1" if kafka else "0",),
            )
            self._outbox = None
            self._counted(db)
        self._kafka, self._outbox_max = kafka, max_bytes
        return dropped

    def _counted(self, db: sqlite3.Connection) -> list[int]:
        """The outbox's counts (audit events, task events, bytes), counted once (under the write lock)."""
        if self._outbox is None:
            counts = [0, 0, 0]
            for audit, count, size in db.execute(
                "SELECT audit, count(*), COALESCE(sum(length(body)), 0) FROM outbox GROUP BY audit"
            ):
                counts[0 if audit else 1] += int(count)
                counts[2] += int(size)
            self._outbox = counts
        return self._outbox

    def _add_audit(
        self, db: sqlite3.Connection, events: Sequence[dict[str, Any]], *, held: bool = False
    ) -> None:
        """Audit events into the outbox, inside the caller's transaction. When they do not fit, the
        oldest task events make room; when even that is not enough, the whole change is refused."""
        counts = self._counted(db)
        rows = [
            (str(e["id"]), str(e["topic"]), str(e.get("target") or ""), encode(e).encode()) for e in events
        ]
        size = sum(len(r[3]) for r in rows)
        if counts[2] + size > self._outbox_max:
            self._shed_oldest(db, counts[2] + size - self._outbox_max)
        if counts[2] + size > self._outbox_max:
            raise EventsBacklogged(
                f"the event outbox is full ({counts[2]:,} bytes of events are waiting for Kafka, the limit "
                f"is {self._outbox_max:,}): this change is refused, since its audit event would be lost",
                hint="get Kafka delivering again (aiond's log and aion_kafka_produce_errors_total say why "
                "it is not), or raise kafka.delivery.outbox_max_bytes and restart aiond",
            )
        if self._kafka is None:
            row = db.execute("SELECT value FROM meta WHERE key = 'outbox_kafka'").fetchone()
            self._kafka = row is not None and row[0] == "1"
        delivered = 0 if self._kafka else 1
        now = time.time()
        db.executemany(
            "INSERT INTO outbox (id, topic, key, body, audit, logged, delivered, held, at) "
            "VALUES (?, ?, ?, ?, 1, 0, ?, ?, ?)",
            [(*row, delivered, 1 if held else 0, now) for row in rows],
        )
        counts[0] += len(rows)
        counts[2] += size

    def _shed_oldest(self, db: sqlite3.Connection, need: int) -> None:
        """Delete the oldest task events until ``need`` bytes are free (or none is left)."""
        counts = self._counted(db)
        freed = 0
        while freed < need:
            found = db.execute(
                "SELECT seq, topic, length(body) FROM outbox WHERE audit = 0 ORDER BY seq LIMIT 1000"
            ).fetchall()
            if not found:
                return
            taken = []
            for seq, topic, size in found:
                taken.append(seq)
                freed += size
                counts[1] -= 1
                counts[2] -= size
                self.shed[topic] = self.shed.get(topic, 0) + 1
                if freed >= need:
                    break
            for chunk in _chunks(taken):
                db.execute(f"DELETE FROM outbox WHERE seq IN ({_marks(chunk)})", chunk)

    def outbox_add(self, events: Sequence[dict[str, Any]]) -> None:
        with self._tx() as db:
            self._add_audit(db, events)

    def outbox_hold(self, event: dict[str, Any]) -> int:
        """Write an audit event that waits for :meth:`outbox_release` (or :meth:`outbox_discard`)
        before it goes anywhere; returns its row."""
        with self._tx() as db:
            self._add_audit(db, [event], held=True)
            return int(db.execute("SELECT last_insert_rowid()").fetchone()[0])

    def outbox_release(self, seq: int) -> None:
        with self._tx() as db:
            db.execute("UPDATE outbox SET held = 0 WHERE seq = ?", (seq,))

    def outbox_discard(self, seq: int) -> None:
        """Forget a held event: the change it was to record did not happen."""
        with self._tx() as db:
            counts = self._counted(db)
            row = db.execute("SELECT length(body) FROM outbox WHERE seq = ? AND held = 1", (seq,)).fetchone()
            if row is not None:
                db.execute("DELETE FROM outbox WHERE seq = ?", (seq,))
                counts[0] -= 1
                counts[2] -= int(row[0])

    def outbox_held(self) -> list[OutboxRow]:
        return self._outbox_rows(f"SELECT {self._OUTBOX_COLUMNS} FROM outbox WHERE held = 1 ORDER BY seq", ())

    def outbox_add_tasks(self, rows: Sequence[tuple[str, str, str, str]]) -> dict[str, int]:
        shed: dict[str, int] = {}
        with self._tx() as db:
            counts = self._counted(db)
            kept = []
            for event_id, topic, key, line in rows:
                body = line.encode()
                if counts[2] + len(body) > self._outbox_max:
                    shed[topic] = shed.get(topic, 0) + 1
                    continue
                counts[1] += 1
                counts[2] += len(body)
                kept.append((event_id, topic, key, body))
            now = time.time()
            db.executemany(
                "INSERT INTO outbox (id, topic, key, body, audit, logged, delivered, at) "
                "VALUES (?, ?, ?, ?, 0, 1, 0, ?)",
                [(*row, now) for row in kept],
            )
            for topic, count in shed.items():
                self.shed[topic] = self.shed.get(topic, 0) + count
        return shed

    _OUTBOX_COLUMNS = "seq, id, topic, key, body, audit, at"

    def _outbox_rows(self, sql: str, args: Sequence[Any]) -> list[OutboxRow]:
        """Outbox reads have their own connection: the Kafka relay reads thousands of rows at a time,
        and must not hold up token lookups on the event loop."""
        with self._outbox_read_lock:
            if self._outbox_reader is None:
                self._outbox_reader = sqlite3.connect(
                    self.path, isolation_level=None, check_same_thread=False, timeout=10.0
                )
                self._outbox_reader.execute("PRAGMA busy_timeout = 10000")
                self._outbox_reader.execute("PRAGMA query_only = ON")
            found = self._outbox_reader.execute(sql, args).fetchall()
        return [OutboxRow(int(r[0]), r[1], r[2], r[3], bytes(r[4]), bool(r[5]), float(r[6])) for r in found]

    def outbox_unlogged(self, *, limit: int) -> list[OutboxRow]:
        return self._outbox_rows(
            f"SELECT {self._OUTBOX_COLUMNS} FROM outbox WHERE logged = 0 AND held = 0 ORDER BY seq LIMIT ?",
            (limit,),
        )

    def outbox_undelivered(self, *, after: int, limit: int) -> list[OutboxRow]:
        return self._outbox_rows(
            f"SELECT {self._OUTBOX_COLUMNS} FROM outbox WHERE delivered = 0 AND held = 0 AND seq > ? "
            "ORDER BY seq LIMIT ?",
            (after, limit),
        )

    def outbox_logged(self, seqs: Sequence[int]) -> None:
        self._outbox_done(seqs, "logged", "delivered", durable=True)

    def outbox_delivered(self, seqs: Sequence[int]) -> None:
        self._outbox_done(seqs, "delivered", "logged", durable=False)

    def _outbox_done(self, seqs: Sequence[int], done: str, other: str, *, durable: bool) -> None:
        """Mark rows ``done`` (logged or delivered); those the other side has too leave the outbox."""
        if not seqs:
            return
        with self._tx(durable=durable) as db:
            counts = self._counted(db)
            for chunk in _chunks(seqs):
                marks = _marks(chunk)
                for audit, count, size in db.execute(
                    f"SELECT audit, count(*), COALESCE(sum(length(body)), 0) FROM outbox "
                    f"WHERE seq IN ({marks}) AND {other} = 1 GROUP BY audit",
                    chunk,
                ).fetchall():
                    counts[0 if audit else 1] -= int(count)
                    counts[2] -= int(size)
                db.execute(f"DELETE FROM outbox WHERE seq IN ({marks}) AND {other} = 1", chunk)
                db.execute(f"UPDATE outbox SET {done} = 1 WHERE seq IN ({marks})", chunk)

    def outbox_levels(self) -> OutboxLevels:
        oldest = self._outbox_rows(f"SELECT {self._OUTBOX_COLUMNS} FROM outbox ORDER BY seq LIMIT 1", ())
        with self._lock:
            counts = self._counted(self._db) if self._outbox is None else self._outbox
            audit, task, size = counts
        return OutboxLevels(audit, task, max(size, 0), oldest[0].at if oldest else None)

    def close(self) -> None:
        with self._lock, self._read_lock, self._outbox_read_lock:
            if self._reader is not None:
                self._reader.close()
            if self._outbox_reader is not None:
                self._outbox_reader.close()
            self._db.close()


def _chunks(seqs: Sequence[int]) -> Iterator[list[int]]:
    for start in range(0, len(seqs), _IN_CHUNK):
        yield list(seqs[start : start + _IN_CHUNK])


def _marks(chunk: Sequence[int]) -> str:
    return ", ".join("?" * len(chunk))


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


__all__ = ["DB_NAME", "OUTBOX_BYTES", "SCHEMA_VERSION", "SqliteState"]
