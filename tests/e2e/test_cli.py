"""aionctl as users run it: the real program, its exit codes, its streams, no daemon needed."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import yaml

from aion import __version__
from aion.exitcodes import EXIT_CODE_HELP
from aionctl.commands import COMMANDS
from tests.integration.supply import conforms
from tests.rig.daemon import aionctl, clean_env, program
from tests.rig.generated import assert_current
from tests.rig.procs import free_port


def test_version_fast_path_and_full_path_agree() -> None:
    fast = aionctl("--version")
    full = aionctl("--no-color", "--version")  # goes through the Typer application
    assert fast.returncode == full.returncode == 0
    assert fast.stdout == full.stdout == f"aionctl {__version__}\n"
    assert fast.stderr == full.stderr == ""


def test_help_lists_commands_and_exit_codes() -> None:
    result = aionctl("--help")
    assert result.returncode == 0
    for spec in COMMANDS:
        assert re.search(rf"^  {spec.name} +{re.escape(spec.help)}$", result.stdout, re.M), spec.name
    for code, text in EXIT_CODE_HELP.items():
        assert f"{int(code)}  {text}" in result.stdout
    assert "\x1b[" not in result.stdout
    assert not any(ch in result.stdout for ch in "╭─│"), "help must be plain text in a pipe"


@pytest.mark.parametrize("command", [spec.name for spec in COMMANDS])
def test_every_command_has_plain_help(command: str) -> None:
    result = aionctl(command, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"Usage: aionctl {command} [OPTIONS]")
    assert "\x1b[" not in result.stdout
    assert not any(ch in result.stdout for ch in "╭─│"), "help must be plain text in a pipe"
    assert "--install-completion" not in result.stdout, "completion options belong to the root only"


def test_help_imports_no_command_module() -> None:
    code = (
        "import sys; from aionctl.app import run; rc = run(['--help']);"
        "loaded = sorted(m for m in sys.modules if m.startswith('aionctl.commands.'));"
        "print(loaded, file=sys.stderr); sys.exit(rc or (1 if loaded else 0))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def test_a_command_imports_only_itself() -> None:
    code = (
        "import sys; from aionctl.app import run; rc = run(['health', '--help']);"
        "loaded = sorted(m for m in sys.modules if m.startswith('aionctl.commands.'));"
        "print(loaded); sys.exit(rc)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "['aionctl.commands.health']"


@pytest.mark.parametrize(
    ("args", "stderr_part"),
    [
        (["no-such-command"], "error: no such command: no-such-command\nhint: see 'aionctl --help'"),
        (["valdiate", "."], "error: no such command: valdiate\nhint: did you mean 'validate'"),
        (["policy", "aply", "."], "error: no such command: aply\nhint: did you mean 'apply'?"),
        (["health", "--output", "xml"], "error: --output: 'xml' is not one of"),
        (
            ["health", "--timeout", "0"],
            "error: --timeout: 0.0 is outside 0.1..600.0\nhint: see 'aionctl health --help'",
        ),
        (["policy", "history", "--limit", "5000"], "error: --limit: 5000 is outside 1..1000"),
        (["health", "--addr", "nope"], "error: --addr: 'nope' is not HOST:PORT"),
        (["health", "--bogus"], "error: no such option: --bogus"),
        (["policy", "apply"], "error: missing argument DIR\nhint: see 'aionctl policy apply --help'"),
        (["status", "extra"], "error: unexpected argument: extra"),
    ],
)
def test_usage_errors_exit_2_without_a_traceback(args: list[str], stderr_part: str) -> None:
    result = aionctl(*args)
    assert result.returncode == 2, result.stderr
    assert stderr_part in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    assert not any(word in result.stderr for word in ("Usage:", "Try '", "Input should", "Invalid value"))


def test_bad_address_from_the_environment_is_a_usage_error() -> None:
    result = aionctl("health", env={"AION_ADDR": "[::1]"})
    assert result.returncode == 2
    assert "error: --addr: '[::1]' is not [IPV6]:PORT" in result.stderr


def test_health_of_nothing_is_unreachable_exit_5() -> None:
    port = free_port()
    result = aionctl(
        "health", "-o", "json", "--addr", f"127.0.0.1:{port}", "--http-addr", f"127.0.0.1:{port}"
    )
    assert result.returncode == 5
    report = json.loads(result.stdout)
    assert report["healthy"] is False
    assert [c["reachable"] for c in report["checks"]] == [False, False, False]
    assert all(c["error"] for c in report["checks"])


def test_status_of_nothing_is_unreachable_exit_5() -> None:
    result = aionctl("status", "--addr", f"127.0.0.1:{free_port()}", "--timeout", "2")
    assert result.returncode == 5
    assert result.stdout == ""
    assert result.stderr.startswith("error: status: cannot reach aiond at 127.0.0.1:")
    assert "hint: is aiond running?" in result.stderr


def test_quiet_health_prints_nothing_but_keeps_the_exit_code() -> None:
    port = free_port()
    result = aionctl("-q", "health", "--addr", f"127.0.0.1:{port}", "--http-addr", f"127.0.0.1:{port}")
    assert result.returncode == 5
    assert result.stdout == ""


def test_bash_completion_completes_command_names() -> None:
    env = clean_env({"_AIONCTL_COMPLETE": "complete_bash", "COMP_WORDS": "aionctl he", "COMP_CWORD": "1"})
    result = subprocess.run([program("aionctl")], capture_output=True, text=True, env=env, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["health"]


def test_bash_completion_completes_a_commands_options() -> None:
    env = clean_env(
        {"_AIONCTL_COMPLETE": "complete_bash", "COMP_WORDS": "aionctl health --out", "COMP_CWORD": "2"}
    )
    result = subprocess.run([program("aionctl")], capture_output=True, text=True, env=env, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["--output"]


def test_committed_completion_scripts_are_current() -> None:
    assert_current("completions.py")


def test_readme_cli_reference_matches_help() -> None:
    from tests.rig.daemon import REPO

    result = aionctl("--help", env={"COLUMNS": "100"})
    readme = (REPO / "README.md").read_text()
    assert f"```\n{result.stdout.rstrip()}\n```" in readme, (
        "update README's CLI reference from `aionctl --help`"
    )


def test_schema_list_and_show() -> None:
    from aion import schemas

    listed = aionctl("schema", "list", "-o", "json")
    assert listed.returncode == 0, listed.stderr
    doc = conforms(json.loads(listed.stdout), "output/schema")
    assert doc["kind"] == "SchemaList"
    assert [s["name"] for s in doc["schemas"]] == schemas.names()
    shown = aionctl("schema", "show", "output/health")
    assert shown.returncode == 0
    assert json.loads(shown.stdout) == schemas.load("output/health")  # by itself: an editor can use it
    for fmt, parse in (("json", json.loads), ("yaml", yaml.safe_load)):
        wrapped = aionctl("schema", "show", "output/task", "-o", fmt)
        assert wrapped.returncode == 0, wrapped.stderr
        doc = conforms(parse(wrapped.stdout), "output/schema")
        assert (doc["apiVersion"], doc["kind"], doc["name"]) == ("aion/v1", "Schema", "output/task")
        assert doc["schema"] == schemas.load("output/task")


def test_explain_documents_conform() -> None:
    from aion.config import rules

    listed = aionctl("explain", "-o", "json")
    assert listed.returncode == 0, listed.stderr
    assert [r["id"] for r in conforms(json.loads(listed.stdout), "output/rule")["rules"]] == list(rules.RULES)
    one = aionctl("explain", "AION301", "-o", "yaml")
    assert one.returncode == 0, one.stderr
    rule = conforms(yaml.safe_load(one.stdout), "output/rule")
    assert (rule["kind"], rule["id"], rule["severity"]) == ("Rule", "AION301", "error")
    assert aionctl("-q", "explain", "AION301").stdout == ""


def test_schema_show_unknown_is_a_usage_error() -> None:
    result = aionctl("schema", "show", "no/such")
    assert result.returncode == 2
    assert result.stderr == "error: no schema named 'no/such'\nhint: `aionctl schema list` shows the names\n"
