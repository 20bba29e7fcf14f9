"""The subprocess runtime: a module's native program run in a sandbox, one process tree per call.

:class:`SubprocessRuntime` runs ``entrypoints.command`` of a subprocess module with the ABI of
``docs/modules.md`` (the request on standard input, one response on standard output), confined by a
chain of small standard programs, each of which sets up one thing and executes the next. No Python
code runs in the child between ``fork`` and ``exec`` (no ``preexec_fn``: aiond is threaded):

``bash`` (outside, as root)
    joins the call's pids cgroup, when there is one, and moves the host-call socket to fd 3;
``bwrap`` (bubblewrap), or else ``unshare`` + a fixed ``sh`` script running ``mount`` and
``pivot_root``
    new PID, mount, IPC, UTS and cgroup namespaces, and a new network namespace (only a loopback
    that nothing listens on) unless the manifest allows the network. The file system is an empty
    read-only tmpfs holding ``/usr`` (read-only; ``/bin``, ``/lib*`` and ``/sbin`` as on the host),
    the module's directory at ``/module`` (read-only), ``/scratch`` (a private tmpfs, its size
    bounded, gone with the call), a fresh ``/proc`` and a ``/dev`` of ``null``, ``zero``, ``full``,
    ``random`` and ``urandom``. Nothing of ``/etc`` but, with the network allowed, the files a
    resolver needs (never ``/etc/shadow``);
``prlimit``
    CPU seconds (SIGXCPU, then SIGKILL a second later), address space (the memory limit), open
    files, file size (the scratch size), processes, and no core dumps;
``setpriv``
    the dedicated unprivileged uid and gid (65534 by default) with no supplementary groups, every
    capability set emptied and ``no_new_privs`` (so no set-uid program regains anything);
the module's program
    with an environment of the ABI's variables only (:data:`ABI_ENV`), in ``/module``.

Bubblewrap runs as root without a user namespace, so that it can open a module directory under a
store only root may enter (aiond's state directory is mode 0700), keeping only the three
capabilities ``setpriv`` uses to drop to the sandbox uid; the module itself runs as that uid, which
therefore needs read access to the module's own files (:func:`check_command` says when it has none).

**Processes.** The kernel's process limit (RLIMIT_NPROC) does nothing for root, and aiond runs as
root; it counts here because the module runs as the sandbox uid. It counts every process of that uid
on the host, though, so the limit is shared by concurrent calls; when a pids cgroup can be created
(cgroup v2 with the pids controller delegated, or a writable cgroup v1 pids hierarchy), each call
gets one of its own with ``pids.max`` as well, which bounds a fork bomb per call. The call ends when
the module's process does; whatever it left behind ends with its PID namespace (the end of a
namespace's first process kills every process in it, so killing that process is how a timed-out call
ends too), and with its cgroup. The call returns only once the namespace's first process is gone
(bwrap reports the module's end a moment before), so no process outlives it; the scratch tmpfs and
every mount go with the namespace.

**Host calls** (``secret_get``, ``log``, ``now``) are JSON lines on a private socket at fd 3
(:data:`HOST_FD`), answered while the module runs, in order, one reply per request; see
"Subprocess modules" in ``docs/modules.md``. Secrets never reach the environment, a file or the
request.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import json
import logging
import math
import os
import secrets as tokens
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from aion.modules.abi import (
    ABI_VERSION,
    MAX_LOG_LINE,
    MAX_STDERR_BYTES,
    Failure,
    FailureKind,
    Host,
    Limits,
    Outcome,
    parse_response,
)

log = logging.getLogger("aion.modules.sandbox")

SANDBOX_UID = 65534
"""The uid (and gid) modules run as unless told otherwise: ``nobody`` (and ``nogroup``) on Debian."""
MODULE_MOUNT = "/module"
SCRATCH_MOUNT = "/scratch"
HOST_FD = 3
"""The file descriptor of the host-call socket in the module."""
ABI_ENV: dict[str, str] = {
    "PATH": "/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "HOME": SCRATCH_MOUNT,
    "PWD": MODULE_MOUNT,
    "TMPDIR": SCRATCH_MOUNT,
    "AION_ABI": str(ABI_VERSION),
    "AION_HOST_FD": str(HOST_FD),
}
"""The whole environment of a module: nothing of aiond's own is passed on."""
MAX_HOST_LINE = 8192
"""Longest host-call request line (a ``log`` message of 1,024 bytes fits, even escaped); a longer
one closes the socket."""
MAX_HOST_CALLS = 4096
"""Most host calls one module call may make; past them the socket is closed."""
MAX_SECRET_NAME = 256
FUEL_PER_CPU_SECOND = 1_000_000_000
"""The same rate as the WASM runtime's: ``Limits.fuel`` / this is the CPU rlimit, in seconds."""
DEFAULT_NPROC = 64
"""Processes and threads of one call (its cgroup's ``pids.max``)."""
UID_NPROC = 1024
"""Processes and threads of the sandbox uid on the whole host (RLIMIT_NPROC), every call together: the
bound where no pids cgroup can be made, and a backstop where one can. It is well above one call's
limit because the kernel releases a finished call's processes from the count a little after the call
has ended (with its PID namespace), so calls in quick succession would otherwise find it full."""
DEFAULT_NOFILE = 64
DEFAULT_SCRATCH_BYTES = 16 << 20
CGROUP_POOL = 16
"""Empty per-call cgroups kept for later calls."""
KILL_WAIT_S = 5.0
"""How long the end of a killed call is waited for before the runtime stops waiting."""
_CHAIN_PIDS = 4
"""Processes of the chain itself (bwrap or unshare, the namespace's init), on top of the module's."""
_SYSTEM_PATH = "/usr/bin:/bin:/usr/sbin:/sbin"
_SYSTEM_DIRS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
"""Top-level directories mirrored from the host beside /usr: as links where the host has links
(merged /usr), else read-only."""
_NETWORK_FILES = ("resolv.conf", "hosts", "nsswitch.conf", "gai.conf", "services", "protocols", "ssl")
"""What of /etc a module allowed the network sees: name resolution and the CA certificates."""
_DEVICES = ("null", "zero", "full", "random", "urandom")
_OOM_MARKERS = (b"MemoryError", b"out of memory", b"Cannot allocate memory", b"bad_alloc", b"ENOMEM")


class Confinement(enum.StrEnum):
    BWRAP = "bwrap"
    """bubblewrap (Debian ``bubblewrap``)."""
    UNSHARE = "unshare"
    """util-linux ``unshare``, ``mount`` and ``pivot_root``: the fallback when bwrap is missing."""


def check_command(
    module_dir: Path, command: Sequence[str], *, uid: int = SANDBOX_UID, gid: int = SANDBOX_UID
) -> str | None:
    """Why ``command`` (a manifest's ``entrypoints.command``) cannot run from ``module_dir`` as
    ``uid``, or None. Its first item is a program inside the module directory, given relative to
    it; the sandbox user must be able to reach, read and execute it."""
    if not command or not all(isinstance(part, str) for part in command):
        return "entrypoints.command must be a list of strings naming a program inside the module"
    if any("\0" in part for part in command):
        return "entrypoints.command has a NUL character"
    program = PurePosixPath(command[0])
    if not command[0] or program.is_absolute() or ".." in program.parts or str(program) == ".":
        return (
            f"entrypoints.command[0] ({command[0]!r}) must be a relative path inside the module, without '..'"
        )
    try:
        base = module_dir.resolve(strict=True)
        target = (base / program).resolve(strict=True)
    except (OSError, RuntimeError):
        return f"entrypoints.command[0]: {command[0]} is not in {module_dir}"
    if not target.is_relative_to(base):
        return f"entrypoints.command[0]: {command[0]} leads outside the module directory"
    try:
        if not stat.S_ISREG(target.stat().st_mode):
            return f"entrypoints.command[0]: {command[0]} is not a regular file"
        for directory in (base, *(base / p for p in target.relative_to(base).parents if str(p) != ".")):
            if not _may(directory.stat(), uid, gid, 1):
                return (
                    f"the sandbox user (uid {uid}) cannot enter {directory} (mode "
                    f"{stat.S_IMODE(directory.stat().st_mode):04o}): a module's directories must be "
                    f"searchable by it (chmod o+rx)"
                )
        info = target.stat()
    except OSError as exc:
        return f"entrypoints.command[0]: {command[0]}: {exc.strerror}"
    if not _may(info, uid, gid, 1) or not _may(info, uid, gid, 4):
        return (
            f"entrypoints.command[0]: {command[0]} (mode {stat.S_IMODE(info.st_mode):04o}) must be readable "
            f"and executable by the sandbox user (uid {uid})"
        )
    return None


def _may(info: os.stat_result, uid: int, gid: int, bit: int) -> bool:
    """Whether ``uid``/``gid`` (no other groups) has permission ``bit`` (4 r, 2 w, 1 x) on the file."""
    if info.st_uid == uid:
        return bool(info.st_mode & (bit << 6))
    if info.st_gid == gid:
        return bool(info.st_mode & (bit << 3))
    return bool(info.st_mode & bit)


# -- pids cgroups -----------------------------------------------------------------------------------


class PidsCgroups:
    """One pids cgroup per call, under a parent directory this process creates and owns.

    Version 2 (the unified hierarchy, with the pids controller available to the parent) or version 1
    (a pids hierarchy). A call's cgroup gets its ``pids.max``, is joined by the chain's first program
    before anything else runs, and is emptied (every process in it killed) when the call ends; empty
    ones are kept for later calls (up to :data:`CGROUP_POOL`), since a process's first entry into a
    new cgroup costs several milliseconds. The parent is ``aion-sandbox/<pid>`` beside aiond's own
    cgroup; parents of processes that are gone are removed when the next one starts.
    """

    def __init__(self, parent: Path, *, v2: bool) -> None:
        self.parent = parent
        self.v2 = v2
        self._idle: list[Path] = []
        self._lock = threading.Lock()

    @classmethod
    def at(cls, base: Path) -> PidsCgroups:
        """Use ``base`` (a cgroup directory aiond may write) as the parent's grandparent; raises OSError."""
        v2 = (base / "cgroup.controllers").exists()
        if v2:
            if "pids" not in (base / "cgroup.controllers").read_text().split():
                raise OSError(f"{base}: the pids controller is not available (cgroup.controllers)")
        elif not (base / "cgroup.procs").exists():
            raise OSError(f"{base} is not a cgroup directory")
        top = base / "aion-sandbox"
        parent = top / str(os.getpid())
        if v2:
            _delegate_pids(base)
        top.mkdir(exist_ok=True)
        if v2:
            _delegate_pids(top)
        _remove_stale(top)
        parent.mkdir(exist_ok=True)
        if v2:
            _delegate_pids(parent)
        made = cls(parent, v2=v2)
        probe = made._create(1)
        probe.rmdir()
        return made

    @classmethod
    def find(cls) -> PidsCgroups | None:
        """The cgroup aiond runs in, in whichever hierarchy has the pids controller and lets it
        create a child there; None when neither does."""
        try:
            mounts = Path("/proc/self/mountinfo").read_text().splitlines()
            own = Path("/proc/self/cgroup").read_text().splitlines()
        except OSError:
            return None
        v1_paths, v2_path = {}, None
        for line in own:
            number, controllers, path = line.split(":", 2)
            if number == "0" and controllers == "":
                v2_path = path
            for controller in controllers.split(","):
                v1_paths[controller] = path
        candidates: list[Path] = []
        for line in mounts:
            fields = line.split()
            if " - " not in line:
                continue
            mount_point = fields[4]
            fstype, _source, options = line.split(" - ", 1)[1].split()[:3]
            if fstype == "cgroup2" and v2_path is not None:
                candidates.insert(0, Path(mount_point + v2_path.rstrip("/")))
            elif fstype == "cgroup" and "pids" in options.split(",") and "pids" in v1_paths:
                candidates.append(Path(mount_point + v1_paths["pids"].rstrip("/")))
        for base in candidates:
            try:
                return cls.at(base)
            except OSError:
                continue
        return None

    def _create(self, pids_max: int) -> Path:
        path = self.parent / tokens.token_hex(8)
        path.mkdir()
        try:
            (path / "pids.max").write_text(str(pids_max))
        except OSError:
            path.rmdir()
            raise
        return path

    def acquire(self, pids_max: int) -> Path:
        """An empty cgroup with ``pids.max``: a kept one, or a new one; raises OSError."""
        while True:
            with self._lock:
                path = self._idle.pop() if self._idle else None
            if path is None:
                return self._create(pids_max)
            try:
                (path / "pids.max").write_text(str(pids_max))
                return path
            except OSError:
                with contextlib.suppress(OSError):
                    path.rmdir()

    def procs(self, path: Path) -> list[int]:
        try:
            return [int(p) for p in (path / "cgroup.procs").read_text().split()]
        except (OSError, ValueError):
            return []

    def kill(self, path: Path) -> bool:
        """SIGKILL every process in the cgroup; False when there was none."""
        procs = self.procs(path)
        if procs and self.v2 and (path / "cgroup.kill").exists():
            with contextlib.suppress(OSError):
                (path / "cgroup.kill").write_text("1")
                return True
        for pid in procs:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        return bool(procs)

    async def release(self, path: Path, *, wait_s: float = KILL_WAIT_S) -> None:
        """Kill what is left in the cgroup, wait until it is empty (checking every millisecond, for
        up to ``wait_s``), then keep it for another call or remove it."""
        deadline = time.monotonic() + wait_s
        while self.kill(path):
            if time.monotonic() >= deadline:
                log.warning("the sandbox cgroup %s still has processes %.0f s after SIGKILL", path, wait_s)
                return
            await asyncio.sleep(0.001)
        with self._lock:
            if len(self._idle) < CGROUP_POOL:
                self._idle.append(path)
                return
        with contextlib.suppress(OSError):
            path.rmdir()

    def close(self) -> None:
        """Remove the kept cgroups, and the parent once no call's is left in it."""
        with self._lock:
            idle, self._idle = self._idle, []
        for path in idle:
            with contextlib.suppress(OSError):
                path.rmdir()
        with contextlib.suppress(OSError):
            self.parent.rmdir()


def _delegate_pids(directory: Path) -> None:
    """Make the pids controller available to a v2 cgroup's children; raises OSError."""
    if "pids" not in (directory / "cgroup.subtree_control").read_text().split():
        (directory / "cgroup.subtree_control").write_text("+pids")


def _remove_stale(top: Path) -> None:
    """Remove the parents (and their empty cgroups) of aiond processes that are gone."""
    with contextlib.suppress(OSError):
        for parent in top.iterdir():
            if parent.name.isdigit() and not Path(f"/proc/{parent.name}").exists():
                with contextlib.suppress(OSError):
                    for child in parent.iterdir():
                        if child.is_dir():
                            child.rmdir()
                    parent.rmdir()


# -- the argv chain ---------------------------------------------------------------------------------

_JOIN = 'cg=$1; shift; if [ -n "$cg" ]; then echo $$ > "$cg" || exit 125; fi; exec "$@"'
"""The chain's first program (bash, outside, as root): join the cgroup, then execute the rest with
the host-call socket moved to fd 3 (the redirections are appended per call; the fd is a number, and
bash, unlike dash, takes numbers above 9)."""

_SETUP = r"""
set -eu
abi_path=$PATH
PATH=/usr/sbin:/usr/bin:/sbin:/bin
root=$1 module=$2 size=$3 uid=$4 gid=$5 network=$6
shift 6
mount -t tmpfs -o mode=0755,size=1m,nosuid,nodev aion-root "$root"
cd "$root"
mkdir usr module scratch proc dev .old
while [ "$1" != "--" ]; do
    case $1 in
        link:*) spec=${1#link:}; ln -s "${spec#*:}" "${spec%%:*}" ;;
        dir:*) name=${1#dir:}; mkdir "$name"; mount --bind -o ro,nosuid,nodev "/$name" "$name" ;;
    esac
    shift
done
shift
mount --bind -o ro,nosuid,nodev /usr usr
mount --bind -o ro,nosuid,nodev "$module" module
mount -t proc -o nosuid,nodev,noexec proc proc
mount -t tmpfs -o mode=0755,size=64k,nosuid,noexec aion-dev dev
touch dev/null dev/zero dev/full dev/random dev/urandom
for device in null zero full random urandom; do mount --bind "/dev/$device" "dev/$device"; done
ln -s /proc/self/fd dev/fd
ln -s /proc/self/fd/0 dev/stdin
ln -s /proc/self/fd/1 dev/stdout
ln -s /proc/self/fd/2 dev/stderr
mount -o remount,bind,ro dev
mount -t tmpfs -o "size=$size,mode=0700,uid=$uid,gid=$gid,nosuid,nodev" aion-scratch scratch
if [ "$network" = 1 ]; then
    mkdir etc
    for name in resolv.conf hosts nsswitch.conf gai.conf services protocols; do
        if [ -f "/etc/$name" ]; then touch "etc/$name"; mount --bind -o ro "/etc/$name" "etc/$name"; fi
    done
    if [ -d /etc/ssl ]; then mkdir etc/ssl; mount --rbind -o ro /etc/ssl etc/ssl; fi
fi
pivot_root . .old
umount -l /.old
rmdir /.old
mount -o remount,bind,ro /
cd /module
unset OLDPWD SHLVL _
PATH=$abi_path
set +e
"$@"
exit $?
"""
"""The fallback's set-up, run as root as the first process of the new namespaces (so the mounts are
its own and vanish with it). It stays the namespace's init and runs the rest as its child, so that
the module is not PID 1 (which the kernel spares signals such as SIGXCPU) and a signal that ends it
is reported as 128 + its number, as bwrap reports it."""


@dataclasses.dataclass(frozen=True, slots=True)
class _Tools:
    sh: str
    bash: str | None
    bwrap: str | None
    unshare: str | None
    setpriv: str | None
    prlimit: str | None
    mount_tools: tuple[str, ...]
    """What the fallback's script runs (mount, umount, pivot_root, mkdir, ln, touch, rmdir), found."""
    missing_mount_tools: tuple[str, ...]

    @classmethod
    def find(cls) -> _Tools:
        which = {
            name: shutil.which(name, path=_SYSTEM_PATH)
            for name in ("sh", "bash", "bwrap", "unshare", "setpriv", "prlimit")
        }
        script_tools = ("mount", "umount", "pivot_root", "mkdir", "ln", "touch", "rmdir")
        found = {name: shutil.which(name, path=_SYSTEM_PATH) for name in script_tools}
        return cls(
            sh=which["sh"] or "/bin/sh",
            bash=which["bash"],
            bwrap=which["bwrap"],
            unshare=which["unshare"],
            setpriv=which["setpriv"],
            prlimit=which["prlimit"],
            mount_tools=tuple(p for p in found.values() if p),
            missing_mount_tools=tuple(n for n, p in found.items() if not p),
        )


def _inside(path: str) -> bool:
    """Whether a host program is visible in the sandbox at the same path."""
    parts = PurePosixPath(path).parts
    return len(parts) > 2 and (parts[1] == "usr" or parts[1] in _SYSTEM_DIRS)


def _system_dirs() -> list[tuple[str, str | None]]:
    """(name, link target) of the host's /bin, /lib*, /sbin: a target for a link, None for a directory."""
    found: list[tuple[str, str | None]] = []
    for name in _SYSTEM_DIRS:
        path = Path("/") / name
        if path.is_symlink():
            found.append((name, str(path.readlink())))
        elif path.is_dir():
            found.append((name, None))
    return found


@dataclasses.dataclass(frozen=True, slots=True)
class _Call:
    """What one call's chain needs to know."""

    module_dir: str
    program: str
    args: tuple[str, ...]
    cpu_s: int
    memory_bytes: int
    network: bool
    host_fd: int
    cgroup_procs: str


class SubprocessRuntime:
    """Runs subprocess modules, each call in a sandbox of its own; safe to call concurrently.

    ``uid``/``gid``: whom modules run as (a dedicated unprivileged account; ``nobody`` by default).
    ``fallback``: use ``unshare`` + ``setpriv`` + ``prlimit`` even when bubblewrap is installed.
    ``cgroup``: True to find a pids cgroup hierarchy in which each call gets a cgroup of its own,
    False for none, or a cgroup directory to make them under. ``scratch_root``: where the fallback
    mounts a call's root (an empty directory, used only as a mount point inside the call's own mount
    namespace; the host never sees anything in it). ``nproc``, ``nofile``, ``scratch_bytes``: the
    process, open-file and scratch-size limits.
    """

    def __init__(
        self,
        *,
        uid: int = SANDBOX_UID,
        gid: int | None = None,
        fallback: bool = False,
        cgroup: bool | Path = True,
        scratch_root: Path | None = None,
        nproc: int = DEFAULT_NPROC,
        uid_nproc: int = UID_NPROC,
        nofile: int = DEFAULT_NOFILE,
        scratch_bytes: int = DEFAULT_SCRATCH_BYTES,
    ) -> None:
        if uid <= 0 or (gid is not None and gid <= 0):
            raise ValueError("the sandbox uid and gid must be unprivileged (not 0)")
        self.uid = uid
        self.gid = uid if gid is None else gid
        self.nproc = max(1, nproc)
        self.uid_nproc = max(self.nproc, uid_nproc)
        self.nofile = max(8, nofile)
        self.scratch_bytes = max(1 << 16, scratch_bytes)
        self._tools = _Tools.find()
        _become_subreaper()
        self.confinement = Confinement.UNSHARE if fallback or self._tools.bwrap is None else Confinement.BWRAP
        self._cgroup_setting = cgroup
        self.cgroups: PidsCgroups | None = None
        self._scratch_root = scratch_root
        self._root_mount: Path | None = None
        self._system_dirs = _system_dirs()
        self._lock = threading.Lock()
        self._checked = False
        self._problem: str | None = None

    @property
    def mount_point(self) -> Path | None:
        """The fallback's mount point for a call's root (known once :meth:`available` has run)."""
        return self._root_mount

    def close(self) -> None:
        """Remove what this runtime keeps between calls (empty cgroups). Calls may still be made."""
        if self.cgroups is not None:
            self.cgroups.close()

    # -- availability ------------------------------------------------------------------------------

    def available(self) -> str | None:
        """None when modules can run here; else what is missing and how to get it. Runs one empty
        sandbox the first time (a few milliseconds), then answers from memory."""
        with self._lock:
            if not self._checked:
                self._problem = self._check()
                self._checked = True
            return self._problem

    def _check(self) -> str | None:
        if os.geteuid() != 0:
            return (
                "aiond must run as root to start each module as an unprivileged user in namespaces of its own"
            )
        problem = self._check_tools() or self._find_cgroups()
        return problem or self._probe()

    def _check_tools(self) -> str | None:
        tools = self._tools
        if tools.bash is None:
            return "bash is not installed (Debian: apt-get install bash)"
        for name, path in (("setpriv", tools.setpriv), ("prlimit", tools.prlimit)):
            if path is None:
                return f"{name} is not installed (Debian: apt-get install util-linux)"
            if not _inside(path):
                return f"{path} is outside /usr, so a sandbox cannot run it"
        if self.confinement is Confinement.BWRAP:
            return None
        if tools.unshare is None:
            return "neither bwrap (Debian: apt-get install bubblewrap) nor unshare (util-linux) is installed"
        if tools.missing_mount_tools:
            missing = ", ".join(tools.missing_mount_tools)
            return f"{missing}: not installed (Debian: apt-get install util-linux mount coreutils)"
        try:
            self._root_mount = self._prepare_root_mount()
        except OSError as exc:
            return f"no mount point for the sandbox's root: {exc}"
        return None

    def _find_cgroups(self) -> str | None:
        if self._cgroup_setting is True:
            self.cgroups = PidsCgroups.find()
        elif isinstance(self._cgroup_setting, Path):
            try:
                self.cgroups = PidsCgroups.at(self._cgroup_setting)
            except OSError as exc:
                return f"cannot create pids cgroups under {self._cgroup_setting}: {exc}"
        if self.cgroups is None:
            log.info(
                "no pids cgroup: a module's processes are bounded by RLIMIT_NPROC of uid %d only", self.uid
            )
        return None

    def _prepare_root_mount(self) -> Path:
        base = self._scratch_root
        if base is None:
            base = (
                Path("/run/aion-sandbox")
                if os.access("/run", os.W_OK)
                else Path(tempfile.gettempdir()) / "aion-sandbox"
            )
        base.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = base.lstat()
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
            raise OSError(f"{base} must be a directory owned by uid {os.geteuid()}")
        root = base / "root"
        root.mkdir(mode=0o700, exist_ok=True)
        info = root.lstat()
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
            raise OSError(f"{root} must be a directory owned by uid {os.geteuid()}")
        return root

    def _probe(self) -> str | None:
        """Run one sandbox with nothing in it but /usr/bin/true-like work: does the chain work here?"""
        with tempfile.TemporaryDirectory(prefix="aion-sandbox-probe-") as empty:
            Path(empty).chmod(0o755)  # the sandbox user enters it; it is empty
            call = _Call(empty, "/bin/sh", ("-c", "exit 0"), 2, 256 << 20, False, 0, "")
            argv = self._argv(call)
            try:
                done = subprocess.run(
                    argv, stdin=subprocess.DEVNULL, capture_output=True, env=ABI_ENV, timeout=10, check=False,
                    start_new_session=True,
                )  # fmt: skip
            except (OSError, subprocess.TimeoutExpired) as exc:
                return f"a test sandbox did not start ({self.confinement}): {exc}"
        if done.returncode != 0:
            detail = done.stderr.decode("utf-8", "replace").strip().splitlines()
            why = detail[-1] if detail else f"exit status {done.returncode}"
            return f"a test sandbox failed ({self.confinement}): {why[:300]}"
        return None

    # -- one call ----------------------------------------------------------------------------------

    async def call(
        self,
        module_dir: Path,
        command: Sequence[str],
        request: bytes,
        limits: Limits,
        host: Host,
        *,
        network: bool = False,
    ) -> Outcome:
        """Run ``command`` of the module in ``module_dir`` once on ``request``. Never raises for
        anything the module does; every process it started is gone when this returns."""
        started = time.perf_counter()
        problem = self.available()
        if problem is not None:
            return Failure(FailureKind.UNAVAILABLE, f"subprocess modules cannot run here: {problem}")
        problem = check_command(module_dir, command, uid=self.uid, gid=self.gid)
        if problem is not None:
            return Failure(FailureKind.UNAVAILABLE, problem)
        cgroup: Path | None = None
        if self.cgroups is not None:
            try:
                cgroup = self.cgroups.acquire(self.nproc + _CHAIN_PIDS)
            except OSError as exc:
                return Failure(FailureKind.UNAVAILABLE, f"the call's pids cgroup could not be made: {exc}")
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            call = _Call(
                module_dir=str(module_dir.resolve()),
                program=f"{MODULE_MOUNT}/{PurePosixPath(command[0])}",
                args=tuple(command[1:]),
                cpu_s=max(1, math.ceil(limits.fuel / FUEL_PER_CPU_SECOND)),
                memory_bytes=max(1 << 20, limits.memory_bytes),
                network=network,
                host_fd=theirs.fileno(),
                cgroup_procs=str(cgroup / "cgroup.procs") if cgroup else "",
            )
            try:
                proc = await asyncio.create_subprocess_exec(
                    *self._argv(call), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE, pass_fds=(theirs.fileno(),), env=ABI_ENV, cwd="/",
                    start_new_session=True,
                )  # fmt: skip
            except OSError as exc:
                return Failure(FailureKind.UNAVAILABLE, f"the sandbox could not start: {exc}")
            finally:
                theirs.close()
            return await _Run(proc, ours, request=request, host=host, limits=limits, started=started).outcome(
                call
            )
        finally:
            ours.close()
            theirs.close()
            if cgroup is not None and self.cgroups is not None:
                await self.cgroups.release(cgroup)

    # -- argv ---------------------------------------------------------------------------------------

    def _argv(self, call: _Call) -> list[str]:
        tools = self._tools
        assert tools.setpriv is not None
        assert tools.prlimit is not None
        fd = call.host_fd
        join = _JOIN if fd in (0, HOST_FD) else f"{_JOIN} {HOST_FD}<&{fd} {fd}<&-"
        assert tools.bash is not None
        outer = [tools.bash, "-c", join, "aion-sandbox", call.cgroup_procs]
        inner = [
            tools.prlimit,
            f"--cpu={call.cpu_s}:{call.cpu_s + 1}",
            f"--as={call.memory_bytes}",
            f"--nofile={self.nofile}",
            f"--fsize={self.scratch_bytes}",
            f"--nproc={self.uid_nproc}",
            "--core=0",
            "--",
            tools.setpriv,
            f"--reuid={self.uid}",
            f"--regid={self.gid}",
            "--clear-groups",
            "--inh-caps=-all",
            "--ambient-caps=-all",
            "--bounding-set=-all",
            "--no-new-privs",
            "--",
            call.program,
            *call.args,
        ]
        if self.confinement is Confinement.BWRAP:
            return outer + self._bwrap(call) + ["--", *inner]
        return outer + self._unshare(call) + inner

    def _bwrap(self, call: _Call) -> list[str]:
        assert self._tools.bwrap is not None
        argv = [self._tools.bwrap, "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
        if not call.network:
            argv.append("--unshare-net")
        # bwrap runs as root here; it keeps only what setpriv needs to drop to the sandbox user.
        argv += ["--die-with-parent", "--new-session"]
        argv += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--cap-add", "CAP_SETPCAP"]
        argv += ["--ro-bind", "/usr", "/usr"]
        for name, target in self._system_dirs:
            argv += (
                ["--symlink", target, f"/{name}"]
                if target is not None
                else ["--ro-bind", f"/{name}", f"/{name}"]
            )
        argv += ["--proc", "/proc", "--dev", "/dev"]
        argv += ["--perms", "1777", "--size", str(self.scratch_bytes), "--tmpfs", SCRATCH_MOUNT]
        argv += ["--ro-bind", call.module_dir, MODULE_MOUNT]
        if call.network:
            for name in _NETWORK_FILES:
                argv += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
        argv += ["--remount-ro", "/dev", "--remount-ro", "/"]
        argv += ["--clearenv"]
        for key, value in ABI_ENV.items():
            argv += ["--setenv", key, value]
        argv += ["--chdir", MODULE_MOUNT]
        return argv

    def _unshare(self, call: _Call) -> list[str]:
        assert self._tools.unshare is not None
        assert self._root_mount is not None
        argv = [self._tools.unshare, "--mount", "--propagation", "private", "--pid", "--fork", "--kill-child"]
        argv += ["--ipc", "--uts", "--cgroup"]
        if not call.network:
            argv.append("--net")
        argv += [
            "--",
            self._tools.sh,
            "-c",
            _SETUP,
            "aion-sandbox-setup",
            str(self._root_mount),
            call.module_dir,
        ]
        argv += [str(self.scratch_bytes), str(self.uid), str(self.gid), "1" if call.network else "0"]
        argv += [
            f"link:{name}:{target}" if target is not None else f"dir:{name}"
            for name, target in self._system_dirs
        ]
        argv.append("--")
        return argv


class _Run:
    """One running sandbox: its streams, its host calls, its end."""

    def __init__(
        self, proc: asyncio.subprocess.Process, sock: socket.socket, *, request: bytes, host: Host,
        limits: Limits, started: float,
    ) -> None:  # fmt: skip
        self.proc = proc
        self.request = request
        self.sock = sock
        self.host = host
        self.limits = limits
        self.started = started
        self.stderr = bytearray()
        self.stderr_dropped = 0
        self.host_note: str | None = None
        self.init_fd: int | None = None
        """A pidfd of the first process of the sandbox's PID namespace, once it is known."""

    async def outcome(self, call: _Call) -> Outcome:
        proc, limits = self.proc, self.limits
        assert proc.stdin is not None
        assert proc.stdout is not None
        assert proc.stderr is not None
        tasks = [
            asyncio.create_task(self._feed(proc.stdin)),
            asyncio.create_task(self._drain_stderr(proc.stderr)),
            asyncio.create_task(self._serve()),
            asyncio.create_task(self._watch_init()),
        ]
        stdout = asyncio.create_task(_read_bounded(proc.stdout, limits.max_output_bytes, self._kill))
        reason: FailureKind | None = None
        output: bytes | None = b""
        try:
            try:
                async with asyncio.timeout(limits.timeout_s):
                    output = await stdout
                    if output is None:
                        reason = FailureKind.BAD_OUTPUT
                    else:
                        await proc.wait()
            except TimeoutError:
                reason = FailureKind.TIMEOUT
        finally:
            if proc.returncode is None:
                self._kill()
            await self._reap()
            await self._init_gone()
            # Every writer is gone, so both streams are at their end (or about to be).
            await asyncio.wait([stdout, tasks[1]], timeout=1.0)
            for task in (stdout, *tasks):
                task.cancel()
            await asyncio.gather(stdout, *tasks, return_exceptions=True)
        elapsed = time.perf_counter() - self.started
        outcome = self._judge(reason, output, call, elapsed)
        self._log_stderr(call, outcome)
        return outcome

    def _judge(
        self, reason: FailureKind | None, output: bytes | None, call: _Call, elapsed: float
    ) -> Outcome:
        limits = self.limits
        if reason is FailureKind.TIMEOUT:
            return Failure(reason, f"it ran past its time limit ({limits.timeout_s * 1000:.0f} ms)", elapsed)
        if reason is FailureKind.BAD_OUTPUT:
            return Failure(reason, f"its output was larger than {limits.max_output_bytes} bytes", elapsed)
        code = self.proc.returncode if self.proc.returncode is not None else -int(signal.SIGKILL)
        # The chain reports a module ended by a signal as 128 + its number (bwrap's init and the
        # fallback's shell both do); a negative code is the chain itself being killed.
        signo = -code if code < 0 else code - 128 if 128 < code < 128 + 65 else 0
        tail = self.host.redact(bytes(self.stderr).decode("utf-8", "replace"))
        last = next((line.strip() for line in reversed(tail.splitlines()) if line.strip()), "")
        hint = f": {last[:200]}" if last else ""
        if signo == signal.SIGXCPU:
            return Failure(
                FailureKind.FUEL, f"it used up its CPU budget ({call.cpu_s} s of CPU time)", elapsed
            )
        if code != 0 and any(marker in self.stderr for marker in _OOM_MARKERS):
            limit = f"{call.memory_bytes} bytes of address space"
            return Failure(FailureKind.OOM, f"it ran out of memory at its limit ({limit}){hint}", elapsed)
        if signo:
            name = signal.Signals(signo).name if signo in signal.valid_signals() else str(signo)
            return Failure(FailureKind.CRASH, f"it was killed by {name}{hint}", elapsed)
        if code != 0:
            return Failure(FailureKind.CRASH, f"it exited with status {code}{hint}", elapsed)
        outcome = parse_response(output or b"", self.host.redact, elapsed)
        if self.host.dropped and not isinstance(outcome, Failure):
            outcome = dataclasses.replace(outcome, logs_dropped=self.host.dropped)
        return outcome

    def _log_stderr(self, call: _Call, outcome: Outcome) -> None:
        if not self.stderr and not self.host_note:
            return
        text = self.host.redact(bytes(self.stderr).decode("utf-8", "replace"))
        dropped = f" ({self.stderr_dropped} earlier bytes dropped)" if self.stderr_dropped else ""
        note = f"; {self.host_note}" if self.host_note else ""
        kind = outcome.kind.value if isinstance(outcome, Failure) else "answer"
        log.debug("module %s (%s) standard error%s%s:\n%s", call.program, kind, dropped, note, text)

    # -- the streams --------------------------------------------------------------------------------

    async def _feed(self, stdin: asyncio.StreamWriter) -> None:
        """Write the request and close standard input (a module that never reads it just ends)."""
        with contextlib.suppress(OSError):
            stdin.write(self.request)
            await stdin.drain()
        with contextlib.suppress(OSError):
            stdin.close()
            await stdin.wait_closed()

    async def _drain_stderr(self, stderr: asyncio.StreamReader) -> None:
        """Keep the last :data:`MAX_STDERR_BYTES` bytes of standard error; count the rest."""
        while chunk := await stderr.read(65536):
            self.stderr += chunk
            excess = len(self.stderr) - MAX_STDERR_BYTES
            if excess > 0:
                del self.stderr[:excess]
                self.stderr_dropped += excess

    async def _serve(self) -> None:
        """Answer host calls until the module closes the socket (or breaks the protocol)."""
        reader, writer = await asyncio.open_unix_connection(sock=self.sock, limit=MAX_HOST_LINE)
        calls = 0
        try:
            while True:
                try:
                    line = await reader.readuntil(b"\n")
                except asyncio.IncompleteReadError:
                    return
                except asyncio.LimitOverrunError:
                    self.host_note = f"a host-call line longer than {MAX_HOST_LINE} bytes closed the socket"
                    return
                calls += 1
                if calls > MAX_HOST_CALLS:
                    self.host_note = f"more than {MAX_HOST_CALLS} host calls closed the socket"
                    return
                writer.write(answer(self.host, line))
                await writer.drain()
        except (ConnectionError, OSError):
            return
        finally:
            writer.close()

    # -- the end ------------------------------------------------------------------------------------

    async def _watch_init(self) -> None:
        """Hold a pidfd of the namespace's first process (the chain's first process's child) as soon
        as it exists. bwrap can report the module's end before that process has ended; once it
        has, every process of the namespace has too."""
        pid = self.proc.pid
        while self.proc.returncode is None:
            try:
                children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            except OSError:
                return
            if children:
                with contextlib.suppress(OSError, ValueError):
                    self.init_fd = os.pidfd_open(int(children[0]))
                return
            await asyncio.sleep(0.001)

    async def _init_gone(self) -> None:
        fd, self.init_fd = self.init_fd, None
        if fd is None:
            return
        loop = asyncio.get_running_loop()
        ended: asyncio.Future[None] = loop.create_future()

        def readable() -> None:
            if not ended.done():
                ended.set_result(None)

        loop.add_reader(fd, readable)
        try:
            await asyncio.wait_for(ended, KILL_WAIT_S)
        except TimeoutError:
            log.warning("the sandbox's PID namespace did not end within %.0f s of its module", KILL_WAIT_S)
        finally:
            loop.remove_reader(fd)
            # bwrap's monitor exits without waiting for the namespace's first process, which is then
            # orphaned. This process is a child subreaper (see _become_subreaper), so the orphan is
            # its child now: reaped here, by its pidfd, so that no zombie is left holding a place in
            # the sandbox user's process count and the call's pids cgroup. Nothing else of this
            # process waits for it (asyncio waits for the chain's first process only).
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitid(os.P_PIDFD, fd, os.WEXITED | os.WNOHANG)
            os.close(fd)

    def _kill(self) -> None:
        """SIGKILL the sandbox: the first process of its PID namespace, which takes every process in
        it along, and whose end ends the chain's own first process (bwrap or unshare waits for it).
        Before that child exists, the chain's process group."""
        if self.init_fd is not None:
            with contextlib.suppress(OSError):
                signal.pidfd_send_signal(self.init_fd, signal.SIGKILL)
                return
        pid = self.proc.pid
        try:
            children = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        except (OSError, ValueError):
            children = []
        for child in children:
            with contextlib.suppress(OSError):
                os.kill(child, signal.SIGKILL)
        if not children:
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGKILL)

    async def _reap(self) -> None:
        """Wait for the chain's first process, which reaps the namespace's; kill its whole process
        group if it takes too long."""
        for _ in range(2):
            try:
                await asyncio.wait_for(asyncio.shield(self.proc.wait()), KILL_WAIT_S / 2)
                return
            except TimeoutError:
                with contextlib.suppress(OSError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
        log.warning("sandbox process %d did not end within %.0f s of SIGKILL", self.proc.pid, KILL_WAIT_S)


_PR_SET_CHILD_SUBREAPER = 36


def _become_subreaper() -> None:
    """Have orphaned descendants (a sandbox's namespace process, once bwrap's monitor has exited)
    reparented to this process rather than to the host's init, which may never reap them (in a
    container, a VM's minimal init, or aiond itself as PID 1); :meth:`_Run._init_gone` reaps them."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
            log.warning("could not become a child subreaper: %s", os.strerror(ctypes.get_errno()))
    except OSError as exc:  # pragma: no cover - glibc is there wherever bubblewrap is
        log.warning("could not become a child subreaper: %s", exc)


async def _read_bounded(
    stream: asyncio.StreamReader, limit: int, on_overflow: Callable[[], None]
) -> bytes | None:
    """Everything up to end of file; None when it was over ``limit``, in which case ``on_overflow``
    was called as soon as it was, and the rest was read and dropped (a pipe left unread would keep
    the end of the process from being seen)."""
    chunks: list[bytes] = []
    size = 0
    while chunk := await stream.read(65536):
        if size > limit:
            continue
        size += len(chunk)
        if size > limit:
            chunks.clear()
            on_overflow()
        else:
            chunks.append(chunk)
    return None if size > limit else b"".join(chunks)


def answer(host: Host, line: bytes) -> bytes:
    """The reply line to one host-call request line (see "Subprocess modules" in docs/modules.md)."""
    reply: dict[str, Any]
    try:
        request = json.loads(line)
    except (ValueError, RecursionError):
        request = None
    call = request.get("call") if isinstance(request, dict) else None
    if not isinstance(request, dict) or not isinstance(call, str):
        reply = {"error": 'a request is one JSON object with a "call" string'}
    elif call == "secret_get":
        name = request.get("name")
        if not isinstance(name, str) or not name or len(name) > MAX_SECRET_NAME:
            reply = {"error": f'secret_get needs a "name" string of 1 to {MAX_SECRET_NAME} characters'}
        else:
            value = host.secret_get(name)
            reply = {"result": value} if isinstance(value, int) else {"value": value}
    elif call == "log":
        level, message = request.get("level", 1), request.get("message")
        if not isinstance(level, int) or isinstance(level, bool) or not isinstance(message, str):
            reply = {"error": 'log needs an integer "level" and a "message" string'}
        else:
            host.log(level, message.encode("utf-8", "replace")[:MAX_LOG_LINE])
            reply = {"result": 0}
    elif call == "now":
        reply = {"value": time.time_ns()}
    else:
        reply = {"error": f"unknown call {call[:64]!r}: secret_get, log or now"}
    return json.dumps(reply, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


__all__ = [
    "ABI_ENV",
    "HOST_FD",
    "MAX_HOST_CALLS",
    "MAX_HOST_LINE",
    "MODULE_MOUNT",
    "SANDBOX_UID",
    "SCRATCH_MOUNT",
    "Confinement",
    "PidsCgroups",
    "SubprocessRuntime",
    "answer",
    "check_command",
]
