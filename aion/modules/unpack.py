"""Unpacking a module's tar+gzip layers without letting them write outside their directory.

A layer may hold directories and regular files, nothing else: symbolic links, hard links, device
files and other special files are refused, as are absolute names, ``..`` components, names that
collide (with another member, or with a file an earlier layer or the installer put there) and the
installer's own names (``blobs/``, ``agent.yaml``, ``install.json``). Without links in the tree,
every member's path is its directory plus a plain relative name, so nothing can be redirected
outside it; this does not depend on the version of ``tarfile``'s ``data`` filter, which is still
applied (it also makes modes safe), but several of whose link checks could be bypassed before
Python 3.11.13. On top of that, aion bounds what a layer may expand to (total bytes, member count, and
the ratio to its compressed size), so a decompression bomb stops at the limit instead of filling the
disk. Every header is checked before anything is written.
"""

from __future__ import annotations

import dataclasses
import tarfile
from pathlib import Path, PurePosixPath

from aion.errors import VerificationError

if not hasattr(tarfile, "data_filter"):  # pragma: no cover - Python 3.11.0-3.11.3
    raise ImportError("aion needs Python 3.11.4 or newer: safe tar extraction relies on tarfile.data_filter")


RESERVED = frozenset({"blobs", "agent.yaml", "install.json"})
"""Top-level names the installer writes itself; no layer may provide them."""


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
    if member.name.startswith(("/", "\\")) or ".." in parts or "\\" in member.name or "\0" in member.name:
        raise VerificationError(f"{what}: refused {member.name!r}: absolute paths and '..' are not allowed")
    if parts and parts[0] in RESERVED:
        raise VerificationError(f"{what}: refused {member.name!r}: {parts[0]} is the installer's own name")


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
                if not (member.isfile() or member.isdir()):
                    kind = "link" if member.issym() or member.islnk() else "special file"
                    raise VerificationError(
                        f"{what}: refused {member.name!r}: a {kind} "
                        "(module layers hold regular files and directories only)"
                    )
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
