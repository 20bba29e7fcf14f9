"""AdminService: daemon status now; breakers and intent modes arrive with the router (UNIMPLEMENTED)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf import timestamp_pb2

from aion.api.v1 import admin_pb2, admin_pb2_grpc

SERVICE_NAME = admin_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name


@dataclasses.dataclass(frozen=True, slots=True)
class DaemonStatus:
    """What the daemon reports about itself; the server fills it in on every call."""

    version: str
    phase: str
    """One of "starting", "serving", "draining"."""
    started_at: dt.datetime
    pid: int
    config_dir: str
    state_dir: str
    grpc_address: str
    http_address: str
    inflight_rpcs: int
    active_policy_version: int = 0


_STATES = {
    "starting": admin_pb2.SERVING_STATE_STARTING,
    "serving": admin_pb2.SERVING_STATE_SERVING,
    "draining": admin_pb2.SERVING_STATE_DRAINING,
}


class AdminServicer(admin_pb2_grpc.AdminServiceServicer):
    def __init__(self, status: Callable[[], DaemonStatus]) -> None:
        self._status = status

    async def GetStatus(
        self, request: admin_pb2.GetStatusRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> admin_pb2.GetStatusResponse:
        s = self._status()
        started = timestamp_pb2.Timestamp()
        started.FromDatetime(s.started_at)
        return admin_pb2.GetStatusResponse(
            version=s.version,
            state=_STATES.get(s.phase, admin_pb2.SERVING_STATE_UNSPECIFIED),
            started_at=started,
            pid=s.pid,
            config_dir=s.config_dir,
            state_dir=s.state_dir,
            grpc_address=s.grpc_address,
            http_address=s.http_address,
            inflight_rpcs=s.inflight_rpcs,
            active_policy_version=s.active_policy_version,
        )

    async def _not_yet(self, context: grpc.aio.ServicerContext[Any, Any], what: str) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{what} is not available in this aiond version")

    async def ListBreakers(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        return await self._not_yet(context, "AdminService.ListBreakers")

    async def SetBreakerState(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        return await self._not_yet(context, "AdminService.SetBreakerState")

    async def ListIntentModes(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        return await self._not_yet(context, "AdminService.ListIntentModes")

    async def SetIntentMode(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        return await self._not_yet(context, "AdminService.SetIntentMode")


def add_to_server(server: grpc.aio.Server, status: Callable[[], DaemonStatus]) -> str:
    admin_pb2_grpc.add_AdminServiceServicer_to_server(AdminServicer(status), server)
    return SERVICE_NAME
