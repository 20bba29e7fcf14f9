"""The error table: every class has one row, the drawn tree says the same, and a client rebuilds the
class a daemon raised."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from aion import errors
from aion.exitcodes import EXIT_CODE_HELP, ExitCode

CLASSES = [
    getattr(errors, name)
    for name in errors.__all__
    if isinstance(getattr(errors, name), type) and issubclass(getattr(errors, name), errors.Error)
]


def test_exit_codes_are_the_documented_numbers() -> None:
    assert {code.name: int(code) for code in ExitCode} == {
        "OK": 0, "FINDINGS": 1, "USAGE": 2, "INPUT": 3, "AUTH": 4, "UNAVAILABLE": 5, "CONFLICT": 6,
    }  # fmt: skip
    assert set(EXIT_CODE_HELP) == set(ExitCode)


def test_every_error_class_is_exported_and_has_a_row() -> None:
    assert set(CLASSES) == set(errors.TABLE)


def _drawn_rows() -> dict[str, tuple[int, str, int]]:
    rows = {}
    for line in (errors.__doc__ or "").splitlines():
        match = re.match(r"^[\s│├└─]*([A-Za-z]+)\s+(\d)\s+([A-Z_]+)\s+(\d{3})\b", line)
        if match:
            rows[match.group(1)] = (int(match.group(2)), match.group(3), int(match.group(4)))
    return rows


def test_the_tree_in_the_docstring_is_the_table() -> None:
    table = {cls.__name__: (int(row.exit_code), row.grpc, row.http) for cls, row in errors.TABLE.items()}
    assert _drawn_rows() == table


def test_the_drawn_tree_is_the_class_tree() -> None:
    for cls in CLASSES:
        if cls is errors.Error:
            continue
        parent = cls.__mro__[1]
        assert parent in errors.TABLE, f"{cls.__name__} derives from an unlisted class"
    # depth in the drawing follows depth in the hierarchy
    for line in (errors.__doc__ or "").splitlines():
        match = re.match(r"^(\s*[│├└─ ]*?)([A-Z][A-Za-z]+)\s+\d\s", line)
        if not match or match.group(2) not in errors.__all__:
            continue
        cls = getattr(errors, match.group(2))
        depth = len(cls.__mro__) - 4  # Error itself has Exception, BaseException and object above it
        assert len(match.group(1)) == 4 + 4 * depth, line


@pytest.mark.parametrize(
    "cls", [c for c in CLASSES if c is not errors.InternalError], ids=lambda c: c.__name__
)
def test_a_client_rebuilds_the_class_the_daemon_named(cls: type[errors.Error]) -> None:
    row = errors.TABLE[cls]
    rebuilt = errors.from_status(row.grpc, "m", name=row.name, hint="h")
    expected = errors.ServiceError if cls is errors.Error else cls
    assert type(rebuilt) is expected
    assert (rebuilt.message, rebuilt.hint) == ("m", "h")
    assert rebuilt.exit_code is row.exit_code


def test_without_a_name_the_grpc_code_decides() -> None:
    assert type(errors.from_status("NOT_FOUND", "m")) is errors.NotFound
    assert type(errors.from_status("UNAVAILABLE", "m")) is errors.DaemonUnavailable
    assert type(errors.from_status("DATA_LOSS", "m")) is errors.ServiceError
    assert type(errors.from_status("INTERNAL", "m", name="internal")) is errors.ServiceError


def test_subclasses_elsewhere_take_their_ancestors_row() -> None:
    class VersionGone(errors.NotFound):
        pass

    assert errors.transport(VersionGone("x")).grpc == "NOT_FOUND"
    assert errors.transport(ValueError("a bug")).name == "internal"


def test_saturated_carries_its_retry_hint_and_extra_trailers() -> None:
    error = errors.Saturated("full", retry_after=0.25)
    error.trailers = (("x-extra", "1"),)
    assert error.metadata() == (("x-extra", "1"), ("retry-after-ms", "250"))
    assert error.exit_code is ExitCode.UNAVAILABLE


def test_diagnostics_carry_the_hint_on_its_own_line() -> None:
    assert errors.InputError("no such file: a.yml").diagnostics() == "no such file: a.yml"
    err = errors.InputError("no such file: a.yml", hint="check the path")
    assert err.diagnostics() == "no such file: a.yml\nhint: check the path"


def test_failed_writes_say_whether_the_disk_is_full_or_unwritable() -> None:
    import errno

    full = errors.storage_error(OSError(errno.ENOSPC, "No space left on device"), "the event log x")
    assert type(full) is errors.StorageFull
    assert errors.transport(full).grpc == "RESOURCE_EXHAUSTED"
    assert full.message == "cannot write the event log x: the disk is full"
    read_only = errors.storage_error(OSError(errno.EROFS, "Read-only file system"), "the event log x")
    assert type(read_only) is errors.StorageUnavailable
    assert errors.transport(read_only).grpc == "UNAVAILABLE"
    other = errors.storage_error(OSError(errno.ENAMETOOLONG, "File name too long"), "x")
    assert type(other) is errors.InputError


def test_sqlite_refusing_a_write_is_an_unwritable_disk(tmp_path: Path) -> None:
    import sqlite3

    from aiond.state.sqlite import SqliteState

    SqliteState.open(tmp_path).close()
    state = SqliteState.open(tmp_path)
    read_only = sqlite3.connect(f"file:{tmp_path / 'state.db'}?mode=ro", uri=True, isolation_level=None)
    state._db.close()
    state._db = read_only  # the disk under the database went read-only
    try:
        with pytest.raises(errors.StorageUnavailable, match="cannot write the state database"):
            state.add_spend({"2026-12-02": 1})
    finally:
        state.close()
