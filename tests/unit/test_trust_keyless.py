"""The subject-digest check of keyless bundles about OCI artifacts.

A keyless DSSE bundle can be perfectly valid (a trusted identity, a good transparency-log entry) and
still be about another artifact: copying it next to a tampered module must not make that module
trusted. These tests drive :func:`aion.trust.keyless.verify_artifact_bundle` with a real public bundle
and a verifier that reports a chosen statement as verified, so that only aion's own check decides.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from sigstore.errors import VerificationError as SigstoreVerificationError

from aion.errors import VerificationError
from aion.trust import keyless
from aion.trust.bundles import Signed
from tests.rig.daemon import REPO

BUNDLE = (REPO / "tests" / "fixtures" / "sigstore" / "bundle_v3_github.whl.sigstore").read_bytes()
DIGEST = "sha256:" + "ab" * 32
IN_TOTO = "application/vnd.in-toto+json"


class Reports:
    """A verifier whose DSSE check succeeded and produced this payload."""

    def __init__(self, payload_type: str, payload: bytes | Exception) -> None:
        self.result = payload_type, payload

    def verify_dsse(self, bundle: Any, policy: Any) -> tuple[str, bytes]:
        payload_type, payload = self.result
        if isinstance(payload, Exception):
            raise payload
        return payload_type, payload


def statement(*subjects: dict[str, str], kind: str = "https://in-toto.io/Statement/v1") -> bytes:
    return json.dumps(
        {
            "_type": kind,
            "subject": [{"name": "module", "digest": d} for d in subjects],
            "predicateType": "https://sigstore.dev/cosign/sign/v1",
            "predicate": {},
        }
    ).encode()


def check(payload_type: str, payload: bytes | Exception) -> Signed:
    return keyless.verify_artifact_bundle(BUNDLE, DIGEST, Reports(payload_type, payload), None, "bundle B")


def test_a_statement_about_the_artifact_passes_and_names_the_certificate_identity() -> None:
    signed = check(IN_TOTO, statement({"sha256": "ab" * 32}))
    assert signed.signer == (
        "https://github.com/trailofbits/rfc8785.py/.github/workflows/release.yml@refs/tags/v0.1.2"
    )
    assert signed.issuer == "https://token.actions.githubusercontent.com"


def test_the_artifact_may_be_one_subject_among_several() -> None:
    check(IN_TOTO, statement({"sha256": "cd" * 32}, {"sha256": "ab" * 32}))


@pytest.mark.parametrize(
    ("subjects", "why"),
    [
        (({"sha256": "cd" * 32},), "another digest"),
        (({"sha512": "ab" * 32},), "the right hex under another algorithm"),
        (({"sha256": "AB" * 32},), "the same hex in capitals is another string"),
        ((), "no subject at all"),
    ],
)
def test_a_statement_about_anything_else_is_refused(subjects: tuple[dict[str, str], ...], why: str) -> None:
    with pytest.raises(VerificationError, match="valid but for another artifact") as raised:
        check(IN_TOTO, statement(*subjects))
    assert DIGEST in raised.value.message, why


@pytest.mark.parametrize(
    ("payload_type", "payload", "message"),
    [
        (
            "application/vnd.dev.cosign.simplesigning.v1+json",
            statement({"sha256": "ab" * 32}),
            "not an in-toto statement",
        ),
        (IN_TOTO, b"\xff not json", "not JSON"),
        (
            IN_TOTO,
            statement({"sha256": "ab" * 32}, kind="https://example.com/Statement"),
            "not an in-toto statement",
        ),
        (IN_TOTO, b"[1, 2]", "not an in-toto statement"),
    ],
)
def test_payloads_that_are_not_statements_are_refused(
    payload_type: str, payload: bytes, message: str
) -> None:
    with pytest.raises(VerificationError, match=message):
        check(payload_type, payload)


def test_a_failed_sigstore_check_becomes_a_verification_error() -> None:
    with pytest.raises(VerificationError, match=r"^bundle B: Certificate's SANs do not match"):
        check(IN_TOTO, SigstoreVerificationError("Certificate's SANs do not match x"))


def test_a_bundle_that_is_not_a_bundle_is_refused() -> None:
    bad = json.loads(BUNDLE)
    bad["mediaType"] = "application/x-unknown"
    with pytest.raises(VerificationError, match="not a valid Sigstore bundle"):
        keyless.verify_artifact_bundle(
            json.dumps(bad).encode(), DIGEST, Reports(IN_TOTO, statement()), None, "bundle B"
        )


@pytest.mark.parametrize(
    ("pattern", "identity", "matches"),
    [
        (
            "https://github.com/aion/m/.github/workflows/release.yml@refs/tags/*",
            "https://github.com/aion/m/.github/workflows/release.yml@refs/tags/v1.3.0",
            True,
        ),
        (
            "https://github.com/aion/m/.github/workflows/release.yml@refs/tags/*",
            "https://github.com/aion/m/.github/workflows/release.yml@refs/tags/x.yml@refs/heads/main",
            False,
        ),
        (
            "https://github.com/aion/m/.github/workflows/release.yml@refs/tags/*",
            "https://github.com/aion/m/.github/workflows/release.yml@refs/tags/a/b",
            False,
        ),
        (
            "https://github.com/aion/m/.github/workflows/release.yml@refs/tags/**",
            "https://github.com/aion/m/.github/workflows/release.yml@refs/tags/a/b",
            True,
        ),
        (
            "https://github.com/aion/*/.github/workflows/release.yml@refs/heads/main",
            "https://github.com/aion/evil/x/.github/workflows/release.yml@refs/heads/main",
            False,
        ),
        ("*@example.com", "alice@example.com", True),
        ("*@example.com", "alice@evil.com@example.com", False),
        (
            "https://github.com/aion/m/.github/workflows/release.yml@refs/tags/v1.[0-9]",
            "https://github.com/aion/m/.github/workflows/release.yml@refs/tags/v1.5",
            False,
        ),
    ],
)
def test_subject_globs(pattern: str, identity: str, matches: bool) -> None:
    assert keyless.subject_matches(pattern, identity) is matches
