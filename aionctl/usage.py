"""Usage errors in aion's own words.

The command line parser (Typer's vendored click) words its errors its own way, in a block that starts
with ``Usage:`` and ends with ``Error: Invalid value for '--limit': 5000 is not in the range
1<=x<=1000.``. aionctl prints every error the same way instead, ``error:`` then ``hint:``, exit 2 for
the command line, and says what to do: :func:`usage_error` turns the parser's exception into an
:class:`aion.errors.UsageError` that the one error handler in :mod:`aionctl.app` prints.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from typing import Any

from aion.errors import UsageError

_RANGE = re.compile(r"^(.*) is not in the range (.+)\.$")
_BOUNDS = (
    (re.compile(r"^(-?[\d.]+)<=x<=(-?[\d.]+)$"), "{v} is outside {0}..{1}"),
    (re.compile(r"^x>=(-?[\d.]+)$"), "{v} is below the least value, {0}"),
    (re.compile(r"^x<=(-?[\d.]+)$"), "{v} is above the greatest value, {0}"),
    (re.compile(r"^(-?[\d.]+)<x<(-?[\d.]+)$"), "{v} is not between {0} and {1}"),
    (re.compile(r"^x>(-?[\d.]+)$"), "{v} is not above {0}"),
    (re.compile(r"^x<(-?[\d.]+)$"), "{v} is not below {0}"),
)


def did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    """``did you mean 'x'?`` for the closest of ``choices``, if one is close."""
    close = difflib.get_close_matches(word, list(choices), n=2, cutoff=0.6)
    if not close:
        return None
    return "did you mean " + " or ".join(repr(c) for c in close) + "?"


def usage_error(exc: Any) -> UsageError:
    """The aion error for one of the parser's usage errors (a ``click.UsageError``)."""
    from typer._click import exceptions as click

    ctx = getattr(exc, "ctx", None)
    path = ctx.command_path if ctx is not None else "aionctl"
    hint = f"see '{path} --help'"
    if isinstance(exc, click.NoSuchOption):
        message = f"no such option: {exc.option_name}"
        if exc.possibilities:
            hint = f"did you mean {' or '.join(sorted(exc.possibilities))}? ({hint})"
    elif isinstance(exc, click.MissingParameter):
        kind = exc.param_type or (exc.param.param_type_name if exc.param is not None else "parameter")
        message = f"missing {kind} {_name(exc, ctx)}".rstrip()
    elif isinstance(exc, click.BadParameter):
        message = f"{_name(exc, ctx)}: {_detail(exc.message)}"
    else:
        message = _plain(exc.format_message())
        if getattr(exc, "suggestion", None):
            hint = f"{exc.suggestion} ({hint})"
    return UsageError(message, hint=hint)


def _name(exc: Any, ctx: Any) -> str:
    hint = exc.param_hint
    if hint is None and exc.param is not None:
        hint = exc.param.get_error_hint(ctx)
    if isinstance(hint, list | tuple):
        hint = " / ".join(hint)
    text = str(hint or "")
    quoted = re.match(r"^'([^']*)'", text)  # "'--timeout' (env var: 'AION_TIMEOUT')": the option
    return quoted.group(1) if quoted else text.strip("'\"")


def _detail(message: str) -> str:
    """A value's error, with click's range notation in words: ``5000 is outside 1..1000``."""
    match = _RANGE.match(message)
    if match is None:
        return message.rstrip(".")
    value, bounds = match.groups()
    for pattern, words in _BOUNDS:
        found = pattern.match(bounds)
        if found:
            return words.format(*found.groups(), v=value)
    return f"{value} is outside {bounds}"


def _plain(message: str) -> str:
    """click's other messages, reworded: ``Got unexpected extra argument (x)`` and the like."""
    extra = re.match(r"^Got unexpected extra argument(?:s|\(s\))? \((.*)\)$", message)
    if extra:
        return f"unexpected argument: {extra.group(1)}"
    needs = re.match(r"^Option '([^']+)' requires an argument\.?$", message)
    if needs:
        return f"{needs.group(1)} needs a value"
    command = re.match(r"^No such command '([^']+)'\.?$", message)
    if command:
        return f"no such command: {command.group(1)}"
    return message[:1].lower() + message[1:].rstrip(".")


__all__ = ["did_you_mean", "usage_error"]
