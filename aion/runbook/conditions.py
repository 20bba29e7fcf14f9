"""The checks of a runbook step: a JSON pointer into the step's result and one comparison.

The language is deliberately small: a pointer (RFC 6901, plus ``*`` for "every element") and one
operator from :data:`OPERATORS`. Each check says what it found when it fails, so a report can show
the operator exactly which value was wrong. Nothing is evaluated as code.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterator, Mapping
from typing import Any

OPERATORS = (
    "equals",
    "not_equals",
    "lt",
    "le",
    "gt",
    "ge",
    "in",
    "not_in",
    "contains",
    "matches",
    "exists",
    "length",
)
MAX_PATTERN = 512
MAX_MATCHED = 1 << 20
"""Longest text a ``matches`` check searches (bounded so a huge result cannot stall a run)."""
_MISSING = object()


class PointerError(ValueError):
    """A pointer that is not an RFC 6901 pointer."""


def segments(pointer: str) -> list[str]:
    """The unescaped segments of ``pointer`` ("" is the whole document)."""
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        raise PointerError(f"pointer {pointer!r} must be empty or start with /, for example /status/ready")
    return [part.replace("~1", "/").replace("~0", "~") for part in pointer[1:].split("/")]


def select(document: Any, pointer: str) -> list[tuple[str, Any]]:
    """The values at ``pointer`` with their concrete pointers; ``*`` fans out over every element of
    a list or every value of a mapping. A path that leads nowhere yields nothing."""
    found: list[tuple[str, Any]] = []

    def descend(value: Any, rest: list[str], at: str) -> None:
        if not rest:
            found.append((at, value))
            return
        head, tail = rest[0], rest[1:]
        if head == "*":
            if isinstance(value, list):
                for index, item in enumerate(value):
                    descend(item, tail, f"{at}/{index}")
            elif isinstance(value, Mapping):
                for key, item in value.items():
                    descend(item, tail, f"{at}/{_escape(str(key))}")
            return
        child = _child(value, head)
        if child is not _MISSING:
            descend(child, tail, f"{at}/{_escape(head)}")

    descend(document, segments(pointer), "")
    return found


def _escape(segment: str) -> str:
    return segment.replace("~", "~0").replace("/", "~1")


def _child(value: Any, segment: str) -> Any:
    if isinstance(value, Mapping):
        return value.get(segment, _MISSING)
    if isinstance(value, list) and segment.isdigit() and (segment == "0" or not segment.startswith("0")):
        index = int(segment)
        return value[index] if index < len(value) else _MISSING
    return _MISSING


@dataclasses.dataclass(frozen=True, slots=True)
class Outcome:
    ok: bool
    detail: str
    """What was found: "/ready is true", or why the check failed."""


def number(value: Any) -> float | None:
    """``value`` as a number when it is one (or a string that spells one), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str):
        try:
            parsed = float(value.strip())
        except ValueError:
            return None
        return parsed if math.isfinite(parsed) else None
    return None


def same(left: Any, right: Any) -> bool:
    """Equality as a runbook means it: numbers as numbers (3 equals 3.0 and "3"), the rest as JSON."""
    a, b = number(left), number(right)
    if a is not None and b is not None and (not isinstance(left, str) or not isinstance(right, str)):
        return a == b
    if isinstance(left, bool) or isinstance(right, bool):
        return left is right or (isinstance(right, str) and str(left).lower() == right.lower())
    return bool(left == right)


def evaluate(result: Any, pointer: str, operator: str, expected: Any) -> Outcome:
    """Check ``operator expected`` against every value ``pointer`` selects in ``result``."""
    selected = select(result, pointer)
    shown = pointer or "the result"
    if operator == "exists":
        present = bool(selected)
        ok = present is bool(expected)
        return Outcome(ok, f"{shown} {'exists' if present else 'does not exist'}")
    if not selected:
        if "*" in segments(pointer):
            return Outcome(True, f"{shown}: no elements to check")
        return Outcome(False, f"nothing at {shown}")
    for at, value in selected:
        ok, why = _compare(value, operator, expected)
        if not ok:
            return Outcome(False, f"{at or 'the result'} is {_show(value)}{why}")
    if len(selected) == 1:
        return Outcome(True, f"{selected[0][0] or 'the result'} is {_show(selected[0][1])}")
    return Outcome(True, f"all {len(selected)} values at {shown} pass")


def _show(value: Any) -> str:
    from aion.runbook.templates import as_text

    text = as_text(value)
    return text if len(text) <= 200 else text[:200] + "…"


def _compare(value: Any, operator: str, expected: Any) -> tuple[bool, str]:
    match operator:
        case "equals":
            return same(value, expected), f", expected {_show(expected)}"
        case "not_equals":
            return not same(value, expected), f", expected anything but {_show(expected)}"
        case "lt" | "le" | "gt" | "ge":
            return _order(value, operator, expected)
        case "in" | "not_in":
            options = expected if isinstance(expected, list) else [expected]
            hit = any(same(value, option) for option in options)
            wanted = "one of" if operator == "in" else "none of"
            return hit is (operator == "in"), f", expected {wanted} {_show(options)}"
        case "contains":
            if isinstance(value, str):
                return isinstance(
                    expected, str
                ) and expected in value, f", expected to contain {_show(expected)}"
            if isinstance(value, list):
                return any(same(item, expected) for item in value), f", expected to contain {_show(expected)}"
            if isinstance(value, Mapping):
                return str(expected) in value, f", expected a key {_show(expected)}"
            return False, ", which contains nothing"
        case "matches":
            if not isinstance(value, str):
                return False, ", not text"
            return re.search(
                str(expected), value[:MAX_MATCHED]
            ) is not None, f", expected to match {expected!r}"
        case "length":
            size = len(value) if isinstance(value, str | list | Mapping) else None
            want = number(expected)
            if size is None:
                return False, ", which has no length"
            return want is not None and size == want, f" (length {size}), expected length {_show(expected)}"
    raise ValueError(f"unknown operator {operator!r}")  # the schema and the checker allow no other


_ORDER = {
    "lt": ("<", float.__lt__),
    "le": ("<=", float.__le__),
    "gt": (">", float.__gt__),
    "ge": (">=", float.__ge__),
}


def _order(value: Any, operator: str, expected: Any) -> tuple[bool, str]:
    symbol, compare = _ORDER[operator]
    a, b = number(value), number(expected)
    if a is None:
        return False, f", not a number (expected {symbol} {_show(expected)})"
    if b is None:
        return False, f"; the check's {_show(expected)} is not a number"
    return compare(a, b), f", expected {symbol} {_show(expected)}"


def operator_of(check: Mapping[str, Any]) -> Iterator[str]:
    """The operators a check names (the schema allows exactly one)."""
    return (key for key in check if key in OPERATORS)


__all__ = ["OPERATORS", "Outcome", "PointerError", "evaluate", "number", "same", "segments", "select"]
