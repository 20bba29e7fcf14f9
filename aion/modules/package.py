"""The module package format, and building one from a directory.

A module is an OCI artifact of type :data:`ARTIFACT_TYPE`:

- config: the ``AgentPackage`` manifest (``agent.yaml``), exactly as written, media type
  :data:`MANIFEST_TYPE`;
- a layer for the code: the ``.wasm`` file (:data:`WASM_TYPE`), or the ``bundle/`` directory of a
  subprocess module as a tar+gzip (:data:`BUNDLE_TYPE`);
- a layer with the I/O schemas the manifest names, as a tar+gzip (:data:`SCHEMAS_TYPE`), when it
  names any.

Packages are reproducible: tar entries are sorted, with zero timestamps and owners and normalised
modes, and gzip headers carry no time, so the same directory always gives the same digest.
An SBOM (CycloneDX or SPDX JSON) is attached as a referrer of the module's manifest.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import json
import tarfile
from pathlib import Path, PurePosixPath
from typing import Any

from aion.config.findings import Severity
from aion.config.kinds import Kind
from aion.config.validate import Options, Source, check_file
from aion.errors import FindingsError, InputError
from aion.inputs import read_bounded
from aion.oci.interface import ArtifactStore
from aion.oci.model import EMPTY_CONFIG, EMPTY_CONFIG_BYTES, MANIFEST, TITLE, Descriptor, Digest, Reference

ARTIFACT_TYPE = "application/vnd.aion.module.v1"
MANIFEST_TYPE = "application/vnd.aion.module.manifest.v1+yaml"
WASM_TYPE = "application/wasm"
BUNDLE_TYPE = "application/vnd.aion.module.bundle.v1.tar+gzip"
SCHEMAS_TYPE = "application/vnd.aion.module.schemas.v1.tar+gzip"
CODE_TYPES = (WASM_TYPE, BUNDLE_TYPE)
MANIFEST_FILE = "agent.yaml"
SCHEMAS_FILE = "schemas.tar.gz"
BUNDLE_FILE = "bundle.tar.gz"
"""Layer titles, so that ``oras pull`` saves every layer under a telling name."""
MAX_MANIFEST_BYTES = 1 << 20
"""Largest ``agent.yaml`` read."""
MAX_CODE_BYTES = 512 << 20
"""Largest ``.wasm`` file read into a package (the install side caps what it unpacks, 2 GiB)."""
MAX_SBOM_BYTES = 64 << 20
"""Largest SBOM document read."""
VERSION = "org.opencontainers.image.version"
SBOM_CYCLONEDX = "application/vnd.cyclonedx+json"
SBOM_SPDX = "application/spdx+json"


@dataclasses.dataclass(frozen=True)
class Blob:
    descriptor: Descriptor
    data: bytes


@dataclasses.dataclass(frozen=True)
class Package:
    """A built module: the OCI manifest and every blob it names."""

    name: str
    version: str
    runtime: str
    manifest: bytes
    blobs: tuple[Blob, ...]

    @property
    def digest(self) -> Digest:
        return Digest.of(self.manifest)

    @property
    def descriptor(self) -> Descriptor:
        return Descriptor(MANIFEST, self.digest, len(self.manifest), ARTIFACT_TYPE)


def read_manifest(directory: Path) -> tuple[bytes, dict[str, Any]]:
    """``agent.yaml`` of a module directory, checked against the AgentPackage schema."""
    path = directory / MANIFEST_FILE
    if not path.exists():
        raise InputError(
            f"{directory}: no {MANIFEST_FILE}", hint="a module directory holds its AgentPackage manifest"
        )
    raw = read_bounded(path, MAX_MANIFEST_BYTES, what="the manifest")
    kind, document, findings = check_file(Source(str(path), raw, Kind.AGENT_PACKAGE), Options(strict=True))
    errors = [f for f in findings if f.severity is Severity.ERROR]
    if document is None or errors:
        first = errors[0] if errors else None
        where = f"{first.file}:{first.line}:{first.column}: {first.message}" if first else "unreadable"
        raise FindingsError(
            f"{path} is not a valid AgentPackage manifest ({len(errors)} error(s)); first: {where}",
            hint=f"aionctl validate --kind agent-package {path}",
        )
    assert kind is Kind.AGENT_PACKAGE
    return raw, document.data


def build(directory: Path) -> Package:
    """Build the module in ``directory`` (see the module docstring for its layout)."""
    raw, manifest = read_manifest(directory)
    name, version = manifest["metadata"]["name"], str(manifest["metadata"]["version"])
    runtime = manifest["runtime"]["type"]
    config = Blob(Descriptor.for_bytes(MANIFEST_TYPE, raw), raw)
    layers = [_code_layer(directory, runtime)]
    schema_files = [
        p
        for p in (manifest.get("entrypoints", {}).get("schema", {}).get(k) for k in ("input", "output"))
        if p
    ]
    if schema_files:
        data = _tar(directory, schema_files)
        layers.append(Blob(Descriptor.for_bytes(SCHEMAS_TYPE, data, annotations={TITLE: SCHEMAS_FILE}), data))
    document = {
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "artifactType": ARTIFACT_TYPE,
        "config": config.descriptor.to_json(),
        "layers": [layer.descriptor.to_json() for layer in layers],
        "annotations": {TITLE: name, VERSION: version},
    }
    return Package(name, version, runtime, _canonical(document), (config, *layers))


def _code_layer(directory: Path, runtime: str) -> Blob:
    if runtime == "wasm":
        found = sorted(p for p in directory.glob("*.wasm") if p.is_file())
        if len(found) != 1:
            raise InputError(
                f"{directory}: a wasm module needs exactly one .wasm file next to {MANIFEST_FILE}; "
                f"found {len(found)}"
            )
        data = read_bounded(found[0], MAX_CODE_BYTES, what="the module")
        if not data.startswith(b"\0asm"):
            raise InputError(f"{found[0]}: not a WebAssembly binary (no \\0asm header)")
        return Blob(Descriptor.for_bytes(WASM_TYPE, data, annotations={TITLE: found[0].name}), data)
    bundle = directory / "bundle"
    if not bundle.is_dir():
        raise InputError(f"{directory}: a subprocess module keeps its files in bundle/")
    files = sorted(str(p.relative_to(directory)) for p in bundle.rglob("*") if p.is_file() or p.is_symlink())
    data = _tar(directory, files)
    return Blob(Descriptor.for_bytes(BUNDLE_TYPE, data, annotations={TITLE: BUNDLE_FILE}), data)


def _tar(root: Path, names: list[str]) -> bytes:
    """A reproducible tar+gzip of ``names`` (relative to ``root``), which must stay inside ``root``."""
    raw = io.BytesIO()
    base = root.resolve()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name in sorted(set(names)):
            pure = PurePosixPath(name)
            path = root / pure
            if pure.is_absolute() or ".." in pure.parts or not path.resolve().is_relative_to(base):
                raise InputError(f"{root}: {name!r} is outside the module directory")
            info = archive.gettarinfo(str(path), arcname=str(pure))
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            info.mode = 0o755 if info.mode & 0o111 else 0o644
            if info.isfile():
                with path.open("rb") as handle:
                    archive.addfile(info, handle)
            else:
                raise InputError(
                    f"{path}: only regular files can be packaged (links and special files are refused "
                    "on install); copy the file it points to instead"
                )
    return gzip.compress(raw.getvalue(), mtime=0)


def _canonical(document: dict[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()


def sbom_blob(path: Path) -> Blob:
    """An SBOM file as a blob of the right media type (CycloneDX or SPDX JSON, recognised by content)."""
    data = read_bounded(path, MAX_SBOM_BYTES, what="the SBOM")
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: the SBOM is not JSON") from exc
    if isinstance(document, dict) and document.get("bomFormat") == "CycloneDX":
        media_type = SBOM_CYCLONEDX
    elif isinstance(document, dict) and "spdxVersion" in document:
        media_type = SBOM_SPDX
    else:
        raise InputError(f"{path}: not a CycloneDX or SPDX JSON document")
    return Blob(Descriptor.for_bytes(media_type, data, annotations={TITLE: path.name}), data)


def referrer_manifest(subject: Descriptor, blob: Blob) -> bytes:
    """An artifact manifest that attaches ``blob`` to ``subject`` (its SBOM, for example)."""
    empty = Descriptor.for_bytes(EMPTY_CONFIG, EMPTY_CONFIG_BYTES)
    return _canonical(
        {
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "artifactType": blob.descriptor.media_type,
            "config": empty.to_json(),
            "layers": [blob.descriptor.to_json()],
            "subject": {"mediaType": subject.media_type, "digest": str(subject.digest), "size": subject.size},
        }
    )


def publish(store: ArtifactStore, ref: Reference, package: Package, *, sbom: Path | None = None) -> Digest:
    """Push the package's blobs and manifest (tagged with ``ref``'s tag), then its SBOM as a referrer."""
    for blob in package.blobs:
        store.push_blob(ref, blob.descriptor, io.BytesIO(blob.data))
    digest = store.push_manifest(ref, package.manifest, MANIFEST, ref.tag)
    if sbom is not None:
        attached = sbom_blob(sbom)
        empty = Descriptor.for_bytes(EMPTY_CONFIG, EMPTY_CONFIG_BYTES)
        store.push_blob(ref, empty, io.BytesIO(EMPTY_CONFIG_BYTES))
        store.push_blob(ref, attached.descriptor, io.BytesIO(attached.data))
        store.push_manifest(ref, referrer_manifest(package.descriptor, attached), MANIFEST, None)
    return digest


__all__ = [
    "ARTIFACT_TYPE",
    "BUNDLE_TYPE",
    "CODE_TYPES",
    "MANIFEST_FILE",
    "MANIFEST_TYPE",
    "SCHEMAS_TYPE",
    "WASM_TYPE",
    "Blob",
    "Package",
    "build",
    "publish",
    "read_manifest",
    "referrer_manifest",
    "sbom_blob",
]
