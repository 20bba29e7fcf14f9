"""The engine's types in and out of the aion.v1 contract: requests from RoutingHints, decisions and
refusals to Decision and ExplainRouteResponse. One mapping, used by the daemon and by aionctl's
offline ``route explain`` alike, so both print the same document."""

from __future__ import annotations

from aion.api.v1 import common_pb2, router_pb2, tasks_pb2
from aion.config.model import Route
from aion.routing.engine import Decision, Refusal, Request, Target, TargetKind

_ROUTES = {
    Route.LOCAL: common_pb2.ROUTE_LOCAL,
    Route.API: common_pb2.ROUTE_API,
    Route.HYBRID: common_pb2.ROUTE_HYBRID,
}
_FROM_ROUTE = {v: k for k, v in _ROUTES.items()}
_CHOOSERS = {
    "router": tasks_pb2.ROUTE_CHOOSER_ROUTER,
    "policy-override": tasks_pb2.ROUTE_CHOOSER_POLICY_OVERRIDE,
    "caller": tasks_pb2.ROUTE_CHOOSER_CALLER,
}
_KINDS = {TargetKind.MODEL: tasks_pb2.TARGET_KIND_MODEL, TargetKind.MODULE: tasks_pb2.TARGET_KIND_MODULE}


def route_of(route: common_pb2.Route.ValueType) -> Route | None:
    """The route a contract's Route value names; None for ROUTE_UNSPECIFIED."""
    return _FROM_ROUTE.get(route)


def request_from(intent: str, hints: tasks_pb2.RoutingHints, input_bytes: int) -> Request:
    """An engine request from the contract's hints."""
    return Request(
        intent=intent,
        input_bytes=input_bytes,
        budget_nano=hints.budget.nano_usd if hints.HasField("budget") else None,
        latency_target_ms=hints.latency_target_ms if hints.HasField("latency_target_ms") else None,
        route_override=_FROM_ROUTE.get(hints.route_override),
    )


def target_message(target: Target) -> tasks_pb2.Target:
    message = tasks_pb2.Target()
    fill_target(message, target)
    return message


def fill_target(message: tasks_pb2.Target, target: Target) -> None:
    """Set ``message`` (in place, as the fill_ functions do: building a sub-message and copying it
    into its parent costs twice as much, and every answered task is converted)."""
    message.kind = _KINDS[target.kind]
    message.provider = target.provider
    message.name = target.name
    message.route = _ROUTES[target.route]
    message.tier = target.tier


def decision_message(decision: Decision, policy_version: int) -> tasks_pb2.Decision:
    message = tasks_pb2.Decision()
    fill_decision(message, decision, policy_version)
    return message


def fill_decision(message: tasks_pb2.Decision, decision: Decision, policy_version: int) -> None:
    message.route = _ROUTES[decision.route]
    message.tier = decision.tier
    fill_target(message.target, decision.target)
    for target in decision.fallback_chain:
        fill_target(message.fallback_chain.add(), target)
    message.estimated_max_cost.nano_usd = decision.estimated_max_nano
    message.chosen_by = _CHOOSERS[decision.chosen_by]
    message.reason_codes.extend(decision.reason_codes)
    message.reason = decision.reason
    message.policy_version = policy_version
    if decision.prepare is not None:
        fill_target(message.prepare, decision.prepare)
    if decision.budget_nano is not None:
        message.budget.nano_usd = decision.budget_nano


def explanation(outcome: Decision | Refusal, policy_version: int) -> router_pb2.ExplainRouteResponse:
    if isinstance(outcome, Decision):
        return router_pb2.ExplainRouteResponse(decision=decision_message(outcome, policy_version))
    return router_pb2.ExplainRouteResponse(
        refused=True,
        refusal_reason=f"{outcome.code}: {outcome.message}",
        rejected=[
            router_pb2.RejectedTarget(target=target_message(r.target), reason_code=r.code, reason=r.code)
            for r in outcome.rejected
        ],
    )


__all__ = [
    "decision_message",
    "explanation",
    "fill_decision",
    "fill_target",
    "request_from",
    "route_of",
    "target_message",
]
