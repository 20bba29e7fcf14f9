"""Signing a module with a key, as ``cosign sign --key`` (v3) does: a Sigstore bundle attached to the
module's manifest as an OCI referrer, readable by cosign and by aion's own verifier.

What cosign v3.1 attaches for ``cosign sign --key K --tlog-upload=false`` (the new bundle format), and so
what is made here:

- an in-toto v1 statement whose one subject is the manifest digest, of predicate type
  ``https://sigstore.dev/cosign/sign/v1`` with an empty predicate;
- signed as a DSSE envelope (ECDSA over the pre-authentication encoding, DER signature) in a Sigstore
  bundle v0.3 whose verification material is the key's hint (base64 of the SHA-256 of its
  SubjectPublicKeyInfo) and no transparency-log entry: the key is the trust anchor;
- uploaded as an image manifest with the empty config, the bundle as its one layer, artifact type
  ``application/vnd.dev.sigstore.bundle.v0.3+json``, cosign's annotations, and the module's manifest as
  its subject (a registry without the referrers API finds it through the ``sha256-<hex>`` tag; an
  image layout lists it in its index.json).

Keys: ECDSA P-256 (cosign's default) or P-384, as PEM (PKCS#8, encrypted or not, or SEC1), or in
cosign's own format (``ENCRYPTED SIGSTORE PRIVATE KEY``: the PKCS#8 key sealed with scrypt and NaCl
secretbox). Python's standard library has scrypt and ``cryptography`` has Poly1305, but neither has
XSalsa20, the stream cipher of secretbox: it is written here (:func:`_xsalsa20`), small and checked by
the authenticator, so a wrong password or a corrupted file is refused, never misread. Ed25519 and RSA
keys are refused: cosign signs with Ed25519ph, which aion's verifier does not check, and aion
verifies no RSA signatures.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import hmac
import io
import json
import os
import re
import secrets
import struct
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.poly1305 import Poly1305

from aion.errors import InputError, storage_error
from aion.inputs import human_size, read_bounded
from aion.oci.interface import ArtifactStore
from aion.oci.model import EMPTY_CONFIG, EMPTY_CONFIG_BYTES, MANIFEST, Descriptor, Digest, Reference
from aion.trust import bundles
from aion.trust.keys import PublicKey

BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
COSIGN_SIGN_PREDICATE = "https://sigstore.dev/cosign/sign/v1"
STATEMENT_V1 = "https://in-toto.io/Statement/v1"
CREATED = "org.opencontainers.image.created"
BUNDLE_CONTENT = "dev.sigstore.bundle.content"
BUNDLE_PREDICATE_TYPE = "dev.sigstore.bundle.predicateType"

COSIGN_KEY_TYPES = ("ENCRYPTED SIGSTORE PRIVATE KEY", "ENCRYPTED COSIGN PRIVATE KEY")
MAX_PRIVATE_KEY_BYTES = 64 << 10
"""A private key file is a few hundred bytes; this leaves room for comments and long headers."""
SCRYPT_PARAMS = ((32768, 8, 1), (65536, 8, 1), (131072, 8, 1))
"""The scrypt parameters cosign writes (legacy, standard, OWASP); others are refused, so that a
crafted key file cannot make aion spend gigabytes of memory before the password is checked."""
NEW_KEY_SCRYPT = (65536, 8, 1)

KEY_HINT = "give the private key of a cosign key pair (cosign.key) or a PEM ECDSA P-256 private key"

PasswordSource = Callable[[str], bytes]
"""Asked for the password of an encrypted key, with the key's name; returns it (``b""`` for none)."""


@dataclasses.dataclass(frozen=True)
class SigningKey:
    """An ECDSA private key to sign with, and where it came from (for messages)."""

    key: ec.EllipticCurvePrivateKey
    source: str

    @property
    def public(self) -> PublicKey:
        return PublicKey(self.key.public_key(), self.source)

    @property
    def hint(self) -> str:
        """What a bundle's ``publicKey.hint`` says, as cosign writes it: base64 of the SHA-256 of
        the public key's SubjectPublicKeyInfo."""
        der = self.key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return base64.b64encode(hashlib.sha256(der).digest()).decode("ascii")

    def sign(self, data: bytes) -> bytes:
        """A DER ECDSA signature over ``data`` (SHA-256 for P-256, SHA-384 for P-384), as cosign makes."""
        algorithm = hashes.SHA384() if self.key.curve.key_size >= 384 else hashes.SHA256()
        return self.key.sign(data, ec.ECDSA(algorithm))


@dataclasses.dataclass(frozen=True, slots=True)
class Signature:
    """What signing attached: the signed manifest, the referrer manifest and the bundle in it."""

    digest: Digest
    referrer: Digest
    bundle: Digest
    signer: str
    """The key's fingerprint (``sha256:<hex>`` of its SubjectPublicKeyInfo), as installs record it."""


# -- keys ---------------------------------------------------------------------------------------------

_PEM = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n(.*?)-----END \1-----", re.S)


def load_signing_key(path: Path, password: PasswordSource, *, what: str = "--key") -> SigningKey:
    """The private key in ``path``; ``password`` is asked only when the key is encrypted. InputError
    naming the file when it cannot be read, is not a supported private key, or will not decrypt."""
    data = read_bounded(
        path,
        MAX_PRIVATE_KEY_BYTES,
        what=what,
        hint=f"{KEY_HINT} (at most {human_size(MAX_PRIVATE_KEY_BYTES)})",
    )
    name = f"{what} {path}"
    # `openssl ecparam -genkey` writes the curve's parameters in a block before the key.
    block = next((b for b in _PEM.finditer(data) if b.group(1) != b"EC PARAMETERS"), None)
    if block is None:
        raise InputError(f"{name}: not a PEM private key", hint=KEY_HINT)
    kind = block.group(1).decode("ascii")
    if kind in COSIGN_KEY_TYPES:
        der = _open_cosign_key(block.group(2), password, name)
        try:
            key: object = serialization.load_der_private_key(der, None)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise InputError(f"{name}: the decrypted key is not a PKCS#8 private key", hint=KEY_HINT) from exc
    elif kind.endswith("PUBLIC KEY") or kind == "CERTIFICATE":
        raise InputError(
            f"{name} is a {'certificate' if kind == 'CERTIFICATE' else 'public key'}, not a private key",
            hint="sign with the private half of the key pair (cosign.key, not cosign.pub)",
        )
    elif kind in _PEM_PRIVATE_KEYS:
        key = _load_pem(block.group(0), password, name)
    else:
        raise InputError(f"{name}: a {kind!r} PEM block is not a supported private key", hint=KEY_HINT)
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name not in _CURVES:
        raise InputError(
            f"{name}: the key is {_describe(key)}; only ECDSA P-256 and P-384 keys can sign "
            "(cosign's default is P-256)",
            hint="make one with `aionctl module keygen` or `cosign generate-key-pair`",
        )
    return SigningKey(key, str(path))


_CURVES = ("secp256r1", "secp384r1")
_PEM_PRIVATE_KEYS = (
    "PRIVATE KEY",
    "ENCRYPTED PRIVATE KEY",
    "EC PRIVATE KEY",
    "RSA PRIVATE KEY",
    "DSA PRIVATE KEY",
)
"""PEM private keys ``cryptography`` reads (RSA and DSA only to say that they cannot sign here)."""


def _describe(key: object) -> str:
    from cryptography.hazmat.primitives.asymmetric import dsa, ed448, ed25519, rsa

    if isinstance(key, ec.EllipticCurvePrivateKey):
        return f"ECDSA {key.curve.name}"
    if isinstance(key, rsa.RSAPrivateKey):
        return "RSA"
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "Ed25519"
    if isinstance(key, ed448.Ed448PrivateKey):
        return "Ed448"
    return "DSA" if isinstance(key, dsa.DSAPrivateKey) else "of an unknown type"


def _load_pem(pem: bytes, password: PasswordSource, name: str) -> object:
    try:
        return serialization.load_pem_private_key(pem, None)
    except TypeError:
        pass  # encrypted: ask for the password
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise InputError(f"{name}: the PEM private key cannot be read (corrupt?)", hint=KEY_HINT) from exc
    secret = password(name)
    try:
        return serialization.load_pem_private_key(pem, secret)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise InputError(
            f"{name}: cannot decrypt the key: wrong password",
            hint="check AION_KEY_PASSWORD (or the password you typed)",
        ) from exc


def _open_cosign_key(body: bytes, password: PasswordSource, name: str) -> bytes:
    """The PKCS#8 DER inside a cosign key: JSON ``{kdf: scrypt, cipher: nacl/secretbox, ciphertext}``."""
    try:
        sealed = json.loads(base64.b64decode(b"".join(body.split()), validate=True))
        kdf, cipher = sealed["kdf"], sealed["cipher"]
        params = (int(kdf["params"]["N"]), int(kdf["params"]["r"]), int(kdf["params"]["p"]))
        salt = base64.b64decode(kdf["salt"], validate=True)
        nonce = base64.b64decode(cipher["nonce"], validate=True)
        box = base64.b64decode(sealed["ciphertext"], validate=True)
        names = (kdf["name"], cipher["name"])
    except (ValueError, KeyError, TypeError, RecursionError, binascii.Error) as exc:
        raise InputError(f"{name}: not a readable cosign private key (corrupt?)", hint=KEY_HINT) from exc
    if names != ("scrypt", "nacl/secretbox"):
        raise InputError(
            f"{name}: sealed with {names[0]!r} and {names[1]!r}; cosign keys use scrypt and nacl/secretbox"
        )
    if params not in SCRYPT_PARAMS:
        raise InputError(
            f"{name}: scrypt parameters N={params[0]}, r={params[1]}, p={params[2]} are not cosign's"
        )
    if len(nonce) != 24 or len(box) < 16:
        raise InputError(f"{name}: not a readable cosign private key (nonce or ciphertext)", hint=KEY_HINT)
    plain = _secretbox_open(box, nonce, _scrypt(password(name), salt, params))
    if plain is None:
        raise InputError(
            f"{name}: cannot decrypt the key: wrong password",
            hint="check AION_KEY_PASSWORD (cosign's COSIGN_PASSWORD for a key cosign made)",
        )
    return plain


def _scrypt(password: bytes, salt: bytes, params: tuple[int, int, int]) -> bytes:
    n, r, p = params
    return hashlib.scrypt(
        password, salt=salt, n=n, r=r, p=p, dklen=32, maxmem=128 * r * (n + p + 2) + (1 << 20)
    )


def seal_cosign_key(key: ec.EllipticCurvePrivateKey, password: bytes) -> bytes:
    """``key`` in cosign's format (``ENCRYPTED SIGSTORE PRIVATE KEY``), as ``cosign generate-key-pair``
    writes it: cosign signs with it as with a key of its own."""
    der = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    salt, nonce = secrets.token_bytes(32), secrets.token_bytes(24)
    n, r, p = NEW_KEY_SCRYPT
    sealed = {
        "kdf": {
            "name": "scrypt",
            "params": {"N": n, "r": r, "p": p},
            "salt": base64.b64encode(salt).decode(),
        },
        "cipher": {"name": "nacl/secretbox", "nonce": base64.b64encode(nonce).decode()},
        "ciphertext": base64.b64encode(
            _secretbox_seal(der, nonce, _scrypt(password, salt, NEW_KEY_SCRYPT))
        ).decode(),
    }
    body = base64.b64encode(json.dumps(sealed, separators=(",", ":")).encode()).decode()
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    kind = COSIGN_KEY_TYPES[0]
    return (f"-----BEGIN {kind}-----\n" + "\n".join(lines) + f"\n-----END {kind}-----\n").encode("ascii")


# -- NaCl secretbox (XSalsa20 and Poly1305), for cosign's key files ------------------------------------

_MASK = 0xFFFFFFFF
_SIGMA = struct.unpack("<4I", b"expand 32-byte k")
_QUARTERS = (
    (0, 4, 8, 12), (5, 9, 13, 1), (10, 14, 2, 6), (15, 3, 7, 11),  # columns
    (0, 1, 2, 3), (5, 6, 7, 4), (10, 11, 8, 9), (15, 12, 13, 14),  # rows
)  # fmt: skip


def _rounds(state: list[int]) -> list[int]:
    """The 20 rounds of the Salsa20 core."""
    x = list(state)
    for _ in range(10):
        for a, b, c, d in _QUARTERS:
            t = (x[a] + x[d]) & _MASK
            x[b] ^= ((t << 7) | (t >> 25)) & _MASK
            t = (x[b] + x[a]) & _MASK
            x[c] ^= ((t << 9) | (t >> 23)) & _MASK
            t = (x[c] + x[b]) & _MASK
            x[d] ^= ((t << 13) | (t >> 19)) & _MASK
            t = (x[d] + x[c]) & _MASK
            x[a] ^= ((t << 18) | (t >> 14)) & _MASK
    return x


def _state(key: bytes, middle: bytes) -> list[int]:
    k, m = struct.unpack("<8I", key), struct.unpack("<4I", middle)
    return [_SIGMA[0], *k[:4], _SIGMA[1], *m, _SIGMA[2], *k[4:], _SIGMA[3]]


def _xsalsa20(key: bytes, nonce: bytes, length: int) -> bytes:
    """``length`` bytes of the XSalsa20 key stream for a 32-byte key and a 24-byte nonce."""
    h = _rounds(_state(key, nonce[:16]))  # HSalsa20: the subkey, from the first 16 bytes of the nonce
    subkey = struct.pack("<8I", h[0], h[5], h[10], h[15], h[6], h[7], h[8], h[9])
    out = bytearray()
    for counter in range((length + 63) // 64):
        start = _state(subkey, nonce[16:] + struct.pack("<Q", counter))
        out += struct.pack("<16I", *((a + b) & _MASK for a, b in zip(_rounds(start), start, strict=True)))
    return bytes(out[:length])


def _secretbox_seal(message: bytes, nonce: bytes, key: bytes) -> bytes:
    stream = _xsalsa20(key, nonce, 32 + len(message))
    ciphertext = bytes(a ^ b for a, b in zip(message, stream[32:], strict=True))
    return Poly1305.generate_tag(stream[:32], ciphertext) + ciphertext


def _secretbox_open(box: bytes, nonce: bytes, key: bytes) -> bytes | None:
    """The message in ``box`` (tag, then ciphertext), or None when the tag does not verify."""
    tag, ciphertext = box[:16], box[16:]
    stream = _xsalsa20(key, nonce, 32 + len(ciphertext))
    if not hmac.compare_digest(Poly1305.generate_tag(stream[:32], ciphertext), tag):
        return None
    return bytes(a ^ b for a, b in zip(ciphertext, stream[32:], strict=True))


# -- a new key pair -----------------------------------------------------------------------------------


def generate_key_pair(prefix: Path, password: bytes) -> tuple[Path, Path]:
    """A new ECDSA P-256 key pair: ``PREFIX.key`` (cosign's format, sealed with ``password``; mode
    0600) and ``PREFIX.pub`` (PEM). Neither file may exist already: nothing is overwritten, and either
    both are written or neither."""
    key_path, pub_path = Path(f"{prefix}.key"), Path(f"{prefix}.pub")
    for path in (key_path, pub_path):
        if path.exists() or path.is_symlink():
            raise InputError(
                f"{path} exists; refusing to overwrite a key", hint="choose another --out PREFIX"
            )
    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    _write_new(key_path, seal_cosign_key(key, password), 0o600)
    try:
        _write_new(pub_path, public, 0o644)
    except BaseException:
        key_path.unlink(missing_ok=True)
        raise
    return key_path, pub_path


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Write ``path`` whole (a temporary file, then a link, which fails if the name was taken meanwhile)."""
    directory = path.parent
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.")
    except FileNotFoundError as exc:
        raise InputError(f"{path}: the directory {directory} does not exist", hint="create it first") from exc
    except OSError as exc:
        raise storage_error(exc, str(path)) from exc
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.link(tmp, path)
    except FileExistsError as exc:
        raise InputError(
            f"{path} exists; refusing to overwrite a key", hint="choose another --out PREFIX"
        ) from exc
    except OSError as exc:
        raise storage_error(exc, str(path)) from exc
    finally:
        Path(tmp).unlink(missing_ok=True)


# -- the signature: statement, bundle, referrer -------------------------------------------------------


def statement(digest: Digest) -> bytes:
    """The in-toto statement cosign signs for an OCI artifact: its digest, cosign's predicate type."""
    return json.dumps(
        {
            "_type": STATEMENT_V1,
            "subject": [{"digest": {digest.algorithm: digest.hex}, "annotations": {}}],
            "predicateType": COSIGN_SIGN_PREDICATE,
            "predicate": {},
        },
        separators=(",", ":"),
    ).encode()


def make_bundle(key: SigningKey, digest: Digest) -> bytes:
    """A Sigstore bundle v0.3 with a DSSE envelope over :func:`statement`, signed by ``key``."""
    payload = statement(digest)
    signature = key.sign(bundles.pae(bundles.IN_TOTO, payload))
    bundle = {
        "mediaType": BUNDLE_MEDIA_TYPE,
        "verificationMaterial": {"publicKey": {"hint": key.hint}},
        "dsseEnvelope": {
            "payload": base64.b64encode(payload).decode("ascii"),
            "payloadType": bundles.IN_TOTO,
            "signatures": [{"sig": base64.b64encode(signature).decode("ascii")}],
        },
    }
    return json.dumps(bundle, separators=(",", ":")).encode()


def referrer_manifest(subject: Descriptor, bundle: bytes, *, created: datetime) -> bytes:
    """The image manifest that attaches ``bundle`` to ``subject``, shaped as cosign writes it."""
    config = Descriptor.for_bytes(EMPTY_CONFIG, EMPTY_CONFIG_BYTES)
    layer = Descriptor.for_bytes(BUNDLE_MEDIA_TYPE, bundle)
    manifest: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": {**config.to_json(), "artifactType": BUNDLE_MEDIA_TYPE},
        "layers": [layer.to_json()],
        "annotations": {
            BUNDLE_CONTENT: "dsse-envelope",
            BUNDLE_PREDICATE_TYPE: COSIGN_SIGN_PREDICATE,
            CREATED: created.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
        "subject": Descriptor(subject.media_type, subject.digest, subject.size).to_json(),
        "artifactType": BUNDLE_MEDIA_TYPE,
    }
    return json.dumps(manifest, separators=(",", ":")).encode()


def sign_artifact(
    store: ArtifactStore, ref: Reference, key: SigningKey, *, now: datetime | None = None
) -> Signature:
    """Resolve ``ref`` to its manifest, sign that digest with ``key``, and attach the bundle to it
    as a referrer in the same repository (or image layout)."""
    target = store.resolve(ref)
    bundle = make_bundle(key, target.digest)
    # What was made must pass aion's own check before anyone else sees it.
    bundles.verify_with_keys(
        bundles.parse(bundle, "the new bundle"),
        [key.public],
        "the new bundle",
        subject_digest=str(target.digest),
    )
    raw = referrer_manifest(target.descriptor, bundle, created=now or datetime.now(UTC))
    store.push_blob(
        ref, Descriptor.for_bytes(EMPTY_CONFIG, EMPTY_CONFIG_BYTES), io.BytesIO(EMPTY_CONFIG_BYTES)
    )
    layer = Descriptor.for_bytes(BUNDLE_MEDIA_TYPE, bundle)
    store.push_blob(ref, layer, io.BytesIO(bundle))
    referrer = store.push_manifest(ref, raw, MANIFEST, None)
    return Signature(target.digest, referrer, layer.digest, key.public.fingerprint)


__all__ = [
    "BUNDLE_MEDIA_TYPE",
    "COSIGN_SIGN_PREDICATE",
    "PasswordSource",
    "Signature",
    "SigningKey",
    "generate_key_pair",
    "load_signing_key",
    "make_bundle",
    "referrer_manifest",
    "seal_cosign_key",
    "sign_artifact",
    "statement",
]
