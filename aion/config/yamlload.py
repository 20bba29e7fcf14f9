"""Reading one YAML config file into plain values, with the line and column of every node.

Built on libyaml's event stream (PyYAML's C parser) rather than PyYAML's composer or constructors:
the composer builds a node object per value and resolves tags in Python, which takes seconds on a
large file, and the constructors drop positions, accept duplicate keys and expand aliases without
bound. Here each event becomes its value directly, and the loader enforces what config needs:

- UTF-8 only (a UTF-8 byte-order mark is allowed), and a size limit;
- one document per file;
- no duplicate keys (YAML merge keys ``<<`` are supported; explicit keys override merged ones);
- only plain scalar keys and the YAML core tags;
- a bound on nesting depth and on the size of the document once aliases are expanded.

Plain scalar values resolve as PyYAML does (YAML 1.1), so a file means the same here as in the other
PyYAML-based tools of the platform; timestamps stay strings, and mapping keys are always strings (as
in JSON, which the schemas describe). Positions are 1-based lines and columns as editors count them
(libyaml also breaks lines at NEL, U+2028 and U+2029; editors do not, so neither do positions here).
"""

from __future__ import annotations

import bisect
import dataclasses
import math
import re
from collections.abc import Callable, Sequence
from typing import Any

import yaml

from aion.config.findings import Finding, Severity, json_pointer
from aion.config.limits import DEFAULT_MAX_BYTES, DEFAULT_MAX_DEPTH, DEFAULT_MAX_NODES

_TAG = "tag:yaml.org,2002:"
_NULLS = frozenset({"", "~", "null", "Null", "NULL"})
_BOOLS = {
    **dict.fromkeys(("yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON"), True),
    **dict.fromkeys(("no", "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF"), False),
}
_INT = re.compile(
    r"[-+]?0b_*[01][01_]*|[-+]?0_*[0-7][0-7_]*|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x_*[0-9a-fA-F][0-9a-fA-F_]*"
    r"|[-+]?[1-9][0-9_]*(?::[0-5]?[0-9])+"
)
_FLOAT = re.compile(
    r"[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?|\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?"
    r"|[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)"
)
_NUMERIC_START = frozenset("0123456789+-.")
_SCALAR, _ALIAS, _DOCUMENT_START = yaml.ScalarEvent, yaml.AliasEvent, yaml.DocumentStartEvent
_MAP_START, _SEQ_START = yaml.MappingStartEvent, yaml.SequenceStartEvent
_MAP_END, _SEQ_END = yaml.MappingEndEvent, yaml.SequenceEndEvent


@dataclasses.dataclass(frozen=True, slots=True)
class Limits:
    max_bytes: int = DEFAULT_MAX_BYTES
    max_nodes: int = DEFAULT_MAX_NODES
    """Nodes in the document once every alias is expanded."""
    max_depth: int = DEFAULT_MAX_DEPTH


class Positions:
    """Where each value of a loaded document starts, found by following a path of keys and indexes."""

    def __init__(self, root: tuple[int, int], table: dict[int, Any]) -> None:
        self._root = root
        # id(container) -> {key: (key line, key col, value line, value col)} or [(line, col), ...]
        self._table = table

    def locate(self, data: Any, path: Sequence[str | int], *, key: bool = False) -> tuple[int, int]:
        """Line and column of the node at ``path`` (of its key, with ``key=True``). A path that goes
        past the document (a missing key) stops at the deepest node that exists."""
        here = self._root
        node = data
        for token in path:
            entry = self._table.get(id(node))
            if isinstance(node, dict) and isinstance(entry, dict) and token in entry:
                kl, kc, vl, vc = entry[token]
                here = (kl, kc) if key and token == path[-1] else (vl, vc)
                node = node[token]
            elif (
                isinstance(node, list)
                and isinstance(entry, list)
                and isinstance(token, int)
                and token < len(entry)
            ):
                here = entry[token]
                node = node[token]
            else:
                break
        return here


@dataclasses.dataclass(frozen=True, slots=True)
class Document:
    """A loaded file: its values and where each one is."""

    file: str
    data: Any
    positions: Positions

    def finding(
        self,
        rule: str,
        severity: Severity,
        path: Sequence[str | int],
        message: str,
        *,
        hint: str | None = None,
        key: bool = False,
    ) -> Finding:
        line, column = self.positions.locate(self.data, path, key=key)
        return Finding(self.file, line, column, json_pointer(path), rule, severity, message, hint)


class _Abort(Exception):
    """Stops loading; the finding says why."""

    def __init__(self, finding: Finding) -> None:
        super().__init__(finding.message)
        self.finding = finding


@dataclasses.dataclass(slots=True)
class _Frame:
    container: dict[str, Any] | list[Any]
    positions: dict[str, tuple[int, int, int, int]] | list[tuple[int, int]]
    line: int
    column: int
    anchor: str | None
    size: int = 1
    height: int = 1
    """Levels of containers from this one down, itself included."""
    key: tuple[str, int, int] | None = None
    merge_pending: bool = False
    merges: list[Any] = dataclasses.field(default_factory=list)
    first_lines: dict[str, int] | None = None


# Line breaks for libyaml that are not line breaks in an editor.
_EXTRA_BREAKS = ("\u0085", "\u2028", "\u2029")
_EDITOR_BREAK = re.compile(r"\r\n|\r|\n")


def load(source: bytes, file: str, limits: Limits | None = None) -> tuple[Document | None, list[Finding]]:
    """Load one file's bytes. Returns the document (None when it could not be read at all) and the
    findings; a document is returned with error findings when only some keys were bad."""
    limits = limits or Limits()
    if len(source) > limits.max_bytes:
        return None, [_whole(file, "AION003", f"file is larger than the limit of {limits.max_bytes} bytes")]
    text = source[3:] if source.startswith(b"\xef\xbb\xbf") else source
    if text.startswith((b"\xff\xfe", b"\xfe\xff")):
        return None, [_whole(file, "AION002", "file is UTF-16; save it as UTF-8")]
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError as exc:
        line, column = _byte_position(text, exc.start)
        byte = text[exc.start : exc.start + 1].hex()
        return None, [
            Finding(file, line, column, "", "AION002", Severity.ERROR, f"byte 0x{byte} is not UTF-8")
        ]
    builder = _Builder(file, limits, _position_of(decoded))
    parser = yaml.CSafeLoader(text)
    try:
        # get_event() directly rather than yaml.parse(): one C call per event instead of two plus
        # a generator frame, which is a fifth of the time on large files.
        next_event, feed = parser.get_event, builder.feed
        while True:
            event = next_event()
            feed(event)
            if type(event) is yaml.StreamEndEvent:
                break
    except _Abort as stop:
        return None, [*builder.findings, stop.finding]
    except yaml.MarkedYAMLError as exc:
        return None, [*builder.findings, _syntax(file, exc, text, builder.position)]
    except yaml.reader.ReaderError as exc:
        line, column = _byte_position(text, exc.position)
        message = f"character U+{exc.character:04X} is not allowed in YAML ({exc.reason})"
        return None, [*builder.findings, Finding(file, line, column, "", "AION001", Severity.ERROR, message)]
    except yaml.YAMLError as exc:
        return None, [*builder.findings, _whole(file, "AION001", str(exc).strip())]
    finally:
        parser.dispose()
    return Document(file, builder.result, Positions(builder.root, builder.table)), builder.findings


_Position = Callable[[Any], tuple[int, int]]


def _position_of(text: str) -> _Position | None:
    """How to turn a libyaml mark into an editor's line and column: None (the fast path: libyaml's
    own numbers) unless the text has characters libyaml alone treats as line breaks."""
    if not any(ch in text for ch in _EXTRA_BREAKS):
        return None
    starts = [0, *(m.end() for m in _EDITOR_BREAK.finditer(text))]

    def position(mark: Any) -> tuple[int, int]:
        line = bisect.bisect_right(starts, mark.index)
        return line, mark.index - starts[line - 1] + 1

    return position


def _whole(file: str, rule: str, message: str) -> Finding:
    return Finding(file, 0, 0, "", rule, Severity.ERROR, message)


def _byte_position(data: bytes, offset: int) -> tuple[int, int]:
    line_start = data.rfind(b"\n", 0, offset) + 1
    column = len(data[line_start:offset].decode("utf-8", errors="replace")) + 1
    return data.count(b"\n", 0, offset) + 1, column


def _syntax(
    file: str, exc: yaml.MarkedYAMLError, text: bytes, position: Callable[[Any], tuple[int, int]]
) -> Finding:
    mark = exc.problem_mark or exc.context_mark
    line, column = position(mark) if mark else (0, 0)
    message = " ".join(part for part in (exc.context, exc.problem) if part) or "not valid YAML"
    hint = None
    lines = text.split(b"\n")
    if 0 < line <= len(lines) and b"\t" in lines[line - 1][: max(column, 1)]:
        hint = "YAML indents with spaces; this line has a tab"
    return Finding(file, line, column, "", "AION001", Severity.ERROR, message, hint)


class _Builder:
    """Turns libyaml events into values, positions and findings."""

    def __init__(self, file: str, limits: Limits, position: _Position | None) -> None:
        self.file = file
        self.limits = limits
        self._slow_position = position
        self.findings: list[Finding] = []
        self.table: dict[int, Any] = {}
        self.result: Any = None
        self.root = (1, 1)
        self._stack: list[_Frame] = []
        # anchor -> (value, expanded size, position, height)
        self._anchors: dict[str, tuple[Any, int, tuple[int, int], int]] = {}
        self._open_anchors: set[str] = set()
        self._documents = 0
        self._event: Any = None

    def position(self, mark: Any) -> tuple[int, int]:
        if self._slow_position is not None:
            return self._slow_position(mark)
        return mark.line + 1, mark.column + 1

    @property
    def _at(self) -> tuple[int, int]:
        """Position of the event being handled (computed only when needed: most events need none)."""
        mark = self._event.start_mark
        return self.position(mark) if mark is not None else (0, 0)

    # -- events ------------------------------------------------------------------------------------

    def feed(self, event: Any) -> None:
        # The hot path on big files: typed Any and dispatched on the exact type, not isinstance.
        self._event = event
        kind = type(event)
        if kind is _SCALAR:
            self._scalar(event)
        elif kind is _MAP_END or kind is _SEQ_END:
            self._close()
        elif kind is _MAP_START or kind is _SEQ_START:
            self._open(event)
        elif kind is _ALIAS:
            self._alias(event)
        elif kind is _DOCUMENT_START:
            self._documents += 1
            if self._documents > 1:
                raise self._error("AION006", "a second YAML document starts here; one document per file")

    def _scalar(self, event: Any) -> None:
        frame = self._stack[-1] if self._stack else None
        mark = event.start_mark
        if self._slow_position is None:
            position = (mark.line + 1, mark.column + 1)
        else:
            position = self._slow_position(mark)
        if frame is not None and frame.key is None and isinstance(frame.container, dict):
            self._key(frame, event, position)
            return
        value = self._resolve(event)
        if event.anchor:
            self._anchors[event.anchor] = (value, 1, position, 0)
        self._add(value, 1, 0, position)

    def _key(self, frame: _Frame, event: Any, position: tuple[int, int]) -> None:
        tag = event.tag
        if tag not in (None, "!", _TAG + "str") and not (tag == _TAG + "merge" and event.value == "<<"):
            raise self._error("AION007", f"mapping key with tag {_short(tag)}; keys must be plain strings")
        if event.value == "<<" and not event.style and tag in (None, _TAG + "merge"):
            frame.merge_pending = True
        if event.anchor:
            self._anchors[event.anchor] = (event.value, 1, position, 0)
        frame.key = (event.value, *position)

    def _open(self, event: Any) -> None:
        parent = self._stack[-1] if self._stack else None
        if parent is not None and isinstance(parent.container, dict) and parent.key is None:
            raise self._error(
                "AION007", "a mapping or list used as a mapping key; keys must be plain strings"
            )
        is_map = type(event) is _MAP_START
        if event.tag not in (None, "!", _TAG + ("map" if is_map else "seq")):
            raise self._error("AION007", f"unsupported tag {_short(event.tag)}")
        if len(self._stack) >= self.limits.max_depth:
            raise self._error("AION003", f"nesting deeper than {self.limits.max_depth} levels")
        line, column = self._at
        if event.anchor:
            self._open_anchors.add(event.anchor)
        if is_map:
            self._stack.append(_Frame({}, {}, line, column, event.anchor))
        else:
            self._stack.append(_Frame([], [], line, column, event.anchor))

    def _close(self) -> None:
        frame = self._stack[-1]
        if frame.merges:
            self._merge(frame)  # while the frame is still open, so findings get its full path
        self._stack.pop()
        self.table[id(frame.container)] = frame.positions
        if frame.anchor:
            self._open_anchors.discard(frame.anchor)
            self._anchors[frame.anchor] = (
                frame.container,
                frame.size,
                (frame.line, frame.column),
                frame.height,
            )
        self._add(frame.container, frame.size, frame.height, (frame.line, frame.column))

    def _alias(self, event: Any) -> None:
        name = str(event.anchor)
        parent = self._stack[-1] if self._stack else None
        if parent is not None and isinstance(parent.container, dict) and parent.key is None:
            raise self._error("AION007", f"alias *{name} used as a mapping key; keys must be plain strings")
        if name in self._open_anchors:
            raise self._error("AION005", f"alias *{name} refers to a node that contains it")
        if name not in self._anchors:
            raise self._error("AION001", f"alias *{name} refers to no anchor (&{name}) defined before it")
        value, size, _, height = self._anchors[name]
        if len(self._stack) + height > self.limits.max_depth:
            raise self._error("AION003", f"alias *{name} nests deeper than {self.limits.max_depth} levels")
        # The value is where the alias is written; inside it, positions stay at the anchor.
        self._add(value, size, height, self._at)

    # -- building ------------------------------------------------------------------------------------

    def _add(self, value: Any, size: int, height: int, position: tuple[int, int]) -> None:
        if not self._stack:
            self.result, self.root = value, position
            return
        frame = self._stack[-1]
        frame.size += size
        if height >= frame.height:
            frame.height = height + 1
        if frame.size > self.limits.max_nodes:
            # Reported where the expansion happens: the alias, not its anchor.
            message = f"the document expands to more than {self.limits.max_nodes} nodes through aliases"
            raise _Abort(Finding(self.file, *self._at, "", "AION005", Severity.ERROR, message))
        if isinstance(frame.container, list):
            assert isinstance(frame.positions, list)
            frame.container.append(value)
            frame.positions.append(position)
            return
        assert isinstance(frame.positions, dict)
        assert frame.key is not None
        key, kline, kcol = frame.key
        frame.key = None
        if frame.merge_pending:
            frame.merge_pending = False
            frame.merges.append((value, kline, kcol))
            return
        # Merged keys are only added when the mapping closes, so whatever is here was written out.
        if key in frame.container:
            if frame.first_lines is None:
                frame.first_lines = {}
            first = frame.first_lines.setdefault(key, frame.positions[key][0])
            self.findings.append(
                Finding(
                    self.file,
                    kline,
                    kcol,
                    json_pointer([*self._path_of_stack(), key]),
                    "AION004",
                    Severity.ERROR,
                    f"duplicate key {key!r} (first at line {first}); only one value can apply",
                )
            )
        frame.container[key] = value
        frame.positions[key] = (kline, kcol, *position)

    def _merge(self, frame: _Frame) -> None:
        assert isinstance(frame.container, dict)
        assert isinstance(frame.positions, dict)
        for value, line, column in frame.merges:
            sources = value if isinstance(value, list) else [value]
            for source in sources:
                if not isinstance(source, dict):
                    message = "a merge key (<<) takes a mapping or a list of mappings"
                    pointer = json_pointer(self._path_of_stack())
                    self.findings.append(
                        Finding(self.file, line, column, pointer, "AION100", Severity.ERROR, message)
                    )
                    continue
                source_positions = self.table.get(id(source), {})
                for key, item in source.items():
                    if key not in frame.container:
                        frame.container[key] = item
                        frame.positions[key] = source_positions.get(key, (line, column, line, column))

    def _path_of_stack(self) -> list[str | int]:
        """The path of the innermost open container."""
        path: list[str | int] = []
        for frame in self._stack[:-1]:
            if isinstance(frame.container, dict):
                path.append(frame.key[0] if frame.key else "")
            else:
                path.append(len(frame.container))
        return path

    # -- scalars ---------------------------------------------------------------------------------------

    def _resolve(self, event: Any) -> Any:
        text: str = event.value
        tag = event.tag
        plain = not event.style and event.implicit[0]  # libyaml gives "" or None for plain style
        if tag is None or tag == "!":
            return _plain(text) if plain and tag is None else text
        kind = tag.removeprefix(_TAG)
        if not tag.startswith(_TAG) or kind not in ("str", "timestamp", "null", "bool", "int", "float"):
            raise self._error("AION007", f"unsupported tag {_short(tag)}")
        if kind in ("str", "timestamp"):
            return text
        if kind == "null" and text in _NULLS:
            return None
        if kind == "bool" and text in _BOOLS:
            return _BOOLS[text]
        if kind in ("int", "float"):
            number = _number(text, as_float=kind == "float")
            if number is not None:
                return number
        raise self._error("AION007", f"{_clip(text)!r} cannot be read as !!{kind}")

    def _error(self, rule: str, message: str) -> _Abort:
        line, column = self._at
        return _Abort(Finding(self.file, line, column, "", rule, Severity.ERROR, message))


def _short(tag: str | None) -> str:
    return "!!" + tag.removeprefix(_TAG) if tag and tag.startswith(_TAG) else str(tag)


def _clip(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _plain(text: str) -> Any:
    """A plain scalar's value under YAML 1.1 implicit resolution, as PyYAML reads it. A number too
    large to represent stays text, for the schema check to report."""
    if not text or text in _NULLS:
        return None
    if text[0] not in _NUMERIC_START:
        return _BOOLS.get(text, text)
    number = _number(text, as_float=False)
    return text if number is None else number


def _number(text: str, *, as_float: bool) -> int | float | None:
    """An int or float as YAML 1.1 writes them, or None when ``text`` is neither (or is out of
    range: Python refuses integers of more than 4300 digits, and finite config has no infinity)."""
    try:
        if _INT.fullmatch(text):
            value: int | float = _int(text)
            if as_float:
                value = float(value)
        elif _FLOAT.fullmatch(text):
            value = _float(text)
        else:
            return None
    except (ValueError, OverflowError):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no infinity or NaN: the text goes to the schema check instead
    return value


def _int(text: str) -> int:
    value = text.replace("_", "")
    sign = -1 if value.startswith("-") else 1
    value = value.lstrip("+-")
    if value == "0":
        return 0
    if value.startswith("0b"):
        return sign * int(value[2:], 2)
    if value.startswith("0x"):
        return sign * int(value[2:], 16)
    if value.startswith("0"):
        return sign * int(value, 8)
    if ":" in value:
        return sign * _sexagesimal(value)
    return sign * int(value)


def _float(text: str) -> float:
    value = text.replace("_", "").lower()
    sign = -1.0 if value.startswith("-") else 1.0
    value = value.lstrip("+-")
    if value == ".inf":
        return sign * math.inf
    if value == ".nan":
        return math.nan
    if ":" in value:
        whole, _, fraction = value.partition(".")
        return sign * (_sexagesimal(whole) + float("0." + (fraction or "0")))
    return sign * float(value)


def _sexagesimal(value: str) -> int:
    total = 0
    for part in value.split(":"):
        total = total * 60 + int(part)
    return total


__all__ = ["DEFAULT_MAX_BYTES", "Document", "Limits", "Positions", "load"]
