"""Write `aionctl --help` (at 100 columns) into README's "CLI reference" section.

    python tools/readme_help.py   # what `nox -s completions` runs after the completion scripts

The test suite fails when README's copy differs from the program's help.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
SECTION = re.compile(r"(### CLI reference\n\n```\n).*?(\n```)", re.S)


def main() -> int:
    program = Path(sys.executable).parent / "aionctl"
    env = {**os.environ, "COLUMNS": "100"}
    help_text = subprocess.run(
        [str(program), "--help"], capture_output=True, text=True, env=env, check=True
    ).stdout
    text = README.read_text(encoding="utf-8")
    if not SECTION.search(text):
        raise SystemExit("readme_help: README has no '### CLI reference' section with a code block")
    README.write_text(
        SECTION.sub(lambda m: m.group(1) + help_text.rstrip("\n") + m.group(2), text), encoding="utf-8"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
