"""``aionctl config``: the real program managing client contexts in a file of its own."""

from __future__ import annotations

import json
import stat
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from aion import schemas
from tests.rig.daemon import aionctl, clean_env, program

TOKEN = "aion_s3cr3t_t0ken_value"


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return tmp_path / "home" / "aion" / "config.yaml"


def run(config: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {"AION_CLIENT_CONFIG": str(config)}
    if cwd is None:
        return aionctl(*args, env=env)
    return subprocess.run(
        [program("aionctl"), *args], capture_output=True, text=True, env=clean_env(env), cwd=cwd, check=False
    )


def conforms(stdout: str, schema: str) -> dict[str, Any]:
    doc = json.loads(stdout)
    jsonschema.validate(doc, schemas.load(schema), format_checker=jsonschema.FormatChecker())
    assert isinstance(doc, dict)
    return doc


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result


def test_contexts_are_created_listed_switched_and_deleted(config: Path, tmp_path: Path) -> None:
    token_file = tmp_path / "prod.token"
    token_file.write_text(TOKEN + "\n")
    created = ok(
        run(
            config,
            "config", "set-context", "prod", "--addr", "aiond.prod:8470", "--http-addr", "aiond.prod:8471",
            "--token-file", str(token_file), "--server-name", "aiond.prod", "--use",
        )
    )  # fmt: skip
    assert created.stdout == ""
    assert created.stderr == "created context 'prod' (now current)\n"
    ok(run(config, "config", "set-context", "local", "--addr", "127.0.0.1:8470", "--token", TOKEN))

    listed = ok(run(config, "config", "get-contexts"))
    assert listed.stdout == (
        "CURRENT   NAME    ADDR              AUTH         TLS\n"
        "*         prod    aiond.prod:8470   token-file   yes\n"
        "          local   127.0.0.1:8470    token        no\n"
    )
    assert ok(run(config, "config", "current-context")).stdout == "prod\n"

    switched = ok(run(config, "config", "use-context", "local"))
    assert switched.stderr == "switched to context 'local'\n"
    assert ok(run(config, "config", "current-context")).stdout == "local\n"

    deleted = ok(run(config, "config", "delete-context", "local"))
    assert deleted.stderr == "deleted context 'local'; no context is current now\n"
    remaining = conforms(
        ok(run(config, "config", "get-contexts", "-o", "json")).stdout, "output/context-list"
    )
    assert remaining["currentContext"] is None
    assert [c["name"] for c in remaining["contexts"]] == ["prod"]


def test_json_list_conforms_to_its_schema_and_never_shows_a_token(config: Path, tmp_path: Path) -> None:
    ok(run(config, "config", "set-context", "inline", "--addr", "[::1]:8470", "--token", TOKEN, "--use"))
    (tmp_path / "ca.pem").write_text("pem")
    ok(run(config, "config", "set-context", "tls", "--ca", str(tmp_path / "ca.pem"), "--token-file", "t"))
    results = [run(config, "config", "get-contexts", "-o", fmt) for fmt in ("json", "yaml", "text")]
    results.append(run(config, "config", "current-context", "-o", "json"))
    for result in results:
        ok(result)
        assert TOKEN not in result.stdout + result.stderr
    doc = conforms(results[0].stdout, "output/context-list")
    assert doc["kind"] == "ContextList"
    assert doc["file"] == str(config)
    assert doc["currentContext"] == "inline"
    inline, tls = doc["contexts"]
    assert inline == {
        "name": "inline",
        "current": True,
        "addr": "[::1]:8470",
        "httpAddr": None,
        "auth": "token",
        "tokenFile": None,
        "tls": None,
    }
    assert tls["auth"] == "token-file"
    assert tls["tokenFile"] == str(Path.cwd() / "t")
    assert tls["tls"] == {"ca": str(tmp_path / "ca.pem"), "cert": None, "key": None, "serverName": None}
    assert yaml.safe_load(results[1].stdout) == doc
    current = conforms(results[3].stdout, "output/current-context")
    assert current == {
        "apiVersion": "aion/v1",
        "kind": "CurrentContext",
        "file": str(config),
        "name": "inline",
    }


def test_the_file_is_private_and_follows_its_schema(config: Path) -> None:
    ok(run(config, "config", "set-context", "prod", "--addr", "h:1", "--token", TOKEN, "--use"))
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert stat.S_IMODE(config.parent.stat().st_mode) == 0o700
    written = yaml.safe_load(config.read_text())
    jsonschema.validate(written, schemas.load("client/config"))
    assert written["contexts"] == [{"name": "prod", "addr": "h:1", "token": TOKEN}]


def test_set_context_changes_only_what_is_given(config: Path, tmp_path: Path) -> None:
    ok(run(config, "config", "set-context", "prod", "--addr", "h:1", "--http-addr", "h:2", "--token", TOKEN))
    changed = ok(run(config, "config", "set-context", "prod", "--addr", "h:3"))
    assert changed.stderr == "changed context 'prod'\n"
    assert yaml.safe_load(config.read_text())["contexts"] == [
        {"name": "prod", "addr": "h:3", "http-addr": "h:2", "token": TOKEN}
    ]
    # A token file replaces the inline token; an empty value removes a setting.
    token_file = tmp_path / "t"
    token_file.write_text(TOKEN)
    ok(run(config, "config", "set-context", "prod", "--token-file", str(token_file), "--http-addr", ""))
    assert yaml.safe_load(config.read_text())["contexts"] == [
        {"name": "prod", "addr": "h:3", "token-file": str(token_file)}
    ]


def test_relative_paths_are_stored_absolute_and_unreadable_ones_are_warned_about(
    config: Path, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "client.pem").write_text("cert")
    (work / "client-key.pem").write_text("key")
    result = ok(
        run(
            config,
            "config", "set-context", "prod", "--cert", "client.pem", "--key", "client-key.pem",
            "--ca", "missing-ca.pem", "--token-file", "~/aion.token",
            cwd=work,
        )
    )  # fmt: skip
    tls = yaml.safe_load(config.read_text())["contexts"][0]["tls"]
    assert tls == {
        "ca": str(work / "missing-ca.pem"),
        "cert": str(work / "client.pem"),
        "key": str(work / "client-key.pem"),
    }
    assert yaml.safe_load(config.read_text())["contexts"][0]["token-file"] == "~/aion.token"
    assert f"warning: --ca: {work / 'missing-ca.pem'} is not a readable file (saved anyway)" in result.stderr
    assert "--cert" not in result.stderr
    assert "--key" not in result.stderr


def test_current_context_without_one_exits_6(config: Path) -> None:
    result = run(config, "config", "current-context")
    assert result.returncode == 6
    assert result.stdout == ""
    assert result.stderr == (
        f"error: no current context is set in {config}\n"
        "hint: pick one with `aionctl config use-context NAME` (`aionctl config get-contexts` lists them)\n"
    )


@pytest.mark.parametrize("command", ["use-context", "delete-context"])
def test_an_unknown_context_exits_2_with_close_matches(config: Path, command: str) -> None:
    ok(run(config, "config", "set-context", "prod", "--addr", "h:1", "--use"))
    ok(run(config, "config", "set-context", "local", "--addr", "h:2"))
    before = config.read_bytes()
    result = run(config, "config", command, "prdo")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == (
        f"error: no context named 'prdo' in {config}\n"
        "hint: did you mean 'prod'? known contexts: prod, local\n"
    )
    assert config.read_bytes() == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--cert", "c.pem"], "error: --cert and --key go together\n"),
        (["--key", "k.pem"], "error: --cert and --key go together\n"),
        (["--token", "x", "--token-file", "f"], "error: --token and --token-file exclude each other\n"),
        (["--addr", "nope"], "error: --addr: 'nope' is not HOST:PORT\n"),
        (["--http-addr", "http://h:1"], "error: --http-addr: 'http://h:1' is a URL; give HOST:PORT"),
        (["--addr", "h:0"], "error: --addr: port 0 cannot be connected to\n"),
        (["--token", "two words"], "error: --token: a token cannot contain whitespace\n"),
    ],
)
def test_bad_set_context_flags_exit_2_and_write_nothing(config: Path, args: list[str], message: str) -> None:
    result = run(config, "config", "set-context", "prod", *args)
    assert result.returncode == 2
    assert result.stderr.startswith(message)
    assert "Traceback" not in result.stderr
    assert not config.exists()


def test_a_bad_context_name_exits_2(config: Path) -> None:
    result = run(config, "config", "set-context", "-bad")
    assert result.returncode == 2
    result = run(config, "config", "set-context", "has space")
    assert result.returncode == 2
    assert result.stderr.startswith("error: NAME: 'has space' is not a valid context name\n")
    assert not config.exists()


def test_removing_only_the_key_of_a_client_certificate_is_refused(config: Path, tmp_path: Path) -> None:
    ok(run(config, "config", "set-context", "prod", "--cert", "/c.pem", "--key", "/k.pem"))
    before = config.read_bytes()
    result = run(config, "config", "set-context", "prod", "--cert", "", "--key", "/other.pem")
    assert result.returncode == 2
    assert "--cert and --key go together" in result.stderr
    assert config.read_bytes() == before


def test_a_malformed_file_exits_3_naming_file_line_and_field(config: Path) -> None:
    config.parent.mkdir(parents=True)
    config.write_text("contexts:\n  - name: prod\n    adress: h:1\n")
    for args in (["get-contexts"], ["use-context", "prod"], ["set-context", "prod", "--addr", "h:2"]):
        result = run(config, "config", *args)
        assert result.returncode == 3, args
        assert result.stderr == (
            f"error: {config}:3:5: contexts[0].adress: unknown key\n"
            "hint: did you mean 'addr'? the keys of contexts[0] are: name, addr, http-addr, token, "
            "token-file, tls\n"
        )
    assert config.read_text() == "contexts:\n  - name: prod\n    adress: h:1\n", "never rewritten"


def test_a_config_path_that_is_a_directory_exits_3(tmp_path: Path) -> None:
    result = run(tmp_path, "config", "get-contexts")
    assert result.returncode == 3
    assert result.stderr.startswith(f"error: cannot read {tmp_path}: it is a directory")


def test_no_contexts_is_not_an_error(config: Path) -> None:
    text = ok(run(config, "config", "get-contexts"))
    assert text.stdout == ""
    assert "no contexts in" in text.stderr
    doc = conforms(ok(run(config, "config", "get-contexts", "-o", "json")).stdout, "output/context-list")
    assert doc["contexts"] == []
    assert not config.exists(), "reading never creates the file"


def test_quiet_prints_no_messages(config: Path) -> None:
    result = ok(run(config, "-q", "config", "set-context", "prod", "--addr", "h:1", "--use"))
    assert result.stdout == result.stderr == ""
    assert ok(run(config, "-q", "config", "current-context", "-o", "json")).stdout != ""


def test_shell_completion_offers_context_names(config: Path) -> None:
    ok(run(config, "config", "set-context", "prod", "--addr", "h:1"))
    ok(run(config, "config", "set-context", "preview", "--addr", "h:2"))
    ok(run(config, "config", "set-context", "local", "--addr", "h:3"))
    for words, cword in (("aionctl config use-context pr", "3"), ("aionctl --context pr", "2")):
        env = clean_env({
            "AION_CLIENT_CONFIG": str(config),
            "_AIONCTL_COMPLETE": "complete_bash",
            "COMP_WORDS": words,
            "COMP_CWORD": cword,
        })  # fmt: skip
        result = subprocess.run([program("aionctl")], capture_output=True, text=True, env=env, check=False)
        assert result.returncode == 0, result.stderr
        assert result.stdout.split() == ["prod", "preview"], words
