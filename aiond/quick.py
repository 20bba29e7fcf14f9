"""``aiond --help`` and ``aiond token [COMMAND] --help`` answered without loading the settings module.

aiond's settings are a dataclass whose field metadata defines every flag (:mod:`aiond.settings`);
loading it means loading dataclasses (and inspect, ast, dis ...), typing, the secrets code and the
error model, which together cost more than a ``--help`` may take. ``aiond/_help_table.py``
(written by ``tools/aiond_help_table.py`` from the parsers themselves) holds the calls that build
aiond's and ``aiond token``'s argument parsers; this module replays them on plain argparse parsers,
which then print, at the terminal's width, the very help the real ones would (tests compare the two
at several widths). The default state directory, the one value that depends on the environment, is
filled in when the help is printed.

Any other command line, or a table written for another version of aion, makes this module step
aside: :func:`answer` returns and the real parser runs, as it always could.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

TYPE_CHECKING = False  # as typing has it, without importing typing
if TYPE_CHECKING:
    from typing import Any

STATE_HOME_MARK = "/@AIOND_STATE_HOME@"
"""What the table has where the default state directory's base goes (it is written with
``XDG_STATE_HOME`` set to this)."""
HELP_FLAGS = ("-h", "--help")


def default_state_dir() -> Path:
    """``$XDG_STATE_HOME/aiond``, else ``~/.local/state/aiond``."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "aiond"


def parser(name: str) -> argparse.ArgumentParser | None:
    """The parser of ``aiond`` or ``aiond token`` rebuilt from the table; None when the table is
    missing or was written for another version of aion."""
    from aion import __version__
    from aiond import _help_table

    if __version__ != _help_table.VERSION or name not in _help_table.ROOTS:
        return None
    state_dir = str(default_state_dir())
    built: dict[int, argparse.ArgumentParser] = {}

    def value(item: Any) -> Any:
        if isinstance(item, str):
            return item.replace(STATE_HOME_MARK + "/aiond", state_dir)
        if isinstance(item, list):
            return [value(i) for i in item]
        if isinstance(item, dict):
            if "parser" in item:
                return build(item["parser"])
            if "class" in item:
                return getattr(argparse, item["class"])
            return {k: value(v) for k, v in item.items()}
        return item

    def replay(made: argparse.ArgumentParser, index: int) -> None:
        built[index] = made
        sub: Any = None
        for method, args, kwargs, child in _help_table.PARSERS[index]["calls"]:
            if method == "add_argument":
                made.add_argument(*value(args), **value(kwargs))
            elif method == "add_subparsers":
                sub = made.add_subparsers(**value(kwargs))
            else:  # add_parser, on the latest add_subparsers; the child's own calls follow
                replay(sub.add_parser(*value(args), **value(kwargs)), child)

    def build(index: int) -> argparse.ArgumentParser:
        if index not in built:
            replay(argparse.ArgumentParser(**value(_help_table.PARSERS[index]["init"])), index)
        return built[index]

    return build(_help_table.ROOTS[name])


def answer(argv: list[str]) -> None:
    """Print the help ``argv`` (aiond's arguments) asks for and exit 0 as argparse does, when it is
    ``--help``, ``token --help`` or ``token COMMAND --help`` (or ``-h``); otherwise return."""
    if len(argv) == 1 and argv[0] in HELP_FLAGS:
        name, rest = "aiond", argv
    elif 2 <= len(argv) <= 3 and argv[0] == "token" and argv[-1] in HELP_FLAGS:
        name, rest = "aiond token", argv[1:]
        if len(rest) == 2 and (rest[0].startswith("-") or rest[0] == "token"):
            return
    else:
        return
    found = parser(name)
    if found is None:
        return
    if len(rest) == 2:
        commands = [a for a in found._actions if isinstance(a, argparse._SubParsersAction)]
        if not commands or rest[0] not in commands[0].choices:
            return  # an unknown command: the real parser words the error
    found.parse_args(rest)  # prints the help and raises SystemExit(0)


__all__ = ["answer", "default_state_dir", "parser"]
