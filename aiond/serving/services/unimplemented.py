"""Placeholder handlers for contract services this aiond version does not serve yet.

Every method answers UNIMPLEMENTED with a message that names it, instead of gRPC's generic "Method not
found!", and the service still appears in reflection so clients can discover the whole contract.
"""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor


def _handler(
    full_method: str, client_streaming: bool, server_streaming: bool
) -> grpc.RpcMethodHandler[Any, Any]:
    message = f"{full_method} is not available in this aiond version"

    async def refuse(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, message)

    # Requests are not decoded: the deserializer keeps the raw bytes, and nothing is ever sent back.
    factory = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }[(client_streaming, server_streaming)]
    return factory(refuse)


def add_to_server(server: grpc.aio.Server, service: ServiceDescriptor) -> str:
    handlers = {
        method.name: _handler(
            f"{service.name}.{method.name}", method.client_streaming, method.server_streaming
        )
        for method in service.methods
    }
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(service.full_name, handlers)])
    return service.full_name
