"""Unpacking a module's tar+gzip layers without letting them write outside their directory.

Each member passes the standard library's ``data`` extraction filter (``tarfile.data_filter``, made for
exactly this): absolute paths, ``..``, links that leave the tree, device files and special files are
refused, and modes are made safe. On top of it, aion bounds what a layer may expand to (total bytes,
member count, and the ratio to its compressed size), so a decompression bomb stops at the limit
instead of filling the disk. Everything is checked before anything is written.
"""

from __future__ import annotations

import dataclasses
import tarfile
from pathlib import Path, PurePosixPath

from aion.errors import VerificationError

if not hasattr(tarfile, "data_filter"):  # pragma: no cover - Python 3.11.0-3.11.3
    raise ImportError("aion needs Python 3.11.4 or newer: safe tar extraction relies on tarfile.data_filter")


@dataclasses.dataclass(frozen=True, slots=True)
class UnpackLimits:
    max_bytes: int = 2 * 1024 * 1024 * 1024
    """Total size of the files a layer unpacks to."""
    max_members: int = 100_000
    max_ratio: int = 200
    """Unpacked size over compressed size, above which a layer counts as a decompression bomb
    (once it unpacks to more than :attr:`ratio_floor` bytes)."""
    ratio_floor: int = 16 * 1024 * 1024


def _check_name(member: tarfile.TarInfo, what: str) -> None:
    """Refuse what ``data_filter`` would quietly rewrite: an absolute name (it strips the slash) or a
    ``..`` component that happens to stay inside the tree. A module package has neither unless it was
    made to attack, so it is refused rather than repaired."""
    parts = PurePosixPath(member.name).parts
    if member.name.startswith(("/", "\\")) or ".." in parts or "\\" in member.name:
        raise VerificationError(f"{what}: refused {member.name!r}: absolute paths and '..' are not allowed")


def unpack(archive: Path, dest: Path, *, what: str, limits: UnpackLimits | None = None) -> list[str]:
    """Unpack ``archive`` into ``dest`` (created) and return the member names; raise
    VerificationError, writing nothing, when a member is unsafe or a limit is exceeded."""
    limits = limits or UnpackLimits()
    dest.mkdir(parents=True, exist_ok=True)
    compressed = max(archive.stat().st_size, 1)
    names: list[str] = []
    seen: set[str] = set()
    total = 0
    try:
        with tarfile.open(archive, mode="r:gz") as tar:
            # Pass 1: check every header, stopping at the first problem or limit.
            for member in tar:
                _check_name(member, what)
                # A layer adds files; it never replaces one (an earlier layer's, or its own).
                key = str(PurePosixPath(member.name))
                target = dest / key
                if key in seen or target.is_symlink() or (not member.isdir() and target.exists()):
                    raise VerificationError(f"{what}: refused {member.name!r}: it would replace another file")
                seen.add(key)
                try:
                    tarfile.data_filter(member, str(dest))
                except tarfile.FilterError as exc:
                    raise VerificationError(f"{what}: refused {member.name!r}: {exc}") from exc
                names.append(member.name)
                total += max(member.size, 0)
                if len(names) > limits.max_members:
                    raise VerificationError(f"{what}: more than {limits.max_members} entries")
                if total > limits.max_bytes:
                    raise VerificationError(f"{what}: unpacks to more than {limits.max_bytes} bytes")
                if total > limits.ratio_floor and total > compressed * limits.max_ratio:
                    raise VerificationError(
                        f"{what}: expands more than {limits.max_ratio}x "
                        f"({compressed} bytes to over {total}); refused as a decompression bomb"
                    )
            # Pass 2: extract, with the same filter applied again by tarfile itself.
            tar.extractall(dest, filter="data")
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise VerificationError(f"{what}: not a readable tar+gzip layer ({exc})") from exc
    return names


__all__ = ["UnpackLimits", "unpack"]
