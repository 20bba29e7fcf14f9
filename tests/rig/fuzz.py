"""How many examples property-based tests try: the numbers the tests name, times ``AION_FUZZ_SCALE``
(default 1). ``nox -s unit`` sets a small scale for a fast inner loop; a long hunt sets a large one
(``AION_FUZZ_SCALE=20``). Tests that give no number get hypothesis's default, scaled the same way
(the profile the rig plugin loads)."""

from __future__ import annotations

import os

SCALE = float(os.environ.get("AION_FUZZ_SCALE", "1") or "1")
DEFAULT_EXAMPLES = 100


def examples(n: int) -> int:
    """``n`` examples, scaled; never fewer than 5."""
    return max(5, int(n * SCALE))


__all__ = ["DEFAULT_EXAMPLES", "SCALE", "examples"]
