"""Start-up time of aionctl and aiond, side by side with a bare interpreter in the same run.

Shells run aionctl in loops and on every TAB, so start-up is part of its interface. Each command is
run many times, interleaved with the others so that machine noise hits all of them alike, and the
median wall time of its runs is reported, with the bare interpreter's beside it:

- `python3 -c pass`, the floor any Python program pays;
- `aionctl --version` (answered before Typer is imported);
- the `--help` of aionctl, of every command and sub-command, and of aiond and `aiond token`;
- `aionctl status` against a local aiond this benchmark starts (a real gRPC call: a token, a channel,
  GetStatus), and `aionctl whoami`.

    python benchmarks/startup.py [--runs N] [--help-runs N]

Targets (issue 11): every `--help` median <= 100 ms; `aionctl status` against a local daemon median
<= 120 ms.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._report import machine, median, percentile, timed, today, write_section

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
AIONCTL, AIOND = str(BIN / "aionctl"), str(BIN / "aiond")
HELP_TARGET_MS = 100.0
STATUS_TARGET_MS = 120.0


# As on a user's machine, Python keeps the bytecode it compiles (__pycache__): an environment that
# tells it not to would time the compiling of every module at every start.
BASE_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def run_once(argv: list[str], env: dict[str, str] | None = None) -> float:
    """Wall time (ms) of one run, started straight from this process (no wrapper in the timing)."""
    started = time.perf_counter()
    proc = subprocess.run(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env or BASE_ENV, check=False
    )
    elapsed = (time.perf_counter() - started) * 1000
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {proc.returncode}")
    return elapsed


def help_commands() -> list[list[str]]:
    """`aionctl [COMMAND [SUBCOMMAND]] --help` for every command the CLI has."""
    import typer.main

    from aionctl.app import app

    root = typer.main.get_command(app)
    found: list[list[str]] = [[]]
    ctx = root.make_context("aionctl", ["--help"], resilient_parsing=True)
    for name in root.list_commands(ctx):  # type: ignore[attr-defined]
        command = root.get_command(ctx, name)  # type: ignore[attr-defined]
        found.append([name])
        subcommands = getattr(command, "list_commands", None)
        if subcommands is not None:
            found += [[name, sub] for sub in subcommands(ctx)]
    return found


class LocalDaemon:
    """aiond on examples/, with a fresh state directory and a viewer token, on free loopback ports."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="aion-startup-"))
        state = self.dir / "state"
        made = subprocess.run(
            [AIOND, "token", "create", "bench", "--role", "viewer", "--state-dir", str(state)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        self.grpc, self.http = f"127.0.0.1:{_free_port()}", f"127.0.0.1:{_free_port()}"
        self.env = {**BASE_ENV, "AION_ADDR": self.grpc, "AION_HTTP_ADDR": self.http,
                    "AION_TOKEN": made.stdout.strip(), "AION_CLIENT_CONFIG": str(self.dir / "none.yaml")}  # fmt: skip
        argv = [AIOND, "--config", str(REPO / "examples"), "--state-dir", str(state),
                "--grpc-listen", self.grpc, "--http-listen", self.http]  # fmt: skip
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while subprocess.run([AIONCTL, "status"], env=self.env, capture_output=True, check=False).returncode:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise SystemExit("aiond did not start for the start-up benchmark")
            time.sleep(0.2)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=40, help="runs of the main cases")
    parser.add_argument("--help-runs", type=int, default=10, help="runs of each command's --help")
    args = parser.parse_args()
    daemon = LocalDaemon()
    try:
        main_cases = {
            "python3 -c pass (baseline)": ([sys.executable, "-c", "pass"], None),
            "aionctl --version": ([AIONCTL, "--version"], None),
            "aionctl --help": ([AIONCTL, "--help"], None),
            "aionctl validate --help": ([AIONCTL, "validate", "--help"], None),
            "aionctl status (local aiond)": ([AIONCTL, "status"], daemon.env),
            "aionctl whoami (local aiond)": ([AIONCTL, "whoami"], daemon.env),
            "aiond --help": ([AIOND, "--help"], None),
        }
        for argv, env in main_cases.values():  # warm the page cache and .pyc files; not counted
            run_once(argv, env)
        times: dict[str, list[float]] = {name: [] for name in main_cases}
        for _ in range(args.runs):
            for name, (argv, env) in main_cases.items():
                times[name].append(run_once(argv, env))
        rss = {
            name: median([timed(argv, env=env)[1] for _ in range(3)])
            for name, (argv, env) in main_cases.items()
        }
        helps = [[AIONCTL, *words, "--help"] for words in help_commands()] + [[AIOND, "token", "--help"]]
        for argv in helps:  # the bytecode of every command module, as for the main cases
            run_once(argv)
        help_times: dict[str, list[float]] = {
            " ".join(Path(a).name if i == 0 else a for i, a in enumerate(h)): [] for h in helps
        }
        for _ in range(args.help_runs):
            for name, argv in zip(help_times, helps, strict=True):
                help_times[name].append(run_once(argv))
    finally:
        daemon.stop()

    base = median(times["python3 -c pass (baseline)"])
    rows = []
    for name in main_cases:
        med, p90 = median(times[name]), percentile(times[name], 90)
        rows.append(f"| `{name}` | {med:.1f} | {p90:.1f} | {med / base:.2f}x | {rss[name]:.1f} |")
        print(f"{name:34} median {med:7.1f} ms  p90 {p90:7.1f} ms  x{med / base:.2f}")
    help_medians = {name: median(values) for name, values in help_times.items()}
    # The --help cases of the table above count too, with their medians over more runs.
    help_medians |= {name: median(times[name]) for name in main_cases if name.endswith("--help")}
    slowest = sorted(help_medians.items(), key=lambda kv: -kv[1])
    for name, value in slowest[:5]:
        print(f"{name:34} median {value:7.1f} ms")
    worst_name, worst = slowest[0]
    status_ms = median(times["aionctl status (local aiond)"])
    help_verdict = "met" if worst <= HELP_TARGET_MS else "MISSED"
    status_verdict = "met" if status_ms <= STATUS_TARGET_MS else "MISSED"
    slow_rows = "\n".join(f"| `{name}` | {value:.1f} |" for name, value in slowest[:8])
    body = f"""## Start-up (`benchmarks/startup.py`)

{today()}, {machine()}; {args.runs} interleaved runs of each command after one warm-up run; the
`--help` of every command ({len(help_times)} of them) {args.help_runs} times each.

| command | median ms | p90 ms | vs baseline | median peak RSS MiB |
|---|---|---|---|---|
{chr(10).join(rows)}

The slowest `--help` medians:

| command | median ms |
|---|---|
{slow_rows}

Targets:
- every `--help` median <= {HELP_TARGET_MS:.0f} ms: **{help_verdict}** (slowest: `{worst_name}`, {worst:.1f} ms);
- `aionctl status` against a local aiond, median <= {STATUS_TARGET_MS:.0f} ms: **{status_verdict}**
  ({status_ms:.1f} ms).

`--version` is answered before Typer is imported, and every aionctl `--help` is too: aionctl.quick
replays the help Typer would print from the command table (aionctl/cli.jsonl, generated by
tools/cli_table.py; tests compare the two for every command at several widths). A command imports
its heavy dependencies (grpc, protobuf, the config model) only when it runs. What `status` pays
beyond the interpreter is mostly imports: Typer (about 30 ms on a quiet machine, more here), grpc
(about 30 ms, asyncio included) and protobuf (about 10 ms). aiond's `--help` and `aiond token
[COMMAND] --help` are argparse's, on parsers aiond.quick rebuilds from the calls recorded in
aiond/_help_table.py (tools/aiond_help_table.py; tests compare the two): neither the settings module
(dataclasses, typing) nor the token store is loaded.
"""
    write_section("startup", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
