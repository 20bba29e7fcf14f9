"""Shell completion as shells run it: the scripts ``aionctl completion`` prints, and the real program
answering each TAB through the completion protocol (bash, zsh, fish and PowerShell formats), with the
values of every dynamic completion, and nothing heavy imported to answer them."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import textwrap
from collections.abc import Mapping
from pathlib import Path

import pytest

from aion.config import rules
from aion.modules.store import ModuleStore
from tests.rig.daemon import EXAMPLES, REPO, aionctl, clean_env, program

SHELLS = {"bash": "aionctl.bash", "zsh": "_aionctl", "fish": "aionctl.fish", "powershell": "aionctl.ps1"}

INTENTS = """\
apiVersion: aion/v1
kind: Intents
# a comment: not an intent
triage:
  description: "Sort incoming tickets"
  privacy: local-only
  fallback_order: [local]
'tag.me':
  privacy: allow-api
translate-docs:
  description: >
    nested: not an intent
  privacy: hybrid
"""

RUNBOOK = """\
# a runbook whose metadata name differs from its file name
apiVersion: aion/v1
kind: Runbook
metadata:
  labels:
    name: not-this-one
  name: nightly-drill
steps:
  - name: not-a-runbook-name
    run: health
"""


def tab(words: str, *, cwd: Path | None = None, env: Mapping[str, str] | None = None) -> list[str]:
    """What bash gets for a TAB after ``words`` (the last word is the one being completed)."""
    cword = len(shlex.split(words)) - (0 if words.endswith(" ") else 1)
    result = _complete("complete_bash", {"COMP_WORDS": words, "COMP_CWORD": str(cword)}, cwd=cwd, env=env)
    return result.stdout.split()


def _complete(
    instruction: str,
    extra: Mapping[str, str],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    full = clean_env({**(env or {}), "_AIONCTL_COMPLETE": instruction, **extra})
    result = subprocess.run(
        [program("aionctl")], capture_output=True, text=True, env=full, cwd=cwd, timeout=60, check=False
    )
    assert result.stderr == "", "a TAB must never print anything but candidates"
    return result


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "config"
    directory.mkdir()
    (directory / "intents.yml").write_text(INTENTS)
    return directory


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """A module store whose lock file is written by the store itself."""
    root = tmp_path / "store"
    root.mkdir()
    ModuleStore(root).write_lock({
        "summarize_text": {"ref": "ghcr.io/aion/summarize_text:1.3.0", "digest": "sha256:" + "0" * 64},
        "pii_redact": {"ref": "ghcr.io/aion/pii_redact:0.9.0", "digest": "sha256:" + "1" * 64},
        "sum;rm -rf ~": {"ref": "x", "digest": "sha256:" + "2" * 64},  # not a module name: never offered
    })  # fmt: skip
    return root


# -- the scripts ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("shell", list(SHELLS))
def test_completion_prints_the_script_committed_in_completions(shell: str) -> None:
    result = aionctl("completion", shell)
    assert result.returncode == 0, result.stderr
    assert result.stdout == (REPO / "completions" / SHELLS[shell]).read_text()


@pytest.mark.parametrize("shell", list(SHELLS))
def test_completion_script_is_the_one_the_protocol_answers(shell: str) -> None:
    """The script must speak the protocol the program answers: the same as Typer's own source_SHELL."""
    printed = aionctl("completion", shell.upper())
    source = _complete(f"source_{shell}", {})
    assert printed.stdout.strip() == source.stdout.strip()


def test_completion_refuses_an_unknown_shell() -> None:
    result = aionctl("completion", "tcsh")
    assert result.returncode == 2
    assert "error: SHELL: 'tcsh' is not one of 'bash', 'zsh', 'fish', 'powershell'" in result.stderr
    assert result.stdout == ""


def test_bash_script_completes_in_bash(tmp_path: Path, config_dir: Path) -> None:
    """bash itself sources the script and runs its completion function, which calls aionctl back."""
    script = tmp_path / "aionctl.bash"
    script.write_text(aionctl("completion", "bash").stdout)
    driver = textwrap.dedent(f"""\
        source {shlex.quote(str(script))}
        COMP_WORDS=(aionctl intent mode t)
        COMP_CWORD=3
        _aionctl_completion aionctl
        printf '%s\\n' "${{COMPREPLY[@]}}"
    """)
    bin_dir = str(Path(program("aionctl")).parent)
    env = clean_env({"PATH": f"{bin_dir}:/usr/bin:/bin"})
    result = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", driver],
        capture_output=True, text=True, env=env, cwd=config_dir, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["triage", "tag.me", "translate-docs"]


# -- the values of each argument -------------------------------------------------------------------------


def test_rule_ids() -> None:
    assert tab("aionctl explain AION30") == sorted(r for r in rules.RULES if r.startswith("AION30"))
    assert tab("aionctl explain ") == list(rules.RULES)
    assert tab("aionctl explain nothing") == []


def test_intents_from_the_current_directory(config_dir: Path) -> None:
    assert tab("aionctl intent mode ", cwd=config_dir) == ["triage", "tag.me", "translate-docs"]
    assert tab("aionctl task submit tr", cwd=config_dir) == ["triage", "translate-docs"]


def test_intents_from_the_command_option_then_the_environment(tmp_path: Path, config_dir: Path) -> None:
    examples = ["summarize", "invoice_ocr", "draft_reply"]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    mine = ["triage", "tag.me", "translate-docs"]
    assert tab(f"aionctl route explain --config {config_dir} ", cwd=elsewhere) == mine
    assert tab("aionctl route explain ", cwd=elsewhere, env={"AION_CONFIG": str(EXAMPLES)}) == examples
    assert tab("aionctl task submit ", cwd=elsewhere, env={"AIOND_CONFIG": str(EXAMPLES)}) == examples
    # --config wins over the environment, which wins over the current directory
    both = {"AION_CONFIG": str(EXAMPLES)}
    assert tab(f"aionctl route explain --config {config_dir} t", cwd=config_dir, env=both) == mine
    assert tab("aionctl intent mode ", cwd=config_dir, env=both) == examples
    assert tab("aionctl intent mode ", cwd=elsewhere) == []


@pytest.mark.parametrize(
    "content",
    [b"\xff\xfe\x00garbage", b"triage: [unclosed\n" + b"x" * (2 << 20), b""],
    ids=["not-utf8", "too-large", "empty"],
)
def test_a_bad_intents_file_offers_nothing(config_dir: Path, content: bytes) -> None:
    (config_dir / "intents.yml").write_bytes(content)
    assert tab("aionctl intent mode ", cwd=config_dir) == []


def test_an_intents_directory_in_place_of_the_file_offers_nothing(tmp_path: Path) -> None:
    (tmp_path / "intents.yml").mkdir()
    assert tab("aionctl intent mode ", cwd=tmp_path) == []


def test_intent_modes() -> None:
    assert tab("aionctl intent mode triage ") == ["local-only", "allow-api", "hybrid", "policy"]
    assert tab("aionctl intent mode triage h") == ["hybrid"]


def test_installed_modules(store: Path) -> None:
    assert tab(f"aionctl module remove --store {store} ") == ["pii_redact", "summarize_text"]
    assert tab(f"aionctl module inspect --store {store} s") == ["summarize_text"]
    assert tab("aionctl module verify --store x pii_redact ", env={"AION_MODULE_STORE": str(store)}) == []
    on_env = {"AION_MODULE_STORE": str(store)}
    assert tab("aionctl module verify pii_redact ", env=on_env) == ["pii_redact", "summarize_text"]
    assert tab("aionctl module parallelism p", env=on_env) == ["pii_redact"]


def test_a_damaged_lock_file_offers_nothing(store: Path) -> None:
    (store / "aion.lock").write_text('{"modules": ["not", "a", "map"]')
    assert tab(f"aionctl module remove --store {store} ") == []
    (store / "aion.lock").write_text("[]")
    assert tab(f"aionctl module remove --store {store} ") == []


def test_runbooks_on_the_search_path(tmp_path: Path) -> None:
    books = tmp_path / "books"
    books.mkdir()
    (books / "drill.yml").write_text(RUNBOOK)
    (books / "intents.yml").write_text(INTENTS)  # YAML, but no runbook
    (books / ".hidden.yml").write_text(RUNBOOK)
    offered = tab("aionctl runbook run ", cwd=tmp_path, env={"AION_RUNBOOK_PATH": str(books)})
    assert offered[:2] == ["drill", "nightly-drill"]
    assert not {"intents", "not-this-one", ".hidden"} & set(offered)
    listed = aionctl("runbook", "list", "-o", "json", env={"AION_RUNBOOK_PATH": str(books)})
    assert listed.returncode == 0, listed.stderr
    names = [r["name"] for r in json.loads(listed.stdout)["runbooks"]]
    assert "bootstrap" in names
    assert set(names) <= set(offered), "every runbook `runbook list` shows can be completed by name"
    assert tab("aionctl runbook run night", cwd=tmp_path, env={"AION_RUNBOOK_PATH": str(books)}) == [
        "nightly-drill"
    ]


def test_contexts(tmp_path: Path) -> None:
    env = {"AION_CLIENT_CONFIG": str(tmp_path / "client.yaml")}
    for name in ("prod", "staging", "prod-eu"):
        made = aionctl("config", "set-context", name, "--addr", "127.0.0.1:8470", env=env)
        assert made.returncode == 0, made.stderr
    assert tab("aionctl --context pr", env=env) == ["prod", "prod-eu"]
    assert tab("aionctl --context staging health --o", env=env) == ["--output"]
    (tmp_path / "client.yaml").write_text("contexts: [unclosed\n")
    assert tab("aionctl --context ", env=env) == []


def test_an_unknown_command_is_no_error_while_completing() -> None:
    tab("aionctl valdiate ")  # stderr empty: asserted by _complete


# -- the formats of the other shells -----------------------------------------------------------------------


def test_zsh_format(config_dir: Path) -> None:
    result = _complete("complete_zsh", {"_TYPER_COMPLETE_ARGS": "aionctl explain AION30"})
    out = result.stdout.strip()
    head, tail = "_arguments '*: :((", "))'"
    assert (out[: len(head)], out[-len(tail) :]) == (head, tail)
    items = out.removeprefix(head).removesuffix(tail).splitlines()
    wanted = sorted(r for r in rules.RULES if r.startswith("AION30"))
    assert [item.split(":", 1)[0] for item in items] == [f'"{r}"' for r in wanted]
    # each value with its summary; a quote doubled, as inside zsh's single quotes
    assert f'"AION301":"{rules.RULES["AION301"].summary}"' in items
    assert '"AION304":"A tier lists a cloud provider\'\'s model as local."' in items
    intents = _complete("complete_zsh", {"_TYPER_COMPLETE_ARGS": "aionctl intent mode t"}, cwd=config_dir)
    assert intents.stdout.strip() == """_arguments '*: :(("triage"\n"tag.me"\n"translate-docs"))'"""
    none = _complete("complete_zsh", {"_TYPER_COMPLETE_ARGS": "aionctl intent mode zzz"}, cwd=config_dir)
    assert none.stdout.strip() == "_files"


def test_fish_format(store: Path) -> None:
    args = {"_TYPER_COMPLETE_ARGS": f"aionctl module remove --store {store} "}
    got = _complete("complete_fish", {**args, "_TYPER_COMPLETE_FISH_ACTION": "get-args"})
    assert got.stdout.splitlines() == [
        "pii_redact\tghcr.io/aion/pii_redact:0.9.0",
        "summarize_text\tghcr.io/aion/summarize_text:1.3.0",
    ]
    has = _complete("complete_fish", {**args, "_TYPER_COMPLETE_FISH_ACTION": "is-args"})
    assert has.returncode == 0
    empty = {"_TYPER_COMPLETE_ARGS": f"aionctl module remove --store {store} zzz"}
    lacks = _complete("complete_fish", {**empty, "_TYPER_COMPLETE_FISH_ACTION": "is-args"})
    assert lacks.returncode == 1, "no candidates: fish falls back to file names"


def test_help_is_shown_as_written() -> None:
    """Brackets in help are text, not markup: the defaults of the connection options stay."""
    args = {"_TYPER_COMPLETE_ARGS": "aionctl health --ad", "_TYPER_COMPLETE_FISH_ACTION": "get-args"}
    assert (
        _complete("complete_fish", args).stdout == "--addr\taiond gRPC address [default: 127.0.0.1:8470].\n"
    )


def test_powershell_format() -> None:
    args = {"_TYPER_COMPLETE_ARGS": "aionctl intent mode triage lo", "_TYPER_COMPLETE_WORD_TO_COMPLETE": "lo"}
    assert _complete("complete_powershell", args).stdout == "local-only::: \n"


# -- what a TAB imports ------------------------------------------------------------------------------------

HEAVY = (
    "grpc", "google.protobuf", "httpx", "aiohttp", "rich", "jsonschema_rs", "cryptography", "sigstore",
    "confluent_kafka", "wasmtime", "opentelemetry", "aion.api", "aion.config.validate", "aion.routing",
    "aion.modules", "aion.runbook", "aionctl.runbooks",
)  # fmt: skip


@pytest.mark.parametrize(
    ("words", "allowed"),
    [
        ("aionctl explain AION1", ()),
        ("aionctl intent mode ", ()),
        ("aionctl intent mode triage ", ()),
        ("aionctl task submit ", ()),
        ("aionctl route explain ", ()),
        ("aionctl module remove ", ()),
        ("aionctl module parallelism ", ()),
        ("aionctl runbook run ", ()),
        ("aionctl --context ", ("yaml",)),  # the client config file is YAML, read by aionctl.contexts
        ("aionctl completion ", ()),
        # zsh, fish and PowerShell show help, which Typer would render with rich
        ("zsh:aionctl explain AION30", ()),
        ("fish:aionctl ta", ()),
        ("powershell:aionctl health --", ()),
    ],
)
def test_a_tab_imports_nothing_heavy(
    words: str, allowed: tuple[str, ...], tmp_path: Path, config_dir: Path, store: Path
) -> None:
    (tmp_path / "client.yaml").write_text("contexts: [{name: prod}]\n")
    code = (
        "import atexit, json, sys\n"
        "atexit.register(lambda: print(json.dumps(sorted(sys.modules)), file=sys.stderr))\n"
        "from aionctl.main import main\n"
        "sys.argv = ['aionctl']\n"
        "main()\n"
    )
    shell, _, words = (
        words.rpartition(":") if words.startswith(("zsh:", "fish:", "powershell:")) else ("", "", words)
    )
    cword = len(shlex.split(words)) - (0 if words.endswith(" ") else 1)
    protocol = {"COMP_WORDS": words, "COMP_CWORD": str(cword)}
    if shell:
        protocol = {"_TYPER_COMPLETE_ARGS": words, "_TYPER_COMPLETE_FISH_ACTION": "get-args",
                    "_TYPER_COMPLETE_WORD_TO_COMPLETE": words.rsplit(" ", 1)[-1]}  # fmt: skip
    env = clean_env({
        "_AIONCTL_COMPLETE": f"complete_{shell or 'bash'}", **protocol,
        "AION_MODULE_STORE": str(store), "AION_CLIENT_CONFIG": str(tmp_path / "client.yaml"),
    })  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=config_dir, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split(), f"{words!r} offered nothing: the test would prove nothing"
    loaded = json.loads(result.stderr.strip().splitlines()[-1])
    heavy = [m for m in loaded if m.split(".")[0] == "yaml" and "yaml" not in allowed]
    heavy += [m for m in loaded if any(m == h or m.startswith(h + ".") for h in HEAVY)]
    assert heavy == [], f"a TAB after {words!r} imported {heavy}"
