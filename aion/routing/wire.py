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
    return tasks_pb2.Target(
        kind=_KINDS[target.kind],
        provider=target.provider,
        name=target.name,
        route=_ROUTES[target.route],
        tier=target.tier,
    )


def decision_message(decision: Decision, policy_version: int) -> tasks_pb2.Decision:
    message = tasks_pb2.Decision(
        route=_ROUTES[decision.route],
        tier=decision.tier,
        target=target_message(decision.target),
        fallback_chain=[target_message(t) for t in decision.fallback_chain],
        estimated_max_cost=common_pb2.UsdAmount(nano_usd=decision.estimated_max_nano),
        chosen_by=_CHOOSERS[decision.chosen_by],
        reason_codes=list(decision.reason_codes),
        reason=decision.reason,
        policy_version=policy_version,
    )
    if decision.prepare is not None:
        message.prepare.CopyFrom(target_message(decision.prepare))
    if decision.budget_nano is not None:
        message.budget.CopyFrom(common_pb2.UsdAmount(nano_usd=decision.budget_nano))
    return message


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


__all__ = ["decision_message", "explanation", "request_from", "target_message"]
