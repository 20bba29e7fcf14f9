"""Connections that send nothing, or half a request, against a real aiond under a 256 open-file limit:
the daemon closes them at its deadlines, keeps within its connection cap, keeps answering probes and
calls meanwhile, and logs a few lines at most, never a traceback."""

from __future__ import annotations

import contextlib
import errno
import resource
import socket
import ssl
from collections.abc import Iterator, Sequence
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.rig.certs import Authority
from tests.rig.daemon import Aiond, aionctl
from tests.rig.procs import poll

OPEN_FILES = 256
UNDER_LIMIT = ("prlimit", f"--nofile={OPEN_FILES}:{OPEN_FILES}")
SHORT_DEADLINES = ("--http-header-timeout", "2", "--http-idle-timeout", "2", "--grpc-handshake-timeout", "2")
WAIT = 30.0
"""Deadline for what the daemon must do within its 2-second timeouts (before the fix: an hour for
HTTP, two minutes for gRPC)."""


@pytest.fixture(autouse=True)
def _room_for_many_sockets() -> Iterator[None]:
    """The test process itself holds some 600 sockets: raise its own soft limit when it is low."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 4096 if hard == resource.RLIM_INFINITY else min(4096, hard)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    yield
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@contextlib.contextmanager
def _daemon(tmp_path: Path, *args: str) -> Iterator[Aiond]:
    """A real aiond under a 256 open-file limit."""
    daemon = Aiond(tmp_path, extra_args=args, command_prefix=UNDER_LIMIT).start()
    try:
        yield daemon
    finally:
        daemon.stop()


def _address(hostport: str) -> tuple[str, int]:
    host, port = hostport.rsplit(":", 1)
    return host, int(port)


@contextlib.contextmanager
def _connections(hostport: str, count: int, first_bytes: bytes = b"") -> Iterator[list[socket.socket]]:
    """``count`` TCP connections that send ``first_bytes`` (nothing by default) and then stall."""
    opened: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.create_connection(_address(hostport), timeout=10)
            if first_bytes:
                sock.sendall(first_bytes)
            sock.setblocking(False)
            opened.append(sock)
        yield opened
    finally:
        for sock in opened:
            sock.close()


def _closed_by_peer(sock: socket.socket) -> bool:
    """True once the daemon has closed ``sock`` (whatever it sent first is read and dropped)."""
    try:
        while sock.recv(65536):
            pass
    except BlockingIOError:
        return False
    except OSError as exc:
        return exc.errno in (errno.ECONNRESET, errno.EPIPE)
    return True


def _closed(socks: Sequence[socket.socket]) -> list[int]:
    return [index for index, sock in enumerate(socks) if _closed_by_peer(sock)]


def _all_closed(socks: Sequence[socket.socket], what: str) -> None:
    poll(lambda: len(_closed(socks)) == len(socks), timeout=WAIT, what=f"the daemon closing {what}")


def _http_status(daemon: Aiond, path: str) -> int:
    return httpx.get(f"http://{daemon.http_addr}{path}", timeout=2, trust_env=False).status_code


def _grpc_serving(daemon: Aiond) -> bool:
    with grpc.insecure_channel(daemon.grpc_addr, options=[("grpc.enable_http_proxy", 0)]) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def _still_serves(daemon: Aiond) -> None:
    """/healthz, /readyz, a gRPC health check and ``aionctl status`` with a token all answer."""
    poll(lambda: _http_status(daemon, "/healthz") == 200, timeout=WAIT, what="/healthz")
    poll(lambda: _http_status(daemon, "/readyz") == 200, timeout=WAIT, what="/readyz")
    poll(lambda: _grpc_serving(daemon), timeout=WAIT, what="gRPC health")

    def status() -> bool:
        return aionctl("status", env=daemon.aionctl_env("viewer"), timeout=30).returncode == 0

    poll(status, timeout=WAIT, what="aionctl status")


def _log(daemon: Aiond) -> str:
    return daemon.process.log_path.read_text(errors="replace")


def _assert_small_log(written: str, limit: int = 8 * 1024) -> None:
    assert "Traceback" not in written, written[:2000]
    assert len(written) < limit, written[:2000]


@pytest.fixture
def short_deadlines(tmp_path: Path) -> Iterator[Aiond]:
    """aiond under a 256 open-file limit with 2-second head, idle and gRPC handshake deadlines."""
    with _daemon(tmp_path, *SHORT_DEADLINES) as daemon:
        yield daemon


def test_silent_connections_to_both_ports_are_closed_and_never_take_aiond_down(
    short_deadlines: Aiond,
) -> None:
    daemon = short_deadlines
    before = len(_log(daemon))
    with _connections(daemon.http_addr, 300) as http, _connections(daemon.grpc_addr, 300) as grpc_:
        _still_serves(daemon)
        _all_closed(http, "silent HTTP connections")
        _all_closed(grpc_, "silent gRPC connections")
        _still_serves(daemon)
    _assert_small_log(_log(daemon)[before:])


def test_half_sent_request_lines_are_closed_at_the_head_deadline(short_deadlines: Aiond) -> None:
    daemon = short_deadlines
    before = len(_log(daemon))
    with _connections(daemon.http_addr, 300, first_bytes=b"GET /healthz HT") as stalled:
        _still_serves(daemon)
        _all_closed(stalled, "HTTP connections that stalled in their request line")
    _assert_small_log(_log(daemon)[before:])


def test_an_idle_keep_alive_connection_is_served_then_closed_at_the_idle_deadline(
    short_deadlines: Aiond,
) -> None:
    request = b"GET /healthz HTTP/1.1\r\nHost: aiond\r\n\r\n"
    with socket.create_connection(_address(short_deadlines.http_addr), timeout=10) as sock:
        for _ in range(2):  # keep-alive: the second request goes over the same connection
            sock.sendall(request)
            answer = b""
            while b'"status": "ok"' not in answer and b'"status":"ok"' not in answer:
                chunk = sock.recv(65536)
                assert chunk, f"closed before answering: {answer!r}"
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 200")
        sock.setblocking(False)
        poll(lambda: _closed_by_peer(sock), timeout=WAIT, what="the idle keep-alive connection closing")


def test_silent_connections_to_the_tls_port_are_closed_at_the_head_deadline(tmp_path: Path) -> None:
    ca = Authority(tmp_path / "ca")
    server = ca.issue("server", common_name="aiond", ips=("127.0.0.1",))
    tls = ("--tls-cert", str(server.cert), "--tls-key", str(server.key))
    trust = ssl.create_default_context(cafile=str(ca.pem))
    with _daemon(tmp_path / "aiond", *SHORT_DEADLINES, *tls) as daemon:
        before = len(_log(daemon))
        with _connections(daemon.http_addr, 300) as silent:  # no TLS handshake: not even a ClientHello

            def healthz() -> bool:
                url = f"https://{daemon.http_addr}/healthz"
                return httpx.get(url, timeout=2, trust_env=False, verify=trust).status_code == 200

            poll(healthz, timeout=WAIT, what="/healthz over TLS")
            _all_closed(silent, "silent connections to the TLS port")
        _assert_small_log(_log(daemon)[before:])


def test_at_the_cap_a_new_connection_takes_the_place_of_the_one_waiting_longest(tmp_path: Path) -> None:
    with _daemon(tmp_path, "--max-connections", "20", "--http-header-timeout", "120") as daemon:
        with _connections(daemon.http_addr, 50) as silent:
            # The 30 oldest make room for the 20 newest; none of them has its deadline yet.
            poll(lambda: _closed(silent) == list(range(30)), timeout=WAIT, what="30 oldest closed")
            assert _http_status(daemon, "/healthz") == 200  # served at the cap: the oldest made room
            poll(lambda: _closed(silent) == list(range(31)), timeout=WAIT, what="the 31st closed")
        assert "Traceback" not in _log(daemon)


def test_grpc_closes_connections_over_the_cap_at_once(tmp_path: Path) -> None:
    settings = ("--max-connections", "20", "--grpc-handshake-timeout", "120")
    with _daemon(tmp_path, *settings) as daemon, _connections(daemon.grpc_addr, 50) as silent:
        # The 20 within the cap stay until their handshake deadline; the 30 over it go at once.
        poll(lambda: len(_closed(silent)) == 30, timeout=WAIT, what="30 over the cap closed")
        poll(lambda: _http_status(daemon, "/healthz") == 200, timeout=WAIT, what="/healthz")


def test_accept_failures_for_want_of_descriptors_are_logged_throttled_and_serving_resumes(
    tmp_path: Path,
) -> None:
    # A cap above what the open-file limit allows: accept() itself runs out of descriptors.
    with _daemon(tmp_path, "--max-connections", "1000", "--http-header-timeout", "120") as daemon:
        before = len(_log(daemon))
        with _connections(daemon.http_addr, 300):
            poll(lambda: "accept" in _log(daemon)[before:], timeout=WAIT, what="the accept failure logged")
        _still_serves(daemon)  # once the descriptors are free again
        written = _log(daemon)[before:]
        _assert_small_log(written)
        assert written.count("accept") <= 5
        assert "HTTP: cannot accept connections: Too many open files (the open-file limit is 256)" in written
        assert "--max-connections 1000 on each listener needs about 2064 open files" in _log(daemon)
