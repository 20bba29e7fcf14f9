"""Public keys that signatures are checked against (cosign key pairs are ECDSA P-256 by default), and
where a trust rule's key files may be read from."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, utils

from aion.config.model import trust_key_path, within
from aion.errors import InputError, VerificationError
from aion.inputs import human_size, read_bounded


@dataclasses.dataclass(frozen=True)
class PublicKey:
    key: ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey
    source: str
    """Where it came from (a path), for messages."""

    @property
    def fingerprint(self) -> str:
        """``sha256:<hex>`` of the key's SubjectPublicKeyInfo: how findings and lock files name a key."""
        der = self.key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return "sha256:" + hashlib.sha256(der).hexdigest()

    @property
    def is_ed25519(self) -> bool:
        """Ed25519 signs a whole message, never a digest computed elsewhere."""
        return isinstance(self.key, ed25519.Ed25519PublicKey)

    def verifies(self, signature: bytes, data: bytes) -> bool:
        """Whether ``signature`` is this key's over ``data`` (ECDSA with SHA-256 or SHA-384 by curve)."""
        try:
            if isinstance(self.key, ed25519.Ed25519PublicKey):
                self.key.verify(signature, data)
            else:
                self.key.verify(signature, data, ec.ECDSA(_hash_for(self.key)))
        except (InvalidSignature, ValueError):
            return False
        return True

    def verifies_digest(self, signature: bytes, digest: bytes) -> bool:
        """Like :meth:`verifies`, over a SHA-256 digest computed elsewhere (ECDSA keys only)."""
        if isinstance(self.key, ed25519.Ed25519PublicKey):
            return False
        try:
            self.key.verify(signature, digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
        except (InvalidSignature, ValueError):
            return False
        return True


def _hash_for(key: ec.EllipticCurvePublicKey) -> hashes.HashAlgorithm:
    return hashes.SHA384() if key.curve.key_size >= 384 else hashes.SHA256()


MAX_PUBLIC_KEY_BYTES = 64 << 10
"""A PEM public key is a few hundred bytes; even a long certificate-sized one fits many times over."""


def load_public_key(path: Path, *, what: str = "public key") -> PublicKey:
    """A PEM public key (``cosign.pub``), read bounded; InputError when it cannot be read or is not
    one. ``what`` names it in errors (``"--key"``, ``"trust rule key"``)."""
    data = read_bounded(
        path,
        MAX_PUBLIC_KEY_BYTES,
        what=what,
        hint=f"give the .pub file of a cosign key pair (PEM, at most {human_size(MAX_PUBLIC_KEY_BYTES)})",
    )
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise InputError(
            f"{what} {path}: not a PEM public key", hint="give the .pub file of a cosign key pair"
        ) from exc
    if not isinstance(key, ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey):
        raise InputError(
            f"{what} {path}: only ECDSA and Ed25519 keys are supported (cosign's are ECDSA P-256)"
        )
    return PublicKey(key, str(path))


def trust_key_file(key: str, config_dir: Path, roots: Sequence[Path] | None) -> Path:
    """The real path of a trust rule's key ``key`` (relative to ``config_dir``, links followed).

    With ``roots`` (aiond's config directory and ``--trust-keys-dir``: :attr:`Trust.key_roots
    <aion.config.model.Trust.key_roots>`), a key that resolves anywhere else is refused with a
    VerificationError, before it is opened: a policy uploaded to aiond must not make it read any file
    of the host. Reading the real path afterwards means a link swapped later is not followed."""
    real = trust_key_path(key, config_dir)
    if real is None:
        raise InputError(f"trust rule key {key!r} is not a file name", hint="fix trust.rules in policies.yml")
    if roots is not None and not within(real, roots):
        where = f" resolves to {str(real)!r}," if str(real) != key else " is"
        raise VerificationError(
            f"trust rule key {key!r}{where} outside the directories aiond reads keys from "
            f"({', '.join(str(r) for r in roots)}); refused",
            hint="copy the key into aiond's config directory and name it relatively, "
            "or into its --trust-keys-dir",
        )
    return real


__all__ = ["MAX_PUBLIC_KEY_BYTES", "PublicKey", "load_public_key", "trust_key_file"]
