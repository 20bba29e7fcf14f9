"""RouterService: what the router would decide for a would-be task, and why. Nothing is run, reserved
or recorded; the decision is made exactly as for a real task, under the active policy version and the
live provider state."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

from aion.api.v1 import router_pb2, router_pb2_grpc
from aion.errors import ConflictError, UsageError
from aion.routing import LiveState
from aion.routing.wire import explanation, request_from
from aiond.policy.store import PolicyStore

SERVICE_NAME = router_pb2.DESCRIPTOR.services_by_name["RouterService"].full_name


class RouterServicer(router_pb2_grpc.RouterServiceServicer):
    def __init__(self, store: PolicyStore, live: Callable[[], LiveState]) -> None:
        self._store = store
        self._live = live

    async def ExplainRoute(
        self, request: router_pb2.ExplainRouteRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> router_pb2.ExplainRouteResponse:
        active = self._store.active
        if active is None:
            raise ConflictError("no policy version is active")
        if not request.intent:
            raise UsageError("intent is required")
        engine_request = request_from(request.intent, request.hints, request.input_size_bytes)
        outcome = active.routing.decide(engine_request, self._live(), explain=True)
        return explanation(outcome, active.version.number)


def add_to_server(server: grpc.aio.Server, store: PolicyStore, live: Callable[[], LiveState]) -> str:
    router_pb2_grpc.add_RouterServiceServicer_to_server(RouterServicer(store, live), server)
    return SERVICE_NAME
