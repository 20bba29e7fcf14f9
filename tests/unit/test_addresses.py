from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aion.addresses import HostPort, parse_hostport
from aion.errors import UsageError
from aion.exitcodes import ExitCode


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:8470", HostPort("127.0.0.1", 8470)),
        ("localhost:0", HostPort("localhost", 0)),
        ("[::1]:65535", HostPort("::1", 65535)),
        (" aiond.internal:443 ", HostPort("aiond.internal", 443)),
    ],
)
def test_parses(text: str, expected: HostPort) -> None:
    assert parse_hostport(text, what="--addr") == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("8470", "--addr: '8470' is not HOST:PORT"),
        (":8470", "--addr: ':8470' is not HOST:PORT"),
        ("host:", "--addr: port '' is not a number from 0 to 65535"),
        ("host:65536", "--addr: port '65536' is not a number from 0 to 65535"),
        ("host:-1", "--addr: port '-1' is not a number from 0 to 65535"),
        (
            "host:\uff18\uff10",
            "--addr: port '\uff18\uff10' is not a number from 0 to 65535",
        ),  # fullwidth digits
        ("::1:80", "--addr: put an IPv6 address in brackets, as in [::1]:80"),
        ("[::1]80", "--addr: '[::1]80' is not [IPV6]:PORT"),
        ("[nothost]:80", "--addr: 'nothost' is not an IPv6 address"),
        ("exa mple:80", "--addr: 'exa mple' is not a host name or IP address"),
        ("-host:80", "--addr: '-host' is not a host name or IP address"),
        ("http://h:80", "--addr: 'http://h:80' is a URL; give HOST:PORT without a scheme"),
    ],
)
def test_rejects_with_a_message_naming_the_setting(text: str, message: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_hostport(text, what="--addr")
    assert info.value.message == message
    assert info.value.exit_code is ExitCode.USAGE


@given(st.text(max_size=40))
def test_any_text_parses_or_raises_usage_error(text: str) -> None:
    parsed: HostPort | UsageError
    try:
        parsed = parse_hostport(text, what="--addr")
    except UsageError as exc:
        parsed = exc
    if isinstance(parsed, UsageError):
        assert parsed.message.startswith("--addr: ")
    else:
        assert 0 <= parsed.port <= 65535
        assert parse_hostport(str(parsed), what="--addr") == parsed


@given(st.ip_addresses(), st.integers(min_value=0, max_value=65535))
def test_round_trips_ip_literals(ip: object, port: int) -> None:
    hp = HostPort(str(ip), port)
    assert parse_hostport(str(hp), what="x") == hp
