"""The module store: installed modules by digest, the lock file, quarantine, and the audit log.

Layout of a store directory::

    modules/sha256/<hex>/   one installed module: its files, the OCI blobs it came from, install.json
    aion.lock               which digest each module name is installed at, who signed it, and when
    quarantine/<id>/        whatever a refused install fetched, with reason.json saying why
    audit.jsonl             audit events of local installs and removals (aionctl's; aiond audits to
                            its own event sink)
    .staging/               installs in progress (a crash leaves only this behind)

Every change is atomic: a module directory appears by one rename, the lock file is replaced by one
rename after fsync, and writers serialise on an exclusive lock (``.lock``), so no reader ever sees a
half-written module or lock, and a refused install leaves the store and the lock as they were.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from aion.errors import InputError
from aion.eventlog import EventLog, EventSink
from aion.oci.model import Digest

LOCK_FILE = "aion.lock"
API_VERSION = "aion/v1"


def default_store() -> Path:
    """``$AION_MODULE_STORE``, else ``$XDG_DATA_HOME/aion/modules``, else ``~/.local/share/aion/modules``."""
    if os.environ.get("AION_MODULE_STORE"):
        return Path(os.environ["AION_MODULE_STORE"])
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "aion" / "modules"


def tree_digest(root: Path, known: Mapping[str, str] | None = None) -> str:
    """A digest of the module's files (paths and contents), to notice later changes.

    ``blobs/`` is left out: its files are named by their own digests, and :func:`blob_problems`
    checks them. ``known`` maps a relative path to the SHA-256 (hex) of its content when it was
    just computed (a wasm file linked from a blob that was hashed as it arrived), so an install does
    not read a large module a second time.
    """
    outer = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink()):
        relative = path.relative_to(root).as_posix()
        if relative == "install.json" or relative.startswith("blobs/"):
            continue
        value = (known or {}).get(relative) or _file_sha256(path)
        outer.update(f"{value}  {relative}\n".encode())
    return "sha256:" + outer.hexdigest()


def blob_problems(root: Path) -> list[str]:
    """The files of ``root/blobs`` whose content does not match the digest in their name."""
    problems = []
    directory = root / "blobs"
    for path in sorted(directory.iterdir()) if directory.is_dir() else []:
        expected = path.name.removeprefix("manifest-").removesuffix(".json")
        if _file_sha256(path) != expected:
            problems.append(f"blobs/{path.name} does not match its digest")
    return problems


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


class ModuleStore:
    def __init__(self, root: Path, *, events: EventSink | None = None) -> None:
        """The store at ``root``. Installs and removals are audited to ``events``: the daemon passes its
        one event sink; a local store (aionctl install) keeps its own ``audit.jsonl``."""
        self.root = root
        self.events: EventSink = events if events is not None else EventLog(root / "audit.jsonl")

    # -- reading -----------------------------------------------------------------------------------

    def lock(self) -> dict[str, dict[str, Any]]:
        """The lock file's modules (name -> entry); empty when nothing is installed."""
        path = self.root / LOCK_FILE
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise InputError(
                f"{path}: the lock file is unreadable ({exc})", hint="restore it from backup"
            ) from exc
        modules = document.get("modules") if isinstance(document, dict) else None
        if not isinstance(modules, dict):
            raise InputError(f"{path}: the lock file has no modules map")
        return modules

    def module_dir(self, digest: Digest) -> Path:
        return self.root / "modules" / digest.algorithm / digest.hex

    # -- writing -------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def audited(self, event: dict[str, Any]) -> Iterator[None]:
        """Record ``event`` for the change the block makes. A sink that can hold events (the daemon's
        journal, whose outbox is durable) writes it before the change and releases it after, so a
        crash in between leaves it for the next start to reconcile with the lock file; a local store
        appends it once the change is made."""
        hold = getattr(self.events, "hold", None)
        held = hold(event) if hold is not None else None
        if held is None:
            yield
            self.events.append(event)
            return
        try:
            yield
        except BaseException:
            held.discard()
            raise
        held.release()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """Serialise writers (installs, removals) across processes."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def staging(self) -> Path:
        """A fresh directory for an install in progress (inside the store, so commit is a rename)."""
        base = self.root / ".staging"
        base.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(dir=base))

    def commit(self, staged: Path, digest: Digest, tree: str | None = None) -> bool:
        """Move a fully checked module into place. False when that digest was already installed
        intact; an installed copy whose files no longer hash to ``tree`` is moved to quarantine and
        replaced by the fresh one (so reinstalling repairs what ``module verify`` reports)."""
        target = self.module_dir(digest)
        if target.exists():
            if tree is None or tree_digest(target) == tree:
                shutil.rmtree(staged, ignore_errors=True)
                return False
            self.quarantine(
                target, ref=str(digest), digest=digest, step="commit",
                error="the installed files had changed since install; replaced by a verified copy",
            )  # fmt: skip
        target.parent.mkdir(parents=True, exist_ok=True)
        # A subprocess module runs as an unprivileged user, which must be able to enter its directory
        # (the store around it may stay private: the sandbox mounts just this directory).
        staged.chmod(0o755)
        staged.rename(target)
        _fsync_dir(target.parent)
        return True

    def write_lock(self, modules: dict[str, dict[str, Any]]) -> None:
        document = {"apiVersion": API_VERSION, "kind": "ModuleLock", "modules": dict(sorted(modules.items()))}
        _atomic_write(self.root / LOCK_FILE, json.dumps(document, indent=2).encode() + b"\n")

    def quarantine(
        self, staged: Path | None, *, ref: str, digest: Digest | None, step: str, error: str
    ) -> Path:
        """Keep what a refused install fetched, with a machine-readable reason, out of the store."""
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
        label = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(digest) if digest else ref)[:80]
        target = self.root / "quarantine" / f"{stamp}-{label}"
        target.parent.mkdir(parents=True, exist_ok=True)
        if staged is not None and staged.exists():
            staged.rename(target)
        else:
            target.mkdir()
        reason = {
            "apiVersion": API_VERSION,
            "kind": "QuarantineReason",
            "ref": ref,
            "digest": str(digest) if digest else None,
            "step": step,
            "error": error,
            "time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }
        _atomic_write(target / "reason.json", json.dumps(reason, indent=2).encode() + b"\n")
        return target


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", delete=False) as tmp:
        tmp.write(data)
        tmp.flush()
        os.fsync(tmp.fileno())
    Path(tmp.name).replace(path)
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


__all__ = ["LOCK_FILE", "ModuleStore", "blob_problems", "default_store", "tree_digest"]
