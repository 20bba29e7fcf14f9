"""A registry that misbehaves on purpose, served by a real HTTP server: oversized and never-ending
bodies, compressed bodies, redirect loops, nonsense headers and malformed JSON. Each ends in a clean
refusal (exit 1, 3 or 4 with a message), never a traceback, a hang or unbounded memory."""

from __future__ import annotations

import contextlib
import gzip
import http.server
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.supply import quarantine_reasons, write_trust
from tests.rig.daemon import aionctl

Handler = Callable[[http.server.BaseHTTPRequestHandler], None]


@contextlib.contextmanager
def hostile(manifest: Handler) -> Iterator[str]:
    """A registry whose manifest endpoint is ``manifest``; everything else is 404."""

    class Registry(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            return

        def do_GET(self) -> None:
            if "/manifests/" in self.path:
                manifest(self)
                return
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_HEAD = do_GET

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Registry)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def send(handler: http.server.BaseHTTPRequestHandler, body: bytes, **headers: str) -> None:
    handler.send_response(int(headers.pop("status", "200")))
    handler.send_header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
    for name, value in headers.items():
        handler.send_header(name.replace("_", "-"), value)
    if "Content-Length" not in {k.replace("_", "-") for k in headers}:
        handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def endless(handler: http.server.BaseHTTPRequestHandler) -> None:
    """A chunked body that would never end (stops when the client hangs up)."""
    handler.send_response(200)
    handler.send_header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
    handler.send_header("Transfer-Encoding", "chunked")
    handler.end_headers()
    chunk = b"[" * 65536
    with contextlib.suppress(OSError):
        for _ in range(10_000):  # 640 MiB, far past any limit
            handler.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))


CASES: dict[str, tuple[Handler, int, str]] = {
    "endless-body": (endless, 1, "is over the 4194304-byte limit"),
    "declared-too-large": (
        lambda h: send(h, b"{}", Content_Length=str(64 * 1024 * 1024)),
        1,
        "is 67108864 bytes; the limit is 4194304",
    ),
    "gzip-encoded": (
        lambda h: send(h, gzip.compress(b"{}" + b" " * 10_000_000), Content_Encoding="gzip"),
        3,
        "'gzip'-encoded body",
    ),
    "redirect-loop": (lambda h: send(h, b"", status="302", Location=h.path), 3, "redirect"),
    "retry-after-nan": (lambda h: send(h, b"", status="503", Retry_After="nan"), 3, "answered 503"),
    "deep-json": (lambda h: send(h, b"[" * 200_000 + b"]" * 200_000), 1, "the manifest is not JSON"),
    "digest-is-a-number": (
        lambda h: send(
            h, json.dumps({"schemaVersion": 2, "config": {"digest": 5, "size": 1, "mediaType": "x"}}).encode()
        ),
        1,
        "malformed descriptor",
    ),
    "control-characters-in-errors": (
        lambda h: send(
            h, json.dumps({"errors": [{"code": "X\x1b[2J", "message": "m"}]}).encode(), status="400"
        ),
        3,
        "X\\x1b[2J",
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_hostile_registry_is_refused_cleanly(tmp_path: Path, case: str) -> None:
    handler, code, message = CASES[case]
    config = write_trust(tmp_path / "cfg", {"rules": [{"match": "**", "keys": ["k.pub"]}]})
    store = tmp_path / "store"
    with hostile(handler) as host:
        result = aionctl(
            "install",
            f"{host}/m:1",
            "--config",
            str(config),
            "--store",
            str(store),
            "--plain-http",
            timeout=60,
        )
    assert result.returncode == code, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert "\x1b" not in result.stderr
    (reason,) = quarantine_reasons(store)
    assert reason["step"] == "resolve"
    assert not (store / "aion.lock").exists()
