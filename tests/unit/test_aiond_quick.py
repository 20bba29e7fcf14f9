"""aiond.quick answers ``aiond --help`` and ``aiond token [COMMAND] --help`` as the real parsers do,
without loading the settings module and what it imports."""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from aiond import _help_table, main, quick
from aiond.security import tokens
from tests.rig.daemon import REPO
from tests.rig.generated import assert_current

WIDTHS = ("50", "80", "163")
TOKEN_COMMANDS = ("create", "list", "revoke", "rotate")


def test_the_table_is_current() -> None:
    assert_current("aiond_help_table.py")


def _command(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    commands = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    found: argparse.ArgumentParser = commands[0].choices[name]
    return found


def _helps(aiond: argparse.ArgumentParser, token: argparse.ArgumentParser) -> dict[str, str]:
    helps = {"aiond": aiond.format_help(), "aiond token": token.format_help()}
    helps |= {f"aiond token {c}": _command(token, c).format_help() for c in TOKEN_COMMANDS}
    return helps


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("state_home", [None, "/srv/state", "relative/state/"])
def test_the_replayed_help_is_the_real_help(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, width: str, state_home: str | None
) -> None:
    monkeypatch.setenv("COLUMNS", width)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    if state_home is None:
        monkeypatch.delenv("XDG_STATE_HOME", raising=False)
    else:
        monkeypatch.setenv("XDG_STATE_HOME", state_home)
    aiond, token = quick.parser("aiond"), quick.parser("aiond token")
    assert aiond is not None
    assert token is not None
    replayed = _helps(aiond, token)
    real = _helps(main._parser(), tokens.parser())
    assert replayed == real
    assert not [name for name, text in replayed.items() if "@AIOND_STATE_HOME@" in text]


def _answer(argv: list[str]) -> tuple[str, int | None]:
    """What quick.answer prints, and its exit code (None when it steps aside)."""
    out = io.StringIO()
    with redirect_stdout(out):
        try:
            quick.answer(argv)
        except SystemExit as exc:
            return out.getvalue(), int(exc.code or 0)
    return out.getvalue(), None


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["-h"],
        ["token", "--help"],
        ["token", "-h"],
        *[["token", c, "--help"] for c in TOKEN_COMMANDS],
    ],
)
def test_help_is_answered_as_the_real_command_answers_it(
    monkeypatch: pytest.MonkeyPatch, argv: list[str]
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    printed, code = _answer(argv)
    assert code == 0
    real = io.StringIO()
    with redirect_stdout(real), pytest.raises(SystemExit) as exited:
        main.main(argv)
    assert exited.value.code == 0
    assert printed == real.getvalue()
    assert printed.startswith("usage: aiond")


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--version"],
        ["--help", "--config", "x"],
        ["--config", "--help"],
        ["token"],
        ["token", "bogus", "--help"],
        ["token", "--state-dir", "--help"],
        ["token", "token", "--help"],
        ["token", "create", "x", "--help"],
    ],
)
def test_anything_else_is_left_to_the_real_parser(argv: list[str]) -> None:
    assert _answer(argv) == ("", None)


def test_a_table_of_another_version_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_help_table, "VERSION", "0.0.0-other")
    assert quick.parser("aiond") is None
    assert _answer(["--help"]) == ("", None)


HEAVY_FOR_HELP = (
    "dataclasses",
    "inspect",
    "typing",
    "logging",
    "asyncio",
    "aion.errors",
    "aiond.settings",
    "aiond.usage",
    "aiond.security.tokens",
    "grpc",
)
"""What ``--help`` must not load: each costs a noticeable part of its 100 ms (benchmarks/startup.py)."""


@pytest.mark.parametrize("argv", [["--help"], ["token", "--help"], ["token", "rotate", "-h"]])
def test_help_loads_none_of_the_heavy_modules(argv: list[str]) -> None:
    code = (
        "import json, sys\n"
        "from aiond.main import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit as exc:\n"
        "    assert exc.code == 0, exc.code\n"
        f"print(json.dumps(sorted(m for m in {HEAVY_FOR_HELP!r} if m in sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True, cwd=REPO
    )
    assert result.stdout.startswith("usage: aiond")
    assert json.loads(result.stdout.splitlines()[-1]) == []
