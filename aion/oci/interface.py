"""What a source of OCI artifacts offers: a remote registry (:mod:`aion.oci.registry`) and an image
layout directory (:mod:`aion.oci.layout`) both implement :class:`ArtifactStore`.

Contract, for every implementation: whatever is fetched by digest is verified against that digest
before it is returned or written, and sizes are capped (manifests at :data:`MAX_MANIFEST_BYTES`, blobs
at their descriptor's size and the caller's limit).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import BinaryIO, Protocol, Self

from aion.oci.model import Descriptor, Digest, Manifest, Reference

MAX_MANIFEST_BYTES = 4 * 1024 * 1024
"""The OCI distribution spec's recommended manifest size limit."""

Progress = Callable[[int], None]
"""Called with the number of bytes just received (or sent)."""


class ArtifactStore(Protocol):
    def resolve(self, ref: Reference) -> Manifest:
        """The manifest ``ref`` names (by tag or digest), its bytes verified against its digest."""
        ...

    def manifest(self, ref: Reference, digest: Digest) -> Manifest:
        """The manifest with ``digest`` in ``ref``'s repository, verified."""
        ...

    def fetch_blob(
        self,
        ref: Reference,
        descriptor: Descriptor,
        out: BinaryIO,
        *,
        limit: int,
        progress: Progress | None = None,
    ) -> None:
        """Stream the blob into ``out``; raise (after writing at most ``descriptor.size`` bytes) when
        it is larger than ``limit``, longer than its descriptor, or does not match its digest."""
        ...

    def referrers(self, ref: Reference, digest: Digest, artifact_type: str | None = None) -> list[Descriptor]:
        """Manifests whose subject is ``digest`` (from the referrers API, or the ``sha256-<hex>`` tag
        where there is none), optionally only those of ``artifact_type``."""
        ...

    def tag_digest(self, ref: Reference, tag: str) -> Digest | None:
        """The digest ``tag`` points at now, or None when there is no such tag."""
        ...

    def push_blob(self, ref: Reference, descriptor: Descriptor, data: BinaryIO) -> None:
        """Upload a blob (skipped when the target already has it)."""
        ...

    def push_manifest(self, ref: Reference, raw: bytes, media_type: str, tag: str | None) -> Digest:
        """Store a manifest, under ``tag`` when given; a manifest with a subject is also made
        findable as a referrer (through the tag fallback where the API is missing)."""
        ...

    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(self, *exc: object) -> None: ...


__all__ = ["MAX_MANIFEST_BYTES", "ArtifactStore", "Progress"]
