"""Key-based Sigstore bundles, checked with ``cryptography``: what makes one vouch for an artifact.

Bundles here are made in the test with a fresh P-256 key (as ``cosign sign`` and ``cosign sign-blob``
make them), then checked with aion's verifier; the real cosign's bundles are checked in the
integration and end-to-end tests.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from aion.errors import VerificationError
from aion.trust import bundles
from aion.trust.keys import PublicKey

KEY = ec.generate_private_key(ec.SECP256R1())
TRUSTED = PublicKey(KEY.public_key(), "test key")
OTHER = PublicKey(ec.generate_private_key(ec.SECP256R1()).public_key(), "other key")
DIGEST = "sha256:" + "ab" * 32


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def dsse_bundle(statement: dict[str, Any], *, payload_type: str = bundles.IN_TOTO) -> dict[str, Any]:
    payload = json.dumps(statement).encode()
    signature = KEY.sign(bundles.pae(payload_type, payload), ec.ECDSA(hashes.SHA256()))
    return {
        "mediaType": bundles.BUNDLE_MEDIA_TYPES[0],
        "verificationMaterial": {"publicKey": {"hint": ""}},
        "dsseEnvelope": {
            "payload": b64(payload),
            "payloadType": payload_type,
            "signatures": [{"sig": b64(signature)}],
        },
    }


def message_bundle(artifact: bytes) -> dict[str, Any]:
    return {
        "mediaType": bundles.BUNDLE_MEDIA_TYPES[0],
        "verificationMaterial": {"publicKey": {"hint": ""}},
        "messageSignature": {
            "messageDigest": {"algorithm": "SHA2_256", "digest": b64(hashlib.sha256(artifact).digest())},
            "signature": b64(KEY.sign(artifact, ec.ECDSA(hashes.SHA256()))),
        },
    }


def statement(digest: str = DIGEST) -> dict[str, Any]:
    algorithm, _, value = digest.partition(":")
    return {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": "m", "digest": {algorithm: value}}],
        "predicateType": "https://sigstore.dev/cosign/sign/v1",
        "predicate": {},
    }


def test_a_dsse_statement_about_the_digest_verifies() -> None:
    signed = bundles.verify_with_keys(dsse_bundle(statement()), [OTHER, TRUSTED], "B", subject_digest=DIGEST)
    assert signed.signer == TRUSTED.fingerprint


def test_another_key_does_not_verify() -> None:
    with pytest.raises(VerificationError, match="no DSSE signature verifies with a trusted key"):
        bundles.verify_with_keys(dsse_bundle(statement()), [OTHER], "B", subject_digest=DIGEST)


def test_an_altered_payload_does_not_verify() -> None:
    bundle = dsse_bundle(statement())
    bundle["dsseEnvelope"]["payload"] = b64(json.dumps(statement("sha256:" + "cd" * 32)).encode())
    with pytest.raises(VerificationError, match="no DSSE signature verifies"):
        bundles.verify_with_keys(bundle, [TRUSTED], "B", subject_digest="sha256:" + "cd" * 32)


def test_a_statement_about_another_digest_is_refused() -> None:
    with pytest.raises(VerificationError, match="valid but for another artifact"):
        bundles.verify_with_keys(
            dsse_bundle(statement("sha256:" + "cd" * 32)), [TRUSTED], "B", subject_digest=DIGEST
        )


@pytest.mark.parametrize("artifact", [b"", b"anything the key once signed"])
def test_a_message_signature_cannot_vouch_for_an_oci_artifact(artifact: bytes) -> None:
    """A message signature covers some bytes, not an artifact digest: one over the empty string (or
    any other file) attached to a module must not make that module trusted."""
    with pytest.raises(VerificationError, match="cannot vouch for an OCI artifact"):
        bundles.verify_with_keys(message_bundle(artifact), [TRUSTED], "B", subject_digest=DIGEST)


def test_a_message_signature_verifies_for_its_file_only() -> None:
    bundle = message_bundle(b"release")
    assert bundles.verify_with_keys(bundle, [TRUSTED], "B", artifact=b"release").signer == TRUSTED.fingerprint
    with pytest.raises(VerificationError, match="for another artifact"):
        bundles.verify_with_keys(bundle, [TRUSTED], "B", artifact=b"")


@pytest.mark.parametrize(
    "mutate",
    [
        lambda b: b.update(verificationMaterial=[1]),
        lambda b: b["messageSignature"].update(messageDigest="x"),
        lambda b: b["messageSignature"].update(signature=5),
        lambda b: b["messageSignature"].update(messageDigest={"algorithm": "SHA2_256", "digest": "%%"}),
    ],
)
def test_malformed_bundles_are_refused_not_crashes(mutate: Any) -> None:
    bundle = message_bundle(b"release")
    mutate(bundle)
    with pytest.raises(VerificationError):
        bundles.verify_with_keys(bundle, [TRUSTED], "B", artifact=b"release")


def test_a_statement_with_malformed_subjects_is_refused() -> None:
    bad = statement()
    bad["subject"] = "sha256:" + "ab" * 32
    with pytest.raises(VerificationError, match="for another artifact"):
        bundles.verify_with_keys(dsse_bundle(bad), [TRUSTED], "B", subject_digest=DIGEST)


def test_a_message_signature_verifies_from_the_files_digest_alone() -> None:
    # aionctl hashes a file streaming and hands only its digest on, never the file's bytes.
    bundle = message_bundle(b"release")
    signed = bundles.verify_with_keys(
        bundle, [TRUSTED], "B", artifact_sha256=hashlib.sha256(b"release").digest()
    )
    assert signed.signer == TRUSTED.fingerprint


def test_an_ed25519_message_signature_from_a_digest_alone_says_why_it_cannot_verify() -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    bundle = message_bundle(b"release")
    bundle["messageSignature"]["signature"] = b64(key.sign(b"release"))
    with pytest.raises(VerificationError, match="does not verify with a trusted key") as raised:
        bundles.verify_with_keys(
            bundle,
            [PublicKey(key.public_key(), "ed")],
            "B",
            artifact_sha256=hashlib.sha256(b"release").digest(),
        )
    assert raised.value.hint is not None
    assert "Ed25519 message signature covers the whole file" in raised.value.hint
