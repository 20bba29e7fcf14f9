"""Checks across the files of a config set: references, privacy, budgets, latency, reachability.

Each check needs some kinds of file (intents, policies, models, modules); it runs only when those are
present and passed their schemas, and points its findings at the exact node that is wrong. Missing
policies mean the documented defaults; a missing modules file means module coverage is unknown, and
is then given the benefit of the doubt (no finding is raised on a guess).

Validation does not know where aiond keeps keys and secrets, so files a set names outside its own
directory are only noted here (AION208, AION209); :func:`judge_for_daemon` then judges them against
aiond's own directories, which no config set can move.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from aion.config import rules
from aion.config.findings import Finding, Severity, json_pointer
from aion.config.kinds import Kind
from aion.config.model import (
    DEFAULT_SECRETS_DIRECTORY,
    ConfigSnapshot,
    Intent,
    Locality,
    ModelRef,
    Models,
    Module,
    Policies,
    Route,
    build_intents,
    build_models,
    build_modules,
    build_policies,
    glob_regex,
    repository_of,
    trust_key_path,
    within,
)
from aion.config.yamlload import Document


@dataclasses.dataclass(frozen=True)
class SetView:
    """The documents of a set (schema-valid ones only) and the model built from them."""

    docs: dict[Kind, Document]
    broken: frozenset[Kind]
    """Kinds present in the set but with errors (so not in ``docs``)."""
    base_dir: Path | None
    """Directory that relative paths in the set (trust keys) are relative to."""
    manifests: tuple[Document, ...]
    """AgentPackage manifests validated with the set (schema-valid ones)."""
    policies: Policies
    intents: dict[str, Intent]
    models: Models | None
    modules: dict[str, Module] | None
    _usable: dict[tuple[tuple[str, ...] | None, Locality], tuple[ModelRef, ...]] = dataclasses.field(
        default_factory=dict, repr=False
    )

    @classmethod
    def build(
        cls,
        docs: dict[Kind, Document],
        base_dir: Path | None,
        broken: frozenset[Kind] = frozenset(),
        manifests: tuple[Document, ...] = (),
    ) -> SetView:
        def data(kind: Kind) -> Any:
            return docs[kind].data if kind in docs else None

        policies = build_policies(data(Kind.POLICIES))
        return cls(
            docs=docs,
            broken=broken,
            base_dir=base_dir,
            manifests=manifests,
            policies=policies,
            intents=dict(build_intents(data(Kind.INTENTS), policies)),
            models=build_models(data(Kind.MODELS)) if Kind.MODELS in docs else None,
            modules=dict(build_modules(data(Kind.MODULES))) if Kind.MODULES in docs else None,
        )

    def finding(
        self,
        rule_id: str,
        kind: Kind,
        path: list[str | int],
        message: str,
        *,
        hint: str | None = None,
        key: bool = False,
    ) -> Finding:
        rule = rules.RULES[rule_id]
        return self.docs[kind].finding(rule.id, rule.severity, path, message, hint=hint, key=key)

    # -- reachability ------------------------------------------------------------------------------

    def usable_models(self, intent: Intent, locality: Locality) -> tuple[ModelRef, ...]:
        """Models of the intent's tiers, of ``locality``, whose provider is known, allowed, not denied.
        Intents mostly share a few tier lists, so the answer is kept per (tiers, locality)."""
        key = (intent.tiers_allowed, locality)
        found = self._usable.get(key)
        if found is None:
            found = self._usable[key] = tuple(self._usable_models(intent.tiers_allowed, locality))
        return found

    def _usable_models(self, tiers_allowed: tuple[str, ...] | None, locality: Locality) -> list[ModelRef]:
        assert self.models is not None
        found = []
        tiers = tiers_allowed if tiers_allowed is not None else tuple(self.models.tiers)
        for name in tiers:
            tier = self.models.tiers.get(name)
            if tier is None:
                continue
            for ref in tier.local if locality is Locality.LOCAL else tier.cloud:
                provider = self.models.provider(ref.provider)
                if provider is None or not self.policies.provider_allowed(ref.provider):
                    continue
                if locality is Locality.LOCAL and provider.locality is not Locality.LOCAL:
                    continue  # a cloud model listed as local is AION304, never a local model
                found.append(ref)
        return found

    def module_may_serve(self, intent: Intent, route: Route) -> bool:
        if self.modules is None:
            return True  # unknown without modules.yml: no finding on a guess
        return any(m.may_serve(intent.name, route) for m in self.modules.values())

    def servable(self, intent: Intent, route: Route) -> bool:
        """Whether something can serve ``route`` for the intent (privacy aside)."""
        if route is Route.LOCAL:
            return bool(self.usable_models(intent, Locality.LOCAL)) or (
                self.modules is not None and self.module_may_serve(intent, Route.LOCAL)
            )
        if route is Route.API:
            return bool(self.usable_models(intent, Locality.CLOUD))
        model_step = bool(self.usable_models(intent, Locality.LOCAL)) or (
            not intent.local_only and bool(self.usable_models(intent, Locality.CLOUD))
        )
        return model_step and self.module_may_serve(intent, Route.HYBRID)

    def takeable(self, intent: Intent, route: Route) -> bool:
        return (
            route in intent.candidates and route in intent.permitted_routes and self.servable(intent, route)
        )


Check = Callable[[SetView], Iterator[Finding]]
_CHECKS: list[tuple[tuple[Kind, ...], Check]] = []


def check(*needs: Kind) -> Callable[[Check], Check]:
    def register(fn: Check) -> Check:
        _CHECKS.append((needs, fn))
        return fn

    return register


def run(view: SetView) -> list[Finding]:
    """Every check whose files are present and valid. Policies shape every check (privacy, allow and
    deny lists, targets), so with a broken policies file no check runs on a guess of its defaults."""
    findings: list[Finding] = []
    if Kind.POLICIES in view.broken:
        return findings
    for needs, fn in _CHECKS:
        if all(kind in view.docs for kind in needs):
            findings.extend(fn(view))
    return findings


def _why_local_only(view: SetView, intent: Intent) -> str:
    if intent.privacy.value == "local-only":
        return "its privacy is local-only"
    return "policies.yml lists it in privacy.local_only_intents"


# -- references ------------------------------------------------------------------------------------


@check(Kind.INTENTS, Kind.MODELS)
def unknown_tiers(view: SetView) -> Iterator[Finding]:
    assert view.models is not None
    known = sorted(view.models.tiers)
    for intent in view.intents.values():
        for i, tier in enumerate(intent.tiers_allowed or ()):
            if tier not in view.models.tiers:
                yield view.finding(
                    "AION201",
                    Kind.INTENTS,
                    [intent.name, "tiers_allowed", i],
                    f"intent {intent.name!r} allows tier {tier!r}, which models.yml does not define",
                    hint=f"defined tiers: {', '.join(known) or 'none'}",
                )


@check(Kind.INTENTS, Kind.POLICIES)
def unknown_local_only_intents(view: SetView) -> Iterator[Finding]:
    names = view.docs[Kind.POLICIES].data.get("privacy", {}).get("local_only_intents", [])
    for i, name in enumerate(names):
        if name not in view.intents:
            yield view.finding(
                "AION202",
                Kind.POLICIES,
                ["privacy", "local_only_intents", i],
                f"privacy.local_only_intents names {name!r}, which intents.yml does not define; "
                "it protects nothing",
            )


@check(Kind.INTENTS, Kind.MODULES)
def unknown_module_intents(view: SetView) -> Iterator[Finding]:
    for j, spec in enumerate(view.docs[Kind.MODULES].data.get("modules", [])):
        for k, name in enumerate(spec.get("intents", [])):
            if name not in view.intents:
                yield view.finding(
                    "AION202",
                    Kind.MODULES,
                    ["modules", j, "intents", k],
                    f"module {spec['name']!r} serves intent {name!r}, which intents.yml does not define",
                )


@check(Kind.MODELS)
def unknown_model_providers(view: SetView) -> Iterator[Finding]:
    assert view.models is not None
    data = view.docs[Kind.MODELS].data
    for tier_name, tier in data.get("tiers", {}).items():
        for where in ("local", "cloud"):
            for i, text in enumerate(tier.get(where, [])):
                provider = ModelRef.parse(text).provider
                if view.models.provider(provider) is None:
                    yield view.finding(
                        "AION203",
                        Kind.MODELS,
                        ["tiers", tier_name, where, i],
                        f"model {text!r} names provider {provider!r}, "
                        "which is neither under providers: nor built in",
                        hint="add providers." + provider + " with its base_url, api and api_key_secret",
                    )
    for text in data.get("models", {}):
        provider = ModelRef.parse(text).provider
        if view.models.provider(provider) is None:
            yield view.finding(
                "AION203",
                Kind.MODELS,
                ["models", text],
                f"models: entry {text!r} names provider {provider!r}, "
                "which is neither configured nor built in",
                key=True,
            )


@check(Kind.POLICIES, Kind.MODELS)
def unknown_policy_providers(view: SetView) -> Iterator[Finding]:
    assert view.models is not None
    providers = view.docs[Kind.POLICIES].data.get("providers", {})
    for which in ("allow", "deny"):
        for i, name in enumerate(providers.get(which, [])):
            if view.models.provider(name) is None:
                yield view.finding(
                    "AION203",
                    Kind.POLICIES,
                    ["providers", which, i],
                    f"providers.{which} names {name!r}, "
                    "which is neither configured in models.yml nor built in; "
                    "the entry does nothing",
                )


@check(Kind.MODULES)
def duplicate_modules(view: SetView) -> Iterator[Finding]:
    seen: dict[str, int] = {}
    for j, spec in enumerate(view.docs[Kind.MODULES].data.get("modules", [])):
        name = spec["name"]
        if name in seen:
            yield view.finding(
                "AION204",
                Kind.MODULES,
                ["modules", j],
                f"module {name!r} is already defined as modules[{seen[name]}]",
            )
        else:
            seen[name] = j


@check(Kind.POLICIES)
def missing_key_files(view: SetView) -> Iterator[Finding]:
    base = view.base_dir or Path.cwd()
    rules_ = view.docs[Kind.POLICIES].data.get("trust", {}).get("rules", [])
    for i, rule in enumerate(rules_):
        for k, key in enumerate(rule.get("keys", [])):
            path = Path(key) if Path(key).is_absolute() else base / key
            try:
                readable = path.is_file()
            except OSError:  # a name too long, a directory that cannot be searched
                readable = False
            if not readable:
                yield view.finding(
                    "AION205",
                    Kind.POLICIES,
                    ["trust", "rules", i, "keys", k],
                    f"trust rule {rule['match']!r} names key {key!r}, "
                    f"but {str(path)!r} is not a readable file",
                )


@check(Kind.POLICIES)
def keys_outside_the_set(view: SetView) -> Iterator[Finding]:
    base = view.base_dir or Path.cwd()
    rules_ = view.docs[Kind.POLICIES].data.get("trust", {}).get("rules", [])
    for i, rule in enumerate(rules_):
        for k, key in enumerate(rule.get("keys", [])):
            real = trust_key_path(key, base)
            if real is None or within(real, [base]):
                continue  # a name that is no path is AION205's
            where = "" if str(real) == key else f" (it resolves to {str(real)!r})"
            yield view.finding(
                "AION208",
                Kind.POLICIES,
                ["trust", "rules", i, "keys", k],
                f"trust rule {rule['match']!r} names key {key!r}, outside the config set's directory"
                f"{where}; aiond refuses a key outside its --config and --trust-keys-dir",
                hint="copy the key into the config directory and name it relatively, "
                "or put it in aiond's --trust-keys-dir",
            )


@check(Kind.MODELS)
def secrets_directory(view: SetView) -> Iterator[Finding]:
    named = view.docs[Kind.MODELS].data.get("secrets", {}).get("directory")
    if named is None or os.path.normpath(named) == DEFAULT_SECRETS_DIRECTORY:
        return
    yield view.finding(
        "AION209",
        Kind.MODELS,
        ["secrets", "directory"],
        f"secrets.directory is {named!r}: aiond does not read it, it reads API keys from its own "
        f"--secrets-dir (default {DEFAULT_SECRETS_DIRECTORY}); other tools may read this directory",
        hint="put the secret files in aiond's --secrets-dir, or remove secrets.directory",
    )


# -- privacy ---------------------------------------------------------------------------------------


def _api_uses(intent: Intent) -> Iterator[tuple[list[str | int], str]]:
    for i, route in enumerate(intent.candidates):
        if route is Route.API:
            yield [intent.name, "candidates", i], "candidates"
    if intent.default_route is Route.API:
        yield [intent.name, "default_route"], "default_route"
    for i, route in enumerate(intent.fallback_order or ()):
        if route is Route.API:
            yield [intent.name, "fallback_order", i], "fallback_order"


@check(Kind.INTENTS)
def local_only_leaks(view: SetView) -> Iterator[Finding]:
    for intent in view.intents.values():
        if not intent.local_only:
            continue
        for path, where in _api_uses(intent):
            yield view.finding(
                "AION301",
                Kind.INTENTS,
                path,
                f"intent {intent.name!r} is local-only ({_why_local_only(view, intent)}), "
                f"but its {where} include the api route, which leaves the host",
                hint="remove api; hybrid stays on the host for local-only intents",
            )


@check(Kind.INTENTS, Kind.MODELS)
def local_only_cloud_tiers(view: SetView) -> Iterator[Finding]:
    assert view.models is not None
    for intent in view.intents.values():
        if not intent.local_only:
            continue
        for i, name in enumerate(intent.tiers_allowed or ()):
            tier = view.models.tiers.get(name)
            if tier is not None and not tier.local and tier.cloud:
                yield view.finding(
                    "AION302",
                    Kind.INTENTS,
                    [intent.name, "tiers_allowed", i],
                    f"intent {intent.name!r} is local-only but allows tier {name!r}, "
                    "which has only cloud models",
                )


@check(Kind.INTENTS)
def hybrid_privacy_api(view: SetView) -> Iterator[Finding]:
    for intent in view.intents.values():
        if intent.local_only or intent.privacy.value != "hybrid":
            continue
        for path, where in _api_uses(intent):
            yield view.finding(
                "AION303",
                Kind.INTENTS,
                path,
                f"intent {intent.name!r} has hybrid privacy, but its {where} include the direct api route",
                hint="remove api, or use privacy: allow-api",
            )


@check(Kind.MODELS)
def misplaced_models(view: SetView) -> Iterator[Finding]:
    assert view.models is not None
    for tier in view.models.tiers.values():
        for i, ref in enumerate(tier.local):
            provider = view.models.provider(ref.provider)
            if provider is not None and provider.locality is Locality.CLOUD:
                yield view.finding(
                    "AION304",
                    Kind.MODELS,
                    ["tiers", tier.name, "local", i],
                    f"{ref} is listed as local, but provider {ref.provider!r} is a cloud provider; "
                    "local-only intents would send data to it",
                    hint=f"move it to cloud:, or set providers.{ref.provider}.locality: local",
                )
        for i, ref in enumerate(tier.cloud):
            provider = view.models.provider(ref.provider)
            if provider is not None and provider.locality is Locality.LOCAL:
                yield view.finding(
                    "AION305",
                    Kind.MODELS,
                    ["tiers", tier.name, "cloud", i],
                    f"{ref} is listed as cloud, but provider {ref.provider!r} runs on this host",
                )


@check(Kind.INTENTS, Kind.POLICIES)
def privacy_overrides(view: SetView) -> Iterator[Finding]:
    names = view.docs[Kind.POLICIES].data.get("privacy", {}).get("local_only_intents", [])
    for i, name in enumerate(names):
        intent = view.intents.get(name)
        if intent is not None and intent.privacy.value != "local-only":
            yield view.finding(
                "AION306",
                Kind.POLICIES,
                ["privacy", "local_only_intents", i],
                f"intent {name!r} says privacy: {intent.privacy.value}; this policy makes it local-only",
            )


# -- budgets and latency ---------------------------------------------------------------------------


@check(Kind.POLICIES)
def budget_default_above_cap(view: SetView) -> Iterator[Finding]:
    budget = view.docs[Kind.POLICIES].data.get("budget", {})
    if "default_usd" in budget and "hard_cap_usd" in budget:
        b = view.policies.budget
        if b.default_usd is not None and b.hard_cap_usd is not None and b.default_usd > b.hard_cap_usd:
            yield view.finding(
                "AION403",
                Kind.POLICIES,
                ["budget", "default_usd"],
                f"budget.default_usd ({b.default_usd}) is above budget.hard_cap_usd ({b.hard_cap_usd}); "
                "the cap always wins",
            )


@check(Kind.INTENTS, Kind.POLICIES)
def intent_budget_above_cap(view: SetView) -> Iterator[Finding]:
    cap = view.policies.budget.hard_cap_usd
    if cap is None:
        return
    for intent in view.intents.values():
        if intent.budget_usd is not None and intent.budget_usd > cap:
            yield view.finding(
                "AION404",
                Kind.INTENTS,
                [intent.name, "budget_usd"],
                f"intent {intent.name!r} has budget_usd {intent.budget_usd}, "
                f"above budget.hard_cap_usd ({cap})",
            )


@check(Kind.MODULES)
def module_timeouts(view: SetView) -> Iterator[Finding]:
    for j, spec in enumerate(view.docs[Kind.MODULES].data.get("modules", [])):
        timeout = spec.get("timeout_ms", 1000)
        for route in sorted(Route(r) for r in spec.get("routes", ["hybrid"])):
            target = view.policies.p95_ms[route]
            if timeout > target:
                yield view.finding(
                    "AION405",
                    Kind.MODULES,
                    ["modules", j, "timeout_ms" if "timeout_ms" in spec else "name"],
                    f"module {spec['name']!r} may take {timeout} ms, above the {route.value} route's "
                    f"p95 target of {target} ms",
                )


# -- reachability ----------------------------------------------------------------------------------


@check(Kind.INTENTS)
def intent_fallbacks(view: SetView) -> Iterator[Finding]:
    for intent in view.intents.values():
        for i, route in enumerate(intent.fallback_order or ()):
            if route not in intent.permitted_routes:
                continue  # AION301 or AION303 says why
            if route not in intent.candidates:
                yield view.finding(
                    "AION406",
                    Kind.INTENTS,
                    [intent.name, "fallback_order", i],
                    f"intent {intent.name!r} falls back to {route.value}, which is not among its candidates",
                )


@check(Kind.INTENTS, Kind.MODELS)
def unservable_intents(view: SetView) -> Iterator[Finding]:
    for intent in view.intents.values():
        routes = [r for r in intent.candidates if r in intent.permitted_routes]
        if not any(view.servable(intent, r) for r in routes):
            tried = ", ".join(r.value for r in routes) or "none (privacy excludes every candidate)"
            yield view.finding(
                "AION401",
                Kind.INTENTS,
                [intent.name],
                f"nothing can serve intent {intent.name!r}: "
                f"no allowed model or module for its routes ({tried})",
                hint="check tiers_allowed, providers.allow/deny and the tiers' models",
                key=True,
            )


@check(Kind.INTENTS, Kind.MODELS)
def default_routes(view: SetView) -> Iterator[Finding]:
    for intent in view.intents.values():
        route = intent.default_route
        if route is None or route not in intent.permitted_routes:
            continue  # auto, or AION301/AION303 already said it
        if not any(view.servable(intent, r) for r in intent.candidates if r in intent.permitted_routes):
            continue  # AION401 covers the whole intent
        if route not in intent.candidates:
            why = "it is not among the candidates"
        elif not view.servable(intent, route):
            why = "nothing can serve it"
        else:
            continue
        yield view.finding(
            "AION402",
            Kind.INTENTS,
            [intent.name, "default_route"],
            f"intent {intent.name!r} defaults to {route.value}, which it can never take: {why}",
        )


@check(Kind.INTENTS, Kind.MODELS)
def unreachable_candidates(view: SetView) -> Iterator[Finding]:
    for intent in view.intents.values():
        routes = [r for r in intent.candidates if r in intent.permitted_routes]
        if not any(view.servable(intent, r) for r in routes):
            continue  # AION401 covers the whole intent
        for i, route in enumerate(intent.candidates):
            if route in intent.permitted_routes and not view.servable(intent, route):
                yield view.finding(
                    "AION410",
                    Kind.INTENTS,
                    [intent.name, "candidates", i],
                    f"intent {intent.name!r} lists {route.value}, but nothing can serve it for this intent",
                )


@check(Kind.POLICIES, Kind.MODELS)
def provider_lists(view: SetView) -> Iterator[Finding]:
    assert view.models is not None
    providers = view.docs[Kind.POLICIES].data.get("providers", {})
    used = {ref.provider for tier in view.models.tiers.values() for ref in (*tier.local, *tier.cloud)}
    deny = set(providers.get("deny", []))
    for i, name in enumerate(providers.get("allow", [])):
        if name in deny:
            yield view.finding(
                "AION408",
                Kind.POLICIES,
                ["providers", "allow", i],
                f"provider {name!r} is both allowed and denied; deny wins, so this entry does nothing",
            )
        elif name not in used and view.models.provider(name) is not None:
            yield view.finding(
                "AION407",
                Kind.POLICIES,
                ["providers", "allow", i],
                f"provider {name!r} is allowed, but no model in models.yml uses it",
            )


@check(Kind.POLICIES, Kind.MODELS)
def unusable_models(view: SetView) -> Iterator[Finding]:
    assert view.models is not None
    for tier in view.models.tiers.values():
        for where, refs in (("local", tier.local), ("cloud", tier.cloud)):
            for i, ref in enumerate(refs):
                if view.models.provider(ref.provider) is None or view.policies.provider_allowed(ref.provider):
                    continue
                why = "denied" if ref.provider in view.policies.deny else "not in providers.allow"
                yield view.finding(
                    "AION412",
                    Kind.MODELS,
                    ["tiers", tier.name, where, i],
                    f"{ref} is never used: provider {ref.provider!r} is {why}",
                )


@check(Kind.INTENTS, Kind.MODELS)
def unused_tiers(view: SetView) -> Iterator[Finding]:
    assert view.models is not None
    if not view.intents:
        return
    if any(intent.tiers_allowed is None for intent in view.intents.values()):
        return  # some intent allows every tier
    allowed = {tier for intent in view.intents.values() for tier in intent.tiers_allowed or ()}
    for name in view.models.tiers:
        if name not in allowed:
            yield view.finding(
                "AION409",
                Kind.MODELS,
                ["tiers", name],
                f"no intent allows tier {name!r}; its models are never used",
                key=True,
            )


@check(Kind.INTENTS, Kind.POLICIES, Kind.MODELS)
def unused_fallback_routes(view: SetView) -> Iterator[Finding]:
    order = view.docs[Kind.POLICIES].data.get("routing", {}).get("fallback_order", [])
    for i, value in enumerate(order):
        route = Route(value)
        if view.intents and not any(view.takeable(intent, route) for intent in view.intents.values()):
            yield view.finding(
                "AION411",
                Kind.POLICIES,
                ["routing", "fallback_order", i],
                f"routing.fallback_order names {route.value}, which no intent can take",
            )


def _covers(earlier: str, later: str) -> bool:
    """Whether glob ``earlier`` matches every repository glob ``later`` matches. Conservative: only
    the cases that are certain (same pattern, a literal later pattern, a ** subtree) say yes."""
    if earlier in (later, "**"):
        return True
    if "*" not in later:
        return glob_regex(earlier, segments=True).fullmatch(later) is not None
    if earlier.endswith("/**") and "*" not in earlier[:-3]:
        return later.startswith(earlier[:-3] + "/")
    return False


# -- supply chain ----------------------------------------------------------------------------------


@check(Kind.POLICIES)
def trust_rules(view: SetView) -> Iterator[Finding]:
    rules_ = view.policies.trust.rules
    for i, rule in enumerate(rules_):
        if not rule.keys and not rule.identities:
            yield view.finding(
                "AION413",
                Kind.POLICIES,
                ["trust", "rules", i],
                f"trust rule {rule.match!r} has neither keys nor identities; "
                "every module it matches is refused",
            )
        for j, earlier in enumerate(rules_[:i]):
            if _covers(earlier.match, rule.match):
                yield view.finding(
                    "AION414",
                    Kind.POLICIES,
                    ["trust", "rules", i, "match"],
                    f"trust rule {rule.match!r} never applies: rule {j} ({earlier.match!r}) matches first",
                )
                break


@check(Kind.MODULES)
def modules_without_trust(view: SetView) -> Iterator[Finding]:
    assert view.modules is not None
    trust = view.policies.trust
    if view.modules and not trust.rules and not trust.unsafe_dev_registries:
        yield view.finding(
            "AION415",
            Kind.MODULES,
            ["modules"],
            "modules are listed, but policies.yml has no trust rules: installing them will be refused",
            key=True,
        )


@check(Kind.POLICIES, Kind.MODULES)
def untrusted_modules(view: SetView) -> Iterator[Finding]:
    trust = view.policies.trust
    if not trust.rules and not trust.unsafe_dev_registries:
        return  # AION415 says so once
    for j, spec in enumerate(view.docs[Kind.MODULES].data.get("modules", [])):
        repository = repository_of(spec["ref"])
        if repository is None:
            continue  # an image layout on disk: checked when installed
        registry = repository.split("/", 1)[0]
        if any(rule.matches(repository) for rule in trust.rules):
            continue
        if any(exception.registry == registry for exception in trust.unsafe_dev_registries):
            continue
        yield view.finding(
            "AION416",
            Kind.MODULES,
            ["modules", j, "ref"],
            f"module {spec['name']!r} comes from {repository!r}, which no trust rule covers; "
            "installing it will be refused",
        )


@check(Kind.MODELS)
def providers_without_endpoint(view: SetView) -> Iterator[Finding]:
    assert view.models is not None
    reported: set[str] = set()
    for tier in view.models.tiers.values():
        for where, refs in (("local", tier.local), ("cloud", tier.cloud)):
            for i, ref in enumerate(refs):
                provider = view.models.provider(ref.provider)
                if provider is None or provider.base_url is not None or ref.provider in reported:
                    continue
                reported.add(ref.provider)
                yield view.finding(
                    "AION417",
                    Kind.MODELS,
                    ["tiers", tier.name, where, i],
                    f"provider {ref.provider!r} has no base_url; its models cannot be called until "
                    f"providers.{ref.provider}.base_url is set",
                )


def _manifest_findings(view: SetView) -> Iterator[Finding]:
    modules = {spec["name"]: spec for spec in view.docs[Kind.MODULES].data.get("modules", [])}
    for manifest in view.manifests:
        name = manifest.data["metadata"]["name"]
        spec = modules.get(name)
        if spec is None:
            yield manifest.finding(
                "AION206",
                rules.RULES["AION206"].severity,
                ["metadata", "name"],
                f"module {name!r} of this manifest is not listed in modules.yml",
            )
        elif spec.get("runtime", "wasm") != manifest.data["runtime"]["type"]:
            yield manifest.finding(
                "AION207",
                rules.RULES["AION207"].severity,
                ["runtime", "type"],
                f"the manifest says runtime {manifest.data['runtime']['type']!r}, "
                f"modules.yml says {spec.get('runtime', 'wasm')!r}",
            )


@check(Kind.MODULES)
def manifests_against_modules(view: SetView) -> Iterator[Finding]:
    yield from _manifest_findings(view)


@check(Kind.INTENTS)
def manifest_intents(view: SetView) -> Iterator[Finding]:
    for manifest in view.manifests:
        for k, name in enumerate(manifest.data.get("intents", [])):
            if name not in view.intents:
                yield manifest.finding(
                    "AION202",
                    rules.RULES["AION202"].severity,
                    ["intents", k],
                    f"the manifest serves intent {name!r}, which intents.yml does not define",
                )


# -- what aiond allows -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class DaemonPaths:
    """Where aiond reads the files a config set names: its own settings, which no set can move."""

    config_dir: Path
    """--config: relative paths of a set (trust keys) resolve here, and keys may be inside it."""
    trust_keys_dir: Path | None = None
    """--trust-keys-dir: the one other directory trust keys may be in."""
    secrets_dir: Path | None = None
    """--secrets-dir, where aiond reads API keys; None when not known (nothing is compared with it)."""

    @property
    def key_roots(self) -> tuple[Path, ...]:
        return (self.config_dir,) if self.trust_keys_dir is None else (self.config_dir, self.trust_keys_dir)


def judge_for_daemon(
    findings: Sequence[Finding],
    snapshot: ConfigSnapshot | None,
    paths: DaemonPaths,
    *,
    models: Callable[[], Document | None],
) -> tuple[list[Finding], ConfigSnapshot | None]:
    """The findings of a set validated with ``base_dir=paths.config_dir``, as aiond judges them, and
    the snapshot aiond may activate (its trust confined to :attr:`DaemonPaths.key_roots`), or None.

    Validation cannot know aiond's settings, so it only notes what leaves the set (AION208) or names
    another secrets directory (AION209); here a key outside both key directories becomes an error and
    one inside ``--trust-keys-dir`` is fine, and secrets.directory is compared with ``--secrets-dir``.
    ``models`` parses models.yml again, called only when a finding must point into it. A set that is
    refused anyway keeps its findings as they are."""
    if snapshot is None:
        return list(findings), None
    keys = {
        json_pointer(["trust", "rules", i, "keys", k]): (rule.match, key)
        for i, rule in enumerate(snapshot.policies.trust.rules)
        for k, key in enumerate(rule.keys)
    }
    judged: list[Finding] = []
    for finding in findings:
        if finding.rule == "AION208" and finding.pointer in keys:
            refused = _key_refused(*keys[finding.pointer], paths)
            if refused is not None:
                judged.append(dataclasses.replace(finding, severity=Severity.ERROR, message=refused))
        elif finding.rule != "AION209" or paths.secrets_dir is None:
            judged.append(finding)
    if paths.secrets_dir is not None:
        judged.extend(_other_secrets_directory(snapshot, paths.secrets_dir, models))
    judged.sort(key=Finding.sort_key)
    if any(f.severity is Severity.ERROR for f in judged):
        return judged, None
    trust = dataclasses.replace(snapshot.policies.trust, key_roots=paths.key_roots)
    policies = dataclasses.replace(snapshot.policies, trust=trust)
    return judged, dataclasses.replace(snapshot, policies=policies)


def _key_refused(match: str, key: str, paths: DaemonPaths) -> str | None:
    """Why aiond refuses a key that is outside its config directory; None when it is in its key
    directory."""
    real = trust_key_path(key, paths.config_dir)
    if real is not None and paths.trust_keys_dir is not None and within(real, [paths.trust_keys_dir]):
        return None
    keys_dir = str(paths.trust_keys_dir) if paths.trust_keys_dir is not None else "not set"
    where = f", which resolves to {str(real)!r}" if real is not None and str(real) != key else ""
    return (
        f"trust rule {match!r} names key {key!r}{where}: aiond reads trust keys only inside its "
        f"config directory ({paths.config_dir}) and its --trust-keys-dir ({keys_dir}); refused"
    )


def _other_secrets_directory(
    snapshot: ConfigSnapshot, secrets_dir: Path, models: Callable[[], Document | None]
) -> Iterator[Finding]:
    named = snapshot.models.secrets_directory
    if named is None or os.path.realpath(named) == os.path.realpath(secrets_dir):
        return
    document = models()
    message = (
        f"secrets.directory is {named!r}, but aiond reads API keys only from its --secrets-dir, "
        f"{str(secrets_dir)!r}: the directory named here is not read"
    )
    hint = f"put the secret files in {secrets_dir}, or remove secrets.directory"
    rule = rules.RULES["AION209"]
    if document is None:  # models.yml changed since it was validated: point at the set
        yield Finding("", 0, 0, "/secrets/directory", rule.id, Severity.WARNING, message, hint)
    else:
        yield document.finding(rule.id, Severity.WARNING, ["secrets", "directory"], message, hint=hint)


__all__ = ["DaemonPaths", "SetView", "judge_for_daemon", "run"]
