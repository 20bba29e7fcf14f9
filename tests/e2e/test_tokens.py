"""Tokens' last use and rotation against a real aiond: last use recorded within the flush interval and
at shutdown, `aionctl token list` with its filters, `aionctl token rotate` (one token, or every one
older than a maximum age into a directory of 0600 files) with the old secret working through the
overlap and refused after it, `aiond token rotate` offline, the audit events, and the roles refused."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from aion.api.v1 import admin_pb2, admin_pb2_grpc
from aiond.security.auth import Role, mint
from aiond.state.sqlite import SqliteState
from tests.integration.supply import conforms
from tests.rig.daemon import Aiond, aionctl, clean_env, program
from tests.rig.procs import poll

TOKEN = re.compile(r"^aion_[0-9a-f]{12}_[A-Za-z0-9_-]{43}$")


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Aiond]:
    # Last use written every second, so that a test sees it without waiting a minute.
    d = Aiond(tmp_path_factory.mktemp("tokens"), extra_args=["--token-use-interval", "1"]).start()
    yield d
    d.stop()


def ctl(daemon: Aiond, *args: str, role: str = "admin") -> subprocess.CompletedProcess[str]:
    return aionctl(*args, env=daemon.aionctl_env(role))


def listed(daemon: Aiond, *args: str) -> dict[str, dict[str, Any]]:
    result = ctl(daemon, "token", "list", "-o", "json", *args)
    assert result.returncode == 0, result.stderr
    return {t["name"]: t for t in conforms(json.loads(result.stdout), "output/token")["tokens"]}


def whoami(daemon: Aiond, token: str) -> grpc.StatusCode | str:
    """The principal aiond sees for ``token`` (one direct call), or the status code that refused it."""
    with grpc.insecure_channel(daemon.grpc_addr, options=[("grpc.enable_http_proxy", 0)]) as channel:
        try:
            reply = admin_pb2_grpc.AdminServiceStub(channel).WhoAmI(
                admin_pb2.WhoAmIRequest(), timeout=10, metadata=(("authorization", f"Bearer {token}"),)
            )
        except grpc.RpcError as exc:
            code: grpc.StatusCode = exc.code()
            return code
    return reply.principal


def audit_events(daemon: Aiond, action: str) -> list[dict[str, Any]]:
    lines = (daemon.state_dir / "audit.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["action"] == action]


def add_tokens(daemon: Aiond, *records: Any) -> None:
    """Store credentials straight into the running daemon's state (as `aiond token` does), with
    creation times in the past: no waiting for days."""
    state = SqliteState.open(daemon.state_dir)
    try:
        for record in records:
            state.add_token(record)
    finally:
        state.close()


def test_last_use_appears_within_the_flush_interval(daemon: Aiond) -> None:
    text = daemon.create_token("probe", "viewer")
    assert listed(daemon)["probe"]["lastUsedAt"] is None
    assert whoami(daemon, text) == "probe"

    def used() -> str | None:
        return listed(daemon)["probe"]["lastUsedAt"]  # type: ignore[no-any-return]

    when = dt.datetime.fromisoformat(poll(used, timeout=20, what="probe's last use recorded"))
    assert dt.timedelta(0) <= dt.datetime.now(dt.UTC) - when < dt.timedelta(minutes=1)
    offline = subprocess.run(
        [program("aiond"), "token", "--state-dir", str(daemon.state_dir), "list", "-o", "json"],
        capture_output=True, text=True, env=clean_env(), timeout=60, check=False,
    )  # fmt: skip
    shown = {c["name"]: c for c in conforms(json.loads(offline.stdout), "output/credential")["credentials"]}
    assert shown["probe"]["lastUsedAt"] is not None
    assert shown["probe"]["ageDays"] == 0


def test_last_use_is_written_at_shutdown(tmp_path: Path) -> None:
    d = Aiond(tmp_path, extra_args=["--token-use-interval", "3600"]).start()
    try:
        assert whoami(d, d.tokens["viewer"]) == "test-viewer"
    finally:
        assert d.stop() == 0
    state = SqliteState.open(d.state_dir)
    try:
        used = {r.name: r.last_used_at for r in state.tokens()}
    finally:
        state.close()
    assert used["test-viewer"] is not None
    assert used["test-operator"] is None  # never used: never written


def test_rotate_keeps_the_old_secret_for_the_overlap_then_refuses_it(daemon: Aiond) -> None:
    old = daemon.create_token("ci-deploy", "operator")
    old_id = old.split("_")[1]
    rotated = ctl(daemon, "token", "rotate", "ci-deploy", "--overlap", "2s")
    assert rotated.returncode == 0, rotated.stderr
    new = rotated.stdout.strip()
    assert TOKEN.match(new), "the new token alone on stdout"
    assert "works until" in rotated.stderr
    assert whoami(daemon, old) == "ci-deploy"  # the overlap
    assert whoami(daemon, new) == "ci-deploy"
    poll(lambda: whoami(daemon, old) == grpc.StatusCode.UNAUTHENTICATED, timeout=15,
         what="the old secret refused once the overlap ended")  # fmt: skip
    assert whoami(daemon, new) == "ci-deploy"
    tokens = listed(daemon, "--all")
    assert tokens["ci-deploy"]["id"] == new.split("_")[1]
    assert tokens["ci-deploy"]["role"] == "operator"
    (event,) = [e for e in audit_events(daemon, "token.rotate") if e["before"] == old_id]
    assert (event["principal"], event["target"], event["after"]) == (
        "test-admin",
        "ci-deploy",
        new.split("_")[1],
    )


def test_rotate_into_a_secret_file_and_as_a_document(daemon: Aiond, tmp_path: Path) -> None:
    daemon.create_token("batch-job", "viewer")
    target = tmp_path / "batch.token"
    target.write_text("the old token\n")
    result = ctl(daemon, "token", "rotate", "batch-job", "--secret-file", str(target), "-o", "json")
    assert result.returncode == 0, result.stderr
    (done,) = conforms(json.loads(result.stdout), "output/token")["rotated"]
    assert "token" not in done  # the file holds it
    assert "aion_" not in result.stdout
    assert done["secretFile"] == str(target)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert whoami(daemon, target.read_text().strip()) == "batch-job"
    again = ctl(daemon, "token", "rotate", "batch-job", "--overlap", "0", "-o", "yaml")
    assert again.returncode == 0, again.stderr
    assert "token: aion_" in again.stdout  # no file: the document is its one showing
    assert whoami(daemon, target.read_text().strip()) == grpc.StatusCode.UNAUTHENTICATED or poll(
        lambda: whoami(daemon, target.read_text().strip()) == grpc.StatusCode.UNAUTHENTICATED,
        timeout=10, what="an overlap of 0 ends the old secret",
    )  # fmt: skip


def test_older_than_picks_only_old_live_tokens(daemon: Aiond, tmp_path: Path) -> None:
    now = dt.datetime.now(dt.UTC)

    def made(name: str, days: int, role: Role = Role.OPERATOR, **changes: Any) -> Any:
        record, _ = mint(name, role, created_by="test", identity=changes.pop("identity", ""))
        return dataclasses.replace(record, created_at=now - dt.timedelta(days=days), **changes)

    add_tokens(
        daemon,
        made("old-a", 120),
        made("old-b", 91, Role.ADMIN, last_used_at=now - dt.timedelta(days=1)),
        made("old-expired", 200, expires_at=now - dt.timedelta(days=100)),
        made("old-robot", 150, Role.VIEWER, identity="robot.aion.test"),
        made("young", 10),
    )
    old = listed(daemon, "--older-than", "90d")
    assert set(old) == {"old-a", "old-b", "old-expired", "old-robot"}
    assert old["old-a"]["ageDays"] == 120
    unused = listed(daemon, "--unused-for", "30d")
    assert "old-a" in unused
    assert "old-b" not in unused  # used yesterday
    assert "young" not in unused  # created 10 days ago, never used
    assert set(listed(daemon, "--older-than", "90d", "--unused-for", "30d")) == set(old) - {"old-b"}
    text = ctl(daemon, "token", "list", "--older-than", "90d")
    assert text.returncode == 0
    assert "old-a" in text.stdout
    assert "young" not in text.stdout

    secrets = tmp_path / "rotated"
    result = ctl(daemon, "token", "rotate", "--older-than", "90d", "--secret-dir", str(secrets), "-o", "json")
    assert result.returncode == 0, result.stderr
    assert "aion_" not in result.stdout  # secrets go to files only
    rotated = {r["name"]: r for r in conforms(json.loads(result.stdout), "output/token")["rotated"]}
    assert set(rotated) == {"old-a", "old-b"}  # not the expired one, not the identity grant
    assert sorted(p.name for p in secrets.iterdir()) == ["old-a.token", "old-b.token"]
    for name, entry in rotated.items():
        path = Path(entry["secretFile"])
        assert path == secrets / f"{name}.token"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert whoami(daemon, path.read_text().strip()) == name
    assert set(listed(daemon, "--older-than", "90d")) == set(old)  # the old ones live on, in their overlap
    assert {listed(daemon)[n]["id"] for n in rotated} == {e["newId"] for e in rotated.values()}
    nothing = ctl(daemon, "token", "rotate", "--older-than", "3000d", "--secret-dir", str(secrets))
    assert nothing.returncode == 0
    assert "no live token is older than 3000d" in nothing.stderr


@pytest.mark.parametrize("role", ["viewer", "operator"])
def test_roles_below_admin_are_refused(daemon: Aiond, role: str, tmp_path: Path) -> None:
    def ids() -> list[tuple[str, str | None]]:
        return sorted((t["id"], t["replacedBy"]) for t in listed(daemon).values())

    before = ids()
    refused = ctl(daemon, "token", "list", role=role)
    assert refused.returncode == 4, refused.stderr
    assert "needs role admin" in refused.stderr
    rotate = ctl(daemon, "token", "rotate", "test-viewer", role=role)
    assert rotate.returncode == 4, rotate.stderr
    batch = ctl(daemon, "token", "rotate", "--older-than", "0s", "--secret-dir", str(tmp_path), role=role)
    assert batch.returncode == 4, batch.stderr
    assert ids() == before


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        ([], 2, "give a token's NAME or ID, or --older-than"),
        (["x", "--older-than", "90d"], 2, "give a token's NAME or ID, or --older-than"),
        (["--older-than", "90d"], 2, "--older-than needs --secret-dir DIR"),
        (["x", "--secret-dir", "d"], 2, "--secret-dir goes with --older-than"),
        (["x", "--overlap", "31d"], 2, "out of range"),
        (["x", "--overlap", "soon"], 2, "is not a duration"),
        (["nobody"], 3, "no live credential is named 'nobody'"),
    ],
)
def test_rotate_errors(daemon: Aiond, args: list[str], code: int, message: str) -> None:
    result = ctl(daemon, "token", "rotate", *args)
    assert result.returncode == code, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_aiond_token_rotate_offline_reaches_the_running_daemon(daemon: Aiond) -> None:
    old = daemon.create_token("offline-ci", "viewer")
    result = subprocess.run(
        [program("aiond"), "token", "--state-dir", str(daemon.state_dir), "rotate", "offline-ci",
         "--overlap", "1h", "-o", "json"],
        capture_output=True, text=True, env=clean_env(), timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (done,) = conforms(json.loads(result.stdout), "output/token")["rotated"]
    assert whoami(daemon, done["token"]) == "offline-ci"
    assert whoami(daemon, old) == "offline-ci"  # an hour of overlap
    assert listed(daemon)["offline-ci"]["id"] == done["newId"]
    assert [e["after"] for e in audit_events(daemon, "token.rotate") if e["before"] == done["id"]] == [
        done["newId"]
    ]
