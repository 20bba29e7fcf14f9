"""Config-set validation for the daemon, in a worker process.

Validating a large set is CPU-bound Python. In a thread of the daemon it would hold the GIL that the
event loop and gRPC's threads need, and every call served during a reload would wait for it (on a
1,000-intent set, a reload multiplied the p99 of concurrent calls several times over). So the work runs
in one long-lived worker process, started with ``spawn`` (a fork of a process running gRPC is unsafe),
and only the finished :class:`~aion.config.validate.Report` comes back, pickled; unpickling it is a
few milliseconds in a thread, and interruptible.

Unpickling is safe here only because the bytes come from aiond's own worker process, over the
private pipe of the process pool; nothing from outside is ever unpickled. Pickle cannot carry
``MappingProxyType``, which the config model uses for read-only maps, so the
worker's pickler writes each one as a call that rebuilds it. If the worker dies, the validation runs
once in a thread instead and the next one starts a new worker: a reload never fails because of the pool.

The worker dies with aiond, however aiond dies: on Linux it asks the kernel for a SIGKILL when its
parent goes (``PR_SET_PDEATHSIG``). Without that, a SIGKILLed aiond left the worker waiting forever on
its task queue (it holds both ends of that pipe itself), and with it multiprocessing's resource
tracker, which waits for every holder of its pipe to go. The tracker is kept: the pool's queues use
named POSIX semaphores under spawn, and it is the tracker that unlinks them once aiond and the worker
are both gone, so it exits on its own right after the worker.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import dataclasses
import io
import logging
import multiprocessing
import os
import pickle
import signal
import sys
from collections.abc import Mapping, Sequence
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from types import MappingProxyType
from typing import Any

from aion.config.validate import Options, Report, Source, validate
from aion.config.yamlload import Limits

log = logging.getLogger("aiond.policy")
WORKER_NICENESS = 10
_PR_SET_PDEATHSIG = 1


def run_validation(sources: Sequence[Source], set_name: str, base_dir: Path, limits: Limits) -> Report:
    return validate(sources, Options(limits=limits), set_name=set_name, base_dir=base_dir)


class Validator:
    """Validates config sets in a worker process (or, with ``processes=False``, in a thread)."""

    def __init__(self, *, processes: bool = True) -> None:
        self._processes = processes
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None

    def _executor(self) -> concurrent.futures.ProcessPoolExecutor:
        if self._pool is None:
            self._pool = concurrent.futures.ProcessPoolExecutor(
                max_workers=1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_worker_init,
                initargs=(os.getpid(),),
            )
        return self._pool

    async def validate(
        self, sources: Sequence[Source], *, set_name: str, base_dir: Path, limits: Limits
    ) -> Report:
        # Here, not at the top: the worker process imports this module too, and asyncio would be most
        # of what it loads before its first validation (on every daemon's start-up path).
        import asyncio

        if not self._processes:
            return await asyncio.to_thread(run_validation, sources, set_name, base_dir, limits)
        loop = asyncio.get_running_loop()
        try:
            data = await loop.run_in_executor(
                self._executor(), _validate_pickled, tuple(sources), set_name, base_dir, limits
            )
        except BrokenProcessPool:
            log.warning("the validation worker died; validating in a thread this once")
            self._pool = None
            return await asyncio.to_thread(run_validation, sources, set_name, base_dir, limits)
        report: Report = await asyncio.to_thread(pickle.loads, data)
        return report

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


def _worker_init(daemon_pid: int) -> None:
    _die_with_daemon(daemon_pid)
    # The daemon handles its own signals; a Ctrl-C meant for it must not print a worker traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Validation is background work: on a busy host the scheduler should favour serving calls.
    with contextlib.suppress(OSError):
        os.nice(WORKER_NICENESS)


def _die_with_daemon(daemon_pid: int) -> None:
    """Have the kernel SIGKILL this worker when aiond exits, even by SIGKILL.

    The kernel sends it when the thread that started the worker ends; the pool starts it from
    ``submit()``, called on the event loop's thread, which lives as long as aiond does.
    """
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
            log.warning(
                "the validation worker cannot ask to end with aiond: %s", os.strerror(ctypes.get_errno())
            )
    # aiond may have died before the request above: the worker then has another parent already,
    # and no signal will ever come.
    if os.getppid() != daemon_pid:
        os._exit(0)


def _validate_pickled(sources: Sequence[Source], set_name: str, base_dir: Path, limits: Limits) -> bytes:
    report = run_validation(sources, set_name, base_dir, limits)
    buffer = io.BytesIO()
    _Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(report)
    return buffer.getvalue()


class _Pickler(pickle.Pickler):
    """Read-only maps as calls that rebuild them; dataclass instances as (class, field names, values),
    rebuilt without dataclasses' generic ``__setstate__``, which looks up the fields again for every
    object and made unpickling a 1,000-intent set about twice as slow."""

    def __init__(self, file: io.BytesIO, protocol: int) -> None:
        super().__init__(file, protocol=protocol)
        self._names: dict[type, tuple[str, ...]] = {}

    def reducer_override(self, obj: Any) -> Any:
        kind = type(obj)
        if kind is MappingProxyType:
            return _read_only, (dict(obj),)
        if dataclasses.is_dataclass(kind) and hasattr(kind, "__slots__"):
            names = self._names.get(kind)
            if names is None:  # one tuple per class, so pickle writes it once and then refers to it
                names = self._names[kind] = tuple(f.name for f in dataclasses.fields(kind))
            return _rebuild, (kind, names, tuple(getattr(obj, n) for n in names))
        return NotImplemented


def _read_only(values: Mapping[Any, Any]) -> MappingProxyType[Any, Any]:
    return MappingProxyType(dict(values))


def _rebuild(kind: type, names: tuple[str, ...], values: tuple[Any, ...]) -> Any:
    obj: Any = object.__new__(kind)
    for name, value in zip(names, values, strict=True):
        object.__setattr__(obj, name, value)
    return obj


__all__ = ["Validator", "run_validation"]
