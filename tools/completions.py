"""Write aionctl's shell completion scripts into completions/, or check that they are current.

    python tools/completions.py          # regenerate (what `nox -s completions` runs)
    python tools/completions.py --check  # exit 1 when a committed script differs

The scripts are what ``aionctl completion SHELL`` prints (the scripts of the completion protocol its
Typer application answers), so they always match the installed program.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "completions"
FILES = {"bash": "aionctl.bash", "zsh": "_aionctl", "fish": "aionctl.fish", "powershell": "aionctl.ps1"}


def render(shell: str) -> bytes:
    exe = Path(sys.executable).parent / "aionctl"
    program = str(exe) if exe.exists() else shutil.which("aionctl")
    if program is None:
        raise SystemExit("completions: aionctl is not installed; run: pip install -e .")
    # Never a completion request inherited from the calling shell: this asks for the script itself.
    env = {k: v for k, v in os.environ.items() if k != "_AIONCTL_COMPLETE"}
    result = subprocess.run([program, "completion", shell], capture_output=True, env=env, check=False)
    if result.returncode != 0 or not result.stdout.strip():
        raise SystemExit(
            f"completions: aionctl gave no {shell} script: {result.stderr.decode(errors='replace')}"
        )
    return result.stdout.strip() + b"\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    stale = []
    for shell, name in FILES.items():
        path = OUT / name
        script = render(shell)
        if not path.exists() or path.read_bytes() != script:
            stale.append(name)
            if not args.check:
                OUT.mkdir(exist_ok=True)
                path.write_bytes(script)
    if args.check and stale:
        print(f"completions: stale {', '.join(stale)}; run `nox -s completions`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
