"""Backup and restore end to end: a real aiond under load (tasks and policy applies in threads)
snapshotted by the real aionctl, restored into a fresh state directory, and a second aiond started on
it; damaged snapshots refused by verify and restore; a live state directory refused; scheduled
snapshots made and pruned; an offline snapshot of a stopped daemon."""

from __future__ import annotations

import concurrent.futures
import hashlib
import io
import json
import shutil
import sqlite3
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from aion.api.v1 import admin_pb2, admin_pb2_grpc, backup_pb2, backup_pb2_grpc, common_pb2, tasks_pb2
from tests.e2e.test_policy import set_budget
from tests.e2e.test_tasks import submit, write_config
from tests.integration.supply import conforms
from tests.rig.daemon import Aiond, aionctl
from tests.rig.procs import poll
from tests.rig.providers import StandIn


@pytest.fixture
def stand_in() -> Iterator[StandIn]:
    with StandIn() as server:
        yield server


def ctl(daemon: Aiond, *args: str, role: str = "admin") -> Any:
    return aionctl(*args, env=daemon.aionctl_env(role), timeout=120)


def create(daemon: Aiond, out: Path) -> dict[str, Any]:
    result = ctl(daemon, "backup", "create", "--out", str(out), "-o", "json")
    assert result.returncode == 0, result.stderr
    return conforms(json.loads(result.stdout), "output/backup")  # type: ignore[no-any-return]


def history(daemon: Aiond) -> list[tuple[int, str]]:
    result = ctl(daemon, "policy", "history", "-o", "json", "--limit", "1000", role="viewer")
    assert result.returncode == 0, result.stderr
    return [(v["number"], v["tag"]) for v in json.loads(result.stdout)["versions"]]


class Load:
    """Tasks and policy applies, each in its own thread, until stopped."""

    def __init__(self, daemon: Aiond, config: Path, scratch: Path) -> None:
        self._stop = threading.Event()
        self.tasks = self.applies = 0
        self.errors: list[str] = []
        self._threads = [
            threading.Thread(target=self._tasks, args=(daemon,)),
            threading.Thread(target=self._applies, args=(daemon, config, scratch)),
        ]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=120)

    def _tasks(self, daemon: Aiond) -> None:
        while not self._stop.is_set():
            try:
                task = submit(daemon, "summarize", "x" * 50, route=common_pb2.ROUTE_API).task
                if task.status != tasks_pb2.TASK_STATUS_OK:
                    self.errors.append(f"task {task.task_id}: {tasks_pb2.TaskStatus.Name(task.status)}")
                self.tasks += 1
            except Exception as exc:  # reported by the test, which checks there are none
                self.errors.append(f"task: {exc}")

    def _applies(self, daemon: Aiond, config: Path, scratch: Path) -> None:
        budget = 0.02
        while not self._stop.is_set():
            budget += 0.0001
            copy = scratch / f"apply-{self.applies}"
            shutil.copytree(config, copy)
            set_budget(copy, budget)
            result = ctl(daemon, "policy", "apply", str(copy))
            if result.returncode != 0:
                self.errors.append(f"apply: {result.stderr}")
            self.applies += 1
            shutil.rmtree(copy)


def test_a_backup_under_load_restores_to_a_daemon_with_the_same_state(
    tmp_path: Path, stand_in: StandIn
) -> None:
    config = write_config(tmp_path, stand_in)
    daemon = Aiond(tmp_path, config_dir=config).start()  # the API keys are in tmp_path/secrets
    try:
        with daemon.channel("operator") as channel:
            admin_pb2_grpc.AdminServiceStub(channel).SetIntentMode(
                admin_pb2.SetIntentModeRequest(intent="draft_reply", mode=admin_pb2.INTENT_MODE_LOCAL_ONLY),
                timeout=10,
            )
        with Load(daemon, config, tmp_path) as load:
            poll(lambda: load.tasks >= 3 and load.applies >= 2, timeout=60, what="load under way")
            taken = [create(daemon, tmp_path / "out") for _ in range(3)]
            poll(lambda: load.applies >= 4, timeout=60, what="applies after the backups")
        assert load.errors == []
        for doc in taken:  # each a consistent copy, though tasks and applies were committing
            checked = aionctl("backup", "verify", doc["path"], "-o", "json")
            assert checked.returncode == 0, checked.stdout + checked.stderr
            assert (
                conforms(json.loads(checked.stdout), "output/backup-verification")["summary"]
                == doc["summary"]
            )
        last = taken[-1]
        summary = last["summary"]
        assert summary["policyVersions"] >= 3
        assert summary["intentModes"] == {"draft_reply": "local-only"}
        assert summary["tokens"]["count"] == 3
        assert sum(summary["spendNanoUsd"].values()) > 0  # the API route costs
        listed = conforms(json.loads(aionctl("backup", "list", str(tmp_path / "out"), "-o", "json").stdout),
                          "output/backup-list")  # fmt: skip
        assert [b["path"] for b in listed["backups"]] == [d["path"] for d in reversed(taken)]
    finally:
        daemon.stop()
    # restore into a fresh directory; a daemon there has the versions, tokens, modes and spend
    fresh = tmp_path / "b"
    restored = aionctl("backup", "restore", last["path"], "--state-dir", str(fresh / "state"), "-o", "json")
    assert restored.returncode == 0, restored.stderr
    body = conforms(json.loads(restored.stdout), "output/backup-restore")
    assert (body["summary"], body["replaced"], body["modules"]) == (summary, None, [])
    again = Aiond(fresh, config_dir=config, tokens=daemon.tokens).start()
    try:
        versions = history(again)
        assert len(versions) == summary["policyVersions"]
        assert versions[0] == (summary["active"]["number"], summary["active"]["tag"])
        assert create(again, tmp_path / "out-b")["summary"] == summary  # equal: the restore matched
    finally:
        again.stop()


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Aiond]:
    d = Aiond(tmp_path).start()
    yield d
    d.stop()


def replace_member(path: Path, name: str, data: bytes, *, fix_manifest: bool) -> None:
    """Write ``path`` again with member ``name`` holding ``data`` (and, with ``fix_manifest``, the
    manifest's size and digest of it changed to match, as a forger would)."""
    with tarfile.open(path) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]
    members[name] = data
    if fix_manifest:
        manifest = json.loads(members["manifest.json"])
        for member in manifest["members"]:
            if member["name"] == name:
                member["size"], member["sha256"] = len(data), hashlib.sha256(data).hexdigest()
        members["manifest.json"] = json.dumps(manifest).encode()
    with tarfile.open(path, "w") as tar:
        for member_name, content in members.items():
            info = tarfile.TarInfo(member_name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))


def member(path: Path, name: str) -> bytes:
    with tarfile.open(path) as tar:
        return tar.extractfile(name).read()  # type: ignore[union-attr]


def flip_a_byte(path: Path) -> None:
    data = bytearray(member(path, "state.db"))
    data[len(data) // 2] ^= 0x01
    replace_member(path, "state.db", bytes(data), fix_manifest=False)


def truncate(path: Path) -> None:
    with path.open("r+b") as handle:
        handle.truncate(path.stat().st_size // 2)


def wrong_digest(path: Path) -> None:
    manifest = json.loads(member(path, "manifest.json"))
    manifest["members"][0]["sha256"] = "f" * 64
    replace_member(path, "manifest.json", json.dumps(manifest).encode(), fix_manifest=False)


def unknown_schema(path: Path) -> None:
    scratch = path.with_suffix(".db")
    scratch.write_bytes(member(path, "state.db"))
    db = sqlite3.connect(scratch)
    db.execute("PRAGMA user_version = 99")
    db.close()
    replace_member(path, "state.db", scratch.read_bytes(), fix_manifest=True)
    manifest = json.loads(member(path, "manifest.json"))
    manifest["schemaVersion"] = 99
    replace_member(path, "manifest.json", json.dumps(manifest).encode(), fix_manifest=False)


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (flip_a_byte, "state.db does not match its SHA-256 in manifest.json"),
        (truncate, "not a complete tar file"),
        (wrong_digest, "state.db does not match its SHA-256 in manifest.json"),
        (unknown_schema, "state.db has state schema version 99, which this aion does not know"),
    ],
    ids=["flipped-byte", "truncated", "wrong-digest", "unknown-schema"],
)
def test_a_damaged_snapshot_is_refused_by_verify_and_restore(
    daemon: Aiond, tmp_path: Path, damage: Any, problem: str
) -> None:
    path = Path(create(daemon, tmp_path / "out")["path"])
    assert aionctl("backup", "verify", str(path)).returncode == 0
    damage(path)
    checked = aionctl("backup", "verify", str(path), "-o", "json")
    assert checked.returncode == 1, checked.stdout + checked.stderr
    report = conforms(json.loads(checked.stdout), "output/backup-verification")
    assert report["verified"] is False
    assert any(p.startswith(problem) for p in report["problems"]), report["problems"]
    assert checked.stderr.startswith(f"error: the snapshot {path} is damaged: ")
    assert problem in checked.stderr
    assert "Traceback" not in checked.stderr
    target = tmp_path / "restored"
    refused = aionctl("backup", "restore", str(path), "--state-dir", str(target))
    assert refused.returncode == 1, refused.stderr
    assert problem in refused.stderr
    assert not target.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if ".restore-" in p.name) == []


def test_restore_refuses_a_live_state_directory_even_with_force(daemon: Aiond, tmp_path: Path) -> None:
    path = create(daemon, tmp_path / "out")["path"]
    for extra in ((), ("--force",)):
        refused = aionctl("backup", "restore", path, "--state-dir", str(daemon.state_dir), *extra)
        assert refused.returncode == 6, refused.stderr
        assert f"the state directory {daemon.state_dir} is in use by a running aiond" in refused.stderr
    offline = aionctl("backup", "create", "--offline", str(daemon.state_dir), "--out", str(tmp_path / "o"))
    assert offline.returncode == 6, offline.stderr
    assert daemon.ready()
    assert ctl(daemon, "status", role="viewer").returncode == 0


def test_restore_replaces_a_stopped_state_directory_only_with_force(daemon: Aiond, tmp_path: Path) -> None:
    first = create(daemon, tmp_path / "out")
    daemon.stop()
    refused = aionctl("backup", "restore", first["path"], "--state-dir", str(daemon.state_dir))
    assert refused.returncode == 6, refused.stderr
    assert "is not empty: it holds state.db" in refused.stderr
    forced = aionctl("backup", "restore", first["path"], "--state-dir", str(daemon.state_dir), "--force",
                     "-o", "json")  # fmt: skip
    assert forced.returncode == 0, forced.stderr
    kept = Path(conforms(json.loads(forced.stdout), "output/backup-restore")["replaced"])
    assert (kept / "audit.jsonl").exists()  # the directory that was there, whole
    assert not (daemon.state_dir / "audit.jsonl").exists()


def test_scheduled_backups_are_made_pruned_and_audited(tmp_path: Path) -> None:
    backups = tmp_path / "backups"
    daemon = Aiond(tmp_path, extra_args=["--backup-dir", str(backups), "--backup-interval", "1s",
                                         "--backup-keep", "2"]).start()  # fmt: skip
    try:
        first = poll(
            lambda: sorted(backups.glob("aion-backup-*.tar")) or None, timeout=30, what="first backup"
        )

        def pruned() -> list[str] | None:
            found = sorted(p.name for p in backups.glob("aion-backup-*.tar"))
            return found if found and first[0].name not in found else None

        names = poll(pruned, timeout=30, what="the first backup pruned")
        assert 1 <= len(names) <= 2
        verified = [aionctl("backup", "verify", str(backups / name)).returncode for name in names]
        assert set(verified) <= {0, 3}, verified  # 3: pruned meanwhile (its file is gone)
        metrics = httpx.get(f"http://{daemon.http_addr}/metrics", timeout=10).text
        success = next(
            line for line in metrics.splitlines()
            if line.startswith('aion_backup_last_success_timestamp_seconds{source="scheduled"}')
        )  # fmt: skip
        assert float(success.split()[-1]) > 0
        assert 'aion_backup_failures_total{source="scheduled"} 0.0' in metrics
        tail = ctl(daemon, "events", "tail", "--topic", "aion.audit.activity", "-n", "100", "-o", "json",
                   role="viewer")  # fmt: skip
        events = [json.loads(line) for line in tail.stdout.splitlines()]
        made = [e for e in events if e["action"] == "backup.create"]
        assert len(made) >= 3
        assert {(e["principal"], e["outcome"], e["details"]["source"]) for e in made} == {
            ("aiond", "success", "scheduled")
        }
    finally:
        daemon.stop()


def test_a_scheduled_backup_that_fails_is_counted_and_the_daemon_serves_on(tmp_path: Path) -> None:
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("a file where the backups would go\n")
    daemon = Aiond(tmp_path, extra_args=["--backup-dir", str(blocked), "--backup-interval", "1s"]).start()
    try:

        def failures() -> float | None:
            text = httpx.get(f"http://{daemon.http_addr}/metrics", timeout=10).text
            line = next(
                li
                for li in text.splitlines()
                if li.startswith('aion_backup_failures_total{source="scheduled"}')
            )
            value = float(line.split()[-1])
            return value if value >= 2 else None

        poll(failures, timeout=30, what="two failed backups counted")
        assert ctl(daemon, "status", role="viewer").returncode == 0
        assert "scheduled backup failed" in (tmp_path / "aiond.log").read_text()
    finally:
        daemon.stop()


def test_an_offline_backup_of_a_stopped_daemon(daemon: Aiond, tmp_path: Path) -> None:
    online = create(daemon, tmp_path / "online")
    daemon.stop()
    result = aionctl("backup", "create", "--offline", str(daemon.state_dir), "--out", str(tmp_path / "off"),
                     "-o", "json")  # fmt: skip
    assert result.returncode == 0, result.stderr
    offline = conforms(json.loads(result.stdout), "output/backup")
    assert offline["source"] == "offline"
    assert offline["summary"] == online["summary"]
    assert aionctl("backup", "verify", offline["path"]).returncode == 0
    missing = aionctl("backup", "create", "--offline", str(tmp_path / "nothing"), "--out", str(tmp_path))
    assert missing.returncode == 3, missing.stderr
    assert "holds no state.db" in missing.stderr


def test_create_needs_the_admin_role(daemon: Aiond, tmp_path: Path) -> None:
    result = ctl(daemon, "backup", "create", "--out", str(tmp_path / "out"), role="operator")
    assert result.returncode == 4, result.stderr
    assert list((tmp_path / "out").iterdir()) == []  # the download's temporary file is gone


class _Lying(backup_pb2_grpc.BackupServiceServicer):
    """A server that announces one snapshot and sends other bytes."""

    def __init__(self, header: backup_pb2.BackupHeader, body: bytes) -> None:
        self.header, self.body = header, body

    def CreateBackup(self, request: Any, context: Any) -> Iterator[backup_pb2.CreateBackupResponse]:
        yield backup_pb2.CreateBackupResponse(header=self.header)
        for start in range(0, len(self.body), 1 << 16):
            yield backup_pb2.CreateBackupResponse(chunk=self.body[start : start + (1 << 16)])


@pytest.mark.parametrize(
    ("lie", "code", "message"),
    [
        ("longer", 1, "sent more than the 1,000 bytes it announced"),
        ("other-bytes", 1, "is not the one aiond at"),
        ("too-large", 3, "more than --max-bytes 1,048,576"),
        ("bad-name", 1, "named the snapshot '../../x.tar'"),
    ],
)
def test_create_keeps_nothing_a_daemon_sends_that_is_not_what_it_announced(
    tmp_path: Path, lie: str, code: int, message: str
) -> None:
    body = b"\0" * 1000
    header = backup_pb2.BackupHeader(
        name="aion-backup-20260512T100000.000Z.tar", size_bytes=1000, sha256=hashlib.sha256(body).hexdigest()
    )
    if lie == "longer":
        body += b"\0"
    elif lie == "other-bytes":
        body = b"\1" * 1000
    elif lie == "too-large":
        header.size_bytes = 1 << 40
    else:
        header.name = "../../x.tar"
    server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=2))
    backup_pb2_grpc.add_BackupServiceServicer_to_server(_Lying(header, body), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        out = tmp_path / "out"
        result = aionctl("backup", "create", "--out", str(out), "--max-bytes", str(1 << 20),
                         env={"AION_ADDR": f"127.0.0.1:{port}", "AION_TOKEN": "aion_0_x"})  # fmt: skip
    finally:
        server.stop(0)
    assert result.returncode == code, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert list(out.iterdir()) == []
