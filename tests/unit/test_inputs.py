"""Bounded reads of user-named files: regular files only, never more than the limit."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from aion.errors import InputError
from aion.inputs import human_size, read_bounded


def test_a_regular_file_within_the_limit_is_read_whole(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * 100)
    assert read_bounded(path, 100, what="--input") == b"x" * 100


def test_one_byte_over_the_limit_is_refused_naming_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * 1025)
    with pytest.raises(InputError, match=r"--input .*/f is larger than 1 KiB, the limit"):
        read_bounded(path, 1024, what="--input")


def test_a_device_is_refused_without_reading_it() -> None:
    with pytest.raises(InputError, match="/dev/zero is a character device, not a regular file"):
        read_bounded("/dev/zero", 1 << 30, what="--bundle")


def test_a_fifo_is_refused_at_once(tmp_path: Path) -> None:
    fifo = tmp_path / "intents.yml"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match="is a FIFO"):
        read_bounded(fifo, 1024, what="config file")


def test_a_directory_and_a_missing_file_are_input_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="is a directory"):
        read_bounded(tmp_path, 1024, what="--token-file")
    with pytest.raises(InputError, match="cannot open: No such file"):
        read_bounded(tmp_path / "absent", 1024, what="--token-file")


def test_standard_input_is_bounded_too() -> None:
    assert read_bounded("-", 4, what="--input", stdin=io.BytesIO(b"abcd")) == b"abcd"
    with pytest.raises(InputError, match=r"--input \(standard input\) is larger than 4 bytes"):
        read_bounded("-", 4, what="--input", stdin=io.BytesIO(b"abcde"))


def test_sizes_read_as_people_write_them() -> None:
    assert [human_size(v) for v in (300, 4096, 16 << 20, 1 << 30, 1500)] == [
        "300 bytes", "4 KiB", "16 MiB", "1 GiB", "1500 bytes",
    ]  # fmt: skip
