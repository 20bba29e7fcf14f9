"""``aionctl verify blob`` on real public Sigstore bundles, offline, and on bundles the real cosign makes
with a key; and what it does with inputs that are not files of a sane size (every read is bounded).

The Sigstore conformance suite's cases run in ``test_sigstore_conformance.py``.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import subprocess
from pathlib import Path

import pytest

from aion.trust.keys import load_public_key
from tests.integration.supply import conforms, make_signer
from tests.rig.daemon import REPO, aionctl, clean_env, program
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
        (("--key", "missing.pub"), 3, "--key missing.pub: cannot open: No such file or directory"),
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


# Each of these must be refused before anything is read: a hang or a huge read fails the test at this
# deadline (before the fix, --bundle /dev/zero grew to 24 GB and a FIFO blocked forever).
PROMPTLY = 30.0
WHEEL = FIXTURES / "bundle_v3_github.whl"
WHEEL_BUNDLE = FIXTURES / "bundle_v3_github.whl.sigstore"


def verify_promptly(target: str | Path, *args: str) -> subprocess.CompletedProcess[str]:
    return aionctl("verify", "blob", str(target), *args, timeout=PROMPTLY)


def test_a_device_as_the_bundle_is_refused_naming_the_limit() -> None:
    result = verify_promptly(WHEEL, "--bundle", "/dev/zero", *keyless(GITHUB_IDENTITY, GITHUB_ISSUER))
    assert result.returncode == 3
    assert result.stderr == (
        "error: --bundle /dev/zero is a character device, not a regular file\n"
        "hint: give the Sigstore bundle file (.sigstore.json, at most 4 MiB)\n"
    )


def test_a_fifo_as_the_bundle_is_refused_at_once(tmp_path: Path) -> None:
    fifo = tmp_path / "bundle.sigstore.json"
    os.mkfifo(fifo)
    result = verify_promptly(WHEEL, "--bundle", str(fifo), *keyless(GITHUB_IDENTITY, GITHUB_ISSUER))
    assert result.returncode == 3
    assert f"error: --bundle {fifo} is a FIFO, not a regular file" in result.stderr


def test_an_oversized_bundle_is_refused_naming_the_limit(tmp_path: Path) -> None:
    big = tmp_path / "big.sigstore.json"
    with big.open("wb") as out:
        out.truncate((4 << 20) + 1)  # sparse: one byte over the limit costs no disk
    result = verify_promptly(WHEEL, "--bundle", str(big), *keyless(GITHUB_IDENTITY, GITHUB_ISSUER))
    assert result.returncode == 3
    assert f"error: --bundle {big} is larger than 4 MiB, the limit" in result.stderr


@pytest.mark.parametrize("flag", ["--key", "--trusted-root"])
def test_a_device_or_fifo_as_key_or_trusted_root_is_refused_at_once(tmp_path: Path, flag: str) -> None:
    fifo = tmp_path / "input"
    os.mkfifo(fifo)
    identity = () if flag == "--key" else keyless(GITHUB_IDENTITY, GITHUB_ISSUER)
    for source, kind in (("/dev/zero", "a character device"), (str(fifo), "a FIFO")):
        result = verify_promptly(WHEEL, "--bundle", str(WHEEL_BUNDLE), *identity, flag, source)
        assert result.returncode == 3, result.stderr
        assert f"error: {flag} {source} is {kind}, not a regular file" in result.stderr
        assert "at most" in result.stderr, "the hint states the limit"


def test_an_oversized_trusted_root_is_refused_naming_the_limit(tmp_path: Path) -> None:
    big = tmp_path / "trusted_root.json"
    with big.open("wb") as out:
        out.truncate((4 << 20) + 1)
    result = verify_promptly(
        WHEEL,
        "--bundle",
        str(WHEEL_BUNDLE),
        *keyless(GITHUB_IDENTITY, GITHUB_ISSUER),
        "--trusted-root",
        str(big),
    )
    assert result.returncode == 3
    assert f"error: --trusted-root {big} is larger than 4 MiB, the limit" in result.stderr


@pytest.mark.parametrize("kind", ["a character device", "a FIFO", "a directory"])
def test_the_artifact_must_be_a_regular_file(tmp_path: Path, kind: str) -> None:
    fifo = tmp_path / "release.tar.gz"
    os.mkfifo(fifo)
    target = {"a character device": "/dev/zero", "a FIFO": str(fifo), "a directory": str(tmp_path)}[kind]
    result = verify_promptly(target, "--bundle", str(WHEEL_BUNDLE), *keyless(GITHUB_IDENTITY, GITHUB_ISSUER))
    assert result.returncode == 3
    assert f"error: file {target} is {kind}, not a regular file" in result.stderr


def test_the_artifact_is_hashed_streaming_never_held_whole(tmp_path: Path) -> None:
    # 256 MiB of artifact under a 128 MiB cap on the process's data: reading it whole cannot fit, so
    # only a streaming hash gets as far as comparing digests (it is not the signed file).
    big = tmp_path / "release.tar.gz"
    with big.open("wb") as out:
        out.truncate(256 << 20)

    def cap_data() -> None:
        resource.setrlimit(resource.RLIMIT_DATA, (128 << 20, 128 << 20))

    result = subprocess.run(
        [program("aionctl"), "verify", "blob", str(big), "--bundle", str(WHEEL_BUNDLE),
         *keyless(GITHUB_IDENTITY, GITHUB_ISSUER)],
        capture_output=True, text=True, env=clean_env(), preexec_fn=cap_data, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "Bundle message digest mismatch" in result.stderr


def test_the_artifact_can_come_from_standard_input() -> None:
    result = subprocess.run(
        [program("aionctl"), "verify", "blob", "-", "--bundle", str(WHEEL_BUNDLE),
         *keyless(GITHUB_IDENTITY, GITHUB_ISSUER)],
        input=WHEEL.read_bytes(), capture_output=True, env=clean_env(), timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(b"verified: -\n")


def test_only_one_input_can_be_standard_input() -> None:
    result = aionctl("verify", "blob", "-", "--bundle", "-", *keyless(GITHUB_IDENTITY, GITHUB_ISSUER))
    assert result.returncode == 2
    assert "the file and --bundle cannot all be standard input (-): only one of them can" in result.stderr
