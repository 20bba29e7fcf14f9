"""Start-up time of aionctl, side by side with a bare interpreter in the same run.

Shells run aionctl in loops and on every TAB, so start-up is part of its interface. Each command is
run many times, interleaved with the others so that machine noise hits all of them alike; the wall
time of every run is recorded, and the peak RSS of a few more runs (through GNU time, see
``benchmarks._report.timed``).

    python benchmarks/startup.py [--runs N]

Target (issue 2): `aionctl --version` median <= 60 ms on a 2-core machine.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._report import machine, median, percentile, timed, today, write_section

BIN = Path(sys.executable).parent
CASES = {
    "python3 -c pass (baseline)": [sys.executable, "-c", "pass"],
    "aionctl --version": [str(BIN / "aionctl"), "--version"],
    "aionctl --help": [str(BIN / "aionctl"), "--help"],
}
TARGET_MS = 60.0


def run_once(argv: list[str]) -> float:
    """Wall time (ms) of one run, started straight from this process (no wrapper in the timing)."""
    started = time.perf_counter()
    proc = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    elapsed = (time.perf_counter() - started) * 1000
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {proc.returncode}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=40)
    args = parser.parse_args()
    for argv in CASES.values():  # warm the page cache and .pyc files; not counted
        run_once(argv)
    times: dict[str, list[float]] = {name: [] for name in CASES}
    rss: dict[str, list[float]] = {name: [] for name in CASES}
    for _ in range(args.runs):
        for name, argv in CASES.items():
            times[name].append(run_once(argv))
    for _ in range(3):
        for name, argv in CASES.items():
            rss[name].append(timed(argv)[1])

    base = median(times["python3 -c pass (baseline)"])
    rows = []
    for name in CASES:
        med, p90 = median(times[name]), percentile(times[name], 90)
        rows.append(f"| `{name}` | {med:.1f} | {p90:.1f} | {med / base:.2f}x | {median(rss[name]):.1f} |")
        print(f"{name:32} median {med:7.1f} ms  p90 {percentile(times[name], 90):7.1f} ms  x{med / base:.2f}")
    version_ms = median(times["aionctl --version"])
    verdict = "met" if version_ms <= TARGET_MS else "MISSED"
    body = f"""## Start-up (`benchmarks/startup.py`)

{today()}, {machine()}; {args.runs} interleaved runs of each command after one warm-up run.

| command | median ms | p90 ms | vs baseline | median peak RSS MiB |
|---|---|---|---|---|
{chr(10).join(rows)}

Target: `aionctl --version` median <= {TARGET_MS:.0f} ms: **{verdict}** ({version_ms:.1f} ms).
`--version` is answered before Typer is imported; `--help` lists commands from the registry without
importing any command module.
"""
    write_section("startup", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
