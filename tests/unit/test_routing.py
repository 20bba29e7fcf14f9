"""The routing engine's hard rules, as properties over generated config sets, live states and requests,
plus the documented behaviour on the example set."""

from __future__ import annotations

import dataclasses
import pickle
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from types import MappingProxyType
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aion.config.model import (
    ConfigSnapshot,
    Locality,
    Privacy,
    Route,
    build_intents,
    build_models,
    build_modules,
    build_policies,
)
from aion.config.validate import validate_directory
from aion.routing import (
    MAX_CHAIN,
    BreakerState,
    Decision,
    LiveState,
    Refusal,
    Request,
    compile_table,
)
from aion.routing.engine import TargetKind
from tests.rig.daemon import EXAMPLES
from tests.rig.fuzz import examples

LOCAL_PROVIDERS = ("ollama", "vllm")
CLOUD_PROVIDERS = ("openai", "azure", "hf", "anthropic")
PROVIDERS = LOCAL_PROVIDERS + CLOUD_PROVIDERS
ROUTES = [r.value for r in Route]

model_names = st.sampled_from(["m1", "m2", "m3"])
local_refs = st.builds(lambda p, m: f"{p}:{m}", st.sampled_from(LOCAL_PROVIDERS), model_names)
cloud_refs = st.builds(lambda p, m: f"{p}:{m}", st.sampled_from(CLOUD_PROVIDERS), model_names)
money = st.one_of(st.none(), st.decimals(min_value=0, max_value="0.5", places=4).map(float))


@st.composite
def config_sets(draw: Any) -> ConfigSnapshot:
    tier_names = [f"tier{i}" for i in range(draw(st.integers(1, 3)))]
    tiers = {
        name: {
            "local": draw(st.lists(local_refs, min_size=1, max_size=3, unique=True)),
            "cloud": draw(st.lists(cloud_refs, min_size=1, max_size=4, unique=True)),
        }
        for name in tier_names
    }
    every = {r for t in tiers.values() for r in (*t["local"], *t["cloud"])}
    models = {
        r: {
            "input_usd_per_mtok": draw(st.decimals(0, 5, places=2).map(float)),
            "output_usd_per_mtok": draw(st.decimals(0, 15, places=2).map(float)),
            "context_window": draw(st.sampled_from([4096, 32768, 131072])),
            "max_output_tokens": draw(st.sampled_from([256, 1024, 4096])),
        }
        for r in sorted(every)
    }
    policies: dict[str, Any] = {
        "budget": {
            "default_usd": draw(st.decimals("0.001", "0.5", places=4).map(float)),
            "hard_cap_usd": draw(money),
        },
        "providers": {"deny": draw(st.lists(st.sampled_from(PROVIDERS), max_size=2, unique=True))},
        "routing": {"fallback_order": draw(st.permutations(ROUTES))},
        "privacy": {"local_only_intents": []},
        "retries": {"max_attempts": draw(st.integers(1, 3))},
    }
    if draw(st.booleans()):
        policies["providers"]["allow"] = draw(st.lists(st.sampled_from(PROVIDERS), max_size=6, unique=True))
    intents: dict[str, Any] = {}
    for i in range(draw(st.integers(1, 4))):
        candidates = draw(st.lists(st.sampled_from(ROUTES), min_size=1, max_size=3, unique=True))
        intents[f"intent{i}"] = {
            "default_route": draw(st.sampled_from(["auto", *candidates])),
            "candidates": candidates,
            "privacy": draw(st.sampled_from([p.value for p in Privacy])),
            "tiers_allowed": draw(
                st.one_of(st.none(), st.lists(st.sampled_from(tier_names), min_size=1, unique=True))
            ),
            "budget_usd": draw(money),
        }
        if draw(st.booleans()):
            policies["privacy"]["local_only_intents"].append(f"intent{i}")
    intents = {k: {kk: vv for kk, vv in v.items() if vv is not None} for k, v in intents.items()}
    policies["budget"] = {k: v for k, v in policies["budget"].items() if v is not None}
    modules = {
        "modules": [
            {
                "name": f"mod{i}",
                "ref": f"example.org/mod{i}:1",
                "intents": [f"intent{i}"],
                "routes": draw(st.lists(st.sampled_from(["local", "hybrid"]), min_size=1, unique=True)),
                "cost_usd_per_call": draw(st.sampled_from([0, 0.001, 0.2])),
            }
            for i in range(len(intents))
            if draw(st.booleans())
        ]
    }
    built_policies = build_policies(policies)
    return ConfigSnapshot(
        intents=build_intents(intents, built_policies),
        policies=built_policies,
        models=build_models({"tiers": tiers, "models": models}),
        modules=build_modules(modules),
        tag="sha256:" + "0" * 64,
    )


@st.composite
def live_states(draw: Any, snapshot: ConfigSnapshot) -> LiveState:
    keys = [*PROVIDERS, *snapshot.models.models, *(f"module:{name}" for name in snapshot.modules)]
    breakers = draw(st.dictionaries(st.sampled_from(keys), st.sampled_from(list(BreakerState)), max_size=6))
    latency = draw(st.dictionaries(st.sampled_from(keys), st.floats(0, 5000), max_size=6))
    modes = draw(
        st.dictionaries(st.sampled_from(list(snapshot.intents)), st.sampled_from(list(Privacy)), max_size=3)
    )
    modules = draw(st.frozensets(st.sampled_from([*snapshot.modules, "not-configured"]), max_size=4))
    return LiveState(
        MappingProxyType(breakers), MappingProxyType(latency), MappingProxyType(modes), modules=modules
    )


@st.composite
def requests(draw: Any, snapshot: ConfigSnapshot) -> Request:
    return Request(
        intent=draw(st.sampled_from([*snapshot.intents, *snapshot.intents, "unknown"])),
        input_bytes=draw(st.integers(0, 20_000)),
        budget_nano=draw(st.one_of(st.none(), st.integers(0, 5 * 10**8))),
        latency_target_ms=draw(st.one_of(st.none(), st.integers(100, 5000))),
        route_override=draw(st.one_of(st.none(), st.sampled_from(list(Route)))),
    )


@st.composite
def scenarios(draw: Any) -> tuple[ConfigSnapshot, LiveState, Request]:
    snapshot = draw(config_sets())
    return snapshot, draw(live_states(snapshot)), draw(requests(snapshot))


def effective_local_only(snapshot: ConfigSnapshot, live: LiveState, intent: str) -> bool:
    return snapshot.intents[intent].local_only or live.intent_modes.get(intent) is Privacy.LOCAL_ONLY


SETTINGS = settings(max_examples=examples(400), deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(scenarios())
def test_a_local_only_intent_never_leaves_the_host(
    scenario: tuple[ConfigSnapshot, LiveState, Request],
) -> None:
    snapshot, live, request = scenario
    decision = compile_table(snapshot).decide(request, live)
    if not isinstance(decision, Decision) or not effective_local_only(snapshot, live, request.intent):
        return
    assert decision.route is not Route.API
    assert all(step.target.locality is Locality.LOCAL for step in decision.chain)
    assert decision.prepare is None or decision.prepare.locality is Locality.LOCAL


@SETTINGS
@given(scenarios())
def test_the_cap_and_the_budget_are_never_exceeded(
    scenario: tuple[ConfigSnapshot, LiveState, Request],
) -> None:
    snapshot, live, request = scenario
    decision = compile_table(snapshot).decide(request, live)
    if not isinstance(decision, Decision):
        return
    assert decision.estimated_max_nano == sum(step.worst_nano for step in decision.chain)
    cap = snapshot.policies.budget.hard_cap_usd
    if cap is not None:
        assert decision.estimated_max_nano <= int(cap * 10**9)
    if decision.budget_nano is not None:
        assert decision.estimated_max_nano <= decision.budget_nano
    if request.budget_nano is not None:
        assert decision.estimated_max_nano <= request.budget_nano


@SETTINGS
@given(scenarios())
def test_denied_providers_open_breakers_and_privacy_are_respected(
    scenario: tuple[ConfigSnapshot, LiveState, Request],
) -> None:
    snapshot, live, request = scenario
    decision = compile_table(snapshot).decide(request, live)
    if not isinstance(decision, Decision):
        return
    keys = [step.target.key for step in decision.chain]
    assert len(keys) == len(set(keys)) <= MAX_CHAIN
    intent = snapshot.intents[request.intent]
    privacy = Privacy.LOCAL_ONLY if effective_local_only(snapshot, live, request.intent) else None
    for step in decision.chain:
        target = step.target
        assert target.kind is TargetKind.MODULE or snapshot.policies.provider_allowed(target.provider)
        assert live.breakers.get(target.provider) is not BreakerState.OPEN
        assert live.breakers.get(target.key) is not BreakerState.OPEN
        assert target.route in intent.candidates
        if intent.privacy is Privacy.HYBRID or privacy is Privacy.LOCAL_ONLY:
            assert target.route is not Route.API  # data leaves the host only after a local step
        if target.route is Route.HYBRID and target is decision.chain[0].target:
            assert decision.prepare is not None
    if request.route_override is not None:
        assert {step.target.route for step in decision.chain} == {request.route_override}
        assert decision.chosen_by == "caller"
    modules_only_where_they_can_run_and_serve(snapshot, live, request, decision)


def modules_only_where_they_can_run_and_serve(
    snapshot: ConfigSnapshot, live: LiveState, request: Request, decision: Decision
) -> None:
    """A module is a target only when it can run, serves the intent on that route, and is priced as
    modules.yml says."""
    steps = [(step.target, step.target.route) for step in decision.chain]
    if decision.prepare is not None:
        steps.append((decision.prepare, Route.HYBRID))
    for target, route in steps:
        if target.kind is not TargetKind.MODULE:
            continue
        assert target.name in live.modules, "a module that cannot run is never chosen"
        assert snapshot.modules[target.name].may_serve(request.intent, route)
        assert target.locality is Locality.LOCAL
    for step in decision.chain:
        if step.target.kind is TargetKind.MODULE:
            spec = snapshot.modules[step.target.name]
            attempts = max(1, snapshot.policies.retries.max_attempts)
            assert step.worst_nano == attempts * int(spec.cost_usd_per_call * 10**9)


@SETTINGS
@given(scenarios())
def test_a_decision_is_a_pure_function_of_its_inputs(
    scenario: tuple[ConfigSnapshot, LiveState, Request],
) -> None:
    snapshot, live, request = scenario
    table = compile_table(snapshot)
    first = table.decide(request, live)
    assert table.decide(request, live) == first
    assert compile_table(snapshot).decide(request, live) == first  # a fresh compile decides the same
    copied = pickle.loads(pickle.dumps((request, dict(live.breakers))))  # noqa: S301 - made here
    assert copied[0] == request
    assert isinstance(first, Decision | Refusal)


# -- the example set -------------------------------------------------------------------------------------


def example() -> Any:
    report = validate_directory(Path(EXAMPLES))
    assert report.snapshot is not None
    return compile_table(report.snapshot)


def chain(decision: Decision | Refusal) -> list[str]:
    assert isinstance(decision, Decision), decision
    return [step.target.key for step in decision.chain]


def test_examples_route_as_documented() -> None:
    table = example()
    summarize = table.decide(Request("summarize", input_bytes=2000), LiveState())
    assert chain(summarize)[:2] == ["ollama:qwen2.5", "vllm:llama3.1"]  # local first, tier0
    assert isinstance(summarize, Decision)
    assert summarize.route is Route.LOCAL
    invoice = table.decide(Request("invoice_ocr", input_bytes=2000), LiveState())
    assert isinstance(invoice, Decision)
    # No module can run yet, so the local step is a local model; with the module runnable, it is the module.
    assert (invoice.route, invoice.prepare and invoice.prepare.key) == (Route.HYBRID, "ollama:qwen2.5")
    with_module = table.decide(
        Request("invoice_ocr", input_bytes=2000), LiveState(modules=frozenset({"invoice_fields"}))
    )
    assert isinstance(with_module, Decision)
    assert with_module.prepare is not None
    assert with_module.prepare.key == "module:invoice_fields"
    assert invoice.estimated_max_nano == 0  # local models cost nothing
    assert "PRIVACY_LOCAL_ONLY" in invoice.reason_codes
    reply = table.decide(Request("draft_reply", input_bytes=2000), LiveState())
    assert isinstance(reply, Decision)
    assert reply.route is Route.HYBRID
    assert reply.target.locality is Locality.CLOUD  # completed by a cloud model, after pii_redact
    assert reply.prepare is not None
    assert reply.prepare.locality is Locality.LOCAL


def test_an_installed_module_answers_first_on_the_local_route_and_is_skipped_when_it_cannot_run() -> None:
    table = example()
    runnable = LiveState(modules=frozenset({"summarize_text"}))
    summarize = table.decide(Request("summarize", input_bytes=2000), runnable)
    assert chain(summarize)[:2] == ["module:summarize_text", "ollama:qwen2.5"]
    assert isinstance(summarize, Decision)
    assert summarize.estimated_max_nano == sum(s.worst_nano for s in summarize.chain[1:])  # it costs 0
    missing = table.decide(Request("summarize", input_bytes=2000), LiveState(), explain=True)
    assert chain(missing)[0] == "ollama:qwen2.5"
    assert isinstance(missing, Decision)
    assert "MODULE_UNAVAILABLE:module:summarize_text" in missing.reason_codes
    assert "module:summarize_text is skipped: it is not installed, or cannot run" in missing.reason
    draft = table.decide(Request("draft_reply", input_bytes=200), LiveState())
    assert isinstance(draft, Decision)
    assert draft.prepare is not None
    assert draft.prepare.key == "ollama:qwen2.5", "pii_redact cannot run: a local model is the local step"
    assert "MODULE_UNAVAILABLE:module:pii_redact" in draft.reason_codes
    explained = table.decide(Request("summarize", route_override=Route.LOCAL), LiveState(), explain=True)
    assert isinstance(explained, Decision)
    local_only = table.decide(
        Request("summarize"),
        LiveState(intent_modes={"summarize": Privacy.LOCAL_ONLY}, modules=runnable.modules),
    )
    assert chain(local_only)[0] == "module:summarize_text"
    # A refusal lists the module and why it was not used.
    everything_open = LiveState(breakers=dict.fromkeys(("ollama", "vllm"), BreakerState.OPEN))
    refused = table.decide(Request("summarize", route_override=Route.LOCAL), everything_open, explain=True)
    assert isinstance(refused, Refusal)
    assert ("module:summarize_text", "MODULE_UNAVAILABLE") in [
        (r.target.key, r.code) for r in refused.rejected
    ]


def test_a_module_with_a_price_counts_against_the_budget() -> None:
    report = validate_directory(Path(EXAMPLES))
    assert report.snapshot is not None
    spec = report.snapshot.modules["summarize_text"]
    priced = dataclasses.replace(spec, cost_usd_per_call=Decimal("0.05"))
    snapshot = dataclasses.replace(
        report.snapshot, modules={**report.snapshot.modules, "summarize_text": priced}
    )
    live = LiveState(modules=frozenset({"summarize_text"}))
    decision = compile_table(snapshot).decide(Request("summarize", budget_nano=10**9), live)
    attempts = snapshot.policies.retries.max_attempts
    assert isinstance(decision, Decision)
    assert decision.chain[0].worst_nano == attempts * 50_000_000
    too_little = compile_table(snapshot).decide(Request("summarize", budget_nano=1000), live, explain=True)
    assert "module:summarize_text" not in chain(too_little)


def test_an_open_breaker_moves_the_route_and_says_why() -> None:
    table = example()
    decision = table.decide(Request("summarize"), LiveState(breakers={"ollama": BreakerState.OPEN}))
    assert chain(decision)[0] == "vllm:llama3.1"
    assert isinstance(decision, Decision)
    assert "BREAKER_OPEN:ollama:qwen2.5" in decision.reason_codes
    assert "breaker is open" in decision.reason


def test_a_runtime_local_only_switch_wins_and_a_looser_one_is_ignored() -> None:
    table = example()
    strict = table.decide(
        Request("summarize", route_override=None), LiveState(intent_modes={"summarize": Privacy.LOCAL_ONLY})
    )
    assert isinstance(strict, Decision)
    assert strict.chosen_by == "policy-override"
    assert all(step.target.locality is Locality.LOCAL for step in strict.chain)
    loose = table.decide(Request("invoice_ocr"), LiveState(intent_modes={"invoice_ocr": Privacy.ALLOW_API}))
    assert isinstance(loose, Decision)
    assert all(step.target.locality is Locality.LOCAL for step in loose.chain)


def test_refusals_are_explicit() -> None:
    table = example()
    unknown = table.decide(Request("nope"), LiveState())
    assert isinstance(unknown, Refusal)
    assert unknown.code == "UNKNOWN_INTENT"
    forbidden = table.decide(Request("invoice_ocr", route_override=Route.API), LiveState())
    assert isinstance(forbidden, Refusal)
    assert forbidden.code == "ROUTE_NOT_PERMITTED"
    everything_open: Mapping[str, BreakerState] = dict.fromkeys(
        ("ollama", "vllm", "openai", "azure", "hf"), BreakerState.OPEN
    )
    down = table.decide(Request("summarize"), LiveState(breakers=everything_open), explain=True)
    assert isinstance(down, Refusal)
    assert down.code == "BREAKER_OPEN"
    assert {r.code for r in down.rejected} >= {"BREAKER_OPEN"}
    broke = table.decide(Request("draft_reply", budget_nano=1, route_override=Route.HYBRID), LiveState())
    assert isinstance(broke, Refusal)
    assert broke.code == "OVER_BUDGET"
    too_big = table.decide(Request("summarize", input_bytes=10**8), LiveState())
    assert isinstance(too_big, Refusal)
    assert too_big.code == "INPUT_TOO_LARGE"


def test_a_budget_above_the_cap_is_lowered_to_it() -> None:
    table = example()
    decision = table.decide(Request("summarize", budget_nano=5 * 10**9), LiveState())
    assert isinstance(decision, Decision)
    assert decision.budget_nano == 200_000_000  # hard_cap_usd 0.20
    assert "BUDGET_CAPPED" in decision.reason_codes
