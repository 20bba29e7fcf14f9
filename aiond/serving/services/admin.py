"""AdminService: daemon status, the incident levers: circuit breakers and runtime intent modes
(forced and switched by operators, audited; see :mod:`aiond.execution.controls`), and API tokens:
listed (never their secrets) and rotated by admins (:func:`aiond.security.auth.rotate`, audited)."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf import timestamp_pb2

from aion.api.v1 import admin_pb2, admin_pb2_grpc
from aion.config.model import Privacy
from aion.errors import ConflictError, UsageError
from aion.routing import BreakerState
from aiond.execution.breakers import Breaker, Override
from aiond.execution.controls import Controls
from aiond.policy.store import ActiveConfig, PolicyStore
from aiond.security.auth import DEFAULT_OVERLAP, Role, current_principal, rotate
from aiond.serving.services.paging import page
from aiond.state.backend import IntentMode, StateBackend, TokenRecord

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
    def __init__(
        self,
        status: Callable[[], DaemonStatus],
        store: PolicyStore | None = None,
        controls: Controls | None = None,
        *,
        state: StateBackend | None = None,
        committed: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._status = status
        self._store = store
        self._controls = controls
        self._state = state
        self._committed = committed

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

    def _active(self) -> ActiveConfig:
        active = self._store.active if self._store is not None else None
        if active is None:
            raise ConflictError("no policy version is active")
        return active

    async def ListBreakers(
        self, request: admin_pb2.ListBreakersRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> admin_pb2.ListBreakersResponse:
        assert self._controls is not None
        chosen, token = page(self._controls.board, lambda b: b.key, size=request.page_size,
                             token=request.page_token)  # fmt: skip
        return admin_pb2.ListBreakersResponse(
            breakers=[self._breaker(b) for b in chosen], next_page_token=token
        )

    async def SetBreakerState(
        self, request: admin_pb2.SetBreakerStateRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> admin_pb2.SetBreakerStateResponse:
        assert self._controls is not None
        override = _OVERRIDES_IN.get(request.override)
        if override is None:
            raise UsageError("override must be NONE, FORCED_OPEN or FORCED_CLOSED")
        if not request.provider:
            raise UsageError("provider is required")
        key = f"{request.provider}:{request.model}" if request.model else request.provider
        breaker, before = await self._controls.force_breaker(
            self._active().snapshot, key, override, principal=current_principal.get().name,
            reason=request.reason,
        )  # fmt: skip
        return admin_pb2.SetBreakerStateResponse(
            breaker=self._breaker(breaker), previous=self._breaker(before)
        )

    async def ListIntentModes(
        self, request: admin_pb2.ListIntentModesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> admin_pb2.ListIntentModesResponse:
        assert self._controls is not None
        chosen, token = page(self._controls.modes(), lambda m: m.intent, size=request.page_size,
                             token=request.page_token)  # fmt: skip
        return admin_pb2.ListIntentModesResponse(
            intents=[_mode_message(m) for m in chosen], next_page_token=token
        )

    async def SetIntentMode(
        self, request: admin_pb2.SetIntentModeRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> admin_pb2.SetIntentModeResponse:
        assert self._controls is not None
        if request.mode not in _MODES_IN:
            raise UsageError(
                "mode must be POLICY, LOCAL_ONLY, ALLOW_API or HYBRID"
                + (f" (got {request.mode})" if request.mode else "")
            )
        state, previous = await self._controls.set_mode(
            self._active().snapshot,
            request.intent,
            _MODES_IN[request.mode],
            principal=current_principal.get().name,
            reason=request.reason,
        )
        message = (
            _mode_message(state)
            if state is not None
            else admin_pb2.IntentModeState(intent=request.intent, mode=admin_pb2.INTENT_MODE_POLICY)
        )
        return admin_pb2.SetIntentModeResponse(
            state=message, previous_mode=_MODES_OUT[previous] if previous else admin_pb2.INTENT_MODE_POLICY
        )

    async def WhoAmI(
        self, request: admin_pb2.WhoAmIRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> admin_pb2.WhoAmIResponse:
        principal = current_principal.get()
        auth = context.auth_context()
        return admin_pb2.WhoAmIResponse(
            principal=principal.name,
            role=_ROLES_OUT.get(principal.role, admin_pb2.ROLE_UNSPECIFIED),
            credential=principal.credential,
            tls=auth.get("transport_security_type") == [b"ssl"],
            client_certificate=bool(auth.get("x509_pem_cert")),
        )

    async def ListTokens(
        self, request: admin_pb2.ListTokensRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> admin_pb2.ListTokensResponse:
        assert self._state is not None
        records = await asyncio.to_thread(self._state.tokens, include_revoked=request.include_revoked)
        chosen, token = page(records, lambda r: f"{r.created_at.astimezone(dt.UTC).isoformat()} {r.id}",
                             size=request.page_size, token=request.page_token)  # fmt: skip
        return admin_pb2.ListTokensResponse(tokens=[_credential(r) for r in chosen], next_page_token=token)

    async def RotateToken(
        self, request: admin_pb2.RotateTokenRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> admin_pb2.RotateTokenResponse:
        assert self._state is not None
        assert self._committed is not None
        if not request.token or len(request.token) > _MAX_NAME:
            raise UsageError(f"token: give a token's name or id (1 to {_MAX_NAME} characters)")
        overlap = request.overlap.ToTimedelta() if request.HasField("overlap") else DEFAULT_OVERLAP
        rotation, text = await asyncio.to_thread(
            rotate, self._state, request.token, overlap=overlap, principal=current_principal.get().name
        )
        await self._committed()
        return admin_pb2.RotateTokenResponse(
            token=_credential(rotation.new), previous=_credential(rotation.old), secret=text
        )

    def _breaker(self, breaker: Breaker) -> admin_pb2.Breaker:
        provider, _, model = breaker.key.partition(":")
        message = admin_pb2.Breaker(
            provider=provider,
            model=model,
            state=_STATES_OUT[breaker.effective],
            override=_OVERRIDES_OUT[breaker.override],
            failure_ratio=breaker.failure_ratio,
            window_requests=len(breaker.outcomes),
            changed_at=_wall(breaker.changed_at),
        )
        if breaker.effective is BreakerState.OPEN and breaker.override is Override.NONE:
            message.retry_at.CopyFrom(_wall(breaker.retry_at))
        return message


def _wall(monotonic: float) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(dt.datetime.now(dt.UTC) - dt.timedelta(seconds=time.monotonic() - monotonic))
    return stamp


_MAX_NAME = 64
"""The longest credential name (aiond.security.auth.mint); ids are shorter."""


def _credential(record: TokenRecord) -> admin_pb2.Credential:
    message = admin_pb2.Credential(
        id=record.id,
        name=record.name,
        role=_ROLES_OUT.get(Role.parse(record.role), admin_pb2.ROLE_UNSPECIFIED),
        identity=record.identity,
        created_by=record.created_by,
        replaced_by=record.replaced_by,
    )
    message.created_at.FromDatetime(record.created_at)
    for field, when in (("expires_at", record.expires_at), ("revoked_at", record.revoked_at),
                        ("last_used_at", record.last_used_at)):  # fmt: skip
        if when is not None:
            getattr(message, field).FromDatetime(when)
    return message


def _mode_message(mode: IntentMode) -> admin_pb2.IntentModeState:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(mode.set_at)
    return admin_pb2.IntentModeState(
        intent=mode.intent,
        mode=_MODES_OUT[Privacy(mode.mode)],
        set_by=mode.set_by,
        set_at=stamp,
        reason=mode.reason,
    )


_STATES_OUT = {
    BreakerState.CLOSED: admin_pb2.BREAKER_STATE_CLOSED,
    BreakerState.OPEN: admin_pb2.BREAKER_STATE_OPEN,
    BreakerState.HALF_OPEN: admin_pb2.BREAKER_STATE_HALF_OPEN,
}
_OVERRIDES_OUT = {
    Override.NONE: admin_pb2.BREAKER_OVERRIDE_NONE,
    Override.FORCED_OPEN: admin_pb2.BREAKER_OVERRIDE_FORCED_OPEN,
    Override.FORCED_CLOSED: admin_pb2.BREAKER_OVERRIDE_FORCED_CLOSED,
}
_OVERRIDES_IN = {v: k for k, v in _OVERRIDES_OUT.items()}
_MODES_OUT = {
    Privacy.LOCAL_ONLY: admin_pb2.INTENT_MODE_LOCAL_ONLY,
    Privacy.ALLOW_API: admin_pb2.INTENT_MODE_ALLOW_API,
    Privacy.HYBRID: admin_pb2.INTENT_MODE_HYBRID,
}
_MODES_IN: dict[int, Privacy | None] = {v: k for k, v in _MODES_OUT.items()}
_ROLES_OUT = {Role.VIEWER: admin_pb2.ROLE_VIEWER, Role.OPERATOR: admin_pb2.ROLE_OPERATOR,
              Role.ADMIN: admin_pb2.ROLE_ADMIN}  # fmt: skip
_MODES_IN[admin_pb2.INTENT_MODE_POLICY] = None


def add_to_server(
    server: grpc.aio.Server,
    status: Callable[[], DaemonStatus],
    store: PolicyStore | None = None,
    controls: Controls | None = None,
    *,
    state: StateBackend | None = None,
    committed: Callable[[], Awaitable[None]] | None = None,
) -> str:
    """``state`` and ``committed`` (the journal's) serve ListTokens and RotateToken."""
    servicer = AdminServicer(status, store, controls, state=state, committed=committed)
    admin_pb2_grpc.add_AdminServiceServicer_to_server(servicer, server)
    return SERVICE_NAME
