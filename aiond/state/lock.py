"""The state directory: created private, and held by one aiond at a time. Two daemons writing one
directory would corrupt it, so it is guarded by an exclusive ``flock`` on ``aiond.lock`` for the life
of the process (the kernel releases it even on SIGKILL)."""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

from aion.errors import ConflictError, InputError

LOCK_NAME = "aiond.lock"


class StateDirLock:
    """An exclusive hold on a state directory. Use :meth:`acquire`, then :meth:`release` on shutdown."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, path: Path) -> StateDirLock:
        try:
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(
                f"cannot create state directory {path}: {exc.strerror}",
                hint="choose a writable directory with --state-dir",
            ) from exc
        if not path.is_dir():
            raise InputError(f"state directory {path} exists but is not a directory")
        lock_path = path / LOCK_NAME
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise InputError(
                f"cannot open {lock_path}: {exc.strerror}",
                hint="choose a writable directory with --state-dir",
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                holder = _read_pid(lock_path)
                who = f" (pid {holder})" if holder else ""
                raise ConflictError(
                    f"state directory {path} is in use by another aiond{who}",
                    hint="stop that daemon, or give this one its own --state-dir",
                ) from exc
            raise InputError(f"cannot lock {lock_path}: {exc.strerror}") from exc
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        return cls(path, fd)

    def release(self) -> None:
        if self._fd is None:
            return
        os.close(self._fd)  # closing the descriptor drops the flock
        self._fd = None


def _read_pid(lock_path: Path) -> int | None:
    try:
        text = lock_path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None


__all__ = ["LOCK_NAME", "StateDirLock"]
