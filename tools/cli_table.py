"""Write aionctl/cli.jsonl, the table aionctl answers ``--help`` and TABs from, or check it is current.

    python tools/cli_table.py          # regenerate (after adding or changing a command or its help)
    python tools/cli_table.py --check  # exit 1 when the committed table differs

Importing Typer costs aionctl about a hundred milliseconds, more than a ``--help`` or a TAB may take
in all. So the table records, from the commands themselves:

- each command's help as the calls Typer makes to its help formatter (usage line, text, definition
  lists, sections), which ``aionctl.quick`` replays at the terminal's width;
- each command's sub-commands and parameters (names, flags, arity, environment variables, defaults,
  how a value completes), which ``aionctl.quick`` walks to answer a TAB.

A command whose help depends on the environment it is rendered in (a default read from the user's
home, say) is left out of the help table, and a parameter whose completion the quick path cannot
reproduce is marked so: aionctl then answers through Typer, as it always could. Tests compare the
quick answers with Typer's for every command, at several widths and for every shell.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "aionctl" / "cli.jsonl"
sys.path.insert(0, str(ROOT))

LIGHT_COMPLETERS = "aionctl.completing"
"""The module a completion function must live in for the quick path to call it: it imports neither
Typer nor anything heavy."""


_SHORT = "\x00"
"""Marks a sub-command's short help in the rows of a help's command list: Typer shortens it to fit
the terminal's width, so the table keeps what it is shortened from."""


def _short_help(command: Any, limit: int = 45) -> str:
    import inspect

    deprecated = command.deprecated
    suffix = (
        (f"(DEPRECATED: {deprecated})" if isinstance(deprecated, str) else "(DEPRECATED)")
        if deprecated
        else ""
    )
    spec = {
        "short": inspect.cleandoc(command.short_help) if command.short_help else None,
        "help": command.help or "",
        "suffix": suffix,
    }
    return _SHORT + json.dumps(spec)


class _Recorder:
    """Stands in for Typer's help formatter and records what is asked of it."""

    ops: ClassVar[list[list[Any]]] = []

    def __init__(self, width: int | None = None, max_width: int | None = None) -> None:
        self.width = 78  # read by nothing in aionctl's help; the replay computes the real one
        self.current_indent = 0
        self.buffer: list[str] = []
        _Recorder.ops = [["max_width", max_width]]

    def write(self, string: str) -> None:
        _Recorder.ops.append(["write", string])

    def write_usage(self, prog: str, args: str = "", prefix: str | None = None) -> None:
        _Recorder.ops.append(["usage", prog, args, prefix])

    def write_heading(self, heading: str) -> None:
        _Recorder.ops.append(["heading", heading])

    def write_paragraph(self) -> None:
        _Recorder.ops.append(["paragraph"])

    def write_text(self, text: str) -> None:
        _Recorder.ops.append(["text", text])

    def write_dl(self, rows: Any, col_max: int = 30, col_spacing: int = 2) -> None:
        cells = [
            [first, json.loads(second[1:]) if second.startswith(_SHORT) else second] for first, second in rows
        ]
        _Recorder.ops.append(["dl", cells, col_max, col_spacing])

    def indent(self) -> None:
        _Recorder.ops.append(["indent"])

    def dedent(self) -> None:
        _Recorder.ops.append(["dedent"])

    @contextlib.contextmanager
    def section(self, name: str) -> Iterator[None]:
        self.write_paragraph()
        self.write_heading(name)
        self.indent()
        try:
            yield
        finally:
            self.dedent()

    @contextlib.contextmanager
    def indentation(self) -> Iterator[None]:
        self.indent()
        try:
            yield
        finally:
            self.dedent()

    def getvalue(self) -> str:
        return ""


def _help_ops(root: Any, path: list[str]) -> list[list[Any]]:
    from typer._click import core

    saved = core.Context.formatter_class, core.Command.get_short_help_str
    core.Context.formatter_class = _Recorder  # type: ignore[assignment]
    core.Command.get_short_help_str = _short_help  # type: ignore[method-assign,assignment]
    _Recorder.ops = []
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            root.main([*path, "--help"], prog_name="aionctl", standalone_mode=False)
    finally:
        core.Context.formatter_class, core.Command.get_short_help_str = saved  # type: ignore[method-assign]
    if not _Recorder.ops:
        raise SystemExit(f"aionctl {' '.join(path)} --help formatted nothing")
    return _Recorder.ops


@contextlib.contextmanager
def _elsewhere() -> Iterator[None]:
    """Another user's environment: other home, data and config directories, working directory, aion
    settings. Help that differs here depends on where it is rendered."""
    saved = dict(os.environ)
    cwd = Path.cwd()
    with tempfile.TemporaryDirectory() as other:
        for key in list(os.environ):
            if key.startswith(("AION", "XDG_")):
                del os.environ[key]
        os.environ.update({
            "HOME": other, "XDG_DATA_HOME": f"{other}/data", "XDG_CONFIG_HOME": f"{other}/config",
            "XDG_STATE_HOME": f"{other}/state", "XDG_CACHE_HOME": f"{other}/cache",
            "AION_CONFIG": f"{other}/config-dir", "AION_MODULE_STORE": f"{other}/store",
        })  # fmt: skip
        os.chdir(other)
        try:
            yield
        finally:
            os.chdir(cwd)
            os.environ.clear()
            os.environ.update(saved)


def _completion(param: Any) -> Any:
    """How a parameter's value completes: a light function to call, choices, the word itself (file
    types), nothing; or "typer" when only Typer can say."""
    from typer import _types
    from typer._click import types

    custom = getattr(param, "_custom_shell_complete", None)
    if custom is not None:
        # Typer wraps the function given as autocompletion= twice; the innermost is aion's.
        function = custom
        for cell in getattr(custom, "__closure__", None) or ():
            inner = getattr(cell.cell_contents, "__wrapped__", None)
            if inner is not None:
                function = inner
        if getattr(function, "__module__", "") != LIGHT_COMPLETERS or function is custom:
            return "typer"
        import inspect

        wants = list(inspect.signature(function).parameters)
        if not set(wants) <= {"ctx", "incomplete"}:
            return "typer"
        return {"call": function.__name__, "with": wants}
    kind = type(param.type)
    if isinstance(param.type, _types.TyperChoice):
        return {"choices": [str(c) for c in param.type.choices], "case_sensitive": param.type.case_sensitive}
    if kind.shell_complete is types.File.shell_complete:
        return {"word": True}
    if kind.shell_complete is types.ParamType.shell_complete or kind.shell_complete.__qualname__ in (
        "TyperPath.shell_complete",
    ):
        return None
    return "typer"


def _plain(value: Any) -> Any:
    """``value`` if JSON holds it as it is, else the marker of a default the quick path cannot know."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(v, (bool, int, float, str)) for v in value):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    return {"unknown": True}


def _param(param: Any) -> dict[str, Any]:
    envvar = param.envvar
    entry: dict[str, Any] = {
        "kind": "option" if param.param_type_name == "option" else "argument",
        "name": param.name,
        # Typer keeps the help option's names in a set (their order changes from run to run); the
        # table lists them as help shows them, the short one first.
        "opts": sorted(param.opts, key=len) if param.name == "help" and param.is_eager else list(param.opts),
        "secondary": list(param.secondary_opts),
        "flag": bool(getattr(param, "is_flag", False) or getattr(param, "count", False)),
        "nargs": param.nargs,
        "multiple": bool(param.multiple),
        "hidden": bool(getattr(param, "hidden", False)),
        "eager": bool(param.is_eager),
        "help": getattr(param, "help", None),
        "envvar": [envvar] if isinstance(envvar, str) else list(envvar or []),
        "default": _plain(param.default) if not callable(param.default) else {"unknown": True},
        "complete": _completion(param),
    }
    return entry


def table() -> dict[str, Any]:
    import typer.main

    from aionctl.app import app

    root = typer.main.get_command(app)
    commands: dict[str, Any] = {}

    def visit(command: Any, ctx: Any, path: list[str]) -> None:
        ops = _help_ops(root, path)
        with _elsewhere():
            same = _help_ops(root, path) == ops
        node: dict[str, Any] = {
            "help": ops if same else None,
            "params": [_param(p) for p in command.get_params(ctx)],
        }
        if hasattr(command, "list_commands"):
            children = []
            for name in command.list_commands(ctx):
                child = command.get_command(ctx, name)
                if child is None or child.hidden:
                    continue
                children.append([name, child.get_short_help_str()])
            node["commands"] = children
        commands[" ".join(path)] = node
        for name, _ in node.get("commands", []):
            child = command.get_command(ctx, name)
            with child.make_context(name, [], parent=ctx, resilient_parsing=True) as sub:
                visit(child, sub, [*path, name])

    with root.make_context("aionctl", [], resilient_parsing=True) as ctx:
        visit(root, ctx, [])
    return {
        "about": "Generated by tools/cli_table.py from aionctl's commands; do not edit.",
        "commands": commands,
    }


def render(data: dict[str, Any]) -> str:
    """An index line (what the table is, and the command paths in order), then one line per command:
    aionctl parses only the lines it needs."""
    paths = list(data["commands"])
    lines = [{"about": data["about"], "paths": paths}, *(data["commands"][p] for p in paths)]
    return "".join(
        json.dumps(line, sort_keys=True, ensure_ascii=True, separators=(",", ":")) + "\n" for line in lines
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when the committed table is stale")
    args = parser.parse_args()
    text = render(table())
    if args.check:
        current = OUT.read_text(encoding="utf-8") if OUT.exists() else ""
        if current != text:
            print(f"{OUT.relative_to(ROOT)} is stale: run python tools/cli_table.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT.relative_to(ROOT)} ({len(text):,} bytes, {text.count(chr(10)) - 1} commands)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
