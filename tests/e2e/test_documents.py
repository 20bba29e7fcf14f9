"""The documents aionctl prints for programs, through a real aiond: each checked against its schema,
with numbers as numbers and enums as the words the text shows; ``events tail`` lines that are
documents like any other; and lists that the daemon answers page by page read whole."""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from aion.api.v1 import admin_pb2, admin_pb2_grpc
from tests.integration.supply import conforms
from tests.rig.daemon import EXAMPLES, Aiond, aionctl

PAGE = 100
"""aiond's default page of a list answer (aiond.serving.services.paging.DEFAULT_PAGE)."""

EXTRA = PAGE + 30
"""How many models and intents the big config set adds: more than one page of either."""


def big_config(root: Path) -> Path:
    """The example set with EXTRA more local models (each a breaker) and EXTRA more intents."""
    config = root / "config"
    shutil.copytree(EXAMPLES, config)
    models = yaml.safe_load((config / "models.yml").read_text())
    names = [f"ollama:m{n:03d}" for n in range(EXTRA)]
    models["tiers"]["tier0"]["local"] += names
    models["models"].update({name: {"context_window": 32768} for name in names})
    (config / "models.yml").write_text(yaml.safe_dump(models, sort_keys=False))
    intents = yaml.safe_load((config / "intents.yml").read_text())
    intents.update({f"i{n:03d}": copy.deepcopy(intents["summarize"]) for n in range(EXTRA)})
    (config / "intents.yml").write_text(yaml.safe_dump(intents, sort_keys=False))
    validated = aionctl("validate", str(config))
    assert validated.returncode == 0, validated.stdout + validated.stderr
    return config


@pytest.fixture
def big(tmp_path: Path) -> Iterator[Aiond]:
    daemon = Aiond(tmp_path, config_dir=big_config(tmp_path)).start()
    yield daemon
    daemon.stop()


def ctl(daemon: Aiond, *args: str, role: str = "viewer") -> Any:
    result = aionctl(*args, env=daemon.aionctl_env(role))
    assert result.returncode == 0, result.stderr
    return result


def test_breaker_list_reads_every_page(big: Aiond) -> None:
    keys = ["ollama", *(f"ollama:m{n:03d}" for n in range(EXTRA))]
    with big.channel("operator") as channel:
        stub = admin_pb2_grpc.AdminServiceStub(channel)
        for key in keys:
            provider, _, model = key.partition(":")
            request = admin_pb2.SetBreakerStateRequest(
                provider=provider,
                model=model,
                override=admin_pb2.BREAKER_OVERRIDE_FORCED_OPEN,
                reason="drill",
            )
            stub.SetBreakerState(request, timeout=10)
        first = stub.ListBreakers(admin_pb2.ListBreakersRequest(), timeout=10)
    assert len(first.breakers) == PAGE
    assert first.next_page_token  # the daemon did page its answer
    listed = conforms(json.loads(ctl(big, "breaker", "list", "-o", "json").stdout), "output/breaker")
    got = [b["provider"] + (f":{b['model']}" if b["model"] else "") for b in listed["breakers"]]
    assert got == sorted(keys)
    assert {(b["state"], b["override"]) for b in listed["breakers"]} == {("open", "forced-open")}
    assert {type(b["windowRequests"]) for b in listed["breakers"]} == {int}
    rows = ctl(big, "breaker", "list").stdout.splitlines()
    assert len(rows) == 1 + len(keys)  # the header, then every breaker
    assert rows[-1].split()[:3] == [f"ollama:m{EXTRA - 1:03d}", "open", "(forced-open)"]


def test_intent_modes_reads_every_page(big: Aiond) -> None:
    intents = [f"i{n:03d}" for n in range(EXTRA)]
    with big.channel("operator") as channel:
        stub = admin_pb2_grpc.AdminServiceStub(channel)
        for intent in intents:
            request = admin_pb2.SetIntentModeRequest(
                intent=intent, mode=admin_pb2.INTENT_MODE_LOCAL_ONLY, reason="review"
            )
            stub.SetIntentMode(request, timeout=10)
        assert stub.ListIntentModes(admin_pb2.ListIntentModesRequest(), timeout=10).next_page_token
    listed = conforms(json.loads(ctl(big, "intent", "modes", "-o", "json").stdout), "output/intent-mode")
    assert [(m["intent"], m["mode"], m["setBy"]) for m in listed["intents"]] == [
        (intent, "local-only", "test-operator") for intent in intents
    ]
    assert len(ctl(big, "intent", "modes").stdout.splitlines()) == 1 + len(intents)


ENVELOPE = ("apiVersion", "kind", "sequence")


def test_events_tail_prints_documents_in_json_and_yaml(aiond: Aiond) -> None:
    for mode in ("local-only", "policy"):
        ctl(aiond, "intent", "mode", "summarize", mode, "--reason", "drill", role="operator")
    ctl(aiond, "breaker", "open", "openai", "--reason", "drill", role="operator")
    lines = ctl(aiond, "events", "tail", "-o", "json").stdout.splitlines()
    records = [conforms(json.loads(line), "output/event") for line in lines]
    assert len(records) >= 3
    for record in records:
        assert list(record)[:3] == list(ENVELOPE)  # a script checks what it parses first
        assert (record["apiVersion"], record["kind"]) == ("aion/v1", "EventRecord")
        assert type(record["sequence"]) is int
        conforms({k: v for k, v in record.items() if k not in ENVELOPE}, "events/audit")
    assert [r["action"] for r in records][-3:] == ["intent.mode", "intent.mode", "breaker.set"]
    printed = ctl(aiond, "events", "tail", "-o", "yaml").stdout
    assert printed.startswith("---\n")
    documents = [conforms(doc, "output/event") for doc in yaml.safe_load_all(printed)]
    assert documents == records


def test_every_daemon_document_has_numbers_and_words(aiond: Aiond) -> None:
    explained = conforms(
        json.loads(ctl(aiond, "route", "explain", "summarize", "-o", "json").stdout),
        "output/route-explanation",
    )
    decision = explained["decision"]
    assert (decision["route"], decision["chosenBy"], decision["target"]["kind"]) == (
        "local",
        "router",
        "model",
    )
    assert decision["policyVersion"] == 1
    assert type(decision["estimatedMaxCost"]["nanoUsd"]) is int
    switched = conforms(
        json.loads(ctl(aiond, "intent", "mode", "summarize", "hybrid", "-o", "json", role="operator").stdout),
        "output/intent-mode",
    )
    assert (switched["previousMode"], switched["state"]["mode"]) == ("policy", "hybrid")
    status = conforms(json.loads(ctl(aiond, "status", "-o", "json").stdout), "output/status")
    assert status["activePolicyVersion"] == 1
    assert status["state"] == "serving"
