"""Verifying an OCI artifact against the trust policy: which signers its repository needs, whether
they signed exactly this digest, and whether an SBOM is attached.

Fails closed, like sigstore's verifiers: :func:`verify_artifact` returns a :class:`Verification` or
raises :class:`~aion.errors.VerificationError`; there is no "unknown". A repository that no trust
rule covers is refused, unless its registry is named in ``trust.unsafe_dev_registries``; that bypass
is called :data:`~Method.UNSAFE_DEV_EXCEPTION` so that nobody mistakes it for verification.

Signatures are looked for where cosign v3 writes them:

1. Sigstore bundles attached as OCI referrers (cosign's default): key-based bundles checked with the
   rule's keys, keyless ones through sigstore-python with the rule's identities;
2. the legacy ``sha256-<hex>.sig`` tag (``cosign sign --new-bundle-format=false``): ECDSA over the
   exact simple-signing payload bytes, whose ``docker-manifest-digest`` must be this digest.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import enum
import io
import json
import logging
from collections.abc import Sequence
from pathlib import Path

from aion.config.model import DevException, Trust, TrustRule
from aion.errors import EvidenceMissing, VerificationError
from aion.oci.interface import ArtifactStore
from aion.oci.model import Descriptor, Digest, Reference
from aion.trust import bundles, keyless
from aion.trust.keys import PublicKey, load_public_key

log = logging.getLogger("aion.trust")

SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
SIMPLE_SIGNING_TYPE = "cosign container image signature"
SBOM_TYPES = ("application/vnd.cyclonedx+json", "application/spdx+json")
MAX_PAYLOAD_BYTES = 64 * 1024
MAX_SBOM_BYTES = 64 * 1024 * 1024
MAX_BUNDLES = 16
"""Signature bundles checked per artifact (the newest ones); a registry cannot make aion fetch more."""
MAX_SBOMS = 4
MAX_PROBLEMS = 5


class Method(enum.StrEnum):
    COSIGN_KEY_LEGACY = "cosign-key-legacy"
    SIGSTORE_KEY = "sigstore-key"
    SIGSTORE_KEYLESS = "sigstore-keyless"
    UNSAFE_DEV_EXCEPTION = "unsafe-dev-exception"


@dataclasses.dataclass(frozen=True, slots=True)
class Verification:
    digest: Digest
    method: Method
    signer: str
    """Key fingerprint, or certificate identity; empty for the development exception."""
    issuer: str | None
    sbom_digest: Digest | None
    rule: str | None
    """The trust rule's match pattern that applied (None for the development exception)."""


class SbomMissing(EvidenceMissing):
    """The trust policy requires an SBOM for this module, and none is attached."""


def select_rule(trust: Trust, ref: Reference) -> TrustRule | None:
    """The first trust rule whose match covers ``ref``'s registry/repository."""
    return next((rule for rule in trust.rules if rule.matches(ref.name)), None)


def require_coverage(trust: Trust, ref: Reference) -> TrustRule | DevException:
    """The trust rule that covers ``ref``, else its registry's development exception; refused when
    there is neither (the policy is fail-closed)."""
    rule = select_rule(trust, ref)
    if rule is not None:
        return rule
    exception = next((e for e in trust.unsafe_dev_registries if e.registry == ref.registry), None)
    if exception is None:
        raise VerificationError(
            f"{ref.name}: no trust rule covers this repository, so nothing it serves is trusted",
            hint="add a rule to trust.rules in policies.yml with the keys or identities that sign it",
        )
    return exception


def verify_artifact(
    store: ArtifactStore,
    ref: Reference,
    digest: Digest,
    trust: Trust,
    *,
    config_dir: Path,
    keyless_verifier: object | None = None,
) -> Verification:
    """Verify the artifact ``digest`` in ``ref``'s repository under ``trust``; raise if it fails."""
    rule = require_coverage(trust, ref)
    if isinstance(rule, DevException):
        log.warning(
            "UNSAFE: accepting %s@%s WITHOUT signature verification: "
            "registry %s is a development exception (%s)",
            ref.name, digest, ref.registry, rule.reason,
        )  # fmt: skip
        sbom = _find_sbom(store, ref, digest, store.referrers(ref, digest), required=trust.require_sbom)
        return Verification(digest, Method.UNSAFE_DEV_EXCEPTION, "", None, sbom, None)
    keys = [load_public_key(Path(k) if Path(k).is_absolute() else config_dir / k) for k in rule.keys]
    problems: list[str] = []
    referrers = store.referrers(ref, digest)
    signed = _from_bundles(
        store,
        ref,
        referrers,
        digest,
        rule=rule,
        keys=keys,
        keyless_verifier=keyless_verifier,
        problems=problems,
    )
    if signed is None and keys:
        signed = _from_legacy_tag(store, ref, digest, keys, problems)
    if signed is None:
        detail = (
            "; ".join(problems[:MAX_PROBLEMS])
            + (f"; and {len(problems) - MAX_PROBLEMS} more" if len(problems) > MAX_PROBLEMS else "")
            if problems
            else "no signature was found (no Sigstore bundle, no .sig tag)"
        )
        raise VerificationError(
            f"{ref.name}@{digest}: not signed by a trusted signer: {detail}",
            hint=f"trust rule {rule.match!r} accepts "
            + (
                ", ".join(
                    [*(k.fingerprint for k in keys), *(f"{i.subject} ({i.issuer})" for i in rule.identities)]
                )
            ),
        )
    method, who = signed
    sbom = _find_sbom(store, ref, digest, referrers, required=rule.require_sbom)
    return Verification(digest, method, who.signer, who.issuer, sbom, rule.match)


def _from_bundles(
    store: ArtifactStore,
    ref: Reference,
    referrers: Sequence[Descriptor],
    digest: Digest,
    *,
    rule: TrustRule,
    keys: Sequence[PublicKey],
    keyless_verifier: object | None,
    problems: list[str],
) -> tuple[Method, bundles.Signed] | None:
    candidates = [d for d in referrers if (d.artifact_type or "").startswith(bundles.ARTIFACT_TYPE_PREFIX)]
    if len(candidates) > MAX_BUNDLES:
        problems.append(
            f"{len(candidates)} signature bundles are attached; only the newest {MAX_BUNDLES} are checked"
        )
        candidates = candidates[-MAX_BUNDLES:]
    for descriptor in candidates:
        what = f"bundle {descriptor.digest}"
        try:
            raw = _bundle_bytes(store, ref, descriptor, digest)
            bundle = bundles.parse(raw, what)
            if bundles.is_keyless(bundle):
                if not rule.identities:
                    raise VerificationError(f"{what}: keyless, but the trust rule names no identities")
                verifier = keyless_verifier or keyless.verifier()
                policy = keyless.GlobIdentities(rule.identities)
                return Method.SIGSTORE_KEYLESS, keyless.verify_artifact_bundle(
                    raw, str(digest), verifier, policy, what
                )
            if not keys:
                raise VerificationError(f"{what}: signed with a key, but the trust rule names no keys")
            return Method.SIGSTORE_KEY, bundles.verify_with_keys(
                bundle, keys, what, subject_digest=str(digest)
            )
        except VerificationError as exc:
            problems.append(exc.message)
    return None


def _bundle_bytes(store: ArtifactStore, ref: Reference, descriptor: Descriptor, digest: Digest) -> bytes:
    manifest = store.manifest(ref, descriptor.digest)
    if manifest.subject is None or manifest.subject.digest != digest:
        # A referrers fallback index is just a tag anyone with push rights can write.
        raise VerificationError(f"bundle manifest {descriptor.digest} is not attached to {digest}")
    layers = [layer for layer in manifest.layers if layer.media_type.startswith(bundles.ARTIFACT_TYPE_PREFIX)]
    if len(layers) != 1:
        raise VerificationError(f"bundle manifest {descriptor.digest} must have exactly one bundle layer")
    out = io.BytesIO()
    store.fetch_blob(ref, layers[0], out, limit=bundles.MAX_BUNDLE_BYTES)
    return out.getvalue()


def _from_legacy_tag(
    store: ArtifactStore, ref: Reference, digest: Digest, keys: Sequence[PublicKey], problems: list[str]
) -> tuple[Method, bundles.Signed] | None:
    tag = f"{digest.tag_fallback}.sig"
    signature_digest = store.tag_digest(ref, tag)
    if signature_digest is None:
        return None
    manifest = store.manifest(ref, signature_digest)
    for layer in manifest.layers[:MAX_BUNDLES]:
        if layer.media_type != SIMPLE_SIGNING:
            continue
        what = f"legacy signature {layer.digest} (tag {tag})"
        try:
            signature = base64.b64decode(layer.annotations.get(SIGNATURE_ANNOTATION, ""), validate=True)
        except binascii.Error:
            problems.append(f"{what}: the signature annotation is not base64")
            continue
        out = io.BytesIO()
        store.fetch_blob(ref, layer, out, limit=MAX_PAYLOAD_BYTES)
        payload = out.getvalue()
        # 1. The signature covers exactly these payload bytes, with a trusted key.
        key = next((k for k in keys if k.verifies(signature, payload)), None)
        if key is None:
            problems.append(f"{what}: the signature does not verify with a trusted key")
            continue
        # 2. The payload is a cosign signature of exactly this manifest digest.
        try:
            critical = json.loads(payload)["critical"]
            kind, signed_digest = critical["type"], critical["image"]["docker-manifest-digest"]
        except (ValueError, KeyError, TypeError):
            problems.append(f"{what}: the signed payload is not a cosign simple-signing document")
            continue
        if kind != SIMPLE_SIGNING_TYPE:
            problems.append(f"{what}: the signed payload is of type {kind!r}")
        elif signed_digest != str(digest):
            problems.append(f"{what}: the signature is for {signed_digest}, not {digest}")
        else:
            return Method.COSIGN_KEY_LEGACY, bundles.Signed(key.fingerprint)
    return None


def _find_sbom(
    store: ArtifactStore, ref: Reference, digest: Digest, referrers: Sequence[Descriptor], *, required: bool
) -> Digest | None:
    problems: list[str] = []
    candidates = [d for d in referrers if d.artifact_type in SBOM_TYPES][-MAX_SBOMS:]
    for descriptor in candidates:
        try:
            manifest = store.manifest(ref, descriptor.digest)
            if manifest.subject is None or manifest.subject.digest != digest:
                raise VerificationError(f"SBOM manifest {descriptor.digest} is not attached to {digest}")
            for layer in manifest.layers[:4]:
                if layer.media_type in SBOM_TYPES or layer.media_type == "application/json":
                    out = io.BytesIO()
                    store.fetch_blob(ref, layer, out, limit=MAX_SBOM_BYTES)
                    if _looks_like_sbom(out.getvalue()):
                        return descriptor.digest
        except VerificationError as exc:
            problems.append(exc.message)
    if required:
        raise SbomMissing(
            f"{ref.name}@{digest}: the trust policy requires an SBOM, and none is attached"
            + (f" ({'; '.join(problems[:3])})" if problems else ""),
            hint="push the module with --sbom FILE (CycloneDX or SPDX JSON)",
        )
    return None


def _looks_like_sbom(raw: bytes) -> bool:
    try:
        document = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return False
    return isinstance(document, dict) and (
        document.get("bomFormat") == "CycloneDX" or "spdxVersion" in document
    )


__all__ = [
    "SBOM_TYPES",
    "Method",
    "SbomMissing",
    "Verification",
    "require_coverage",
    "select_rule",
    "verify_artifact",
]
