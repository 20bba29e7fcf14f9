"""The ``aionctl`` entry point.

``aionctl --version`` is answered before anything heavier than the version string is imported: scripts
and shell prompts call it in loops. A ``--help`` and a TAB are answered from the command table
(aionctl.quick) when it knows the answer. Everything else goes through the Typer application in
aionctl.app.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args == ["--version"]:
        from aion._version import __version__

        sys.stdout.write(f"aionctl {__version__}\n")
        return 0
    if os.environ.get("_AIONCTL_COMPLETE") or args[-1:] in (["--help"], ["-h"]):
        from aionctl.quick import answer

        code = answer(args)
        if code is not None:
            return code
    from aionctl.app import run

    return run(args)


if __name__ == "__main__":
    sys.exit(main())
