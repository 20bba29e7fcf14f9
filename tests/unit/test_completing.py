"""aionctl.completing: its cheap scans find what the real readers find, and its copies of the store's
and the runbook search path's rules stay equal to their owners'."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from aion.errors import InputError
from aion.modules import store as module_store
from aionctl import completing
from aionctl.runbooks import find
from tests.rig.fuzz import examples

# -- equal to their owners -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "env",
    [{}, {"AION_MODULE_STORE": "/srv/modules"}, {"XDG_DATA_HOME": "/data"}, {"AION_MODULE_STORE": ""}],
)
def test_default_store_is_the_stores(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    for key in ("AION_MODULE_STORE", "XDG_DATA_HOME"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert completing.default_store() == module_store.default_store()


@pytest.mark.parametrize("path_env", [None, "/a:/b", "/a::runbooks:/a"])
def test_runbook_search_path_is_finds(monkeypatch: pytest.MonkeyPatch, path_env: str | None) -> None:
    if path_env is None:
        monkeypatch.delenv("AION_RUNBOOK_PATH", raising=False)
    else:
        monkeypatch.setenv("AION_RUNBOOK_PATH", path_env)
    dirs = [Path("/first"), Path("/a")]
    assert completing.runbook_search_path(dirs) == find.search_path(dirs)
    assert completing.shipped_runbooks() == find.shipped()


def test_runbook_files_are_finds_candidates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AION_RUNBOOK_PATH", raising=False)
    books = tmp_path / "books"
    books.mkdir()
    (books / "a.yml").write_text("apiVersion: aion/v1\nkind: Runbook\nsteps: []\n")
    (books / "b.yaml").write_text('kind: "runbook"\n')
    (books / "c.yml").write_text("kind: Intents\n")
    (books / "d.txt").write_text("kind: Runbook\n")
    (books / ".e.yml").write_text("kind: Runbook\n")
    (books / "f.yml").mkdir()
    (books / "g.yml").write_bytes(b"\xff\xfe\nkind: Runbook\n")
    ours = [
        p
        for p in completing.runbook_files([books])
        if (head := p.read_bytes() if p.is_file() else None) and completing.declares_runbook(head)
    ]
    assert ours == list(find.candidates([books]))
    assert [p.name for p in ours if p.parent == books] == ["a.yml", "b.yaml", "g.yml"]


# -- the scans against a YAML parser ------------------------------------------------------------------

names = st.from_regex(r"\A[A-Za-z][A-Za-z0-9_.-]{0,63}\Z")
leaves = st.none() | st.booleans() | st.integers() | st.text(max_size=30)
values: st.SearchStrategy[Any] = st.recursive(
    leaves,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(names | st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=examples(300), deadline=None)
@given(intents=st.dictionaries(names, values, max_size=8), style=st.sampled_from([False, None, True]))
def test_top_level_keys_are_the_intents_yaml_finds(intents: dict[str, Any], style: bool | None) -> None:
    """Whatever PyYAML writes (block or flow style, mixed below the top), the scan finds the
    top-level keys of a block mapping, in order, and nothing nested."""
    document = {"apiVersion": "aion/v1", "kind": "Intents", **intents}
    text = yaml.safe_dump(document, sort_keys=False, allow_unicode=True, default_flow_style=style)
    if text.startswith("{"):  # a flow mapping at the top has no block keys: the scan offers nothing
        assert completing.top_level_keys(text.encode()) == []
        return
    loaded = yaml.safe_load(text)
    assert completing.top_level_keys(text.encode()) == [k for k in loaded if k not in ("apiVersion", "kind")]


@settings(max_examples=examples(300), deadline=None)
@given(
    name=st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.+-]{0,40}\Z"),
    extra=st.dictionaries(names, values, max_size=4),
)
def test_metadata_name_is_the_one_yaml_finds(name: str, extra: dict[str, Any]) -> None:
    metadata = {k: v for k, v in extra.items() if k != "name"}
    metadata["labels"] = {"name": "nested-not-this"}
    metadata["name"] = name
    document = {"apiVersion": "aion/v1", "kind": "Runbook", "name": "top-not-this", "metadata": metadata}
    text = yaml.safe_dump(document, sort_keys=False, default_flow_style=False)
    assert yaml.safe_load(text)["metadata"]["name"] == name
    assert completing.metadata_name(text.encode()) == name


context_names = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.@:/+-]{0,40}\Z")


@settings(max_examples=examples(200), deadline=None)
@given(chosen=st.lists(context_names, unique=True, max_size=6), current=st.booleans())
def test_the_contexts_scan_reads_what_set_context_writes(
    tmp_path_factory: pytest.TempPathFactory, chosen: list[str], current: bool
) -> None:
    """Files as ``aionctl config`` saves them are scanned (no YAML parser), to the names it reads."""
    from aionctl import contexts

    path = tmp_path_factory.mktemp("client") / "config.yaml"
    items = {n: contexts.Context(name=n, addr="127.0.0.1:8470", token_file="t") for n in chosen}
    config = contexts.ClientConfig(contexts=items, current_context=chosen[0] if chosen and current else None)
    contexts.save(path, config)
    scanned = completing.scanned_contexts(path.read_bytes())
    expected = list(contexts.load(path).contexts)
    text = path.read_text()
    plain = all(f"name: {n}\n" in text and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.@+-]*", n) for n in chosen)
    if plain:
        assert scanned == expected
    else:  # a name YAML quotes, or one with ':' or '/', is left to the YAML reader
        assert scanned in (None, expected)


@settings(max_examples=examples(300), deadline=None)
@given(
    chosen=st.lists(context_names | st.text(max_size=10), max_size=5),
    extra=st.dictionaries(names, values, max_size=3),
    style=st.sampled_from([False, None, True]),
)
def test_the_contexts_scan_finds_what_yaml_finds_or_steps_aside(
    chosen: list[Any], extra: dict[str, Any], style: bool | None
) -> None:
    items = [
        {"addr": "a:1", **extra, "name": n} if i % 2 else {"name": n, **extra} for i, n in enumerate(chosen)
    ]
    document = {"apiVersion": "aion/v1", "kind": "ClientConfig", "contexts": items}
    text = yaml.safe_dump(document, sort_keys=False, allow_unicode=True, default_flow_style=style)
    scanned = completing.scanned_contexts(text.encode())
    if scanned is not None:
        assert scanned == [item["name"] for item in yaml.safe_load(text)["contexts"]]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("contexts:\n- name: a\n  addr: x:1\n- addr: y:1\n  name: b  # comment\n", ["a", "b"]),
        ("# head\ncontexts:\n  -\n    name: a\n  - name: b\n    tls:\n      name: nested\n", ["a", "b"]),
        ("apiVersion: aion/v1\ncontexts:\n  - name: a\nkind: ClientConfig\nname: top\n", ["a"]),
        ("kind: ClientConfig\n", []),
        ("contexts: []\n", []),
        ("contexts: [a]\n", None),
        ("{contexts: [{name: a}]}\n", None),
        ("%YAML 1.2\n---\ncontexts:\n  - name: a\n", None),
        ("contexts:\n  - {name: a}\n", None),
        ("contexts:\n  - name: 'a'\n", None),
        ("contexts:\n  - addr: x:1\n", None),
        ("contexts:\n  - name: &anchor a\n", None),
        ("contexts:\n\t- name: a\n", None),
    ],
)
def test_the_contexts_scan_on_hand_written_files(text: str, expected: list[str] | None) -> None:
    assert completing.scanned_contexts(text.encode()) == expected


def test_the_client_config_is_found_where_contexts_finds_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from aionctl import contexts

    for env in (
        {},
        {"XDG_CONFIG_HOME": "/xdg"},
        {"XDG_CONFIG_HOME": "relative"},
        {"AION_CLIENT_CONFIG": "~/c.yaml"},
    ):
        for key in ("AION_CLIENT_CONFIG", "XDG_CONFIG_HOME"):
            monkeypatch.delenv(key, raising=False)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        assert completing.client_config_path() == contexts.config_path()


def test_top_level_keys_of_text_that_is_not_utf8() -> None:
    assert completing.top_level_keys(b"\xff\xfe t\x00r\x00") == []


@given(text=st.text(max_size=300))
def test_help_is_one_safe_line(text: str) -> None:
    shown = completing._help(text)
    assert len(shown) <= completing.MAX_HELP
    assert all(" " <= ch <= "~" and ch != "\\" for ch in shown)


def test_installed_is_what_the_stores_lock_says(tmp_path: Path) -> None:
    store = module_store.ModuleStore(tmp_path)
    store.write_lock({
        "b_mod": {"ref": "registry.example/b:1\x1b[31m", "digest": "sha256:" + "0" * 64},
        "a_mod": {"digest": "sha256:" + "1" * 64},
    })  # fmt: skip
    assert [name for name, _ in completing.installed(tmp_path)] == sorted(store.lock())
    assert completing.installed(tmp_path) == [("a_mod", ""), ("b_mod", "registry.example/b:1 [31m")]


@pytest.mark.parametrize("content", [b"\xff\xfe{", b"{not json", b'{"modules": 3}', b"[]"])
def test_a_lock_file_the_store_refuses_offers_nothing(tmp_path: Path, content: bytes) -> None:
    (tmp_path / module_store.LOCK_FILE).write_bytes(content)
    with pytest.raises(InputError):
        module_store.ModuleStore(tmp_path).lock()
    assert completing.installed(tmp_path) == []
