"""The ``aiond`` command: parse settings, then run the daemon until it is told to stop.

Exit codes follow aion.exitcodes: 0 after a clean stop, 1 when the config set has errors and there is
no stored version to run instead, 2 for bad settings, 3 for unreadable inputs (config or state
directory), 6 when a listen address or the state directory is already taken.

``aiond token ...`` manages API credentials offline (:mod:`aiond.security.tokens`).
"""

from __future__ import annotations

import argparse
import faulthandler
import os
import sys
from collections.abc import Sequence

from aion import __version__
from aion.exitcodes import EXIT_CODE_HELP, ExitCode

SWITCH_INTERVAL = 0.0001


def _parser() -> argparse.ArgumentParser:
    from aiond import settings
    from aiond.usage import Parser

    codes = "\n".join(f"  {int(code)}  {text}" for code, text in EXIT_CODE_HELP.items())
    parser = Parser(
        prog="aiond",
        description="The aion daemon: routes tasks under the policies and serves the aion.v1 gRPC API.\n"
        "Manage its API tokens with `aiond token create|list|revoke|rotate` (see `aiond token --help`).",
        epilog=f"exit codes:\n{codes}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"aiond {__version__}")
    settings.add_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    given = list(sys.argv[1:] if argv is None else argv)
    try:
        from aiond import quick

        # --help answered from a table, before the settings and aion.errors (dataclasses) load.
        quick.answer(given)
        from aion.errors import Error
    except KeyboardInterrupt:
        return 130
    try:
        token = _token_command(given)
        if token is not None:
            from aiond.security import tokens

            return tokens.run(token)
        return _run(vars(_parser().parse_args(given)))
    except Error as exc:
        from aiond.usage import report

        report(exc)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        return 130


def _token_command(argv: list[str]) -> list[str] | None:
    """The arguments of ``aiond token`` when that is the command, wherever its flags stand
    (``aiond --state-dir D token list`` is ``aiond token list --state-dir D``); None otherwise."""
    from aiond import settings

    takes_value = {opt.flag for _, opt in settings.options() if not opt.switch}
    skip = False
    for index, arg in enumerate(argv):
        if skip:
            skip = False
        elif arg == "token":
            return argv[index + 1 :] + argv[:index]
        elif arg in takes_value:
            skip = True  # the next argument is this flag's value, even if it reads "token"
        elif not arg.startswith("-"):
            return None  # some other word: the daemon's parser says what is wrong with it
    return None


def _run(flags: dict[str, str | None]) -> int:
    from aiond import logs, settings

    loaded = settings.load(flags, os.environ)
    logs.prepare_grpc(loaded.log_format)
    logs.configure(loaded.log_level, loaded.log_format)
    # Validation of a large config set runs in a worker thread and is CPU-bound; with CPython's default
    # 5 ms switch interval the event loop would wait up to 5 ms for the GIL on every call it serves
    # meanwhile. A 0.5 ms interval keeps calls answered promptly during a reload.
    sys.setswitchinterval(SWITCH_INTERVAL)
    # A crash in native code (grpcio, SQLite) then leaves every thread's Python stack on stderr,
    # in the daemon's log, instead of nothing.
    faulthandler.enable()

    from aiond.serving.server import Daemon

    async def serve() -> None:
        await Daemon(loaded).serve()

    import asyncio

    asyncio.run(serve())
    return int(ExitCode.OK)


if __name__ == "__main__":
    sys.exit(main())
