"""The base of aiond's gRPC interceptors (auth, call metrics): each wraps a method's handler once.

grpc.aio asks every server interceptor for the handler on every call. Rebuilding the wrapped handler
each time (a new handler object, a new closure, an ``inspect`` of the behaviour) is work done per call
for a result that only depends on the method, so :class:`WrapOnce` keeps the wrapped handler of each
method and hands it out again while grpc's own handler for that method is the same object.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias

import grpc

# grpc's handler types are generic only in their stubs, so this alias exists for the type checker alone.
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"

_KINDS = (
    ("unary_unary", grpc.unary_unary_rpc_method_handler),
    ("unary_stream", grpc.unary_stream_rpc_method_handler),
    ("stream_unary", grpc.stream_unary_rpc_method_handler),
    ("stream_stream", grpc.stream_stream_rpc_method_handler),
)


def with_behavior(handler: Handler, wrap: Callable[[Any], Any]) -> Handler:
    """``handler`` with its behaviour replaced by ``wrap(behaviour)``, of the same kind and with the
    same (de)serializers."""
    for kind, factory in _KINDS:
        behavior = getattr(handler, kind)
        if behavior:
            return factory(
                wrap(behavior),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
    return handler


class WrapOnce(grpc.aio.ServerInterceptor):
    """An interceptor whose :meth:`wrap` runs once per served method, not once per call."""

    def __init__(self) -> None:
        self._wrapped: dict[str, tuple[Handler, Handler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method: str = handler_call_details.method
        known = self._wrapped.get(method)
        if known is not None and known[0] is handler:
            return known[1]
        wrapped = self.wrap(handler, method)
        self._wrapped[method] = (handler, wrapped)  # bounded: only served methods get here
        return wrapped

    def wrap(self, handler: Handler, method: str) -> Handler:
        raise NotImplementedError


__all__ = ["Handler", "WrapOnce", "with_behavior"]
