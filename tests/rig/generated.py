"""Files made by a tool in tools/ and committed: a test asks the tool whether they are current."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def assert_current(tool: str, hint: str = "") -> None:
    """``python tools/TOOL --check`` exits 0: what the tool would write now is what is committed."""
    result = subprocess.run(
        [sys.executable, str(REPO / "tools" / tool), "--check"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, f"{hint}\n{result.stderr}" if hint else result.stderr
