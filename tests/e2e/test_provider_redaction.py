"""A provider that echoes the API key it was sent, split by NULs, base64-encoded or percent-encoded, in
its error messages, behind a real aiond: no form of the key reaches what a viewer reads of the task
(its error and every attempt's, through aionctl), the events a viewer tails, or aiond's log, and the
error still says the kind and the HTTP status. Both wire formats."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aion.api.v1 import common_pb2
from tests.e2e.test_tasks import KEY, only_anthropic_in_the_api_tier, submit, write_config
from tests.rig import providers as behave
from tests.rig.daemon import Aiond, aionctl
from tests.rig.providers import REDACTED, EchoForm, StandIn, Wire, key_leaks

ECHOES: tuple[EchoForm, ...] = ("nul", "base64", "percent")
ANSWERS = [(401, "auth"), (503, "server")]
"""The echo comes with these statuses: one the executor does not retry, one it retries."""
KEYED_PROVIDERS = frozenset({"openai", "azure", "hf", "anthropic"})
BREAKERS_STAY_CLOSED = {"breakers": {"min_requests": 1000, "window": 1000}}
"""Every task must reach the provider, however many failed before it."""


@pytest.fixture
def stand_in() -> Iterator[StandIn]:
    with StandIn() as server:
        yield server


def config_for(wire: Wire, root: Path, stand_in: StandIn) -> Path:
    """The example config pointed at the stand-in; for "anthropic", the API tier is one Anthropic
    model, so that the API route speaks that wire format."""
    if wire == "openai":
        return write_config(root, stand_in, policies=BREAKERS_STAY_CLOSED)
    policies = {**BREAKERS_STAY_CLOSED, "providers": {"allow": ["ollama", "vllm", "anthropic"]}}
    config = write_config(root, stand_in, policies=policies)
    only_anthropic_in_the_api_tier(config, stand_in, KEY)
    return config


def keyed_requests(stand_in: StandIn) -> int:
    """Requests that carried a key (so the stand-in echoed it)."""
    headers = ("authorization", "x-api-key", "api-key")
    return sum(1 for r in stand_in.requests if any(r.headers.get(h) == REDACTED for h in headers))


def read_as_viewer(daemon: Aiond, task_id: str) -> tuple[dict[str, Any], str]:
    """The task as ``aionctl task get`` shows it to a viewer: the JSON document, and all it printed
    (JSON and text output alike)."""
    as_json = aionctl("task", "get", task_id, "-o", "json", env=daemon.aionctl_env("viewer"))
    assert as_json.returncode == 0, as_json.stderr
    as_text = aionctl("task", "get", task_id, env=daemon.aionctl_env("viewer"))
    assert as_text.returncode == 0, as_text.stderr
    printed = "\n".join([as_json.stdout, as_json.stderr, as_text.stdout, as_text.stderr])
    return json.loads(as_json.stdout), printed


@pytest.mark.parametrize("wire", ["openai", "anthropic"])
def test_an_echoed_key_reaches_no_viewer_and_no_log(tmp_path: Path, stand_in: StandIn, wire: Wire) -> None:
    daemon = Aiond(tmp_path, config_dir=config_for(wire, tmp_path, stand_in)).start()
    try:
        for form in ECHOES:
            for code, kind in ANSWERS:
                stand_in.clear()
                stand_in.always(behave.echo_key(form, code=code))
                task_id = submit(daemon, "summarize", route=common_pb2.ROUTE_API).task.task_id
                assert keyed_requests(stand_in) > 0, "the key went out, and came back echoed"
                task, printed = read_as_viewer(daemon, task_id)
                where = f"{form} echo, HTTP {code}"
                assert task["status"] == "error", where
                assert key_leaks(printed, KEY) == [], where
                keyed = [a for a in task["attempts"] if a["target"]["provider"] in KEYED_PROVIDERS]
                assert keyed, where
                for error in [task["error"], *(a["error"] for a in task["attempts"])]:
                    assert key_leaks(error["message"], KEY) == [], where
                    assert f"{kind} (HTTP {code}): " in error["message"], (where, error)
                for attempt in keyed:
                    message = attempt["error"]["message"]
                    assert "Incorrect API key provided: <redacted>" in message, (where, message)
        events = aionctl("events", "tail", "-o", "json", "-n", "500", env=daemon.aionctl_env("viewer"))
        assert events.returncode == 0, events.stderr
        assert key_leaks(events.stdout, KEY) == []
    finally:
        daemon.stop()
    log = (tmp_path / "aiond.log").read_text(errors="replace")
    assert key_leaks(log, KEY) == []
