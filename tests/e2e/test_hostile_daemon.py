"""Hostile and malformed calls against a real aiond: each gets its proper status and at most a line
of log, never UNKNOWN with a traceback, and nothing a refused call names is ever stored."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from aion.api.v1 import admin_pb2, admin_pb2_grpc, policies_pb2, policies_pb2_grpc
from tests.rig.daemon import EXAMPLES, Aiond, aionctl
from tests.rig.plugin import unavailable


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Aiond]:
    d = Aiond(tmp_path).start()
    yield d
    d.stop()


def _log(daemon: Aiond) -> str:
    return daemon.process.log_path.read_text(errors="replace")


def _trailers(error: grpc.RpcError) -> dict[str, Any]:
    """The trailing metadata of a failed call (the errors grpc raises are calls too)."""
    metadata = getattr(error, "trailing_metadata", lambda: ())()
    return {str(key): value for key, value in metadata or ()}


def _raw_call(daemon: Aiond, method: str, payload: bytes, role: str | None) -> grpc.RpcError:
    with grpc.insecure_channel(daemon.grpc_addr, options=[("grpc.enable_http_proxy", 0)]) as channel:
        call: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(method)  # sent as it is
        metadata = daemon.metadata(role) if role else ()
        with pytest.raises(grpc.RpcError) as failed:
            call(payload, timeout=10, metadata=metadata)
    return failed.value


def test_undecodable_requests_answer_invalid_argument_before_authentication(daemon: Aiond) -> None:
    before = len(_log(daemon))
    for _ in range(300):  # a client without a token, sending bytes that are no protobuf message
        error = _raw_call(daemon, "/aion.v1.PolicyService/GetPolicyStatus", b"\xff\xff\xff\xff", None)
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, error.details()
        assert "not a valid message" in (error.details() or "")
    written = _log(daemon)[before:]
    assert "Traceback" not in written
    assert written.count("undecodable") <= 12  # throttled: a burst, then about one line a second
    assert len(written) < 20_000


def test_a_version_number_out_of_range_is_invalid_argument(daemon: Aiond) -> None:
    with daemon.channel("viewer") as channel:
        stub = policies_pb2_grpc.PolicyServiceStub(channel)
        for number in (2**63, 2**64 - 1):
            with pytest.raises(grpc.RpcError) as failed:
                stub.GetPolicyVersion(policies_pb2.GetPolicyVersionRequest(number=number), timeout=10)
            assert failed.value.code() is grpc.StatusCode.INVALID_ARGUMENT
            assert "version numbers run from 1" in (failed.value.details() or "")
    with daemon.channel("admin") as channel:
        stub = policies_pb2_grpc.PolicyServiceStub(channel)
        with pytest.raises(grpc.RpcError) as failed:
            stub.RollbackPolicy(policies_pb2.RollbackPolicyRequest(number=2**63), timeout=10)
        assert failed.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "Traceback" not in _log(daemon)


def test_an_unknown_intent_mode_is_invalid_argument(daemon: Aiond) -> None:
    with daemon.channel("operator") as channel:
        stub = admin_pb2_grpc.AdminServiceStub(channel)
        with pytest.raises(grpc.RpcError) as failed:
            stub.SetIntentMode(admin_pb2.SetIntentModeRequest(intent="summarize", mode=99), timeout=10)  # type: ignore[arg-type]
        assert failed.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "got 99" in (failed.value.details() or "")
        assert _trailers(failed.value)["aion-error"] == "usage"
    assert "Traceback" not in _log(daemon)


def test_a_refused_breaker_name_is_never_stored(daemon: Aiond) -> None:
    huge = "p" * (1 << 20)  # a megabyte of name, under the message cap
    with daemon.channel("operator") as channel:
        stub = admin_pb2_grpc.AdminServiceStub(channel)
        for n in range(5):
            with pytest.raises(grpc.RpcError) as failed:
                stub.SetBreakerState(
                    admin_pb2.SetBreakerStateRequest(
                        provider=f"{huge}{n}", override=admin_pb2.BREAKER_OVERRIDE_FORCED_OPEN, reason="x"
                    ),
                    timeout=10,
                )
            assert failed.value.code() is grpc.StatusCode.NOT_FOUND
            assert len(failed.value.details() or "") < 300  # the name is not echoed whole
        listing = stub.ListBreakers(admin_pb2.ListBreakersRequest(), timeout=10)
    assert not any(b.provider.startswith("ppp") for b in listing.breakers)
    result = aionctl("breaker", "list", "-o", "json", env=daemon.aionctl_env("viewer"))
    assert result.returncode == 0, result.stderr
    assert len(result.stdout) < 100_000


def test_lists_are_paged(daemon: Aiond) -> None:
    with daemon.channel("operator") as channel:
        stub = admin_pb2_grpc.AdminServiceStub(channel)
        for provider in ("ollama", "openai", "azure"):
            stub.SetBreakerState(
                admin_pb2.SetBreakerStateRequest(provider=provider, override=admin_pb2.BREAKER_OVERRIDE_NONE),
                timeout=10,
            )
        keys: list[str] = []
        token = ""
        pages = 0
        while True:
            reply = stub.ListBreakers(
                admin_pb2.ListBreakersRequest(page_size=2, page_token=token), timeout=10
            )
            assert len(reply.breakers) <= 2
            keys += [b.provider + (f":{b.model}" if b.model else "") for b in reply.breakers]
            pages += 1
            token = reply.next_page_token
            if not token:
                break
        assert pages >= 2
        assert keys == sorted(keys)
        assert {"ollama", "openai", "azure"} <= set(keys)
        with pytest.raises(grpc.RpcError) as failed:
            stub.ListBreakers(admin_pb2.ListBreakersRequest(page_token="%%%"), timeout=10)
        assert failed.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    result = aionctl("breaker", "list", "-o", "json", env=daemon.aionctl_env("viewer"))
    assert result.returncode == 0, result.stderr
    listed = json.loads(result.stdout)["breakers"]
    assert {"ollama", "openai", "azure"} <= {b["provider"] for b in listed}


def test_a_refused_apply_with_many_findings_never_holds_the_daemon(daemon: Aiond, tmp_path: Path) -> None:
    import threading
    import time

    import httpx

    config = tmp_path / "big"
    config.mkdir()
    (config / "intents.yml").write_text("".join(f"i{n}: 7\n" for n in range(50_000)))  # 50,000 errors
    (config / "models.yml").write_text((EXAMPLES / "models.yml").read_text())
    outcome: dict[str, object] = {}

    def apply() -> None:
        outcome["result"] = aionctl(
            "policy",
            "apply",
            str(config),
            "--dry-run",
            "--timeout",
            "300",
            env=daemon.aionctl_env(),
            timeout=330,
        )

    worker = threading.Thread(target=apply)
    worker.start()
    slowest = 0.0
    with httpx.Client(trust_env=False) as client:
        while worker.is_alive():
            started = time.monotonic()
            assert client.get(f"http://{daemon.http_addr}/healthz", timeout=5).status_code == 200
            slowest = max(slowest, time.monotonic() - started)
            time.sleep(0.05)
    worker.join()
    result = outcome["result"]
    assert isinstance(result, subprocess.CompletedProcess)
    assert result.returncode == 1, result.stderr
    assert "more findings are not shown" in result.stderr
    assert "Traceback" not in result.stderr + _log(daemon)
    # Not a measurement: a bound far above a healthy answer (milliseconds), far below the seconds a
    # blocked event loop took.
    assert slowest < 2.0
    assert daemon.stop() == 0  # and it still stops on SIGTERM, cleanly


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs, mounted for the test (aiond's state directory goes on it)."""
    if os.geteuid() != 0:
        unavailable("a small disk", "mounting a tmpfs needs root", "run the suite as root (CI does)")
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(directory: Path) -> Path:
    filler = directory / "filler"
    with filler.open("wb") as handle:
        try:
            while True:
                handle.write(b"\0" * (1 << 16))
                handle.flush()
        except OSError:
            pass
    return filler


def _changed_set(tmp_path: Path, n: int) -> Path:
    config = tmp_path / f"set{n}"
    shutil.copytree(EXAMPLES, config)
    with (config / "policies.yml").open("a") as handle:
        handle.write(f"# change {n}: {'x' * 4000}\n")
    return config


def test_a_full_disk_refuses_changes_clearly_until_there_is_room(tmp_path: Path, small_disk: Path) -> None:
    (tmp_path / "state").symlink_to(small_disk)
    daemon = Aiond(tmp_path).start()
    try:
        filler = _fill(small_disk)
        env = daemon.aionctl_env()
        changed = _changed_set(tmp_path, 1)
        full = aionctl("policy", "apply", str(changed), env=env)
        assert full.returncode == 3, full.stderr
        assert "the disk is full" in full.stderr
        with daemon.channel("operator") as channel, pytest.raises(grpc.RpcError) as failed:
            admin_pb2_grpc.AdminServiceStub(channel).SetIntentMode(
                admin_pb2.SetIntentModeRequest(
                    intent="summarize", mode=admin_pb2.INTENT_MODE_LOCAL_ONLY, reason="disk test"
                ),
                timeout=10,
            )
        assert failed.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert _trailers(failed.value)["aion-error"] == "storage-full"
        filler.unlink()  # room again: the same change goes through
        applied = aionctl("policy", "apply", str(changed), env=env)
        assert applied.returncode == 0, applied.stderr
        assert aionctl("status", env=env).returncode == 0
    finally:
        daemon.stop()
    assert "Traceback" not in _log(daemon)


def test_the_daemon_never_stores_what_leads_out_of_its_config_directory(tmp_path: Path) -> None:
    config = tmp_path / "config"
    shutil.copytree(EXAMPLES, config)
    (config / "notes.yml").write_text("just: notes\n")  # no kind aion knows
    daemon = Aiond(tmp_path, config_dir=config).start()
    try:
        with daemon.channel("viewer") as channel:
            files = (
                policies_pb2_grpc.PolicyServiceStub(channel)
                .GetPolicyVersion(policies_pb2.GetPolicyVersionRequest(include_files=True), timeout=10)
                .files
            )
        assert "notes.yml" not in {f.path for f in files}
        secret = tmp_path / "outside.txt"
        secret.write_text("never stored\n")
        (config / "keys.yml").symlink_to(secret)
        reload = aionctl("policy", "reload", env=daemon.aionctl_env("operator"))
        assert reload.returncode == 3, reload.stderr
        assert "keys.yml" in reload.stderr
        with daemon.channel("viewer") as channel:
            history = policies_pb2_grpc.PolicyServiceStub(channel).ListPolicyVersions(
                policies_pb2.ListPolicyVersionsRequest(), timeout=10
            )
        assert len(history.versions) == 1  # the reload stored nothing
    finally:
        daemon.stop()
    assert "Traceback" not in _log(daemon)
