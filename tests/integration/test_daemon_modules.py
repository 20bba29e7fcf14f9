"""aiond's ModuleService runs the same verified install as aionctl: a real daemon, a real registry, real
cosign signatures, driven over gRPC (and by grpcurl)."""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import yaml

from aion.api.v1 import modules_pb2, modules_pb2_grpc
from aion.trust.keys import load_public_key
from tests.integration.supply import (
    Signer,
    conforms,
    make_signer,
    quarantine_reasons,
    write_module,
    write_sbom,
)
from tests.rig.daemon import EXAMPLES, Aiond, aionctl
from tests.rig.services import GoTools, OciRegistry


@pytest.fixture(scope="module")
def signer(go_tools: GoTools, tmp_path_factory: pytest.TempPathFactory) -> Signer:
    return make_signer(go_tools, tmp_path_factory.mktemp("signer"))


@pytest.fixture
def daemon(oci_registry: OciRegistry, signer: Signer, tmp_path: Path) -> Iterator[Aiond]:
    """aiond on a copy of the example config whose trust policy also accepts ``signer`` for the test
    registry's ``daemon/**`` repositories (with an SBOM required, as in the example)."""
    config = tmp_path / "config"
    shutil.copytree(EXAMPLES, config)
    policies = yaml.safe_load((config / "policies.yml").read_text())
    policies["trust"]["rules"].insert(
        0, {"match": f"{oci_registry.host}/daemon/**", "keys": [str(signer.pub)]}
    )
    (config / "policies.yml").write_text(yaml.safe_dump(policies, sort_keys=False))
    assert aionctl("validate", str(config)).returncode == 0
    aiond = Aiond(
        tmp_path,
        config_dir=config,
        # The signer's key lives outside the config set: the daemon's key directory admits it.
        extra_args=["--registry-plain-http", oci_registry.host, "--trust-keys-dir", str(signer.pub.parent)],
    ).start()
    yield aiond
    aiond.stop()


@pytest.fixture
def stub(daemon: Aiond) -> Iterator[modules_pb2_grpc.ModuleServiceStub]:
    with daemon.channel() as channel:
        yield modules_pb2_grpc.ModuleServiceStub(channel)


def publish(registry: OciRegistry, tmp: Path, *, sign: Signer | None, sbom: bool = True) -> tuple[str, str]:
    repo = f"{registry.host}/daemon/{uuid.uuid4().hex[:10]}"
    args = [
        "module",
        "push",
        str(write_module(tmp / f"mod-{uuid.uuid4().hex[:6]}")),
        f"{repo}:1.3.0",
        "--plain-http",
    ]
    if sbom:
        args += ["--sbom", str(write_sbom(tmp / "sbom.json"))]
    pushed = aionctl(*args, "-o", "json")
    assert pushed.returncode == 0, pushed.stderr
    digest = json.loads(pushed.stdout)["digest"]
    if sign is not None:
        sign.sign(f"{repo}@{digest}")
    return f"{repo}:1.3.0", digest


def test_install_list_get_verify_remove_over_grpc(
    oci_registry: OciRegistry,
    signer: Signer,
    daemon: Aiond,
    stub: modules_pb2_grpc.ModuleServiceStub,
    tmp_path: Path,
) -> None:
    ref, digest = publish(oci_registry, tmp_path, sign=signer)

    installed = stub.InstallModule(modules_pb2.InstallModuleRequest(ref=ref), timeout=60)

    module = installed.module
    assert (module.name, module.version, module.ref, module.digest) == (
        "summarize_text",
        "1.3.0",
        ref,
        digest,
    )
    assert module.runtime == modules_pb2.MODULE_RUNTIME_WASM
    assert list(module.intents) == ["summarize"]
    assert module.verification.verified
    assert module.verification.method == modules_pb2.VERIFICATION_METHOD_SIGSTORE_KEY
    assert module.verification.signer == load_public_key(signer.pub).fingerprint
    assert module.verification.sbom_present
    assert not installed.unchanged
    assert stub.InstallModule(modules_pb2.InstallModuleRequest(ref=ref), timeout=60).unchanged

    # The daemon's store is the one aionctl reads with --store.
    store = daemon.state_dir / "modules"
    listed = conforms(
        json.loads(aionctl("module", "list", "--store", str(store), "-o", "json").stdout),
        "output/module-list",
    )
    assert [m["digest"] for m in listed["modules"]] == [digest]
    assert listed["modules"][0]["installedBy"] == "test-admin"  # the caller's token, not the daemon

    assert [m.digest for m in stub.ListModules(modules_pb2.ListModulesRequest(), timeout=10).modules] == [
        digest
    ]
    got = stub.GetModule(modules_pb2.GetModuleRequest(name="summarize_text"), timeout=10)
    assert yaml.safe_load(got.manifest)["metadata"]["name"] == "summarize_text"
    checked = stub.VerifyModules(modules_pb2.VerifyModulesRequest(), timeout=30)
    assert [(r.name, r.verification.verified) for r in checked.results] == [("summarize_text", True)]
    assert list(checked.findings) == []

    removed = stub.RemoveModule(modules_pb2.RemoveModuleRequest(name="summarize_text"), timeout=10)
    assert removed.removed.digest == digest
    assert list(stub.ListModules(modules_pb2.ListModulesRequest(), timeout=10).modules) == []

    # Installs and removals are audited in the daemon's event log and in its audit trail alike.
    def module_audits(name: str) -> list[tuple[str, str]]:
        lines = (daemon.state_dir / name).read_text().splitlines()
        return [
            (e["action"], e["outcome"]) for e in map(json.loads, lines) if e["action"].startswith("module.")
        ]

    assert module_audits("audit.jsonl") == module_audits("events.jsonl")
    assert ("module.install", "success") in module_audits("audit.jsonl")
    assert ("module.remove", "success") in module_audits("audit.jsonl")


REFUSALS = {
    "unsigned": (False, True, grpc.StatusCode.PERMISSION_DENIED, "not signed by a trusted signer"),
    "no-sbom": (True, False, grpc.StatusCode.FAILED_PRECONDITION, "the trust policy requires an SBOM"),
}


@pytest.mark.parametrize("case", REFUSALS)
def test_refusals_carry_the_contract_codes_and_change_nothing(
    oci_registry: OciRegistry,
    signer: Signer,
    daemon: Aiond,
    stub: modules_pb2_grpc.ModuleServiceStub,
    tmp_path: Path,
    case: str,
) -> None:
    signed, sbom, code, message = REFUSALS[case]
    ref, digest = publish(oci_registry, tmp_path, sign=signer if signed else None, sbom=sbom)
    with pytest.raises(grpc.RpcError) as raised:
        stub.InstallModule(modules_pb2.InstallModuleRequest(ref=ref), timeout=60)
    assert raised.value.code() == code
    assert message in str(raised.value.details())
    store = daemon.state_dir / "modules"
    assert not (store / "aion.lock").exists()
    (reason,) = quarantine_reasons(store)
    assert (reason["ref"], reason["digest"], reason["step"]) == (ref, digest, "verify")


def test_unknown_module_is_not_found(stub: modules_pb2_grpc.ModuleServiceStub) -> None:
    with pytest.raises(grpc.RpcError) as got:
        stub.GetModule(modules_pb2.GetModuleRequest(name="nope"), timeout=10)
    with pytest.raises(grpc.RpcError) as removed:
        stub.RemoveModule(modules_pb2.RemoveModuleRequest(name="nope"), timeout=10)
    for raised in (got, removed):
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND
        assert "no module named 'nope' is installed" in str(raised.value.details())


def test_grpcurl_installs_through_reflection(
    oci_registry: OciRegistry, signer: Signer, daemon: Aiond, go_tools: GoTools, tmp_path: Path
) -> None:
    ref, digest = publish(oci_registry, tmp_path, sign=signer)
    result = go_tools.run(
        "grpcurl", "-plaintext", "-max-time", "60", "-d", json.dumps({"ref": ref}),
        "-H", f"authorization: Bearer {daemon.tokens['admin']}",
        daemon.grpc_addr, "aion.v1.ModuleService/InstallModule",
    )  # fmt: skip
    assert json.loads(result.stdout)["module"]["digest"] == digest


def test_installs_follow_the_active_policy_version_not_the_directory(
    oci_registry: OciRegistry, signer: Signer, daemon: Aiond, tmp_path: Path
) -> None:
    ref, _ = publish(oci_registry, tmp_path, sign=signer)
    # Apply the plain example set: its trust policy has no rule for the test registry. The daemon's
    # config directory still has one, but the active version is what the daemon runs under.
    applied = aionctl("policy", "apply", str(EXAMPLES), env=daemon.aionctl_env())
    assert applied.returncode == 0, applied.stderr
    with daemon.channel() as channel:
        stub = modules_pb2_grpc.ModuleServiceStub(channel)
        with pytest.raises(grpc.RpcError) as raised:
            stub.InstallModule(modules_pb2.InstallModuleRequest(ref=ref), timeout=60)
        assert raised.value.code() in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.FAILED_PRECONDITION)
        assert "trust" in str(raised.value.details()).lower()
        # Rolling back to the version with the rule makes the same install go through.
        assert aionctl("policy", "rollback", env=daemon.aionctl_env()).returncode == 0
        installed = stub.InstallModule(modules_pb2.InstallModuleRequest(ref=ref), timeout=60)
        assert installed.module.ref == ref
