"""Keyless (Sigstore) verification through sigstore-python, offline, with the trust roots it ships.

sigstore-python checks the certificate chain to Fulcio, the transparency-log inclusion and the
signed timestamps; aion adds the identity policy. Trust rules name identities by issuer (exactly)
and subject (a glob, because release workflows sign from many tags), which sigstore's own
``Identity`` policy, an exact match, cannot express; :class:`GlobIdentities` does that.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.x509 import (
    ObjectIdentifier,
    OtherName,
    RFC822Name,
    SubjectAlternativeName,
    UniformResourceIdentifier,
)

from aion.config.model import Identity
from aion.errors import InputError, VerificationError
from aion.trust.bundles import Signed, _check_statement

_ISSUER_V1 = ObjectIdentifier("1.3.6.1.4.1.57264.1.1")
_ISSUER_V2 = ObjectIdentifier("1.3.6.1.4.1.57264.1.8")
_OTHERNAME = ObjectIdentifier("1.3.6.1.4.1.57264.1.7")


def verifier(*, staging: bool = False, trusted_root: Path | None = None) -> Any:
    """A sigstore Verifier for production (or staging, or a given trusted_root.json), offline."""
    from sigstore.models import TrustedRoot
    from sigstore.verify import Verifier

    # Offline on purpose (verification must not depend on reaching Sigstore's TUF mirror); the
    # library warns about that on every call, which is noise for aion's users.
    logging.getLogger("sigstore._internal.tuf").setLevel(logging.ERROR)
    if trusted_root is not None:
        try:
            return Verifier(trusted_root=TrustedRoot.from_file(str(trusted_root)))
        except Exception as exc:  # sigstore raises several types for an unusable root
            raise InputError(f"{trusted_root}: not a usable Sigstore trusted root: {exc}") from exc
    return Verifier.staging(offline=True) if staging else Verifier.production(offline=True)


def certificate_identity(cert: x509.Certificate) -> tuple[list[str], str | None]:
    """The certificate's SAN identities and its OIDC issuer."""
    try:
        san = cert.extensions.get_extension_for_class(SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        sans: list[str] = []
    else:
        sans = [*san.get_values_for_type(RFC822Name), *san.get_values_for_type(UniformResourceIdentifier)]
        sans += [
            o.value.decode(errors="replace")
            for o in san.get_values_for_type(OtherName)
            if o.type_id == _OTHERNAME
        ]
    return sans, _issuer(cert)


def _issuer(cert: x509.Certificate) -> str | None:
    for oid in (_ISSUER_V2, _ISSUER_V1):
        try:
            value = cert.extensions.get_extension_for_oid(oid).value
        except x509.ExtensionNotFound:
            continue
        raw = getattr(value, "value", b"")
        if oid == _ISSUER_V2 and raw[:1] == b"\x0c":  # a DER UTF8String
            length, start = raw[1], 2
            if length & 0x80:
                count = length & 0x7F
                length, start = int.from_bytes(raw[2 : 2 + count], "big"), 2 + count
            return bytes(raw[start : start + length]).decode(errors="replace")
        return bytes(raw).decode(errors="replace")
    return None


@functools.lru_cache(maxsize=256)
def _subject_regex(pattern: str) -> re.Pattern[str]:
    parts = re.split(r"(\*\*|\*)", pattern)
    return re.compile(
        "".join("[^@]*" if p == "**" else "[^/@]*" if p == "*" else re.escape(p) for p in parts)
    )


def subject_matches(pattern: str, identity: str) -> bool:
    """Whether a certificate identity matches a trust rule's subject glob: ``*`` within one path
    segment, ``**`` across segments, and neither ever matches ``@``. So the ``FILE@REF`` split of
    a workflow identity cannot be faked: ``release.yml@refs/tags/*`` does not match a workflow file
    named ``release.yml@refs/tags/x.yml`` run from a branch."""
    return _subject_regex(pattern).fullmatch(identity) is not None


class GlobIdentities:
    """A sigstore VerificationPolicy: the certificate's issuer equals one identity's issuer, and one of
    its SANs matches that identity's subject glob."""

    def __init__(self, identities: Sequence[Identity]) -> None:
        self._identities = tuple(identities)

    def verify(self, cert: x509.Certificate) -> None:
        from sigstore.errors import VerificationError as SigstoreVerificationError

        sans, issuer = certificate_identity(cert)
        for identity in self._identities:
            if issuer == identity.issuer and any(subject_matches(identity.subject, san) for san in sans):
                return
        who = ", ".join(sans) or "no identity"
        raise SigstoreVerificationError(
            f"signed by {who} (issuer {issuer}), which no trusted identity matches"
        )


def exact_identity(identity: str, issuer: str) -> Any:
    from sigstore.verify import policy

    return policy.Identity(identity=identity, issuer=issuer)


def _load(raw: bytes, what: str) -> Any:
    from sigstore.models import Bundle, InvalidBundle

    try:
        return Bundle.from_json(raw)
    except (InvalidBundle, ValueError) as exc:
        raise VerificationError(f"{what}: not a valid Sigstore bundle: {_brief(exc)}") from exc


def _brief(exc: Exception) -> str:
    """One line from a parser's (possibly multi-line, pydantic-style) message."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip() and "errors.pydantic.dev" not in ln]
    return "; ".join(lines)[:400]


def verify_artifact_bundle(raw: bytes, subject_digest: str, verifier_: Any, policy: Any, what: str) -> Signed:
    """A keyless DSSE bundle about an OCI artifact: valid, by a trusted identity, about ``subject_digest``."""
    from sigstore.errors import Error as SigstoreError

    bundle = _load(raw, what)
    try:
        payload_type, payload = verifier_.verify_dsse(bundle, policy)
    except SigstoreError as exc:
        raise VerificationError(f"{what}: {exc}") from exc
    _check_statement(payload_type, payload, subject_digest, what)
    return _signed(bundle)


def verify_blob_bundle(
    raw: bytes, *, artifact: bytes | None, sha256: bytes | None, verifier_: Any, policy: Any, what: str
) -> Signed:
    """A keyless bundle about a file (or about a SHA-256 digest, when the file is not at hand)."""
    from sigstore.errors import Error as SigstoreError
    from sigstore.hashes import Hashed
    from sigstore_models.common.v1 import HashAlgorithm

    bundle = _load(raw, what)
    target: Any = (
        artifact if artifact is not None else Hashed(algorithm=HashAlgorithm.SHA2_256, digest=sha256 or b"")
    )
    try:
        if _is_dsse(raw):
            payload_type, payload = verifier_.verify_dsse(bundle, policy)
            digest = sha256 if sha256 is not None else hashlib.sha256(artifact or b"").digest()
            _check_statement(payload_type, payload, "sha256:" + digest.hex(), what)
        else:
            verifier_.verify_artifact(target, bundle, policy)
    except SigstoreError as exc:
        raise VerificationError(f"{what}: {exc}") from exc
    return _signed(bundle)


def _is_dsse(raw: bytes) -> bool:
    return b'"dsseEnvelope"' in raw


def _signed(bundle: Any) -> Signed:
    sans, issuer = certificate_identity(bundle.signing_certificate)
    return Signed(sans[0] if sans else "(no identity)", issuer)


__all__ = [
    "GlobIdentities",
    "certificate_identity",
    "exact_identity",
    "subject_matches",
    "verifier",
    "verify_artifact_bundle",
    "verify_blob_bundle",
]
