"""aionctl.quick answers ``--help`` and TABs from the command table exactly as Typer does.

Every command's help is rendered both ways at several terminal widths, and a corpus of command lines
built from the table (every command, its options, their values, its arguments, flags already given)
is completed both ways for every shell. The quick path may step aside (then Typer answers); the
tests pin down exactly when it does, so that it cannot quietly stop answering.
"""

from __future__ import annotations

import io
import json
import os
import re
from collections.abc import Iterator
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import pytest

from aion.config import rules
from aion.modules.store import ModuleStore
from aionctl import quick
from aionctl.app import run
from tests.rig.daemon import EXAMPLES, REPO
from tests.rig.generated import assert_current

TABLE = REPO / "aionctl" / "cli.jsonl"
PATHS: list[str] = json.loads(TABLE.read_text(encoding="utf-8").split("\n", 1)[0])["paths"]
WIDTHS = (50, 80, 101, 163)
SHELLS = ("bash", "zsh", "fish-get", "fish-is", "powershell")


def test_the_table_is_current() -> None:
    assert_current("cli_table.py")


def test_the_table_holds_every_command_and_their_help() -> None:
    assert len(PATHS) >= 80
    assert {"", "policy", "policy apply", "runbook run", "completion"} <= set(PATHS)
    missing = [p for p in PATHS if not (quick.node(p) or {}).get("help")]
    assert missing == [], "help that depends on the environment is answered by Typer; none does today"


def typer_says(args: list[str]) -> tuple[str, int]:
    out = io.StringIO()
    with redirect_stdout(out):
        try:
            code = run(args)
        except SystemExit as exc:  # a TAB ends with sys.exit, as Click has it
            code = int(exc.code or 0)
    return out.getvalue(), code


def quick_says(args: list[str]) -> tuple[str, int] | None:
    out = io.StringIO()
    with redirect_stdout(out):
        code = quick.answer(args)
    return None if code is None else (out.getvalue(), code)


@pytest.mark.parametrize("width", WIDTHS)
def test_help_is_typers_at_every_width(width: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", str(width))
    monkeypatch.delenv("_AIONCTL_COMPLETE", raising=False)
    for path in PATHS:
        for flag in ("--help", "-h"):
            args = [*path.split(), flag]
            answered = quick_says(args)
            assert answered is not None, f"aionctl {path} {flag}: not answered from the table"
            assert answered == typer_says(args), f"aionctl {path} {flag} at {width} columns"


def test_help_steps_aside_for_anything_but_command_names_then_help() -> None:
    for args in (
        ["--no-color", "--help"],  # an option before: Typer parses it
        ["policy", "--output", "json", "--help"],
        ["nonsense", "--help"],
        ["policy", "apply"],
        ["--help", "policy"],
        [],
    ):
        assert quick.help_text(args) is None, args


# -- completion --------------------------------------------------------------------------------------


@pytest.fixture
def places(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the dynamic values come from: examples/ as the config, a store of modules, contexts."""
    store = tmp_path / "store"
    store.mkdir()
    ModuleStore(store).write_lock({
        name: {"ref": f"registry.example/aion/{name}:1.0", "digest": "sha256:" + "0" * 64}
        for name in ("summarizer", "sum-two", "tagger")
    })  # fmt: skip
    client = tmp_path / "client.yaml"
    client.write_text(
        "apiVersion: aion/v1\nkind: ClientConfig\ncurrent-context: dev\ncontexts:\n"
        "  - name: dev\n    addr: 127.0.0.1:8470\n  - name: prod\n    addr: 10.0.0.1:8470\n"
    )
    for key in list(os.environ):
        if key.startswith(("AION", "_AION", "_TYPER", "COMP_")):
            monkeypatch.delenv(key)
    monkeypatch.setenv("AION_CONFIG", str(EXAMPLES))
    monkeypatch.setenv("AION_MODULE_STORE", str(store))
    monkeypatch.setenv("AION_CLIENT_CONFIG", str(client))
    monkeypatch.chdir(tmp_path)


def lines() -> Iterator[tuple[list[str], str]]:
    """Command lines to complete: the words typed after ``aionctl``, and the word under the cursor.
    Each kind of place a TAB can fall is here for every command; the same option on many commands
    (``--output``, ``--addr``) is tried in full once."""
    seen: set[str] = set()
    for path in PATHS:
        entry = quick.node(path)
        assert entry is not None
        words = path.split()
        yield words, ""
        yield words, "-"
        yield words, "--h"
        for name, _ in entry.get("commands", [])[:3]:
            yield words, name[:1]
        for param in entry["params"]:
            if param["kind"] != "option" or param["eager"]:
                continue
            opt = param["opts"][-1]
            again = opt in seen
            seen.add(opt)
            if param["flag"]:
                yield [*words, opt], "--"  # a flag given is not offered again
            elif not again:
                yield [*words, opt], ""
                yield [*words, opt], "j"
                yield [*words, opt, "x"], "--"
            else:
                yield [*words, opt], ""
        if any(p["kind"] == "argument" for p in entry["params"]):
            yield [*words, "one"], ""
            yield [*words, "one"], "t"
            yield [*words, "one", "two", "three"], "--o"


STEPS_ASIDE = [
    (["--version"], ""),  # eager: Typer's callback decides
    (["policy", "apply", "--output=json"], ""),
    (["policy", "apply"], "--output="),
    (["task", "submit", "--", "x"], ""),
    (["nonsense"], ""),
    (["policy", "--nope"], ""),
    (["-qv"], ""),
]


def environment(shell: str, words: list[str], incomplete: str) -> dict[str, str]:
    import shlex

    typed = " ".join(["aionctl", *(shlex.quote(w) for w in words)])
    if shell == "bash":
        line = f"{typed} {shlex.quote(incomplete) if incomplete else ''}"
        return {"_AIONCTL_COMPLETE": "complete_bash", "COMP_WORDS": line, "COMP_CWORD": str(len(words) + 1)}
    if shell == "powershell":
        return {
            "_AIONCTL_COMPLETE": "complete_powershell",
            "_TYPER_COMPLETE_ARGS": f"{typed} {incomplete}".rstrip() if incomplete else typed,
            "_TYPER_COMPLETE_WORD_TO_COMPLETE": incomplete,
        }
    env = {
        "_AIONCTL_COMPLETE": f"complete_{shell.split('-', maxsplit=1)[0]}",
        "_TYPER_COMPLETE_ARGS": f"{typed} {incomplete}",
    }
    if shell.startswith("fish"):
        env["_TYPER_COMPLETE_FISH_ACTION"] = "get-args" if shell == "fish-get" else "is-args"
    return env


def both(shell: str, words: list[str], incomplete: str, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Any]:
    with monkeypatch.context() as env:
        for key, value in environment(shell, words, incomplete).items():
            env.setenv(key, value)
        return quick_says([]), help_first(typer_says([]))


def help_first(answer: tuple[str, int]) -> tuple[str, int]:
    """Typer offers ``-h`` and ``--help`` in the order of a set, which changes from run to run; the
    quick path offers ``-h`` first, as help lists them."""
    printed, code = answer
    head, tail = "", ""
    if printed.startswith(ZSH_HEAD) and printed.endswith(ZSH_TAIL):
        head, tail, printed = ZSH_HEAD, ZSH_TAIL, printed[len(ZSH_HEAD) : -len(ZSH_TAIL)]
    lines = printed.split("\n")
    for i in range(len(lines) - 1):
        if re.match(r'"?--help\b', lines[i]) and re.match(r'"?-h\b', lines[i + 1]):
            lines[i], lines[i + 1] = lines[i + 1], lines[i]
    return head + "\n".join(lines) + tail, code


ZSH_HEAD, ZSH_TAIL = "_arguments '*: :((", "))'\n"


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.usefixtures("places")
def test_every_tab_is_answered_as_typer_answers_it(shell: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every line in zsh (its format carries the values' help); a fifth of them in the other shells,
    a different fifth each, since only the formatting differs."""
    cases = list(lines())
    assert len(cases) > 700
    if shell != "zsh":
        cases = cases[SHELLS.index(shell) :: 5]
    offered = 0
    for words, incomplete in cases:
        fast, slow = both(shell, words, incomplete, monkeypatch)
        assert fast is not None, f"{shell}: aionctl {' '.join(words)} {incomplete!r}<TAB> was not answered"
        assert fast == slow, f"{shell}: aionctl {' '.join(words)} {incomplete!r}<TAB>"
        printed, code = fast
        offered += printed.strip() not in ("", "_files") or (shell == "fish-is" and code == 0)
    assert offered > len(cases) / 3, "most of these lines offer something"


@pytest.mark.parametrize(("words", "incomplete"), STEPS_ASIDE)
@pytest.mark.usefixtures("places")
def test_a_tab_it_is_not_sure_of_is_left_to_typer(
    words: list[str], incomplete: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast, _ = both("bash", words, incomplete, monkeypatch)
    assert fast is None


@pytest.mark.usefixtures("places")
def test_dynamic_values_reach_the_shell(monkeypatch: pytest.MonkeyPatch) -> None:
    """The corpus compares; this shows the values are the real ones (intents of examples/, the
    store's modules, the client config's contexts, rule ids, runbooks)."""

    def offered(*words: str, incomplete: str = "") -> list[str]:
        fast, _ = both("bash", list(words), incomplete, monkeypatch)
        assert fast is not None
        printed: str = fast[0]
        return printed.split()

    assert offered("module", "remove", incomplete="su") == ["sum-two", "summarizer"]
    assert offered("--context") == ["dev", "prod"]
    assert "summarize" in offered("intent", "mode")
    assert offered("intent", "mode", "summarize", incomplete="h") == ["hybrid"]
    assert offered("explain", incomplete="AION1") == [r for r in rules.RULES if r.startswith("AION1")] != []
    assert {"bootstrap", "release"} <= set(offered("runbook", "run"))
    assert offered("policy", "apply", "--output", incomplete="j") == ["json", "junit"]
