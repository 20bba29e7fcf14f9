"""Where a trust rule's key file may be read from: relative to the config directory, links followed, and,
under aiond's confinement (Trust.key_roots), only inside its config directory or key directory."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aion.errors import InputError, VerificationError
from aion.trust.keys import trust_key_file


@pytest.fixture
def layout(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A config directory, a key directory, and a directory outside both, each with a key."""
    config, keys, outside = tmp_path / "config", tmp_path / "keys", tmp_path / "outside"
    for directory in (config, keys, outside):
        directory.mkdir()
        (directory / "team.pub").write_text("key\n")
    return config, keys, outside


def test_a_relative_key_is_found_in_the_config_directory(layout: tuple[Path, Path, Path]) -> None:
    config, keys, _ = layout
    assert trust_key_file("team.pub", config, (config, keys)) == (config / "team.pub").resolve()


def test_a_key_in_the_key_directory_is_allowed_by_absolute_path(layout: tuple[Path, Path, Path]) -> None:
    config, keys, _ = layout
    assert trust_key_file(str(keys / "team.pub"), config, (config, keys)) == (keys / "team.pub").resolve()


@pytest.mark.parametrize("form", ["absolute", "climbing", "link", "linked-directory"])
def test_a_key_outside_the_roots_is_refused(layout: tuple[Path, Path, Path], form: str) -> None:
    config, keys, outside = layout
    if form == "absolute":
        key = str(outside / "team.pub")
    elif form == "climbing":
        key = "../outside/team.pub"
    elif form == "link":
        (config / "link.pub").symlink_to(outside / "team.pub")
        key = "link.pub"
    else:
        (config / "shared").symlink_to(outside)
        key = "shared/team.pub"
    with pytest.raises(VerificationError, match="outside the directories aiond reads keys from"):
        trust_key_file(key, config, (config, keys))
    # Offline (aionctl, as its user) the same key is read where it is.
    assert trust_key_file(key, config, None) == (outside / "team.pub").resolve()


def test_a_link_that_stays_inside_is_followed(layout: tuple[Path, Path, Path]) -> None:
    config, keys, _ = layout
    (config / "current.pub").symlink_to("team.pub")
    (config / "from-keys.pub").symlink_to(keys / "team.pub")
    assert trust_key_file("current.pub", config, (config,)) == (config / "team.pub").resolve()
    assert trust_key_file("from-keys.pub", config, (config, keys)) == (keys / "team.pub").resolve()


def test_a_name_that_is_no_path_is_an_input_error(layout: tuple[Path, Path, Path]) -> None:
    config, keys, _ = layout
    with pytest.raises(InputError, match="not a file name"):
        trust_key_file("team\0.pub", config, (config, keys))


@given(st.lists(st.sampled_from(["..", ".", "config", "keys", "outside", "team.pub", "/"]), max_size=6))
def test_an_accepted_key_is_always_inside_a_root(parts: list[str]) -> None:
    root = Path("/srv/aion")
    config, keys = root / "config", root / "keys"
    key = "/".join(parts) or "."
    try:
        real = trust_key_file(key, config, (config, keys))
    except VerificationError:
        return
    assert real.is_relative_to(config) or real.is_relative_to(keys)
