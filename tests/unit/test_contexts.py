"""aionctl.contexts: finding, reading, checking, writing and selecting client contexts."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import cast

import jsonschema
import pytest
import typer.main
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aion import schemas
from aion.errors import InputError, UsageError
from aionctl import contexts
from aionctl.contexts import ClientConfig, Context
from tests.rig.fuzz import examples

EXAMPLE = """\
apiVersion: aion/v1
kind: ClientConfig
current-context: prod
contexts:
  - name: prod
    addr: aiond.prod:8470
    http-addr: aiond.prod:8471
    token-file: ~/.config/aion/prod.token
    tls: {ca: ca.pem, cert: certs/client.pem, key: /etc/aion/client-key.pem, server-name: aiond.prod}
  - name: local
    addr: 127.0.0.1:8470
    token: aion_local_token
"""


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def full_config() -> ClientConfig:
    prod = Context(
        name="prod",
        addr="aiond.prod:8470",
        http_addr="aiond.prod:8471",
        token_file="~/.config/aion/prod.token",
        ca_file="ca.pem",
        cert_file="client.pem",
        key_file="client-key.pem",
        server_name="aiond.prod",
    )
    local = Context(name="local", addr="[::1]:8470", token="aion_local_token")
    return ClientConfig(current_context="local", contexts={"prod": prod, "local": local})


# -- where the file is --------------------------------------------------------------------------------


def test_config_path_prefers_aion_config_then_xdg_then_home(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/home/someone")
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.delenv("AION_CLIENT_CONFIG", raising=False)
    assert contexts.config_path() == Path("/home/someone/.config/aion/config.yaml")
    monkeypatch.setenv("XDG_CONFIG_HOME", "relative/xdg")  # invalid by the XDG spec: ignored
    assert contexts.config_path() == Path("/home/someone/.config/aion/config.yaml")
    monkeypatch.setenv("XDG_CONFIG_HOME", "/xdg")
    assert contexts.config_path() == Path("/xdg/aion/config.yaml")
    monkeypatch.setenv("AION_CLIENT_CONFIG", "~/elsewhere.yaml")
    assert contexts.config_path() == Path("/home/someone/elsewhere.yaml")


# -- reading ------------------------------------------------------------------------------------------


def test_a_missing_file_is_an_empty_config(tmp_path: Path) -> None:
    config = contexts.load(tmp_path / "nope" / "config.yaml")
    assert config == ClientConfig(current_context=None, contexts={})


@pytest.mark.parametrize(
    "text", ["", "# only a comment\n", "contexts:\n", "contexts: []\ncurrent-context: ''\n"]
)
def test_an_empty_file_is_an_empty_config(tmp_path: Path, text: str) -> None:
    assert contexts.load(write(tmp_path / "c.yaml", text)) == ClientConfig()


def test_load_reads_every_field_in_file_order(tmp_path: Path) -> None:
    config = contexts.load(write(tmp_path / "c.yaml", EXAMPLE), resolve_paths=False)
    assert config.current_context == "prod"
    assert list(config.contexts) == ["prod", "local"]
    assert config.contexts["prod"] == Context(
        name="prod",
        addr="aiond.prod:8470",
        http_addr="aiond.prod:8471",
        token_file="~/.config/aion/prod.token",
        ca_file="ca.pem",
        cert_file="certs/client.pem",
        key_file="/etc/aion/client-key.pem",
        server_name="aiond.prod",
    )
    assert config.contexts["local"] == Context(name="local", addr="127.0.0.1:8470", token="aion_local_token")
    assert config.contexts["prod"].auth == "token-file"
    assert config.contexts["local"].auth == "token"
    assert config.contexts["prod"].uses_tls
    assert not config.contexts["local"].uses_tls


def test_relative_paths_resolve_against_the_files_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", "/home/someone")
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the working directory must not matter
    config_dir = tmp_path / "conf"
    config_dir.mkdir()
    prod = contexts.load(write(config_dir / "config.yaml", EXAMPLE)).contexts["prod"]
    assert prod.token_file == "/home/someone/.config/aion/prod.token"
    assert prod.ca_file == str(config_dir / "ca.pem")
    assert prod.cert_file == str(config_dir / "certs" / "client.pem")
    assert prod.key_file == "/etc/aion/client-key.pem"
    assert prod.server_name == "aiond.prod"  # not a path


def test_relative_paths_resolve_when_the_config_path_is_relative(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "conf").mkdir()
    write(tmp_path / "conf" / "config.yaml", EXAMPLE)
    monkeypatch.chdir(tmp_path)
    prod = contexts.load(Path("conf/config.yaml")).contexts["prod"]
    assert prod.ca_file == str(tmp_path / "conf" / "ca.pem")


# Each malformed file: (content, line, column, what the message must name, what the hint must say).
MALFORMED = {
    "yaml syntax": ("contexts: [\n", 2, 1, "did not find expected", "fix the YAML"),
    "tab indent": ("contexts:\n\t- name: a\n", 2, 1, "cannot start any token", "tab"),
    "two documents": ("contexts: []\n---\ncontexts: []\n", 2, 1, "second YAML document", "fix the YAML"),
    "python tag": ("contexts: !!python/object:os.system x\n", 1, 11, "unsupported tag", "fix the YAML"),
    "duplicate key": (
        "contexts:\n  - name: a\n    addr: h:1\n    addr: h:2\n",
        4,
        5,
        "contexts[0].addr: duplicate key 'addr'",
        "fix the YAML",
    ),
    "not a mapping": ("- name: a\n", 1, 1, "must be a mapping, not a list", "client/config"),
    "unknown top key": (
        "contexts: []\ncurent-context: a\n",
        2,
        1,
        "curent-context: unknown key",
        "'current-context'",
    ),
    "wrong kind": ("kind: Intents\n", 1, 7, "kind: 'Intents' is not 'ClientConfig'", "right file"),
    "wrong apiVersion": ("apiVersion: aion/v2\n", 1, 13, "apiVersion: 'aion/v2' is not 'aion/v1'", "aion/v1"),
    "contexts not a list": (
        "contexts: {name: a}\n",
        1,
        11,
        "contexts: must be a list, not a mapping",
        "client/config",
    ),
    "context not a mapping": (
        "contexts:\n  - prod\n",
        2,
        5,
        "contexts[0]: must be a mapping, not a str",
        "schema",
    ),
    "missing name": ("contexts:\n  - addr: h:1\n", 2, 5, "contexts[0]: has no name", "name:"),
    "name not a string": (
        "contexts:\n  - name: 5\n",
        2,
        11,
        "contexts[0].name: must be a string, not a number",
        "schema",
    ),
    "bad name": (
        "contexts:\n  - name: 'a b'\n",
        2,
        11,
        "contexts[0].name: 'a b' is not a valid context name",
        "letters",
    ),
    "unknown context key": (
        "contexts:\n  - name: a\n    adr: h:1\n",
        3,
        5,
        "contexts[0].adr: unknown key",
        "did you mean 'addr'?",
    ),
    "addr not host:port": (
        "contexts:\n  - name: a\n    addr: nope\n",
        3,
        11,
        "contexts[0].addr: 'nope' is not HOST:PORT",
        "127.0.0.1:8470",
    ),
    "addr is a url": (
        "contexts:\n  - name: a\n    http-addr: http://h:1\n",
        3,
        16,
        "contexts[0].http-addr: 'http://h:1' is a URL",
        "127.0.0.1:8470",
    ),
    "port zero": ("contexts:\n  - name: a\n    addr: h:0\n", 3, 11, "contexts[0].addr: port 0", "8470"),
    "addr a number": (
        "contexts:\n  - name: a\n    addr: 8470\n",
        3,
        11,
        "contexts[0].addr: must be a string, not a number",
        "schema",
    ),
    "token and token-file": (
        "contexts:\n  - name: a\n    token-file: t\n    token: x\n",
        4,
        12,
        "contexts[0]: has both token and token-file",
        "keep one",
    ),
    "token with a space": (
        "contexts:\n  - name: a\n    token: 'a b'\n",
        3,
        12,
        "contexts[0].token: a token cannot contain whitespace",
        "schema",
    ),
    "control character": (
        'contexts:\n  - name: a\n    token-file: "a\\x1b[2Jb"\n',
        3,
        17,
        "contexts[0].token-file: contains control characters",
        "schema",
    ),
    "empty path": (
        "contexts:\n  - name: a\n    tls: {ca: ''}\n",
        3,
        15,
        "contexts[0].tls.ca: cannot be empty",
        "schema",
    ),
    "tls not a mapping": (
        "contexts:\n  - name: a\n    tls: yes\n",
        3,
        10,
        "contexts[0].tls: must be a mapping, not a boolean",
        "schema",
    ),
    "unknown tls key": (
        "contexts:\n  - name: a\n    tls:\n      ca: x\n      servername: s\n",
        5,
        7,
        "contexts[0].tls.servername: unknown key",
        "did you mean 'server-name'?",
    ),
    "cert without key": (
        "contexts:\n  - name: a\n    tls: {cert: c.pem}\n",
        3,
        17,
        "contexts[0].tls: has cert but no key",
        "both",
    ),
    "key without cert": (
        "contexts:\n  - name: a\n    tls: {key: k.pem}\n",
        3,
        16,
        "contexts[0].tls: has key but no cert",
        "both",
    ),
    "duplicate names": (
        "contexts:\n  - name: a\n  - name: b\n  - name: a\n",
        4,
        11,
        "contexts[2].name: duplicate context name 'a' (first at line 2)",
        "unique",
    ),
    "unknown current context": (
        "current-context: prd\ncontexts:\n  - name: prod\n  - name: local\n",
        1,
        18,
        "current-context: 'prd' names no context",
        "did you mean 'prod'? known contexts: prod, local",
    ),
    "current context of no contexts": (
        "current-context: prod\n",
        1,
        18,
        "current-context: 'prod' names no context",
        "set-context",
    ),
    "current context not a string": (
        "current-context: [a]\n",
        1,
        18,
        "current-context: must be a string, not a list",
        "schema",
    ),
}


@pytest.mark.parametrize(("text", "line", "column", "what", "hint"), MALFORMED.values(), ids=list(MALFORMED))
def test_every_malformed_file_is_an_input_error_naming_file_line_and_field(
    tmp_path: Path, text: str, line: int, column: int, what: str, hint: str
) -> None:
    path = write(tmp_path / "config.yaml", text)
    with pytest.raises(InputError) as caught:
        contexts.load(path)
    error = caught.value
    assert error.exit_code == 3
    assert error.message.startswith(f"{path}:{line}:{column}: "), error.message
    assert what in error.message
    assert error.hint is not None
    assert hint in error.hint


def test_malformed_files_break_the_schema_too(tmp_path: Path) -> None:
    """The file's schema and the loader agree on what is wrong (for what a schema can say)."""
    validator = jsonschema.Draft202012Validator(schemas.load("client/config"))
    for name, (text, *_) in MALFORMED.items():
        if name in {"yaml syntax", "tab indent", "two documents", "python tag", "duplicate key"}:
            continue  # not YAML the schema could see
        if name in {"duplicate names", "unknown current context", "current context of no contexts"}:
            continue  # relations between values, beyond the schema
        assert not validator.is_valid(yaml.safe_load(text)), name


def test_the_example_and_saved_files_follow_the_schema(tmp_path: Path) -> None:
    schema = schemas.load("client/config")
    jsonschema.validate(yaml.safe_load(EXAMPLE), schema)
    contexts.save(tmp_path / "c.yaml", full_config())
    jsonschema.validate(yaml.safe_load((tmp_path / "c.yaml").read_text()), schema)


def test_a_file_over_the_size_limit_is_refused_with_the_limit(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yaml", "# " + "x" * contexts.MAX_FILE_BYTES + "\n")
    with pytest.raises(InputError, match=f"larger than the limit of {contexts.MAX_FILE_BYTES} bytes"):
        contexts.load(path)


def test_a_directory_is_not_a_config_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="it is a directory") as caught:
        contexts.load(tmp_path)
    assert caught.value.hint is not None
    assert "AION_CLIENT_CONFIG" in caught.value.hint


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "config.yaml"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match="not a regular file"):
        contexts.load(fifo)


def test_a_file_that_is_not_utf8_is_an_input_error(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_bytes(b"contexts:\n  - name: caf\xe9\n")
    with pytest.raises(InputError, match=r"c\.yaml:2:.*not UTF-8"):
        contexts.load(path)


yaml_ish = st.text(
    alphabet=st.sampled_from(list("abc:-[]{}&*!|'\"#,. \n\t0123456789~@\\")) | st.characters(), max_size=200
)


@settings(
    max_examples=examples(300), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=yaml_ish)
def test_any_text_loads_or_is_an_input_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "fuzz.yaml"
    path.write_bytes(text.encode("utf-8", errors="surrogatepass"))
    message = ""
    try:
        config: ClientConfig | None = contexts.load(path)
    except InputError as exc:
        config, message = None, exc.message
    if config is None:
        assert message.startswith(f"{path}:"), message
    else:
        assert all(c.name == name for name, c in config.contexts.items())
        assert config.current_context is None or config.current_context in config.contexts


# -- writing ------------------------------------------------------------------------------------------


def test_save_then_load_round_trips_with_a_stable_key_order(tmp_path: Path) -> None:
    path = tmp_path / "aion" / "config.yaml"
    contexts.save(path, full_config())
    assert contexts.load(path, resolve_paths=False) == full_config()
    assert path.read_text() == (
        "apiVersion: aion/v1\n"
        "kind: ClientConfig\n"
        "current-context: local\n"
        "contexts:\n"
        "- name: prod\n"
        "  addr: aiond.prod:8470\n"
        "  http-addr: aiond.prod:8471\n"
        "  token-file: ~/.config/aion/prod.token\n"
        "  tls:\n"
        "    ca: ca.pem\n"
        "    cert: client.pem\n"
        "    key: client-key.pem\n"
        "    server-name: aiond.prod\n"
        "- name: local\n"
        "  addr: '[::1]:8470'\n"
        "  token: aion_local_token\n"
    )
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_save_makes_an_existing_loose_file_private(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yaml", EXAMPLE)
    path.chmod(0o644)
    contexts.save(path, contexts.load(path, resolve_paths=False))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


context_names = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.@:/+-]{0,20}", fullmatch=True)
hosts = st.from_regex(r"[a-z0-9]([a-z0-9.-]{0,10}[a-z0-9])?", fullmatch=True) | st.sampled_from(
    ["127.0.0.1", "[::1]", "yes", "null", "0x1F"]
)
addrs = st.builds(lambda h, p: f"{h}:{p}", hosts, st.integers(1, 65535))
paths = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters="\x7f"), min_size=1, max_size=30
)
tokens = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=30)


@st.composite
def client_configs(draw: st.DrawFn) -> ClientConfig:
    names = draw(st.lists(context_names, unique=True, max_size=4))
    found: dict[str, Context] = {}
    for name in names:
        tls = draw(st.booleans())
        auth = draw(st.sampled_from(["token", "token-file", "none"]))
        found[name] = Context(
            name=name,
            addr=draw(st.none() | addrs),
            http_addr=draw(st.none() | addrs),
            token=draw(tokens) if auth == "token" else None,
            token_file=draw(paths) if auth == "token-file" else None,
            ca_file=draw(st.none() | paths),
            cert_file=draw(paths) if tls else None,
            key_file=draw(paths) if tls else None,
            server_name=draw(st.none() | tokens),
        )
    current = draw(st.none() | st.sampled_from(names)) if names else None
    return ClientConfig(current_context=current, contexts=found)


@settings(
    max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(config=client_configs())
def test_any_valid_config_round_trips(tmp_path: Path, config: ClientConfig) -> None:
    path = tmp_path / "c.yaml"
    contexts.save(path, config)
    assert contexts.load(path, resolve_paths=False) == config
    assert list(contexts.load(path, resolve_paths=False).contexts) == list(config.contexts)


def test_a_failed_write_leaves_the_old_file_and_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path / "config.yaml", EXAMPLE)

    def disk_full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(InputError, match=r"cannot write .*config\.yaml: No space left on device") as caught:
        contexts.save(path, full_config())
    assert caught.value.exit_code == 3
    assert path.read_text() == EXAMPLE
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml"]


def test_saving_over_a_directory_fails_and_leaves_it_alone(tmp_path: Path) -> None:
    target = tmp_path / "config.yaml"
    target.mkdir()
    (target / "inside").write_text("kept")
    with pytest.raises(InputError, match="cannot write"):
        contexts.save(target, full_config())
    assert (target / "inside").read_text() == "kept"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml"]


def test_saving_under_a_file_fails_as_an_input_error(tmp_path: Path) -> None:
    blocker = write(tmp_path / "blocker", "not a directory")
    with pytest.raises(InputError, match="cannot write") as caught:
        contexts.save(blocker / "config.yaml", full_config())
    assert caught.value.hint is not None
    assert blocker.read_text() == "not a directory"


def test_save_through_a_symbolic_link_replaces_its_target_and_keeps_the_link(tmp_path: Path) -> None:
    (tmp_path / "dotfiles").mkdir()
    real = write(tmp_path / "dotfiles" / "aion.yaml", "")
    link = tmp_path / "config.yaml"
    link.symlink_to(real)
    contexts.save(link, full_config())
    assert link.is_symlink()
    assert contexts.load(real, resolve_paths=False) == full_config()


def test_save_refuses_an_inconsistent_config(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not among the contexts"):
        contexts.save(tmp_path / "c.yaml", ClientConfig(current_context="ghost"))
    with pytest.raises(ValueError, match="filed under"):
        contexts.save(tmp_path / "c.yaml", ClientConfig(contexts={"a": Context(name="b")}))
    assert not (tmp_path / "c.yaml").exists()


# -- selecting ------------------------------------------------------------------------------------------


def test_select_prefers_the_named_context_then_the_current_one(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yaml", EXAMPLE)
    selected = contexts.select("local", path)
    assert selected is not None
    assert selected.name == "local"
    current = contexts.select(None, path)
    assert current is not None
    assert current.name == "prod"
    assert current.ca_file == str(tmp_path / "ca.pem"), "select gives resolved paths"
    empty = contexts.select("", path)  # AION_CONTEXT set but empty: as if unset
    assert empty is not None
    assert empty.name == "prod"


def test_select_without_a_current_context_is_none(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yaml", EXAMPLE.replace("current-context: prod\n", ""))
    assert contexts.select(None, path) is None
    assert contexts.select(None, tmp_path / "missing.yaml") is None


def test_select_of_an_unknown_name_is_a_usage_error_with_close_matches(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yaml", EXAMPLE)
    with pytest.raises(UsageError) as caught:
        contexts.select("prdo", path)
    assert caught.value.exit_code == 2
    assert caught.value.message == f"no context named 'prdo' in {path}"
    assert caught.value.hint == "did you mean 'prod'? known contexts: prod, local"
    with pytest.raises(UsageError) as far:
        contexts.select("zzz", path)
    assert far.value.hint == "known contexts: prod, local"


def test_select_of_a_name_when_there_are_no_contexts_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as caught:
        contexts.select("prod", tmp_path / "missing.yaml")
    assert "has no contexts" in caught.value.message
    assert caught.value.hint is not None
    assert "aionctl config set-context" in caught.value.hint


def test_complete_names_lists_matching_contexts_and_never_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path / "c.yaml", EXAMPLE + "  - name: prod-eu\n")
    monkeypatch.setenv("AION_CLIENT_CONFIG", str(path))
    assert contexts.complete_names("pr") == ["prod", "prod-eu"]
    assert contexts.complete_names("") == ["prod", "local", "prod-eu"]
    write(path, "contexts: [\n")
    assert contexts.complete_names("") == []


# -- tokens ---------------------------------------------------------------------------------------------


def test_read_token_prefers_the_inline_token() -> None:
    assert Context(name="a", token="inline").read_token() == "inline"
    assert Context(name="a").read_token() is None


def test_read_token_reads_and_strips_the_token_file(tmp_path: Path) -> None:
    token_file = write(tmp_path / "t", "  aion_secret\n\n")
    assert Context(name="a", token_file=str(token_file)).read_token() == "aion_secret"


def test_read_token_resolves_a_relative_token_file_against_the_config(tmp_path: Path) -> None:
    write(tmp_path / "prod.token", "aion_from_file\n")
    path = write(
        tmp_path / "c.yaml", "current-context: a\ncontexts:\n  - name: a\n    token-file: prod.token\n"
    )
    selected = contexts.select(None, path)
    assert selected is not None
    assert selected.read_token() == "aion_from_file"


def fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (lambda d: d / "missing.token", ": cannot open: No such file or directory"),
        (lambda d: d, " is a directory, not a regular file"),
        (lambda d: write(d / "empty.token", " \n"), ": the file is empty"),
        (lambda d: write(d / "two.token", "one two\n"), ": a token cannot contain whitespace"),
        (lambda d: (d / "bin.token").write_bytes(b"\xff\xfe") and d / "bin.token", ": not UTF-8 text"),
        (lambda d: write(d / "big.token", "x" * (4 * 1024 + 1)), " is larger than 4 KiB, the limit"),
        (lambda d: fifo(d / "fifo.token"), " is a FIFO, not a regular file"),
        (lambda d: Path("/dev/zero"), " is a character device, not a regular file"),
    ],
    ids=["missing", "directory", "empty", "two words", "binary", "oversized", "FIFO", "device"],
)
def test_an_unusable_token_file_is_an_input_error_naming_it(
    tmp_path: Path, make: object, problem: str
) -> None:
    assert callable(make)
    token_file = make(tmp_path)
    with pytest.raises(InputError) as caught:
        Context(name="prod", token_file=str(token_file)).read_token()
    assert caught.value.exit_code == 3
    assert caught.value.message.startswith(f"context 'prod': token-file {token_file}{problem}")
    assert caught.value.hint


# -- the global option ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (["--context", "flag"], {"AION_CONTEXT": "env"}, "flag"),
        ([], {"AION_CONTEXT": "env"}, "env"),
        ([], {"AION_CONTEXT": ""}, None),
        ([], {}, None),
    ],
)
def test_the_context_option_lands_in_the_global_options(
    monkeypatch: pytest.MonkeyPatch, args: list[str], env: dict[str, str], expected: str | None
) -> None:
    from aionctl.app import app, root
    from aionctl.options import GlobalOptions

    monkeypatch.delenv("AION_CONTEXT", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    command = typer.main.get_command(app)
    # Parse the command line as aionctl does, then run the root callback alone (not the sub-command).
    with command.make_context("aionctl", [*args, "schema", "list"]) as ctx:
        root(cast(typer.Context, ctx), **ctx.params)
        assert isinstance(ctx.obj, GlobalOptions)
        assert ctx.obj.context == expected
