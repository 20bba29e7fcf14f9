"""The Sigstore conformance suite's bundle-verification cases, through the real ``aionctl verify blob``.

Every case in ``tests/fixtures/sigstore-conformance/bundle-verify/`` (pinned upstream commit; see the
README there) runs twice, as the suite's own harness runs it: once with the artifact's path, once with
its ``sha256:<hex>`` digest. The flags are the ones the suite's CLI protocol gives a client:
``--bundle``, then ``--key`` when the case has a ``key.pub`` or else ``--certificate-identity`` and
``--certificate-oidc-issuer``, then ``--trusted-root`` when the case has a ``trusted_root.json``.

A valid bundle must exit 0 and say what it verified; an invalid one must exit 1 with one line that
says why (the reason is pinned per case in :data:`REFUSED`, so a case cannot pass by failing for some
other reason). Two ``_fail`` cases hand aionctl an unusable input rather than a bad bundle (a key file
that is not a key, a trusted root that breaks the trusted-root format); like any unusable input they
exit 3. Nothing is skipped or expected to fail.

Offline: aionctl runs with a proxy that accepts no connection, so a case that tried the network
would fail here.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from tests.rig.daemon import REPO, aionctl

SUITE = REPO / "tests" / "fixtures" / "sigstore-conformance"
CASES = SUITE / "bundle-verify"
DEFAULT_IDENTITY = (
    "https://github.com/sigstore-conformance/extremely-dangerous-public-oidc-beacon/.github/workflows/"
    "extremely-dangerous-oidc-beacon.yml@refs/heads/main"
)
DEFAULT_ISSUER = "https://token.actions.githubusercontent.com"
NO_NETWORK = {"HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9", "NO_PROXY": ""}

# Why aion refuses each invalid case: (exit code, what its one line of error says).
REFUSED: dict[str, tuple[int, str]] = {
    "bundle-empty-certificate-chain_fail": (1, "expected non-empty certificate chain"),
    "bundle-from-wrong-instance_fail": (1, "from a transparency log the trusted root does not name"),
    "bundle-invalid-base64-signature_fail": (1, "Invalid base64-encoded string"),
    "bundle-malformed-json_fail": (1, "Invalid JSON"),
    "bundle-negative-log-index_fail": (1, "logIndex; Value error, Value exceeds uint64 domain: -1"),
    "bundle-unknown-version_fail": (1, "not a valid Sigstore bundle: failed to load bundle"),
    "bundle-with-root-cert_fail": (1, "its certificate chain includes a root CA"),
    "checkpoint-bad-keyhint_fail": (1, "checkpoint: Signature not found for log ID"),
    "checkpoint-wrong-roothash_fail": (1, "invalid root hash"),
    "dsse-invalid-sig_fail": (1, "DSSE: invalid signature"),
    "dsse-mismatch-envelope_fail": (1, "log entry payload hash does not match bundle"),
    "dsse-mismatch-sig_fail": (1, "log entry signatures do not match bundle"),
    "inclusion-proof-corrupted-hash_fail": (1, "inclusion proof contains invalid root hash"),
    # Changing the logged key changes the entry, so its inclusion proof no longer holds.
    "incorrect-public-key_fail": (1, "inclusion proof contains invalid root hash"),
    "integrated-time-in-future_fail": (1, "cert is not valid at validation time"),
    "intoto-expired-certificate_fail": (1, "cert is not valid at validation time"),
    "intoto-log-entry-mismatch_fail": (1, "the intoto log entry holds another signature than the envelope"),
    "intoto-missing-inclusion-proof_fail": (1, "inclusionProof; Field required"),
    "intoto-set-outside-signing-cert-validity_fail": (1, "cert is not valid at validation time"),
    "intoto-tsa-timestamp-outside-cert-validity_fail": (1, "cert is not valid at validation time"),
    "invalid-checkpoint-signature_fail": (1, "checkpoint: invalid signature"),
    "invalid-ct-key_fail": (1, "failed to verify SCT on signing certificate"),
    "invalid-inclusion-proof_fail": (1, "entry must contain inclusion proof, with checkpoint"),
    "managed-key-no-key_fail": (1, "expected certificate in bundle"),
    "managed-key-wrong-key_fail": (3, "key.pub: not a PEM public key"),
    "message-digest-mismatch_fail": (1, "Bundle message digest mismatch"),
    "rekor2-checkpoint-missing-log-signature_fail": (1, "must contain at least one signature"),
    "rekor2-checkpoint-missing-origin_fail": (1, "malformed LogCheckpoint"),
    "rekor2-checkpoint-missing-root-hash_fail": (1, "malformed LogCheckpoint"),
    "rekor2-checkpoint-missing-size_fail": (1, "malformed LogCheckpoint"),
    "rekor2-checkpoint-no-matching-signature_fail": (1, "checkpoint: invalid signature"),
    "rekor2-dsse-invalid-sig_fail": (1, "DSSE: invalid signature"),
    "rekor2-dsse-mismatch-envelope_fail": (1, "transparency log entry is inconsistent with other materials"),
    "rekor2-dsse-mismatch-sig_fail": (1, "transparency log entry is inconsistent with other materials"),
    "rekor2-no-inclusion-proof_fail": (1, "inclusionProof; Field required"),
    "rekor2-no-timestamp_fail": (1, "bundle must contain an inclusion promise or signed timestamp(s)"),
    "rekor2-timestamp-outside-trust-root-tsa-validity_fail": (
        1,
        "is outside the validity period of the timestamp authority",
    ),
    "rekor2-timestamp-outside-tsa-cert-validity_fail": (1, "does not verify with any timestamp authority"),
    "rekor2-timestamp-payload-mismatch_fail": (1, "does not verify with any timestamp authority"),
    # FreeTSA's response is not DER (its certificate set is out of order): refused as unparseable.
    "rekor2-timestamp-untrusted-tsa-with-embedded-cert_fail": (1, "Invalid Timestamp Response"),
    "rekor2-timestamp-untrusted-tsa-without-embedded-cert_fail": (
        1,
        "does not verify with any timestamp authority",
    ),
    "rekor2-timestamp-with-incorrect-time_fail": (1, "cert is not valid at validation time"),
    "set-invalid-signature_fail": (1, "SET: invalid inclusion promise"),
    "signature-mismatch_fail": (1, "Signature is invalid for input"),
    "trust-root-tlog-missing-validity-start_fail": (3, "tlogs.1.publicKey.validFor.start; Field required"),
    "wrong-hashedrekord-artifact_fail": (1, "transparency log entry is inconsistent with other materials"),
    "wrong-hashedrekord-cert-and-sig_fail": (
        1,
        "transparency log entry is inconsistent with other materials",
    ),
    "wrong-hashedrekord-entry_fail": (1, "transparency log entry is inconsistent with other materials"),
    "wrong-material_fail": (1, "Bundle message digest mismatch"),
}


def cases() -> list[Path]:
    return sorted(path for path in CASES.iterdir() if path.is_dir())


def artifact_of(case: Path) -> Path:
    own = case / "artifact"
    return own if own.exists() else CASES / "a.txt"


def flags(case: Path) -> list[str]:
    """The case's flags, in the order the suite's CLI protocol gives them."""
    args = ["--bundle", str(case / "bundle.sigstore.json")]
    if (case / "key.pub").exists():
        args += ["--key", str(case / "key.pub")]
    else:
        identity = (
            (case / "identity").read_text().strip() if (case / "identity").exists() else DEFAULT_IDENTITY
        )
        issuer = (case / "issuer").read_text().strip() if (case / "issuer").exists() else DEFAULT_ISSUER
        args += ["--certificate-identity", identity, "--certificate-oidc-issuer", issuer]
    if (case / "trusted_root.json").exists():
        args += ["--trusted-root", str(case / "trusted_root.json")]
    return args


@pytest.mark.parametrize("form", ["path", "digest"])
@pytest.mark.parametrize("case", cases(), ids=lambda case: case.name)
def test_case(case: Path, form: str) -> None:
    artifact = artifact_of(case)
    target = (
        str(artifact) if form == "path" else "sha256:" + hashlib.sha256(artifact.read_bytes()).hexdigest()
    )
    result = aionctl("verify", "blob", *flags(case), target, env=NO_NETWORK)

    assert "Traceback" not in result.stderr
    assert "internal error" not in result.stderr
    if not case.name.endswith("_fail"):
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith(f"verified: {target}\n  signed by ")
        assert result.stderr == "", "a verified bundle prints nothing on stderr"
        return
    code, reason = REFUSED[case.name]
    assert result.returncode == code, result.stderr
    assert result.stdout == ""
    error, *rest = result.stderr.splitlines()
    assert error.startswith("error: ")
    assert reason in error
    assert all(line.startswith("hint: ") for line in rest), "one line of error, then at most a hint"


def test_every_refused_case_has_its_reason_and_every_reason_a_case() -> None:
    failing = {case.name for case in cases() if case.name.endswith("_fail")}
    assert sorted(failing - REFUSED.keys()) == [], "say in REFUSED why aion refuses these new cases"
    assert sorted(REFUSED.keys() - failing) == [], "these cases are gone from the fixtures"


def test_every_case_has_a_bundle_and_says_what_it_tests() -> None:
    for case in cases():
        assert (case / "bundle.sigstore.json").is_file(), case.name
        assert (case / "README").is_file() or case.name == "invalid-ct-key_fail", case.name


def test_the_fixtures_name_their_pinned_upstream_commit() -> None:
    commit = (SUITE / ".source-commit").read_text().strip()
    assert re.fullmatch(r"[0-9a-f]{40}", commit)
    assert f"`{commit}`" in (SUITE / "README.md").read_text()
    assert "Apache License" in (SUITE / "LICENSE").read_text()
