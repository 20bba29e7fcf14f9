"""aion.backup on real state databases (made by aiond's own SqliteState): the snapshot's format, the
summary, every kind of damage verify reports, and what restore refuses."""

from __future__ import annotations

import datetime as dt
import fcntl
import io
import json
import os
import sqlite3
import tarfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aion import backup
from aion.errors import ConflictError, InputError, VerificationError
from aiond.settings import load
from aiond.state import schema
from aiond.state.backend import IntentMode, ModuleParallelism
from aiond.state.lock import StateDirLock
from aiond.state.sqlite import SqliteState


def test_the_schema_version_is_aionds() -> None:
    assert backup.SCHEMA_VERSION == schema.SCHEMA_VERSION
    assert backup.STATE_DB == "state.db"
    assert backup.LOCK_NAME == "aiond.lock"


def fill(state_dir: Path) -> SqliteState:
    state = SqliteState.open(state_dir)
    state.add_version([("a.yml", b"x: 1\n")], tag="sha256:aa", author="t", source="startup", description="")
    state.add_version([("a.yml", b"x: 2\n")], tag="sha256:bb", author="t", source="apply", description="")
    state.add_spend({"2026-05-11": 5, "2026-05-12": 1234})
    now = dt.datetime.now(dt.UTC)
    state.set_intent_mode(IntentMode("summarize", "local-only", "t", now, "incident"), "summarize")
    state.set_module_parallelism(ModuleParallelism("echo", 3, "t", now, ""))
    return state


@pytest.fixture
def made(tmp_path: Path) -> backup.Snapshot:
    state = fill(tmp_path / "state")
    store = tmp_path / "state" / "modules"
    store.mkdir()
    lock = {"apiVersion": "aion/v1", "kind": "ModuleLock",
            "modules": {"echo": {"ref": "r.example/echo:1", "digest": "sha256:" + "c" * 64}}}  # fmt: skip
    (store / "aion.lock").write_text(json.dumps(lock))
    try:
        return backup.create(
            state.path, tmp_path / "out", module_store=store, daemon_version="0.1.0", source="online"
        )
    finally:
        state.close()


def test_a_snapshot_holds_the_manifest_first_and_summarises_the_state(made: backup.Snapshot) -> None:
    assert backup.snapshots(made.path.parent)[0].path == made.path
    with tarfile.open(made.path) as tar:
        assert tar.getnames() == ["manifest.json", "state.db", "modules/aion.lock", "modules/digests.json"]
    assert made.summary == {
        "policyVersions": 2,
        "active": {"number": 2, "tag": "sha256:bb"},
        "tokens": {"count": 0, "ids": []},
        "intentModes": {"summarize": "local-only"},
        "moduleParallelism": {"echo": 3},
        "spendNanoUsd": {"2026-05-11": 5, "2026-05-12": 1234},
    }
    checked = backup.verify(made.path)
    assert checked.problems == ()
    assert checked.summary == made.summary
    assert checked.schema_version == schema.SCHEMA_VERSION


def rewrite(path: Path, change: dict[str, bytes | None]) -> None:
    """The snapshot at ``path`` again, with members replaced (or dropped, for None)."""
    with tarfile.open(path) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]
    members.update(change)
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            if data is not None:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def manifest_of(path: Path) -> dict[str, object]:
    with tarfile.open(path) as tar:
        return json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr,no-any-return]


def test_a_flipped_byte_in_the_database_is_found(made: backup.Snapshot) -> None:
    with tarfile.open(made.path) as tar:
        data = bytearray(tar.extractfile("state.db").read())  # type: ignore[union-attr]
    data[len(data) // 2] ^= 0xFF
    rewrite(made.path, {"state.db": bytes(data)})
    assert backup.verify(made.path).problems == ("state.db does not match its SHA-256 in manifest.json",)


def test_a_truncated_snapshot_is_found(made: backup.Snapshot) -> None:
    with made.path.open("r+b") as handle:
        handle.truncate(made.size // 2)
    problems = backup.verify(made.path).problems
    assert any(p.startswith("not a complete tar file") for p in problems), problems


def test_a_wrong_digest_in_the_manifest_is_found(made: backup.Snapshot) -> None:
    manifest = manifest_of(made.path)
    manifest["members"][0]["sha256"] = "0" * 64  # type: ignore[index]
    rewrite(made.path, {"manifest.json": json.dumps(manifest).encode()})
    assert backup.verify(made.path).problems == ("state.db does not match its SHA-256 in manifest.json",)


def test_an_unknown_schema_version_is_refused(made: backup.Snapshot, tmp_path: Path) -> None:
    with tarfile.open(made.path) as tar:
        (tmp_path / "db").write_bytes(tar.extractfile("state.db").read())  # type: ignore[union-attr]
    db = sqlite3.connect(tmp_path / "db")
    db.execute(f"PRAGMA user_version = {schema.SCHEMA_VERSION + 1}")
    db.close()
    data = (tmp_path / "db").read_bytes()
    manifest = manifest_of(made.path)
    manifest["schemaVersion"] = schema.SCHEMA_VERSION + 1
    import hashlib

    for member in manifest["members"]:  # type: ignore[attr-defined]
        if member["name"] == "state.db":
            member["sha256"], member["size"] = hashlib.sha256(data).hexdigest(), len(data)
    rewrite(made.path, {"state.db": data, "manifest.json": json.dumps(manifest).encode()})
    assert backup.verify(made.path).problems == (
        f"state.db has state schema version {schema.SCHEMA_VERSION + 1}, which this aion does not know "
        f"(1..{schema.SCHEMA_VERSION})",
    )


def test_a_manifest_off_its_schema_or_members_out_of_place_are_found(made: backup.Snapshot) -> None:
    manifest = manifest_of(made.path)
    manifest["formatVersion"] = "one"
    rewrite(
        made.path,
        {"manifest.json": json.dumps(manifest).encode(), "modules/aion.lock": None, "../etc/passwd": b"x"},
    )
    problems = backup.verify(made.path).problems
    assert "an unexpected member '../etc/passwd'" in problems
    assert any(p.startswith("manifest.json/formatVersion:") for p in problems), problems
    rewrite(made.path, {"manifest.json": None, "../etc/passwd": None})
    assert backup.verify(made.path).problems == ("manifest.json is missing",)


def test_restore_builds_the_state_directory_whole(made: backup.Snapshot, tmp_path: Path) -> None:
    target = tmp_path / "restored"
    restored = backup.restore(made.path, target)
    assert restored.summary == made.summary == backup.summary(target / "state.db")
    assert restored.modules == [{"name": "echo", "ref": "r.example/echo:1", "digest": "sha256:" + "c" * 64}]
    assert sorted(p.name for p in target.iterdir()) == ["modules", "state.db"]
    assert json.loads((target / "modules" / "aion.lock").read_text())["modules"]["echo"]
    assert (target.stat().st_mode & 0o777, (target / "state.db").stat().st_mode & 0o777) == (0o700, 0o600)
    SqliteState.open(target).close()  # aiond opens it as its own
    assert [p.name for p in tmp_path.iterdir() if ".restore-" in p.name] == []


def test_restore_refuses_a_directory_in_use_or_not_empty(made: backup.Snapshot, tmp_path: Path) -> None:
    target = tmp_path / "restored"
    backup.restore(made.path, target)
    with pytest.raises(ConflictError, match=r"is not empty: it holds state\.db"):
        backup.restore(made.path, target)
    held = StateDirLock.acquire(target)
    try:
        with pytest.raises(ConflictError, match=rf"in use by a running aiond \(pid {os.getpid()}\)"):
            backup.restore(made.path, target, force=True)
        with pytest.raises(ConflictError, match="in use by a running aiond"):
            backup.offline_create(target, tmp_path / "out2", version="0.1.0")
    finally:
        held.release()
    (target / "marker").write_text("old")
    replaced = backup.restore(made.path, target, force=True).replaced
    assert replaced is not None
    assert (replaced / "marker").read_text() == "old"
    assert not (target / "marker").exists()
    assert [p.name for p in tmp_path.iterdir() if ".restore-" in p.name] == []


def test_restore_refuses_a_damaged_snapshot_and_leaves_nothing(made: backup.Snapshot, tmp_path: Path) -> None:
    with made.path.open("r+b") as handle:
        handle.truncate(made.size // 3)
    with pytest.raises(VerificationError, match="is damaged"):
        backup.restore(made.path, tmp_path / "restored")
    assert not (tmp_path / "restored").exists()
    assert [p.name for p in tmp_path.iterdir() if ".restore-" in p.name] == []


def test_prune_keeps_the_newest(tmp_path: Path) -> None:
    state = fill(tmp_path / "state")
    start = dt.datetime(2026, 5, 12, 10, tzinfo=dt.UTC)
    try:
        for minutes in range(4):
            backup.create(state.path, tmp_path / "out", module_store=None, daemon_version="0",
                          source="scheduled", now=start + dt.timedelta(minutes=minutes))  # fmt: skip
    finally:
        state.close()
    deleted = backup.prune(tmp_path / "out", 2)
    assert [p.name for p in deleted] == [
        "aion-backup-20260512T100100.000Z.tar",
        "aion-backup-20260512T100000.000Z.tar",
    ]
    assert [s.path.name for s in backup.snapshots(tmp_path / "out")] == [
        "aion-backup-20260512T100300.000Z.tar",
        "aion-backup-20260512T100200.000Z.tar",
    ]


def test_verify_of_a_missing_file_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        backup.verify(tmp_path / "none.tar")


@pytest.mark.parametrize(("text", "seconds"), [("2s", 2), ("15m", 900), ("1h", 3600), ("90", 90)])
def test_backup_intervals_take_units(text: str, seconds: float) -> None:
    settings = load({"config_dir": "/c", "backup_interval": text}, {})
    assert settings.backup_interval == seconds


@pytest.mark.parametrize("text", ["0.5s", "8d", "soon", "nan", ""])
def test_backup_intervals_are_bounded(text: str) -> None:
    from aion.errors import UsageError

    with pytest.raises(UsageError, match="--backup-interval"):
        load({"config_dir": "/c", "backup_interval": text}, {})


def test_the_lock_is_shared_while_an_offline_snapshot_is_made(tmp_path: Path) -> None:
    state = fill(tmp_path / "state")
    state.close()
    (tmp_path / "state" / "aiond.lock").write_text("")
    made = backup.offline_create(tmp_path / "state", tmp_path / "out", version="0.1.0")
    assert made.manifest["source"] == "offline"
    fd = os.open(tmp_path / "state" / "aiond.lock", os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released once the snapshot is made
    finally:
        os.close(fd)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """One snapshot's bytes, made once for the property tests below."""
    root = tmp_path_factory.mktemp("pristine")
    state = fill(root / "state")
    try:
        made = backup.create(state.path, root / "out", module_store=None, daemon_version="0", source="online")
    finally:
        state.close()
    return made.path.read_bytes()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(flips=st.lists(st.tuples(st.integers(min_value=0), st.integers(1, 255)), min_size=1, max_size=4),
       cut=st.none() | st.integers(min_value=0))  # fmt: skip
def test_a_damaged_snapshot_is_reported_never_a_crash(
    pristine: bytes, tmp_path_factory: pytest.TempPathFactory, flips: list[tuple[int, int]], cut: int | None
) -> None:
    data = bytearray(pristine)
    for offset, mask in flips:
        data[offset % len(data)] ^= mask
    if cut is not None:
        del data[cut % len(data) :]
    path = tmp_path_factory.mktemp("damaged") / "aion-backup-20260512T100000.000Z.tar"
    path.write_bytes(bytes(data))
    checked = backup.verify(path)  # problems, not exceptions
    if checked.ok:  # a flip in the tar's padding or an unused header field changes no member
        assert checked.summary is not None
    else:
        with pytest.raises(VerificationError):
            backup.restore(path, path.parent / "restored")
        assert not (path.parent / "restored").exists()


@settings(max_examples=40, deadline=None)
@given(data=st.binary(max_size=3000))
def test_arbitrary_bytes_are_no_snapshot(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    path = tmp_path_factory.mktemp("bytes") / "x.tar"
    path.write_bytes(data)
    assert not backup.verify(path).ok


def test_prune_removes_what_a_crash_left_only_when_it_is_old(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / ".aion-backup-old.partial").mkdir(parents=True)
    (out / ".aion-backup-old.partial" / "state.db").write_bytes(b"x")
    (out / ".aion-backup-new.partial").mkdir()
    (out / ".aion-backup-old.download").write_bytes(b"x")
    day_ago = dt.datetime.now(dt.UTC).timestamp() - backup.STALE_SECONDS - 60
    for name in (".aion-backup-old.partial", ".aion-backup-old.download"):
        os.utime(out / name, (day_ago, day_ago))
    assert backup.prune(out, 1) == []
    assert sorted(p.name for p in out.iterdir()) == [".aion-backup-new.partial"]
