"""SIGKILL during applies, then a restart: the stored state is consistent, nothing acknowledged is lost,
and the active version is either the last acknowledged one or the one that was in flight."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

import grpc
import pytest

from aion.api.v1 import common_pb2, policies_pb2, policies_pb2_grpc
from tests.e2e.test_policy import config_copy
from tests.rig.daemon import Aiond

APPLIES = 5000


def variants(config: Path, count: int) -> list[list[common_pb2.ConfigFile]]:
    """``count`` config sets that differ only in policies.yml's default budget."""
    base = {p.name: p.read_bytes() for p in sorted(config.glob("*.yml"))}
    line = next(x for x in base["policies.yml"].splitlines() if b"default_usd:" in x)
    return [
        [
            common_pb2.ConfigFile(
                path=name,
                content=data.replace(line, f"  default_usd: {0.001 + i / 1_000_000:.6f}".encode())
                if name == "policies.yml"
                else data,
            )
            for name, data in base.items()
        ]
        for i in range(count)
    ]


@pytest.mark.parametrize("delay", [0.4, 0.9, 1.5])
def test_sigkill_during_applies_leaves_a_consistent_state(tmp_path: Path, delay: float) -> None:
    daemon = Aiond(tmp_path, config_dir=config_copy(tmp_path)).start()
    sets = variants(daemon.config_dir, APPLIES)
    acknowledged: list[tuple[int, int]] = []  # (set index, version number)
    attempted: list[int] = []
    stop = threading.Event()

    def apply_in_a_loop() -> None:
        with daemon.channel() as channel:
            stub = policies_pb2_grpc.PolicyServiceStub(channel)
            for i, files in enumerate(sets):
                if stop.is_set():
                    return
                attempted.append(i)
                try:
                    reply = stub.ApplyPolicy(policies_pb2.ApplyPolicyRequest(files=files), timeout=10)
                except grpc.RpcError:
                    return  # the daemon is gone
                acknowledged.append((i, reply.activation.version.number))

    worker = threading.Thread(target=apply_in_a_loop)
    try:
        worker.start()
        # Kill once a few applies have landed, at a random moment in the middle of the stream.
        threading.Event().wait(delay)
        daemon.process.kill()
        stop.set()
        worker.join(timeout=30)
        assert not worker.is_alive()
        assert acknowledged, "no apply finished before the kill; the daemon was too slow to start?"
        assert len(attempted) < APPLIES, "every apply finished before the kill: raise APPLIES"
        last_set = acknowledged[-1][0]
        in_flight = [i for i in attempted if i > last_set]

        daemon.start()  # same state directory
        check_recovered(daemon, sets, acknowledged, in_flight)
    finally:
        stop.set()
        daemon.stop()
    check_database(daemon.state_dir / "state.db")


def check_recovered(
    daemon: Aiond,
    sets: list[list[common_pb2.ConfigFile]],
    acknowledged: list[tuple[int, int]],
    in_flight: list[int],
) -> None:
    last_number = acknowledged[-1][1]
    with daemon.channel() as channel:
        stub = policies_pb2_grpc.PolicyServiceStub(channel)
        status = stub.GetPolicyStatus(policies_pb2.GetPolicyStatusRequest(), timeout=10)
        numbers: list[int] = []
        token = ""
        while True:  # every page of the history
            page = stub.ListPolicyVersions(
                policies_pb2.ListPolicyVersionsRequest(page_size=500, page_token=token), timeout=10
            )
            numbers += [v.number for v in page.versions]
            token = page.next_page_token
            if not token:
                break
        # Numbers are contiguous and the newest is active.
        assert sorted(numbers) == list(range(1, len(numbers) + 1))
        assert status.active.number == max(numbers)
        # The active version is the last acknowledged one, or the one in flight at the kill.
        assert status.active.number in {last_number, last_number + 1}
        expected = dict(acknowledged)
        if status.active.number == last_number + 1:
            assert in_flight, "a version nobody asked for"
            expected[in_flight[0]] = last_number + 1
        # Every acknowledged version survived with its exact files (and the in-flight one, if stored).
        for index, number in expected.items():
            stored = stub.GetPolicyVersion(
                policies_pb2.GetPolicyVersionRequest(number=number, include_files=True), timeout=10
            )
            assert {f.path: f.content for f in stored.files} == {f.path: f.content for f in sets[index]}


def check_database(path: Path) -> None:
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        orphans: Any = db.execute(
            "SELECT COUNT(*) FROM policy_versions v WHERE NOT EXISTS "
            "(SELECT 1 FROM policy_files f WHERE f.version = v.number)"
        ).fetchone()[0]
        assert orphans == 0
    finally:
        db.close()
