"""Attacks on the module supply chain, against a real registry with real cosign signatures.

Every attack must end the same way: the install is refused with exit code 1 and a message that says
what failed, what was fetched sits in quarantine with a machine-readable reason, a ``refused`` audit
event is written, and the store and its lock file are exactly as they were (a module installed before
the attack is still there, unchanged).
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import json
import os
import tarfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from aion.errors import VerificationError
from aion.modules import package as pkg
from aion.modules.install import InstallOptions, install, load_trust
from aion.modules.store import ModuleStore
from aion.modules.unpack import UnpackLimits
from aion.oci.model import MANIFEST, Descriptor, Digest, Reference
from aion.oci.registry import RegistryClient
from tests.integration.supply import (
    WASM,
    Signer,
    audit_events,
    make_signer,
    quarantine_reasons,
    snapshot,
    write_module,
    write_sbom,
    write_trust,
)
from tests.rig.daemon import REPO, aionctl
from tests.rig.services import GoTools, OciRegistry

GITHUB_BUNDLE = REPO / "tests" / "fixtures" / "sigstore" / "bundle_v3_github.whl.sigstore"
GITHUB_IDENTITY = "https://github.com/trailofbits/rfc8785.py/.github/workflows/release.yml@refs/tags/v0.1.2"
GITHUB_ISSUER = "https://token.actions.githubusercontent.com"


def unique_wasm() -> bytes:
    """A valid wasm module with a custom section holding a nonce, so no two tests share a blob (the
    registry stores blobs once, across repositories, and some attacks damage stored blobs)."""
    name, payload = b"aion-test", uuid.uuid4().bytes
    body = bytes([len(name)]) + name + payload
    return WASM + b"\x00" + bytes([len(body)]) + body


@pytest.fixture(scope="module")
def signer(go_tools: GoTools, tmp_path_factory: pytest.TempPathFactory) -> Signer:
    return make_signer(go_tools, tmp_path_factory.mktemp("trusted"))


@pytest.fixture(scope="module")
def stranger(go_tools: GoTools, tmp_path_factory: pytest.TempPathFactory) -> Signer:
    return make_signer(go_tools, tmp_path_factory.mktemp("stranger"))


@dataclasses.dataclass
class World:
    """A config trusting ``signer`` for ``host/attacks/**``, and a store where one module is installed."""

    registry: OciRegistry
    signer: Signer
    config: Path
    store: Path
    tmp: Path
    repo: str

    def module(self, name: str = "victim", **kwargs: Any) -> Path:
        return write_module(self.tmp / f"src-{uuid.uuid4().hex[:8]}", name=name, wasm=unique_wasm(), **kwargs)

    def push(self, module: Path, tag: str = "1.0.0", *, sbom: bool = False) -> str:
        args = ["module", "push", str(module), f"{self.repo}:{tag}", "--plain-http", "-o", "json"]
        if sbom:
            args += ["--sbom", str(write_sbom(self.tmp / "sbom.json"))]
        result = aionctl(*args)
        assert result.returncode == 0, result.stderr
        return str(json.loads(result.stdout)["digest"])

    def client(self) -> RegistryClient:
        return RegistryClient(plain_http=frozenset({self.registry.host}))

    def trust(self, trust: dict[str, Any]) -> None:
        write_trust(self.config, trust)

    def install(self, ref: str) -> tuple[int, str, str]:
        result = aionctl(
            "install", ref, "--config", str(self.config), "--store", str(self.store), "--plain-http"
        )
        return result.returncode, result.stdout, result.stderr

    def refused(self, ref: str, *, step: str, message: str) -> dict[str, Any]:
        """Install ``ref`` through the CLI and check the whole refusal; return the quarantine reason."""
        before = snapshot(self.store)
        quarantined = len(quarantine_reasons(self.store))
        code, out, err = self.install(ref)
        assert code == 1, f"exit {code}\n{out}\n{err}"
        assert message in err, err
        assert f"install refused at step {step}" in err, err
        assert "Traceback" not in err
        assert out == ""
        return self.check_refusal(before, quarantined, ref=ref, step=step, message=message)

    def check_refusal(
        self, before: dict[str, Any], quarantined: int, *, ref: str, step: str, message: str
    ) -> dict[str, Any]:
        assert snapshot(self.store) == before, "a refused install changed the store or its lock file"
        reasons = quarantine_reasons(self.store)
        assert len(reasons) == quarantined + 1
        reason = reasons[-1]
        assert (reason["kind"], reason["ref"], reason["step"]) == ("QuarantineReason", ref, step)
        assert message in reason["error"]
        event = audit_events(self.store)[-1]
        assert (event["action"], event["outcome"], event["target"]) == ("module.install", "refused", ref)
        assert message in event["reason"]
        return reason


@pytest.fixture
def world(oci_registry: OciRegistry, signer: Signer, tmp_path: Path) -> World:
    repo = f"{oci_registry.host}/attacks/{uuid.uuid4().hex[:12]}"
    config = write_trust(
        tmp_path / "cfg", {"rules": [{"match": f"{oci_registry.host}/attacks/**", "keys": [str(signer.pub)]}]}
    )
    w = World(oci_registry, signer, config, tmp_path / "store", tmp_path, repo)
    baseline = w.push(w.module("baseline"), "baseline")
    signer.sign(f"{repo}@{baseline}")
    code, _, err = w.install(f"{repo}:baseline")
    assert code == 0, err
    return w


def forge(
    world: World,
    module: Path,
    tag: str,
    *,
    layers: dict[str, bytes] | None = None,
    annotations: dict[str, str] | None = None,
    sizes: dict[str, int] | None = None,
) -> str:
    """Push a package built from ``module`` with some layers replaced, annotations added or sizes
    misstated, the way an attacker with write access to the registry would; returns its digest."""
    built = pkg.build(module)
    document = json.loads(built.manifest)
    ref = Reference.parse(f"{world.repo}:{tag}")
    with world.client() as client:
        client.push_blob(ref, built.blobs[0].descriptor, io.BytesIO(built.blobs[0].data))
        for entry, blob in zip(document["layers"], built.blobs[1:], strict=True):
            data = (layers or {}).get(entry["mediaType"], blob.data)
            descriptor = Descriptor.for_bytes(entry["mediaType"], data)
            client.push_blob(ref, descriptor, io.BytesIO(data))
            entry["digest"], entry["size"] = (
                str(descriptor.digest),
                (sizes or {}).get(entry["mediaType"], len(data)),
            )
        document["annotations"].update(annotations or {})
        raw = json.dumps(document, separators=(",", ":")).encode()
        return str(client.push_manifest(ref, raw, MANIFEST, tag))


def copy_signature(world: World, source: str, target: str, *, bundle: bool) -> None:
    """Copy a valid signature of ``source`` so it sits where the signature of ``target`` belongs."""
    with world.client() as client:
        ref = Reference.parse(world.repo)
        src, dst = Digest.parse(source), Digest.parse(target)
        if bundle:
            (descriptor,) = [
                d
                for d in client.referrers(ref, src)
                if (d.artifact_type or "").startswith("application/vnd.dev.sigstore")
            ]
            document = json.loads(client.manifest(ref, descriptor.digest).raw)
            document["subject"]["digest"] = target
            document["subject"]["size"] = len(client.manifest(ref, dst).raw)
            client.push_manifest(ref, json.dumps(document).encode(), MANIFEST, None)
        else:
            signature = client.manifest(ref, client.tag_digest(ref, f"{src.tag_fallback}.sig") or src)
            client.push_manifest(ref, signature.raw, MANIFEST, f"{dst.tag_fallback}.sig")


# -- who signed ------------------------------------------------------------------------------------


def test_unsigned_module(world: World) -> None:
    world.push(world.module(), "1.0.0")
    world.refused(f"{world.repo}:1.0.0", step="verify", message="no signature was found")


def test_signed_by_the_wrong_key(world: World, stranger: Signer) -> None:
    digest = world.push(world.module(), "1.0.0")
    stranger.sign(f"{world.repo}@{digest}")
    stranger.sign(f"{world.repo}@{digest}", bundle=False)
    reason = world.refused(f"{world.repo}:1.0.0", step="verify", message="not signed by a trusted signer")
    assert "no DSSE signature verifies with a trusted key" in reason["error"]
    assert "the signature does not verify with a trusted key" in reason["error"]
    assert reason["digest"] == digest


def test_no_trust_rule_covers_the_repository(world: World) -> None:
    digest = world.push(world.module(), "1.0.0")
    world.signer.sign(f"{world.repo}@{digest}")
    world.trust({"rules": [{"match": "ghcr.io/aion/**", "keys": [str(world.signer.pub)]}]})
    world.refused(f"{world.repo}:1.0.0", step="policy", message="no trust rule covers this repository")


def _attach_github_bundle(world: World, go_tools: GoTools, tag: str) -> None:
    """A genuine keyless bundle (of another artifact) attached to the module, as an attacker would."""
    bundle = world.tmp / "bundle.sigstore.json"
    bundle.write_bytes(GITHUB_BUNDLE.read_bytes())
    media = "application/vnd.dev.sigstore.bundle.v0.3+json"
    go_tools.run(
        "oras", "attach", "--plain-http", "--artifact-type", media, f"{world.repo}:{tag}",
        f"{bundle.name}:{media}", cwd=world.tmp,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("identity", "message"),
    [
        (
            {"issuer": GITHUB_ISSUER, "subject": "https://github.com/aion/modules/*"},
            "which no trusted identity matches",
        ),
        (
            {"issuer": "https://accounts.google.com", "subject": GITHUB_IDENTITY},
            "which no trusted identity matches",
        ),
        ({"issuer": GITHUB_ISSUER, "subject": GITHUB_IDENTITY}, "without a DSSE envelope"),
    ],
    ids=["wrong-identity", "wrong-issuer", "right-signer-other-artifact"],
)
def test_keyless_signature_by_an_untrusted_identity(
    world: World, go_tools: GoTools, identity: dict[str, str], message: str
) -> None:
    world.push(world.module(), "1.0.0")
    _attach_github_bundle(world, go_tools, "1.0.0")
    world.trust({"rules": [{"match": f"{world.registry.host}/attacks/**", "identities": [identity]}]})
    reason = world.refused(f"{world.repo}:1.0.0", step="verify", message="not signed by a trusted signer")
    assert message in reason["error"]


def test_a_module_from_another_repository_cannot_take_over_a_name(world: World) -> None:
    """Names are chosen by whoever builds a module: one signed for another repository that calls
    itself "baseline" must not silently replace the installed baseline."""
    other = f"{world.registry.host}/attacks/{uuid.uuid4().hex[:12]}"
    pushed = aionctl(
        "module", "push", str(world.module("baseline")), f"{other}:9.9.9", "--plain-http", "-o", "json"
    )
    digest = json.loads(pushed.stdout)["digest"]
    world.signer.sign(f"{other}@{digest}")
    before = snapshot(world.store)
    args = [
        "install",
        f"{other}:9.9.9",
        "--config",
        str(world.config),
        "--store",
        str(world.store),
        "--plain-http",
    ]

    result = aionctl(*args)

    assert result.returncode == 6, result.stderr
    assert f"baseline is installed from {world.repo}; this module is from {other}" in result.stderr
    assert "--allow-source-change" in result.stderr
    assert snapshot(world.store) == before
    assert quarantine_reasons(world.store)[-1]["step"] == "commit"
    moved = aionctl(*args, "--allow-source-change")
    assert moved.returncode == 0, moved.stderr


# -- what was signed ---------------------------------------------------------------------------------


def test_bundle_of_another_module_listed_in_the_fallback_index(world: World) -> None:
    """The referrers fallback is a tag anyone with push rights can write: listing a genuine bundle of
    another module under this module's fallback tag must not make it signed."""
    signed = world.push(world.module(), "signed")
    world.signer.sign(f"{world.repo}@{signed}")
    victim = world.push(world.module(), "1.0.0")
    with world.client() as client:
        ref = Reference.parse(world.repo)
        index = client.manifest(
            ref, client.tag_digest(ref, Digest.parse(signed).tag_fallback) or Digest.parse(signed)
        )
        client.push_manifest(
            ref, index.raw, "application/vnd.oci.image.index.v1+json", Digest.parse(victim).tag_fallback
        )
    reason = world.refused(f"{world.repo}:1.0.0", step="verify", message="not signed by a trusted signer")
    assert f"is not attached to {victim}" in reason["error"]


def test_tampered_layer_with_the_signature_copied(world: World) -> None:
    module = world.module()
    signed = world.push(module, "1.0.0")
    world.signer.sign(f"{world.repo}@{signed}")
    tampered = forge(world, module, "1.0.0", layers={pkg.WASM_TYPE: unique_wasm() + b"\x00\x01\x00"})
    copy_signature(world, signed, tampered, bundle=True)
    reason = world.refused(
        f"{world.repo}:1.0.0", step="verify", message="the signature is valid but for another artifact"
    )
    assert reason["digest"] == tampered


def test_tampered_manifest_with_the_legacy_signature_copied(world: World) -> None:
    module = world.module()
    signed = world.push(module, "1.0.0")
    world.signer.sign(f"{world.repo}@{signed}", bundle=False)
    tampered = forge(world, module, "1.0.0", annotations={"org.opencontainers.image.description": "trust me"})
    copy_signature(world, signed, tampered, bundle=False)
    world.refused(
        f"{world.repo}:1.0.0", step="verify", message=f"the signature is for {signed}, not {tampered}"
    )


def test_missing_sbom_when_the_policy_requires_one(world: World) -> None:
    digest = world.push(world.module(), "1.0.0")
    world.signer.sign(f"{world.repo}@{digest}")
    world.trust(
        {
            "rules": [
                {
                    "match": f"{world.registry.host}/attacks/**",
                    "keys": [str(world.signer.pub)],
                    "require_sbom": True,
                }
            ]
        }
    )
    world.refused(
        f"{world.repo}:1.0.0",
        step="verify",
        message="the trust policy requires an SBOM, and none is attached",
    )


def test_tag_moved_after_verification(world: World) -> None:
    """The tag is repointed while the install is under way: what was verified is not what the tag
    names any more, so the install is refused rather than recording a stale tag."""
    digest = world.push(world.module(), "1.0.0")
    world.signer.sign(f"{world.repo}@{digest}")
    other = world.module()
    ref = f"{world.repo}:1.0.0"
    before = snapshot(world.store)
    quarantined = len(quarantine_reasons(world.store))

    def move_tag(step: str) -> None:
        if step == "unpack":
            world.push(other, "1.0.0")

    with pytest.raises(VerificationError, match="the tag moved"):
        install(
            ref,
            ModuleStore(world.store),
            InstallOptions(
                load_trust(world.config), world.config, plain_http=frozenset({world.registry.host})
            ),
            on_step=move_tag,
        )
    reason = world.check_refusal(before, quarantined, ref=ref, step="recheck", message="the tag moved")
    assert reason["digest"] == digest


# -- what was served ---------------------------------------------------------------------------------


def _stored_blob(world: World, digest: str) -> Path:
    hex_ = digest.removeprefix("sha256:")
    return (
        world.registry.storage / "docker" / "registry" / "v2" / "blobs" / "sha256" / hex_[:2] / hex_ / "data"
    )


def test_registry_serves_other_bytes_for_a_layer(world: World) -> None:
    module = world.module()
    digest = world.push(module, "1.0.0")
    world.signer.sign(f"{world.repo}@{digest}")
    built = pkg.build(module)
    wasm = next(b for b in built.blobs if b.descriptor.media_type == pkg.WASM_TYPE)
    stored = _stored_blob(world, str(wasm.descriptor.digest))
    stored.write_bytes(bytes(b ^ 0xFF for b in stored.read_bytes()))  # same length, other bytes
    world.refused(f"{world.repo}:1.0.0", step="pull", message="content does not match its digest")


def test_registry_serves_other_bytes_for_the_manifest(world: World) -> None:
    digest = world.push(world.module(), "1.0.0")
    world.signer.sign(f"{world.repo}@{digest}")
    stored = _stored_blob(world, digest)
    stored.write_bytes(stored.read_bytes().replace(b'"schemaVersion":2', b'"schemaVersion":2 '))
    world.refused(f"{world.repo}:1.0.0", step="resolve", message="but its bytes hash otherwise")


def test_layer_larger_than_its_descriptor(world: World) -> None:
    module = world.module()
    real = len((module / "victim.wasm").read_bytes())
    digest = forge(world, module, "1.0.0", sizes={pkg.WASM_TYPE: real - 4})
    world.signer.sign(f"{world.repo}@{digest}")
    world.refused(f"{world.repo}:1.0.0", step="pull", message="the registry sent more than the")


def test_blob_over_the_size_limit(world: World) -> None:
    digest = world.push(world.module(), "1.0.0")
    world.signer.sign(f"{world.repo}@{digest}")
    ref = f"{world.repo}:1.0.0"
    before = snapshot(world.store)
    quarantined = len(quarantine_reasons(world.store))
    options = InstallOptions(
        load_trust(world.config), world.config, plain_http=frozenset({world.registry.host}), blob_limit=16
    )
    with pytest.raises(VerificationError, match="the limit is 16"):
        install(ref, ModuleStore(world.store), options)
    world.check_refusal(before, quarantined, ref=ref, step="pull", message="the limit is 16")


# -- what the layers unpack to ---------------------------------------------------------------------------


def _tar(add: Callable[[tarfile.TarFile], None]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as archive:
        add(archive)
    return gzip.compress(raw.getvalue(), mtime=0)


def _file(archive: tarfile.TarFile, name: str, data: bytes = b"{}") -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


def _link(archive: tarfile.TarFile, name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    archive.addfile(info)


def _device(archive: tarfile.TarFile) -> None:
    info = tarfile.TarInfo("schemas/tty")
    info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 5, 0
    archive.addfile(info)


class _Zeros(io.RawIOBase):
    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = min(len(buffer), self.left)
        buffer[:n] = bytes(n)
        self.left -= n
        return n


def _write_through_link(archive: tarfile.TarFile) -> None:
    _link(archive, "schemas/up", "..")
    _file(archive, "schemas/up/agent.yaml")


def _duplicate_member(archive: tarfile.TarFile) -> None:
    _file(archive, "schemas/x.json")
    _file(archive, "./schemas/x.json")


def _bomb(archive: tarfile.TarFile) -> None:
    size = 64 * 1024 * 1024
    info = tarfile.TarInfo("schemas/input.json")
    info.size = size
    archive.addfile(info, io.BufferedReader(_Zeros(size)))


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda a: _file(a, "../../escaped.json"), "refused '../../escaped.json'"),
        (lambda a: _file(a, "/tmp/aion-escaped.json"), "refused '/tmp/aion-escaped.json'"),
        (lambda a: _link(a, "schemas/passwd", "/etc/passwd"), "refused 'schemas/passwd'"),
        (lambda a: _link(a, "schemas/up", "../../../../outside"), "refused 'schemas/up'"),
        (
            lambda a: _link(a, "schemas/hard", "../../../etc/hostname", tarfile.LNKTYPE),
            "refused 'schemas/hard'",
        ),
        (_device, "refused 'schemas/tty'"),
        (_bomb, "refused as a decompression bomb"),
        (_write_through_link, "refused 'schemas/up'"),
        (lambda a: _file(a, "agent.yaml", b"kind: AgentPackage"), "agent.yaml is the installer's own name"),
        (lambda a: _file(a, "blobs/" + "0" * 64), "blobs is the installer's own name"),
        (lambda a: _file(a, "victim.wasm", WASM), "refused 'victim.wasm': it would replace another file"),
        (_duplicate_member, "it would replace another file"),
    ],
    ids=[
        "dotdot",
        "absolute",
        "symlink-absolute",
        "symlink-escape",
        "hardlink-escape",
        "device",
        "tar-bomb",
        "symlink-then-write-through",
        "replace-manifest",
        "write-into-blobs",
        "replace-wasm",
        "duplicate-member",
    ],
)
def test_signed_module_whose_layer_would_escape(
    world: World, build: Callable[[tarfile.TarFile], None], message: str
) -> None:
    """The signer is trusted, but what the layer unpacks to is still checked: a compromised build
    must not be able to write outside the module's directory or fill the disk."""
    digest = forge(world, world.module(), "1.0.0", layers={pkg.SCHEMAS_TYPE: _tar(build)})
    world.signer.sign(f"{world.repo}@{digest}")
    world.refused(f"{world.repo}:1.0.0", step="unpack", message=message)
    assert not (world.store / "escaped.json").exists()
    assert not (world.tmp / "escaped.json").exists()
    assert not Path("/tmp/aion-escaped.json").exists()


def test_tar_bomb_limits_are_configurable(world: World) -> None:
    """The bounds are options of the pipeline (aiond sets its own); a small one stops a small layer."""
    digest = forge(
        world,
        world.module(),
        "1.0.0",
        layers={pkg.SCHEMAS_TYPE: _tar(lambda a: _file(a, "schemas/x.json", os.urandom(4096)))},
    )
    world.signer.sign(f"{world.repo}@{digest}")
    options = InstallOptions(
        load_trust(world.config),
        world.config,
        plain_http=frozenset({world.registry.host}),
        unpack_limits=UnpackLimits(max_bytes=1024),
    )
    with pytest.raises(VerificationError, match="unpacks to more than 1024 bytes"):
        install(f"{world.repo}:1.0.0", ModuleStore(world.store), options)
