"""``aionctl secrets check`` run for real: a config set whose cloud providers need keys, a module
installed (packaged, signed and verified by aionctl) whose manifest asks for secrets, and the files,
sops and Vault backends. Every output, in every format and on every error path, is searched for the
values planted in the backends: they must never appear."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from aion.api.v1 import common_pb2, tasks_pb2
from tests.e2e.test_tasks import submit, write_config
from tests.integration.supply import WASM, conforms
from tests.rig.daemon import EXAMPLES, Aiond, aionctl, clean_env, program
from tests.rig.providers import StandIn
from tests.rig.secrets import SopsTool, VaultStandIn

CANARY = "canary-3be9d0-never-printed"
NEEDED = {"OPENAI_API_KEY", "HF_TOKEN", "GEO_TOKEN", "MAPS_KEY"}
OUTPUTS: list[str] = []
"""Everything any aionctl or aiond run of this module printed, for the canary check at the end."""


def value(name: str) -> str:
    return f"{name.lower()}-{CANARY}"


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    result = aionctl(*args, env=env)
    OUTPUTS.extend([result.stdout, result.stderr])
    return result


def check(config: Path, store: Path, *options: str, env: dict[str, str] | None = None) -> Any:
    return run("secrets", "check", str(config), "--store", str(store), *options, env=env)


def rows(result: subprocess.CompletedProcess[str]) -> dict[str, dict[str, Any]]:
    document = conforms(json.loads(result.stdout), "output/secrets-check")
    return {row["name"]: row for row in document["secrets"]}


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A config set (openai and hf in the cloud tier, azure denied) and a store with one installed
    module asking for GEO_TOKEN, HF_TOKEN and the optional MAPS_KEY."""
    root = tmp_path_factory.mktemp("secrets-check")
    config = root / "config"
    config.mkdir()
    for name in ("intents.yml", "policies.yml"):
        shutil.copy(EXAMPLES / name, config / name)
    policies = yaml.safe_load((config / "policies.yml").read_text())
    policies["providers"] = {"allow": ["ollama", "openai", "hf"], "deny": ["azure"]}
    (config / "policies.yml").write_text(yaml.safe_dump(policies, sort_keys=False))
    models = {
        "tiers": {
            "tier0": {"local": ["ollama:qwen2.5"]},
            "tier1": {"cloud": ["openai:gpt-4.1-mini", "hf:mistral-large"]},
            "tier2": {"cloud": ["openai:gpt-4.1", "azure:gpt-4o"]},
        },
        "providers": {"hf": {"api_key_secret": "HF_TOKEN"}, "azure": {"base_url": "https://a.example/v1"}},
    }
    (config / "models.yml").write_text(yaml.safe_dump(models, sort_keys=False))
    assert aionctl("validate", str(config)).returncode == 0

    module = root / "module"
    module.mkdir()
    manifest = {
        "apiVersion": "aionos/v1",
        "kind": "AgentPackage",
        "metadata": {"name": "geo_lookup", "version": "1.0.0", "license": "Apache-2.0"},
        "runtime": {"type": "wasm", "wasi": True},
        "permissions": {
            "filesystem": "none", "network": "deny", "secrets": ["GEO_TOKEN", "HF_TOKEN", "MAPS_KEY?"],
        },
        "intents": ["summarize"],
    }  # fmt: skip
    (module / "agent.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    (module / "geo_lookup.wasm").write_bytes(WASM)
    layout = root / "layout"
    keys = {"AION_KEY_PASSWORD": ""}
    for step in (
        ["module", "package", str(module), "--to", f"oci:{layout}"],
        ["module", "keygen", "--out", str(root / "signer")],
        ["module", "sign", f"oci:{layout}:1.0.0", "--key", str(root / "signer.key")],
    ):
        done = aionctl(*step, env=keys)
        assert done.returncode == 0, done.stderr
    trust = root / "trust"
    trust.mkdir()
    rule = {"match": f"oci:{root}/**", "keys": [str(root / "signer.pub")]}
    (trust / "policies.yml").write_text(yaml.safe_dump({"trust": {"rules": [rule]}}))
    store = root / "store"
    installed = aionctl("install", f"oci:{layout}:1.0.0", "--config", str(trust), "--store", str(store))
    assert installed.returncode == 0, installed.stderr
    return config, store


@pytest.fixture(scope="module", autouse=True)
def no_value_was_ever_printed() -> Iterator[None]:
    """The canary check: after every test of this module, no output held a planted value."""
    OUTPUTS.clear()
    yield
    assert OUTPUTS, "nothing was run"
    leaked = [text for text in OUTPUTS if CANARY in text]
    assert leaked == [], f"a secret value was printed: {leaked[0][:400]!r}"


def files_backend(root: Path, names: set[str]) -> Path:
    directory = root / "secret-files"
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir()
    for name in names:
        (directory / name).write_text(value(name) + "\n")
    return directory


# -- files ------------------------------------------------------------------------------------------------


def test_every_needed_secret_is_listed_with_its_users(setup: tuple[Path, Path], tmp_path: Path) -> None:
    config, store = setup
    directory = files_backend(tmp_path, NEEDED - {"MAPS_KEY"})

    result = check(config, store, "--secrets-dir", str(directory), "-o", "json")

    assert result.returncode == 0, result.stderr
    found = rows(result)
    assert set(found) == NEEDED  # azure is denied by the policies, ollama is local: no key
    assert found["HF_TOKEN"]["usedBy"] == [
        {"kind": "provider", "name": "hf", "required": True},
        {"kind": "module", "name": "geo_lookup", "required": True},
    ]
    assert found["OPENAI_API_KEY"]["usedBy"] == [{"kind": "provider", "name": "openai", "required": True}]
    assert (found["MAPS_KEY"]["required"], found["MAPS_KEY"]["status"]) == (False, "missing")
    assert all(found[name]["status"] == "ok" for name in NEEDED - {"MAPS_KEY"})
    assert json.loads(result.stdout)["ok"] is True

    text = check(config, store, "--secrets-dir", str(directory))
    assert text.returncode == 0
    assert "HF_TOKEN        required  ok       provider hf, module geo_lookup" in text.stdout
    assert "MAPS_KEY        optional  missing  module geo_lookup (optional)" in text.stdout
    assert f"backend: files in {directory}" in text.stdout


def test_a_required_secret_that_does_not_resolve_fails_the_check(
    setup: tuple[Path, Path], tmp_path: Path
) -> None:
    config, store = setup
    directory = files_backend(tmp_path, {"OPENAI_API_KEY", "MAPS_KEY"})

    result = check(config, store, "--secrets-dir", str(directory), "-o", "json")
    text = check(config, store, "--secrets-dir", str(directory))

    assert (result.returncode, text.returncode) == (1, 1)
    found = rows(result)
    assert found["GEO_TOKEN"]["status"] == "missing"
    assert found["GEO_TOKEN"]["problem"] == f"secret 'GEO_TOKEN' is not set (looked in {directory})"
    assert json.loads(result.stdout)["ok"] is False
    assert text.stdout.rstrip().endswith(
        "4 secrets, 2 resolved; required and not resolved: GEO_TOKEN, HF_TOKEN"
    )


# -- sops ---------------------------------------------------------------------------------------------------


def sops_env(sops_tool: SopsTool) -> dict[str, str]:
    return {"PATH": f"{sops_tool.sops.parent}{os.pathsep}{os.environ['PATH']}"}


def test_the_sops_backend_resolves_and_a_damaged_file_fails_every_secret(
    setup: tuple[Path, Path], sops_tool: SopsTool, tmp_path: Path
) -> None:
    config, store = setup
    key = tmp_path / "aiond.agekey"
    file = sops_tool.encrypt(
        {n: value(n) for n in NEEDED}, tmp_path / "secrets.enc.yaml", sops_tool.identity(key)
    )
    options = ("--secrets-backend", "sops", "--sops-file", str(file), "--sops-age-key-file", str(key))

    good = check(config, store, *options, "-o", "json", env=sops_env(sops_tool))
    assert good.returncode == 0, good.stderr
    assert {row["status"] for row in rows(good).values()} == {"ok"}
    assert json.loads(good.stdout)["source"] == f"sops file {file} (age key {key})"
    # The same from aiond's variables, as in the daemon's environment.
    by_env = check(
        config, store, "-o", "yaml",
        env={**sops_env(sops_tool), "AIOND_SECRETS_BACKEND": "sops", "AIOND_SOPS_FILE": str(file),
             "AIOND_SOPS_AGE_KEY_FILE": str(key)},
    )  # fmt: skip
    assert by_env.returncode == 0, by_env.stderr
    assert yaml.safe_load(by_env.stdout)["backend"] == "sops"

    file.write_text(f"GEO_TOKEN: {value('GEO_TOKEN')}\nHF_TOKEN: {value('HF_TOKEN')}\n")
    for fmt in ("json", "text"):
        damaged = check(config, store, *options, "-o", fmt, env=sops_env(sops_tool))
        debug = run("--debug", "secrets", "check", str(config), "--store", str(store), *options,
                    "-o", fmt, env=sops_env(sops_tool))  # fmt: skip
        assert (damaged.returncode, debug.returncode) == (1, 1)
    found = rows(check(config, store, *options, "-o", "json", env=sops_env(sops_tool)))
    assert {row["status"] for row in found.values()} == {"unavailable"}
    assert found["GEO_TOKEN"]["problem"] == (
        f"secret 'GEO_TOKEN' cannot be read: {file} is not encrypted with sops (it has no sops metadata)"
    )


def test_aiond_sends_the_key_from_sops_and_follows_a_rotation_without_a_restart(
    sops_tool: SopsTool, stand_in: StandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write_config(tmp_path, stand_in)
    shutil.rmtree(tmp_path / "secrets")  # the files backend's keys: not to be read
    key = tmp_path / "aiond.agekey"
    recipient = sops_tool.identity(key)
    names = ("OPENAI_API_KEY", "AZURE_OPENAI_API_KEY", "HF_TOKEN")
    file = sops_tool.encrypt(dict.fromkeys(names, f"first-{CANARY}"), tmp_path / "keys.enc.json", recipient)
    monkeypatch.setenv("PATH", sops_env(sops_tool)["PATH"])
    daemon = Aiond(
        tmp_path, config_dir=config,
        extra_args=["--secrets-backend", "sops", "--sops-file", str(file), "--sops-age-key-file", str(key)],
    ).start()  # fmt: skip
    try:
        stand_in.api_key = f"first-{CANARY}"
        first = submit(daemon, "summarize", "hello", route=common_pb2.ROUTE_API).task
        sops_tool.encrypt(dict.fromkeys(names, f"second-{CANARY}"), file, recipient)
        stand_in.api_key = f"second-{CANARY}"
        second = submit(daemon, "summarize", "hello", route=common_pb2.ROUTE_API).task
        file.write_text("{}")  # no longer a sops file: every key is unavailable
        broken = submit(daemon, "summarize", "hello", route=common_pb2.ROUTE_API).task
    finally:
        daemon.stop()
    OUTPUTS.extend([str(first), str(second), str(broken), (tmp_path / "aiond.log").read_text()])

    assert (first.status, second.status) == (tasks_pb2.TASK_STATUS_OK, tasks_pb2.TASK_STATUS_OK)
    assert len([r for r in stand_in.requests if r.authorized]) == 2
    cloud = [a for a in broken.attempts if a.target.provider in ("openai", "azure", "hf")]
    assert cloud
    assert {a.error.code for a in cloud} == {"SECRET_MISSING"}
    assert all(f"{file} is not encrypted with sops" in a.error.message for a in cloud)


# -- Vault --------------------------------------------------------------------------------------------------


def test_the_vault_backend_resolves_and_a_refused_token_fails(
    setup: tuple[Path, Path], vault: VaultStandIn, tmp_path: Path
) -> None:
    config, store = setup
    vault.put("prod/aion", {n: value(n) for n in NEEDED - {"GEO_TOKEN"}}, mount="kv")
    token = vault.token("kv/data/prod/aion")
    (tmp_path / "token").write_text(token)
    options = ("--secrets-backend", "vault", "--vault-addr", vault.addr, "--vault-mount", "kv",
               "--vault-path", "prod/aion", "--vault-token-file", str(tmp_path / "token"))  # fmt: skip

    result = check(config, store, *options, "-o", "json")

    assert result.returncode == 1
    found = rows(result)
    assert found["GEO_TOKEN"]["status"] == "missing"
    assert "it is not a key of kv/prod/aion" in found["GEO_TOKEN"]["problem"]
    assert {found[n]["status"] for n in NEEDED - {"GEO_TOKEN"}} == {"ok"}

    vault.revoke(token)
    for fmt in ("json", "text"):
        refused = check(config, store, *options, "-o", fmt)
        assert refused.returncode == 1
        assert token not in refused.stdout + refused.stderr
    denied = rows(check(config, store, *options, "-o", "json"))
    assert {row["status"] for row in denied.values()} == {"unavailable"}
    assert f"Vault at {vault.addr} denied access to kv/prod/aion" in denied["HF_TOKEN"]["problem"]


# -- usage ----------------------------------------------------------------------------------------------


def test_options_of_another_backend_are_usage_errors(setup: tuple[Path, Path], tmp_path: Path) -> None:
    config, store = setup
    result = check(config, store, "--sops-file", str(tmp_path / "s.yaml"))
    assert result.returncode == 2
    assert "--sops-file is for --secrets-backend sops, and the backend is files" in result.stderr
    assert "Traceback" not in result.stderr
    bad_addr = check(config, store, "--secrets-backend", "vault", "--vault-addr", "vault:8200")
    assert bad_addr.returncode == 2
    assert "--vault-addr: 'vault:8200' is not a Vault address" in bad_addr.stderr


def test_aiond_refuses_a_backend_without_its_options(tmp_path: Path) -> None:
    cases = [
        (["--secrets-backend", "sops"], "--secrets-backend sops needs --sops-file and --sops-age-key-file"),
        (["--secrets-backend", "vault", "--vault-addr", "https://vault:8200"], "needs --vault-token-file"),
        (["--vault-cache-ttl", "-1"], "--vault-cache-ttl: -1 is outside 0..86400 seconds"),
        (["--vault-path", "../x"], "--vault-path: '../x' is not a Vault path"),
    ]
    for args, message in cases:
        done = subprocess.run(
            [program("aiond"), "--config", str(EXAMPLES), "--state-dir", str(tmp_path / "state"), *args],
            capture_output=True, text=True, env=clean_env(), timeout=60, check=False,
        )  # fmt: skip
        OUTPUTS.extend([done.stdout, done.stderr])
        assert done.returncode == 2, (args, done.stderr)
        assert message in done.stderr
        assert "Traceback" not in done.stderr
        assert not (tmp_path / "state").exists()  # refused with the settings, before anything started
