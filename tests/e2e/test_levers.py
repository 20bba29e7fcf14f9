"""The router's explanations and the runbook's incident levers, through a real aiond and aionctl:
`route explain` online and offline, forcing breakers, switching intent modes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.supply import conforms
from tests.rig.daemon import EXAMPLES, Aiond, aionctl


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Aiond]:
    d = Aiond(tmp_path).start()
    yield d
    d.stop()


def ctl(daemon: Aiond, *args: str, role: str = "admin") -> Any:
    return aionctl(*args, env=daemon.aionctl_env(role))


def explain(daemon: Aiond | None, *args: str) -> tuple[int, Any]:
    if daemon is None:
        result = aionctl("route", "explain", *args, "--config", str(EXAMPLES), "-o", "json")
    else:
        result = ctl(daemon, "route", "explain", *args, "-o", "json", role="viewer")
    assert result.returncode in (0, 1), result.stderr
    return result.returncode, conforms(json.loads(result.stdout), "output/route-explanation")


def keys(body: Any) -> list[str]:
    d = body["decision"]
    return [f"{t['provider']}:{t['name']}" for t in (d["target"], *d.get("fallbackChain", []))]


def test_offline_and_online_explanations_agree(daemon: Aiond) -> None:
    for args in (
        ["draft_reply", "--input-bytes", "2000"],
        ["summarize"],
        ["invoice_ocr", "--budget", "0.01"],
    ):
        offline_code, offline = explain(None, *args)
        online_code, online = explain(daemon, *args)
        assert offline_code == online_code == 0
        assert offline["offline"] is True
        assert online["offline"] is False
        assert online["decision"]["policyVersion"] == 1
        assert offline["decision"].pop("policyVersion") == 0
        online["decision"].pop("policyVersion")
        assert offline["decision"] == online["decision"]


def test_explain_names_the_hybrid_local_step_and_the_budget() -> None:
    code, body = explain(None, "draft_reply", "--input-bytes", "2000")
    assert code == 0
    decision = body["decision"]
    assert (decision["route"], decision["chosenBy"]) == ("hybrid", "router")
    # pii_redact is not installed here, so the local step is the first local model.
    assert decision["prepare"] == {"kind": "model", "provider": "ollama", "name": "qwen2.5",
                                   "route": "hybrid", "tier": "tier0"}  # fmt: skip
    assert [t["route"] for t in decision["fallbackChain"]][-2:] == ["local", "local"]
    worst, budget = decision["estimatedMaxCost"]["nanoUsd"], decision["budget"]["nanoUsd"]
    assert type(worst) is type(budget) is int  # numbers, not the strings of protobuf's JSON mapping
    assert 0 < worst <= budget == 50_000_000
    text = aionctl("route", "explain", "draft_reply", "--config", str(EXAMPLES)).stdout
    assert "prepare: ollama:qwen2.5 (tier0, hybrid)" in text
    assert "of a $0.05 budget" in text


def test_a_route_the_hard_rules_forbid_is_refused_with_exit_1() -> None:
    code, body = explain(None, "invoice_ocr", "--route", "api")
    assert code == 1
    assert body["refused"] is True
    assert body["refusalReason"].startswith("ROUTE_NOT_PERMITTED")
    code, poor = explain(None, "summarize", "--route", "api", "--budget", "0.0000001")
    assert code == 1
    assert {(r["reasonCode"], r["target"]["kind"], r["target"]["route"]) for r in poor["rejected"]} == {
        ("OVER_BUDGET", "model", "api")
    }
    bad = aionctl("route", "explain", "summarize", "--config", str(EXAMPLES), "--budget", "lots")
    assert bad.returncode == 2
    assert "is not an amount of dollars" in bad.stderr


def test_forcing_a_breaker_moves_traffic_and_is_audited(daemon: Aiond) -> None:
    _, before = explain(daemon, "summarize")
    assert keys(before)[0] == "ollama:qwen2.5"
    viewer = ctl(daemon, "breaker", "open", "ollama", "--reason", "drill", role="viewer")
    assert viewer.returncode == 4
    opened = ctl(
        daemon, "breaker", "open", "ollama", "--reason", "incident 42", "-o", "json", role="operator"
    )
    assert opened.returncode == 0, opened.stderr
    change = conforms(json.loads(opened.stdout), "output/breaker")
    assert (change["breaker"]["state"], change["breaker"]["override"]) == ("open", "forced-open")
    assert change["previous"]["state"] == "closed"
    _, after = explain(daemon, "summarize")
    assert "ollama:qwen2.5" not in keys(after)
    assert "BREAKER_OPEN:ollama:qwen2.5" in after["decision"]["reasonCodes"]
    listed = conforms(
        json.loads(ctl(daemon, "breaker", "list", "-o", "json", role="viewer").stdout), "output/breaker"
    )
    assert [(b["provider"], b["state"]) for b in listed["breakers"]] == [("ollama", "open")]
    closed = ctl(daemon, "breaker", "close", "ollama", "-o", "yaml", role="operator")
    assert closed.returncode == 0, closed.stderr
    forced = conforms(yaml.safe_load(closed.stdout), "output/breaker")
    assert (forced["breaker"]["state"], forced["breaker"]["override"]) == ("closed", "forced-closed")
    assert forced["previous"]["override"] == "forced-open"
    auto = ctl(daemon, "breaker", "auto", "ollama", "-o", "json", role="operator")
    assert auto.returncode == 0, auto.stderr
    assert conforms(json.loads(auto.stdout), "output/breaker")["breaker"]["override"] == "none"
    _, back = explain(daemon, "summarize")
    assert keys(back)[0] == "ollama:qwen2.5"  # handed back: a half-open probe may go through
    unknown = ctl(daemon, "breaker", "open", "nobody", role="operator")
    assert unknown.returncode == 3
    events = [
        json.loads(x) for x in ctl(daemon, "events", "tail", "-o", "json", role="viewer").stdout.splitlines()
    ]
    sets = [e for e in events if e["action"] == "breaker.set"]
    assert [(e["principal"], e["target"], e["reason"]) for e in sets][:1] == [
        ("test-operator", "ollama", "incident 42")
    ]


def test_switching_an_intent_to_local_only_keeps_it_on_the_host(daemon: Aiond, tmp_path: Path) -> None:
    _, before = explain(daemon, "summarize", "--route", "api")
    assert before["refused"] is False
    args = ("intent", "mode", "summarize", "local-only", "--reason", "privacy review", "-o", "json")
    switched = ctl(daemon, *args, role="operator")
    assert switched.returncode == 0, switched.stderr
    body = conforms(json.loads(switched.stdout), "output/intent-mode")
    assert (body["previousMode"], body["state"]["mode"], body["state"]["setBy"]) == (
        "policy",
        "local-only",
        "test-operator",
    )
    code, refused = explain(daemon, "summarize", "--route", "api")
    assert code == 1
    assert refused["refusalReason"].startswith("ROUTE_NOT_PERMITTED")
    _, local = explain(daemon, "summarize")
    assert local["decision"]["chosenBy"] == "policy-override"
    assert all(k.split(":")[0] in ("ollama", "vllm") for k in keys(local))
    # The switch survives a restart.
    assert daemon.stop() == 0
    daemon.start()
    modes = conforms(
        json.loads(ctl(daemon, "intent", "modes", "-o", "json", role="viewer").stdout), "output/intent-mode"
    )
    assert [(m["intent"], m["mode"]) for m in modes["intents"]] == [("summarize", "local-only")]
    # Loosening beyond the policy is refused; back to policy removes the switch.
    loosen = ctl(daemon, "intent", "mode", "invoice_ocr", "allow-api", role="operator")
    assert loosen.returncode == 6
    assert "can only make it stricter" in loosen.stderr
    assert ctl(daemon, "intent", "mode", "summarize", "policy", role="operator").returncode == 0
    assert "no runtime modes" in ctl(daemon, "intent", "modes", role="viewer").stdout
    assert ctl(daemon, "intent", "mode", "nope", "local-only", role="operator").returncode == 3
    events = [
        json.loads(x) for x in ctl(daemon, "events", "tail", "-o", "json", role="viewer").stdout.splitlines()
    ]
    modes_changed = [
        (e["target"], e["before"], e["after"], e["outcome"])
        for e in events
        if e.get("action") == "intent.mode"
    ]
    assert ("summarize", "policy", "local-only", "success") in modes_changed
    assert ("invoice_ocr", "policy", "allow-api", "refused") in modes_changed
