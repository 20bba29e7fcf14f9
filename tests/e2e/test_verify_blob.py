"""``aionctl verify blob`` on real public Sigstore bundles, offline, and on bundles the real cosign makes
with a key."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from aion.trust.keys import load_public_key
from tests.integration.supply import conforms, make_signer
from tests.rig.daemon import REPO, aionctl
from tests.rig.services import GoTools

FIXTURES = REPO / "tests" / "fixtures" / "sigstore"
GITHUB_IDENTITY = "https://github.com/trailofbits/rfc8785.py/.github/workflows/release.yml@refs/tags/v0.1.2"
GITHUB_ISSUER = "https://token.actions.githubusercontent.com"
STAGING_IDENTITY = "william@yossarian.net"
STAGING_ISSUER = "https://github.com/login/oauth"


def verify(target: str | Path, bundle: Path, *args: str) -> tuple[int, str, str]:
    result = aionctl("verify", "blob", str(target), "--bundle", str(bundle), *args)
    return result.returncode, result.stdout, result.stderr


def keyless(identity: str, issuer: str) -> tuple[str, ...]:
    return ("--certificate-identity", identity, "--certificate-oidc-issuer", issuer)


def test_github_release_bundle_verifies_for_its_identity() -> None:
    wheel = FIXTURES / "bundle_v3_github.whl"
    code, out, err = verify(
        wheel,
        FIXTURES / "bundle_v3_github.whl.sigstore",
        *keyless(GITHUB_IDENTITY, GITHUB_ISSUER),
        "-o",
        "json",
    )
    assert code == 0, err
    body = conforms(json.loads(out), "output/blob-verification")
    assert (body["kind"], body["verified"], body["method"]) == ("BlobVerification", True, "keyless")
    assert (body["signer"], body["issuer"]) == (GITHUB_IDENTITY, GITHUB_ISSUER)
    assert err == "", "offline verification must not print library noise"


def test_a_digest_stands_in_for_the_file() -> None:
    digest = "sha256:" + hashlib.sha256((FIXTURES / "bundle_v3_github.whl").read_bytes()).hexdigest()
    code, out, err = verify(
        digest, FIXTURES / "bundle_v3_github.whl.sigstore", *keyless(GITHUB_IDENTITY, GITHUB_ISSUER)
    )
    assert code == 0, err
    assert out.startswith(f"verified: {digest}\n")


@pytest.mark.parametrize(
    ("identity", "issuer", "message"),
    [
        (
            "https://github.com/trailofbits/rfc8785.py/.github/workflows/release.yml@refs/tags/v0.1.3",
            GITHUB_ISSUER,
            "SANs do not match",
        ),
        (GITHUB_IDENTITY, "https://accounts.google.com", "OIDCIssuer does not match"),
    ],
    ids=["wrong-identity", "wrong-issuer"],
)
def test_github_bundle_fails_for_another_identity_or_issuer(identity: str, issuer: str, message: str) -> None:
    code, out, err = verify(
        FIXTURES / "bundle_v3_github.whl",
        FIXTURES / "bundle_v3_github.whl.sigstore",
        *keyless(identity, issuer),
    )
    assert code == 1
    assert out == ""
    assert message in err
    assert "Traceback" not in err


def test_one_changed_byte_of_the_artifact_fails(tmp_path: Path) -> None:
    data = bytearray((FIXTURES / "bundle_v3_github.whl").read_bytes())
    data[len(data) // 2] ^= 0x01
    changed = tmp_path / "bundle_v3_github.whl"
    changed.write_bytes(bytes(data))
    code, _, err = verify(
        changed, FIXTURES / "bundle_v3_github.whl.sigstore", *keyless(GITHUB_IDENTITY, GITHUB_ISSUER)
    )
    assert code == 1
    assert err.startswith("error: bundle ")


def test_staging_bundle_verifies_only_against_staging() -> None:
    file, bundle = FIXTURES / "bundle_v3.txt", FIXTURES / "bundle_v3.txt.sigstore"
    identity = keyless(STAGING_IDENTITY, STAGING_ISSUER)
    code, out, err = verify(file, bundle, *identity, "--staging")
    assert code == 0, err
    assert f"signed by {STAGING_IDENTITY} ({STAGING_ISSUER})" in out
    code, _, err = verify(file, bundle, *identity)
    assert code == 1
    assert "error:" in err


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("bundle_cve_2022_36056", "transparency log entry is inconsistent"),
        ("bundle_invalid_version", "not a valid Sigstore bundle"),
        ("bundle_no_log_entry", "not a valid Sigstore bundle: expected exactly one log entry"),
    ],
)
def test_broken_bundles_fail(name: str, message: str) -> None:
    code, _, err = verify(
        FIXTURES / f"{name}.txt",
        FIXTURES / f"{name}.txt.sigstore",
        *keyless(STAGING_IDENTITY, STAGING_ISSUER),
        "--staging",
    )
    assert code == 1
    assert message in err
    assert err.count("\n") == 1, "one clear line, no traceback"


def test_cosign_key_bundle_of_a_file(go_tools: GoTools, tmp_path: Path) -> None:
    signer = make_signer(go_tools, tmp_path / "keys")
    release = tmp_path / "release.tar.gz"
    release.write_bytes(b"release contents\n" * 100)
    bundle = tmp_path / "release.sigstore.json"
    go_tools.run(
        "cosign", "sign-blob", "--key", str(signer.key), "--tlog-upload=false", "--use-signing-config=false",
        "--bundle", str(bundle), "-y", str(release), env={"COSIGN_PASSWORD": "", "HOME": str(tmp_path)},
    )  # fmt: skip

    code, out, err = verify(release, bundle, "--key", str(signer.pub), "-o", "json")
    assert code == 0, err
    assert json.loads(out)["signer"] == load_public_key(signer.pub).fingerprint

    other = tmp_path / "other.tar.gz"
    other.write_bytes(b"something else")
    code, _, err = verify(other, bundle, "--key", str(signer.pub))
    assert code == 1
    assert "the bundle is for another artifact" in err

    stranger = make_signer(go_tools, tmp_path / "stranger")
    code, _, err = verify(release, bundle, "--key", str(stranger.pub))
    assert code == 1
    assert "does not verify with a trusted key" in err


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        ((), 2, "give --certificate-identity and --certificate-oidc-issuer (keyless), or --key"),
        (("--key", "k.pub", "--certificate-identity", "x"), 2, "not both"),
        (("--key", "missing.pub"), 3, "missing.pub: cannot read the public key"),
    ],
)
def test_usage_mistakes_are_named(tmp_path: Path, args: tuple[str, ...], code: int, message: str) -> None:
    result = aionctl(
        "verify",
        "blob",
        str(FIXTURES / "bundle_v3.txt"),
        "--bundle",
        str(FIXTURES / "bundle_v3.txt.sigstore"),
        *args,
    )
    assert result.returncode == code
    assert message in result.stderr
