"""The sops and Vault secret backends against their real peers: the pinned sops with age keys made by
Debian's age-keygen, and a Vault stand-in speaking Vault's HTTP API (tests/rig/secrets.py says why not
a real Vault). Values are read, rotations take effect without a new backend, missing secrets and
broken backends are told apart, and no value, token or secret_id appears in any error, repr or log."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

from aion.errors import Error, UsageError
from aion.exitcodes import ExitCode
from aion.secrets.base import SecretMissing, SecretsUnavailable
from aion.secrets.select import backend_for
from aion.secrets.sops import SopsSecrets
from aion.secrets.vault import VaultSecrets
from tests.rig.procs import free_port
from tests.rig.secrets import SopsTool, VaultStandIn

CANARY = "canary-7d1f0b-do-not-print"
"""Planted in every secret value: it must never show up anywhere but in a returned value."""


def canaries(*extra: str) -> tuple[str, ...]:
    return (CANARY, *extra)


def assert_clean(texts: Iterable[str], *planted: str) -> None:
    for text in texts:
        for value in canaries(*planted):
            assert value not in text, f"a secret value leaked into: {text!r}"


def error_texts(exc: BaseException) -> list[str]:
    texts = [str(exc), repr(exc)]
    if isinstance(exc, Error):
        texts += [exc.message, exc.hint or "", exc.diagnostics()]
    return texts


def raised(call: Callable[[], object], kind: type[BaseException]) -> BaseException:
    with pytest.raises(kind) as info:
        call()
    return info.value


# -- sops ---------------------------------------------------------------------------------------------


@pytest.fixture
def age_key(sops_tool: SopsTool, tmp_path: Path) -> tuple[Path, str]:
    key = tmp_path / "keys" / "aiond.agekey"
    return key, sops_tool.identity(key)


def sops_backend(sops_tool: SopsTool, file: Path, key: Path, **kwargs: Any) -> SopsSecrets:
    return SopsSecrets(file, key, binary=sops_tool.sops, **kwargs)


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_sops_values_are_read_once_until_the_file_changes(
    sops_tool: SopsTool, age_key: tuple[Path, str], tmp_path: Path, suffix: str
) -> None:
    key, recipient = age_key
    file = sops_tool.encrypt(
        {"OPENAI_API_KEY": f"sk-{CANARY}-1", "HF_TOKEN": f"hf-{CANARY}"},
        tmp_path / f"s.enc{suffix}",
        recipient,
    )
    backend = sops_backend(sops_tool, file, key)

    assert backend.get("OPENAI_API_KEY") == f"sk-{CANARY}-1"
    assert backend.get("HF_TOKEN") == f"hf-{CANARY}"
    assert backend.get("OPENAI_API_KEY") == f"sk-{CANARY}-1"
    assert backend.decryptions == 1
    assert_clean([repr(backend), backend.describe()])


def test_sops_rotation_takes_effect_on_the_next_get(
    sops_tool: SopsTool, age_key: tuple[Path, str], tmp_path: Path
) -> None:
    key, recipient = age_key
    file = tmp_path / "secrets.enc.yaml"
    sops_tool.encrypt({"OPENAI_API_KEY": f"old-{CANARY}"}, file, recipient)
    backend = sops_backend(sops_tool, file, key)
    assert backend.get("OPENAI_API_KEY") == f"old-{CANARY}"

    sops_tool.encrypt({"OPENAI_API_KEY": f"new-{CANARY}", "ADDED": f"added-{CANARY}"}, file, recipient)

    assert backend.get("OPENAI_API_KEY") == f"new-{CANARY}"
    assert backend.get("ADDED") == f"added-{CANARY}"
    assert backend.decryptions == 2


def test_sops_rotation_through_a_swapped_link_as_kubernetes_does(
    sops_tool: SopsTool, age_key: tuple[Path, str], tmp_path: Path
) -> None:
    key, recipient = age_key
    for version in ("v1", "v2"):
        (tmp_path / version).mkdir()
        sops_tool.encrypt({"K": f"{version}-{CANARY}"}, tmp_path / version / "secrets.yaml", recipient)
    (tmp_path / "..data").symlink_to("v1")
    file = tmp_path / "secrets.yaml"
    file.symlink_to("..data/secrets.yaml")
    backend = sops_backend(sops_tool, file, key)
    assert backend.get("K") == f"v1-{CANARY}"

    (tmp_path / "..data.new").symlink_to("v2")
    (tmp_path / "..data.new").replace(tmp_path / "..data")

    assert backend.get("K") == f"v2-{CANARY}"


def test_a_missing_secret_names_itself_and_the_file(
    sops_tool: SopsTool, age_key: tuple[Path, str], tmp_path: Path
) -> None:
    key, recipient = age_key
    file = sops_tool.encrypt({"PRESENT": CANARY, "COUNT": 5, "EMPTY": "  "}, tmp_path / "s.yaml", recipient)
    backend = sops_backend(sops_tool, file, key)

    missing = raised(lambda: backend.get("ANTHROPIC_API_KEY"), SecretMissing)
    assert isinstance(missing, SecretMissing)
    assert missing.name == "ANTHROPIC_API_KEY"
    assert missing.message == f"secret 'ANTHROPIC_API_KEY' is not set in {file}"
    assert missing.exit_code is ExitCode.INPUT
    number = raised(lambda: backend.get("COUNT"), SecretMissing)
    assert "is a number, not a text value" in str(number)
    empty = raised(lambda: backend.get("EMPTY"), SecretMissing)
    assert "is empty, not a text value" in str(empty)
    assert_clean([t for e in (missing, number, empty) for t in error_texts(e)])


def write_plain(path: Path, text: str) -> Path:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path


@pytest.mark.parametrize(
    ("damage", "said"),
    [
        ("tampered", "was altered or damaged since it was encrypted"),
        ("plain", "is not encrypted with sops (it has no sops metadata)"),
        ("not-yaml", "is not valid YAML"),
        ("not-a-mapping", "does not hold a mapping of secret names to values"),
    ],
)
def test_a_file_that_cannot_be_decrypted_is_a_clear_error_without_values(
    sops_tool: SopsTool, age_key: tuple[Path, str], tmp_path: Path, damage: str, said: str
) -> None:
    key, recipient = age_key
    file = sops_tool.encrypt({"K": f"v-{CANARY}", "OTHER": f"o-{CANARY}"}, tmp_path / "s.yaml", recipient)
    text = file.read_text()
    if damage == "tampered":
        start = text.index("ENC[AES256_GCM,data:") + len("ENC[AES256_GCM,data:")
        flipped = "A" if text[start] != "A" else "B"
        write_plain(file, text[:start] + flipped + text[start + 1 :])
    elif damage == "plain":
        write_plain(file, f"K: v-{CANARY}\nOTHER: o-{CANARY}\n")
    elif damage == "not-yaml":
        write_plain(file, f"K: [v-{CANARY}\n")
    else:
        write_plain(file, f"- v-{CANARY}\n")
    backend = sops_backend(sops_tool, file, key)

    error = raised(lambda: backend.get("K"), SecretsUnavailable)

    assert isinstance(error, SecretsUnavailable)
    assert error.message.startswith("secret 'K' cannot be read: ")
    assert said in error.message, error.message
    assert f"sops decrypt {file}" in (error.hint or "")
    assert error.exit_code is ExitCode.INPUT
    assert_clean(error_texts(error))


def test_a_key_that_is_not_a_recipient_is_refused_and_the_callers_keys_are_not_used(
    sops_tool: SopsTool, age_key: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key, recipient = age_key
    file = sops_tool.encrypt({"K": CANARY}, tmp_path / "s.yaml", recipient)
    other = tmp_path / "other.agekey"
    sops_tool.identity(other)
    # The right key is in this process's environment: sops must be given only the one configured.
    monkeypatch.setenv("SOPS_AGE_KEY_FILE", str(key))
    monkeypatch.setenv("SOPS_AGE_KEY", key.read_text())
    backend = sops_backend(sops_tool, file, other)

    error = raised(lambda: backend.get("K"), SecretsUnavailable)

    assert f"no key in the age key file {other} is a recipient of {file}" in str(error)
    assert_clean(error_texts(error), key.read_text().split("AGE-SECRET-KEY-")[1].strip())


def test_a_failed_file_is_tried_again_once_it_is_fixed(
    sops_tool: SopsTool, age_key: tuple[Path, str], tmp_path: Path
) -> None:
    key, recipient = age_key
    file = write_plain(tmp_path / "s.yaml", f"K: {CANARY}\n")
    backend = sops_backend(sops_tool, file, key)
    raised(lambda: backend.get("K"), SecretsUnavailable)
    raised(lambda: backend.get("K"), SecretsUnavailable)
    assert backend.decryptions == 1  # the same broken bytes are not decrypted again at once

    sops_tool.encrypt({"K": f"fixed-{CANARY}"}, file, recipient)

    assert backend.get("K") == f"fixed-{CANARY}"


def test_missing_files_and_a_slow_sops_are_errors_naming_them(
    sops_tool: SopsTool, age_key: tuple[Path, str], tmp_path: Path
) -> None:
    key, recipient = age_key
    file = sops_tool.encrypt({"K": CANARY}, tmp_path / "s.yaml", recipient)

    absent = raised(lambda: sops_backend(sops_tool, tmp_path / "nope.yaml", key).get("K"), SecretsUnavailable)
    assert f"the sops file {tmp_path / 'nope.yaml'} does not exist" in str(absent)
    no_key = raised(lambda: sops_backend(sops_tool, file, tmp_path / "nokey").get("K"), SecretsUnavailable)
    assert f"the age key file {tmp_path / 'nokey'} does not exist" in str(no_key)
    slow = raised(lambda: sops_backend(sops_tool, file, key, timeout=0.001).get("K"), SecretsUnavailable)
    assert f"sops did not decrypt {file} within 0.001 s" in str(slow)
    assert_clean([t for e in (absent, no_key, slow) for t in error_texts(e)])


def test_a_file_over_the_size_limit_is_refused(
    sops_tool: SopsTool, age_key: tuple[Path, str], tmp_path: Path
) -> None:
    key, recipient = age_key
    file = sops_tool.encrypt({"K": CANARY, "BIG": "x" * (1 << 20)}, tmp_path / "s.yaml", recipient)

    error = raised(lambda: sops_backend(sops_tool, file, key).get("K"), SecretsUnavailable)

    assert f"the sops file {file} is larger than 1 MiB, the limit" in str(error)


def test_a_file_name_without_a_known_suffix_and_a_missing_program_are_refused(tmp_path: Path) -> None:
    with pytest.raises(Error, match=r"must end in \.yaml, \.yml or \.json"):
        SopsSecrets(tmp_path / "secrets.txt", tmp_path / "key", binary="/bin/true")
    (tmp_path / "s.yaml").write_text("K: v\n")
    (tmp_path / "key").write_text("AGE-SECRET-KEY-1\n")
    with pytest.raises(SecretsUnavailable, match=r"sops \(.*no-sops\) cannot be run"):
        SopsSecrets(tmp_path / "s.yaml", tmp_path / "key", binary=tmp_path / "no-sops").get("K")


def test_concurrent_gets_during_rotations_see_whole_values(
    sops_tool: SopsTool, age_key: tuple[Path, str], tmp_path: Path
) -> None:
    key, recipient = age_key
    file = sops_tool.encrypt({"K": "v0"}, tmp_path / "s.yaml", recipient)
    backend = sops_backend(sops_tool, file, key)
    seen: set[str] = set()
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            try:
                seen.add(backend.get("K"))
            except BaseException as exc:
                errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for thread in threads:
        thread.start()
    for version in range(1, 4):
        sops_tool.encrypt({"K": f"v{version}"}, file, recipient)
        time.sleep(0.05)
    stop.set()
    for thread in threads:
        thread.join()

    assert errors == []
    assert seen <= {"v0", "v1", "v2", "v3"}
    assert backend.get("K") == "v3"


# -- Vault ----------------------------------------------------------------------------------------------

READ = "secret/data/aion"


def token_file(tmp_path: Path, token: str, name: str = "vault-token") -> Path:
    path = tmp_path / name
    tmp = path.with_name(name + ".tmp")
    tmp.write_text(token + "\n")
    tmp.replace(path)
    return path


def vault_backend(vault: VaultStandIn, **kwargs: Any) -> VaultSecrets:
    kwargs.setdefault("timeout", 2.0)
    return VaultSecrets(vault.addr, **kwargs)


def test_vault_values_are_read_once_per_cache_ttl(vault: VaultStandIn, tmp_path: Path) -> None:
    vault.put("aion", {"OPENAI_API_KEY": f"sk-{CANARY}", "HF_TOKEN": f"hf-{CANARY}"})
    token = vault.token(READ)
    backend = vault_backend(vault, token_file=token_file(tmp_path, token), cache_ttl=60)

    assert backend.get("OPENAI_API_KEY") == f"sk-{CANARY}"
    assert backend.get("HF_TOKEN") == f"hf-{CANARY}"
    assert backend.reads == 1
    assert vault.calls[f"GET /v1/{READ}"] == 1
    assert_clean([repr(backend), backend.describe()], token)


def test_vault_rotation_takes_effect_after_the_cache_ttl(vault: VaultStandIn, tmp_path: Path) -> None:
    vault.put("aion", {"OPENAI_API_KEY": f"old-{CANARY}"})
    backend = vault_backend(vault, token_file=token_file(tmp_path, vault.token(READ)), cache_ttl=0.5)
    assert backend.get("OPENAI_API_KEY") == f"old-{CANARY}"

    vault.put("aion", {"OPENAI_API_KEY": f"new-{CANARY}"})
    assert backend.get("OPENAI_API_KEY") == f"old-{CANARY}"  # within the TTL: the cached value
    deadline = time.monotonic() + 10
    while backend.get("OPENAI_API_KEY") != f"new-{CANARY}":
        assert time.monotonic() < deadline, "the rotated value was never read"
        time.sleep(0.05)
    assert backend.reads == 2


def test_vault_with_no_cache_reads_at_every_get(vault: VaultStandIn, tmp_path: Path) -> None:
    vault.put("aion", {"K": "one"})
    backend = vault_backend(vault, token_file=token_file(tmp_path, vault.token(READ)), cache_ttl=0)
    assert backend.get("K") == "one"
    vault.put("aion", {"K": "two"})
    assert backend.get("K") == "two"


def test_vault_missing_names_and_a_missing_secret_are_secret_missing(
    vault: VaultStandIn, tmp_path: Path
) -> None:
    backend = vault_backend(vault, token_file=token_file(tmp_path, vault.token(READ)), cache_ttl=0)

    nothing = raised(lambda: backend.get("OPENAI_API_KEY"), SecretMissing)
    assert isinstance(nothing, SecretMissing)
    assert nothing.name == "OPENAI_API_KEY"
    assert "there is no secret secret/aion in Vault" in str(nothing)
    vault.put("aion", {"OTHER": CANARY, "N": 3})
    absent = raised(lambda: backend.get("OPENAI_API_KEY"), SecretMissing)
    assert "it is not a key of secret/aion" in str(absent)
    number = raised(lambda: backend.get("N"), SecretMissing)
    assert "is a number, not a text value" in str(number)
    vault.delete("aion")
    deleted = raised(lambda: backend.get("OTHER"), SecretMissing)
    assert "there is no secret secret/aion" in str(deleted)
    assert_clean([t for e in (nothing, absent, number, deleted) for t in error_texts(e)])


def test_a_token_without_the_policy_and_a_revoked_token_are_unavailable(
    vault: VaultStandIn, tmp_path: Path
) -> None:
    vault.put("aion", {"K": CANARY})
    elsewhere = vault.token("secret/data/other")
    backend = vault_backend(vault, token_file=token_file(tmp_path, elsewhere), cache_ttl=0)

    denied = raised(lambda: backend.get("K"), SecretsUnavailable)
    assert isinstance(denied, SecretsUnavailable)
    assert f"Vault at {vault.addr} denied access to secret/aion" in str(denied)
    assert "may read secret/data/aion" in (denied.hint or "")

    good = vault.token(READ)
    revoked_backend = vault_backend(vault, token_file=token_file(tmp_path, good, "t2"), cache_ttl=0)
    assert revoked_backend.get("K") == CANARY
    vault.revoke(good)
    revoked = raised(lambda: revoked_backend.get("K"), SecretsUnavailable)
    assert "denied access" in str(revoked)
    assert_clean([t for e in (denied, revoked) for t in error_texts(e)], elsewhere, good)


def test_a_rewritten_token_file_is_read_again(vault: VaultStandIn, tmp_path: Path) -> None:
    vault.put("aion", {"K": CANARY})
    first = vault.token(READ)
    path = token_file(tmp_path, first)
    backend = vault_backend(vault, token_file=path, cache_ttl=0)
    assert backend.get("K") == CANARY

    second = vault.token(READ)
    vault.revoke(first)
    token_file(tmp_path, second)

    assert backend.get("K") == CANARY
    assert vault.calls[f"GET /v1/{READ} 403"] == 0  # the new file was read before the revoked token was used


def test_a_renewable_token_is_renewed_before_it_expires(vault: VaultStandIn, tmp_path: Path) -> None:
    vault.put("aion", {"K": CANARY})
    token = vault.token(READ, ttl=3, max_ttl=60)
    backend = vault_backend(vault, token_file=token_file(tmp_path, token), cache_ttl=0)
    deadline = time.monotonic() + 5  # past the first TTL: only renewals keep the token alive
    while time.monotonic() < deadline:
        assert backend.get("K") == CANARY
        time.sleep(0.2)

    assert backend.renewals >= 2
    assert vault.calls["POST /v1/auth/token/renew-self 200"] == backend.renewals


def test_approle_logs_in_renews_and_logs_in_again_at_the_max_ttl(vault: VaultStandIn, tmp_path: Path) -> None:
    vault.put("aion", {"K": CANARY})
    role_id = vault.approle("aiond", READ, token_ttl=2, token_max_ttl=4)
    secret_id = vault.secret_id("aiond")
    (tmp_path / "role-id").write_text(role_id + "\n")
    (tmp_path / "secret-id").write_text(secret_id + "\n")
    backend = vault_backend(
        vault, role_id_file=tmp_path / "role-id", secret_id_file=tmp_path / "secret-id", cache_ttl=0
    )
    deadline = time.monotonic() + 6.5
    while time.monotonic() < deadline:
        assert backend.get("K") == CANARY
        time.sleep(0.2)

    assert backend.logins >= 2
    assert backend.renewals >= 1
    assert vault.tokens_of_role() == backend.logins
    assert vault.calls[f"GET /v1/{READ} 403"] == 0  # each token was replaced before it expired
    assert_clean([repr(backend), backend.describe()], role_id, secret_id)


def test_approle_tokens_that_do_not_renew_are_replaced_before_they_expire(
    vault: VaultStandIn, tmp_path: Path
) -> None:
    vault.put("aion", {"K": CANARY})
    (tmp_path / "role-id").write_text(vault.approle("aiond", READ, token_ttl=2, renewable=False))
    (tmp_path / "secret-id").write_text(vault.secret_id("aiond"))
    backend = vault_backend(
        vault, role_id_file=tmp_path / "role-id", secret_id_file=tmp_path / "secret-id", cache_ttl=0
    )
    deadline = time.monotonic() + 4.5
    while time.monotonic() < deadline:
        assert backend.get("K") == CANARY
        time.sleep(0.2)

    assert backend.logins >= 3
    assert backend.renewals == 0
    assert vault.calls[f"GET /v1/{READ} 403"] == 0


def test_a_refused_approle_login_says_what_to_do_without_the_secret_id(
    vault: VaultStandIn, tmp_path: Path
) -> None:
    vault.put("aion", {"K": CANARY})
    role_id = vault.approle("aiond", READ)
    (tmp_path / "role-id").write_text(role_id)
    (tmp_path / "secret-id").write_text("not-a-secret-id-4c1e")
    backend = vault_backend(vault, role_id_file=tmp_path / "role-id", secret_id_file=tmp_path / "secret-id")

    error = raised(lambda: backend.get("K"), SecretsUnavailable)

    assert "refused the AppRole login" in str(error)
    assert isinstance(error, SecretsUnavailable)
    assert f"write a current secret_id to {tmp_path / 'secret-id'}" in (error.hint or "")
    assert_clean(error_texts(error), role_id, "not-a-secret-id-4c1e")


def test_an_unreachable_sealed_or_slow_vault_is_unavailable(vault: VaultStandIn, tmp_path: Path) -> None:
    vault.put("aion", {"K": CANARY})
    path = token_file(tmp_path, vault.token(READ))
    closed = VaultSecrets(f"http://127.0.0.1:{free_port()}", token_file=path, timeout=1)
    unreachable = raised(lambda: closed.get("K"), SecretsUnavailable)
    assert "cannot connect to Vault at http://127.0.0.1:" in str(unreachable)

    vault.sealed = True
    sealed = raised(lambda: vault_backend(vault, token_file=path).get("K"), SecretsUnavailable)
    assert "is sealed or unavailable (503)" in str(sealed)
    vault.sealed = False

    vault.delay = 1.0
    started = time.monotonic()
    slow = raised(lambda: vault_backend(vault, token_file=path, timeout=0.3).get("K"), SecretsUnavailable)
    assert time.monotonic() - started < 5
    assert "did not answer within 0.3 s" in str(slow)
    assert_clean([t for e in (unreachable, sealed, slow) for t in error_texts(e)])


@pytest.mark.parametrize("body", [b"<html>not vault</html>", b'{"auth": null}', b"[]"])
def test_a_server_that_is_not_vault_is_a_clear_error(tmp_path: Path, body: bytes) -> None:
    import http.server

    class NotVault(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            return

        def _answer(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotVault)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    addr = f"http://127.0.0.1:{server.server_address[1]}"
    (tmp_path / "role-id").write_text("role")
    (tmp_path / "secret-id").write_text("secret")
    try:
        for backend in (
            VaultSecrets(addr, token_file=token_file(tmp_path, "hvs.token"), timeout=2),
            VaultSecrets(
                addr, role_id_file=tmp_path / "role-id", secret_id_file=tmp_path / "secret-id", timeout=2
            ),
        ):
            error = raised(lambda b=backend: b.get("K"), SecretsUnavailable)  # type: ignore[misc]
            assert addr in str(error)
            assert "did not answer as" in str(error) or "gave no token" in str(error), str(error)
    finally:
        server.shutdown()
        server.server_close()


def test_vault_over_tls_is_verified_against_the_ca_given(tmp_path: Path) -> None:
    from tests.rig.certs import Authority

    authority = Authority(tmp_path / "pki")
    leaf = authority.issue("vault", common_name="127.0.0.1", ips=("127.0.0.1",))
    vault = VaultStandIn().start(tls=(leaf.cert, leaf.key))
    try:
        assert vault.addr.startswith("https://")
        vault.put("aion", {"K": CANARY})
        path = token_file(tmp_path, vault.token(READ))

        unverified = raised(lambda: vault_backend(vault, token_file=path).get("K"), SecretsUnavailable)
        assert f"the TLS certificate of Vault at {vault.addr} cannot be verified" in str(unverified)
        assert isinstance(unverified, SecretsUnavailable)
        assert "--vault-ca-cert" in (unverified.hint or "")
        assert vault.calls[f"GET /v1/{READ}"] == 0  # the token never went to an unverified server
        assert vault_backend(vault, token_file=path, ca_cert=authority.pem).get("K") == CANARY
    finally:
        vault.stop()


def test_stale_values_carry_over_a_short_outage_then_fail(
    vault: VaultStandIn, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    vault.put("aion", {"K": CANARY})
    token = vault.token(READ)
    backend = vault_backend(vault, token_file=token_file(tmp_path, token), cache_ttl=0.1, stale_for=1.5)
    assert backend.get("K") == CANARY
    vault.sealed = True
    time.sleep(0.2)

    with caplog.at_level(logging.DEBUG, logger="aion.secrets"):
        assert backend.get("K") == CANARY
        time.sleep(1.5)
        error = raised(lambda: backend.get("K"), SecretsUnavailable)

    assert "using the values of secret/aion read" in caplog.text
    assert "sealed or unavailable" in str(error)
    assert_clean([caplog.text, *error_texts(error)], token)


# -- choosing a backend -----------------------------------------------------------------------------------


class Options:
    """aiond's settings as backend_for reads them (aion.secrets.select.BackendSettings)."""

    def __init__(self, **values: Any) -> None:
        self.secrets_backend = "files"
        self.secrets_dir = Path("/run/secrets/aion")
        self.sops_file = self.sops_age_key_file = self.vault_addr = None
        self.vault_mount, self.vault_path = "secret", "aion"
        self.vault_token_file = self.vault_role_id_file = self.vault_secret_id_file = None
        self.vault_ca_cert = None
        self.vault_cache_ttl = 60.0
        self.__dict__.update(values)


def test_backend_for_builds_the_chosen_backend(
    sops_tool: SopsTool,
    age_key: tuple[Path, str],
    vault: VaultStandIn,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key, recipient = age_key
    file = sops_tool.encrypt({"K": f"sops-{CANARY}"}, tmp_path / "s.yaml", recipient)
    monkeypatch.setenv("PATH", f"{sops_tool.sops.parent}{os.pathsep}{os.environ['PATH']}")
    vault.put("aion", {"K": f"vault-{CANARY}"})
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "K").write_text(f"files-{CANARY}\n")

    assert backend_for(Options(secrets_dir=tmp_path / "files")).get("K") == f"files-{CANARY}"
    assert backend_for(Options(secrets_backend="sops", sops_file=file, sops_age_key_file=key)).get("K") == (
        f"sops-{CANARY}"
    )
    chosen = Options(
        secrets_backend="vault",
        vault_addr=vault.addr,
        vault_token_file=token_file(tmp_path, vault.token(READ)),
    )
    assert backend_for(chosen).get("K") == f"vault-{CANARY}"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"secrets_backend": "sops"}, "--secrets-backend sops needs --sops-file and --sops-age-key-file"),
        ({"secrets_backend": "vault"}, "--secrets-backend vault needs --vault-addr"),
        ({"secrets_backend": "vault", "vault_addr": "http://v:8200"}, "needs --vault-token-file, or"),
        ({"sops_file": Path("/x.yaml")}, "--sops-file is for --secrets-backend sops, and the backend is"),
        (
            {"secrets_backend": "vault", "vault_addr": "http://v:8200", "vault_token_file": Path("/t"),
             "vault_role_id_file": Path("/r")},
            "--vault-token-file and --vault-role-id-file/--vault-secret-id-file go one at a time",
        ),
        ({"secrets_backend": "env"}, "--secrets-backend: 'env' is not one of files, sops, vault"),
    ],
)  # fmt: skip
def test_settings_that_make_no_one_backend_are_usage_errors(values: dict[str, Any], message: str) -> None:
    with pytest.raises(UsageError) as info:
        backend_for(Options(**values))
    assert message in info.value.message
