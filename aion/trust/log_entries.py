"""What a Sigstore bundle says about its transparency-log entry and its DSSE envelope, read from the
bundle's JSON, and the consistency check of an ``intoto`` v0.0.2 entry with the envelope it logged.

sigstore-python checks the bodies of ``hashedrekord`` and ``dsse`` entries but refuses ``intoto``
ones, which cosign and GitHub's attestations wrote for years. The check here follows the entry
format: the entry holds the envelope's one signature (base64 of its base64 text) and the signing
certificate (base64 of its PEM), and the SHA-256 of the payload. Its ``hash`` field, a digest of the
envelope's JSON as the log serialised it, cannot be recomputed from the bundle and is not relied on.

Reads only; never decides trust by itself. Every failure is a
:class:`~aion.errors.VerificationError` saying which part of the entry differs.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import json
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from aion.errors import VerificationError

INTOTO_V002 = ("intoto", "0.0.2")


@dataclasses.dataclass(frozen=True, slots=True)
class LogEntry:
    """A bundle's (single) transparency-log entry."""

    kind: str
    version: str
    integrated_time: int | None
    """Seconds since the epoch; None for logs that have none (Rekor v2)."""
    has_promise: bool
    """Whether a signed entry timestamp binds the integrated time."""
    log_key_id: bytes
    body: bytes

    @classmethod
    def from_bundle(cls, document: dict[str, Any]) -> LogEntry:
        entries = _field(document, "verificationMaterial", "tlogEntries")
        if not isinstance(entries, list) or len(entries) != 1 or not isinstance(entries[0], dict):
            raise VerificationError("the bundle must hold exactly one transparency-log entry")
        entry: dict[str, Any] = entries[0]
        integrated = entry.get("integratedTime")
        return cls(
            kind=str(_field(entry, "kindVersion", "kind")),
            version=str(_field(entry, "kindVersion", "version")),
            integrated_time=int(integrated) if integrated not in (None, "", "0", 0) else None,
            has_promise=isinstance(entry.get("inclusionPromise"), dict),
            log_key_id=_b64(_field(entry, "logId", "keyId"), "the log entry's log id"),
            body=_b64(entry.get("canonicalizedBody"), "the log entry's body"),
        )


@dataclasses.dataclass(frozen=True, slots=True)
class Envelope:
    """A bundle's DSSE envelope."""

    payload_type: str
    payload: bytes
    signatures: tuple[bytes, ...]

    @classmethod
    def from_bundle(cls, document: dict[str, Any]) -> Envelope | None:
        envelope = document.get("dsseEnvelope")
        if not isinstance(envelope, dict):
            return None
        signatures = envelope.get("signatures")
        if not isinstance(signatures, list):
            raise VerificationError("the DSSE envelope has no signature list")
        return cls(
            payload_type=str(envelope.get("payloadType", "")),
            payload=_b64(envelope.get("payload"), "the DSSE payload"),
            signatures=tuple(
                _b64(s.get("sig") if isinstance(s, dict) else None, "a DSSE signature") for s in signatures
            ),
        )


def check_intoto_v002(body: bytes, envelope: Envelope, certificate: x509.Certificate) -> None:
    """The ``intoto`` v0.0.2 entry ``body`` records exactly this envelope, signed with ``certificate``."""
    try:
        entry = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise VerificationError("the intoto log entry's body is not JSON") from exc
    if not isinstance(entry, dict) or (entry.get("kind"), entry.get("apiVersion")) != INTOTO_V002:
        raise VerificationError("the log entry's body is not an intoto v0.0.2 entry")
    content = _field(entry, "spec", "content")
    logged = content.get("envelope") if isinstance(content, dict) else None
    if not isinstance(content, dict) or not isinstance(logged, dict):
        raise VerificationError("the intoto log entry holds no envelope")
    # 1. The same payload: its SHA-256 is recorded, and the payload type must match too.
    payload_hash = content.get("payloadHash")
    if not isinstance(payload_hash, dict) or payload_hash.get("algorithm") != "sha256":
        raise VerificationError("the intoto log entry records no SHA-256 payload hash")
    if payload_hash.get("value") != hashlib.sha256(envelope.payload).hexdigest():
        raise VerificationError("the intoto log entry is for another payload (its payload hash differs)")
    if logged.get("payloadType") != envelope.payload_type:
        raise VerificationError("the intoto log entry is for another payload type")
    # 2. The same one signature, by the same certificate.
    signatures = logged.get("signatures")
    if not isinstance(signatures, list) or len(signatures) != 1 or len(envelope.signatures) != 1:
        raise VerificationError("the envelope and its intoto log entry must each hold exactly one signature")
    recorded = signatures[0] if isinstance(signatures[0], dict) else {}
    if _logged_signature(recorded.get("sig")) != envelope.signatures[0]:
        raise VerificationError("the intoto log entry holds another signature than the envelope")
    if _logged_certificate(recorded.get("publicKey")) != certificate.public_bytes(serialization.Encoding.DER):
        raise VerificationError("the intoto log entry was signed with another certificate")


def _logged_signature(value: Any) -> bytes | None:
    """The signature an entry records, as base64 of its base64 text; None when it is not that."""
    text = _b64(value, "the logged signature")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def _logged_certificate(value: Any) -> bytes:
    pem = _b64(value, "the logged certificate")
    try:
        return x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)
    except ValueError as exc:
        raise VerificationError("the intoto log entry's certificate is not a PEM certificate") from exc


def _field(document: Any, *path: str) -> Any:
    for name in path:
        document = document.get(name) if isinstance(document, dict) else None
    return document


def _b64(value: Any, what: str) -> bytes:
    if isinstance(value, bytes):
        value = value.decode("ascii", errors="replace")
    if not isinstance(value, str):
        raise VerificationError(f"{what} is missing")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise VerificationError(f"{what} is not base64") from exc


__all__ = ["INTOTO_V002", "Envelope", "LogEntry", "check_intoto_v002"]
