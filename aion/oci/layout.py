"""OCI image layout directories (``oci:PATH[:TAG]``): the same interface as a registry, on disk, for
the demo and for air-gapped sites.

A layout is ``oci-layout``, ``index.json`` and ``blobs/<algorithm>/<hex>``. Tags are the
``org.opencontainers.image.ref.name`` annotations of index.json; referrers are the manifests listed
in index.json whose subject is the digest asked about (as ``oras cp -r --to-oci-layout`` writes
them). Reads are verified against their digests like registry reads: a layout copied from elsewhere
is no more trusted than a registry. Writes are atomic (temporary file, then rename).
"""

from __future__ import annotations

import errno
import io
import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any, BinaryIO

from aion.errors import RegistryError, VerificationError
from aion.oci.interface import MAX_MANIFEST_BYTES, Progress
from aion.oci.model import INDEX, MANIFEST_TYPES, REF_NAME, Descriptor, Digest, Manifest, Reference

CHUNK = 1024 * 1024
LAYOUT_VERSION = {"imageLayoutVersion": "1.0.0"}


class LayoutStore:
    """Artifacts in image-layout directories; the directory is the reference's ``repository``."""

    def __enter__(self) -> LayoutStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        return None

    # -- reading -----------------------------------------------------------------------------------

    def resolve(self, ref: Reference) -> Manifest:
        if ref.digest is not None:
            return self.manifest(ref, ref.digest)
        index = self._index(ref, must_exist=True)
        entries = [d for d in index if d.media_type in MANIFEST_TYPES and not _is_fallback_tag(d)]
        if ref.tag is not None:
            matches = [d for d in entries if d.annotations.get(REF_NAME) == ref.tag]
            if not matches:
                tags = sorted({d.annotations[REF_NAME] for d in entries if REF_NAME in d.annotations})
                raise RegistryError(
                    f"{ref}: no tag {ref.tag!r} in the layout", hint=f"tags: {', '.join(tags) or 'none'}"
                )
            return self.manifest(ref, matches[-1].digest)
        tagged = [d for d in entries if REF_NAME in d.annotations]
        if len(tagged) != 1:
            raise RegistryError(
                f"{ref}: name a tag or a digest; the layout holds {len(tagged)} tagged manifests"
            )
        return self.manifest(ref, tagged[0].digest)

    def manifest(self, ref: Reference, digest: Digest) -> Manifest:
        raw = self._read_small(ref, digest, MAX_MANIFEST_BYTES)
        digest.verify(raw, f"{ref} manifest {digest}")
        return Manifest.parse(raw, digest, f"{ref} manifest {digest}")

    def tag_digest(self, ref: Reference, tag: str) -> Digest | None:
        matches = [d for d in self._index(ref, must_exist=False) if d.annotations.get(REF_NAME) == tag]
        return matches[-1].digest if matches else None

    def fetch_blob(
        self,
        ref: Reference,
        descriptor: Descriptor,
        out: BinaryIO,
        *,
        limit: int,
        progress: Progress | None = None,
    ) -> None:
        what = f"{ref} blob {descriptor.digest}"
        if descriptor.size > limit:
            raise VerificationError(f"{what} is {descriptor.size} bytes; the limit is {limit}")
        hasher = descriptor.digest.hasher()
        received = 0
        try:
            with _open_regular(self._blob_path(ref, descriptor.digest)) as handle:
                while chunk := handle.read(CHUNK):
                    received += len(chunk)
                    if received > descriptor.size:
                        raise VerificationError(
                            f"{what}: the file is longer than the {descriptor.size} bytes named"
                        )
                    hasher.update(chunk)
                    out.write(chunk)
                    if progress is not None:
                        progress(len(chunk))
        except FileNotFoundError as exc:
            raise RegistryError(f"{what}: not in the layout") from exc
        except OSError as exc:
            raise RegistryError(f"{what}: cannot read: {exc.strerror}") from exc
        if received != descriptor.size or hasher.hexdigest() != descriptor.digest.hex:
            raise VerificationError(f"{what}: content does not match its descriptor (size or digest)")

    def referrers(self, ref: Reference, digest: Digest, artifact_type: str | None = None) -> list[Descriptor]:
        found: list[Descriptor] = []
        seen: set[Digest] = set()
        for entry in self._index(ref, must_exist=False):
            if entry.media_type not in MANIFEST_TYPES or entry.digest in seen:
                continue
            seen.add(entry.digest)
            candidates = [entry]
            if _is_fallback_tag(entry) and entry.annotations.get(REF_NAME) == digest.tag_fallback:
                candidates = list(self.manifest(ref, entry.digest).manifests)
            for candidate in candidates:
                try:
                    manifest = self.manifest(ref, candidate.digest)
                except RegistryError:
                    continue
                if manifest.subject is not None and manifest.subject.digest == digest:
                    kind = manifest.artifact_type or candidate.artifact_type
                    if artifact_type is None or kind == artifact_type:
                        found.append(Descriptor(candidate.media_type, candidate.digest, candidate.size, kind))
        return found

    # -- writing -----------------------------------------------------------------------------------

    def push_blob(self, ref: Reference, descriptor: Descriptor, data: BinaryIO) -> None:
        path = self._blob_path(ref, descriptor.digest)
        if path.exists():
            return
        self._init(ref)
        path.parent.mkdir(parents=True, exist_ok=True)
        hasher = descriptor.digest.hasher()
        data.seek(0)
        with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as tmp:
            try:
                while chunk := data.read(CHUNK):
                    hasher.update(chunk)
                    tmp.write(chunk)
                tmp.flush()
                os.fsync(tmp.fileno())
            except BaseException:
                Path(tmp.name).unlink(missing_ok=True)
                raise
        if hasher.hexdigest() != descriptor.digest.hex:
            Path(tmp.name).unlink(missing_ok=True)
            raise VerificationError(f"blob for {descriptor.digest} does not match its digest")
        Path(tmp.name).replace(path)

    def push_manifest(self, ref: Reference, raw: bytes, media_type: str, tag: str | None) -> Digest:
        digest = Digest.of(raw)
        manifest = Manifest.parse(raw, digest, f"{ref} manifest")
        self.push_blob(ref, Descriptor(media_type, digest, len(raw)), io.BytesIO(raw))
        entries = [
            e for e in self._raw_index(ref) if not (tag and e.get("annotations", {}).get(REF_NAME) == tag)
        ]
        entry = Descriptor(media_type, digest, len(raw), manifest.artifact_type).to_json()
        if tag:
            entry["annotations"] = {REF_NAME: tag}
        if tag or not any(e.get("digest") == str(digest) for e in entries):
            entries.append(entry)
        self._write_index(ref, entries)
        return digest

    # -- files ---------------------------------------------------------------------------------------

    def _root(self, ref: Reference) -> Path:
        return Path(ref.repository)

    def _blob_path(self, ref: Reference, digest: Digest) -> Path:
        # Digest.parse allows only hex: the path cannot leave the layout.
        return self._root(ref) / "blobs" / digest.algorithm / digest.hex

    def _read_small(self, ref: Reference, digest: Digest, limit: int) -> bytes:
        path = self._blob_path(ref, digest)
        try:
            with _open_regular(path) as handle:
                data = handle.read(limit + 1)
            if len(data) > limit:
                raise VerificationError(f"{ref} blob {digest} is over the {limit}-byte limit")
            return data
        except FileNotFoundError as exc:
            raise RegistryError(f"{ref}: {digest} is not in the layout") from exc
        except OSError as exc:
            raise RegistryError(f"{ref}: cannot read {digest}: {exc.strerror}") from exc

    def _raw_index(self, ref: Reference) -> list[dict[str, Any]]:
        path = self._root(ref) / "index.json"
        try:
            with _open_regular(path) as handle:
                raw = handle.read(MAX_MANIFEST_BYTES + 1)
            if len(raw) > MAX_MANIFEST_BYTES:
                raise VerificationError(f"{path} is over the {MAX_MANIFEST_BYTES}-byte limit")
            data = json.loads(raw)
        except FileNotFoundError:
            return []
        except (OSError, ValueError, RecursionError) as exc:
            raise RegistryError(f"{path}: not a readable OCI index ({exc})") from exc
        manifests = data.get("manifests") if isinstance(data, dict) else None
        return [m for m in manifests or [] if isinstance(m, dict)]

    def _index(self, ref: Reference, *, must_exist: bool) -> list[Descriptor]:
        if must_exist and not (self._root(ref) / "index.json").is_file():
            raise RegistryError(f"{ref}: {self._root(ref)} is not an OCI image layout (no index.json)")
        return [Descriptor.from_json(m, f"{ref} index.json") for m in self._raw_index(ref)]

    def _init(self, ref: Reference) -> None:
        root = self._root(ref)
        root.mkdir(parents=True, exist_ok=True)
        marker = root / "oci-layout"
        if not marker.exists():
            _atomic_write(marker, json.dumps(LAYOUT_VERSION).encode())
        if not (root / "index.json").exists():
            self._write_index(ref, [])

    def _write_index(self, ref: Reference, entries: list[dict[str, Any]]) -> None:
        self._root(ref).mkdir(parents=True, exist_ok=True)
        index = {"schemaVersion": 2, "mediaType": INDEX, "manifests": entries}
        _atomic_write(self._root(ref) / "index.json", json.dumps(index, indent=2).encode())


def _open_regular(path: Path) -> BinaryIO:
    """``path`` opened for reading if it is a regular file itself: not a link (to /dev/zero, say),
    a FIFO (which would block) or a device. OSError otherwise."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _is_fallback_tag(descriptor: Descriptor) -> bool:
    name = descriptor.annotations.get(REF_NAME, "")
    return name.startswith("sha256-") and len(name) == 71


def _atomic_write(path: Path, data: bytes) -> None:
    with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as tmp:
        tmp.write(data)
        tmp.flush()
        os.fsync(tmp.fileno())
    Path(tmp.name).replace(path)


__all__ = ["LayoutStore"]
