"""Shared helpers for aion's benchmarks: machine facts, statistics, and RESULTS.md sections.

Each benchmark owns one section of RESULTS.md, between ``<!-- bench:NAME -->`` markers, and rewrites
only that section, so benchmarks can run separately without erasing each other's figures.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import re
import statistics
from collections.abc import Sequence
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
HEADER = """# Benchmark results

Produced by `nox -s bench` (each benchmark also runs alone: `python benchmarks/NAME.py`). Every figure is
measured side by side with its peer or baseline in the same run, on the machine named in its section.
Targets come from the issues; a target that is missed is reported as missed.
"""


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{os.cpu_count()} cores ({cpu}), {mem_gib:.0f} GiB RAM, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}"
    )


GNU_TIME = Path("/usr/bin/time")


def timed(
    argv: list[str], *, ok: tuple[int, ...] = (0,), env: dict[str, str] | None = None
) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of a command, in a fresh process.

    The peak RSS comes from GNU time (``/usr/bin/time -f %M``), which starts the command from its own
    small process. Measured straight from this process with ``wait4``, a child would report at least
    this Python process's RSS as its own peak: Linux carries the parent's high-water mark across fork
    and exec. stderr goes to a temporary file, so a chatty command cannot block on a full pipe.
    """
    import subprocess
    import tempfile
    import time

    if not GNU_TIME.exists():
        raise SystemExit("the benchmarks need GNU time for peak RSS: apt-get install time")
    with tempfile.TemporaryFile() as err, tempfile.NamedTemporaryFile("r") as rss:
        started = time.perf_counter()
        proc = subprocess.run(
            [str(GNU_TIME), "-f", "%M", "-o", rss.name, *argv],
            stdout=subprocess.DEVNULL, stderr=err, env=env, check=False,
        )  # fmt: skip
        elapsed = time.perf_counter() - started
        if proc.returncode not in ok:
            err.seek(0)
            text = err.read().decode(errors="replace")
            raise SystemExit(f"{' '.join(argv[:3])} ... exited {proc.returncode}: {text[-2000:]}")
        lines = [ln for ln in rss.read().splitlines() if ln.strip().isdigit()]
    return elapsed, int(lines[-1]) / 1024


def today() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def write_section(name: str, body: str) -> None:
    """Replace (or append) the section called ``name`` in RESULTS.md."""
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    block = f"{start}\n{body.strip()}\n{end}"
    text = RESULTS.read_text() if RESULTS.exists() else HEADER
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    text = (
        pattern.sub(lambda _m: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    )
    RESULTS.write_text(text)
