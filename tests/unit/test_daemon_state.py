"""The daemon's pure and local parts: the SQLite state backend, the policy store's rules, tokens and
roles, the event-log reader, and the validation pickler. Real SQLite files, no daemon process."""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
import io
import itertools
import json
import pickle
import shutil
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aion.config.validate import collect, validate_directory
from aion.config.yamlload import Limits
from aion.errors import (
    AuthError,
    ConflictError,
    Forbidden,
    InputError,
    Unauthenticated,
    UsageError,
    transport,
)
from aion.eventlog import EventLog, segments
from aiond.events.journal import MAX_LINE, Journal, LocalSink
from aiond.policy.store import NothingToRollBack, PolicyStore, Target, check_upload
from aiond.policy.validation import _Pickler
from aiond.security.auth import (
    METHOD_ROLES,
    Authenticator,
    Role,
    bearer,
    identity_of,
    mint,
    required_role,
)
from aiond.state.backend import StaleActiveVersion
from aiond.state.sqlite import SqliteState
from tests.rig.certs import Authority
from tests.rig.daemon import EXAMPLES

# -- state backend ----------------------------------------------------------------------------------------


@pytest.fixture
def state(tmp_path: Path) -> Any:
    backend = SqliteState.open(tmp_path / "state")
    yield backend
    backend.close()


def test_versions_are_numbered_stored_and_activated_in_one_step(state: SqliteState) -> None:
    first = state.add_version([("a.yml", b"one")], tag="sha256:" + "1" * 64, author="x", source="apply",
                              description="")  # fmt: skip
    second = state.add_version([("a.yml", b"two"), ("b.yml", b"one")], tag="sha256:" + "2" * 64, author="y",
                               source="reload", description="d")  # fmt: skip
    assert (first.number, second.number) == (1, 2)
    active = state.active()
    assert active is not None
    assert active[0] == second
    assert state.files(1) == [("a.yml", b"one")]
    assert state.files(2) == [("a.yml", b"two"), ("b.yml", b"one")]
    assert [v.number for v in state.versions(limit=10)] == [2, 1]
    assert [v.number for v in state.versions(limit=10, before=2)] == [1]
    assert [v.number for v in state.versions_with_tag_prefix("sha256:1111111")] == [1]
    with pytest.raises(StaleActiveVersion):
        state.add_version([("a.yml", b"x")], tag="sha256:" + "3" * 64, author="z", source="apply",
                          description="", expected_active_tag="sha256:" + "1" * 64)  # fmt: skip
    assert [v.number for v in state.versions(limit=10)] == [2, 1]  # the refused change left nothing


def test_equal_file_contents_are_stored_once(state: SqliteState, tmp_path: Path) -> None:
    for i in range(5):
        state.add_version([("big.yml", b"x" * 100_000)], tag=f"sha256:{i:064d}", author="a", source="apply",
                          description="")  # fmt: skip
    state.close()
    import sqlite3

    db = sqlite3.connect(tmp_path / "state" / "state.db")
    try:
        assert db.execute("SELECT COUNT(*) FROM blobs").fetchone()[0] == 1
    finally:
        db.close()


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    import sqlite3

    SqliteState.open(tmp_path).close()
    db = sqlite3.connect(tmp_path / "state.db")
    db.execute("PRAGMA user_version = 99")
    db.close()
    with pytest.raises(InputError, match="written by a newer aiond"):
        SqliteState.open(tmp_path)


def test_a_damaged_database_is_an_input_error(tmp_path: Path) -> None:
    (tmp_path / "state.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(InputError, match="unreadable"):
        SqliteState.open(tmp_path)


def test_revoke_prefers_an_exact_id_over_a_name(state: SqliteState) -> None:
    first, _ = mint("alpha", Role.VIEWER, created_by="t")
    state.add_token(first)
    confusing, _ = mint(first.id, Role.ADMIN, created_by="t")  # a name that looks like the first's id
    state.add_token(confusing)
    revoked = state.revoke_token(first.id, dt.datetime.now(dt.UTC))
    assert revoked.name == "alpha"
    assert [t.name for t in state.tokens()] == [first.id]
    with pytest.raises(ConflictError):
        state.add_token(mint(first.id, Role.VIEWER, created_by="t")[0])  # a live name is unique


# -- tokens and roles ---------------------------------------------------------------------------------------


def test_authenticator_checks_secret_expiry_revocation_and_identity(state: SqliteState) -> None:
    now = [0.0]
    auth = Authenticator(state, clock=lambda: now[0])
    record, token = mint("ci", Role.OPERATOR, created_by="t")
    state.add_token(record)
    principal = auth.authenticate(token, None)
    assert (principal.name, principal.role) == ("ci", Role.OPERATOR)
    with pytest.raises(AuthError, match="not known"):
        auth.authenticate(token[:-1] + ("A" if token[-1] != "A" else "B"), None)
    with pytest.raises(AuthError, match="malformed"):
        auth.authenticate("aion_short", None)
    assert auth.authenticate(token, "spiffe://x/y").name == "spiffe://x/y"  # a certificate names the caller
    state.revoke_token("ci", dt.datetime.now(dt.UTC))
    assert auth.authenticate(token, None).name == "ci"  # cached for up to a second
    now[0] += 1.5
    with pytest.raises(AuthError, match="revoked"):
        auth.authenticate(token, None)
    expired, expired_token = mint("old", Role.ADMIN, created_by="t", ttl=dt.timedelta(seconds=-1))
    state.add_token(expired)
    with pytest.raises(AuthError, match="expired"):
        auth.authenticate(expired_token, None)
    grant, text = mint("robot", Role.VIEWER, created_by="t", identity="robot.example")
    assert text == ""
    state.add_token(grant)
    assert auth.authenticate(None, "robot.example").role is Role.VIEWER
    with pytest.raises(Forbidden) as unknown:
        auth.authenticate(None, "stranger.example")
    assert transport(unknown.value).name == "forbidden"
    with pytest.raises(Unauthenticated) as nothing:
        auth.authenticate(None, None)
    assert transport(nothing.value).name == "unauthenticated"


def test_a_remembered_token_lasts_no_longer_than_the_record_it_was_checked_against(
    state: SqliteState,
) -> None:
    now = [0.0]
    auth = Authenticator(state, clock=lambda: now[0])
    record, token = mint("ci", Role.OPERATOR, created_by="t")
    state.add_token(record)
    now[0] = 0.5
    with pytest.raises(AuthError):
        auth.authenticate(token[:-1] + ("A" if token[-1] != "A" else "B"), None)  # caches the record at 0.5
    now[0] = 1.4
    assert auth.authenticate(token, None).name == "ci"  # checked against the record read at 0.5
    state.revoke_token("ci", dt.datetime.now(dt.UTC))
    now[0] = 1.45
    assert auth.authenticate(token, None).name == "ci"  # still within the record's second
    now[0] = 1.6
    with pytest.raises(AuthError, match="revoked"):
        auth.authenticate(token, None)  # a second after the record was read, not after the check


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc", "abc"),
        ("bearer abc", "abc"),
        ("Basic abc", None),
        ("Bearer", None),
        ("", None),
        (None, None),
    ],
)
def test_bearer(header: str | None, token: str | None) -> None:
    assert bearer(header) == token


def test_unknown_methods_need_admin_and_probes_are_open() -> None:
    assert required_role("/aion.v1.NewService/Anything") is Role.ADMIN
    assert required_role("/grpc.health.v1.Health/Check") is None
    assert all(role is not Role.NONE for role in METHOD_ROLES.values())


def test_certificate_identity_prefers_uri_then_dns_then_common_name(tmp_path: Path) -> None:
    ca = Authority(tmp_path)
    uri = ca.issue("u", common_name="cn", dns=("host.example",), uris=("spiffe://example/ci",), client=True)
    dns = ca.issue("d", common_name="cn", dns=("host.example",), client=True)
    plain = ca.issue("c", common_name="just-a-name", client=True)
    assert identity_of(uri.cert.read_bytes()) == "spiffe://example/ci"
    assert identity_of(dns.cert.read_bytes()) == "host.example"
    assert identity_of(plain.cert.read_bytes()) == "just-a-name"
    assert identity_of(b"not a certificate") is None


# -- uploads -------------------------------------------------------------------------------------------------


@given(st.text(max_size=60))
def test_uploaded_paths_are_relative_yaml_inside_the_set(path: str) -> None:
    try:
        ((accepted, _),) = check_upload([(path, b"a: 1\n")], Limits())
    except UsageError:
        return
    assert not accepted.startswith("/")
    assert ".." not in accepted.split("/")
    assert accepted.endswith((".yml", ".yaml"))
    assert "\\" not in accepted
    assert all(ord(c) >= 32 for c in accepted)


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ([], "has no files"),
        ([("../x.yml", b"")], "relative to the config set root"),
        ([("/etc/passwd.yml", b"")], "relative to the config set root"),
        ([("a.yml", b""), ("a.yml", b"")], "appears twice"),
        ([("notes.txt", b"")], "only *.yml"),
        ([("a.yml", b"x" * 11)], "the limit is 10"),
    ],
)
def test_bad_uploads_are_refused(files: list[tuple[str, bytes]], message: str) -> None:
    with pytest.raises(UsageError, match=message.replace("*", r"\*")):
        check_upload(files, Limits(max_bytes=10))


# -- policy store rules ------------------------------------------------------------------------------------


def _example(root: Path, name: str, budget: str) -> list[tuple[str, bytes]]:
    target = root / name
    shutil.copytree(EXAMPLES, target)
    policies = target / "policies.yml"
    policies.write_text(policies.read_text().replace("default_usd: 0.02", f"default_usd: {budget}"))
    return [(p.name, p.read_bytes()) for p in sorted(target.glob("*.yml"))]


def test_rollback_toggles_and_refuses_when_nothing_differs(tmp_path: Path, state: SqliteState) -> None:
    events: list[dict[str, Any]] = []

    async def emit(event: dict[str, Any]) -> None:
        events.append(event)

    async def scenario() -> None:
        store = PolicyStore(state, EXAMPLES, emit=emit)
        await store.start()
        with pytest.raises(NothingToRollBack):
            await store.rollback(Target(), principal="t")
        a = await store.apply(_example(tmp_path, "a", "0.031"), principal="t")
        assert a.activated
        assert (await store.apply(_example(tmp_path, "a2", "0.031"), principal="t")).unchanged
        new, previous = await store.rollback(Target(), principal="t")
        assert (new.number, previous.number) == (3, 2)
        again, _ = await store.rollback(Target(), principal="t")
        assert again.tag == a.tag  # rolling back twice returns to where we were
        with pytest.raises(NothingToRollBack):
            await store.rollback(Target(number=again.number), principal="t")
        dry = await store.apply(_example(tmp_path, "b", "0.032"), principal="t", dry_run=True)
        assert (dry.activated, dry.version) == (False, None)
        assert store.active is not None
        assert store.active.version.number == 4

    asyncio.run(scenario())
    actions = [(e["action"], e["outcome"]) for e in events]
    assert actions.count(("policy.rollback", "refused")) == 2
    assert actions.count(("policy.rollback", "success")) == 2


# -- event log -----------------------------------------------------------------------------------------------


def test_event_log_scan_skips_damage_and_resumes(tmp_path: Path) -> None:
    events = Journal(LocalSink(tmp_path))
    lines = [json.dumps({"id": str(i), "topic": "t" if i % 2 else "u"}) for i in range(1, 7)]
    text = "\n".join(lines[:2]) + "\nnot json\n" + "x" * (MAX_LINE + 10) + "\n" + "\n".join(lines[2:]) + "\n"
    events.path.write_text(text + '{"id": "unfinished')
    newest, position = events.scan(after=0, limit=3, topics=frozenset(), newest=True)
    assert [r.event["id"] for r in newest] == ["4", "5", "6"]
    assert [r.sequence for r in newest] == [6, 7, 8]  # the damaged lines still count
    assert position.sequence == 8
    assert position.offset == len(text.encode())  # the unfinished line is left for later
    after, _ = events.scan(after=1, limit=2, topics=frozenset({"t"}))
    assert [r.event["id"] for r in after] == ["3", "5"]


# -- validation transport ------------------------------------------------------------------------------------


def test_the_validation_pickler_round_trips_a_report(tmp_path: Path) -> None:
    report = validate_directory(EXAMPLES)
    buffer = io.BytesIO()
    _Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(report)
    back = pickle.loads(buffer.getvalue())  # noqa: S301 - bytes this test just made
    assert back == report
    assert back.snapshot is not None
    assert type(back.snapshot.intents).__name__ == "mappingproxy"  # still read-only
    with pytest.raises(TypeError):
        back.snapshot.intents["new"] = None
    assert collect([str(EXAMPLES)])  # the examples are a real set


def test_the_event_log_seals_segments_and_numbers_lines_across_them(tmp_path: Path) -> None:
    events = Journal(LocalSink(tmp_path, segment_bytes=1_000, keep_bytes=10**9))
    log = EventLog(events.path, segment_bytes=1_000, keep_bytes=10**9)

    def write(writer: int) -> None:
        for n in range(150):  # lines of about 30 bytes: many seals along the way
            log.append({"id": f"{writer}-{n}", "topic": "t" if n % 2 else "u"})

    with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
        list(pool.map(write, range(3)))
    sealed = segments(events.path)
    assert len(sealed) > 5
    assert sealed[0].first == 1
    assert all(a.last + 1 == b.first for a, b in itertools.pairwise(sealed))  # no gap, no overlap
    everything, end = events.scan(after=0, limit=10_000, topics=frozenset())
    assert [r.sequence for r in everything] == list(range(1, 451))
    assert sorted(r.event["id"] for r in everything) == sorted(
        f"{w}-{n}" for w in range(3) for n in range(150)
    )
    for writer in range(3):  # each writer's events in its own order
        mine = [r.event["id"] for r in everything if r.event["id"].startswith(f"{writer}-")]
        assert mine == [f"{writer}-{n}" for n in range(150)]
    assert end.sequence == 450
    newest, _ = events.scan(after=0, limit=7, topics=frozenset({"t"}), newest=True)
    assert [r.sequence for r in newest] == [r.sequence for r in everything if r.event["topic"] == "t"][-7:]
    middle, _ = events.scan(after=sealed[2].first + 3, limit=5, topics=frozenset())
    assert [r.sequence for r in middle] == list(range(sealed[2].first + 4, sealed[2].first + 9))


def test_a_reader_resumes_across_a_seal(tmp_path: Path) -> None:
    events = Journal(LocalSink(tmp_path, segment_bytes=1_000, keep_bytes=10**9))
    log = EventLog(events.path, segment_bytes=1_000, keep_bytes=10**9)
    for n in range(10):
        log.append({"id": str(n), "topic": "t", "pad": "x" * 40})
    first, position = events.scan(after=0, limit=10, topics=frozenset())
    assert [r.event["id"] for r in first] == [str(n) for n in range(10)]
    for n in range(10, 200):  # seals the file the reader stopped in, and more after it
        log.append({"id": str(n), "topic": "t", "pad": "x" * 40})
    assert len(segments(events.path)) > 3
    resumed, position = events.scan(after=position.sequence, limit=15, topics=frozenset(), position=position)
    assert [r.event["id"] for r in resumed] == [str(n) for n in range(10, 25)]  # nothing lost or repeated
    rest, end = events.scan(after=position.sequence, limit=1_000, topics=frozenset(), position=position)
    assert [r.event["id"] for r in rest] == [str(n) for n in range(25, 200)]
    assert end.sequence == 200


def test_retention_drops_the_oldest_segments_and_keeps_the_numbers(tmp_path: Path) -> None:
    events = Journal(LocalSink(tmp_path, segment_bytes=1_000, keep_bytes=3_000))
    log = EventLog(events.path, segment_bytes=1_000, keep_bytes=3_000)
    for n in range(300):
        log.append({"id": str(n), "topic": "t", "pad": "x" * 40})
    sealed = segments(events.path)
    assert sum(s.path.stat().st_size for s in sealed) <= 3_000  # older segments were deleted
    assert sealed[0].first > 1
    everything, end = events.scan(after=0, limit=1_000, topics=frozenset())
    assert everything[0].sequence == sealed[0].first  # what is left keeps its numbers
    assert [r.event["id"] for r in everything] == [str(r.sequence - 1) for r in everything]
    assert end.sequence == 300
