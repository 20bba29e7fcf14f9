"""Reading a config set from disk (aion.config.validate.collect): regular files only, never blocking,
never past the size limit, and, when confined, never through a link out of the directory."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from aion.config.validate import Source, collect, ignored, validate
from aion.config.yamlload import Limits
from aion.errors import InputError

CORPUS = Path(__file__).resolve().parents[1] / "corpus"


@pytest.fixture
def config_set(tmp_path: Path) -> Path:
    target = tmp_path / "set"
    shutil.copytree(CORPUS / "_base", target)
    return target


def test_a_fifo_found_in_a_directory_is_a_finding_and_is_never_opened_for_reading(config_set: Path) -> None:
    os.mkfifo(config_set / "extra.yml")
    sources = collect([str(config_set)])  # would block for ever if the FIFO were opened to be read
    fifo = next(s for s in sources if s.name.endswith("extra.yml"))
    assert (fifo.not_a_file, fifo.data) == ("a FIFO", b"")
    report = validate(sources, set_name="set")
    [finding] = [f for f in report.findings if f.rule == "AION012"]
    assert (finding.file, finding.line, finding.column, finding.severity.value) == (fifo.name, 0, 0, "error")
    assert report.snapshot is None


def test_a_fifo_named_explicitly_is_an_input_error(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "intents.yml")
    with pytest.raises(InputError, match=r"intents\.yml is a FIFO, not a regular file") as caught:
        collect([str(tmp_path / "intents.yml")])
    assert caught.value.hint is not None
    assert "pipe it to standard input" in caught.value.hint
    with pytest.raises(InputError, match="/dev/null is a character device"):
        collect(["/dev/null"])


def test_a_link_to_a_fifo_is_a_fifo(config_set: Path, tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe")
    (config_set / "extra.yml").symlink_to(tmp_path / "pipe")
    assert [s.not_a_file for s in collect([str(config_set)]) if s.not_a_file] == ["a FIFO"]


def test_a_huge_size_limit_reads_a_small_file_without_allocating_the_limit(config_set: Path) -> None:
    sources = collect([str(config_set)], limits=Limits(max_bytes=10**14))
    assert {Path(s.name).name: s.data for s in sources}["intents.yml"] == (
        config_set / "intents.yml"
    ).read_bytes()


def test_a_file_over_the_limit_is_read_one_byte_past_it_and_no_further(config_set: Path) -> None:
    (config_set / "intents.yml").write_bytes(b"#" * 10_000)
    sources = collect([str(config_set)], limits=Limits(max_bytes=100))
    assert len(next(s for s in sources if s.name.endswith("intents.yml")).data) == 101


def test_confined_refuses_a_file_link_out_of_the_directory(config_set: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.yml"
    secret.write_text("key: value\n")
    (config_set / "keys.yml").symlink_to(secret)
    assert any(s.data == b"key: value\n" for s in collect([str(config_set)]))  # validate follows links
    with pytest.raises(InputError) as caught:
        collect([str(config_set)], confined=True)
    assert (
        caught.value.message
        == f"{config_set / 'keys.yml'} is a symbolic link to {secret}, outside {config_set}"
    )


def test_confined_refuses_a_directory_link_out_and_a_dangling_one(config_set: Path, tmp_path: Path) -> None:
    outside = tmp_path / "shared"
    outside.mkdir()
    (config_set / "shared").symlink_to(outside, target_is_directory=True)
    with pytest.raises(
        InputError, match=re.escape(f"{config_set / 'shared'} is a symbolic link to {outside}, ")
    ):
        collect([str(config_set)], confined=True)
    (config_set / "shared").unlink()
    (config_set / "gone.yml").symlink_to("/nonexistent/gone.yml")
    with pytest.raises(InputError, match=re.escape("is a symbolic link to /nonexistent/gone.yml, outside")):
        collect([str(config_set)], confined=True)


def test_confined_follows_links_that_stay_inside(config_set: Path) -> None:
    (config_set / "real").mkdir()
    (config_set / "models.yml").rename(config_set / "real" / "models.yml")
    (config_set / "models.yml").symlink_to(Path("real") / "models.yml")
    (config_set / "alias").symlink_to("real", target_is_directory=True)
    names = sorted(
        Path(s.name).relative_to(config_set).as_posix() for s in collect([str(config_set)], confined=True)
    )
    assert names == ["intents.yml", "models.yml", "modules.yml", "policies.yml"]


def test_confined_accepts_a_root_that_is_itself_a_link(config_set: Path, tmp_path: Path) -> None:
    (tmp_path / "current").symlink_to(config_set, target_is_directory=True)
    assert len(collect([str(tmp_path / "current")], confined=True)) == 4


def test_hidden_links_are_neither_followed_nor_refused(config_set: Path, tmp_path: Path) -> None:
    (config_set / ".git").symlink_to(tmp_path, target_is_directory=True)
    (config_set / ".secret.yml").symlink_to("/etc/passwd")
    assert len(collect([str(config_set)], confined=True)) == 4


@pytest.mark.parametrize(
    ("name", "data", "left_out"),
    [
        ("notes.yml", b"owner: platform\n", True),
        ("list.yml", b"- a\n- b\n", True),
        ("empty.yml", b"", True),
        ("intents.yml", b"not: [valid\n", False),
        ("models.yaml", b"{}\n", False),
        ("typo.yml", b"kind: Intent\n", False),
        ("broken.yml", b"key: [unclosed\n", False),
        ("latin1.yml", "name: caf\xe9\n".encode("latin-1"), False),
    ],
)
def test_ignored_is_exactly_what_validate_reports_as_an_unknown_file(
    name: str, data: bytes, left_out: bool
) -> None:
    source = Source(name, data, explicit=False)
    assert ignored(source) is left_out
    rules = {f.rule for f in validate([source]).findings}
    assert ("AION008" in rules) is left_out


def test_a_runbook_is_left_out_of_a_config_set_and_still_checked() -> None:
    source = Source("oncall.yml", b"kind: runbook\n", explicit=False)
    assert ignored(source)  # read on its own (like kafka.yml): never sent with a set
    findings = validate([source]).findings
    assert "AION008" not in {f.rule for f in findings}  # recognised by its kind
    assert any(f.rule.startswith("AION1") and f.file == "oncall.yml" for f in findings)  # its schema
