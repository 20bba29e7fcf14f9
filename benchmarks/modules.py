"""The module runtimes, side by side with their baselines, in one run.

1. **A WASM call**: a 10 KB request through a compiled module, in aiond's runtime
   (``WasmRuntime.call`` with a fresh ``Host``, as ``aiond/execution/modules.py`` calls it) and with
   bare wasmtime-py written out here: the same engine settings, a new Store and instance a call,
   WASI with files as standard input and output, the three ``aion`` imports as functions that do
   nothing. Two modules: ``tests/fixtures/modules/echo.c`` (answers its text and logs it: one host
   call) and the example ``pii_redact`` on a text full of addresses, numbers and cards. Each call is
   timed alone, from the request's bytes to the parsed answer; the two sides alternate in blocks.
   Then both again from a worker thread, as aiond makes the call, with the event loop idle and busy.
2. **The compiled cache**: a new ``WasmRuntime`` on a cache directory another one filled, and its
   ``load()`` of the module, beside a cold load (an empty cache: Cranelift compiles) and beside bare
   ``Module.deserialize_file`` and ``Module(engine, wasm)``.
3. **A subprocess call**: ``SubprocessRuntime.call`` of a tiny shell script that answers the ABI, in
   bubblewrap and in the unshare + setpriv + prlimit fallback, beside ``subprocess.run`` of the same
   script (no sandbox).
4. **End to end**: a real aiond with the example ``pii_redact`` signed and installed as the demo does
   it (``aionctl module keygen``, ``module push`` to an image layout with an SBOM, ``module sign``,
   ``aionctl install`` under a trust rule), routed to on the local route; ``SubmitTask`` with
   ``wait`` over gRPC at a fixed rate (open loop, latency from each task's due time), then closed
   loop until the daemon has run 100,000 module calls, with its RSS read as it goes. The baseline
   is a second aiond whose tasks a stand-in provider answers with the module's own answer (so its
   task store, which keeps finished tasks, fills alike); the runtime's own RSS is read along as many
   calls in this process.

    python benchmarks/modules.py [--calls 5000] [--rate 200] [--seconds 20] [--total 100000]

Targets (the module runtimes' issue): a cached WASM call <= 1.2x the bare call and median <= 300 us;
a warm compiled-cache load <= 5 ms; subprocess overhead over a bare ``subprocess.run`` <= 15 ms
median; aiond's RSS grows <= 10 MiB from 5,000 to 100,000 module calls.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import wasmtime
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aion.modules.abi import Answer, Host, Limits, Outcome, SecretGrant, request_bytes  # noqa: E402
from aion.modules.sandbox import Confinement, SubprocessRuntime  # noqa: E402
from aion.modules.wasm import WasmRuntime, engine_key  # noqa: E402
from benchmarks._loadgen import open_loop  # noqa: E402
from benchmarks._report import machine, median, percentile, today, write_section  # noqa: E402

BIN = Path(sys.executable).parent
EXAMPLES = ROOT / "examples" / "modules"
TEXT_BYTES = 10 * 1024
PARAGRAPH = (
    "Hi, this is Dana Whitfield from the east hall. My card 4111 1111 1111 1111 was charged twice for "
    "order 55123 (EUR 120.00, 2026-11-02); call me on +1 415 555 0134 or write to "
    "dana.whitfield@example.com. The storage cluster lost power at 02:10, the generators started within "
    "a minute, and replication caught up by 03:05 on 192.168.10.200. "
)
TEXT = (PARAGRAPH * (TEXT_BYTES // len(PARAGRAPH) + 1))[:TEXT_BYTES]
"""10 KB of ASCII: a text that gives pii_redact work (an e-mail, a phone and a card every 330 bytes)."""
LIMITS = Limits(timeout_s=0.4, memory_bytes=64 << 20, fuel=400_000_000)
"""What aiond gives pii_redact with the example modules.yml: 400 ms, 64 MiB, fuel for one core."""
SANDBOX_LIMITS = Limits(timeout_s=5.0, memory_bytes=256 << 20, fuel=2_000_000_000)
WASM_CALL_TARGET_US, WASM_RATIO_TARGET = 300.0, 1.2
WARM_LOAD_TARGET_MS = 5.0
SUBPROCESS_TARGET_MS = 15.0
RSS_GROWTH_TARGET_MIB = 10.0
SHM = Path("/dev/shm")  # noqa: S108 - the bare call's streams go in a private directory made there
ANSWER_SCRIPT = """#!/bin/sh
# The smallest program that answers the module ABI: read the request, answer one line.
cat >/dev/null
printf '%s\\n' '{"output":{"text":"ok"}}'
"""


def us(seconds: list[float]) -> tuple[float, float]:
    """(median, p99) in microseconds."""
    return median(seconds) * 1e6, percentile(seconds, 99) * 1e6


def ms(seconds: list[float]) -> tuple[float, float]:
    """(median, p99) in milliseconds."""
    return median(seconds) * 1e3, percentile(seconds, 99) * 1e3


def verdict(ok: bool) -> str:
    return "**met**" if ok else "**MISSED**"


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise SystemExit(f"no VmRSS for process {pid}")


def wasm_modules() -> dict[str, Path]:
    """The modules measured: the echo test module (built with the test rig's flags) and the examples."""
    from tests.rig.wasm import build, fixture, toolchain_missing

    missing = toolchain_missing()
    if missing is not None:
        raise SystemExit(
            f"building echo.c needs the WASM toolchain: {missing} (sudo python3 tests/rig/install.py apt)"
        )
    return {
        "echo": build(fixture("echo")),
        "pii_redact": EXAMPLES / "pii_redact" / "pii_redact.wasm",
        "summarize_text": EXAMPLES / "summarize_text" / "summarize_text.wasm",
    }


# -- 1. a WASM call --------------------------------------------------------------------------------


def _nothing(*_args: int) -> int:
    return -1


class BareWasm:
    """The baseline: wasmtime-py as its documentation shows it, with nothing of aion's around it.

    ``metered``: the engine settings aiond uses (fuel and epoch interruption, which change the
    compiled code), with fuel and a deadline set on each Store; else wasmtime's defaults. Standard
    input and output are files in a tmpfs when there is one (``/dev/shm``).
    """

    def __init__(self, wasm: Path, work: Path, *, metered: bool) -> None:
        config = wasmtime.Config()
        config.cranelift_opt_level = "speed"
        if metered:
            config.consume_fuel = True
            config.epoch_interruption = True
        self.metered = metered
        self.engine = wasmtime.Engine(config)
        linker = wasmtime.Linker(self.engine)
        linker.define_wasi()
        i32, i64 = wasmtime.ValType.i32(), wasmtime.ValType.i64()
        linker.define_func("aion", "secret_get", wasmtime.FuncType([i32] * 4, [i32]), _nothing)
        linker.define_func("aion", "log", wasmtime.FuncType([i32] * 3, []), lambda _l, _p, _n: None)
        linker.define_func("aion", "now", wasmtime.FuncType([], [i64]), time.time_ns)
        self.pre = linker.instantiate_pre(wasmtime.Module.from_file(self.engine, str(wasm)))
        self.stdin, self.stdout = work / "stdin", work / "stdout"

    def call(self, request: bytes) -> Any:
        self.stdin.write_bytes(request)
        store = wasmtime.Store(self.engine)
        if self.metered:
            store.set_fuel(LIMITS.fuel)
            store.set_epoch_deadline(1 << 30)  # nothing advances this engine's epoch
        wasi = wasmtime.WasiConfig()
        wasi.argv = ["module"]
        wasi.stdin_file = str(self.stdin)
        wasi.stdout_file = str(self.stdout)
        store.set_wasi(wasi)
        start = self.pre.instantiate(store).exports(store)["_start"]
        assert isinstance(start, wasmtime.Func)
        try:
            start(store)
        except wasmtime.ExitTrap as exit_trap:
            if exit_trap.code != 0:
                raise SystemExit(f"the bare call exited {exit_trap.code}") from None
        return json.loads(self.stdout.read_bytes())


@dataclasses.dataclass
class WasmFigures:
    aion: list[float]
    bare: list[float]
    bare_default: list[float]
    out_bytes: int
    output: dict[str, Any]


def _aion_caller(runtime: WasmRuntime, wasm: Path) -> Callable[[bytes], Outcome]:
    compiled = runtime.load(wasm)
    lines: list[tuple[int, str]] = []

    def call(request: bytes) -> Outcome:
        lines.clear()
        host = Host(SecretGrant(frozenset(), {}), lambda level, message: lines.append((level, message)))
        return runtime.call(compiled, "module", request, LIMITS, host)

    return call


def wasm_calls(modules: dict[str, Path], work: Path, calls: int, block: int = 250) -> dict[str, WasmFigures]:
    request = request_bytes(
        task_id="01JDBENCHMARK0000000000000", intent="draft_reply", step="complete", text=TEXT
    )
    runtime = WasmRuntime(work / "call-cache")
    shm = SHM if SHM.is_dir() else work
    results: dict[str, WasmFigures] = {}
    try:
        for name in ("echo", "pii_redact"):
            aion_call = _aion_caller(runtime, modules[name])
            with (
                tempfile.TemporaryDirectory(dir=shm, prefix="aion-bench-") as a,
                tempfile.TemporaryDirectory(dir=shm, prefix="aion-bench-") as b,
            ):
                bare = BareWasm(modules[name], Path(a), metered=True)
                default = BareWasm(modules[name], Path(b), metered=False)
                first = aion_call(request)
                if not isinstance(first, Answer):
                    raise SystemExit(f"{name} did not answer in aion's runtime: {first}")
                if bare.call(request)["output"]["text"] != first.text:
                    raise SystemExit(f"{name}: the bare call answered differently")
                sides: list[tuple[list[float], Callable[[bytes], object]]] = [
                    ([], aion_call), ([], bare.call), ([], default.call)
                ]  # fmt: skip
                for _ in range(200):  # warm-up
                    for _, fn in sides:
                        fn(request)
                for _ in range(max(1, calls // block)):
                    for times, fn in sides:
                        for _ in range(block):
                            started = time.perf_counter()
                            fn(request)
                            times.append(time.perf_counter() - started)
                results[name] = WasmFigures(
                    sides[0][0], sides[1][0], sides[2][0], len(first.text.encode()), dict(first.output)
                )
            print(
                f"wasm call {name}: aion {us(sides[0][0])[0]:.0f} us, bare {us(sides[1][0])[0]:.0f} us",
                file=sys.stderr,
            )
    finally:
        runtime.close()
    return results


@dataclasses.dataclass
class ThreadFigures:
    """Calls made from a worker thread, as aiond makes them, by event-loop condition and side."""

    times: dict[tuple[str, str], list[float]]
    failed: int


async def _busy_half(stop: asyncio.Event) -> None:
    """Keep the event loop busy half the time: 0.5 ms of Python work, then 0.5 ms asleep."""
    while not stop.is_set():
        started = time.perf_counter()
        while time.perf_counter() - started < 0.0005:
            pass
        await asyncio.sleep(0.0005)


def threaded_calls(wasm: Path, work: Path, calls: int) -> ThreadFigures:
    """``WasmRuntime.call`` and the bare call from a worker thread (``run_in_executor``, as
    ``aiond/execution/modules.py`` runs WASM calls), with the event loop idle and with it busy half
    the time, as a daemon under load is."""
    import concurrent.futures

    request = request_bytes(
        task_id="01JDBENCHMARK0000000000000", intent="draft_reply", step="complete", text=TEXT
    )
    runtime = WasmRuntime(work / "thread-cache")
    figures = ThreadFigures({}, 0)
    try:
        aion_call = _aion_caller(runtime, wasm)
        with tempfile.TemporaryDirectory(dir=SHM if SHM.is_dir() else work, prefix="aion-bench-") as tmp:
            bare = BareWasm(wasm, Path(tmp), metered=True)

            def aion_checked(request: bytes) -> None:
                if not isinstance(aion_call(request), Answer):
                    figures.failed += 1

            async def series(fn: Callable[[bytes], object], busy: bool) -> list[float]:
                loop = asyncio.get_running_loop()
                stop = asyncio.Event()
                load = asyncio.create_task(_busy_half(stop)) if busy else None
                times = []
                with concurrent.futures.ThreadPoolExecutor(1) as pool:
                    for _ in range(calls):
                        started = time.perf_counter()
                        await loop.run_in_executor(pool, fn, request)
                        times.append(time.perf_counter() - started)
                stop.set()
                if load is not None:
                    await load
                return times

            for busy in (False, True):
                for side, fn in (("aion", aion_checked), ("bare", bare.call)):
                    figures.times[("busy" if busy else "idle", side)] = asyncio.run(series(fn, busy))
    finally:
        runtime.close()
    busy_aion = us(figures.times[("busy", "aion")])
    print(
        f"wasm call from a thread, busy loop: aion {busy_aion[0]:.0f} / p99 {busy_aion[1]:.0f} us",
        file=sys.stderr,
    )
    return figures


# -- 2. the compiled cache -------------------------------------------------------------------------


@dataclasses.dataclass
class CacheFigures:
    wasm_kib: float
    cwasm_kib: float
    new_runtime: list[float]
    warm: list[float]
    cold: list[float]
    bare_deserialize: list[float]
    bare_compile: list[float]


@contextlib.contextmanager
def _runtime(cache: Path) -> Iterator[tuple[WasmRuntime, float]]:
    started = time.perf_counter()
    runtime = WasmRuntime(cache)
    made = time.perf_counter() - started
    try:
        yield runtime, made
    finally:
        runtime.close()


def cache_loads(
    modules: dict[str, Path], work: Path, cold_runs: int, warm_runs: int
) -> dict[str, CacheFigures]:
    results: dict[str, CacheFigures] = {}
    config = wasmtime.Config()
    config.consume_fuel, config.epoch_interruption, config.cranelift_opt_level = True, True, "speed"
    engine = wasmtime.Engine(config)
    for name, wasm in modules.items():
        figures = CacheFigures(wasm.stat().st_size / 1024, 0.0, [], [], [], [], [])
        for i in range(cold_runs):
            with _runtime(work / f"cold-{name}-{i}") as (runtime, _):
                started = time.perf_counter()
                runtime.load(wasm)
                figures.cold.append(time.perf_counter() - started)
        warm_dir = work / f"cold-{name}-0"
        cwasm = warm_dir / engine_key() / f"{hashlib.sha256(wasm.read_bytes()).hexdigest()}.cwasm"
        if not cwasm.is_file():
            raise SystemExit(f"the compiled cache has no {cwasm}")
        figures.cwasm_kib = cwasm.stat().st_size / 1024
        code = wasm.read_bytes()
        for _ in range(warm_runs):
            with _runtime(warm_dir) as (runtime, made):
                started = time.perf_counter()
                runtime.load(wasm)
                figures.warm.append(time.perf_counter() - started)
                figures.new_runtime.append(made)
            started = time.perf_counter()
            wasmtime.Module.deserialize_file(engine, str(cwasm))
            figures.bare_deserialize.append(time.perf_counter() - started)
        for _ in range(cold_runs):
            started = time.perf_counter()
            wasmtime.Module(engine, code)
            figures.bare_compile.append(time.perf_counter() - started)
        results[name] = figures
        print(
            f"cache {name}: warm load {ms(figures.warm)[0]:.2f} ms, cold {ms(figures.cold)[0]:.0f} ms",
            file=sys.stderr,
        )
    return results


# -- 3. a subprocess call --------------------------------------------------------------------------


@dataclasses.dataclass
class SandboxFigures:
    confinement: str
    problem: str | None
    cgroup: bool = False
    bare: list[float] = dataclasses.field(default_factory=list)
    sandbox: list[float] = dataclasses.field(default_factory=list)
    failures: list[str] = dataclasses.field(default_factory=list)
    """What the calls that did not answer ended as (left out of the times)."""
    attempted: int = 0
    """Sandboxed calls made, the warm-up's included."""


async def _sandbox_series(
    runtime: SubprocessRuntime, module: Path, request: bytes, calls: int, block: int
) -> SandboxFigures:
    figures = SandboxFigures(str(runtime.confinement), None, runtime.cgroups is not None)
    program = module / "bundle" / "answer.sh"

    async def sandboxed() -> bool:
        figures.attempted += 1
        host = Host(SecretGrant(frozenset(), {}), lambda _level, _message: None)
        outcome = await runtime.call(module, ["bundle/answer.sh"], request, SANDBOX_LIMITS, host)
        if isinstance(outcome, Answer):
            return True
        # Counted and reported rather than fatal: a call can fail for reasons outside the call (the
        # process limit counts every process of the sandbox uid on the host; a pids cgroup counts
        # what was never reaped), and that is a finding to report with the times.
        figures.failures.append(f"{outcome.kind}: {outcome.message}")
        return False

    def bare() -> None:
        done = subprocess.run([str(program)], input=request, capture_output=True, check=True)
        json.loads(done.stdout)

    for _ in range(10):  # warm-up
        await sandboxed()
        bare()
    for _ in range(max(1, calls // block)):
        for _ in range(block):
            started = time.perf_counter()
            bare()
            figures.bare.append(time.perf_counter() - started)
        for _ in range(block):
            started = time.perf_counter()
            if await sandboxed():
                figures.sandbox.append(time.perf_counter() - started)
    if not figures.sandbox:
        raise SystemExit(f"no sandboxed call answered ({runtime.confinement}): {figures.failures[-1]}")
    return figures


def sandbox_calls(work: Path, calls: int, block: int = 10) -> list[SandboxFigures]:
    module = work / "answer-module"
    (module / "bundle").mkdir(parents=True)
    script = module / "bundle" / "answer.sh"
    script.write_text(ANSWER_SCRIPT)
    script.chmod(0o755)
    for directory in (work, module, module / "bundle"):
        directory.chmod(0o755)  # the sandbox user enters the module's directories
    request = request_bytes(
        task_id="01JDBENCHMARK0000000000000", intent="invoice_ocr", step="complete", text=TEXT
    )
    results = []
    for confinement in (Confinement.BWRAP, Confinement.UNSHARE):
        scratch = work / f"scratch-{confinement}"
        runtime = SubprocessRuntime(fallback=confinement is Confinement.UNSHARE, scratch_root=scratch)
        problem = (
            f"bubblewrap is not installed here (the runtime would use {runtime.confinement})"
            if runtime.confinement is not confinement
            else runtime.available()
        )
        if problem is not None:
            results.append(SandboxFigures(str(confinement), problem))
            continue
        figures = asyncio.run(_sandbox_series(runtime, module, request, calls, block))
        results.append(figures)
        print(
            f"subprocess {confinement}: {ms(figures.sandbox)[0]:.1f} ms, bare {ms(figures.bare)[0]:.1f} ms",
            file=sys.stderr,
        )
    return results


# -- 4. end to end through aiond -------------------------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _run(argv: list[str], env: dict[str, str]) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:4])} ... exited {done.returncode}: {done.stderr[-2000:]}")
    return done.stdout


def prepare(work: Path, env: dict[str, str], provider_url: str) -> tuple[Path, Path]:
    """The example config set with pii_redact signed and installed (as tools/demo.py installs it),
    serving draft_reply on the local route too, and the local models at the stand-in provider.
    Returns the config set and a state directory holding the installed module."""
    aionctl = str(BIN / "aionctl")
    config, state = work / "config", work / "state-template"
    shutil.copytree(ROOT / "examples", config, ignore=shutil.ignore_patterns("modules", "README.md"))
    keys = {**env, "AION_KEY_PASSWORD": "bench"}
    _run([aionctl, "module", "keygen", "--out", str(config / "bench-signing")], keys)
    policies = yaml.safe_load((config / "policies.yml").read_text())
    policies["trust"]["rules"].insert(0, {"match": f"oci:{work}/**", "keys": ["bench-signing.pub"]})
    policies["limits"] = {"concurrency": {"local": 512}, "queue_depth": {"local": 4096}}
    (config / "policies.yml").write_text(yaml.safe_dump(policies, sort_keys=False))
    modules = yaml.safe_load((config / "modules.yml").read_text())
    for entry in modules["modules"]:
        if entry["name"] == "pii_redact":
            entry["routes"] = ["local", "hybrid"]
            entry["queue_depth"] = 256
    (config / "modules.yml").write_text(yaml.safe_dump(modules, sort_keys=False))
    models = yaml.safe_load((config / "models.yml").read_text())
    models["providers"] = {
        name: {"base_url": provider_url, "locality": "local", "timeout_ms": 10_000}
        for name in ("ollama", "vllm")
    }
    (config / "models.yml").write_text(yaml.safe_dump(models, sort_keys=False))
    sbom = work / "pii_redact.cdx.json"
    sbom.write_text(json.dumps({"bomFormat": "CycloneDX", "specVersion": "1.5", "version": 1,
                                "components": [{"type": "application", "name": "pii_redact", "version": "0.9.0"},
                                               {"type": "library", "name": "wasi-libc"}]}))  # fmt: skip
    ref = f"oci:{work / 'layout'}:pii_redact-0.9.0"
    _run([aionctl, "module", "push", str(EXAMPLES / "pii_redact"), ref, "--sbom", str(sbom)], env)
    _run([aionctl, "module", "sign", ref, "--key", str(config / "bench-signing.key")], keys)
    _run([aionctl, "install", ref, "--config", str(config), "--store", str(state / "modules")], env)
    return config, state


def serve_provider(answer: str) -> None:
    """The stand-in provider of ``benchmarks/_fastprovider.py``, answering ``answer`` as the content
    of every completion (so that its tasks carry the same answer as the module's)."""
    from benchmarks import _fastprovider as fast

    body = json.loads(fast.BODY)
    body["choices"][0]["message"]["content"] = answer
    fast.BODY = json.dumps(body).encode()
    head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(fast.BODY)}\r\n"
    fast.RESPONSE = (head + "Connection: keep-alive\r\n\r\n").encode() + fast.BODY
    asyncio.run(fast.main())


def start_provider(work: Path, answer: str) -> tuple[subprocess.Popen[str], str]:
    path = work / "answer.txt"
    path.write_text(answer)
    proc = subprocess.Popen(
        [sys.executable, __file__, "_provider", str(path)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    if not url.startswith("http://"):
        proc.kill()
        raise SystemExit("the stand-in provider did not start")
    return proc, url


@dataclasses.dataclass
class Daemon:
    proc: subprocess.Popen[bytes]
    grpc_addr: str
    http_addr: str
    token: str


def start_aiond(state: Path, config: Path, env: dict[str, str]) -> Daemon:
    token = _run(
        [str(BIN / "aiond"), "token", "--state-dir", str(state), "create", "bench", "--role", "operator"], env
    ).strip()
    grpc_addr, http_addr = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    proc = subprocess.Popen(
        [str(BIN / "aiond"), "--config", str(config), "--state-dir", str(state), "--grpc-listen", grpc_addr,
         "--http-listen", http_addr, "--log-level", "warning"],
        env=env,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"aiond exited with {proc.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"http://{http_addr}/readyz", timeout=2, trust_env=False).status_code == 200:
                return Daemon(proc, grpc_addr, http_addr, token)
        time.sleep(0.1)
    proc.kill()
    raise SystemExit("aiond was not ready within 60 s")


def stop(proc: subprocess.Popen[Any]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


def module_calls_counted(http_addr: str) -> int:
    """Calls of pii_redact aiond has run, from its /metrics (the call-duration histogram's count)."""
    text = httpx.get(f"http://{http_addr}/metrics", timeout=10, trust_env=False).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith("aion_module_call_duration_seconds_count") and 'module="pii_redact"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


def rss_marks(total: int) -> list[int]:
    """When RSS is read: at 5,000 (the warm-up) and every 10,000 after."""
    return sorted({5_000, *range(10_000, total, 10_000)})


@dataclasses.dataclass(frozen=True)
class Run:
    """One aiond run: which intent its tasks ask for, and what must answer them."""

    label: str
    intent: str
    target_kind: str


MODULE_RUN = Run("module", "draft_reply", "TARGET_KIND_MODULE")
PROVIDER_RUN = Run("provider", "summarize", "TARGET_KIND_MODEL")


@dataclasses.dataclass
class EndToEnd:
    run: Run
    open_latencies_ms: list[float]
    open_failures: int
    sent: int
    rss: list[tuple[int, float]]
    """(tasks answered, aiond's RSS MiB): at 5,000, every 10,000 after, and at the end."""
    closed_seconds: float
    closed_done: int
    closed_failures: int
    counted: int
    target: str
    task_bytes: int
    """The size of one finished task's message: what aiond's task store keeps of it."""


async def _drive(daemon: Daemon, run: Run, args: argparse.Namespace) -> EndToEnd:
    import grpc

    from aion.api.v1 import common_pb2, tasks_pb2, tasks_pb2_grpc

    channel = grpc.aio.insecure_channel(daemon.grpc_addr, options=[("grpc.enable_http_proxy", 0)])
    stub = tasks_pb2_grpc.TaskServiceStub(channel)
    metadata = (("authorization", f"Bearer {daemon.token}"),)
    request = tasks_pb2.SubmitTaskRequest(
        intent=run.intent,
        input=tasks_pb2.TaskInput(text=TEXT),
        hints=tasks_pb2.RoutingHints(route_override=common_pb2.ROUTE_LOCAL),
        wait=True,
    )
    task = (await stub.SubmitTask(request, timeout=30, metadata=metadata)).task
    answered_by = task.attempts[-1].target if task.attempts else None
    kind = tasks_pb2.TargetKind.Name(answered_by.kind) if answered_by is not None else "none"
    if (
        task.status != tasks_pb2.TASK_STATUS_OK
        or "[email]" not in task.result.text
        or kind != run.target_kind
    ):
        raise SystemExit(f"the first {run.label} task was not answered as it should be: {task}")
    target = f"{kind.removeprefix('TARGET_KIND_').lower()} `{answered_by.name}`" if answered_by else ""

    async def call() -> bool:
        try:
            reply = await stub.SubmitTask(request, timeout=30, metadata=metadata)
        except grpc.aio.AioRpcError:
            return False
        return bool(reply.task.status == tasks_pb2.TASK_STATUS_OK)

    done = 1
    for _ in range(19):  # warm connections up, as the other benchmarks do
        done += await call()
    opened = await open_loop(call, args.rate, args.seconds)
    latencies: list[float] = opened["latencies_ms"]  # type: ignore[assignment]
    failures: int = opened["failures"]  # type: ignore[assignment]
    done += len(latencies)
    print(f"{run.label}: open loop p50 {percentile(latencies, 50):.2f} ms", file=sys.stderr)

    rss: list[tuple[int, float]] = []
    marks = rss_marks(args.total)
    closed_failures = 0
    closed_from = done

    def sample() -> None:
        while marks and done >= marks[0]:
            marks.pop(0)
            rss.append((done, rss_mib(daemon.proc.pid)))
            print(f"{run.label}: {done:,} tasks, aiond RSS {rss[-1][1]:.1f} MiB", file=sys.stderr)

    async def worker() -> None:
        nonlocal done, closed_failures
        while done < args.total:
            if await call():
                done += 1
                sample()
            else:
                closed_failures += 1
                if closed_failures > 100:
                    raise SystemExit(f"{run.label}: more than 100 tasks failed in the closed loop")

    sample()
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(args.workers)))
    elapsed = time.perf_counter() - started
    await asyncio.sleep(1)  # what finished last is settled
    rss.append((done, rss_mib(daemon.proc.pid)))
    await channel.close()
    return EndToEnd(
        run, latencies, failures, int(args.rate * args.seconds), rss, elapsed, done - closed_from,
        closed_failures, module_calls_counted(daemon.http_addr), target, task.ByteSize(),
    )  # fmt: skip


def end_to_end(work: Path, answer: str, args: argparse.Namespace) -> list[EndToEnd]:
    """The module run, then the baseline: the same aiond with tasks that a provider answers with
    the same text (so its task store fills alike)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIOND_", "AION_"))}
    work.mkdir(parents=True)
    provider, url = start_provider(work, answer)
    try:
        config, template = prepare(work, env, url)
        results = []
        for run in (MODULE_RUN, PROVIDER_RUN):
            state = work / f"state-{run.label}"
            shutil.copytree(template, state)
            daemon = start_aiond(state, config, env)
            try:
                results.append(asyncio.run(_drive(daemon, run, args)))
            finally:
                stop(daemon.proc)
    finally:
        stop(provider)
    return results


def runtime_rss(wasm: Path, work: Path, total: int) -> list[tuple[int, float]]:
    """This process's RSS along ``total`` calls of ``wasm`` in one WasmRuntime, no daemon around it."""
    request = request_bytes(
        task_id="01JDBENCHMARK0000000000000", intent="draft_reply", step="complete", text=TEXT
    )
    runtime = WasmRuntime(work / "rss-cache")
    try:
        call = _aion_caller(runtime, wasm)
        marks, rss = rss_marks(total), []
        for done in range(1, total + 1):
            if not isinstance(call(request), Answer):
                raise SystemExit("a call did not answer")
            if marks and done >= marks[0]:
                marks.pop(0)
                rss.append((done, rss_mib(os.getpid())))
        rss.append((total, rss_mib(os.getpid())))
    finally:
        runtime.close()
    print(f"runtime RSS: {rss[0][1]:.1f} -> {rss[-1][1]:.1f} MiB", file=sys.stderr)
    return rss


# -- the report ------------------------------------------------------------------------------------


@dataclasses.dataclass
class Figures:
    calls: dict[str, WasmFigures]
    threads: ThreadFigures
    caches: dict[str, CacheFigures]
    sandboxes: list[SandboxFigures]
    in_process_rss: list[tuple[int, float]]
    e2e: list[EndToEnd]
    load: tuple[float, float]
    """The machine's 1-minute load average when the run started and when it ended."""


def main() -> int:
    if sys.argv[1:2] == ["_provider"]:
        serve_provider(Path(sys.argv[2]).read_text())
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=5000, help="timed WASM calls of each module, each side")
    parser.add_argument(
        "--thread-calls", type=int, default=1000, help="WASM calls from a worker thread, each case"
    )
    parser.add_argument("--cold-runs", type=int, default=5)
    parser.add_argument("--warm-runs", type=int, default=30)
    parser.add_argument(
        "--subprocess-calls", type=int, default=200, help="timed calls each side, each sandbox"
    )
    parser.add_argument("--rate", type=float, default=200, help="open-loop tasks/s through aiond")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--total", type=int, default=100_000, help="module calls aiond runs in all")
    parser.add_argument("--workers", type=int, default=8, help="closed-loop clients after the open loop")
    args = parser.parse_args()
    modules = wasm_modules()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="aion-bench-modules-") as tmp:
        work = Path(tmp)
        calls = wasm_calls(modules, work / "calls", args.calls)
        threads = threaded_calls(modules["pii_redact"], work / "threads", args.thread_calls)
        caches = cache_loads(modules, work / "cache", args.cold_runs, args.warm_runs)
        sandboxes = sandbox_calls(work / "sandbox", args.subprocess_calls)
        in_process = runtime_rss(modules["pii_redact"], work / "rss", args.total)
        e2e = end_to_end(work / "aiond", str(calls["pii_redact"].output["text"]), args)
    body = report(
        args, Figures(calls, threads, caches, sandboxes, in_process, e2e, (load_before, os.getloadavg()[0]))
    )
    write_section("modules", body)
    print(body)
    return 0


def _wasm_rows(calls: dict[str, WasmFigures]) -> list[str]:
    rows = [
        "| module (10 KB in, answer out) | aion median / p99 us | bare median / p99 us | aion / bare (median) | bare, wasmtime's default engine | aion / default |",
        "|---|---|---|---|---|---|",
    ]
    for name, f in calls.items():
        a, b, d = us(f.aion), us(f.bare), us(f.bare_default)
        rows.append(
            f"| `{name}` ({f.out_bytes / 1024:.1f} KB out) | {a[0]:,.0f} / {a[1]:,.0f} | {b[0]:,.0f} / {b[1]:,.0f} | "
            f"{a[0] / b[0]:.2f}x | {d[0]:,.0f} / {d[1]:,.0f} | {a[0] / d[0]:.2f}x |"
        )
    return rows


def _thread_rows(threads: ThreadFigures) -> list[str]:
    rows = [
        "| `pii_redact` from a worker thread | aion median / p99 us | bare median / p99 us |",
        "|---|---|---|",
    ]
    for case, label in (("idle", "event loop idle"), ("busy", "event loop busy half the time")):
        a, b = us(threads.times[(case, "aion")]), us(threads.times[(case, "bare")])
        rows.append(f"| {label} | {a[0]:,.0f} / {a[1]:,.0f} | {b[0]:,.0f} / {b[1]:,.0f} |")
    return rows


def _cache_rows(caches: dict[str, CacheFigures]) -> list[str]:
    rows = [
        "| module | .wasm / .cwasm KiB | warm load median / p99 ms | bare `deserialize_file` median ms | cold load median ms | bare compile median ms | new `WasmRuntime` median ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, f in caches.items():
        w = ms(f.warm)
        rows.append(
            f"| `{name}` | {f.wasm_kib:,.0f} / {f.cwasm_kib:,.0f} | {w[0]:.2f} / {w[1]:.2f} | {ms(f.bare_deserialize)[0]:.2f} | "
            f"{ms(f.cold)[0]:,.1f} | {ms(f.bare_compile)[0]:,.1f} | {ms(f.new_runtime)[0]:.2f} |"
        )
    return rows


def _sandbox_rows(sandboxes: list[SandboxFigures]) -> tuple[list[str], list[str]]:
    rows = [
        "| confinement | pids cgroup | sandboxed median / p99 ms | bare `subprocess.run` median / p99 ms | overhead (median) | ratio |",
        "|---|---|---|---|---|---|",
    ]
    verdicts = []
    for f in sandboxes:
        if f.problem is not None:
            rows.append(f"| {f.confinement} | | not measured: {f.problem} | | | |")
            verdicts.append(f"{f.confinement}: not measured")
            continue
        s, b = ms(f.sandbox), ms(f.bare)
        over = s[0] - b[0]
        rows.append(
            f"| {f.confinement} | {'yes' if f.cgroup else 'no'} | {s[0]:.1f} / {s[1]:.1f} | {b[0]:.1f} / {b[1]:.1f} | "
            f"+{over:.1f} ms | {s[0] / b[0]:.1f}x |"
        )
        text = f"{f.confinement} +{over:.1f} ms {verdict(over <= SUBPROCESS_TARGET_MS)}"
        if f.failures:
            text += (
                f" (the calls that answered); **{len(f.failures)} of its {f.attempted} calls failed** "
                f"(left out of the times; the first: {f.failures[0][:160]})"
            )
        verdicts.append(text)
    return rows, verdicts


FORK_FAILURES = """Every failure was a fork refused inside the sandbox. A call's pids cgroup is kept for a later
call once its `cgroup.procs` is empty, but bubblewrap's outer process reports the module's end and exits
without reaping the namespace's first process, which is left to the host's PID 1; until that reaps it (not
at once on this machine), it is a zombie still charged to the cgroup (`pids.current`), so back-to-back
calls on a reused cgroup reach its `pids.max`. Waiting for `pids.current` to be 0 before a cgroup is
reused (or reaping the namespace's first process in aiond, as a child subreaper) would end it."""


def _rss_rows(figures: Figures) -> list[str]:
    e2e = figures.e2e
    marks = [n for n, _ in e2e[0].rss[:-1]]
    rows = [
        "| tasks answered | " + " | ".join(f"{n:,}" for n in marks) + " | end |",
        "|---|" + "---|" * (len(marks) + 1),
    ]
    for result in e2e:
        name = (
            "aiond, tasks answered by the module"
            if result.run is MODULE_RUN
            else "aiond, the same answer from a provider (baseline)"
        )
        rows.append(f"| {name} | " + " | ".join(f"{mib:.1f}" for _, mib in result.rss) + " |")
    rows.append(
        "| `WasmRuntime.call` in this process, no daemon | "
        + " | ".join(f"{mib:.1f}" for _, mib in figures.in_process_rss)
        + " |"
    )
    return rows


def _growth(rss: list[tuple[int, float]], since: int) -> float:
    start = next((mib for n, mib in rss if n >= since), rss[-1][1])
    return rss[-1][1] - start


def report(args: argparse.Namespace, figures: Figures) -> str:
    from aiond.execution.taskstore import DEFAULT_MAX_BYTES

    calls, caches = figures.calls, figures.caches
    echo, pii = calls["echo"], calls["pii_redact"]
    found = sum(int(n) for n in pii.output.get("redacted", {}).values())
    echo_a, echo_b = us(echo.aion), us(echo.bare)
    pii_a, pii_b = us(pii.aion), us(pii.bare)
    wasm_verdict = "; ".join(
        f"`{name}` {a[0]:,.0f} us {verdict(a[0] <= WASM_CALL_TARGET_US)} and {a[0] / b[0]:.2f}x {verdict(a[0] / b[0] <= WASM_RATIO_TARGET)}"
        for name, a, b in (("echo", echo_a, echo_b), ("pii_redact", pii_a, pii_b))
    )
    failed = figures.threads.failed
    failed_note = f" ({failed} aion calls did not answer)" if failed else ""
    warm = {name: ms(f.warm)[0] for name, f in caches.items()}
    worst = max(warm, key=lambda n: warm[n])
    sandbox_rows, sandbox_verdicts = _sandbox_rows(figures.sandboxes)
    forks = [m for f in figures.sandboxes for m in f.failures]
    fork_note = f"\n{FORK_FAILURES}\n" if forks and all("fork" in m for m in forks) else ""
    module, provider = figures.e2e
    m50, m99 = percentile(module.open_latencies_ms, 50), percentile(module.open_latencies_ms, 99)
    p50, p99 = percentile(provider.open_latencies_ms, 50), percentile(provider.open_latencies_ms, 99)
    in50, in99 = pii_a[0] / 1000, pii_a[1] / 1000
    first = module.rss[0][0]
    full_at = DEFAULT_MAX_BYTES // max(1, module.task_bytes)
    steady = next((n for n, _ in module.rss if n >= full_at * 1.25), module.rss[-1][0])
    growth, base_growth = _growth(module.rss, first), _growth(provider.rss, first)
    growth_steady, base_steady = _growth(module.rss, steady), _growth(provider.rss, steady)
    in_growth = _growth(figures.in_process_rss, first)
    end = module.rss[-1][0]
    return f"""
## Module runtimes (`benchmarks/modules.py`)

{today()}, {machine()}; wasmtime-py {_version("wasmtime")}. Every figure beside its baseline, measured in this one run
(load average {figures.load[0]:.1f} when it started, {figures.load[1]:.1f} when it ended).

**A WASM call**, timed alone from the request's bytes to the parsed answer: a 10 KB request (the ABI's
JSON, {TEXT_BYTES:,} bytes of text) through a module compiled once. aion: `WasmRuntime.call` with a
fresh `Host`, as aiond calls it (a new Store, fuel, epoch deadline, store limits, memory files for the
streams, the output bounded and parsed). Bare: wasmtime-py with the same engine settings (fuel and
epoch interruption compiled in), a new Store and instance (`InstancePre`) a call, WASI with files in
`/dev/shm` as standard input and output, `json.loads` of the output, the `aion` imports as functions
that do nothing; "default" is the same with wasmtime's default engine. {args.calls:,} calls a side, in
alternating blocks. `echo` (`tests/fixtures/modules/echo.c`) answers its text and logs it (one `log`
host call of 1 KB); `pii_redact` (the example) finds and replaces {found} e-mail addresses, phones and cards.

{chr(10).join(_wasm_rows(calls))}

Targets (median <= {WASM_CALL_TARGET_US:.0f} us, <= {WASM_RATIO_TARGET}x the bare call): {wasm_verdict}.
The bare call itself takes {echo_b[0]:,.0f} and {pii_b[0]:,.0f} us here: most of a call is wasmtime's (a
Store, an instance, WASI's set-up, the module's own run), so the {WASM_CALL_TARGET_US:.0f} us target is out of
reach of wasmtime-py on this machine whatever aion does around it.

aiond makes the call from a worker thread (`run_in_executor`). The same calls made that way, one at a
time, {args.thread_calls:,} a case, with the event loop idle and with it busy half the time (0.5 ms of
Python work, 0.5 ms asleep), as a loaded daemon's is{failed_note}:

{chr(10).join(_thread_rows(figures.threads))}

**The compiled cache**: a new `WasmRuntime` on a cache directory that another one filled, then its
`load()` of the module (read and hash the `.wasm`, read the `.cwasm` and check its SHA-256, deserialize,
link); beside the cold load into an empty cache (Cranelift compiles, the result is written), and bare
wasmtime doing only the deserialize or the compile. {args.warm_runs} warm and {args.cold_runs} cold runs a module.

{chr(10).join(_cache_rows(caches))}

Target: a warm load <= {WARM_LOAD_TARGET_MS:.0f} ms: {verdict(warm[worst] <= WARM_LOAD_TARGET_MS)} (slowest: `{worst}`, {warm[worst]:.2f} ms).

**A subprocess call**: `SubprocessRuntime.call` of a shell script that reads the request and prints
`{{"output":{{"text":"ok"}}}}`, as root (as aiond runs), beside `subprocess.run` of the same script with
the same 10 KB request and no sandbox. {args.subprocess_calls} calls a side, alternating in blocks of 10.

{chr(10).join(sandbox_rows)}

Target: overhead <= {SUBPROCESS_TARGET_MS:.0f} ms median: {"; ".join(sandbox_verdicts)}.
{fork_note}
The sandbox's chain starts four programs before the module (bash, bwrap, prlimit, setpriv) and a new
network namespace; the fallback's set-up script also runs a program for each mount, directory and link
of the sandbox's root (about thirty), which is most of its time.

**End to end through aiond**: the example `pii_redact` signed (`aionctl module keygen`, `module sign`),
pushed to an image layout with an SBOM, installed by `aionctl install` under a trust rule, and given the
`local` route of `draft_reply`; `SubmitTask` with `wait` over gRPC, the same 10 KB text, from this
process while aiond runs in its own. The baseline is a second aiond, the same config set and store,
whose tasks (`summarize`, local route) a stand-in provider (`benchmarks/_fastprovider.py`) answers at
once with the module's own answer, so both keep the same tasks.

| {args.rate:g} tasks/s for {args.seconds:g} s (open loop) | p50 | p99 |
|---|---|---|
| aiond, answered by {module.target} ({len(module.open_latencies_ms):,} of {module.sent:,}, {module.open_failures} failed) | {m50:.2f} ms | {m99:.2f} ms |
| aiond, answered by {provider.target} at the stand-in ({len(provider.open_latencies_ms):,} of {provider.sent:,}, {provider.open_failures} failed) | {p50:.2f} ms | {p99:.2f} ms |
| the module call in-process (above: `pii_redact`, aion) | {in50:.2f} ms | {in99:.2f} ms |
| aiond's overhead over the in-process call | {m50 - in50:+.2f} ms | {m99 - in99:+.2f} ms |

Where the time goes. In the call itself, what `WasmRuntime.call` adds to the bare call is per-call
bookkeeping: three memory files (request, output, standard error), a read of the output into a buffer
of its 1 MiB limit, the store limits, the answer's shape checked and redacted; `echo`'s larger ratio is
its `log` host call, which `Host.log` filters character by character in Python. Through aiond, the
module's task costs {m50 - p50:.2f} ms (p50) more than the provider's: aiond makes the call in a worker
thread, and each of the thirty-odd points where the call releases the GIL (every wasmtime C call,
every system call on its files) waits for the event loop to let go of it again, as the worker-thread
table above shows for a busy loop.

**RSS.** Then {args.workers} clients back to back (closed loop: 100,000 tasks at {args.rate:g}/s would take
{args.total / args.rate / 60:.0f} minutes) until {end:,} tasks had been answered: by the module,
{module.closed_done:,} in {module.closed_seconds:,.0f} s ({module.closed_done / module.closed_seconds:,.0f} tasks/s,
{module.closed_failures} failed; aiond's metrics count {module.counted:,} module calls); by the provider,
{provider.closed_done / provider.closed_seconds:,.0f} tasks/s. RSS in MiB:

{chr(10).join(_rss_rows(figures))}

Target: aiond's RSS grows <= {RSS_GROWTH_TARGET_MIB:.0f} MiB from {first:,} to {end:,} module calls:
{verdict(growth <= RSS_GROWTH_TARGET_MIB)} as measured ({growth:+.1f} MiB). Most of that is not the
module runtime: aiond keeps finished tasks (at most 100,000 of them and {DEFAULT_MAX_BYTES >> 20} MiB of their
messages, `aiond/execution/taskstore.py`), and each of these keeps a {module.task_bytes / 1024:.1f} KiB answer, so the
store is full after about {full_at:,} tasks. The baseline, whose store fills alike, grew {base_growth:+.1f} MiB:
the module's share is {growth - base_growth:+.1f} MiB. From {steady:,} tasks on (the store full) aiond grew
{growth_steady:+.1f} MiB with the module and {base_steady:+.1f} MiB with the provider; the runtime alone, in this
process, grew {in_growth:+.1f} MiB over the same calls.
"""


def _version(name: str) -> str:
    import importlib.metadata

    return importlib.metadata.version(name)


if __name__ == "__main__":
    raise SystemExit(main())
