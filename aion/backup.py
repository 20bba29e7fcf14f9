"""Snapshots of aiond's state: what one holds, how it is made, checked and restored, and its summary.

A snapshot is one uncompressed tar file, ``aion-backup-<UTC time>.tar`` (``20260512T101500.123Z``),
holding, in this order:

    manifest.json          the format version, when and by what it was made, the state's schema
                           version, the size and SHA-256 of every other member, and the summary
    state.db               the state database, copied with SQLite's online backup API: one read
                           transaction, so the copy is consistent while aiond writes (WAL readers
                           never block the writer), then switched out of WAL mode so it is one file
    modules/aion.lock      the module store's lock file, as it was (absent when nothing is installed)
    modules/digests.json   each installed module's name, reference, digest, and the digest of its files
                           recorded at install (null when its directory is missing)

The module files themselves are not in it: they are signed artifacts in a registry, reinstalled by
digest from the lock file (``aionctl install REF@DIGEST``).

The **summary** (:func:`summary`) is computed from a state database alone: policy versions, the
active version, live tokens, intent modes, module parallelism and spend by day. It is in the manifest,
so a restore is confirmed by comparing the summary of the backup with the summary of the restored
daemon's next backup: equal means the restore matched.

Every side needs this module (aiond's online and scheduled snapshots, aionctl's offline ones,
``verify`` and ``restore``), and aionctl may not import aiond, so the little of the state directory's
format it needs is restated here: the database's name, its lock file (``aiond.lock``, an exclusive
``flock`` held by a running aiond), and the newest schema version, which a unit test keeps equal to
``aiond.state.schema.SCHEMA_VERSION``. The database is read with plain ``sqlite3``.

Nothing here half-writes: a snapshot is written under a temporary name, synced and linked into place;
a restore is built in a temporary directory next to the state directory and renamed onto it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import errno
import fcntl
import hashlib
import io
import json
import os
import re
import shutil
import sqlite3
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from aion.errors import ConflictError, InputError, VerificationError, storage_error

FORMAT_VERSION = 1
"""The snapshot format written here; :func:`verify` knows only this one."""
SCHEMA_VERSION = 6
"""The newest state schema this aion knows (``aiond.state.schema.SCHEMA_VERSION``, checked equal by a
test). A snapshot of an older schema is restored as it is: aiond migrates it at its next start."""
STATE_DB = "state.db"
LOCK_NAME = "aiond.lock"
"""The state directory's lock file (``aiond.state.lock``): an exclusive flock while aiond runs."""
MODULE_LOCK_FILE = "aion.lock"

MANIFEST = "manifest.json"
MODULE_LOCK = "modules/aion.lock"
MODULE_DIGESTS = "modules/digests.json"
MEMBER_ORDER = (MANIFEST, STATE_DB, MODULE_LOCK, MODULE_DIGESTS)
REQUIRED = frozenset({MANIFEST, STATE_DB, MODULE_DIGESTS})

MAX_MANIFEST_BYTES = 1 << 20
MAX_MODULE_FILE_BYTES = 64 << 20
MAX_LISTED = 10_000
"""Most snapshots :func:`snapshots` returns (the newest)."""
_CHUNK = 1 << 20

PREFIX = "aion-backup-"
SUFFIX = ".tar"
_NAME = re.compile(r"^aion-backup-(\d{8}T\d{6}\.\d{3}Z)\.tar$")
_STAMP = "%Y%m%dT%H%M%S.%fZ"


# -- the summary -------------------------------------------------------------------------------------


def summary(db_path: Path) -> dict[str, Any]:
    """What a state database holds, in a form to compare: the same state gives the same summary.

    ``policyVersions``: how many are stored; ``active``: the active version's number and tag (null
    when none); ``tokens``: live (unrevoked) credentials, their count and ids, sorted;
    ``intentModes``: intent -> mode switched at runtime; ``moduleParallelism``: module -> parallelism;
    ``spendNanoUsd``: day (UTC, ``YYYY-MM-DD``) -> nano-USD spent. A table the database's schema
    version predates counts as empty. InputError when the file is not a readable SQLite database.
    """
    with _readonly(db_path) as db:
        return _summary(db)


def _summary(db: sqlite3.Connection) -> dict[str, Any]:
    tables = {str(r[0]) for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}

    def rows(table: str, sql: str) -> list[tuple[Any, ...]]:
        return list(db.execute(sql).fetchall()) if table in tables else []

    count = rows("policy_versions", "SELECT count(*) FROM policy_versions")
    active = rows(
        "policy_activations",
        "SELECT v.number, v.tag FROM policy_activations a JOIN policy_versions v ON v.number = a.version "
        "ORDER BY a.sequence DESC LIMIT 1",
    )
    tokens = [str(r[0]) for r in rows("tokens", "SELECT id FROM tokens WHERE revoked_at IS NULL ORDER BY id")]
    return {
        "policyVersions": int(count[0][0]) if count else 0,
        "active": {"number": int(active[0][0]), "tag": str(active[0][1])} if active else None,
        "tokens": {"count": len(tokens), "ids": tokens},
        "intentModes": {
            str(r[0]): str(r[1])
            for r in rows("intent_modes", "SELECT intent, mode FROM intent_modes ORDER BY intent")
        },
        "moduleParallelism": {
            str(r[0]): int(r[1])
            for r in rows(
                "module_parallelism", "SELECT module, parallelism FROM module_parallelism ORDER BY module"
            )
        },
        "spendNanoUsd": {
            str(r[0]): int(r[1]) for r in rows("spend", "SELECT day, nano_usd FROM spend ORDER BY day")
        },
    }


@contextlib.contextmanager
def _readonly(db_path: Path) -> Iterator[sqlite3.Connection]:
    if not db_path.is_file():
        raise InputError(f"{db_path}: no state database there", hint="give the state directory of an aiond")
    try:
        db = sqlite3.connect(f"{db_path.absolute().as_uri()}?mode=ro", uri=True, timeout=10.0)
    except sqlite3.Error as exc:
        raise InputError(f"cannot open the state database {db_path}: {exc}") from exc
    try:
        db.execute("PRAGMA busy_timeout = 10000")
        yield db
    except sqlite3.DatabaseError as exc:
        raise InputError(
            f"cannot read the state database {db_path}: {exc}", hint="check the file: is it aiond's state?"
        ) from exc
    finally:
        db.close()


# -- making a snapshot --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Snapshot:
    """A snapshot file that is complete (made by :func:`create`, or read by :func:`verify`)."""

    path: Path
    created_at: dt.datetime
    size: int
    sha256: str
    schema_version: int
    summary: dict[str, Any]
    manifest: dict[str, Any]


def create(
    db_path: Path,
    out_dir: Path,
    *,
    module_store: Path | None,
    daemon_version: str,
    source: str,
    now: dt.datetime | None = None,
) -> Snapshot:
    """Snapshot the state database ``db_path`` (and the lock file of ``module_store``) into a new
    ``aion-backup-<time>.tar`` in ``out_dir``. Safe while aiond writes the database; it blocks for as
    long as the copy takes, so aiond runs it in a thread. ``source`` says what made it (``online``,
    ``scheduled``, ``offline``) and ``daemon_version`` which aion version."""
    created = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise storage_error(exc, f"the backup directory {out_dir}") from exc
    if not out_dir.is_dir():
        raise InputError(f"{out_dir} is not a directory", hint="give a directory for the snapshots")
    work = Path(tempfile.mkdtemp(dir=out_dir, prefix=".aion-backup-", suffix=".partial"))
    try:
        copy = work / STATE_DB
        schema_version = _copy_database(db_path, copy)
        with _readonly(copy) as db:
            state_summary = _summary(db)
        members: dict[str, Path] = {STATE_DB: copy}
        lock_bytes = _module_lock(module_store)
        if lock_bytes is not None:
            (work / "aion.lock").write_bytes(lock_bytes)
            members[MODULE_LOCK] = work / "aion.lock"
        (work / "digests.json").write_bytes(_digests(module_store, lock_bytes))
        members[MODULE_DIGESTS] = work / "digests.json"
        manifest = {
            "apiVersion": "aion/v1",
            "kind": "BackupManifest",
            "formatVersion": FORMAT_VERSION,
            "createdAt": _rfc3339(created),
            "source": source,
            "daemonVersion": daemon_version,
            "schemaVersion": schema_version,
            "members": [
                {"name": name, "size": members[name].stat().st_size, "sha256": _sha256_file(members[name])}
                for name in MEMBER_ORDER
                if name in members
            ],
            "summary": state_summary,
        }
        manifest_bytes = json.dumps(manifest, indent=2).encode() + b"\n"
        archive = work / "archive.tar"
        stamp = created.timestamp()
        with archive.open("wb") as handle:
            with tarfile.open(fileobj=handle, mode="w", format=tarfile.PAX_FORMAT) as tar:
                tar.addfile(_info(MANIFEST, len(manifest_bytes), stamp), io.BytesIO(manifest_bytes))
                for name in MEMBER_ORDER[1:]:
                    if name in members:
                        with members[name].open("rb") as data:
                            tar.addfile(_info(name, members[name].stat().st_size, stamp), data)
            handle.flush()
            os.fsync(handle.fileno())
        final = _link_free_name(archive, out_dir, created)
        _fsync_dir(out_dir)
        return Snapshot(
            path=final,
            created_at=created,
            size=final.stat().st_size,
            sha256=_sha256_file(final),
            schema_version=schema_version,
            summary=state_summary,
            manifest=manifest,
        )
    except OSError as exc:
        raise storage_error(exc, f"a snapshot in {out_dir}") from exc
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _copy_database(db_path: Path, into: Path) -> int:
    """The online backup API in one step (one read transaction: a consistent copy, with no restart
    when aiond commits meanwhile), then the copy out of WAL mode; returns its schema version."""
    with _readonly(db_path) as source:
        version = int(source.execute("PRAGMA user_version").fetchone()[0])
        if version < 1:
            raise InputError(f"{db_path} holds no aiond schema", hint="is it the state of an aiond?")
        target = sqlite3.connect(into, isolation_level=None)
        try:
            source.backup(target)
            target.execute("PRAGMA journal_mode = DELETE")
        except sqlite3.Error as exc:
            raise InputError(f"cannot copy the state database {db_path}: {exc}") from exc
        finally:
            target.close()
    return version


def _module_lock(store: Path | None) -> bytes | None:
    if store is None:
        return None
    path = store / MODULE_LOCK_FILE
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_MODULE_FILE_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise InputError(f"cannot read the module store's lock file {path}: {exc.strerror}") from exc
    if len(data) > MAX_MODULE_FILE_BYTES:
        raise InputError(f"{path} is larger than {MAX_MODULE_FILE_BYTES >> 20} MiB")
    return data


def _digests(store: Path | None, lock_bytes: bytes | None) -> bytes:
    modules = _lock_modules(lock_bytes, MODULE_LOCK) if lock_bytes is not None else {}
    listed = []
    for name in sorted(modules):
        entry = modules[name]
        digest = str(entry.get("digest", ""))
        algorithm, _, hex_part = digest.partition(":")
        tree = None
        if store is not None and algorithm and hex_part and "/" not in digest:
            with contextlib.suppress(OSError, ValueError, AttributeError):
                recorded = json.loads((store / "modules" / algorithm / hex_part / "install.json").read_text())
                tree = str(recorded["tree"]) if recorded.get("tree") else None
        listed.append({"name": name, "ref": str(entry.get("ref", "")), "digest": digest, "tree": tree})
    document = {"apiVersion": "aion/v1", "kind": "ModuleDigests", "modules": listed}
    return json.dumps(document, indent=2).encode() + b"\n"


def _lock_modules(data: bytes, what: str) -> dict[str, dict[str, Any]]:
    try:
        document = json.loads(data)
    except ValueError as exc:
        raise InputError(f"{what}: not JSON ({exc})") from exc
    modules = document.get("modules") if isinstance(document, dict) else None
    if not isinstance(modules, dict) or not all(isinstance(v, dict) for v in modules.values()):
        raise InputError(f"{what}: the lock file has no modules map")
    return modules


def _info(name: str, size: int, mtime: float) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, int(mtime), 0o600
    return info


def _link_free_name(archive: Path, out_dir: Path, created: dt.datetime) -> Path:
    """Link the finished archive under its name; a name taken already (two snapshots in one
    millisecond) moves on by a millisecond, so a snapshot never replaces another."""
    when = created
    for _ in range(1000):
        final = out_dir / snapshot_name(when)
        try:
            os.link(archive, final)
            return final
        except FileExistsError:
            when += dt.timedelta(milliseconds=1)
    raise InputError(f"{out_dir}: no free snapshot name near {snapshot_name(created)}")


def snapshot_name(when: dt.datetime) -> str:
    """``aion-backup-20260512T101500.123Z.tar`` for ``when``."""
    text = when.astimezone(dt.UTC).strftime(_STAMP)
    return f"{PREFIX}{text[:-4]}Z{SUFFIX}"  # microseconds cut to milliseconds


# -- listing and pruning -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Listed:
    path: Path
    created_at: dt.datetime
    size: int


def snapshots(directory: Path) -> list[Listed]:
    """The snapshots in ``directory`` by their names, newest first (at most :data:`MAX_LISTED`);
    temporary files of snapshots being made are not listed."""
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        raise InputError(
            f"{directory}: no such directory", hint="give the directory of the snapshots"
        ) from None
    except NotADirectoryError:
        raise InputError(
            f"{directory} is not a directory", hint="give the directory of the snapshots"
        ) from None
    except OSError as exc:
        raise InputError(f"cannot read {directory}: {exc.strerror}") from exc
    found = []
    for entry in entries:
        match = _NAME.match(entry.name)
        if match is None or not entry.is_file(follow_symlinks=False):
            continue
        with contextlib.suppress(OSError, ValueError):
            when = dt.datetime.strptime(match.group(1), "%Y%m%dT%H%M%S.%fZ").replace(tzinfo=dt.UTC)
            found.append(Listed(Path(entry.path), when, entry.stat(follow_symlinks=False).st_size))
    found.sort(key=lambda s: (s.created_at, s.path.name), reverse=True)
    return found[:MAX_LISTED]


STALE_SECONDS = 86_400
"""Temporary files of a snapshot (``.aion-backup-*``) older than this were left by a crash."""


def prune(directory: Path, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` snapshots of ``directory``, and what a crash left of
    snapshots being made there more than a day ago; returns the snapshots deleted."""
    if keep < 1:
        raise ValueError("keep at least one snapshot")
    deleted = []
    for old in snapshots(directory)[keep:]:
        with contextlib.suppress(FileNotFoundError):
            old.path.unlink()
            deleted.append(old.path)
    now = dt.datetime.now(dt.UTC).timestamp()
    for leftover in directory.glob(".aion-backup-*"):
        with contextlib.suppress(OSError):
            if now - leftover.lstat().st_mtime > STALE_SECONDS:
                if leftover.is_dir() and not leftover.is_symlink():
                    shutil.rmtree(leftover)
                else:
                    leftover.unlink()
    return deleted


# -- verifying ----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Verification:
    """What :func:`verify` found: ``problems`` is empty for an intact snapshot."""

    path: Path
    size: int
    sha256: str
    problems: tuple[str, ...]
    manifest: dict[str, Any] | None
    summary: dict[str, Any] | None

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def schema_version(self) -> int | None:
        version = (self.manifest or {}).get("schemaVersion")
        return version if isinstance(version, int) else None


def verify(path: Path) -> Verification:
    """Check a snapshot without changing anything: the tar holds only the expected regular files,
    the manifest follows its schema and a known format version, every member's size and SHA-256
    match the manifest, ``PRAGMA integrity_check`` passes on the database, its schema version is one
    this aion knows and the manifest's, and its summary is the manifest's. InputError when the file
    cannot be read at all (missing, a directory); damage is reported in ``problems``."""
    with tempfile.TemporaryDirectory(prefix=".aion-verify-", dir=_scratch(path)) as scratch:
        return _check(path, Path(scratch))


def _scratch(path: Path) -> Path | None:
    """Where the database is unpacked to be checked: next to the snapshot when that is writable
    (the same disk had room for it), else the system's temporary directory."""
    parent = path.absolute().parent
    return parent if os.access(parent, os.W_OK | os.X_OK) else None


def _check(path: Path, into: Path) -> Verification:
    """:func:`verify`, unpacking the members into ``into`` (where :func:`restore` keeps them)."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise InputError(
            f"{path}: no such file", hint="`aionctl backup list DIR` shows the snapshots"
        ) from None
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from exc
    if not path.is_file():
        raise InputError(f"{path} is not a regular file", hint="give a snapshot file (aion-backup-*.tar)")
    whole = _sha256_file(path)
    problems: list[str] = []
    manifest, found = _unpack_members(path, into, problems)
    if manifest is None:
        if not any(MANIFEST in p for p in problems):
            problems.append(f"{MANIFEST} is missing")
        return Verification(path, size, whole, tuple(problems), None, None)
    problems += _compare(manifest, found)
    state_summary = None
    if STATE_DB in found and not problems:
        state_summary = _check_database(into / STATE_DB, manifest, problems)
    return Verification(path, size, whole, tuple(problems), manifest, state_summary)


def _unpack_members(
    path: Path, into: Path, problems: list[str]
) -> tuple[dict[str, Any] | None, dict[str, tuple[int, str]]]:
    """The manifest, parsed, and the other members unpacked into ``into`` with their sizes and
    SHA-256s; whatever is wrong with the archive's layout goes to ``problems``."""
    manifest: dict[str, Any] | None = None
    found: dict[str, tuple[int, str]] = {}
    seen: set[str] = set()
    try:
        with tarfile.open(path, mode="r:") as tar:
            for count, member in enumerate(_members(tar)):
                problem = _layout_problem(member, count, seen)
                if problem is not None:
                    problems.append(problem)
                    if count >= len(MEMBER_ORDER):
                        break
                    continue
                seen.add(member.name)
                data = tar.extractfile(member)
                assert data is not None  # a regular member always has data
                if member.name == MANIFEST:
                    manifest = _manifest(data.read(), problems)
                else:
                    target = into / member.name
                    target.parent.mkdir(mode=0o700, exist_ok=True)
                    found[member.name] = _unpack(data, target)
    except (tarfile.TarError, EOFError) as exc:
        problems.append(f"not a complete tar file ({exc})")
    return manifest, found


def _layout_problem(member: tarfile.TarInfo, count: int, seen: set[str]) -> str | None:
    if count >= len(MEMBER_ORDER):
        return f"more than {len(MEMBER_ORDER)} members"
    if member.name not in MEMBER_ORDER:
        return f"an unexpected member {member.name[:200]!r}"
    if member.name in seen:
        return f"{member.name} appears twice"
    if not member.isreg():
        return f"{member.name} is not a regular file"
    limit = {MANIFEST: MAX_MANIFEST_BYTES, STATE_DB: None}.get(member.name, MAX_MODULE_FILE_BYTES)
    if limit is not None and member.size > limit:
        return f"{member.name} is larger than {limit >> 20} MiB"
    return None


def _members(tar: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    while (member := tar.next()) is not None:
        yield member


def _unpack(data: IO[bytes], target: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as out:
        while chunk := data.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    return size, digest.hexdigest()


_MANIFEST_SCHEMA = "backup/manifest"


def _manifest(data: bytes, problems: list[str]) -> dict[str, Any] | None:
    import jsonschema_rs

    from aion import schemas

    try:
        document = json.loads(data)
    except ValueError as exc:
        problems.append(f"{MANIFEST} is not JSON ({exc})")
        return None
    errors = [
        f"{MANIFEST}{'/' + '/'.join(map(str, e.instance_path)) if e.instance_path else ''}: {e.message}"
        for e in jsonschema_rs.validator_for(schemas.load(_MANIFEST_SCHEMA)).iter_errors(document)
    ]
    if errors:
        problems.extend(errors[:5])
        return None
    if document["formatVersion"] != FORMAT_VERSION:
        problems.append(
            f"{MANIFEST}: format version {document['formatVersion']} is not one this aion knows "
            f"({FORMAT_VERSION})"
        )
        return None
    result: dict[str, Any] = document
    return result


def _compare(manifest: dict[str, Any], found: dict[str, tuple[int, str]]) -> list[str]:
    problems = []
    listed = {m["name"]: (m["size"], m["sha256"]) for m in manifest["members"]}
    for name in sorted(REQUIRED - {MANIFEST} - listed.keys()):
        problems.append(f"{MANIFEST} does not list {name}")
    for name, (size, sha256) in sorted(listed.items()):
        if name not in found:
            problems.append(f"{name} is missing, though {MANIFEST} lists it")
        elif found[name][0] != size:
            problems.append(f"{name} has {found[name][0]} bytes; {MANIFEST} says {size}")
        elif found[name][1] != sha256:
            problems.append(f"{name} does not match its SHA-256 in {MANIFEST}")
    for name in sorted(found.keys() - listed.keys()):
        problems.append(f"{name} is in the archive but not in {MANIFEST}")
    return problems


def _check_database(db_path: Path, manifest: dict[str, Any], problems: list[str]) -> dict[str, Any] | None:
    try:
        with _readonly(db_path) as db:
            report = [str(r[0]) for r in db.execute("PRAGMA integrity_check(5)")]
            if report != ["ok"]:
                problems.append(f"{STATE_DB} fails SQLite's integrity check: {'; '.join(report)[:500]}")
                return None
            version = int(db.execute("PRAGMA user_version").fetchone()[0])
            if not 1 <= version <= SCHEMA_VERSION:
                problems.append(
                    f"{STATE_DB} has state schema version {version}, which this aion does not know "
                    f"(1..{SCHEMA_VERSION})"
                )
                return None
            if version != manifest["schemaVersion"]:
                problems.append(
                    f"{STATE_DB} has schema version {version}; {MANIFEST} says {manifest['schemaVersion']}"
                )
                return None
            found = _summary(db)
    except InputError as exc:
        problems.append(f"{STATE_DB}: {exc.message}")
        return None
    if found != manifest["summary"]:
        problems.append(f"{STATE_DB}'s summary differs from the one in {MANIFEST}")
        return None
    return found


def require_intact(checked: Verification) -> None:
    """Raise VerificationError (exit 1) naming every problem of a damaged snapshot."""
    if checked.problems:
        raise VerificationError(
            f"the snapshot {checked.path} is damaged: {'; '.join(checked.problems)}",
            hint="use another snapshot (`aionctl backup list DIR`); this one cannot be restored",
        )


# -- restoring ----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Restored:
    path: Path
    state_dir: Path
    summary: dict[str, Any]
    schema_version: int
    replaced: Path | None
    """Where the state directory that was there went (with ``force``); None when there was none."""
    modules: list[dict[str, Any]]
    """The modules of the lock file restored (name, ref, digest): reinstall them by digest."""


def restore(path: Path, state_dir: Path, *, force: bool = False) -> Restored:
    """Restore the snapshot ``path`` as the state directory ``state_dir``: checked in full first
    (VerificationError when damaged), then refused (ConflictError, exit 6) when a running aiond holds
    ``state_dir``, or when it holds anything (a state.db) and ``force`` is not given. The state is
    built in a temporary directory next to ``state_dir`` and renamed onto it, so ``state_dir`` is
    never half-restored; with ``force`` the directory that was there is kept, renamed to
    ``<state_dir>.replaced-<time>``. The module store's lock file goes to ``state_dir/modules``
    (aiond's default module store)."""
    state_dir = state_dir.absolute()
    if state_dir.is_symlink():
        state_dir = state_dir.resolve()
    parent = state_dir.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(dir=parent, prefix=f".{state_dir.name}.restore-"))
    except OSError as exc:
        raise storage_error(exc, f"a directory in {parent}") from exc
    try:
        checked = _check(path, work)
        require_intact(checked)
        assert checked.manifest is not None
        assert checked.summary is not None
        modules = _restored_modules(work)
        with _held(state_dir, exclusive=True):
            present = _contents(state_dir)
            if present and not force:
                what = STATE_DB if STATE_DB in present else ", ".join(sorted(present)[:5])
                raise ConflictError(
                    f"the state directory {state_dir} is not empty: it holds {what}",
                    hint="restore into a new directory, or add --force to replace it (it is kept, renamed)",
                )
            replaced = _swap(work, state_dir, keep_old=bool(present))
    except OSError as exc:
        raise storage_error(exc, f"the restored state directory {state_dir}") from exc
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return Restored(path, state_dir, checked.summary, checked.manifest["schemaVersion"], replaced, modules)


def _restored_modules(work: Path) -> list[dict[str, Any]]:
    """The modules the restored lock file names; the digests file itself is the snapshot's alone."""
    listed = json.loads((work / MODULE_DIGESTS).read_text(encoding="utf-8"))
    (work / MODULE_DIGESTS).unlink()
    modules = listed.get("modules") if isinstance(listed, dict) else None
    return [
        {"name": str(m.get("name", "")), "ref": str(m.get("ref", "")), "digest": str(m.get("digest", ""))}
        for m in (modules if isinstance(modules, list) else [])
        if isinstance(m, dict)
    ]


def _swap(work: Path, state_dir: Path, *, keep_old: bool) -> Path | None:
    """Put the restored directory in place: made private and durable, then renamed onto
    ``state_dir`` (missing or empty: one step). A directory with contents is renamed aside first,
    and put back when the second rename fails."""
    work.chmod(0o700)
    if (work / "modules").exists():
        (work / "modules").chmod(0o700)
        _fsync_dir(work / "modules")
    _fsync_dir(work)
    replaced = None
    if keep_old:
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        replaced = state_dir.parent / f"{state_dir.name}.replaced-{stamp}"
        state_dir.rename(replaced)
    try:
        work.rename(state_dir)
    except OSError:
        if replaced is not None:
            replaced.rename(state_dir)
        raise
    _fsync_dir(state_dir.parent)
    return replaced


def _contents(directory: Path) -> set[str]:
    try:
        return {entry.name for entry in os.scandir(directory)}
    except FileNotFoundError:
        return set()
    except NotADirectoryError:
        raise InputError(f"{directory} exists and is not a directory") from None
    except OSError as exc:
        raise InputError(f"cannot read {directory}: {exc.strerror}") from exc


# -- the state directory's lock -----------------------------------------------------------------------


def offline_create(
    state_dir: Path, out_dir: Path, *, module_store: Path | None = None, version: str
) -> Snapshot:
    """Snapshot a stopped aiond's state directory (its module store defaults to ``STATE_DIR/modules``).
    ConflictError (exit 6) when a running aiond holds it: back that one up online. The directory's lock
    is held, shared, meanwhile, so no aiond starts on it before the copy is made."""
    if not (state_dir / STATE_DB).is_file():
        raise InputError(
            f"{state_dir} holds no {STATE_DB}", hint="give the --state-dir of a stopped aiond with --offline"
        )
    with _held(state_dir, exclusive=False):
        return create(
            state_dir / STATE_DB,
            out_dir,
            module_store=module_store or state_dir / "modules",
            daemon_version=version,
            source="offline",
        )


@contextlib.contextmanager
def _held(state_dir: Path, *, exclusive: bool) -> Iterator[None]:
    """Hold the state directory's lock file (when there is one) for the block; ConflictError when a
    running aiond holds it. aiond takes it exclusively and without waiting, so while this holds it
    no aiond starts there."""
    lock_path = state_dir / LOCK_NAME
    try:
        fd = os.open(lock_path, os.O_RDONLY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        yield
        return
    except OSError as exc:
        raise InputError(f"cannot open {lock_path}: {exc.strerror}") from exc
    try:
        try:
            fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise InputError(f"cannot lock {lock_path}: {exc.strerror}") from exc
            holder = _holder(lock_path)
            raise ConflictError(
                f"the state directory {state_dir} is in use by a running aiond"
                + (f" (pid {holder})" if holder else ""),
                hint="stop that aiond first; or, while it runs, back it up online (aionctl backup create)",
            ) from exc
        yield
    finally:
        os.close(fd)


def _holder(lock_path: Path) -> int | None:
    try:
        text = lock_path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None


# -- small pieces -------------------------------------------------------------------------------------


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _rfc3339(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


__all__ = [
    "FORMAT_VERSION",
    "LOCK_NAME",
    "MANIFEST",
    "SCHEMA_VERSION",
    "STALE_SECONDS",
    "STATE_DB",
    "Listed",
    "Restored",
    "Snapshot",
    "Verification",
    "create",
    "offline_create",
    "prune",
    "require_intact",
    "restore",
    "snapshot_name",
    "snapshots",
    "summary",
    "verify",
]
