"""aiond reads a trust rule's public key only inside its config directory or its --trust-keys-dir: a
config set uploaded by an admin cannot make it read any other file of the host as a key, and a module
signed by a key elsewhere is never installed. A real daemon, a real registry, real cosign signatures,
sets uploaded with the real aionctl."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from aion.api.v1 import modules_pb2, modules_pb2_grpc
from aion.trust.keys import load_public_key
from tests.integration.supply import Signer, conforms, make_signer, quarantine_reasons
from tests.integration.test_daemon_modules import publish
from tests.rig.daemon import EXAMPLES, Aiond, aionctl
from tests.rig.services import GoTools, OciRegistry


@pytest.fixture(scope="module")
def signer(go_tools: GoTools, tmp_path_factory: pytest.TempPathFactory) -> Signer:
    """A key pair outside every daemon's config directory."""
    return make_signer(go_tools, tmp_path_factory.mktemp("signer"))


def start(tmp_path: Path, registry: OciRegistry, *extra: str) -> Aiond:
    """aiond on a copy of the example set (no rule for the test registry)."""
    config = tmp_path / "config"
    shutil.copytree(EXAMPLES, config)
    return Aiond(
        tmp_path, config_dir=config, extra_args=["--registry-plain-http", registry.host, *extra]
    ).start()


@pytest.fixture
def daemon(oci_registry: OciRegistry, tmp_path: Path) -> Iterator[Aiond]:
    d = start(tmp_path, oci_registry)
    yield d
    d.stop()


def apply_with_key(daemon: Aiond, root: Path, registry: OciRegistry, key: str) -> Any:
    """Upload the daemon's set with a first trust rule that accepts ``key`` for the test registry."""
    upload = root / "upload"
    shutil.rmtree(upload, ignore_errors=True)
    shutil.copytree(daemon.config_dir, upload, ignore=shutil.ignore_patterns("keys"))
    policies = yaml.safe_load((upload / "policies.yml").read_text())
    policies["trust"]["rules"].insert(0, {"match": f"{registry.host}/daemon/**", "keys": [key]})
    (upload / "policies.yml").write_text(yaml.safe_dump(policies, sort_keys=False))
    return aionctl("policy", "apply", str(upload), "-o", "json", env=daemon.aionctl_env())


def install(daemon: Aiond, ref: str) -> modules_pb2.InstallModuleResponse:
    with daemon.channel() as channel:
        reply: modules_pb2.InstallModuleResponse = modules_pb2_grpc.ModuleServiceStub(channel).InstallModule(
            modules_pb2.InstallModuleRequest(ref=ref), timeout=60
        )
        return reply


def not_installed(daemon: Aiond) -> bool:
    return not (daemon.state_dir / "modules" / "aion.lock").exists()


def key_named(form: str, daemon: Aiond, signer: Signer) -> str:
    """The signer's public key, named the way ``form`` says; each one resolves outside the set."""
    if form == "absolute":
        return str(signer.pub)
    if form == "climbing":
        return os.path.relpath(signer.pub, daemon.config_dir)
    keys = daemon.config_dir / "keys"
    keys.mkdir(exist_ok=True)
    (keys / "team.pub").symlink_to(signer.pub)
    return "keys/team.pub"


@pytest.mark.parametrize("form", ["absolute", "climbing", "link"])
def test_a_key_outside_the_set_is_refused_at_apply_and_its_module_is_never_installed(
    oci_registry: OciRegistry, signer: Signer, daemon: Aiond, tmp_path: Path, form: str
) -> None:
    ref, _ = publish(oci_registry, tmp_path, sign=signer)
    key = key_named(form, daemon, signer)

    refused = apply_with_key(daemon, tmp_path, oci_registry, key)

    assert refused.returncode == 1, refused.stderr
    body = conforms(json.loads(refused.stdout), "output/policy")
    assert body["activated"] is False
    (finding,) = [f for f in body["findings"] if f["ruleId"] == "AION208"]
    assert finding["severity"] == "error"
    assert finding["location"]["jsonPointer"] == "/trust/rules/0/keys/0"
    assert finding["location"]["file"].endswith("policies.yml")
    assert finding["location"]["line"] > 0
    assert str(daemon.config_dir) in finding["message"]
    with pytest.raises(grpc.RpcError) as raised:
        install(daemon, ref)
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert not_installed(daemon)


def test_a_key_that_leads_out_of_the_set_after_apply_is_refused_at_install(
    oci_registry: OciRegistry, signer: Signer, daemon: Aiond, tmp_path: Path
) -> None:
    """Checked again when a module is installed (fail closed): a key link inside the config directory
    that someone points elsewhere once the set is active is never followed out."""
    ref, _ = publish(oci_registry, tmp_path, sign=signer)
    keys = daemon.config_dir / "keys"
    keys.mkdir()
    shutil.copy(signer.pub, keys / "real.pub")
    (keys / "team.pub").symlink_to("real.pub")
    applied = apply_with_key(daemon, tmp_path, oci_registry, "keys/team.pub")
    assert applied.returncode == 0, applied.stderr
    (keys / "moved.pub").symlink_to(signer.pub)
    (keys / "moved.pub").replace(keys / "team.pub")

    with pytest.raises(grpc.RpcError) as raised:
        install(daemon, ref)

    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "outside the directories aiond reads keys from" in str(raised.value.details())
    assert not_installed(daemon)
    (reason,) = quarantine_reasons(daemon.state_dir / "modules")
    assert (reason["ref"], reason["step"]) == (ref, "policy")  # before the registry was asked anything


def test_a_key_inside_the_set_still_installs(
    oci_registry: OciRegistry, signer: Signer, daemon: Aiond, tmp_path: Path
) -> None:
    ref, digest = publish(oci_registry, tmp_path, sign=signer)
    keys = daemon.config_dir / "keys"
    keys.mkdir()
    shutil.copy(signer.pub, keys / "real.pub")
    (keys / "team.pub").symlink_to("real.pub")  # a link that stays inside is fine
    applied = apply_with_key(daemon, tmp_path, oci_registry, "keys/team.pub")
    assert applied.returncode == 0, applied.stderr

    module = install(daemon, ref).module

    assert module.digest == digest
    assert module.verification.signer == load_public_key(signer.pub).fingerprint


def test_a_key_in_the_trust_keys_dir_works(oci_registry: OciRegistry, signer: Signer, tmp_path: Path) -> None:
    daemon = start(tmp_path, oci_registry, "--trust-keys-dir", str(signer.pub.parent))
    try:
        ref, digest = publish(oci_registry, tmp_path, sign=signer)
        applied = apply_with_key(daemon, tmp_path, oci_registry, str(signer.pub))
        assert applied.returncode == 0, applied.stderr
        body = conforms(json.loads(applied.stdout), "output/policy")
        assert [f for f in body["findings"] if f["ruleId"] == "AION208"] == []

        module = install(daemon, ref).module

        assert module.digest == digest
        assert module.verification.signer == load_public_key(signer.pub).fingerprint
        with daemon.channel() as channel:
            checked = modules_pb2_grpc.ModuleServiceStub(channel).VerifyModules(
                modules_pb2.VerifyModulesRequest(), timeout=30
            )
        assert [(r.name, r.verification.verified) for r in checked.results] == [("summarize_text", True)]
    finally:
        daemon.stop()
