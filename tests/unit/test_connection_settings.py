"""aiond's connection settings: deadlines and the connection cap, their ranges, and the cap derived from
the open-file limit."""

from __future__ import annotations

import argparse

import pytest

from aion.errors import UsageError
from aiond import settings
from aiond.serving.connections import RESERVED_FILES, connection_cap


def parse(argv: list[str], env: dict[str, str] | None = None) -> settings.Settings:
    parser = argparse.ArgumentParser()
    settings.add_arguments(parser)
    return settings.load(vars(parser.parse_args(["--config", "/x", *argv])), env or {})


def test_defaults() -> None:
    s = parse([])
    assert (s.http_header_timeout, s.http_idle_timeout) == (10.0, 75.0)
    assert (s.grpc_handshake_timeout, s.grpc_idle_timeout) == (10.0, 300.0)
    assert s.max_connections is None


def test_flags_and_variables_set_them() -> None:
    s = parse(
        ["--http-header-timeout", "2.5", "--max-connections", "40"],
        {
            "AIOND_HTTP_IDLE_TIMEOUT": "30",
            "AIOND_GRPC_HANDSHAKE_TIMEOUT": "5",
            "AIOND_GRPC_IDLE_TIMEOUT": "60",
        },
    )
    assert (s.http_header_timeout, s.http_idle_timeout, s.max_connections) == (2.5, 30.0, 40)
    assert (s.grpc_handshake_timeout, s.grpc_idle_timeout) == (5.0, 60.0)


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["--http-header-timeout", "0"], {}, "--http-header-timeout: 0 is outside 0.1..300 seconds"),
        (["--http-header-timeout", "soon"], {}, "--http-header-timeout: 'soon' is not a number of seconds"),
        (["--http-idle-timeout", "nan"], {}, "--http-idle-timeout: nan is outside 0.1..3600 seconds"),
        (
            [],
            {"AIOND_HTTP_IDLE_TIMEOUT": "7200"},
            "AIOND_HTTP_IDLE_TIMEOUT: 7200 is outside 0.1..3600 seconds",
        ),
        (["--grpc-handshake-timeout", "-1"], {}, "--grpc-handshake-timeout: -1 is outside 0.1..300 seconds"),
        (["--grpc-idle-timeout", "0.5"], {}, "--grpc-idle-timeout: 0.5 is outside 1..86400 seconds"),
        (["--max-connections", "0"], {}, "--max-connections: 0 is outside 1..1000000"),
        ([], {"AIOND_MAX_CONNECTIONS": "many"}, "AIOND_MAX_CONNECTIONS: 'many' is not a whole number"),
    ],
)
def test_bad_values_name_where_they_came_from(argv: list[str], env: dict[str, str], message: str) -> None:
    with pytest.raises(UsageError) as info:
        parse(argv, env)
    assert info.value.message == message


def test_help_says_how_the_cap_is_derived() -> None:
    parser = argparse.ArgumentParser(prog="aiond")
    settings.add_arguments(parser)
    text = " ".join(parser.format_help().split())
    assert "[default: (open-file limit - 64) / 2] [env AIOND_MAX_CONNECTIONS]" in text
    assert "[env AIOND_HTTP_HEADER_TIMEOUT; default: 10.0]" in text


@pytest.mark.parametrize(
    ("open_files", "cap"),
    [(256, 96), (1024, 480), (65536, 32736), (RESERVED_FILES, 1), (10, 1)],
)
def test_the_cap_leaves_room_for_the_daemon_and_splits_the_rest_between_the_listeners(
    open_files: int, cap: int
) -> None:
    assert connection_cap(None, open_files) == cap


def test_a_cap_given_is_the_cap() -> None:
    assert connection_cap(5000, 256) == 5000
