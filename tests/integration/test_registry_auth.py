"""Registries that want credentials: real distribution with HTTP basic auth (htpasswd) and with bearer
tokens from a token service. aion finds credentials where CI and docker users keep them."""

from __future__ import annotations

import base64
import contextlib
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.supply import make_signer, write_module, write_trust
from tests.rig.daemon import aionctl
from tests.rig.services import GoTools, OciRegistry


def docker_config(directory: Path, registry: str, entry: dict[str, str]) -> dict[str, str]:
    """A docker config.json with one ``auths`` entry; returns the environment that selects it."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps({"auths": {registry: entry}}))
    return {"DOCKER_CONFIG": str(directory)}


def env_credentials(registry: OciRegistry, *, password: str | None = None) -> dict[str, str]:
    """CI-style credentials in the environment, for this registry."""
    return {
        "AION_REGISTRY_HOST": registry.host,
        "AION_REGISTRY_USERNAME": registry.username,
        "AION_REGISTRY_PASSWORD": registry.password if password is None else password,
    }


def basic(registry: OciRegistry) -> dict[str, str]:
    return {"auth": base64.b64encode(f"{registry.username}:{registry.password}".encode()).decode()}


def test_push_with_env_credentials_then_install_with_docker_config(
    oci_registry_auth: OciRegistry, go_tools: GoTools, tmp_path: Path
) -> None:
    registry = oci_registry_auth
    repo = f"{registry.host}/auth/module"
    env = env_credentials(registry)
    pushed = aionctl(
        "module",
        "push",
        str(write_module(tmp_path / "mod")),
        f"{repo}:1.3.0",
        "--plain-http",
        "-o",
        "json",
        env=env,
    )
    assert pushed.returncode == 0, pushed.stderr
    digest = json.loads(pushed.stdout)["digest"]

    # cosign and aion both read the docker config; cosign signs through the same auth.
    config_env = docker_config(tmp_path / "docker", registry.host, basic(registry))
    signer = make_signer(go_tools, tmp_path / "keys")
    go_tools.run(
        "cosign", "sign", "--key", str(signer.key), "--tlog-upload=false", "--use-signing-config=false",
        "--allow-http-registry", "-y", f"{repo}@{digest}",
        env={"COSIGN_PASSWORD": "", "HOME": str(tmp_path), **config_env}, timeout=120,
    )  # fmt: skip
    config = write_trust(tmp_path / "cfg", {"rules": [{"match": repo, "keys": [str(signer.pub)]}]})

    result = aionctl(
        "install", f"{repo}:1.3.0", "--config", str(config), "--store", str(tmp_path / "store"),
        "--plain-http", "-o", "json", env=config_env,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["digest"] == digest
    if registry.tokens is not None:
        assert registry.tokens.issued > 0, "the bearer flow must have been used"


@pytest.mark.parametrize("oci_registry_auth", ["token"], indirect=True)
def test_identity_token_in_docker_config(oci_registry_auth: OciRegistry, tmp_path: Path) -> None:
    registry = oci_registry_auth
    assert registry.tokens is not None
    repo = f"{registry.host}/auth/identity"
    env = docker_config(tmp_path / "docker", registry.host, {"identitytoken": registry.tokens.refresh_token})
    pushed = aionctl(
        "module", "push", str(write_module(tmp_path / "mod")), f"{repo}:1", "--plain-http", env=env
    )
    assert pushed.returncode == 0, pushed.stderr


@pytest.mark.parametrize("credentials", ["wrong", "none"])
def test_refused_credentials_exit_4_and_say_what_to_do(
    oci_registry_auth: OciRegistry, tmp_path: Path, credentials: str
) -> None:
    registry = oci_registry_auth
    env = {"DOCKER_CONFIG": str(tmp_path / "empty")}
    if credentials == "wrong":
        env.update(env_credentials(registry, password="not-the-password"))
    result = aionctl(
        "module",
        "push",
        str(write_module(tmp_path / "mod")),
        f"{registry.host}/auth/refused:1",
        "--plain-http",
        env=env,
    )
    assert result.returncode == 4, result.stderr
    assert registry.host in result.stderr
    refused = {
        ("token", "wrong"): "the token service refused the credentials",
        ("token", "none"): "the token service refused anonymous access",
        ("htpasswd", "wrong"): "access refused (401",
        ("htpasswd", "none"): "access refused (401",
    }[(str(registry.auth), credentials)]
    assert refused in result.stderr
    assert "AION_REGISTRY_HOST" in result.stderr
    assert registry.password not in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("oci_registry_auth", ["htpasswd"], indirect=True)
def test_oras_pulls_with_the_same_account(
    oci_registry_auth: OciRegistry, go_tools: GoTools, tmp_path: Path
) -> None:
    registry = oci_registry_auth
    repo = f"{registry.host}/auth/oras"
    env = env_credentials(registry)
    module = write_module(tmp_path / "mod")
    assert aionctl("module", "push", str(module), f"{repo}:1", "--plain-http", env=env).returncode == 0
    out = tmp_path / "pulled"
    go_tools.run(
        "oras",
        "pull",
        "--plain-http",
        "-u",
        registry.username,
        "-p",
        registry.password,
        "-o",
        str(out),
        f"{repo}:1",
    )
    assert (out / "summarize_text.wasm").read_bytes() == (module / "summarize_text.wasm").read_bytes()


@contextlib.contextmanager
def challenging_registry(challenge: str) -> Iterator[tuple[str, list[dict[str, str]]]]:
    """A registry that answers every request with 401 and ``challenge``; yields its host and the
    headers of every request it received."""
    seen: list[dict[str, str]] = []

    class Registry(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            return

        def do_GET(self) -> None:
            seen.append(dict(self.headers.items()))
            self.send_response(401)
            self.send_header("WWW-Authenticate", challenge)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_HEAD = do_POST = do_PUT = do_GET

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Registry)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    "realm",
    [
        "http://169.254.169.254/latest/meta-data",
        "http://2852039166/latest/meta-data",
        "http://10.0.0.8/token",
        "ftp://tokens/x",
    ],
)
def test_a_registry_cannot_send_credentials_to_a_local_address(tmp_path: Path, realm: str) -> None:
    """A registry on loopback answers 401 with a realm at the cloud metadata service (also spelled
    as a bare number), a private address, or another scheme; aion refuses to go there."""
    with challenging_registry(f'Bearer realm="{realm}",service="x"') as (host, seen):
        env = {
            "AION_REGISTRY_HOST": host,
            "AION_REGISTRY_USERNAME": "u",
            "AION_REGISTRY_PASSWORD": "secret-password",
        }
        config = write_trust(tmp_path / "cfg", {"rules": [{"match": "**", "keys": ["k.pub"]}]})
        result = aionctl(
            "install",
            f"{host}/m:1",
            "--config",
            str(config),
            "--store",
            str(tmp_path / "s"),
            "--plain-http",
            env=env,
        )
    assert seen, "the registry was asked"
    assert result.returncode == 4, result.stderr
    assert f"refusing the token realm {realm}" in result.stderr
    assert "secret-password" not in result.stderr


def test_env_credentials_go_only_to_their_registry(tmp_path: Path) -> None:
    """CI credentials meant for one registry are not offered to another that asks for them."""
    with challenging_registry('Basic realm="x"') as (host, seen):
        env = {
            "AION_REGISTRY_HOST": "registry.example.com",
            "AION_REGISTRY_USERNAME": "ci",
            "AION_REGISTRY_PASSWORD": "for-registry-example-only",
            "DOCKER_CONFIG": str(tmp_path / "none"),
        }
        result = aionctl(
            "module", "push", str(write_module(tmp_path / "m")), f"{host}/m:1", "--plain-http", env=env
        )
    assert result.returncode == 4, result.stderr
    assert seen
    assert not any("Authorization" in headers for headers in seen)
