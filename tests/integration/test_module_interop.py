"""Modules travel between aion and the tools users publish with: the real cosign v3 and oras, against a
real registry. What either side writes, the other reads and verifies."""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path

import pytest

from aion.trust.keys import load_public_key
from tests.integration.supply import (
    Signer,
    audit_events,
    conforms,
    make_signer,
    quarantine_reasons,
    write_module,
    write_sbom,
    write_trust,
)
from tests.rig.daemon import aionctl
from tests.rig.services import GoTools, OciRegistry


@pytest.fixture(scope="module")
def signer(go_tools: GoTools, tmp_path_factory: pytest.TempPathFactory) -> Signer:
    return make_signer(go_tools, tmp_path_factory.mktemp("signer"))


def push(module: Path, ref: str, *, sbom: Path | None = None) -> str:
    """``aionctl module push``; returns the pushed digest."""
    args = ["module", "push", str(module), ref, "--plain-http", "-o", "json"]
    if sbom is not None:
        args += ["--sbom", str(sbom)]
    result = aionctl(*args)
    assert result.returncode == 0, result.stderr
    return str(conforms(json.loads(result.stdout), "output/module-push")["digest"])


def install(ref: str, config: Path, store: Path, *extra: str) -> tuple[int, dict[str, object], str]:
    result = aionctl(
        "install", ref, "--config", str(config), "--store", str(store), "--plain-http", "-o", "json", *extra
    )
    body = conforms(json.loads(result.stdout), "output/module-install") if result.returncode == 0 else {}
    return result.returncode, body, result.stderr


@pytest.mark.parametrize("bundle", [True, False], ids=["sigstore-bundle", "legacy-sig-tag"])
def test_cosign_signed_module_installs_with_its_signer_and_sbom(
    oci_registry: OciRegistry, signer: Signer, tmp_path: Path, bundle: bool
) -> None:
    repo = f"{oci_registry.host}/interop/cosign-{'bundle' if bundle else 'legacy'}"
    module = write_module(tmp_path / "mod")
    digest = push(module, f"{repo}:1.3.0", sbom=write_sbom(tmp_path / "sbom.json"))
    signer.sign(f"{repo}@{digest}", bundle=bundle)
    config = write_trust(
        tmp_path / "cfg",
        {
            "require_sbom": True,
            "rules": [{"match": f"{oci_registry.host}/interop/**", "keys": [str(signer.pub)]}],
        },
    )
    store = tmp_path / "store"

    code, body, stderr = install(f"{repo}:1.3.0", config, store)

    assert code == 0, stderr
    fingerprint = load_public_key(signer.pub).fingerprint
    assert body["digest"] == digest
    assert body["method"] == ("sigstore-key" if bundle else "cosign-key-legacy")
    assert body["signer"] == fingerprint
    assert str(body["sbom"]).startswith("sha256:")
    installed = Path(str(body["path"]))
    assert (installed / "summarize_text.wasm").read_bytes() == (module / "summarize_text.wasm").read_bytes()
    assert json.loads((installed / "schemas" / "input.json").read_text()) == {
        "type": "object",
        "title": "input",
    }
    lock = conforms(json.loads((store / "aion.lock").read_text()), "store/module-lock")
    entry = lock["modules"]["summarize_text"]
    assert (entry["digest"], entry["ref"], entry["signer"]) == (digest, f"{repo}:1.3.0", fingerprint)
    assert entry["installedAt"]
    (event,) = audit_events(store)
    assert (event["action"], event["outcome"], event["after"]) == ("module.install", "success", digest)

    verified = aionctl("module", "verify", "--config", str(config), "--store", str(store), "-o", "json")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert conforms(json.loads(verified.stdout), "output/module-verification")["modules"][0]["ok"] is True


def test_cosign_verifies_and_oras_pulls_what_aion_pushed(
    oci_registry: OciRegistry, go_tools: GoTools, signer: Signer, tmp_path: Path
) -> None:
    repo = f"{oci_registry.host}/interop/aion-pushed"
    module = write_module(tmp_path / "mod")
    digest = push(module, f"{repo}:1.3.0", sbom=write_sbom(tmp_path / "sbom.json"))
    signer.sign(f"{repo}@{digest}")

    payloads = json.loads(signer.verify(f"{repo}:1.3.0"))
    assert payloads[0]["critical"]["image"]["docker-manifest-digest"] == digest

    fetched = go_tools.run("oras", "manifest", "fetch", "--plain-http", f"{repo}:1.3.0").stdout
    manifest = json.loads(fetched)
    assert "sha256:" + hashlib.sha256(fetched.encode()).hexdigest() == digest
    assert manifest["artifactType"] == "application/vnd.aion.module.v1"
    out = tmp_path / "pulled"
    go_tools.run("oras", "pull", "--plain-http", "-o", str(out), f"{repo}:1.3.0")
    assert (out / "summarize_text.wasm").read_bytes() == (module / "summarize_text.wasm").read_bytes()
    with tarfile.open(out / "schemas.tar.gz") as archive:
        assert sorted(archive.getnames()) == ["schemas/input.json", "schemas/output.json"]
    referrers = json.loads(
        go_tools.run("oras", "discover", "--plain-http", "--format", "json", f"{repo}@{digest}").stdout
    )
    types = {r["artifactType"] for r in referrers["referrers"]}
    assert {"application/vnd.cyclonedx+json", "application/vnd.dev.sigstore.bundle.v0.3+json"} <= types


def test_module_pushed_and_attached_with_oras_installs(
    oci_registry: OciRegistry, go_tools: GoTools, signer: Signer, tmp_path: Path
) -> None:
    repo = f"{oci_registry.host}/interop/oras-pushed"
    module = write_module(tmp_path / "mod", schemas=False, name="oras_made")
    write_sbom(module / "sbom.cdx.json", name="oras_made")
    go_tools.run(
        "oras", "push", "--plain-http",
        "--artifact-type", "application/vnd.aion.module.v1",
        "--config", "agent.yaml:application/vnd.aion.module.manifest.v1+yaml",
        f"{repo}:0.1.0", "oras_made.wasm:application/wasm",
        cwd=module,
    )  # fmt: skip
    go_tools.run(
        "oras", "attach", "--plain-http", "--artifact-type", "application/vnd.cyclonedx+json",
        f"{repo}:0.1.0", "sbom.cdx.json:application/vnd.cyclonedx+json",
        cwd=module,
    )  # fmt: skip
    digest = go_tools.run("oras", "resolve", "--plain-http", f"{repo}:0.1.0").stdout.strip()
    signer.sign(f"{repo}@{digest}")
    config = write_trust(
        tmp_path / "cfg", {"require_sbom": True, "rules": [{"match": repo, "keys": [str(signer.pub)]}]}
    )

    code, body, stderr = install(f"{repo}:0.1.0", config, tmp_path / "store")

    assert code == 0, stderr
    assert body["name"] == "oras_made"
    assert (Path(str(body["path"])) / "oras_made.wasm").read_bytes() == (
        module / "oras_made.wasm"
    ).read_bytes()


def test_image_layout_copied_by_oras_installs_offline(
    oci_registry: OciRegistry, go_tools: GoTools, signer: Signer, tmp_path: Path
) -> None:
    """An air-gapped site mirrors the module with its referrers into a layout directory."""
    repo = f"{oci_registry.host}/interop/mirrored"
    module = write_module(tmp_path / "mod")
    digest = push(module, f"{repo}:1.3.0", sbom=write_sbom(tmp_path / "sbom.json"))
    signer.sign(f"{repo}@{digest}")
    layout = tmp_path / "mirror"
    go_tools.run(
        "oras", "cp", "-r", "--from-plain-http", f"{repo}:1.3.0", "--to-oci-layout", f"{layout}:1.3.0"
    )
    config = write_trust(
        tmp_path / "cfg",
        {"require_sbom": True, "rules": [{"match": f"oci:{tmp_path}/**", "keys": [str(signer.pub)]}]},
    )

    result = aionctl(
        "install",
        f"oci:{layout}:1.3.0",
        "--config",
        str(config),
        "--store",
        str(tmp_path / "store"),
        "-o",
        "json",
    )

    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert (body["digest"], body["method"]) == (digest, "sigstore-key")
    assert body["sbom"]


def test_package_writes_a_layout_that_oras_reads(go_tools: GoTools, tmp_path: Path) -> None:
    module = write_module(tmp_path / "mod")
    layout = tmp_path / "layout"
    first = aionctl("module", "package", str(module), "--to", f"oci:{layout}", "-o", "json")
    again = aionctl("module", "package", str(module), "-o", "json")
    assert first.returncode == 0, first.stderr
    assert again.returncode == 0, again.stderr
    digest = conforms(json.loads(first.stdout), "output/module-package")["digest"]
    assert json.loads(again.stdout)["digest"] == digest, "the same directory must give the same digest"
    fetched = go_tools.run("oras", "manifest", "fetch", "--oci-layout", f"{layout}:1.3.0").stdout
    assert "sha256:" + hashlib.sha256(fetched.encode()).hexdigest() == digest
    out = tmp_path / "pulled"
    go_tools.run("oras", "pull", "--oci-layout", "-o", str(out), f"{layout}:1.3.0")
    assert (out / "summarize_text.wasm").read_bytes() == (module / "summarize_text.wasm").read_bytes()


def test_list_inspect_upgrade_verify_and_remove(
    oci_registry: OciRegistry, signer: Signer, tmp_path: Path
) -> None:
    repo = f"{oci_registry.host}/interop/lifecycle"
    config = write_trust(tmp_path / "cfg", {"rules": [{"match": repo, "keys": [str(signer.pub)]}]})
    store = tmp_path / "store"
    first = push(write_module(tmp_path / "v1", version="1.3.0"), f"{repo}:1.3.0")
    second = push(write_module(tmp_path / "v2", version="1.4.0"), f"{repo}:1.4.0")
    signer.sign(f"{repo}@{first}")
    signer.sign(f"{repo}@{second}")

    assert install(f"{repo}:1.3.0", config, store)[0] == 0
    code, again, _ = install(f"{repo}:1.3.0", config, store)
    assert code == 0
    assert again["unchanged"] is True
    code, upgraded, _ = install(f"{repo}:1.4.0", config, store)
    assert code == 0
    assert (upgraded["previous"], upgraded["digest"]) == (first, second)

    listed = conforms(
        json.loads(aionctl("module", "list", "--store", str(store), "-o", "json").stdout),
        "output/module-list",
    )
    assert [(m["name"], m["version"], m["digest"]) for m in listed["modules"]] == [
        ("summarize_text", "1.4.0", second)
    ]
    inspected = conforms(
        json.loads(
            aionctl("module", "inspect", "summarize_text", "--store", str(store), "-o", "json").stdout
        ),
        "output/module",
    )
    assert {"agent.yaml", "summarize_text.wasm", "schemas/input.json", "install.json"} <= set(
        inspected["files"]
    )

    # Someone edits an installed file: module verify notices, names it, and exits 1.
    wasm = Path(inspected["path"]) / "summarize_text.wasm"
    wasm.write_bytes(wasm.read_bytes() + b"\0")
    result = aionctl("module", "verify", "--config", str(config), "--store", str(store))
    assert result.returncode == 1
    assert "summarize_text: FAILED" in result.stdout
    assert "its files changed since it was installed" in result.stdout

    # Installing the same digest again repairs it; the damaged copy is kept in quarantine.
    code, repaired, _ = install(f"{repo}:1.4.0", config, store)
    assert code == 0
    assert repaired["unchanged"] is False
    assert aionctl("module", "verify", "--config", str(config), "--store", str(store)).returncode == 0
    assert [r["step"] for r in quarantine_reasons(store)] == ["commit"]

    # The trust policy no longer covers the repository: verify says so.
    write_trust(config, {"rules": [{"match": "ghcr.io/other/**", "keys": [str(signer.pub)]}]})
    result = aionctl("module", "verify", "--config", str(config), "--store", str(store), "-o", "json")
    assert result.returncode == 1
    problems = json.loads(result.stdout)["modules"][0]["problems"]
    assert f"no trust rule covers {repo} any more" in problems

    removed = aionctl("module", "remove", "summarize_text", "--store", str(store), "-o", "json")
    assert removed.returncode == 0, removed.stderr
    assert conforms(json.loads(removed.stdout), "output/module-remove")["name"] == "summarize_text"
    assert json.loads((store / "aion.lock").read_text())["modules"] == {}
    assert not Path(inspected["path"]).exists()
    missing = aionctl("module", "remove", "summarize_text", "--store", str(store))
    assert missing.returncode == 3
    assert "no module named 'summarize_text' is installed" in missing.stderr


def test_development_exception_installs_unsigned_loudly(oci_registry: OciRegistry, tmp_path: Path) -> None:
    """A registry named in unsafe_dev_registries is the one way to install without a signature: the
    install says so on stderr, records the method, and module verify fails once the exception is gone."""
    repo = f"{oci_registry.host}/interop/dev"
    push(write_module(tmp_path / "mod"), f"{repo}:0.0.1")
    config = write_trust(
        tmp_path / "cfg",
        {"unsafe_dev_registries": [{"registry": oci_registry.host, "reason": "laptop tests"}]},
    )
    store = tmp_path / "store"

    dry = aionctl("install", f"{repo}:0.0.1", "--config", str(config), "--store", str(store), "--plain-http",
                  "--dry-run", "-o", "json")  # fmt: skip
    assert dry.returncode == 0, dry.stderr
    assert conforms(json.loads(dry.stdout), "output/module-install")["dryRun"] is True
    assert not (store / "aion.lock").exists(), "a dry run stores nothing"

    code, body, stderr = install(f"{repo}:0.0.1", config, store)

    assert code == 0, stderr
    assert body["method"] == "unsafe-dev-exception"
    assert "was NOT verified" in stderr
    assert "WITHOUT signature verification" in stderr
    (event,) = audit_events(store)
    assert event["details"]["method"] == "unsafe-dev-exception"

    write_trust(config, {"rules": []})
    result = aionctl("module", "verify", "--config", str(config), "--store", str(store))
    assert result.returncode == 1
    assert "development exception that no longer exists" in result.stdout
