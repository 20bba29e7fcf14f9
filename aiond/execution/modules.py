"""Installed modules as execution targets: which can run, how many at once, and one call of one.

:class:`Modules` is the executor's view of the daemon's module store:

- **What may run.** A module runs only when the lock file names it, its files still hash to what
  was recorded at install, and the signer recorded then still satisfies the active trust policy
  (:func:`aion.modules.install.verify_installed`, the check ``aionctl module verify`` makes). The
  set is rebuilt at start-up, after every install or removal, and whenever the lock file changes
  (a local ``aionctl install`` into the same store). Before each call the module's files are
  stat'ed; a file whose size, time or inode moved is verified again before anything runs, so a
  module whose files changed after install is never run. A module that is listed in modules.yml
  but cannot run is absent from :attr:`Modules.runnable`, which is what the router sees, and its
  reason is in :attr:`Modules.problems`.
- **How many at once.** Each module has a gate: ``parallelism`` calls run, ``queue_depth`` more
  wait, and a task whose first target is a module with a full gate is refused at admission with a
  retry hint (:meth:`Modules.retry_after`). ``aionctl module parallelism`` changes the limit at run
  time; the change is stored, audited and outlives a restart.
- **One call** (:meth:`Modules.call`): the secrets the manifest declares are resolved first (a
  required one that has no value means the module never starts), the limits are the smaller of
  modules.yml's, the manifest's and what is left of the task's deadline, and the module runs in its
  runtime: :mod:`aion.modules.wasm` in a worker thread, or :mod:`aion.modules.sandbox` as a child
  process. The outcome is an :class:`aion.modules.abi.Answer` or a typed
  :class:`aion.modules.abi.Failure`; nothing a module does raises here.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import dataclasses
import datetime as dt
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import yaml

from aion.config.model import Module, Trust
from aion.envelopes import audit
from aion.errors import Error, InputError, NotFound
from aion.inputs import quoted
from aion.modules import abi
from aion.modules.abi import Failure, FailureKind, Host, Limits, Outcome, SecretGrant
from aion.modules.store import ModuleStore
from aion.oci.model import Digest
from aion.secrets.base import SecretMissing, SecretsBackend
from aiond.state.backend import ModuleParallelism, StateBackend

log = logging.getLogger("aiond.module")

SECRET_TIMEOUT_S = 2.0
"""Longest a module's secrets may take to resolve (a remote backend); past it the call fails."""
WATCH_INTERVAL_S = 2.0
"""How often the lock file is checked for installs made by another process."""
LOG_RATE = 20.0
"""Module log lines a second, per module, that reach aiond's log (bursts of :data:`LOG_BURST`)."""
LOG_BURST = 100
MAX_WORKERS = 64
"""Threads that run WASM calls; a module's parallelism beyond this waits for a thread."""


@dataclasses.dataclass(frozen=True, slots=True)
class Installed:
    """A verified module, as its manifest describes it."""

    name: str
    digest: str
    runtime: str
    directory: Path
    code: Path
    """The .wasm file, or the program of a subprocess module."""
    command: tuple[str, ...]
    required: frozenset[str]
    optional: frozenset[str]
    timeout_ms: int | None
    retries: int
    memory: int | None
    network: bool
    files: tuple[tuple[str, int, int, int], ...]
    """(path, size, mtime_ns, inode) of each file at verification: what a change would move."""


class _Gate:
    """``limit`` calls at once and ``depth`` waiting, counting the places that admitted tasks hold
    before their call starts (:meth:`hold`); the rest are refused."""

    def __init__(self, limit: int, depth: int) -> None:
        self.limit = limit
        self.depth = depth
        self.running = 0
        self.held = 0
        """Places taken by tasks admitted with this module first, whose call has not started yet."""
        self._waiting: collections.deque[asyncio.Future[None]] = collections.deque()

    @property
    def waiting(self) -> int:
        return len(self._waiting) + self.held

    def full(self) -> bool:
        return self.running + self.waiting >= self.limit + self.depth

    def hold(self) -> bool:
        if self.full():
            return False
        self.held += 1
        return True

    def unhold(self) -> None:
        self.held = max(0, self.held - 1)

    async def acquire(self, *, held: bool = False) -> bool:
        """A slot (True), or False when the queue is full too. ``held``: the caller holds a place
        (:meth:`hold`), which this turns into the slot or the wait."""
        if held:
            self.unhold()
        elif self.full():
            return False
        if self.running < self.limit and not self._waiting:
            self.running += 1
            return True
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter in self._waiting:
                self._waiting.remove(waiter)
            elif waiter.done() and not waiter.cancelled():
                self.release()  # handed a slot as it was canceled: pass it on
            raise
        return True

    def release(self) -> None:
        self.running -= 1
        self._wake()

    def resize(self, limit: int, depth: int) -> None:
        self.limit, self.depth = limit, depth
        self._wake()

    def _wake(self) -> None:
        while self._waiting and self.running < self.limit:
            waiter = self._waiting.popleft()
            if not waiter.done():
                self.running += 1
                waiter.set_result(None)


@dataclasses.dataclass(slots=True)
class Place:
    """A place in a module's gate, held from admission until the task's call of it starts."""

    module: str
    gate: _Gate
    used: bool = False

    def release(self) -> None:
        """Give the place back unused (the task ended before calling the module)."""
        if not self.used:
            self.used = True
            self.gate.unhold()


class _LogBucket:
    """Per-module rate limit of the log lines that reach aiond's log."""

    __slots__ = ("dropped", "last", "tokens")

    def __init__(self) -> None:
        self.tokens = float(LOG_BURST)
        self.last = time.monotonic()
        self.dropped = 0

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(LOG_BURST, self.tokens + (now - self.last) * LOG_RATE)
        self.last = now
        if self.tokens < 1:
            self.dropped += 1
            return False
        self.tokens -= 1
        return True


class Modules:
    def __init__(
        self,
        store_dir: Path,
        *,
        cache_dir: Path | None,
        secrets: SecretsBackend,
        backend: StateBackend,
        emit: Callable[[dict[str, Any]], Awaitable[None]],
        trust: Callable[[], tuple[Trust, Path] | None],
        sandbox_uid: int = 65534,
        committed: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._store = ModuleStore(store_dir)
        self._cache_dir = cache_dir
        self._secrets = secrets
        self._backend = backend
        self._emit = emit
        self._committed = committed
        """Given, a parallelism change's audit event is written in the change's transaction, then
        this is called; else the event is emitted after the change."""
        self._trust = trust
        self._installed: dict[str, Installed] = {}
        self.problems: dict[str, str] = {}
        """Why an installed module cannot run, by name."""
        self.runnable: frozenset[str] = frozenset()
        self._gates: dict[str, _Gate] = {}
        self._overrides: dict[str, ModuleParallelism] = {}
        self._logs: dict[str, _LogBucket] = {}
        self._wasm: Any = None
        self._sandbox: Any = None
        self._sandbox_uid = sandbox_uid
        self._compiled: dict[tuple[str, str], Any] = {}
        self._pool = concurrent.futures.ThreadPoolExecutor(MAX_WORKERS, thread_name_prefix="aion-module")
        self._lock_seen: tuple[int, int, int] | None = None
        self._refreshing = asyncio.Lock()
        self._runtime_lock = threading.Lock()
        self.failures: collections.Counter[tuple[str, str]] = collections.Counter()

    async def load(self) -> None:
        self._overrides = {p.module: p for p in await asyncio.to_thread(self._backend.module_parallelism)}
        await self.refresh()

    async def close(self) -> None:
        """Stop: calls still running end at their own time limits (the epoch keeps advancing until
        they have), then the runtime stops."""
        await asyncio.to_thread(self._pool.shutdown, wait=True, cancel_futures=True)
        if self._wasm is not None:
            self._wasm.close()
        if self._sandbox is not None:
            self._sandbox.close()

    # -- what may run ----------------------------------------------------------------------------------

    async def refresh(self) -> None:
        """Verify every installed module again and rebuild :attr:`runnable`."""
        async with self._refreshing:
            self._lock_seen = self._lock_stat()
            installed, problems = await asyncio.to_thread(self._verify_all)
            self._installed, self.problems = installed, problems
            self.runnable = frozenset(installed)
            self._compiled = {k: v for k, v in self._compiled.items() if k[0] in installed}
        for module in installed.values():
            if module.runtime == "wasm" and (module.name, module.digest) not in self._compiled:
                # Compiled now, in the background, rather than by the first task that needs it.
                asyncio.get_running_loop().run_in_executor(self._pool, self._warm, module)

    def _warm(self, module: Installed) -> None:
        try:
            compiled = self._wasm_runtime().load(module.code)
        except Exception:  # the first call reports it as the module's failure
            return
        self._compiled.setdefault((module.name, module.digest), compiled)

    async def watch(self) -> None:
        """Refresh whenever the lock file changes (an install by another process); runs until canceled."""
        while True:
            await asyncio.sleep(WATCH_INTERVAL_S)
            if self._lock_stat() != self._lock_seen:
                try:
                    await self.refresh()
                except Exception:  # a damaged lock file is logged; the last good view stays
                    log.exception("modules: the store could not be read again")

    def _lock_stat(self) -> tuple[int, int, int] | None:
        try:
            st = (self._store.root / "aion.lock").stat()
        except OSError:
            return None
        return (st.st_size, st.st_mtime_ns, st.st_ino)

    def _verify_all(self) -> tuple[dict[str, Installed], dict[str, str]]:
        try:
            lock = self._store.lock()
        except InputError as exc:
            return {}, {"*": exc.message}
        if not lock:
            return {}, {}
        trust = self._trust()
        installed: dict[str, Installed] = {}
        problems: dict[str, str] = {}
        if trust is None:
            return {}, dict.fromkeys(lock, "no trust policy is active, so no module is run")
        # Loaded only for a store with modules in it: the install pipeline (cryptography) is heavy.
        from aion.modules.install import verify_installed

        checks = {c.name: c for c in verify_installed(self._store, trust[0], trust[1])}
        for name, entry in lock.items():
            check = checks.get(name)
            if check is None or not check.ok:
                problems[name] = "; ".join(check.problems) if check else "it could not be checked"
                continue
            try:
                installed[name] = _describe(
                    name, entry, self._store.module_dir(Digest.parse(entry["digest"]))
                )
            except (Error, OSError, KeyError, ValueError, TypeError) as exc:
                problems[name] = f"its manifest cannot be used: {getattr(exc, 'message', exc)}"
        return installed, problems

    def retries(self, name: str) -> int:
        """How often a failed call of ``name`` may be tried again (its manifest's policies.retries)."""
        module = self._installed.get(name)
        return min(module.retries, 3) if module is not None else 0

    def why_not(self, name: str) -> str:
        if name in self.runnable:
            return ""
        return self.problems.get(name) or "it is not installed (aionctl install REF)"

    # -- parallelism ---------------------------------------------------------------------------------

    def limit(self, spec: Module) -> int:
        override = self._overrides.get(spec.name)
        return override.parallelism if override is not None else spec.parallelism

    def _gate(self, spec: Module) -> _Gate:
        limit = self.limit(spec)
        depth = max(spec.queue_depth, 0)
        gate = self._gates.get(spec.name)
        if gate is None:
            gate = self._gates[spec.name] = _Gate(limit, depth)
        elif (gate.limit, gate.depth) != (limit, depth):
            gate.resize(limit, depth)
        return gate

    def hold(self, spec: Module) -> Place | float:
        """A place for a task whose first target is ``spec``; else seconds to suggest before a retry
        (its slots and queue are full)."""
        gate = self._gate(spec)
        if gate.hold():
            return Place(spec.name, gate)
        return max(0.05, spec.timeout_ms / 1000 * max(1, gate.waiting) / max(1, gate.limit))

    def load_of(self, name: str) -> tuple[int, int]:
        """(running, waiting) for ``name``."""
        gate = self._gates.get(name)
        return (gate.running, gate.waiting) if gate is not None else (0, 0)

    def levels(self) -> dict[str, tuple[int, int, int]]:
        """(running, waiting, parallelism) of every module that has been called."""
        return {name: (g.running, g.waiting, g.limit) for name, g in self._gates.items()}

    def overrides(self) -> dict[str, ModuleParallelism]:
        return dict(self._overrides)

    async def set_parallelism(
        self, spec: Module | None, name: str, parallelism: int, *, principal: str, reason: str
    ) -> tuple[int, int]:
        """Set ``name``'s parallelism at run time; returns (new, previous). The module must be one of
        the active policy's (``spec``)."""
        if spec is None:
            raise NotFound(
                f"module {quoted(name)} is not in the active policy's modules.yml",
                hint="see aionctl module status",
            )
        previous = self.limit(spec)
        setting = ModuleParallelism(name, parallelism, principal, dt.datetime.now(dt.UTC), reason)
        recorded = audit(principal=principal, action="module.parallelism", target=name, outcome="success",
                         before=str(previous), after=str(parallelism), reason=reason or None)  # fmt: skip
        if self._committed is None:
            await asyncio.to_thread(self._backend.set_module_parallelism, setting)
        else:
            await asyncio.to_thread(lambda: self._backend.set_module_parallelism(setting, audit=recorded))
        self._overrides[name] = setting
        self._gate(spec)
        if self._committed is None:
            await self._emit(recorded)
        else:
            await self._committed()
        return parallelism, previous

    # -- one call ----------------------------------------------------------------------------------

    async def call(
        self,
        spec: Module,
        *,
        task_id: str,
        intent: str,
        step: str,
        text: str,
        timeout_s: float,
        place: Place | None = None,
    ) -> Outcome:
        """Run ``spec`` once on ``text``; waits for a slot of its gate, within ``timeout_s``. ``place``:
        the place the task was admitted with, used for this call."""
        started = time.monotonic()
        gate = self._gate(spec)
        held = place is not None and not place.used and place.module == spec.name
        if place is not None:
            if held:
                place.used = True
            else:
                place.release()
        try:
            async with asyncio.timeout(max(0.001, timeout_s)):
                admitted = await gate.acquire(held=held)
        except TimeoutError:
            return Failure(FailureKind.TIMEOUT, "no slot of the module came free before the deadline")
        if not admitted:
            return Failure(
                FailureKind.SATURATED, f"its {gate.limit} slots and {gate.depth} queue places are full"
            )
        running: list[asyncio.Future[Outcome]] = []
        try:
            remaining = timeout_s - (time.monotonic() - started)
            return await self._call(spec, task_id, intent, step, text, remaining, running)
        finally:
            if running and not running[0].done():
                # The task was canceled while its WASM call runs on in a worker thread (until its own
                # time limit): the slot is free only when the call is.
                running[0].add_done_callback(lambda _done: gate.release())
            else:
                gate.release()

    async def _call(  # noqa: PLR0917 - call()'s arguments, passed on
        self,
        spec: Module,
        task_id: str,
        intent: str,
        step: str,
        text: str,
        remaining: float,
        running: list[asyncio.Future[Outcome]],
    ) -> Outcome:
        module = self._installed.get(spec.name)
        if module is not None and _changed(module):
            await self.refresh()
            module = self._installed.get(spec.name)
        if module is None:
            return Failure(FailureKind.UNAVAILABLE, f"it is not run: {self.why_not(spec.name)}")
        grant = await self._grant(module)
        if isinstance(grant, Failure):
            return grant
        limits = self._limits(spec, module, remaining)
        if limits.timeout_s <= 0:
            return Failure(FailureKind.TIMEOUT, "the task's deadline left no time for the module")
        lines: list[tuple[int, str]] = []
        host = Host(grant, lambda level, message: lines.append((level, message)))
        request = abi.request_bytes(task_id=task_id, intent=intent, step=step, text=text)
        if module.runtime == "wasm":
            outcome = await self._wasm_call(module, request, limits, host, running)
        else:
            outcome = await self._subprocess_call(module, request, limits, host)
        self._relay(module.name, task_id, lines, host.dropped)
        if isinstance(outcome, Failure):
            self.failures[(module.name, outcome.kind.value)] += 1
        return outcome

    async def _grant(self, module: Installed) -> SecretGrant | Failure:
        names = sorted(module.required | module.optional)
        if not names:
            return SecretGrant(frozenset(), {})

        def resolve() -> tuple[dict[str, str], list[str]]:
            values, missing = {}, []
            for name in names:
                try:
                    values[name] = self._secrets.get(name)
                except SecretMissing:
                    if name in module.required:
                        missing.append(name)
                except InputError:
                    missing.append(name)
            return values, missing

        try:
            async with asyncio.timeout(SECRET_TIMEOUT_S):
                values, missing = await asyncio.to_thread(resolve)
        except TimeoutError:
            return Failure(FailureKind.SECRET, f"its secrets did not resolve within {SECRET_TIMEOUT_S:g} s")
        if missing:
            return Failure(
                FailureKind.SECRET,
                f"the secret{'s' if len(missing) > 1 else ''} {', '.join(missing)} it requires "
                "has no value (see aionctl secrets check)",
            )
        return SecretGrant(module.required | module.optional, values)

    @staticmethod
    def _limits(spec: Module, module: Installed, remaining: float) -> Limits:
        from aion.modules.wasm import FUEL_PER_CPU_SECOND, parse_cpu, parse_quantity

        timeout_ms = min(spec.timeout_ms, module.timeout_ms or spec.timeout_ms)
        timeout_s = min(timeout_ms / 1000, remaining)
        memory = parse_quantity(spec.memory)
        if module.memory is not None:
            memory = min(memory, module.memory)
        fuel = spec.fuel or max(1000, int(parse_cpu(spec.cpu) * (timeout_ms / 1000) * FUEL_PER_CPU_SECOND))
        return Limits(timeout_s=timeout_s, memory_bytes=memory, fuel=fuel)

    async def _wasm_call(
        self,
        module: Installed,
        request: bytes,
        limits: Limits,
        host: Host,
        running: list[asyncio.Future[Outcome]],
    ) -> Outcome:
        loop = asyncio.get_running_loop()
        try:
            compiled = self._compiled.get((module.name, module.digest))
            if compiled is None:
                runtime = self._wasm_runtime()
                compiled = await loop.run_in_executor(self._pool, runtime.load, module.code)
                self._compiled[(module.name, module.digest)] = compiled
        except Exception as exc:  # an invalid module, an unreadable file: it cannot run
            return Failure(
                FailureKind.UNAVAILABLE, f"it could not be compiled: {str(exc).splitlines()[0][:200]}"
            )
        runtime = self._wasm_runtime()
        # The call runs on in its thread if the task is canceled meanwhile, until its own time limit.
        call = loop.run_in_executor(self._pool, runtime.call, compiled, module.name, request, limits, host)
        running.append(call)
        return await asyncio.shield(call)

    def _wasm_runtime(self) -> Any:
        with self._runtime_lock:
            if self._wasm is None:
                from aion.modules.wasm import WasmRuntime

                self._wasm = WasmRuntime(self._cache_dir)
            return self._wasm

    async def _subprocess_call(
        self, module: Installed, request: bytes, limits: Limits, host: Host
    ) -> Outcome:
        try:
            from aion.modules.sandbox import SubprocessRuntime  # type: ignore[import-untyped,unused-ignore]
        except ImportError:  # pragma: no cover - shipped together
            return Failure(FailureKind.UNAVAILABLE, "this aiond has no subprocess runtime")
        if self._sandbox is None:
            self._sandbox = SubprocessRuntime(uid=self._sandbox_uid)
        missing = self._sandbox.available()
        if missing:
            return Failure(FailureKind.UNAVAILABLE, f"subprocess modules cannot run here: {missing}")
        outcome: Outcome = await self._sandbox.call(
            module.directory, module.command, request, limits, host, network=module.network
        )
        return outcome

    def _relay(self, name: str, task_id: str, lines: list[tuple[int, str]], dropped: int) -> None:
        bucket = self._logs.get(name)
        if bucket is None:
            bucket = self._logs[name] = _LogBucket()
        for level, message in lines:
            if bucket.take():
                log.log(
                    (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR)[level],
                    "module %s (task %s): %s", name, task_id, message,
                )  # fmt: skip
        if dropped:
            bucket.dropped += dropped


def _describe(name: str, entry: dict[str, Any], directory: Path) -> Installed:
    """The facts of a verified module that running it needs, from its manifest."""
    from aion.modules.wasm import parse_quantity

    raw = (directory / "agent.yaml").read_bytes()
    manifest = yaml.safe_load(raw)
    if not isinstance(manifest, dict):
        raise ValueError("agent.yaml is not a mapping")
    runtime_spec = manifest.get("runtime") or {}
    runtime = str(runtime_spec.get("type") or entry.get("runtime") or "wasm")
    permissions = manifest.get("permissions") or {}
    required, optional = SecretGrant.parse(str(s) for s in permissions.get("secrets") or ())
    policies = manifest.get("policies") or {}
    resources = runtime_spec.get("resources") or {}
    memory = parse_quantity(str(resources["memory"])) if resources.get("memory") else None
    command: tuple[str, ...] = ()
    if runtime == "wasm":
        wasm = sorted(p for p in directory.glob("*.wasm") if p.is_file() and not p.is_symlink())
        if len(wasm) != 1:
            raise ValueError(f"it has {len(wasm)} .wasm files; a wasm module has exactly one")
        code = wasm[0]
    else:
        command = tuple(str(c) for c in (manifest.get("entrypoints") or {}).get("command") or ())
        if not command or command[0].startswith("/") or ".." in Path(command[0]).parts:
            raise ValueError("entrypoints.command must name a program inside the module")
        code = directory / command[0]
    timeout = policies.get("timeout_ms")
    return Installed(
        name=name,
        digest=str(entry["digest"]),
        runtime=runtime,
        directory=directory,
        code=code,
        command=command,
        required=required,
        optional=optional,
        timeout_ms=int(timeout) if isinstance(timeout, int) and timeout > 0 else None,
        retries=int(policies.get("retries") or 0),
        memory=memory,
        network=permissions.get("network") == "allow",
        files=_files(directory),
    )


def _files(directory: Path) -> tuple[tuple[str, int, int, int], ...]:
    """Every file and directory of the module (a directory's time moves when an entry is added,
    removed or renamed in it), the module's own directory first."""
    found = []
    for path in [directory, *sorted(directory.rglob("*"))]:
        with contextlib.suppress(OSError):
            st = path.lstat()
            found.append((path.relative_to(directory).as_posix(), st.st_size, st.st_mtime_ns, st.st_ino))
    return tuple(found)


def _changed(module: Installed) -> bool:
    """Whether any of the module's files or directories moved since it was verified (a stat each; no
    reading, no listing: a file added or removed moves its directory's time)."""
    for relative, size, mtime, inode in module.files:
        try:
            st = os.lstat(module.directory / relative)
        except OSError:
            return True
        if (st.st_size, st.st_mtime_ns, st.st_ino) != (size, mtime, inode):
            return True
    return False


__all__ = ["Installed", "Modules", "Place"]
