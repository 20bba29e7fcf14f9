"""A real aiond process driven by the real aionctl, grpc_health_probe and grpcurl."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from aion import __version__
from tests.integration.supply import conforms
from tests.rig.daemon import EXAMPLES, Aiond, aionctl, clean_env, program
from tests.rig.procs import ManagedProcess, free_port, http_ok, poll
from tests.rig.services import GoTools


@pytest.fixture(scope="module")
def shared_aiond(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Aiond]:
    """One aiond for this module's tests that only read from it (no change of its state or counters
    they assert, no signal); those that change something, or count calls, get their own."""
    daemon = Aiond(tmp_path_factory.mktemp("shared-aiond")).start()
    yield daemon
    daemon.stop()


def http_status(daemon: Aiond, path: str) -> int:
    return httpx.get(f"http://{daemon.http_addr}{path}", timeout=2, trust_env=False).status_code


def test_health_reports_every_probe_ok(shared_aiond: Aiond) -> None:
    result = aionctl("health", "--output", "json", env=shared_aiond.aionctl_env())
    assert result.returncode == 0, result.stderr
    report = conforms(json.loads(result.stdout), "output/health")
    assert report["healthy"] is True
    assert [(c["name"], c["status"], c["ok"]) for c in report["checks"]] == [
        ("grpc", "SERVING", True),
        ("http-live", "200", True),
        ("http-ready", "200", True),
    ]


def test_health_text_goes_to_stdout_without_escape_codes(shared_aiond: Aiond) -> None:
    result = aionctl("health", "--addr", shared_aiond.grpc_addr, "--http-addr", shared_aiond.http_addr)
    assert result.returncode == 0
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert [line.split()[:2] for line in lines] == [["grpc", "ok"], ["http-live", "ok"], ["http-ready", "ok"]]
    assert "\x1b[" not in result.stdout


def test_health_yaml(shared_aiond: Aiond) -> None:
    import yaml

    result = aionctl("health", "-o", "yaml", env=shared_aiond.aionctl_env())
    assert result.returncode == 0
    conforms(yaml.safe_load(result.stdout), "output/health")


def test_status_describes_the_daemon(shared_aiond: Aiond) -> None:
    result = aionctl("status", "-o", "json", env=shared_aiond.aionctl_env())
    assert result.returncode == 0, result.stderr
    status = conforms(json.loads(result.stdout), "output/status")
    assert status["version"] == __version__
    assert status["state"] == "serving"
    assert status["pid"] == shared_aiond.process.pid
    assert status["grpcAddress"] == shared_aiond.grpc_addr
    assert status["httpAddress"] == shared_aiond.http_addr
    assert status["stateDir"] == str(shared_aiond.state_dir)
    assert status["inflightRpcs"] == 1  # the GetStatus call itself
    assert status["activePolicyVersion"] == 1  # a JSON number, as every integer in a document


def test_grpc_health_probe_says_serving(shared_aiond: Aiond, go_tools: GoTools) -> None:
    result = go_tools.run(
        "grpc_health_probe", f"-addr={shared_aiond.grpc_addr}", "-connect-timeout=5s", "-rpc-timeout=5s"
    )
    assert (result.stdout + result.stderr).strip() == "status: SERVING"


def test_grpcurl_lists_the_whole_contract_through_reflection(shared_aiond: Aiond, go_tools: GoTools) -> None:
    listed = go_tools.run("grpcurl", "-plaintext", shared_aiond.grpc_addr, "list").stdout.split()
    assert listed == [
        "aion.v1.AdminService",
        "aion.v1.BackupService",
        "aion.v1.EventService",
        "aion.v1.ModuleService",
        "aion.v1.PolicyService",
        "aion.v1.RouterService",
        "aion.v1.TaskService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    ]
    described = go_tools.run(
        "grpcurl", "-plaintext", shared_aiond.grpc_addr, "describe", "aion.v1.PolicyService"
    ).stdout
    assert (
        "rpc RollbackPolicy ( .aion.v1.RollbackPolicyRequest ) returns ( .aion.v1.RollbackPolicyResponse );"
        in described
    )


def test_grpcurl_calls_get_status(shared_aiond: Aiond, go_tools: GoTools) -> None:
    token = shared_aiond.tokens["viewer"]
    result = go_tools.run(
        "grpcurl", "-plaintext", "-format", "json", "-H", f"authorization: Bearer {token}",
        shared_aiond.grpc_addr, "aion.v1.AdminService/GetStatus",
    )  # fmt: skip
    status = json.loads(result.stdout)
    assert status["version"] == __version__
    assert status["state"] == "SERVING_STATE_SERVING"


def test_module_parallelism_is_set_over_grpc_by_any_client(aiond: Aiond, go_tools: GoTools) -> None:
    method = "aion.v1.ModuleService/SetModuleParallelism"

    def set_parallelism(role: str, request: str) -> subprocess.CompletedProcess[str]:
        token = f"authorization: Bearer {aiond.tokens[role]}"
        return go_tools.run(
            "grpcurl", "-plaintext", "-H", token, "-d", request, aiond.grpc_addr, method, check=False
        )

    done = set_parallelism("operator", '{"name": "summarize_text", "parallelism": 3, "reason": "drill"}')
    assert done.returncode == 0, done.stderr
    reply = json.loads(done.stdout)
    assert (reply["module"]["parallelism"], reply["previous_parallelism"]) == (3, 4), reply
    refused = set_parallelism("operator", '{"name": "summarize_text", "parallelism": 3}')
    assert "Code: InvalidArgument" in refused.stderr
    assert "a reason is required" in refused.stderr
    viewer = set_parallelism("viewer", '{"name": "summarize_text", "parallelism": 1, "reason": "x"}')
    assert "Code: PermissionDenied" in viewer.stderr


def test_metrics_count_calls(aiond: Aiond) -> None:
    assert aionctl("status", env=aiond.aionctl_env()).returncode == 0
    text = httpx.get(f"http://{aiond.http_addr}/metrics", timeout=5, trust_env=False).text
    assert "aion_build_info{python=" in text
    assert "aion_daemon_ready 1.0" in text
    assert 'aion_grpc_requests_total{code="OK",method="GetStatus",service="aion.v1.AdminService"} 1.0' in text


def test_sigterm_drains_then_exits_cleanly(tmp_path: Path) -> None:
    # A long delay holds the daemon in the drain window for as long as the checks take; the second
    # SIGTERM then ends it.
    daemon = Aiond(tmp_path, extra_args=["--shutdown-delay", "600"]).start()
    try:
        daemon.process.signal(signal.SIGTERM)
        poll(lambda: http_status(daemon, "/readyz") == 503 or None, timeout=10, what="readyz 503")
        assert http_status(daemon, "/healthz") == 200
        report = aionctl("health", "-o", "json", env=daemon.aionctl_env())
        assert report.returncode == 1, report.stdout
        checks = {c["name"]: c for c in json.loads(report.stdout)["checks"]}
        assert checks["grpc"]["status"] == "NOT_SERVING"
        assert checks["http-ready"]["status"] == "503"
        daemon.process.signal(signal.SIGTERM)
        assert daemon.process.wait(timeout=15) == 0
    finally:
        daemon.stop()
    log = daemon.process.log_path.read_text()
    order = [
        "SIGTERM: shutting down gracefully",
        "draining: readiness is now 503",
        "SIGTERM again",
        "stopped",
    ]
    positions = [log.index(line) for line in order]
    assert positions == sorted(positions), log


def test_sigterm_ends_open_streams_cleanly_and_promptly(tmp_path: Path) -> None:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    daemon = Aiond(tmp_path, extra_args=["--shutdown-grace", "30"]).start()
    channel = grpc.insecure_channel(daemon.grpc_addr, options=[("grpc.enable_http_proxy", 0)])
    try:
        stream = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(), timeout=60)
        assert next(stream).status == health_pb2.HealthCheckResponse.SERVING
        daemon.process.signal(signal.SIGTERM)
        rest = [message.status for message in stream]  # ends when the daemon closes it
        assert rest
        assert set(rest) == {health_pb2.HealthCheckResponse.NOT_SERVING}
        assert stream.code() == grpc.StatusCode.OK
        # The open stream did not hold the daemon for its 30 s grace period.
        assert daemon.process.wait(timeout=10) == 0
    finally:
        channel.close()
        daemon.stop()


def test_sighup_does_not_kill_the_daemon(aiond: Aiond) -> None:
    aiond.process.signal(signal.SIGHUP)
    poll(lambda: "SIGHUP" in aiond.process.log_path.read_text() or None, timeout=5, what="SIGHUP logged")
    assert aionctl("health", env=aiond.aionctl_env()).returncode == 0


def _run_aiond(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [program("aiond"), *args], capture_output=True, text=True, env=clean_env(), timeout=30, check=False
    )


def test_a_second_daemon_cannot_take_the_grpc_port(shared_aiond: Aiond, tmp_path: Path) -> None:
    result = _run_aiond(
        tmp_path, "--config", str(EXAMPLES), "--state-dir", str(tmp_path / "other"),
        "--grpc-listen", shared_aiond.grpc_addr, "--http-listen", f"127.0.0.1:{free_port()}",
    )  # fmt: skip
    assert result.returncode == 6, result.stderr
    assert (
        f"error: cannot listen for gRPC on {shared_aiond.grpc_addr}: address already in use" in result.stderr
    )
    assert "Traceback" not in result.stderr


def test_a_second_daemon_cannot_take_the_http_port(shared_aiond: Aiond, tmp_path: Path) -> None:
    result = _run_aiond(
        tmp_path, "--config", str(EXAMPLES), "--state-dir", str(tmp_path / "other"),
        "--grpc-listen", f"127.0.0.1:{free_port()}", "--http-listen", shared_aiond.http_addr,
    )  # fmt: skip
    assert result.returncode == 6, result.stderr
    assert f"cannot listen for HTTP on {shared_aiond.http_addr}: address already in use" in result.stderr


def test_a_second_daemon_cannot_share_the_state_dir(aiond: Aiond, tmp_path: Path) -> None:
    result = _run_aiond(
        tmp_path, "--config", str(EXAMPLES), "--state-dir", str(aiond.state_dir),
        "--grpc-listen", f"127.0.0.1:{free_port()}", "--http-listen", f"127.0.0.1:{free_port()}",
    )  # fmt: skip
    assert result.returncode == 6, result.stderr
    assert (
        f"state directory {aiond.state_dir} is in use by another aiond (pid {aiond.process.pid})"
        in result.stderr
    )


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        ([], 2, "error: --config is required"),
        (
            ["--config", "/nonexistent/aion"],
            3,
            "error: config directory /nonexistent/aion does not exist",
        ),
        (
            ["--config", str(EXAMPLES), "--grpc-listen", "x"],
            2,
            "error: --grpc-listen: 'x' is not HOST:PORT",
        ),
        (["--config", str(EXAMPLES), "--bogus"], 2, "error: unknown option or argument: --bogus"),
    ],
)
def test_bad_settings_exit_with_a_clear_message(
    tmp_path: Path, args: list[str], code: int, message: str
) -> None:
    result = _run_aiond(tmp_path, "--state-dir", str(tmp_path / "s"), *args)
    assert result.returncode == code, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_json_logs_are_one_object_per_line(tmp_path: Path) -> None:
    daemon = Aiond(tmp_path, extra_args=["--log-format", "json"]).start()
    assert daemon.stop() == 0
    records = [json.loads(line) for line in daemon.process.log_path.read_text().splitlines() if line.strip()]
    assert [r["message"] for r in records][-1] == "stopped"
    assert {"time", "level", "logger", "message"} <= set(records[0])


def test_environment_settings_are_used(tmp_path: Path) -> None:
    grpc_port, http_port = free_port(), free_port()
    env = clean_env(
        {
            "AIOND_CONFIG": str(EXAMPLES),
            "AIOND_STATE_DIR": str(tmp_path / "s"),
            "AIOND_GRPC_LISTEN": f"127.0.0.1:{grpc_port}",
            "AIOND_HTTP_LISTEN": f"127.0.0.1:{http_port}",
        }
    )
    proc = ManagedProcess(
        "aiond", [program("aiond")], log_path=tmp_path / "aiond.log", env=env, cwd=Path.cwd()
    )
    proc.start()
    try:
        proc.wait_ready(
            lambda: http_ok(f"http://127.0.0.1:{http_port}/readyz"),
            timeout=30,
        )
        result = aionctl(
            "health", "--addr", f"127.0.0.1:{grpc_port}", "--http-addr", f"127.0.0.1:{http_port}"
        )
        assert result.returncode == 0, result.stdout
    finally:
        assert proc.stop() == 0
