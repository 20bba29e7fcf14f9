"""``aionctl ... --help`` and TABs answered from a table, without importing Typer.

Shells run aionctl on every TAB, and people type ``--help`` between every two commands; importing
Typer alone costs more than either may take. ``aionctl/cli.json`` (written by ``tools/cli_table.py``
from the commands themselves) holds each command's help as the calls Typer made to its help
formatter, and each command's sub-commands and parameters. This module replays the first at the
terminal's width and walks the second to find what a TAB completes, then prints what Typer would
print, byte for byte (tests compare the two for every command, at several widths, for every shell).

Anything this module is not sure to answer as Typer would (an option joined to its value with
``=``, ``--``, a word that names no command or option, an eager option such as ``--version``, a
completion function that lives outside ``aionctl.completing``) makes it step aside: the caller then
runs the command through Typer, as it always could. So the table can only make aionctl faster,
never different.

Why by hand: Typer's formatter and completion code are only reachable by importing Typer, which is
the cost avoided; the standard library's ``textwrap`` does the wrapping.
"""

from __future__ import annotations

import functools
import os
import sys
import textwrap

TYPE_CHECKING = False  # as typing has it, without importing typing (a tenth of a TAB)
if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence
    from typing import Any

# os.path, not pathlib: importing pathlib costs a TAB more than reading the table does.
TABLE = os.path.join(os.path.dirname(__file__), "cli.jsonl")  # noqa: PTH118, PTH120
INDENT = 2
"""How far a help section's body is indented (Typer's formatter's step)."""
SHELLS = ("bash", "zsh", "fish", "powershell", "pwsh")


class StepAside(Exception):
    """The quick path cannot be sure to answer as Typer would: let Typer answer."""


class _Unknown(BaseException):
    """A completion function read a parameter value this module cannot know. A BaseException, so
    that the completion functions' guard (which offers nothing on any Exception) lets it through."""


@functools.cache
def _table() -> tuple[list[bytes], dict[str, int]]:
    """The table's lines, and the line of each command path; none when the table cannot be read."""
    import json

    try:
        with open(TABLE, "rb") as file:  # noqa: PTH123 - see TABLE
            lines = file.read().split(b"\n")
        return lines, {p: i + 1 for i, p in enumerate(json.loads(lines[0])["paths"])}
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return [], {}


@functools.cache
def node(path: str) -> dict[str, Any] | None:
    """The table's entry for the command at ``path`` (``""`` for aionctl itself, ``"policy apply"``),
    or None. The table is one JSON document per line after an index line, and only the lines asked
    for are parsed: a TAB needs two or three of the eighty."""
    import json

    lines, index = _table()
    at = index.get(path)
    try:
        entry: dict[str, Any] | None = json.loads(lines[at]) if at is not None else None
    except (ValueError, IndexError):
        return None
    return entry


# -- help --------------------------------------------------------------------------------------------


def help_text(args: Sequence[str]) -> str | None:
    """What ``aionctl ARGS`` prints when ARGS are command names followed by ``--help`` or ``-h``, at
    this terminal's width; None when the table cannot say (then Typer answers)."""
    if not args or args[-1] not in ("--help", "-h"):
        return None
    if any(a.startswith("-") for a in args[:-1]):
        return None
    entry = node(" ".join(args[:-1]))
    if entry is None or not entry.get("help"):
        return None
    try:
        return _replay(entry["help"])
    except (StepAside, ValueError, TypeError, IndexError):
        return None


def _replay(ops: list[list[Any]]) -> str:
    out = _Formatter()
    for op in ops:
        name, operands = op[0], op[1:]
        if name == "max_width":
            limit = operands[0] if operands[0] is not None else 80
            out.width = max(min(_columns(), limit) - 2, 50)
        elif name == "write":
            out.write(operands[0])
        elif name == "usage":
            out.usage(*operands)
        elif name == "heading":
            out.write(f"{'':>{out.indent}}{operands[0]}:\n")
        elif name == "paragraph":
            if out.buffer:
                out.write("\n")
        elif name == "text":
            pad = " " * out.indent
            out.write(_wrap(operands[0], out.width, pad, pad, paragraphs=True) + "\n")
        elif name == "dl":
            out.definitions(*operands)
        elif name == "indent":
            out.indent += INDENT
        elif name == "dedent":
            out.indent -= INDENT
        else:
            raise StepAside(name)
    return "".join(out.buffer).rstrip("\n") + "\n"


def _columns() -> int:
    """The terminal's width as ``shutil.get_terminal_size`` has it (``$COLUMNS``, else the terminal
    of standard output, else 80), without importing shutil."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns if columns > 0 else 80


class _Formatter:
    def __init__(self) -> None:
        self.width = 78
        self.indent = 0
        self.buffer: list[str] = []

    def write(self, text: str) -> None:
        self.buffer.append(text)

    def usage(self, prog: str, args: str, prefix: str | None) -> None:
        prefix = "Usage: " if prefix is None else prefix
        lead = f"{prefix:>{self.indent}}{prog} "
        room = self.width - self.indent
        if room >= len(lead) + 20:  # the arguments fit to the right of the prefix
            self.write(_wrap(args, room, lead, " " * len(lead)))
        else:  # they start on the next line
            self.write(lead + "\n")
            pad = " " * (max(self.indent, len(prefix)) + 4)
            self.write(_wrap(args, room, pad, pad))
        self.write("\n")

    def definitions(self, rows: list[list[Any]], col_max: int, spacing: int) -> None:
        if not rows:
            return
        widest = max(len(r[0]) for r in rows)
        first_col = min(widest, col_max) + spacing
        for first, cell in rows:
            # a sub-command's help, shortened to what the width leaves it (3 times the spacing)
            second = _short_help(cell, self.width - 6 - widest) if isinstance(cell, dict) else cell
            self.write(f"{'':>{self.indent}}{first}")
            if not second:
                self.write("\n")
                continue
            if len(first) <= first_col - spacing:
                self.write(" " * (first_col - len(first)))
            else:
                self.write("\n" + " " * (first_col + self.indent))
            lines = _wrap(second, max(self.width - first_col - 2, 10), paragraphs=True).splitlines()
            self.write(f"{lines[0] if lines else ''}\n")
            for line in lines[1:]:
                self.write(f"{'':>{first_col + self.indent}}{line}\n")


def _short_help(spec: dict[str, Any], limit: int) -> str:
    """A sub-command's one-line help in a command list: its short help as written, else the first
    sentence of its help if it fits in ``limit``, else as many words as fit, and "..."."""
    text = spec["short"] if spec["short"] is not None else _shorten(spec["help"], limit)
    return f"{text} {spec['suffix']}".strip() if spec["suffix"] else text.strip()


def _shorten(text: str, limit: int) -> str:
    words = text.split("\n\n", 1)[0].split()
    if words[:1] == ["\b"]:
        words = words[1:]
    length = 0
    for i, word in enumerate(words):
        length += len(word) + (i > 0)
        if length > limit:
            break
        if word.endswith("."):
            return " ".join(words[: i + 1])
        if length == limit and i != len(words) - 1:
            break
    else:
        return " ".join(words)
    length += 3  # the "..."
    while i > 0:
        length -= len(words[i]) + 1
        if length <= limit:
            break
        i -= 1
    return " ".join(words[:i]) + "..."


class _Wrapper(textwrap.TextWrapper):
    def _handle_long_word(
        self, reversed_chunks: list[str], cur_line: list[str], cur_len: int, width: int
    ) -> None:
        # A word longer than the line is cut where the line ends, hyphens or not (as Typer does;
        # the standard library prefers to cut after a hyphen).
        room = max(width - cur_len, 1)
        word = reversed_chunks[-1]
        cur_line.append(word[:room])
        reversed_chunks[-1] = word[room:]


def _wrap(text: str, width: int, first: str = "", rest: str = "", *, paragraphs: bool = False) -> str:
    """``text`` wrapped to ``width``; with ``paragraphs``, each paragraph (blank-line separated) is
    wrapped on its own at its own indentation, and one that starts with a ``\\b`` line is kept as
    written."""
    text = text.expandtabs()
    wrapper = _Wrapper(width, initial_indent=first, subsequent_indent=rest, replace_whitespace=False)
    if not paragraphs:
        return wrapper.fill(text)
    done = []
    for indent, raw, body in _paragraphs(text):
        wrapper.initial_indent, wrapper.subsequent_indent = first + indent, rest + indent
        if raw:
            done.append(
                "\n".join(
                    (wrapper.initial_indent if i == 0 else wrapper.subsequent_indent) + line
                    for i, line in enumerate(body.splitlines())
                )
            )
        else:
            done.append(wrapper.fill(body))
    return "\n\n".join(done)


def _paragraphs(text: str) -> Iterator[tuple[str, bool, str]]:
    lines: list[str] = []
    indent: int | None = None

    def flush() -> tuple[str, bool, str]:
        pad = " " * (indent or 0)
        if lines[0].strip() == "\b":
            return pad, True, "\n".join(lines[1:])
        return pad, False, " ".join(lines)

    for line in text.splitlines():
        if not line:
            if lines:
                yield flush()
                lines = []
            indent = None
            continue
        if indent is None:
            indent = len(line) - len(line.lstrip())
        lines.append(line[indent:] if not lines else line)
    if lines:
        yield flush()


# -- completion --------------------------------------------------------------------------------------


def complete(instruction: str, environ: Mapping[str, str] | None = None) -> tuple[str | None, int] | None:
    """Answer a TAB (``_AIONCTL_COMPLETE=complete_SHELL``): what to print (None: nothing) and the exit
    code; None when Typer has to answer."""
    env = os.environ if environ is None else environ
    action, _, shell = instruction.partition("_")
    if action != "complete" or shell not in SHELLS:
        return None
    try:
        args, incomplete = _words(shell, env)
        items = _candidates(args, incomplete)
    except (StepAside, _Unknown, ValueError, KeyError, TypeError, IndexError):
        return None
    return _format(shell, items, env)


def _split(line: str) -> list[str]:
    """Words as the shell has them so far; an unfinished quote or escape keeps the partial word."""
    import shlex

    lex = shlex.shlex(line, posix=True)
    lex.whitespace_split = True
    lex.commenters = ""
    words: list[str] = []
    try:
        words.extend(lex)
    except ValueError:
        words.append(lex.token)
    return words


def _words(shell: str, env: Mapping[str, str]) -> tuple[list[str], str]:
    """The complete words after ``aionctl`` and the word being completed, as each shell's script
    passes them."""
    if shell == "bash":
        words = _split(env["COMP_WORDS"])
        at = int(env["COMP_CWORD"])
        return words[1:at], words[at] if at < len(words) else ""
    line = env.get("_TYPER_COMPLETE_ARGS", "")
    words = _split(line)[1:]
    if shell in ("powershell", "pwsh"):
        incomplete = env.get("_TYPER_COMPLETE_WORD_TO_COMPLETE", "")
        return (words[:-1] if incomplete else words), incomplete
    if words and not line.endswith(" "):
        return words[:-1], words[-1]
    return words, ""


class _Line:
    """The command line walked so far: the deepest command named, and what was given to it."""

    def __init__(self, path: str, entry: dict[str, Any]) -> None:
        self.path = path
        self.node = entry
        self.given: dict[str, Any] = {}


def _param_for(entry: dict[str, Any], word: str) -> dict[str, Any]:
    for param in entry["params"]:
        if param["kind"] == "option" and (word in param["opts"] or word in param["secondary"]):
            found: dict[str, Any] = param
            return found
    raise StepAside(word)


def _walk(args: list[str]) -> _Line:
    root = node("")
    if root is None:
        raise StepAside("no table")
    line = _Line("", root)
    positional: list[str] = []
    i = 0
    while i < len(args):
        word = args[i]
        i += 1
        if word == "--" or ("=" in word and word.startswith("-")):
            raise StepAside(word)
        if word.startswith("-") and word != "-":
            i = _option(line, args, i, _param_for(line.node, word))
        elif "commands" in line.node:  # a group: the word names a sub-command
            path = f"{line.path} {word}".strip()
            child = node(path) if not positional else None
            if child is None:
                raise StepAside(word)
            line = _Line(path, child)
        else:
            positional.append(word)
    _assign(line, positional)
    return line


def _option(line: _Line, args: list[str], i: int, param: dict[str, Any]) -> int:
    """Record the option ``args[i - 1]`` and its value; returns where the next word is."""
    word = args[i - 1]
    if param["eager"]:
        raise StepAside(word)
    if param["flag"]:
        line.given[param["name"]] = word not in param["secondary"]
        return i
    if param["nargs"] != 1:
        raise StepAside(word)
    if i >= len(args):  # its value is the word being completed
        return i
    value = args[i]
    if value.startswith("-"):
        raise StepAside(value)
    if param["multiple"]:
        line.given.setdefault(param["name"], []).append(value)
    else:
        line.given[param["name"]] = value
    return i + 1


def _assign(line: _Line, words: list[str]) -> None:
    """Positional words to the command's arguments, in order (extra words are ignored, as a
    completing parse does)."""
    arguments = [p for p in line.node["params"] if p["kind"] == "argument"]
    for index, param in enumerate(arguments):
        if param["nargs"] == -1:
            if index != len(arguments) - 1:
                raise StepAside(param["name"])
            if words:
                line.given[param["name"]] = list(words)
            words = []
        elif param["nargs"] == 1:
            if words:
                line.given[param["name"]] = words.pop(0)
        else:
            raise StepAside(param["name"])


def _candidates(args: list[str], incomplete: str) -> list[tuple[str, str | None]]:
    line = _walk(args)
    if incomplete == "=":
        incomplete = ""
    elif "=" in incomplete and incomplete.startswith("-"):
        raise StepAside(incomplete)
    if incomplete.startswith("-"):
        return _command_candidates(line, incomplete)
    params = line.node["params"]
    last = args[-1] if args else ""
    for param in params:
        if param["kind"] == "option" and not param["flag"] and last.startswith("-") and last in param["opts"]:
            return _value_candidates(line, param, incomplete)
    for param in params:
        if param["kind"] == "argument" and (param["nargs"] == -1 or param["name"] not in line.given):
            return _value_candidates(line, param, incomplete)
    return _command_candidates(line, incomplete)


def _command_candidates(line: _Line, incomplete: str) -> list[tuple[str, str | None]]:
    found: list[tuple[str, str | None]] = [
        (name, short) for name, short in line.node.get("commands", []) if name.startswith(incomplete)
    ]
    if incomplete and not incomplete[0].isalnum():
        for param in line.node["params"]:
            if param["kind"] != "option" or param["hidden"]:
                continue
            if not param["multiple"] and param["name"] in line.given:
                continue
            found += [
                (n, param["help"]) for n in (*param["opts"], *param["secondary"]) if n.startswith(incomplete)
            ]
    return found


class _Params(dict):  # type: ignore[type-arg]
    """The values a completion function reads from its stand-in context: those given on the line,
    else from their environment variable, else their default. Reading one whose default the table
    does not know makes the quick path step aside."""

    def __init__(self, line: _Line) -> None:
        super().__init__()
        self._unknown: set[str] = set()
        for param in line.node["params"]:
            name = param["name"]
            if name in line.given:
                self[name] = line.given[name]
                continue
            from_env = next((os.environ[v] for v in param["envvar"] if os.environ.get(v)), None)
            if from_env is not None and (param["multiple"] or param["nargs"] != 1):
                self._unknown.add(name)
            elif from_env is not None:
                self[name] = from_env
            elif isinstance(param["default"], dict):
                self._unknown.add(name)
            else:
                self[name] = param["default"]

    def __getitem__(self, key: str) -> Any:
        if key in self._unknown:
            raise _Unknown(key)
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        if key in self._unknown:
            raise _Unknown(key)
        return super().get(key, default)


class _Context:
    def __init__(self, line: _Line) -> None:
        self.params = _Params(line)


def _value_candidates(line: _Line, param: dict[str, Any], incomplete: str) -> list[tuple[str, str | None]]:
    how = param["complete"]
    if how is None:
        return []
    if not isinstance(how, dict):
        raise StepAside(param["name"])
    if "word" in how:
        return [(incomplete, None)]
    if "choices" in how:
        if how["case_sensitive"]:
            return [(c, None) for c in how["choices"] if c.startswith(incomplete)]
        return [(c, None) for c in how["choices"] if c.lower().startswith(incomplete.lower())]
    from aionctl import completing

    function = getattr(completing, how["call"])
    given = {"ctx": _Context(line), "incomplete": incomplete}
    found: list[tuple[str, str | None]] = []
    for value in function(**{name: given[name] for name in how["with"]}):
        item = (value[0], value[1]) if isinstance(value, tuple) else (value, None)
        if item[0].startswith(incomplete):
            found.append(item)
    return found


def _format(
    shell: str, items: list[tuple[str, str | None]], env: Mapping[str, str]
) -> tuple[str | None, int]:
    if shell == "bash":
        return "\n".join(value for value, _ in items), 0
    if shell == "zsh":
        if not items:
            return "_files", 0
        rows = "\n".join(f'"{_zsh(v)}":"{_zsh(h)}"' if h else f'"{_zsh(v)}"' for v, h in items)
        return f"_arguments '*: :(({rows}))'", 0
    if shell == "fish":
        action = env.get("_TYPER_COMPLETE_FISH_ACTION", "")
        if action == "is-args":  # whether to offer these values instead of file names
            return None, 0 if items else 1
        if action == "get-args" and items:
            import re

            return "\n".join(f"{v}\t{re.sub(_SPACE, ' ', h)}" if h else v for v, h in items), 0
        return "", 0
    return "\n".join(f"{v}:::{h if h else ' '}" for v, h in items), 0


_SPACE = r"\s"


def _zsh(text: str | None) -> str:
    return (
        (text or "")
        .replace('"', '""')
        .replace("'", "''")
        .replace("$", "\\$")
        .replace("`", "\\`")
        .replace(":", r"\\:")
    )


def answer(args: Sequence[str]) -> int | None:
    """Answer ``aionctl ARGS`` here when it is a TAB or a ``--help`` the table knows; None when it is
    not (then aionctl runs it through Typer)."""
    instruction = os.environ.get("_AIONCTL_COMPLETE")
    if instruction:
        done = complete(instruction)
        if done is None:
            return None
        text, code = done
        if text is not None:
            sys.stdout.write(text + "\n")
        return code
    text = help_text(args)
    if text is None:
        return None
    sys.stdout.write(text)
    return 0
