"""Keyless (Sigstore) verification, offline, with the trust roots sigstore-python ships or one the
user gives.

The verifier is :class:`~aion.trust.sigstore_verifier.SpecVerifier`: sigstore-python's, which checks
the certificate chain to Fulcio, the transparency-log entry and the signed timestamps, with the
client-specification rules it lacks added by aion. Here aion adds what comes before and after it:
the bundle rules sigstore-python only warns about (a root CA inside the bundle), the identity
policy, and the in-toto subject check. Trust rules name identities by issuer (exactly) and subject
(a glob, because release workflows sign from many tags), which sigstore's own ``Identity`` policy,
an exact match, cannot express; :class:`GlobIdentities` does that.
"""

from __future__ import annotations

import base64
import binascii
import functools
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
    """A Sigstore verifier (aion's :class:`~aion.trust.sigstore_verifier.SpecVerifier`) for production,
    staging, or the trusted_root.json at ``trusted_root``, offline."""
    from sigstore.errors import Error as SigstoreError

    from aion.trust import trusted_roots
    from aion.trust.sigstore_verifier import SpecVerifier

    if trusted_root is not None:
        root = trusted_roots.from_file(trusted_root, what="--trusted-root")
        where = f"--trusted-root {trusted_root}"
    else:
        root = trusted_roots.shipped(staging=staging)
        where = "Sigstore's staging trusted root" if staging else "Sigstore's trusted root"
    try:
        return SpecVerifier(root)
    except (SigstoreError, ValueError) as exc:  # no log, no CA, a key or certificate that does not load
        raise InputError(
            f"{where}: not a usable Sigstore trusted root: {trusted_roots.one_line(exc)}"
        ) from exc


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
    from sigstore.errors import Error as SigstoreError
    from sigstore.models import Bundle

    _refuse_root_in_chain(raw, what)
    # sigstore-python only warns about a root CA in the chain; aion has refused such a bundle above.
    logging.getLogger("sigstore.models").setLevel(logging.ERROR)
    try:
        return Bundle.from_json(raw)
    except (SigstoreError, ValueError) as exc:  # InvalidBundle, or a signed timestamp that cannot be parsed
        raise VerificationError(f"{what}: not a valid Sigstore bundle: {_brief(exc)}") from exc


def _refuse_root_in_chain(raw: bytes, what: str) -> None:
    """The bundle format's client rule: a bundle's certificate chain must not carry a root CA. The
    root of trust is the trusted root's; a root in the bundle is at best unused, at worst a lure."""
    import json

    try:
        document = json.loads(raw)
        certificates = document["verificationMaterial"]["x509CertificateChain"]["certificates"]
        chain = [x509.load_der_x509_certificate(base64.b64decode(c["rawBytes"])) for c in certificates]
    except (ValueError, KeyError, TypeError, binascii.Error):
        return  # no chain, or a malformed one: sigstore-python's parser says which
    for certificate in chain[1:]:
        if _is_root_ca(certificate):
            raise VerificationError(
                f"{what}: not a valid Sigstore bundle: its certificate chain includes a root CA "
                f"({certificate.subject.rfc4514_string()}), which a bundle must never carry",
                hint="the root of trust comes from the trusted root, not from the bundle",
            )


def _is_root_ca(certificate: x509.Certificate) -> bool:
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return False
    return constraints.ca and certificate.issuer == certificate.subject


def _brief(exc: Exception) -> str:
    """One line from a parser's or verifier's (possibly multi-line, pydantic-style) message."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip() and "errors.pydantic.dev" not in ln]
    return "; ".join(lines)[:400]


def verify_artifact_bundle(raw: bytes, subject_digest: str, verifier_: Any, policy: Any, what: str) -> Signed:
    """A keyless DSSE bundle about an OCI artifact: valid, by a trusted identity, about ``subject_digest``."""
    from sigstore.errors import Error as SigstoreError

    bundle = _load(raw, what)
    try:
        payload_type, payload = verifier_.verify_dsse(bundle, policy)
    except (SigstoreError, VerificationError) as exc:
        raise VerificationError(f"{what}: {_brief(exc)}") from exc
    _check_statement(payload_type, payload, subject_digest, what)
    return _signed(bundle)


def verify_blob_bundle(raw: bytes, *, sha256: bytes, verifier_: Any, policy: Any, what: str) -> Signed:
    """A keyless bundle about a file, given the file's SHA-256: a message signature over it, or a DSSE
    in-toto statement naming it as a subject."""
    from sigstore.errors import Error as SigstoreError
    from sigstore.hashes import Hashed
    from sigstore_models.common.v1 import HashAlgorithm

    bundle = _load(raw, what)
    try:
        if not _is_dsse(bundle):
            verifier_.verify_artifact(Hashed(algorithm=HashAlgorithm.SHA2_256, digest=sha256), bundle, policy)
            return _signed(bundle)
        payload_type, payload = verifier_.verify_dsse(bundle, policy)
    except (SigstoreError, VerificationError) as exc:
        raise VerificationError(f"{what}: {_brief(exc)}") from exc
    _check_statement(payload_type, payload, "sha256:" + sha256.hex(), what)
    return _signed(bundle)


def _is_dsse(bundle: Any) -> bool:
    import json

    return "dsseEnvelope" in json.loads(bundle.to_json())


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
