"""Who may call what: every RPC at every role, token lifecycle, mTLS, and aionctl's exit codes for
authentication and reachability. All against a real aiond."""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import yaml

from aion.api.v1 import admin_pb2, backup_pb2, events_pb2, modules_pb2, policies_pb2, router_pb2, tasks_pb2
from aiond.security.auth import METHOD_ROLES, Role
from tests.integration.supply import conforms
from tests.rig.certs import Authority, Pair
from tests.rig.daemon import Aiond, aionctl, clean_env, program
from tests.rig.procs import free_port, poll

SERVICES = [
    module.DESCRIPTOR.services_by_name[name]
    for module, name in (
        (admin_pb2, "AdminService"),
        (policies_pb2, "PolicyService"),
        (modules_pb2, "ModuleService"),
        (tasks_pb2, "TaskService"),
        (router_pb2, "RouterService"),
        (events_pb2, "EventService"),
        (backup_pb2, "BackupService"),
    )
]
METHODS = [(f"/{s.full_name}/{m.name}", m.server_streaming) for s in SERVICES for m in s.methods]
ROLES = {"viewer": Role.VIEWER, "operator": Role.OPERATOR, "admin": Role.ADMIN}


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Aiond]:
    d = Aiond(tmp_path_factory.mktemp("auth")).start()
    yield d
    d.stop()


def raw_call(addr: str, method: str, streaming: bool, token: str | None) -> grpc.StatusCode:
    """Call ``method`` with an empty request; the status code it ends with."""

    def raw(data: bytes) -> bytes:
        return data

    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    with grpc.insecure_channel(addr, options=[("grpc.enable_http_proxy", 0)]) as channel:
        try:
            if streaming:
                call = channel.unary_stream(method, request_serializer=raw, response_deserializer=raw)
                for _ in call(b"", timeout=10, metadata=metadata):
                    pass
            else:
                channel.unary_unary(method, request_serializer=raw, response_deserializer=raw)(
                    b"", timeout=10, metadata=metadata
                )
        except grpc.RpcError as exc:
            code: grpc.StatusCode = exc.code()
            return code
    return grpc.StatusCode.OK


def test_the_role_table_names_every_rpc_of_the_contract() -> None:
    contract = {method for method, _ in METHODS}
    classified = {m for m in METHOD_ROLES if m.startswith("/aion.v1.")}
    assert contract == classified
    assert all(METHOD_ROLES[m] is not None for m in contract), "no aion.v1 method is open"


@pytest.mark.parametrize(("method", "streaming"), METHODS, ids=[m for m, _ in METHODS])
def test_every_rpc_enforces_its_role(daemon: Aiond, method: str, streaming: bool) -> None:
    needed = METHOD_ROLES[method]
    assert needed is not None
    assert raw_call(daemon.grpc_addr, method, streaming, None) is grpc.StatusCode.UNAUTHENTICATED
    assert raw_call(daemon.grpc_addr, method, streaming, "aion_000000000000_" + "x" * 43) is (
        grpc.StatusCode.UNAUTHENTICATED
    )
    for name, role in ROLES.items():
        code = raw_call(daemon.grpc_addr, method, streaming, daemon.tokens[name])
        if role < needed:
            assert code is grpc.StatusCode.PERMISSION_DENIED, (name, code)
        else:
            assert code not in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED), (
                name,
                code,
            )


def test_open_endpoints_need_no_token(daemon: Aiond) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(daemon.grpc_addr, options=[("grpc.enable_http_proxy", 0)]) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    for path in ("/healthz", "/readyz", "/metrics"):
        assert httpx.get(f"http://{daemon.http_addr}{path}", timeout=5, trust_env=False).status_code == 200


def test_a_header_that_is_not_a_bearer_token_is_refused(daemon: Aiond) -> None:
    token = daemon.tokens["admin"]
    for value in (token, f"Basic {token}", "Bearer", f"Bearer  {token}x"):
        with grpc.insecure_channel(daemon.grpc_addr, options=[("grpc.enable_http_proxy", 0)]) as channel:
            stub = policies_pb2_grpc_stub(channel)
            with pytest.raises(grpc.RpcError) as raised:
                stub.GetPolicyStatus(policies_pb2.GetPolicyStatusRequest(), timeout=5,
                                     metadata=(("authorization", value),))  # fmt: skip
        assert raised.value.code() is grpc.StatusCode.UNAUTHENTICATED, value


def policies_pb2_grpc_stub(channel: grpc.Channel) -> Any:
    from aion.api.v1 import policies_pb2_grpc

    return policies_pb2_grpc.PolicyServiceStub(channel)


def aiond_token(daemon: Aiond, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [program("aiond"), "token", "--state-dir", str(daemon.state_dir), *args],
        capture_output=True, text=True, env=clean_env(), timeout=60, check=False,
    )  # fmt: skip


def refused_within(env: dict[str, str], *, timeout: float, what: str) -> subprocess.CompletedProcess[str]:
    """Poll `aionctl policy status` until it exits 4 (refused); that result."""

    def attempt() -> subprocess.CompletedProcess[str] | None:
        result = aionctl("policy", "status", env=env)
        return result if result.returncode == 4 else None

    return poll(attempt, timeout=timeout, what=what)


def test_token_lifecycle_create_list_revoke(daemon: Aiond) -> None:
    created = aiond_token(daemon, "create", "ci-deploy", "--role", "operator", "-o", "json")
    assert created.returncode == 0, created.stderr
    credential = conforms(json.loads(created.stdout), "output/credential")
    token = credential["token"]
    assert (credential["name"], credential["role"], credential["type"]) == ("ci-deploy", "operator", "token")
    env = {"AION_ADDR": daemon.grpc_addr, "AION_TOKEN": token}
    assert aionctl("policy", "status", env=env).returncode == 0  # a new token works at once
    listed = aiond_token(daemon, "list", "-o", "json")
    listing = conforms(json.loads(listed.stdout), "output/credential")
    assert "ci-deploy" in [c["name"] for c in listing["credentials"]]
    secret = token.split("_", 2)[2]  # aion_<id>_<secret>; the secret may hold "_" itself
    assert secret not in listed.stdout
    assert secret not in aiond_token(daemon, "list").stdout
    duplicate = aiond_token(daemon, "create", "ci-deploy", "--role", "viewer")
    assert duplicate.returncode == 6
    assert "already has the name 'ci-deploy'" in duplicate.stderr
    revoked = aiond_token(daemon, "revoke", "ci-deploy")
    assert revoked.returncode == 0, revoked.stderr
    # The daemon caches a lookup for at most a second; then the token is refused.
    refused = refused_within(env, timeout=10, what="revocation")
    assert "was revoked" in refused.stderr
    assert aiond_token(daemon, "revoke", "ci-deploy").returncode == 3  # nothing live by that name
    assert "ci-deploy" not in aiond_token(daemon, "list").stdout
    assert "revoked" in aiond_token(daemon, "list", "--all").stdout


def test_an_expired_token_is_refused(daemon: Aiond) -> None:
    created = aiond_token(daemon, "create", "short-lived", "--role", "viewer", "--ttl", "2s")
    assert created.returncode == 0, created.stderr
    env = {"AION_ADDR": daemon.grpc_addr, "AION_TOKEN": created.stdout.strip()}
    refused = refused_within(env, timeout=15, what="expiry")
    assert "has expired" in refused.stderr


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["create", "x", "--role", "root"], 2, "error: --role: 'root' is not one of viewer, operator, admin"),
        (["create", "x", "--role", "viewer", "--ttl", "soon"], 2, "--ttl: 'soon' is not a duration"),
        (["create", "bad name", "--role", "viewer"], 2, "is not a valid credential name"),
        (["revoke", "nobody"], 3, "no live credential is named 'nobody'"),
    ],
)
def test_token_command_errors(daemon: Aiond, args: list[str], code: int, message: str) -> None:
    result = aiond_token(daemon, *args)
    assert result.returncode == code, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_aiond_token_flags_work_in_any_position(tmp_path: Path) -> None:
    state = str(tmp_path / "state")

    def token(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [program("aiond"), *args],
            capture_output=True,
            text=True,
            env=clean_env(),
            timeout=60,
            check=False,
        )

    after = token("token", "create", "ops", "--role", "admin", "--state-dir", state, "-o", "yaml")
    assert after.returncode == 0, after.stderr
    made = yaml.safe_load(after.stdout)
    assert (made["apiVersion"], made["kind"], made["name"]) == ("aion/v1", "Credential", "ops")
    before = token("--state-dir", state, "token", "-o", "json", "list")
    assert before.returncode == 0, before.stderr
    assert [c["name"] for c in json.loads(before.stdout)["credentials"]] == ["ops"]
    between = token("token", "--state-dir", state, "revoke", "ops", "-o", "json")
    assert between.returncode == 0, between.stderr
    assert json.loads(between.stdout)["revokedAt"] is not None
    wrong = token("token", "list", "--output", "xml", "--state-dir", state)
    assert wrong.returncode == 2
    assert wrong.stderr == (
        "error: --output: 'xml' is not one of text, json, yaml\nhint: see aiond token list --help\n"
    )


def test_aionctl_exit_codes_for_auth(daemon: Aiond) -> None:
    missing = aionctl("policy", "status", env={"AION_ADDR": daemon.grpc_addr})
    assert missing.returncode == 4
    assert "carries no token" in missing.stderr
    assert "AION_TOKEN" in missing.stderr  # the hint says how to give one
    weak = aionctl("policy", "reload", env=daemon.aionctl_env("viewer"))
    assert weak.returncode == 4
    assert "needs role operator" in weak.stderr
    malformed = aionctl("policy", "status", env={"AION_ADDR": daemon.grpc_addr, "AION_TOKEN": "hunter2"})
    assert malformed.returncode == 4
    assert "malformed" in malformed.stderr
    assert "hunter2" not in malformed.stderr + malformed.stdout  # a token is never echoed


def test_token_file_flag_and_context(daemon: Aiond, tmp_path: Path) -> None:
    token_file = tmp_path / "viewer.token"
    token_file.write_text(daemon.tokens["viewer"] + "\n")
    by_flag = aionctl(
        "policy", "status", "--token-file", str(token_file), env={"AION_ADDR": daemon.grpc_addr}
    )
    assert by_flag.returncode == 0, by_flag.stderr
    config = tmp_path / "client.yaml"
    env = {"AION_CLIENT_CONFIG": str(config)}
    made = aionctl("config", "set-context", "t", "--addr", daemon.grpc_addr, "--token-file", str(token_file),
                   "--use", env=env)  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert aionctl("policy", "status", env=env).returncode == 0
    # env beats the context, and a flag beats env
    weak = aionctl("policy", "reload", env={**env, "AION_TOKEN": daemon.tokens["viewer"]})
    assert weak.returncode == 4
    strong = aionctl("policy", "reload", env={**env, "AION_TOKEN": daemon.tokens["operator"]})
    assert strong.returncode == 0, strong.stderr
    operator_file = tmp_path / "op.token"
    operator_file.write_text(daemon.tokens["operator"])
    flagged = aionctl("policy", "reload", "--token-file", str(operator_file),
                      env={**env, "AION_TOKEN": daemon.tokens["viewer"]})  # fmt: skip
    assert flagged.returncode == 0, flagged.stderr
    unreadable = aionctl("policy", "status", "--token-file", str(tmp_path / "absent"), env=env)
    assert unreadable.returncode == 3


def test_unreachable_daemon_exits_5() -> None:
    result = aionctl("policy", "status", "--addr", f"127.0.0.1:{free_port()}", "--timeout", "2",
                     env={"AION_TOKEN": "aion_000000000000_" + "x" * 43})  # fmt: skip
    assert result.returncode == 5
    assert "cannot reach aiond" in result.stderr


def test_a_daemon_that_does_not_answer_times_out_with_exit_5() -> None:
    # A socket that accepts connections (the kernel's backlog) and never speaks: the call's deadline ends it.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        port = silent.getsockname()[1]
        result = aionctl("policy", "history", "--addr", f"127.0.0.1:{port}", "--timeout", "1", timeout=30)
    assert result.returncode == 5
    assert "did not answer within 1s" in result.stderr


# -- mTLS -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("pki")
    ca = Authority(root / "ca")
    rogue = Authority(root / "rogue", name="rogue CA")
    return {
        "ca": ca.pem,
        "server": ca.issue("server", common_name="aiond", dns=("localhost",), ips=("127.0.0.1",)),
        "client": ca.issue("client", common_name="ci", uris=("spiffe://aion.test/ci",), client=True),
        "grant": ca.issue("grant", common_name="robot.aion.test", dns=("robot.aion.test",), client=True),
        "rogue": rogue.issue("rogue", common_name="ci", uris=("spiffe://aion.test/ci",), client=True),
    }


@pytest.fixture(scope="module")
def mtls_daemon(tmp_path_factory: pytest.TempPathFactory, pki: dict[str, Any]) -> Iterator[Aiond]:
    server: Pair = pki["server"]
    d = Aiond(
        tmp_path_factory.mktemp("mtls"),
        extra_args=[
            "--tls-cert",
            str(server.cert),
            "--tls-key",
            str(server.key),
            "--tls-client-ca",
            str(pki["ca"]),
        ],
    )
    grant = d.create_token("robot", "viewer", "--identity", "robot.aion.test")
    assert grant == ""  # an identity grant has no secret to show
    d.start()
    yield d
    d.stop()


def tls_env(daemon: Aiond, pki: dict[str, Any], client: str | None, role: str = "admin") -> dict[str, str]:
    env = {"AION_ADDR": daemon.grpc_addr, "AION_HTTP_ADDR": daemon.http_addr, "AION_TLS_CA": str(pki["ca"])}
    if role:
        env["AION_TOKEN"] = daemon.tokens[role]
    if client is not None:
        pair: Pair = pki[client]
        env |= {"AION_TLS_CERT": str(pair.cert), "AION_TLS_KEY": str(pair.key)}
    return env


def test_mtls_accepts_a_good_client_certificate_and_names_the_principal(
    mtls_daemon: Aiond, pki: dict[str, Any]
) -> None:
    reloaded = aionctl("policy", "reload", "-o", "json", env=tls_env(mtls_daemon, pki, "client"))
    assert reloaded.returncode == 0, reloaded.stderr
    lines = aionctl("events", "tail", "-o", "json", "-n", "5", env=tls_env(mtls_daemon, pki, "client")).stdout
    reloads = [e for e in map(json.loads, lines.splitlines()) if e["action"] == "policy.reload"]
    assert (
        reloads[-1]["principal"] == "spiffe://aion.test/ci"
    )  # the certificate's identity, not the token's name
    health = aionctl("health", env=tls_env(mtls_daemon, pki, "client", role=""))
    assert health.returncode == 0, health.stdout + health.stderr


def test_mtls_identity_grant_authorises_without_a_token(mtls_daemon: Aiond, pki: dict[str, Any]) -> None:
    env = tls_env(mtls_daemon, pki, "grant", role="")
    assert aionctl("policy", "status", env=env).returncode == 0
    weak = aionctl("policy", "reload", env=env)
    assert weak.returncode == 4
    assert "robot.aion.test has viewer" in weak.stderr
    # A certificate without a grant and without a token has no role.
    assert aionctl("policy", "status", env=tls_env(mtls_daemon, pki, "client", role="")).returncode == 4


@pytest.mark.parametrize("client", [None, "rogue"], ids=["no-certificate", "wrong-ca"])
def test_mtls_refuses_a_missing_or_foreign_client_certificate(
    mtls_daemon: Aiond, pki: dict[str, Any], client: str | None
) -> None:
    result = aionctl("policy", "status", "--timeout", "5", env=tls_env(mtls_daemon, pki, client))
    assert result.returncode == 5, result.stderr  # the TLS handshake fails: no call is made
    assert "the TLS handshake with aiond at" in result.stderr
    assert "wants a client certificate it trusts" in result.stderr
    assert "is aiond running?" not in result.stderr
    assert "Traceback" not in result.stderr
    assert "ssl_transport_security" not in result.stderr  # grpc's own log lines stay out


def test_mtls_plaintext_clients_are_refused(mtls_daemon: Aiond) -> None:
    result = aionctl("policy", "status", "--timeout", "5", env=mtls_daemon.aionctl_env())
    assert result.returncode == 5
    assert "the TLS handshake with aiond" in result.stderr
    assert "is aiond serving TLS?" in result.stderr


def test_a_server_certificate_from_another_ca_says_so(
    mtls_daemon: Aiond, pki: dict[str, Any], tmp_path: Path
) -> None:
    other = Authority(tmp_path / "other", name="other CA")
    env = tls_env(mtls_daemon, pki, "client") | {"AION_TLS_CA": str(other.pem)}
    result = aionctl("whoami", "--timeout", "5", env=env)
    assert result.returncode == 5
    assert "failed: aiond's certificate is not trusted" in result.stderr


def test_whoami_names_the_principal_and_role_the_daemon_sees(mtls_daemon: Aiond, pki: dict[str, Any]) -> None:
    certified = aionctl("whoami", "-o", "json", env=tls_env(mtls_daemon, pki, "client"))
    assert certified.returncode == 0, certified.stderr
    assert conforms(json.loads(certified.stdout), "output/identity") == {
        "apiVersion": "aion/v1", "kind": "Identity", "principal": "spiffe://aion.test/ci", "role": "admin",
        "credential": "test-admin", "tls": True, "clientCertificate": True,
    }  # fmt: skip
    granted = aionctl("whoami", env=tls_env(mtls_daemon, pki, "grant", role=""))
    assert granted.returncode == 0, granted.stderr
    assert granted.stdout.splitlines()[:3] == [
        "principal:   robot.aion.test", "role:        viewer", "credential:  certificate",
    ]  # fmt: skip


def test_the_bootstrap_runbook_checks_mtls_when_it_is_required(
    mtls_daemon: Aiond, daemon: Aiond, pki: dict[str, Any], tmp_path: Path
) -> None:
    def bootstrap(env: dict[str, str]) -> tuple[int, dict[str, Any]]:
        env = env | {"XDG_STATE_HOME": str(tmp_path / "xdg")}
        args = ("runbook", "run", "bootstrap", "--var", "require_mtls=true", "--var", "ready_within=5s")
        result = aionctl(*args, "-o", "json", env=env, timeout=120)
        assert "Traceback" not in result.stderr, result.stderr
        doc: dict[str, Any] = conforms(json.loads(result.stdout), "output/runbook-report")
        return result.returncode, doc

    code, doc = bootstrap(tls_env(mtls_daemon, pki, "client"))
    assert code == 0, [(s["name"], s["status"], s.get("error")) for s in doc["steps"]]
    assert {s["name"]: s["status"] for s in doc["steps"]} == {
        "ready": "passed", "serving": "passed", "identity": "passed", "mtls": "passed",
    }  # fmt: skip
    # The same runbook against a daemon reached in plain text: every step before the last passes,
    # and the last says what is wrong.
    code, doc = bootstrap(daemon.aionctl_env("admin"))
    assert code == 1
    assert doc["failedStep"] == "mtls"
    assert "the connection to aiond is TLS" in json.dumps(doc["steps"][-1])


def test_https_policy_endpoint_with_a_client_certificate(mtls_daemon: Aiond, pki: dict[str, Any]) -> None:
    import ssl

    context = ssl.create_default_context(cafile=str(pki["ca"]))
    client: Pair = pki["grant"]
    context.load_cert_chain(str(client.cert), str(client.key))
    got = httpx.get(
        f"https://{mtls_daemon.http_addr}/router/policy", verify=context, timeout=10, trust_env=False
    )
    assert got.status_code == 200  # the identity grant gives viewer over HTTPS too
    anonymous = ssl.create_default_context(cafile=str(pki["ca"]))
    assert (
        httpx.get(
            f"https://{mtls_daemon.http_addr}/readyz", verify=anonymous, timeout=10, trust_env=False
        ).status_code
        == 200
    )
    assert httpx.get(f"https://{mtls_daemon.http_addr}/router/policy", verify=anonymous, timeout=10,
                     trust_env=False).status_code == 401  # fmt: skip


def test_a_malformed_token_is_never_echoed(daemon: Aiond, tmp_path: Path) -> None:
    token_file = tmp_path / "two-lines.token"
    token_file.write_text("aion_x\nsecond_secret_line\n")
    for command in (["health"], ["policy", "status"]):
        env = {
            "AION_ADDR": daemon.grpc_addr,
            "AION_HTTP_ADDR": daemon.http_addr,
            "AION_TOKEN_FILE": str(token_file),
        }
        result = aionctl(*command, "-o", "json", env=env)
        assert result.returncode == 2, result.stderr
        assert "malformed" in result.stderr
        assert "second_secret_line" not in result.stdout + result.stderr


def test_token_list_refuses_a_state_dir_without_state(tmp_path: Path) -> None:
    result = subprocess.run(
        [program("aiond"), "token", "--state-dir", str(tmp_path / "typo"), "list"],
        capture_output=True, text=True, env=clean_env(), timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 3
    assert "holds no aiond state" in result.stderr
    assert not (tmp_path / "typo").exists()
