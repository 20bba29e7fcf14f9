"""grpc.health.v1, served by aiond.

Written here rather than taken from grpcio-health-checking because that servicer's Watch streams never
end: every open watcher (a load balancer, a sidecar) would hold aiond's shutdown for the whole grace
period. Here watchers see NOT_SERVING when the daemon starts draining, and their streams end cleanly
when the daemon stops taking calls. Check and Watch otherwise behave as the health protocol specifies.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

SERVICE_NAME = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN


class HealthServicer(health_pb2_grpc.HealthServicer):  # type: ignore[misc]  # grpc_health ships no types
    def __init__(self) -> None:
        # "" is the server as a whole; it starts NOT_SERVING until the daemon says it is ready.
        self._status: dict[str, health_pb2.HealthCheckResponse.ServingStatus.ValueType] = {"": NOT_SERVING}
        self._changed = asyncio.Condition()
        self._draining = False
        self._closed = False

    async def set(self, service: str, status: health_pb2.HealthCheckResponse.ServingStatus.ValueType) -> None:
        """Set a service's status; ignored once draining, so nothing can flip back to SERVING."""
        async with self._changed:
            if self._draining:
                return
            self._status[service] = status
            self._changed.notify_all()

    async def drain(self) -> None:
        """Every service NOT_SERVING from now on; watchers are told."""
        async with self._changed:
            self._draining = True
            for service in self._status:
                self._status[service] = NOT_SERVING
            self._changed.notify_all()

    async def close(self) -> None:
        """End every Watch stream (after its last status was sent)."""
        async with self._changed:
            self._draining = True
            self._closed = True
            self._changed.notify_all()

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> health_pb2.HealthCheckResponse:
        status = self._status.get(request.service)
        if status is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        return health_pb2.HealthCheckResponse(status=status)

    async def Watch(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> None:
        last: int | None = None
        while True:
            async with self._changed:
                while (
                    status := self._status.get(request.service, SERVICE_UNKNOWN)
                ) == last and not self._closed:
                    await self._changed.wait()
                closed = self._closed
            if status != last:
                # Written outside the lock: a slow reader must not block status changes.
                await context.write(health_pb2.HealthCheckResponse(status=status))
                last = status
            if closed:
                return


def add_to_server(server: grpc.aio.Server, servicer: HealthServicer) -> str:
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    name: str = SERVICE_NAME
    return name
