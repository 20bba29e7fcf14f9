"""Decision engine speed, in-process, on a 1,000-intent config set, side by side with a naive router.

The config set is the example set plus 1,000 generated intents with mixed privacy, candidates, default
routes, tiers and budgets. The request mix cycles through every intent with varied input sizes,
budgets, latency targets and a few route overrides; a third of the decisions see live state (two
breakers open or half-open, measured latencies, a runtime local-only switch). Each decision is timed
on its own with ``perf_counter_ns``.

Baseline, in the same run: a naive router that returns the first model of the intent's default route
from a precomputed dict, with none of the hard-rule checks: the floor of any Python router.

    python benchmarks/routing.py [--decisions 200000]

Targets (issue 6): median <= 20 us and p99 <= 100 us per decision.
"""

from __future__ import annotations

import argparse
import gc
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._report import machine, median, percentile, today, write_section  # noqa: E402

TARGET_MEDIAN_US = 20.0
TARGET_P99_US = 100.0
PRIVACY = ["allow-api", "allow-api", "hybrid", "local-only"]
CANDIDATES = [
    "[local, api, hybrid]",
    "[local, api]",
    "[api, local]",
    "[local, hybrid]",
    "[hybrid, api, local]",
]


def generated_intents(count: int) -> str:
    out = []
    for i in range(count):
        candidates = CANDIDATES[i % len(CANDIDATES)]
        first = candidates.strip("[]").split(",")[0].strip()
        privacy = PRIVACY[i % len(PRIVACY)]
        tiers = ["[tier0, tier1]", "[tier0, tier1, tier2]", "[tier0]"][i % 3]
        if privacy != "allow-api":
            candidates = "[local, hybrid]"
            first = "local"
        if privacy == "local-only":
            tiers = "[tier0]"
        out.append(
            f"bench_{i}:\n  description: generated\n  default_route: {first if i % 3 else 'auto'}\n"
            f"  candidates: {candidates}\n  privacy: {privacy}\n"
            f"  tiers_allowed: {tiers}\n" + (f"  budget_usd: {0.01 + (i % 7) / 100:.2f}\n" if i % 2 else "")
        )
    return "".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--intents", type=int, default=1000)
    parser.add_argument("--decisions", type=int, default=200_000)
    args = parser.parse_args()

    from aion.config.model import Privacy, Route
    from aion.config.validate import validate_directory
    from aion.routing import BreakerState, LiveState, Request, compile_table

    with tempfile.TemporaryDirectory(prefix="aion-bench-routing-") as tmp:
        config = Path(tmp) / "config"
        shutil.copytree(ROOT / "examples", config)
        intents = config / "intents.yml"
        intents.write_text(intents.read_text() + generated_intents(args.intents))
        report = validate_directory(config)
    if report.snapshot is None:
        errors = [
            f"{f.file}:{f.line} {f.rule} {f.message}" for f in report.findings if f.severity.value == "error"
        ]
        raise SystemExit("the generated config set does not validate:\n" + "\n".join(errors[:10]))
    snapshot = report.snapshot
    started = time.perf_counter()
    table = compile_table(snapshot)
    compile_ms = (time.perf_counter() - started) * 1000

    names = list(snapshot.intents)
    quiet = LiveState()
    busy = LiveState(
        breakers={"ollama": BreakerState.HALF_OPEN, "openai:gpt-4.1-mini": BreakerState.OPEN},
        latency_ms={"vllm:llama3.1": 180.0, "azure:gpt-4o-mini": 900.0, "hf:mistral-large": 1400.0},
        intent_modes={names[5]: Privacy.LOCAL_ONLY},
    )
    requests = [
        (
            Request(
                intent=names[i % len(names)],
                input_bytes=(i * 7919) % 20_000,
                budget_nano=None if i % 4 else 50_000_000,
                latency_target_ms=None if i % 5 else 1500,
                route_override=Route.LOCAL if i % 50 == 0 else None,
            ),
            busy if i % 3 == 0 else quiet,
        )
        for i in range(4096)
    ]
    naive = {
        name: (intent.default_route or intent.candidates[0], snapshot.models.tiers["tier0"].local[0])
        for name, intent in snapshot.intents.items()
    }

    def time_engine() -> list[float]:
        samples = []
        clock = time.perf_counter_ns
        decide = table.decide
        for i in range(args.decisions):
            request, live = requests[i & 4095]
            t0 = clock()
            decide(request, live)
            samples.append((clock() - t0) / 1000)
        return samples

    def time_naive() -> list[float]:
        samples = []
        clock = time.perf_counter_ns
        for i in range(args.decisions):
            request, _live = requests[i & 4095]
            t0 = clock()
            naive.get(request.intent)
            samples.append((clock() - t0) / 1000)
        return samples

    time_engine()  # warm-up
    gc.collect()
    engine, base = time_engine(), time_naive()
    decisions = [table.decide(r, live) for r, live in requests]
    refused = sum(1 for d in decisions if not hasattr(d, "chain"))
    med, p99 = median(engine), percentile(engine, 99)
    verdict = "met" if med <= TARGET_MEDIAN_US and p99 <= TARGET_P99_US else "MISSED"
    body = f"""
## Routing decisions (`benchmarks/routing.py`)

{today()}, {machine()}. The example set plus {args.intents:,} generated intents; {args.decisions:,} decisions,
each timed alone, over a mix of intents, input sizes, budgets, latency targets and overrides, a third with
live state (breakers open and half-open, measured latencies, a runtime local-only switch);
{refused / len(decisions):.0%} of the mix is refused by the hard rules. Compiling the snapshot took {compile_ms:.0f} ms
(once per activation).

| | median | p99 | max |
|---|---|---|---|
| `RoutingTable.decide` | {med:.1f} us | {p99:.1f} us | {max(engine):.0f} us |
| baseline: naive dict lookup, no rules | {median(base):.2f} us | {percentile(base, 99):.2f} us | {max(base):.0f} us |

Targets median <= {TARGET_MEDIAN_US:g} us, p99 <= {TARGET_P99_US:g} us: **{verdict}**.
"""
    write_section("routing", body)
    print(body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
