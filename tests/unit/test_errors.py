from __future__ import annotations

import pytest

from aion import errors
from aion.exitcodes import EXIT_CODE_HELP, ExitCode

EXPECTED_CODES = {
    errors.UsageError: ExitCode.USAGE,
    errors.InputError: ExitCode.INPUT,
    errors.ConfigError: ExitCode.INPUT,
    errors.FindingsError: ExitCode.FINDINGS,
    errors.VerificationError: ExitCode.FINDINGS,
    errors.AuthError: ExitCode.AUTH,
    errors.DaemonUnavailable: ExitCode.UNAVAILABLE,
    errors.ConflictError: ExitCode.CONFLICT,
    errors.ServiceError: ExitCode.FINDINGS,
    errors.RegistryError: ExitCode.INPUT,
    errors.RegistryAuthError: ExitCode.AUTH,
}


def test_exit_codes_are_the_documented_numbers() -> None:
    assert {code.name: int(code) for code in ExitCode} == {
        "OK": 0, "FINDINGS": 1, "USAGE": 2, "INPUT": 3, "AUTH": 4, "UNAVAILABLE": 5, "CONFLICT": 6,
    }  # fmt: skip
    assert set(EXIT_CODE_HELP) == set(ExitCode)


def test_every_error_class_is_exported_and_mapped() -> None:
    classes = {getattr(errors, name) for name in errors.__all__} - {errors.Error}
    assert classes == set(EXPECTED_CODES)


@pytest.mark.parametrize(
    ("cls", "code"), EXPECTED_CODES.items(), ids=lambda v: getattr(v, "__name__", str(v))
)
def test_error_exit_code(cls: type[errors.Error], code: ExitCode) -> None:
    assert cls("x").exit_code is code


def test_diagnostics_carry_the_hint_on_its_own_line() -> None:
    assert errors.InputError("no such file: a.yml").diagnostics() == "no such file: a.yml"
    err = errors.InputError("no such file: a.yml", hint="check the path")
    assert err.diagnostics() == "no such file: a.yml\nhint: check the path"


def test_the_exception_tree_in_the_docstring_names_every_class() -> None:
    doc = errors.__doc__ or ""
    for name in errors.__all__:
        assert name in doc, f"{name} is missing from the tree in aion/errors.py"
