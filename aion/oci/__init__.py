"""aion.oci: a small, verifying OCI client for registries and image-layout directories.

Use :func:`open_store` to get the :class:`~aion.oci.interface.ArtifactStore` for a reference.
"""

from __future__ import annotations

from aion.oci.interface import ArtifactStore
from aion.oci.model import Descriptor, Digest, Manifest, Reference


def open_store(
    ref: Reference, *, plain_http: frozenset[str] = frozenset(), timeout: float = 30.0
) -> ArtifactStore:
    """The store that serves ``ref``: a layout directory for ``oci:PATH``, else a registry client."""
    if ref.is_layout:
        from aion.oci.layout import LayoutStore

        return LayoutStore()
    from aion.oci.registry import RegistryClient

    return RegistryClient(plain_http=plain_http, timeout=timeout)


__all__ = ["ArtifactStore", "Descriptor", "Digest", "Manifest", "Reference", "open_store"]
