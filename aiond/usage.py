"""aiond's command line conventions, shared by ``aiond`` and ``aiond token``: usage errors in aion's
own words (``error: ...`` and a hint, exit 2, as aionctl prints them), and one way to print any error.

argparse reports a bad command line itself, as ``usage: ...`` then ``PROG: error: argument --x:
invalid choice: ...``, and exits. :class:`Parser` raises :class:`~aion.errors.UsageError` instead, so
that the program's one error handler prints it like every other error.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from collections.abc import Callable
from typing import NoReturn

from aion.errors import Error, UsageError

_REWORDED: tuple[tuple[re.Pattern[str], Callable[[re.Match[str]], str]], ...] = (
    (re.compile(r"^argument ([^:]+): invalid choice: '([^']*)' \(choose from (.*)\)$"),
     lambda m: f"{_flag(m[1])}: {m[2]!r} is not one of {m[3].replace(chr(39), '')}"),
    (re.compile(r"^argument ([^:]+): expected one argument$"), lambda m: f"{_flag(m[1])} needs a value"),
    (re.compile(r"^the following arguments are required: \{(.*)\}$"),
     lambda m: f"missing a command: one of {m[1].replace(',', ', ')}"),
    (re.compile(r"^the following arguments are required: (.*)$"), lambda m: f"missing {m[1]}"),
    (re.compile(r"^unrecognized arguments: (.*)$"), lambda m: f"unknown option or argument: {m[1]}"),
    (re.compile(r"^argument ([^:]+): (.*)$"), lambda m: f"{_flag(m[1])}: {m[2]}"),
)  # fmt: skip


def _flag(spelling: str) -> str:
    """``-o/--output`` as argparse names an option, as the user most likely typed it."""
    return spelling.rsplit("/", maxsplit=1)[-1]


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are aion errors (the program prints them, exit 2)."""

    def error(self, message: str) -> NoReturn:
        for pattern, reword in _REWORDED:
            match = pattern.match(message)
            if match:
                message = reword(match)
                break
        raise UsageError(message, hint=f"see {self.prog} --help")


def report(error: Error) -> None:
    """Print an error as every aion program does: ``error: MESSAGE`` and ``hint: ...`` on stderr, or
    one log record when the daemon logs JSON."""
    root = logging.getLogger()
    if root.handlers and type(root.handlers[0].formatter).__name__ == "JsonFormatter":
        logging.getLogger("aiond").error("%s", error.diagnostics())
    else:
        print(f"error: {error.diagnostics()}", file=sys.stderr)


__all__ = ["Parser", "report"]
