"""The decision engine. Read :func:`compile_table` (once per config snapshot), then
:meth:`RoutingTable.decide` (once per task).

**Hard rules** (a decision never breaks them, whatever the request, the live state or the fallback):

- A local-only intent, by its privacy, by ``privacy.local_only_intents``, or switched to local-only at
  runtime, gets only targets on this host: local models, and modules. No fallback leaves the host.
  A runtime mode can make an intent stricter, never looser than its config.
- An intent whose privacy is ``hybrid`` reaches a cloud model only through the hybrid route, after its
  local step.
- Denied providers, and providers outside an allow list, are never chosen.
- The worst-case cost of the whole fallback chain, every retry included, fits the task's budget, and
  the budget never exceeds ``budget.hard_cap_usd``. A target that does not fit is left out.

**Soft rules** order what the hard rules leave: the default route, then the fallback order (the
intent's, else the policies'); routes whose latency target is above the caller's go last; within a
route, lower tiers first, then targets whose measured latency is within the route's p95 target
before those above it, then the order of models.yml. Open breakers are skipped; a half-open one keeps
its place, so real traffic probes it (the executor lets only ``half_open_probes`` calls through at
once, and the rest move on to the next target).

**Worst-case cost** of one attempt on a model: every input byte counted as a token (no tokenizer
encodes a byte in less than one token) plus a template allowance, at the input price, plus the
model's ``max_output_tokens`` at the output price; times ``retries.max_attempts``. Local models cost
nothing. Money is integer nano-dollars, so sums are exact.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
from collections.abc import Mapping, Sequence
from decimal import Decimal
from types import MappingProxyType

from aion.config.model import (
    ALL_ROUTES,
    ConfigSnapshot,
    Intent,
    Locality,
    ModelInfo,
    Privacy,
    Route,
)

NANO_PER_USD = 1_000_000_000
TEMPLATE_TOKENS = 64
"""Tokens allowed for the chat template around the input, in the worst-case estimate."""
MAX_CHAIN = 8
"""Most targets in a decision (the first and its fallbacks)."""

HYBRID_DEFINITION = (
    "hybrid: a local step, then a completion. The local step runs on this host: a module that serves the "
    "intent on the hybrid route (when one is installed and can run), else a local model; it prepares or "
    "redacts the input. The completion is "
    "a cloud model when the intent's privacy lets data leave the host after the local step (privacy "
    "hybrid or allow-api), else a local model. Without a local step, hybrid is not available."
)


class BreakerState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


class TargetKind(enum.StrEnum):
    MODEL = "model"
    MODULE = "module"


@dataclasses.dataclass(frozen=True, slots=True)
class Target:
    """Something that can run a step of a task: a model ("provider:model") or an installed module."""

    kind: TargetKind
    provider: str
    """The provider's name for a model; empty for a module."""
    name: str
    """The model's name, or the module's."""
    route: Route
    tier: str
    locality: Locality
    key: str
    """"provider:model" for a model, "module:NAME" for a module: the key of its breaker and latency."""


@dataclasses.dataclass(frozen=True, slots=True)
class Request:
    intent: str
    input_bytes: int = 0
    budget_nano: int | None = None
    """The caller's budget for the task; None means the intent's, else the policy default."""
    latency_target_ms: int | None = None
    route_override: Route | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class LiveState:
    """What the router knows at decision time that is not in the config."""

    breakers: Mapping[str, BreakerState] = dataclasses.field(default_factory=dict)
    """By provider name (the whole provider) or "provider:model"; absent means closed."""
    latency_ms: Mapping[str, float] = dataclasses.field(default_factory=dict)
    """Measured p95 by "provider:model"; absent means unknown."""
    intent_modes: Mapping[str, Privacy] = dataclasses.field(default_factory=dict)
    """Runtime privacy switches by intent (the runbook's incident lever)."""
    modules: frozenset[str] = frozenset()
    """Installed modules that can run now; a module is a target (of the local route, or the hybrid
    local step) only when it is here."""


@dataclasses.dataclass(frozen=True, slots=True)
class Step:
    target: Target
    worst_nano: int
    """Worst-case cost of this step, retries included."""


@dataclasses.dataclass(frozen=True, slots=True)
class Decision:
    route: Route
    tier: str
    chain: tuple[Step, ...]
    """The first target to try, then its fallbacks, in order."""
    prepare: Target | None
    """The local step of a hybrid route (None for local and api)."""
    estimated_max_nano: int
    """Worst-case cost of the whole chain: what admission reserves against the budget."""
    budget_nano: int | None
    chosen_by: str
    """"router", "policy-override" (a runtime intent mode) or "caller" (a route override)."""
    reason_codes: tuple[str, ...]

    @property
    def target(self) -> Target:
        return self.chain[0].target

    @property
    def fallback_chain(self) -> tuple[Target, ...]:
        return tuple(step.target for step in self.chain[1:])

    @property
    def reason(self) -> str:
        return _explain(self.reason_codes)


@dataclasses.dataclass(frozen=True, slots=True)
class Rejected:
    target: Target
    code: str


@dataclasses.dataclass(frozen=True, slots=True)
class Refusal:
    """No route satisfies the hard rules: a clear refusal, never a guess."""

    code: str
    message: str
    rejected: tuple[Rejected, ...] = ()


# -- compiled form -------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class _Candidate:
    target: Target
    tier_rank: int
    order: int
    in_nano_per_mtok: int
    out_nano_per_mtok: int
    context_window: int
    max_output_tokens: int
    call_nano: int = 0
    """A module's cost per call (models cost by the token)."""
    over_budget: str = ""
    """The reason codes, made once at compile time rather than on every decision."""
    breaker_open: str = ""
    unavailable: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "over_budget", f"OVER_BUDGET:{self.target.key}")
        object.__setattr__(self, "breaker_open", f"BREAKER_OPEN:{self.target.key}")
        object.__setattr__(self, "unavailable", f"MODULE_UNAVAILABLE:{self.target.key}")


@dataclasses.dataclass(frozen=True, slots=True)
class _Plan:
    """One intent under one effective privacy: its permitted routes and their candidates."""

    routes: tuple[Route, ...]
    """Permitted routes in soft order: default route first, then the fallback order."""
    candidates: Mapping[Route, tuple[_Candidate, ...]]
    prepare: tuple[_Candidate, ...]
    """Hybrid local steps: modules first, then local models."""
    statically_rejected: tuple[Rejected, ...]
    """Targets the config itself rules out (denied provider), for explanations."""


@dataclasses.dataclass(frozen=True, slots=True)
class _IntentEntry:
    intent: Intent
    plans: Mapping[Privacy, _Plan]
    budget_nano: int | None


def _nano(value: Decimal | None) -> int | None:
    return None if value is None else int(value * NANO_PER_USD)


def _per_mtok(value: Decimal) -> int:
    return int(value * NANO_PER_USD)


def estimate_input_tokens(input_bytes: int) -> int:
    """A typical token count for ``input_bytes`` of text (about 4 bytes a token): for context windows."""
    return (input_bytes + 3) // 4 + TEMPLATE_TOKENS


class RoutingTable:
    """One config snapshot, compiled for fast decisions. Immutable; safe to share across tasks."""

    def __init__(self, snapshot: ConfigSnapshot, entries: Mapping[str, _IntentEntry]) -> None:
        self.snapshot = snapshot
        self._entries = entries
        policies = snapshot.policies
        self._cap_nano = _nano(policies.budget.hard_cap_usd)
        self._default_nano = _nano(policies.budget.default_usd)
        self._attempts = max(1, policies.retries.max_attempts)
        self._p95 = policies.p95_ms
        self._max_input = policies.limits.max_input_bytes

    def intents(self, live: LiveState) -> list[tuple[Intent, Privacy, tuple[Route, ...]]]:
        """Each intent, by name, with its effective privacy under ``live`` and the routes that
        privacy permits among its candidates, in the order the router tries them."""
        found = []
        for name in sorted(self._entries):
            entry = self._entries[name]
            privacy, _chosen_by = self._privacy(entry.intent, live, [])
            found.append((entry.intent, privacy, tuple(entry.plans[privacy].routes)))
        return found

    def decide(self, request: Request, live: LiveState, *, explain: bool = False) -> Decision | Refusal:
        """The decision for ``request`` under ``live``; with ``explain``, a refusal lists every target
        that was ruled out and why."""
        entry = self._entries.get(request.intent)
        if entry is None:
            return Refusal("UNKNOWN_INTENT", f"intent {request.intent!r} is not defined in the active policy")
        if request.input_bytes > self._max_input:
            return Refusal(
                "INPUT_TOO_LARGE",
                f"the input is {request.input_bytes} bytes; limits.max_input_bytes is {self._max_input}",
            )
        intent = entry.intent
        codes: list[str] = []
        privacy, chosen_by = self._privacy(intent, live, codes)
        plan = entry.plans[privacy]
        budget = self._budget(request, entry, codes)
        routes = self._routes(request, intent, plan, privacy, codes)
        if isinstance(routes, Refusal):
            return routes
        if request.route_override is not None:
            chosen_by = "caller"
        rejected: list[Rejected] | None = list(plan.statically_rejected) if explain else None
        chain, prepare, spent = self._chain(
            routes, plan=plan, live=live, request=request, budget=budget, codes=codes, rejected=rejected
        )
        if not chain:
            return Refusal(
                self._refusal_code(codes),
                f"no target for intent {intent.name!r} satisfies the hard rules "
                f"({', '.join(codes) or 'none'})",
                tuple(rejected or ()),
            )
        first = chain[0].target
        if intent.default_route is not None and first.route is intent.default_route:
            codes.insert(0, f"ROUTE_DEFAULT:{first.route.value}")
        elif chosen_by == "router":
            codes.insert(0, f"ROUTE_ORDER:{first.route.value}")
        return Decision(
            route=first.route,
            tier=first.tier,
            chain=tuple(chain),
            prepare=prepare,
            estimated_max_nano=spent,
            budget_nano=budget,
            chosen_by=chosen_by,
            reason_codes=tuple(codes),
        )

    def _routes(
        self, request: Request, intent: Intent, plan: _Plan, privacy: Privacy, codes: list[str]
    ) -> Sequence[Route] | Refusal:
        routes: Sequence[Route] = plan.routes
        if request.route_override is not None:
            if request.route_override not in routes:
                return Refusal(
                    "ROUTE_NOT_PERMITTED",
                    f"route {request.route_override} is not permitted for intent {intent.name!r} "
                    f"(permitted: {', '.join(r.value for r in routes) or 'none'})",
                )
            codes.append(f"ROUTE_OVERRIDE:{request.route_override.value}")
            return (request.route_override,)
        if not routes:
            return Refusal(
                "NO_PERMITTED_ROUTE",
                f"intent {intent.name!r} has no route its privacy ({privacy}) permits among its candidates",
            )
        if request.latency_target_ms is not None:
            slow = [r for r in routes if self._p95[r] > request.latency_target_ms]
            if slow:
                codes.extend(f"LATENCY_TARGET_MISSED:{r.value}" for r in slow)
                routes = [r for r in routes if r not in slow] + slow
        return routes

    def _chain(
        self,
        routes: Sequence[Route],
        *,
        plan: _Plan,
        live: LiveState,
        request: Request,
        budget: int | None,
        codes: list[str],
        rejected: list[Rejected] | None,
    ) -> tuple[list[Step], Target | None, int]:
        """The targets to try in order, each within what is left of the budget; the hybrid local step
        of the first; the chain's worst-case cost."""
        chain: list[Step] = []
        spent = 0
        prepare: Target | None = None
        worst_tokens = self._attempts * (request.input_bytes + TEMPLATE_TOKENS)
        needed_tokens = estimate_input_tokens(request.input_bytes)
        seen: set[str] = set()
        for route in routes:
            local_step: Target | None = None
            if route is Route.HYBRID:
                local_step = self._local_step(plan, live, needed_tokens, codes)
                if local_step is None:
                    codes.append("HYBRID_NO_LOCAL_STEP")
                    continue
            for candidate in self._usable(plan.candidates[route], live, needed_tokens, codes, rejected):
                if len(chain) >= MAX_CHAIN:
                    break
                if candidate.target.key in seen:
                    continue  # tried on an earlier route: what failed there fails here too
                per_mtok = (
                    worst_tokens * candidate.in_nano_per_mtok
                    + self._attempts * candidate.max_output_tokens * candidate.out_nano_per_mtok
                )
                worst = -(-per_mtok // 1_000_000) + self._attempts * candidate.call_nano  # rounded up
                if budget is not None and spent + worst > budget:
                    codes.append(candidate.over_budget)
                    if rejected is not None:
                        rejected.append(Rejected(candidate.target, "OVER_BUDGET"))
                    continue
                if not chain:
                    prepare = local_step
                spent += worst
                seen.add(candidate.target.key)
                chain.append(Step(candidate.target, worst))
        return chain, prepare, spent

    def _usable(
        self,
        candidates: Sequence[_Candidate],
        live: LiveState,
        needed_tokens: int,
        codes: list[str],
        rejected: list[Rejected] | None,
    ) -> list[_Candidate]:
        """A route's candidates without open breakers, modules that cannot run, or too small a context,
        in soft order."""
        # Modules come first in a route's candidates (compile_table puts them there), so one look
        # at the first says whether there are any to check.
        if candidates and candidates[0].target.kind is TargetKind.MODULE:
            for c in candidates:
                if c.target.kind is TargetKind.MODULE and c.target.name not in live.modules:
                    codes.append(c.unavailable)
                    if rejected is not None:
                        rejected.append(Rejected(c.target, "MODULE_UNAVAILABLE"))
            candidates = [
                c
                for c in candidates
                if c.target.kind is not TargetKind.MODULE or c.target.name in live.modules
            ]
        if not live.breakers and not live.latency_ms:  # nothing live to reorder by: compiled order holds
            fitting = [c for c in candidates if needed_tokens + c.max_output_tokens <= c.context_window]
            if rejected is not None:
                rejected.extend(
                    Rejected(c.target, "CONTEXT_TOO_SMALL") for c in candidates if c not in fitting
                )
            return fitting
        usable: list[tuple[tuple[int, bool, int], _Candidate]] = []
        for candidate in candidates:
            target = candidate.target
            if self._breaker(live, target) is BreakerState.OPEN:
                codes.append(candidate.breaker_open)
                if rejected is not None:
                    rejected.append(Rejected(target, "BREAKER_OPEN"))
                continue
            if needed_tokens + candidate.max_output_tokens > candidate.context_window:
                if rejected is not None:
                    rejected.append(Rejected(target, "CONTEXT_TOO_SMALL"))
                continue
            slow = live.latency_ms.get(target.key, 0.0) > self._p95[target.route]
            usable.append(((candidate.tier_rank, slow, candidate.order), candidate))
        usable.sort(key=_first)
        return [c for _rank, c in usable]

    # -- pieces ------------------------------------------------------------------------------------------

    @staticmethod
    def _privacy(intent: Intent, live: LiveState, codes: list[str]) -> tuple[Privacy, str]:
        """The effective privacy: the config's, made stricter (never looser) by a runtime mode."""
        configured = Privacy.LOCAL_ONLY if intent.local_only else intent.privacy
        mode = live.intent_modes.get(intent.name)
        if configured is Privacy.LOCAL_ONLY:
            codes.append("PRIVACY_LOCAL_ONLY")
            return Privacy.LOCAL_ONLY, "router"
        if mode is None or mode is configured:
            if configured is Privacy.HYBRID:
                codes.append("PRIVACY_HYBRID")
            return configured, "router"
        if mode is Privacy.LOCAL_ONLY or (mode is Privacy.HYBRID and configured is Privacy.ALLOW_API):
            codes.append(f"MODE_OVERRIDE:{mode.value}")
            return mode, "policy-override"
        # A looser mode than the config (allow-api on a hybrid intent) is ignored: config is the ceiling.
        codes.append(f"MODE_IGNORED:{mode.value}")
        return configured, "router"

    def _budget(self, request: Request, entry: _IntentEntry, codes: list[str]) -> int | None:
        budget = request.budget_nano
        if budget is None:
            budget = entry.budget_nano if entry.budget_nano is not None else self._default_nano
        if self._cap_nano is not None and (budget is None or budget > self._cap_nano):
            if request.budget_nano is not None and request.budget_nano > self._cap_nano:
                codes.append("BUDGET_CAPPED")
            budget = self._cap_nano
        return budget

    @staticmethod
    def _breaker(live: LiveState, target: Target) -> BreakerState:
        if not live.breakers:
            return BreakerState.CLOSED
        by_model = live.breakers.get(target.key)
        by_provider = live.breakers.get(target.provider) if target.provider else None
        states = (by_model, by_provider)
        if BreakerState.OPEN in states:
            return BreakerState.OPEN
        if BreakerState.HALF_OPEN in states:
            return BreakerState.HALF_OPEN
        return BreakerState.CLOSED

    def _local_step(
        self, plan: _Plan, live: LiveState, needed_tokens: int, codes: list[str]
    ) -> Target | None:
        for candidate in plan.prepare:
            if candidate.target.kind is TargetKind.MODULE and candidate.target.name not in live.modules:
                if candidate.unavailable not in codes:
                    codes.append(candidate.unavailable)
                continue
            if self._breaker(live, candidate.target) is BreakerState.OPEN:
                continue
            if candidate.target.kind is TargetKind.MODEL and (
                needed_tokens + candidate.max_output_tokens > candidate.context_window
            ):
                continue
            return candidate.target
        return None

    @staticmethod
    def _refusal_code(codes: Sequence[str]) -> str:
        for prefix in ("OVER_BUDGET", "BREAKER_OPEN", "HYBRID_NO_LOCAL_STEP"):
            if any(code.startswith(prefix) for code in codes):
                return prefix
        return "NO_TARGET"


def _first(item: tuple[tuple[int, bool, int], _Candidate]) -> tuple[int, bool, int]:
    return item[0]


# -- compiling -----------------------------------------------------------------------------------------


def compile_table(snapshot: ConfigSnapshot) -> RoutingTable:
    """Precompute, for every intent and every privacy it can run under, the ordered candidates."""
    tier_rank = {name: i for i, name in enumerate(snapshot.models.tiers)}
    # Intents that differ only by name share their plans: a large set has few distinct shapes.
    plans: dict[tuple[object, ...], _Plan] = {}
    entries = {}
    for name, intent in snapshot.intents.items():
        serving = tuple(m.name for m in snapshot.modules.values() if m.may_serve(name, Route.HYBRID))
        whole = tuple(m.name for m in snapshot.modules.values() if m.may_serve(name, Route.LOCAL))
        shape = (
            intent.candidates,
            intent.default_route,
            intent.fallback_order,
            intent.tiers_allowed,
            serving,
            whole,
        )
        by_privacy = {}
        for privacy in Privacy:
            key = (*shape, privacy)
            if key not in plans:
                plans[key] = _plan(snapshot, intent, privacy, tier_rank, serving, whole)
            by_privacy[privacy] = plans[key]
        entries[name] = _IntentEntry(intent, MappingProxyType(by_privacy), _nano(intent.budget_usd))
    return RoutingTable(snapshot, MappingProxyType(entries))


def _plan(  # noqa: PLR0917 - one intent's facts, as compile_table has them
    snapshot: ConfigSnapshot,
    intent: Intent,
    privacy: Privacy,
    tier_rank: Mapping[str, int],
    serving: tuple[str, ...],
    whole: tuple[str, ...] = (),
) -> _Plan:
    policies = snapshot.policies
    permitted = {
        Privacy.LOCAL_ONLY: (Route.LOCAL, Route.HYBRID),
        Privacy.HYBRID: (Route.LOCAL, Route.HYBRID),
        Privacy.ALLOW_API: ALL_ROUTES,
    }[privacy]
    allowed_routes = [r for r in intent.candidates if r in permitted]
    order: list[Route] = []
    if intent.default_route in allowed_routes:
        order.append(intent.default_route)
    for route in (*(intent.fallback_order or policies.fallback_order), *ALL_ROUTES):
        if route in allowed_routes and route not in order:
            order.append(route)

    tiers = [
        t
        for t in snapshot.models.tiers.values()
        if intent.tiers_allowed is None or t.name in intent.tiers_allowed
    ]
    rejected: list[Rejected] = []
    local: list[_Candidate] = []
    cloud: list[_Candidate] = []
    position = 0
    for tier in tiers:
        for locality, refs in ((Locality.LOCAL, tier.local), (Locality.CLOUD, tier.cloud)):
            for ref in refs:
                info = snapshot.models.models.get(str(ref))
                provider = snapshot.models.provider(ref.provider)
                # A model's locality is its provider's when the provider is known, else its tier list's.
                where = provider.locality if provider is not None else locality
                target = Target(
                    TargetKind.MODEL, ref.provider, ref.model, Route.LOCAL, tier.name, where, str(ref)
                )
                if not policies.provider_allowed(ref.provider):
                    rejected.append(Rejected(target, "PROVIDER_DENIED"))
                    continue
                if info is None:
                    continue
                position += 1
                (local if where is Locality.LOCAL else cloud).append(
                    _candidate(target, info, tier_rank[tier.name], position)
                )

    local.sort(key=lambda c: (c.tier_rank, c.order))
    cloud.sort(key=lambda c: (c.tier_rank, c.order))

    def on(route: Route, items: Sequence[_Candidate]) -> tuple[_Candidate, ...]:
        return tuple(dataclasses.replace(c, target=dataclasses.replace(c.target, route=route)) for c in items)

    def module(name: str, route: Route, order: int) -> _Candidate:
        spec = snapshot.modules[name]
        target = Target(TargetKind.MODULE, "", name, route, "", Locality.LOCAL, f"module:{name}")
        return _Candidate(target, -1, order, 0, 0, 1 << 62, 0, _nano(spec.cost_usd_per_call) or 0)

    candidates: dict[Route, tuple[_Candidate, ...]] = dict.fromkeys(ALL_ROUTES, ())
    if Route.LOCAL in allowed_routes:
        # Modules first: one that serves the intent was installed to do exactly this job, on this host.
        modules_local = tuple(module(name, Route.LOCAL, i) for i, name in enumerate(whole))
        candidates[Route.LOCAL] = (*modules_local, *on(Route.LOCAL, local))
    if Route.API in allowed_routes:
        candidates[Route.API] = on(Route.API, cloud)
    if Route.HYBRID in allowed_routes:
        candidates[Route.HYBRID] = on(Route.HYBRID, local if privacy is Privacy.LOCAL_ONLY else cloud)
    modules = [module(name, Route.HYBRID, i) for i, name in enumerate(serving)]
    prepare = (*modules, *on(Route.HYBRID, local))
    return _Plan(tuple(order), MappingProxyType(candidates), prepare, tuple(rejected))


def _candidate(target: Target, info: ModelInfo, tier_rank: int, order: int) -> _Candidate:
    local = target.locality is Locality.LOCAL
    return _Candidate(
        target=target,
        tier_rank=tier_rank,
        order=order,
        in_nano_per_mtok=0 if local else _per_mtok(info.input_usd_per_mtok),
        out_nano_per_mtok=0 if local else _per_mtok(info.output_usd_per_mtok),
        context_window=info.context_window,
        max_output_tokens=info.max_output_tokens,
    )


_TEXT = {
    "PRIVACY_LOCAL_ONLY": "the intent is local-only: only targets on this host",
    "PRIVACY_HYBRID": "the intent's data leaves the host only after a local step",
    "BUDGET_CAPPED": "the requested budget was above the hard cap and was lowered to it",
    "HYBRID_NO_LOCAL_STEP": "hybrid needs a local step and none is available",
}


@functools.lru_cache(maxsize=4096)
def _explain(codes: tuple[str, ...]) -> str:
    """:func:`explain_codes`, remembered: the same few code sequences come back task after task."""
    return explain_codes(codes)


def explain_codes(codes: Sequence[str]) -> str:
    """The reason codes as one sentence for a person."""
    parts = []
    for code in codes:
        head, _, arg = code.partition(":")
        text = _TEXT.get(head)
        if text is None:
            text = {
                "ROUTE_DEFAULT": f"route {arg} is the intent's default",
                "ROUTE_ORDER": f"route {arg} is first in the fallback order",
                "ROUTE_OVERRIDE": f"the caller asked for route {arg}",
                "MODE_OVERRIDE": f"the intent is switched to {arg} at runtime",
                "MODE_IGNORED": f"runtime mode {arg} is looser than the config and was ignored",
                "BREAKER_OPEN": f"{arg} is skipped: its breaker is open",
                "OVER_BUDGET": f"{arg} is skipped: its worst case does not fit the budget",
                "MODULE_UNAVAILABLE": f"{arg} is skipped: it is not installed, or cannot run",
                "LATENCY_TARGET_MISSED": f"route {arg} is tried last: its p95 target is above the caller's",
            }.get(head, code)
        parts.append(text)
    return "; ".join(parts)


__all__ = [
    "HYBRID_DEFINITION",
    "MAX_CHAIN",
    "NANO_PER_USD",
    "BreakerState",
    "Decision",
    "LiveState",
    "Refusal",
    "Rejected",
    "Request",
    "RoutingTable",
    "Step",
    "Target",
    "TargetKind",
    "compile_table",
    "estimate_input_tokens",
    "explain_codes",
]
