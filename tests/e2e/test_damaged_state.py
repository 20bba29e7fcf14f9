"""The real aiond, and ``aiond token``, on a damaged or empty state database: exit 3 with one message
naming the file and what to do, never a traceback, and never a silent fresh start."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from aiond.state.schema import SCHEMA_VERSION
from tests.rig.daemon import EXAMPLES, Aiond, aionctl, clean_env, program
from tests.rig.procs import ManagedProcess, free_port, http_ok

DAMAGED_HINT = "hint: restore it from a backup, or move it away to start with empty state"


@pytest.fixture(scope="module")
def used_state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A state directory a daemon has run on: three tokens and two policy versions."""
    workdir = tmp_path_factory.mktemp("used")
    config = workdir / "config"
    shutil.copytree(EXAMPLES, config)
    daemon = Aiond(workdir, config_dir=config).start()
    try:
        policies = config / "policies.yml"
        policies.write_text(policies.read_text() + "\n# the second version\n")
        applied = aionctl("policy", "apply", str(config), "-o", "json", env=daemon.aionctl_env())
        assert applied.returncode == 0, applied.stderr
        assert json.loads(applied.stdout)["version"]["number"] == 2
    finally:
        assert daemon.stop() == 0
    return daemon.state_dir


@pytest.fixture
def state_dir(used_state: Path, tmp_path: Path) -> Path:
    """A copy of ``used_state`` for this test to damage."""
    copy = tmp_path / "state"
    shutil.copytree(used_state, copy)
    (copy / "aiond.lock").unlink()
    return copy


def run_aiond(*args: str, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """aiond to its end; one that starts serving instead of refusing runs into the timeout."""
    return subprocess.run(
        [program("aiond"), *args], capture_output=True, text=True, env=clean_env(env), timeout=60, check=False
    )


def start_aiond(state_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_aiond(
        "--config", str(EXAMPLES), "--state-dir", str(state_dir),
        "--grpc-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", *args,
    )  # fmt: skip


def assert_refused(result: subprocess.CompletedProcess[str], message: str, hint: str) -> None:
    """Refused with exit 3 and one error, worded as every aion program words one."""
    assert result.returncode == 3, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr == f"error: {message}\n{hint}\n"


def damage_a_page(db: Path) -> None:
    """Overwrite the header of the tokens table's page, in the middle of the file."""
    connection = sqlite3.connect(db)
    page = connection.execute("SELECT rootpage FROM sqlite_master WHERE name = 'tokens'").fetchone()[0]
    page_size = connection.execute("PRAGMA page_size").fetchone()[0]
    connection.close()
    assert 1 < page < db.stat().st_size // page_size
    with db.open("r+b") as data:
        data.seek((page - 1) * page_size)
        data.write(b"\xff" * 8)


def drop_a_table(db: Path) -> None:
    connection = sqlite3.connect(db)
    connection.execute("DROP TABLE spend")
    connection.close()


@pytest.mark.parametrize(
    ("damage", "found"),
    [
        (damage_a_page, "is damaged: database disk image is malformed"),
        (drop_a_table, f"is damaged: it lacks table spend, which schema {SCHEMA_VERSION} needs"),
    ],
    ids=["page-corrupted", "table-dropped"],
)
def test_a_damaged_state_database_stops_aiond_and_aiond_token_with_one_message(
    state_dir: Path, damage: Callable[[Path], None], found: str
) -> None:
    db = state_dir / "state.db"
    damage(db)
    message = f"the state database {db} {found}"
    assert_refused(start_aiond(state_dir), message, DAMAGED_HINT)
    for action in (["list"], ["create", "late", "--role", "viewer"]):
        result = run_aiond("token", "--state-dir", str(state_dir), *action)
        assert_refused(result, message, DAMAGED_HINT)


EMPTY_HINT = (
    "hint: if it held state, restore it from a backup; to start with empty state, start aiond once with "
    "--init-state (or AIOND_INIT_STATE=1), or move the file away"
)


def test_an_empty_state_database_is_refused_and_left_as_it_is(state_dir: Path) -> None:
    db = state_dir / "state.db"
    db.write_bytes(b"")
    message = (
        f"the state database {db} is empty: it holds no aiond schema, so any tokens and policy history "
        "it had are gone"
    )
    assert_refused(start_aiond(state_dir), message, EMPTY_HINT)
    for action in (["list"], ["create", "first", "--role", "admin"]):
        result = run_aiond("token", "--state-dir", str(state_dir), *action)
        assert_refused(result, message, EMPTY_HINT)
    assert db.read_bytes() == b""


@pytest.mark.parametrize(
    ("args", "env"),
    [(["--init-state"], {}), ([], {"AIOND_INIT_STATE": "1"})],
    ids=["flag", "environment"],
)
def test_init_state_starts_aiond_with_fresh_state_on_an_empty_database(
    state_dir: Path, tmp_path: Path, args: list[str], env: dict[str, str]
) -> None:
    (state_dir / "state.db").write_bytes(b"")
    http = f"127.0.0.1:{free_port()}"
    argv = [program("aiond"), "--config", str(EXAMPLES), "--state-dir", str(state_dir),
            "--grpc-listen", f"127.0.0.1:{free_port()}", "--http-listen", http, *args]  # fmt: skip
    daemon = ManagedProcess("aiond", argv, log_path=tmp_path / "aiond.log", env=clean_env(env))
    daemon.start()
    try:
        daemon.wait_ready(lambda: http_ok(f"http://{http}/readyz"), timeout=30)
        listed = run_aiond("token", "--state-dir", str(state_dir), "list", "-o", "json")
        assert listed.returncode == 0, listed.stderr
        assert json.loads(listed.stdout)["credentials"] == []  # the old tokens are gone
    finally:
        assert daemon.stop() == 0
    assert "policy version 1 active (startup" in daemon.log_path.read_text()
