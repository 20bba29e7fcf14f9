"""The real peers of the secret backends, for the tests.

- :class:`SopsTool`: the pinned sops (``install.py`` GO_TOOLS) and Debian's ``age-keygen``: makes age
  identities and encrypts mappings into sops files (the plaintext goes through a pipe, never a file).
- :class:`VaultStandIn`: a real HTTP server speaking the part of Vault's API that aion's vault backend
  uses (KV v2 reads, token lookup and renewal, AppRole login), with tokens that expire; a stand-in
  because a real Vault cannot be built here (its docstring says why).

Fixtures (registered by tests/rig/plugin.py): ``sops_tool`` (session) and ``vault`` (per test).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.rig import install


class SopsTool:
    """sops and age-keygen, with nothing of the caller's environment (no key of the machine's)."""

    def __init__(self, sops: Path, age_keygen: Path) -> None:
        self.sops, self.age_keygen = sops, age_keygen

    def identity(self, key_file: Path) -> str:
        """Make an age identity in ``key_file`` (mode 0600); its recipient (``age1...``)."""
        key_file.parent.mkdir(parents=True, exist_ok=True)
        key_file.unlink(missing_ok=True)
        done = subprocess.run(
            [str(self.age_keygen), "-o", str(key_file)], capture_output=True, text=True, check=True
        )
        match = re.search(r"age1[0-9a-z]+", done.stderr + done.stdout)
        assert match, done.stderr
        return match.group(0)

    def encrypt(self, data: Mapping[str, Any] | str, path: Path, *recipients: str) -> Path:
        """Encrypt ``data`` (a mapping, or the text of a document) for ``recipients`` into ``path``,
        whose suffix says YAML or JSON; replaced by one rename, so a reader sees old or new."""
        kind = "json" if path.suffix == ".json" else "yaml"
        text = data if isinstance(data, str) else json.dumps(dict(data))
        # JSON is YAML, so a mapping goes in as JSON either way; the output format follows the file.
        source = "json" if not isinstance(data, str) or kind == "json" else "yaml"
        done = subprocess.run(
            [
                str(self.sops), "encrypt", "--age", ",".join(recipients),
                "--input-type", source, "--output-type", kind, "/dev/stdin",
            ],
            input=text.encode(),
            capture_output=True,
            env={"HOME": "/nonexistent", "PATH": os.defpath},
            check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr.decode(errors="replace")
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(done.stdout)
        tmp.replace(path)
        return path


class VaultStandIn:
    """A stand-in for HashiCorp Vault on a free loopback port, speaking the part of Vault's HTTP API that
    aion's vault backend uses through hvac, with Vault's status codes and bodies:

    - ``GET /v1/MOUNT/data/PATH`` (KV v2 read): 403 ``permission denied`` for a token that is unknown,
      expired, revoked or without a policy for the path; 404 ``{"errors": []}`` for no secret;
    - ``GET /v1/auth/token/lookup-self``, ``POST /v1/auth/token/renew-self`` (TTL capped at the
      token's max TTL; 400 for a token that is not renewable);
    - ``POST /v1/auth/approle/login`` (400 ``invalid role or secret ID``);
    - ``GET /v1/sys/health``; ``sealed`` makes every answer 503, ``delay`` makes every answer late.

    Why a stand-in and not ``vault server -dev``: the Vault v1.21.4 module cannot be built from the Go
    module proxy. Its go.mod replaces api/ and sdk/ with directories of its own repository that are
    separate modules, which a module zip leaves out, and no published sdk version matches that tree
    (v0.20.0 lacks what 1.21.4 calls, v0.21.0 and later changed a signature it relies on). Every
    request is counted in ``calls`` ("GET /v1/secret/data/aion"), so tests see what the client did.
    """

    def __init__(self) -> None:
        import collections
        import threading

        self.root_token = "hvs.root" + secrets.token_hex(10)
        self.sealed = False
        self.delay = 0.0
        self.calls: collections.Counter[str] = collections.Counter()
        self._lock = threading.RLock()
        self._tokens: dict[str, dict[str, Any]] = {
            self.root_token: {"paths": {"*"}, "expires": None, "max": None, "ttl": 0, "renewable": False}
        }
        self._secrets: dict[str, list[dict[str, Any] | None]] = {}
        self._roles: dict[str, dict[str, Any]] = {}
        self._server: Any = None
        self.addr = ""

    # -- what tests set up ---------------------------------------------------------------------------

    def put(self, path: str, data: Mapping[str, Any], *, mount: str = "secret") -> None:
        """A new version of the KV v2 secret ``mount/path`` holding exactly ``data``."""
        with self._lock:
            self._secrets.setdefault(f"{mount}/data/{path}", []).append(dict(data))

    def delete(self, path: str, *, mount: str = "secret") -> None:
        """Soft-delete the latest version (``vault kv delete``): reads answer 404 until a new put."""
        with self._lock:
            self._secrets.setdefault(f"{mount}/data/{path}", []).append(None)

    def token(
        self, *paths: str, ttl: float = 3600, renewable: bool = True, max_ttl: float | None = None
    ) -> str:
        """A token whose policy may read the KV v2 ``paths`` ("secret/data/aion"); it expires ``ttl``
        seconds from now (0: never) and renews up to ``max_ttl`` seconds from now."""
        import time

        token = "hvs." + secrets.token_urlsafe(18)
        now = time.monotonic()
        with self._lock:
            self._tokens[token] = {
                "paths": set(paths),
                "ttl": ttl,
                "expires": now + ttl if ttl else None,
                "max": now + max_ttl if max_ttl else None,
                "renewable": renewable and bool(ttl),
            }
        return token

    def revoke(self, token: str) -> None:
        with self._lock:
            self._tokens.pop(token, None)

    def approle(
        self,
        role: str,
        *paths: str,
        token_ttl: float = 3600,
        token_max_ttl: float = 14400,
        renewable: bool = True,
    ) -> str:
        """An AppRole whose logins get tokens that may read ``paths``; its role_id."""
        role_id = secrets.token_hex(16)
        with self._lock:
            self._roles[role] = {
                "role_id": role_id, "paths": set(paths), "ttl": token_ttl, "max": token_max_ttl,
                "renewable": renewable, "secret_ids": set(),
            }  # fmt: skip
        return role_id

    def secret_id(self, role: str) -> str:
        value = secrets.token_hex(16)
        with self._lock:
            self._roles[role]["secret_ids"].add(value)
        return value

    def forget_secret_ids(self, role: str) -> None:
        with self._lock:
            self._roles[role]["secret_ids"].clear()

    def tokens_of_role(self) -> int:
        """How many AppRole logins succeeded."""
        return self.calls["POST /v1/auth/approle/login 200"]

    # -- serving -------------------------------------------------------------------------------------

    def _answer(self, method: str, path: str, token: str, body: dict[str, Any]) -> tuple[int, Any]:
        import time

        now = time.monotonic()
        if self.sealed:
            return 503, {"errors": ["Vault is sealed"]}
        if method == "GET" and path == "sys/health":
            return 200, {"initialized": True, "sealed": False, "standby": False, "version": "1.21.4"}
        if method == "POST" and path == "auth/approle/login":
            for role in self._roles.values():
                if body.get("role_id") == role["role_id"] and body.get("secret_id") in role["secret_ids"]:
                    issued = self.token(
                        *role["paths"], ttl=role["ttl"], max_ttl=role["max"], renewable=role["renewable"]
                    )
                    return 200, {"auth": self._auth(issued, now)}
            return 400, {"errors": ["invalid role or secret ID"]}
        held = self._tokens.get(token)
        if held is not None and held["expires"] is not None and now >= held["expires"]:
            self._tokens.pop(token, None)
            held = None
        if held is None:
            return 403, {"errors": ["permission denied"]}
        if path.startswith("auth/token/"):
            return self._token_call(method, path, token, held, now)
        if method == "GET" and "/data/" in path:
            return self._read(path, held)
        return 404, {"errors": []}

    def _token_call(
        self, method: str, path: str, token: str, held: dict[str, Any], now: float
    ) -> tuple[int, Any]:
        if method == "GET" and path == "auth/token/lookup-self":
            remaining = int(held["expires"] - now) if held["expires"] is not None else 0
            data = {"id": token, "ttl": remaining, "renewable": held["renewable"], "policies": ["default"]}
            return 200, {"data": data, "lease_duration": 0, "renewable": False}
        if method in ("POST", "PUT") and path == "auth/token/renew-self":
            if not held["renewable"]:
                return 400, {"errors": ["lease is not renewable"]}
            until = now + held["ttl"]
            held["expires"] = min(until, held["max"]) if held["max"] is not None else until
            return 200, {"auth": self._auth(token, now)}
        return 404, {"errors": []}

    def _read(self, path: str, held: dict[str, Any]) -> tuple[int, Any]:
        if "*" not in held["paths"] and path not in held["paths"]:
            return 403, {"errors": ["permission denied"]}
        versions = self._secrets.get(path) or [None]
        latest = versions[-1]
        if latest is None:
            return 404, {"errors": []}
        metadata = {"version": len(versions), "deletion_time": "", "destroyed": False}
        return 200, {
            "request_id": secrets.token_hex(8), "lease_id": "", "renewable": False, "lease_duration": 0,
            "data": {"data": latest, "metadata": metadata}, "wrap_info": None, "warnings": None, "auth": None,
        }  # fmt: skip

    def _auth(self, token: str, now: float) -> dict[str, Any]:
        held = self._tokens[token]
        lease = int(held["expires"] - now) if held["expires"] is not None else 0
        return {
            "client_token": token, "accessor": secrets.token_hex(8), "policies": ["default", "aion"],
            "lease_duration": lease, "renewable": held["renewable"],
        }  # fmt: skip

    def start(self, *, tls: tuple[Path, Path] | None = None) -> VaultStandIn:
        """Serve on a free loopback port; over TLS with ``tls`` (certificate and key PEM files)."""
        import http.server
        import ssl
        import threading
        import time

        vault = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                return

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else {}
                except ValueError:
                    body = {}
                path = self.path.split("?", 1)[0]
                if vault.delay:
                    time.sleep(vault.delay)
                with vault._lock:
                    if path.startswith("/v1/"):
                        status, answer = vault._answer(
                            self.command, path[4:], self.headers.get("X-Vault-Token", ""), body
                        )
                    else:
                        status, answer = 404, {"errors": []}
                    vault.calls[f"{self.command} {path}"] += 1
                    vault.calls[f"{self.command} {path} {status}"] += 1
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = _serve

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        scheme = "http"
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(tls[0]), str(tls[1]))
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
            scheme = "https"
        self.addr = f"{scheme}://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True, name="vault-stand-in").start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def _unavailable(what: str, reason: str, hint: str) -> None:
    from tests.rig.plugin import unavailable

    unavailable(what, reason, hint)


@pytest.fixture(scope="session")
def sops_tool() -> SopsTool:
    """The pinned sops and Debian's age-keygen."""
    sops = install.tool_path("sops")
    if sops is None:
        _unavailable("sops", "sops is not built at the pinned version", "python3 tests/rig/install.py go")
    keygen = install.command_path("age-keygen")
    if keygen is None:
        _unavailable("age", "age-keygen is not installed", "sudo apt-get install age")
    assert sops is not None
    assert keygen is not None
    return SopsTool(sops, keygen)


@pytest.fixture
def vault() -> Iterator[VaultStandIn]:
    """A Vault stand-in of the test's own (see :class:`VaultStandIn` for why not a real Vault)."""
    server = VaultStandIn().start()
    try:
        yield server
    finally:
        server.stop()
