"""The WASM runtime: a module's ``.wasm`` compiled once, then run as a WASI command per call.

One :class:`WasmRuntime` per process holds the wasmtime engine, the compiled modules and a ticker
thread that advances the engine's epoch every :data:`TICK_S` seconds. Each call
(:meth:`WasmRuntime.call`, blocking: run it in a worker thread) gets:

- a **new Store**, never reused, so no state survives a call and nothing survives a trap;
- **limits** (:class:`aion.modules.abi.Limits`): memory through the store's limits (a ``memory.grow``
  past them fails), CPU through fuel, wall-clock time through epoch interruption (so a loop that never
  calls out still stops), standard output bounded while it is written;
- **WASI** with the request as standard input, and nothing else: no preopened directory, no
  environment, no arguments but the module's name, no sockets;
- the **host calls** of the ``aion`` import namespace (``secret_get``, ``log``, ``now``), each of
  which checks every pointer and length the guest passes against the current memory size and traps
  the call (kind ``trap``) when one falls outside; they work from memory only (the secrets were
  resolved before the call), so they cannot hold a call past its time.

**Compiled cache.** Compiling with Cranelift takes milliseconds to seconds; loading a compiled module
takes microseconds. Compiled code is kept in memory by the module's SHA-256, and on disk under
``cache_dir/<engine key>/<sha256>.cwasm``, where the engine key hashes wasmtime's version and every
engine setting that changes the code. ``Module.deserialize`` runs native code it is handed, so the
cache directory is created mode 0700, only files this class wrote there are read back, and each is
read only when its own SHA-256 (kept beside it when it was written) still matches.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import fcntl
import hashlib
import importlib.metadata
import os
import tempfile
import threading
import time
from pathlib import Path

import wasmtime

from aion.modules.abi import (
    MAX_LOG_LINE,
    MAX_LOG_LINES,
    MAX_STDERR_BYTES,
    Failure,
    FailureKind,
    Host,
    Limits,
    Outcome,
    parse_response,
)

TICK_S = 0.005
"""How often the epoch advances: the resolution of a call's time limit."""
FUEL_PER_CPU_SECOND = 1_000_000_000
"""Fuel for one core-second when modules.yml sets no ``limits.fuel`` (about one unit an instruction)."""
MEMORY_CACHE = 64
"""Compiled modules kept in memory (least recently used go first)."""
MAX_WASM_BYTES = 256 << 20
MAX_NAME = 256
_NEAR_LIMIT = 2 << 20
"""A trap with memory this close to the limit counts as running out of memory (the allocation that
failed, and made the module abort, was larger than what was left)."""
_ENGINE_SETTINGS = "consume_fuel=1;epoch_interruption=1;cranelift_opt_level=speed;v1"


class HostFault(Exception):
    """A host call was handed a pointer or length outside the guest's memory: the call traps."""


@dataclasses.dataclass(frozen=True, slots=True)
class Compiled:
    """A module ready to instantiate: compiled, linked, with its WASI entry point known."""

    sha256: str
    pre: wasmtime.InstancePre


class _Stream:
    """A standard stream of one call: a memory file the guest writes (a file rather than a callback,
    so wasmtime's WASI writes it without calling back into Python), watched by the epoch ticker: once
    it grows past ``limit``, it is cut to ``limit`` bytes and sealed against growth, so a module that
    writes without end costs at most one tick's worth of writes."""

    __slots__ = ("fd", "limit", "overflowed")

    def __init__(self, limit: int) -> None:
        self.fd = os.memfd_create("aion-module-out", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        self.limit = limit
        self.overflowed = False

    @property
    def path(self) -> str:
        return f"/proc/self/fd/{self.fd}"

    def check(self) -> None:
        if not self.overflowed and os.fstat(self.fd).st_size > self.limit:
            fcntl.fcntl(self.fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_GROW)
            os.ftruncate(self.fd, self.limit)
            self.overflowed = True

    def value(self) -> bytes:
        self.check()
        return os.pread(self.fd, min(os.fstat(self.fd).st_size, self.limit), 0)

    def close(self) -> None:
        os.close(self.fd)


_current = threading.local()
"""The Host of the call running on this thread (host functions are shared by every call)."""


def _memory(caller: wasmtime.Caller) -> wasmtime.Memory:
    memory = caller.get("memory")
    if not isinstance(memory, wasmtime.Memory):
        raise HostFault("the module exports no memory")
    return memory


def _span(caller: wasmtime.Caller, ptr: int, length: int) -> tuple[wasmtime.Memory, int, int]:
    """The guest memory and [ptr, ptr + length) when it lies inside it; else a fault."""
    memory = _memory(caller)
    size = memory.data_len(caller)
    # i32 values arrive signed: a "pointer" above 2 GiB is negative here, and is outside any memory
    # this runtime allows.
    if ptr < 0 or length < 0 or ptr + length > size:
        raise HostFault(f"pointer {ptr} + length {length} is outside the module's {size}-byte memory")
    return memory, ptr, length


def _secret_get(caller: wasmtime.Caller, name_ptr: int, name_len: int, out_ptr: int, out_cap: int) -> int:
    host: Host = _current.host
    if name_len > MAX_NAME:
        raise HostFault(f"a secret name of {name_len} bytes")
    memory, start, length = _span(caller, name_ptr, name_len)
    _span(caller, out_ptr, out_cap)
    name = bytes(memory.read(caller, start, start + length)).decode("utf-8", "replace")
    value = host.secret_get(name)
    if isinstance(value, int):
        return value
    raw = value.encode()
    if raw and out_cap:
        memory.write(caller, raw[:out_cap], out_ptr)
    return len(raw)


def _log(caller: wasmtime.Caller, level: int, ptr: int, length: int) -> None:
    host: Host = _current.host
    memory, start, size = _span(caller, ptr, length)
    if host.lines >= MAX_LOG_LINES:  # counted without reading: a flood costs the guest, not the host
        host.log(level, b"")
        return
    host.log(level, bytes(memory.read(caller, start, start + min(size, MAX_LOG_LINE))))


def _now() -> int:
    return time.time_ns()


def engine_key(settings: str = _ENGINE_SETTINGS) -> str:
    """What compiled code depends on: wasmtime's version and the engine settings."""
    version = importlib.metadata.version("wasmtime")
    return hashlib.sha256(f"wasmtime={version};{settings}".encode()).hexdigest()[:32]


class WasmRuntime:
    def __init__(self, cache_dir: Path | None = None) -> None:
        config = wasmtime.Config()
        config.consume_fuel = True
        config.epoch_interruption = True
        config.cranelift_opt_level = "speed"
        self.engine = wasmtime.Engine(config)
        self._linker = wasmtime.Linker(self.engine)
        self._linker.define_wasi()
        i32, i64 = wasmtime.ValType.i32(), wasmtime.ValType.i64()
        self._linker.define_func(
            "aion",
            "secret_get",
            wasmtime.FuncType([i32, i32, i32, i32], [i32]),
            _secret_get,
            access_caller=True,
        )
        self._linker.define_func(
            "aion", "log", wasmtime.FuncType([i32, i32, i32], []), _log, access_caller=True
        )
        self._linker.define_func("aion", "now", wasmtime.FuncType([], [i64]), _now)
        self._cache_dir = None if cache_dir is None else cache_dir / engine_key()
        self._compiled: collections.OrderedDict[str, Compiled] = collections.OrderedDict()
        self._lock = threading.Lock()
        self._streams: set[_Stream] = set()
        self._stop = threading.Event()
        self._ticker = threading.Thread(target=self._tick, name="aion-wasm-epoch", daemon=True)
        self._ticker.start()

    def close(self) -> None:
        self._stop.set()
        self._ticker.join(timeout=1)

    def _tick(self) -> None:
        while not self._stop.wait(TICK_S):
            self.engine.increment_epoch()
            with self._lock:
                streams = list(self._streams)
            for stream in streams:
                with contextlib.suppress(OSError):  # closed meanwhile: its call has ended
                    stream.check()

    # -- loading -----------------------------------------------------------------------------------

    def load(self, path: Path) -> Compiled:
        """The compiled form of the ``.wasm`` at ``path``: from memory, the disk cache, or compiled now.
        Raises :class:`wasmtime.WasmtimeError` for a file that is not a valid module, and OSError."""
        with path.open("rb") as handle:
            wasm = handle.read(MAX_WASM_BYTES + 1)
        if len(wasm) > MAX_WASM_BYTES:
            raise wasmtime.WasmtimeError(f"{path.name} is larger than {MAX_WASM_BYTES >> 20} MiB")
        return self.load_bytes(wasm)

    def load_bytes(self, wasm: bytes) -> Compiled:
        sha = hashlib.sha256(wasm).hexdigest()
        with self._lock:
            found = self._compiled.get(sha)
            if found is not None:
                self._compiled.move_to_end(sha)
                return found
        module = self._from_disk(sha)
        if module is None:
            module = wasmtime.Module(self.engine, wasm)
            self._to_disk(sha, module)
        compiled = Compiled(sha, self._linker.instantiate_pre(module))
        with self._lock:
            self._compiled[sha] = compiled
            while len(self._compiled) > MEMORY_CACHE:
                self._compiled.popitem(last=False)
        return compiled

    def _from_disk(self, sha: str) -> wasmtime.Module | None:
        if self._cache_dir is None:
            return None
        path = self._cache_dir / f"{sha}.cwasm"
        try:
            recorded = (self._cache_dir / f"{sha}.sum").read_text(encoding="ascii").strip()
            blob = path.read_bytes()
        except (OSError, UnicodeDecodeError):
            return None
        if hashlib.sha256(blob).hexdigest() != recorded:
            with contextlib.suppress(OSError):
                path.unlink()
            return None
        try:
            return wasmtime.Module.deserialize(self.engine, blob)
        except wasmtime.WasmtimeError:
            return None

    def _to_disk(self, sha: str, module: wasmtime.Module) -> None:
        if self._cache_dir is None:
            return
        try:
            self._cache_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._cache_dir.parent.chmod(0o700)
            blob = module.serialize()
            for name, data in (
                (f"{sha}.cwasm", blob),
                (f"{sha}.sum", hashlib.sha256(blob).hexdigest().encode()),
            ):
                with tempfile.NamedTemporaryFile(dir=self._cache_dir, prefix=".", delete=False) as tmp:
                    tmp.write(data)
                Path(tmp.name).replace(self._cache_dir / name)
        except OSError:
            return  # a cache that cannot be written costs a compile next start, nothing else

    # -- calling -----------------------------------------------------------------------------------

    def call(self, compiled: Compiled, name: str, request: bytes, limits: Limits, host: Host) -> Outcome:
        """Run the module once on ``request``; never raises for anything the module does."""
        started = time.perf_counter()
        store = wasmtime.Store(self.engine)
        store.set_limits(memory_size=limits.memory_bytes, instances=1, tables=4, memories=1)
        store.set_fuel(max(1, limits.fuel))
        store.set_epoch_deadline(max(1, round(limits.timeout_s / TICK_S)))
        wasi = wasmtime.WasiConfig()
        wasi.argv = [name]
        fd = os.memfd_create("aion-module-in", os.MFD_CLOEXEC)
        try:
            os.write(fd, request)
            wasi.stdin_file = f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        stdout, stderr = _Stream(limits.max_output_bytes), _Stream(MAX_STDERR_BYTES)
        with self._lock:
            self._streams.update((stdout, stderr))
        try:
            wasi.stdout_file = stdout.path
            wasi.stderr_file = stderr.path
            store.set_wasi(wasi)
            return self._run(compiled, store, stdout, stderr, limits, host, started)
        finally:
            with self._lock:
                self._streams.difference_update((stdout, stderr))
            stdout.close()
            stderr.close()

    def _run(  # noqa: PLR0917 - the parts of one call, made by call()
        self,
        compiled: Compiled,
        store: wasmtime.Store,
        stdout: _Stream,
        stderr: _Stream,
        limits: Limits,
        host: Host,
        started: float,
    ) -> Outcome:
        _current.host = host
        failure: Failure | None = None
        instance: wasmtime.Instance | None = None
        try:
            instance = compiled.pre.instantiate(store)
            start = instance.exports(store).get("_start")
            if not isinstance(start, wasmtime.Func):
                return Failure(FailureKind.BAD_OUTPUT, "the module is not a WASI command (no _start)")
            start(store)
        except wasmtime.ExitTrap as exit_trap:
            if exit_trap.code != 0:
                failure = Failure(FailureKind.CRASH, f"it exited with status {exit_trap.code}")
        except wasmtime.Trap as trap:
            failure = _trap(trap, _memory_size(store, instance), limits)
        except HostFault as fault:
            failure = Failure(FailureKind.TRAP, f"a host call was given a bad pointer: {fault}")
        except wasmtime.WasmtimeError as error:
            failure = _error(error, limits)
        finally:
            _current.host = None
        elapsed = time.perf_counter() - started
        output = stdout.value()
        errors = stderr.value()
        if errors:
            host.stderr(errors)
        if stdout.overflowed:
            return Failure(
                FailureKind.BAD_OUTPUT, f"its output was larger than {limits.max_output_bytes} bytes", elapsed
            )
        if failure is not None:
            return dataclasses.replace(failure, elapsed_s=elapsed)
        outcome = parse_response(output, host.redact, elapsed)
        if host.dropped and not isinstance(outcome, Failure):
            outcome = dataclasses.replace(outcome, logs_dropped=host.dropped)
        return outcome


def _trap(trap: wasmtime.Trap, memory_bytes: int, limits: Limits) -> Failure:
    code = trap.trap_code
    if code == wasmtime.TrapCode.OUT_OF_FUEL:
        return Failure(FailureKind.FUEL, f"it used up its CPU budget ({limits.fuel} fuel)")
    if code == wasmtime.TrapCode.INTERRUPT:
        return Failure(FailureKind.TIMEOUT, f"it ran past its time limit ({limits.timeout_s * 1000:.0f} ms)")
    if memory_bytes + max(_NEAR_LIMIT, limits.memory_bytes // 8) > limits.memory_bytes:
        # A memory.grow past the limit fails rather than traps; a module that then aborts (as
        # malloc's callers usually do) traps with its memory at, or just under, the limit.
        return Failure(FailureKind.OOM, f"it reached its memory limit ({limits.memory_bytes} bytes)")
    return Failure(FailureKind.TRAP, f"it trapped: {_cause(trap.message, code)}")


def _cause(message: str | None, code: object) -> str:
    """The line of a wasmtime error that says what happened (the last; the others are a backtrace)."""
    lines = [line.strip() for line in (message or "").splitlines() if line.strip()]
    cause = lines[-1] if lines else str(code)
    return cause.removeprefix("wasm trap: ")[:200]


def _error(error: wasmtime.WasmtimeError, limits: Limits) -> Failure:
    text = str(error)
    if "outside the module" in text:
        return Failure(FailureKind.TRAP, "a host call was given a pointer or length outside its memory")
    if "memory" in text and ("limit" in text or "exceed" in text):
        return Failure(FailureKind.OOM, f"it needs more memory than its limit ({limits.memory_bytes} bytes)")
    return Failure(FailureKind.TRAP, f"it failed: {_cause(text, 'unknown error')}")


def _memory_size(store: wasmtime.Store, instance: wasmtime.Instance | None) -> int:
    """The size of an instance's exported memory, 0 when there is none."""
    if instance is None:
        return 0
    memory = instance.exports(store).get("memory")
    return int(memory.data_len(store)) if isinstance(memory, wasmtime.Memory) else 0


def parse_quantity(text: str) -> int:
    """Bytes of a Kubernetes-style memory quantity: ``256Mi``, ``1Gi``, ``512Ki`` or plain bytes."""
    for suffix, factor in (("Ki", 1 << 10), ("Mi", 1 << 20), ("Gi", 1 << 30)):
        if text.endswith(suffix):
            return int(text[: -len(suffix)]) * factor
    return int(text)


def parse_cpu(text: str) -> float:
    """Cores of a CPU quantity: ``0.5`` or ``500m``."""
    return int(text[:-1]) / 1000 if text.endswith("m") else float(text)


__all__ = [
    "FUEL_PER_CPU_SECOND",
    "TICK_S",
    "Compiled",
    "HostFault",
    "WasmRuntime",
    "engine_key",
    "parse_cpu",
    "parse_quantity",
]
