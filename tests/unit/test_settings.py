from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pytest

from aion.addresses import HostPort
from aion.errors import UsageError
from aiond import settings


def parse(argv: list[str], env: dict[str, str] | None = None) -> settings.Settings:
    parser = argparse.ArgumentParser()
    settings.add_arguments(parser)
    return settings.load(vars(parser.parse_args(argv)), env or {})


def test_every_setting_has_one_spelling_each() -> None:
    opts = settings.options()
    assert [f.name for f, _ in opts] == [f.name for f in dataclasses.fields(settings.Settings)]
    flags = [o.flag for _, o in opts]
    envs = [o.env for _, o in opts]
    assert len(set(flags)) == len(flags)
    assert len(set(envs)) == len(envs)
    for field, opt in opts:
        assert opt.flag == "--" + field.name.replace("_", "-") or field.name == "config_dir"
        assert opt.env.startswith("AIOND_")


def test_flag_beats_env_beats_default(tmp_path: Path) -> None:
    env = {"AIOND_CONFIG": str(tmp_path / "env"), "AIOND_GRPC_LISTEN": "127.0.0.1:9000"}
    s = parse(["--config", str(tmp_path / "flag")], env)
    assert s.config_dir == tmp_path / "flag"
    assert s.grpc_listen == HostPort("127.0.0.1", 9000)
    assert s.http_listen == settings.DEFAULT_HTTP_LISTEN
    assert s.shutdown_grace == 10.0


def test_config_is_required() -> None:
    with pytest.raises(UsageError) as info:
        parse([])
    assert info.value.diagnostics() == "--config is required\nhint: pass --config DIR or set AIOND_CONFIG"


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["--grpc-listen", "nope"], {}, "--grpc-listen: 'nope' is not HOST:PORT"),
        (
            [],
            {"AIOND_HTTP_LISTEN": "h:99999"},
            "AIOND_HTTP_LISTEN: port '99999' is not a number from 0 to 65535",
        ),
        (["--shutdown-grace", "soon"], {}, "--shutdown-grace: 'soon' is not a number of seconds"),
        (["--shutdown-delay", "-1"], {}, "--shutdown-delay: -1 is outside 0..3600 seconds"),
        (["--log-level", "loud"], {}, "--log-level: 'loud' is not one of debug, info, warning, error"),
        (["--grpc-max-message-bytes", "12"], {}, "--grpc-max-message-bytes: 12 is outside 1 KiB..256 MiB"),
        (["--event-log-segment", "64MB"], {}, "--event-log-segment: '64MB' is not a size"),
        ([], {"AIOND_EVENT_LOG_SEGMENT": "8GiB"}, "AIOND_EVENT_LOG_SEGMENT: 8GiB is outside 1 MiB..4 GiB"),
        (["--event-log-keep", "-1"], {}, "--event-log-keep: '-1' is not a size"),
        ([], {"AIOND_INIT_STATE": "maybe"}, "AIOND_INIT_STATE: 'maybe' is neither yes nor no"),
    ],
)
def test_bad_values_name_where_they_came_from(argv: list[str], env: dict[str, str], message: str) -> None:
    with pytest.raises(UsageError) as info:
        parse(["--config", "/x", *argv], env)
    assert info.value.message == message


def test_state_dir_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert parse(["--config", "/x"]).state_dir == tmp_path / "aiond"


def test_event_log_sizes_take_binary_units() -> None:
    settings = parse(["--config", "/x", "--event-log-segment", "16MiB"], {"AIOND_EVENT_LOG_KEEP": "2 GiB"})
    assert (settings.event_log_segment, settings.event_log_keep) == (16 << 20, 2 << 30)
    assert parse(["--config", "/x", "--event-log-keep", "0"]).event_log_keep == 0


@pytest.mark.parametrize(
    ("argv", "env", "expected"),
    [
        ([], {}, False),
        (["--init-state"], {}, True),
        ([], {"AIOND_INIT_STATE": "1"}, True),
        ([], {"AIOND_INIT_STATE": "Yes"}, True),
        ([], {"AIOND_INIT_STATE": "true"}, True),
        ([], {"AIOND_INIT_STATE": "0"}, False),
        ([], {"AIOND_INIT_STATE": ""}, False),
        (["--init-state"], {"AIOND_INIT_STATE": "off"}, True),  # the flag beats the environment
    ],
)
def test_init_state_is_a_switch(argv: list[str], env: dict[str, str], expected: bool) -> None:
    assert parse(["--config", "/x", *argv], env).init_state is expected


def test_a_switch_takes_no_value_and_help_lists_its_variable() -> None:
    parser = argparse.ArgumentParser(prog="aiond")
    settings.add_arguments(parser)
    with pytest.raises(SystemExit):
        parser.parse_args(["--init-state", "yes"])
    text = " ".join(parser.format_help().split())
    assert "[--init-state]" in text
    assert "without it aiond refuses to start on one" in text
    assert "A missing state.db is always created [env AIOND_INIT_STATE]" in text


def test_aiond_token_names_every_role_there_is() -> None:
    from aiond.security.auth import Role
    from aiond.security.tokens import ROLE_NAMES

    assert [r.label for r in Role if r is not Role.NONE] == ROLE_NAMES
