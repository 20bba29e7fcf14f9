"""Metric names: the ones a PromQL expression reads, and the ones a Prometheus text exposition offers.

``aionctl metrics check --dashboards`` (and the dashboard tests) compare the two, so that a panel never
queries a metric aiond does not export.

:func:`metric_names` tokenizes an expression rather than matching words with a regular expression,
because most words in PromQL are not metric names: function and aggregation names (followed by
``(``), keywords (``and``, ``offset``, ``bool``...), the label lists of ``by``, ``without``, ``on``,
``ignoring``, ``group_left`` and ``group_right``, label names and values inside ``{...}``, durations
inside ``[...]``, strings, numbers and Grafana's ``$variables``. A ``{__name__="..."}`` matcher names a
metric too; a regular expression on ``__name__`` cannot be checked, so it is refused.

:func:`template_metric_names` reads Grafana's templating queries (``label_values(metric, label)``,
``query_result(expr)``), and :func:`exported_names` the names an exposition offers: every sample's
name, and for each family its ``# TYPE`` line (a histogram's ``_bucket``, ``_sum`` and ``_count``
included), so a family without samples yet still counts as exported.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

IDENTIFIER = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
NUMBER = re.compile(
    r"0[xX][0-9a-fA-F]+"
    r"|(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?(?:(?:ms|[smhdwy])(?:\d+(?:ms|[smhdwy]))*)?"
)
GRAFANA_VARIABLE = re.compile(r"\$(?:\{[^}]*\}|\w+)")
LABEL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MATCH_OPERATOR = re.compile(r"=~|!~|!=|=")
# Words that are followed by a parenthesised list of label names.
LABEL_LISTS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
KEYWORDS = LABEL_LISTS | {"and", "or", "unless", "bool", "offset", "inf", "nan", "atan2"}
OPERATOR_CHARS = frozenset("+-*/%^=!<>~@,()")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count", "_created")
SUMMARY_SUFFIXES = ("_sum", "_count", "_created")


class PromQLError(ValueError):
    """An expression this reader cannot take apart (or that names metrics in a way it cannot check)."""


def metric_names(expr: str) -> set[str]:
    """Every metric name ``expr`` reads."""
    return set(_names(expr))


def _names(expr: str) -> Iterator[str]:
    i = 0
    while i < len(expr):
        if expr[i] == "{":
            i, named = _matchers(expr, i)
            yield from named
        elif (word := IDENTIFIER.match(expr, i)) is not None:
            i, name = _word(expr, word)
            if name is not None:
                yield name
        else:
            i = _skip_token(expr, i)


def _word(expr: str, word: re.Match[str]) -> tuple[int, str | None]:
    """Past the word ``word`` (and its label list, if it takes one), and the word if it is a metric."""
    name, after = word.group(), _skip_space(expr, word.end())
    lowered = name.lower()
    called = after < len(expr) and expr[after] == "("
    if lowered in LABEL_LISTS:
        return (_skip_label_list(expr, after) if called else word.end()), None
    if lowered in KEYWORDS or called or _grouping_follows(expr, after):
        return word.end(), None  # a keyword, a function or aggregation called here, or `sum by (...) (...)`
    return word.end(), name


def _skip_token(expr: str, i: int) -> int:
    """Past the token at ``i`` that cannot be (or hold) a metric name."""
    c = expr[i]
    if c.isspace() or c in OPERATOR_CHARS:
        return i + 1
    if c == "#":  # a comment runs to the end of the line
        newline = expr.find("\n", i)
        return len(expr) if newline < 0 else newline + 1
    if c in "\"'`":
        return _skip_string(expr, i)
    if c == "[":  # a range or a subquery: durations and Grafana's interval variables
        close = expr.find("]", i)
        if close < 0:
            raise PromQLError(f"unclosed '[' at {i} in {expr!r}")
        return close + 1
    found = GRAFANA_VARIABLE.match(expr, i) if c == "$" else NUMBER.match(expr, i)
    if found is None:
        raise PromQLError(f"unexpected {c!r} at {i} in {expr!r}")
    return found.end()


def _grouping_follows(expr: str, i: int) -> bool:
    """Whether ``by`` or ``without`` starts at ``i``: the word before it is an aggregation."""
    word = IDENTIFIER.match(expr, i)
    return word is not None and word.group().lower() in ("by", "without")


def _skip_space(expr: str, i: int) -> int:
    while i < len(expr) and expr[i].isspace():
        i += 1
    return i


def _skip_string(expr: str, start: int) -> int:
    """The index just past the string literal that starts at ``start``."""
    quote, i = expr[start], start + 1
    while i < len(expr):
        if expr[i] == "\\" and quote != "`":
            i += 2
            continue
        if expr[i] == quote:
            return i + 1
        i += 1
    raise PromQLError(f"unterminated string at {start} in {expr!r}")


def _string_value(expr: str, start: int) -> tuple[str, int]:
    end = _skip_string(expr, start)
    raw = expr[start + 1 : end - 1]
    return (raw if expr[start] == "`" else re.sub(r"\\(.)", r"\1", raw)), end


def _matchers(expr: str, start: int) -> tuple[int, list[str]]:
    """Past the ``{...}`` that starts at ``start``, and the metric names its ``__name__`` matchers give."""
    named: list[str] = []
    i = start + 1
    while True:
        i = _skip_space(expr, i)
        if i < len(expr) and expr[i] == "}":
            return i + 1, named
        label = LABEL_NAME.match(expr, i)
        if label is None:
            raise PromQLError(f"expected a label name at {i} in {expr!r}")
        i = _skip_space(expr, label.end())
        operator = MATCH_OPERATOR.match(expr, i)
        if operator is None:
            raise PromQLError(f"expected a matcher operator at {i} in {expr!r}")
        i = _skip_space(expr, operator.end())
        if i >= len(expr) or expr[i] not in "\"'`":
            raise PromQLError(f"expected a quoted label value at {i} in {expr!r}")
        value, i = _string_value(expr, i)
        if label.group() == "__name__":
            if operator.group() != "=":
                raise PromQLError(
                    f"__name__{operator.group()} cannot be checked; name the metric in {expr!r}"
                )
            named.append(value)
        i = _skip_space(expr, i)
        if i < len(expr) and expr[i] == ",":
            i += 1
        elif i >= len(expr) or expr[i] != "}":
            raise PromQLError(f"expected ',' or '}}' at {i} in {expr!r}")


def _skip_label_list(expr: str, start: int) -> int:
    """Past the ``(label, ...)`` that starts at ``start``: label names only, so no nesting."""
    close = expr.find(")", start)
    if close < 0:
        raise PromQLError(f"unclosed label list at {start} in {expr!r}")
    for label in expr[start + 1 : close].split(","):
        if label.strip() and LABEL_NAME.fullmatch(label.strip()) is None:
            raise PromQLError(f"{label.strip()!r} is not a label name, in {expr!r}")
    return close + 1


def template_metric_names(query: str) -> set[str]:
    """The metric names a Grafana templating query reads."""
    text = query.strip()
    if (inner := _call_arguments(text, "label_values")) is not None:
        selector, _, label = _split_last_argument(inner)
        if LABEL_NAME.fullmatch(label.strip()) is None:
            raise PromQLError(f"{label.strip()!r} is not a label name, in {query!r}")
        return metric_names(selector) if selector.strip() else set()
    if (inner := _call_arguments(text, "query_result")) is not None:
        return metric_names(inner)
    if _call_arguments(text, "metrics") is not None or _call_arguments(text, "label_names") is not None:
        raise PromQLError(f"{query!r} lists names by pattern; query a named metric instead")
    return metric_names(text)


def _call_arguments(text: str, function: str) -> str | None:
    found = re.fullmatch(rf"{function}\s*\((.*)\)", text, re.DOTALL)
    return found.group(1) if found else None


def _split_last_argument(arguments: str) -> tuple[str, str, str]:
    """``arguments`` split at its last comma outside strings, braces, brackets and parentheses."""
    depth, i, last = 0, 0, -1
    while i < len(arguments):
        c = arguments[i]
        if c in "\"'`":
            i = _skip_string(arguments, i)
            continue
        if c in "({[":
            depth += 1
        elif c in ")}]":
            depth -= 1
        elif c == "," and depth == 0:
            last = i
        i += 1
    if last < 0:
        return "", "", arguments
    return arguments[:last], ",", arguments[last + 1 :]


def exported_names(exposition: str) -> set[str]:
    """Every metric name a Prometheus text exposition (format 0.0.4) offers."""
    names: set[str] = set()
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            parts = line.split()
            if len(parts) != 4:
                raise PromQLError(f"malformed TYPE line: {line!r}")
            name, kind = parts[2], parts[3]
            names.add(name)
            suffixes = {"histogram": HISTOGRAM_SUFFIXES, "summary": SUMMARY_SUFFIXES}.get(kind, ())
            names.update(name + suffix for suffix in suffixes)
        elif line and not line.startswith("#"):
            sample = IDENTIFIER.match(line)
            if sample is None:
                raise PromQLError(f"malformed sample line: {line!r}")
            names.add(sample.group())
    return names


__all__ = ["PromQLError", "exported_names", "metric_names", "template_metric_names"]
