"""Sigstore bundles: key-based ones checked here with ``cryptography``, keyless ones through
sigstore-python.

sigstore-python cannot verify a bundle made with a key (it wants a certificate and a transparency
log entry), so key-based bundles are checked here, as strictly: the bundle's media type must be a
known bundle version; the signature must be over the DSSE pre-authentication encoding of exactly
the payload and payload type in the envelope (or, for a message signature, over exactly the
artifact, whose digest must also equal the one the bundle states); and the signed in-toto statement
must name the artifact's digest as its subject. No transparency-log entry is needed: the key is the
trust anchor.

Verification steps are numbered in the comments as the bundle format specifies them.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import json
from collections.abc import Sequence
from typing import Any

from aion.errors import VerificationError
from aion.inputs import human_size
from aion.trust.keys import PublicKey

BUNDLE_MEDIA_TYPES = (
    "application/vnd.dev.sigstore.bundle.v0.3+json",
    "application/vnd.dev.sigstore.bundle+json;version=0.2",
    "application/vnd.dev.sigstore.bundle+json;version=0.3",
)
ARTIFACT_TYPE_PREFIX = "application/vnd.dev.sigstore.bundle"
IN_TOTO = "application/vnd.in-toto+json"
STATEMENT_TYPES = ("https://in-toto.io/Statement/v1", "https://in-toto.io/Statement/v0.1")
MAX_BUNDLE_BYTES = 4 << 20
"""A bundle is a few KiB; a DSSE one carries its statement, which an SBOM attestation can make large."""


@dataclasses.dataclass(frozen=True, slots=True)
class Signed:
    """Who signed: a key (fingerprint) or a certificate identity with its OIDC issuer."""

    signer: str
    issuer: str | None = None


def parse(raw: bytes, what: str) -> dict[str, Any]:
    if len(raw) > MAX_BUNDLE_BYTES:
        raise VerificationError(
            f"{what}: the bundle is larger than {human_size(MAX_BUNDLE_BYTES)}, the limit"
        )
    try:
        bundle = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise VerificationError(f"{what}: the bundle is not JSON") from exc
    if not isinstance(bundle, dict) or bundle.get("mediaType") not in BUNDLE_MEDIA_TYPES:
        raise VerificationError(f"{what}: not a Sigstore bundle of a supported version")
    return bundle


def is_keyless(bundle: dict[str, Any]) -> bool:
    material = bundle.get("verificationMaterial")
    return isinstance(material, dict) and ("certificate" in material or "x509CertificateChain" in material)


def verify_with_keys(
    bundle: dict[str, Any],
    keys: Sequence[PublicKey],
    what: str,
    *,
    subject_digest: str | None = None,
    artifact: bytes | None = None,
    artifact_sha256: bytes | None = None,
) -> Signed:
    """Check a key-based bundle against ``keys``. ``subject_digest`` ("sha256:<hex>") is what a DSSE
    statement must be about; ``artifact`` (or its SHA-256) is what a message signature must cover."""
    if is_keyless(bundle):
        raise VerificationError(f"{what}: the bundle is keyless (a certificate), but this rule trusts keys")
    material = bundle.get("verificationMaterial")
    if not isinstance(material, dict) or not isinstance(material.get("publicKey"), dict):
        raise VerificationError(f"{what}: the bundle names neither a certificate nor a public key")
    envelope = bundle.get("dsseEnvelope")
    if isinstance(envelope, dict):
        payload_type, payload, key = _verify_dsse(envelope, keys, what)
        _check_statement(
            payload_type, payload, subject_digest, what, artifact_sha256=artifact_sha256, artifact=artifact
        )
        return Signed(key.fingerprint)
    message = bundle.get("messageSignature")
    if isinstance(message, dict):
        if artifact is None and artifact_sha256 is None:
            # A message signature covers bytes; it says nothing about which OCI artifact it is for.
            raise VerificationError(
                f"{what}: a message-signature bundle cannot vouch for an OCI artifact (cosign signs "
                "artifacts with a DSSE statement naming their digest)"
            )
        return Signed(
            _verify_message(
                message, keys, what, artifact=artifact, artifact_sha256=artifact_sha256
            ).fingerprint
        )
    raise VerificationError(f"{what}: the bundle has neither a DSSE envelope nor a message signature")


def _b64(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise VerificationError(f"{what} is missing")
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error as exc:
        raise VerificationError(f"{what} is not base64") from exc


def pae(payload_type: str, payload: bytes) -> bytes:
    """The DSSE pre-authentication encoding that a DSSE signature covers."""
    encoded = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(encoded), encoded, len(payload), payload)


def _verify_dsse(
    envelope: dict[str, Any], keys: Sequence[PublicKey], what: str
) -> tuple[str, bytes, PublicKey]:
    # 1. The envelope carries a payload, its type and at least one signature.
    payload = _b64(envelope.get("payload"), f"{what}: DSSE payload")
    payload_type = envelope.get("payloadType")
    signatures = envelope.get("signatures")
    if not isinstance(payload_type, str) or not isinstance(signatures, list) or not signatures:
        raise VerificationError(f"{what}: the DSSE envelope has no payload type or no signature")
    # 2. One signature verifies, with one trusted key, over PAE(payloadType, payload).
    message = pae(payload_type, payload)
    for entry in signatures:
        signature = _b64(entry.get("sig") if isinstance(entry, dict) else None, f"{what}: DSSE signature")
        for key in keys:
            if key.verifies(signature, message):
                return payload_type, payload, key
    raise VerificationError(
        f"{what}: no DSSE signature verifies with a trusted key",
        hint="the artifact was signed by another key, or the envelope was altered",
    )


def _check_statement(
    payload_type: str,
    payload: bytes,
    subject_digest: str | None,
    what: str,
    *,
    artifact: bytes | None = None,
    artifact_sha256: bytes | None = None,
) -> None:
    # 3. The payload is an in-toto statement whose subject is the artifact.
    if payload_type != IN_TOTO:
        raise VerificationError(f"{what}: the DSSE payload is {payload_type!r}, not an in-toto statement")
    try:
        statement = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise VerificationError(f"{what}: the signed statement is not JSON") from exc
    if not isinstance(statement, dict) or statement.get("_type") not in STATEMENT_TYPES:
        raise VerificationError(f"{what}: the signed payload is not an in-toto statement")
    expected = subject_digest
    if expected is None:
        digest = artifact_sha256 if artifact_sha256 is not None else hashlib.sha256(artifact or b"").digest()
        expected = "sha256:" + digest.hex()
    algorithm, _, value = expected.partition(":")
    subjects = statement.get("subject")
    if not isinstance(subjects, list) or not any(
        isinstance(s, dict) and isinstance(s.get("digest"), dict) and s["digest"].get(algorithm) == value
        for s in subjects
    ):
        raise VerificationError(
            f"{what}: the signature is valid but for another artifact "
            f"(its statement's subject is not {expected})",
            hint="a signature was copied from another artifact; do not trust this one",
        )


def _verify_message(
    message: dict[str, Any],
    keys: Sequence[PublicKey],
    what: str,
    *,
    artifact: bytes | None,
    artifact_sha256: bytes | None,
) -> PublicKey:
    # 1. The bundle's message digest is SHA-256 of exactly the artifact.
    stated = message.get("messageDigest")
    if not isinstance(stated, dict) or stated.get("algorithm") != "SHA2_256":
        raise VerificationError(f"{what}: only SHA2_256 message digests are supported")
    if artifact_sha256 is not None:
        actual = artifact_sha256
    elif artifact is not None:
        actual = hashlib.sha256(artifact).digest()
    else:  # pragma: no cover - verify_with_keys refuses this case first
        raise VerificationError(f"{what}: nothing to check the message signature against")
    if _b64(stated.get("digest"), f"{what}: message digest") != actual:
        raise VerificationError(f"{what}: the bundle is for another artifact (its digest differs)")
    # 2. The signature verifies with a trusted key over the artifact.
    signature = _b64(message.get("signature"), f"{what}: signature")
    for key in keys:
        ok = (
            key.verifies(signature, artifact)
            if artifact is not None
            else key.verifies_digest(signature, actual)
        )
        if ok:
            return key
    raise VerificationError(
        f"{what}: the signature does not verify with a trusted key",
        hint=(
            "an Ed25519 message signature covers the whole file, which aion hashes rather than holds; "
            "sign with an ECDSA key (cosign's default) or as a DSSE statement"
            if artifact is None and any(key.is_ed25519 for key in keys)
            else None
        ),
    )


__all__ = [
    "ARTIFACT_TYPE_PREFIX",
    "BUNDLE_MEDIA_TYPES",
    "Signed",
    "is_keyless",
    "pae",
    "parse",
    "verify_with_keys",
]
