"""OCI values: references, digests, descriptors and manifests, parsed and checked at the edge.

Everything fetched by digest is verified against that digest before it is used; :class:`Digest` is the
one place that knows how.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import posixpath
import re
from collections.abc import Mapping
from typing import Any

from aion.errors import UsageError, VerificationError

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
EMPTY_CONFIG = "application/vnd.oci.empty.v1+json"
EMPTY_CONFIG_BYTES = b"{}"
MANIFEST_TYPES = (MANIFEST, INDEX, DOCKER_MANIFEST, DOCKER_LIST)
TITLE = "org.opencontainers.image.title"
REF_NAME = "org.opencontainers.image.ref.name"

_DIGEST = re.compile(r"sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128}")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_REPOSITORY = re.compile(r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*")
_REGISTRY = re.compile(r"(?:[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*|\[[0-9A-Fa-f:]+\])(?::[0-9]{1,5})?")


@dataclasses.dataclass(frozen=True, slots=True, order=True)
class Digest:
    """A content digest, ``sha256:<hex>`` (or sha512)."""

    algorithm: str
    hex: str

    @classmethod
    def parse(cls, text: str) -> Digest:
        if not _DIGEST.fullmatch(text):
            raise UsageError(f"{text!r} is not a digest", hint="a digest looks like sha256:<64 hex digits>")
        algorithm, _, value = text.partition(":")
        return cls(algorithm, value)

    @classmethod
    def of(cls, data: bytes, algorithm: str = "sha256") -> Digest:
        return cls(algorithm, hashlib.new(algorithm, data).hexdigest())

    def hasher(self) -> Any:
        return hashlib.new(self.algorithm)

    def verify(self, data: bytes, what: str) -> None:
        """Raise VerificationError unless ``data`` hashes to this digest."""
        actual = hashlib.new(self.algorithm, data).hexdigest()
        if actual != self.hex:
            raise VerificationError(
                f"{what}: content does not match its digest {self}: got {self.algorithm}:{actual}",
                hint="the source served other bytes than the ones it named; do not trust it",
            )

    @property
    def tag_fallback(self) -> str:
        """The tag the referrers fallback uses for this digest: ``sha256-<hex>``."""
        return f"{self.algorithm}-{self.hex}"

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"


def _annotations(value: Any, what: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise VerificationError(f"{what}: annotations must map strings to strings")
    return dict(value)


@dataclasses.dataclass(frozen=True, slots=True)
class Descriptor:
    media_type: str
    digest: Digest
    size: int
    artifact_type: str | None = None
    annotations: Mapping[str, str] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_json(cls, data: Any, what: str) -> Descriptor:
        if not isinstance(data, dict):
            raise VerificationError(f"{what}: a descriptor must be an object")
        size, media_type, digest = data.get("size"), data.get("mediaType"), data.get("digest")
        if not isinstance(digest, str):
            raise VerificationError(f"{what}: malformed descriptor (no digest string)")
        try:
            parsed = Digest.parse(digest)
        except UsageError as exc:
            raise VerificationError(f"{what}: malformed descriptor ({exc.message})") from exc
        if isinstance(size, bool) or not isinstance(size, int) or size < 0 or not isinstance(media_type, str):
            raise VerificationError(f"{what}: malformed descriptor (size or mediaType)")
        artifact_type = data.get("artifactType")
        return cls(
            media_type,
            parsed,
            size,
            artifact_type if isinstance(artifact_type, str) else None,
            _annotations(data.get("annotations"), what),
        )

    @classmethod
    def for_bytes(cls, media_type: str, data: bytes, **extra: Any) -> Descriptor:
        return cls(media_type, Digest.of(data), len(data), **extra)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": str(self.digest), "size": self.size}
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out


@dataclasses.dataclass(frozen=True, slots=True)
class Manifest:
    """An image manifest (or an index, whose entries are in ``manifests``), with its exact bytes."""

    media_type: str
    raw: bytes
    digest: Digest
    config: Descriptor | None
    layers: tuple[Descriptor, ...]
    manifests: tuple[Descriptor, ...]
    subject: Descriptor | None
    artifact_type: str | None
    annotations: Mapping[str, str]

    @classmethod
    def parse(cls, raw: bytes, digest: Digest, what: str) -> Manifest:
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise VerificationError(f"{what}: the manifest is not JSON ({type(exc).__name__})") from exc
        if not isinstance(data, dict):
            raise VerificationError(f"{what}: the manifest is not a JSON object")
        media_type = data.get("mediaType") or (INDEX if "manifests" in data else MANIFEST)
        config, subject = data.get("config"), data.get("subject")
        layers, manifests = data.get("layers") or [], data.get("manifests") or []
        if not isinstance(layers, list) or not isinstance(manifests, list) or not isinstance(media_type, str):
            raise VerificationError(f"{what}: malformed manifest (mediaType, layers or manifests)")
        parsed_config = Descriptor.from_json(config, f"{what} config") if config is not None else None
        artifact_type = data.get("artifactType")
        if not isinstance(artifact_type, str) or not artifact_type:
            artifact_type = parsed_config.media_type if parsed_config else None
        return cls(
            media_type=media_type,
            raw=raw,
            digest=digest,
            config=parsed_config,
            layers=tuple(Descriptor.from_json(d, f"{what} layer") for d in layers),
            manifests=tuple(Descriptor.from_json(d, f"{what} entry") for d in manifests),
            subject=Descriptor.from_json(subject, f"{what} subject") if subject is not None else None,
            artifact_type=artifact_type,
            annotations=_annotations(data.get("annotations"), what),
        )

    @property
    def descriptor(self) -> Descriptor:
        return Descriptor(self.media_type, self.digest, len(self.raw), self.artifact_type)


@dataclasses.dataclass(frozen=True, slots=True)
class Reference:
    """Where an artifact is: ``registry/repository[:tag][@digest]`` or an OCI image layout
    ``oci:PATH[:TAG][@digest]``."""

    registry: str
    """Registry host[:port]; empty for an image layout."""
    repository: str
    """Repository path; the directory for an image layout."""
    tag: str | None
    digest: Digest | None

    @property
    def is_layout(self) -> bool:
        return not self.registry

    @property
    def name(self) -> str:
        """registry/repository, the part trust rules match (``oci:PATH`` for an image layout, as
        given on the command line, so a rule like ``oci:/srv/mirror/**`` covers a mirror)."""
        return f"oci:{self.repository}" if self.is_layout else f"{self.registry}/{self.repository}"

    def with_digest(self, digest: Digest) -> Reference:
        return dataclasses.replace(self, digest=digest)

    def __str__(self) -> str:
        base = self.name
        if self.tag:
            base += f":{self.tag}"
        if self.digest:
            base += f"@{self.digest}"
        return base

    @classmethod
    def parse(cls, text: str) -> Reference:
        """Parse a reference; Docker Hub short names (``redis``, ``team/app``) expand as docker does."""
        value = text.strip()
        example = "ghcr.io/team/module:1.0, ghcr.io/team/module@sha256:..., or oci:./dir:1.0"
        digest = None
        if "@" in value:
            value, _, digest_text = value.rpartition("@")
            digest = Digest.parse(digest_text)
        if value.startswith("oci:"):
            path, tag = value[4:], None
            head, sep, tail = path.rpartition(":")
            if sep and "/" not in tail and _TAG.fullmatch(tail):
                path, tag = head, tail
            if not path:
                raise UsageError(f"{text!r}: oci: needs a directory", hint=example)
            # Normalised, so that a rule for oci:/srv/mirror/** cannot be met by /srv/mirror/../x.
            return cls("", posixpath.normpath(path), tag, digest)
        slash, colon = value.rfind("/"), value.rfind(":")
        tag = None
        if colon > slash:
            value, tag = value[:colon], value[colon + 1 :]
            if not _TAG.fullmatch(tag):
                raise UsageError(f"{text!r}: {tag!r} is not a valid tag", hint=example)
        first, _, rest = value.partition("/")
        if rest and ("." in first or ":" in first or first == "localhost"):
            registry, repository = first, rest
        else:
            registry, repository = "docker.io", value if rest else f"library/{value}"
        if not _REGISTRY.fullmatch(registry) or not _REPOSITORY.fullmatch(repository):
            raise UsageError(f"{text!r} is not an OCI reference", hint=example)
        if tag is None and digest is None:
            tag = "latest"
        return cls(registry, repository, tag, digest)


__all__ = [
    "DOCKER_LIST",
    "DOCKER_MANIFEST",
    "EMPTY_CONFIG",
    "EMPTY_CONFIG_BYTES",
    "INDEX",
    "MANIFEST",
    "MANIFEST_TYPES",
    "REF_NAME",
    "TITLE",
    "Descriptor",
    "Digest",
    "Manifest",
    "Reference",
]
