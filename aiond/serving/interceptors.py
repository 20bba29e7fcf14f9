"""aiond's gRPC interceptors: the base that wraps a method's handler once, and the one place where a
raised error becomes a call's status.

grpc.aio asks every server interceptor for the handler on every call. Rebuilding the wrapped handler
each time (a new handler object, a new closure, an ``inspect`` of the behaviour) is work done per call
for a result that only depends on the method, so :class:`WrapOnce` keeps the wrapped handler of each
method and hands it out again while grpc's own handler for that method is the same object.

:class:`ErrorInterceptor` is the outermost of aiond's own interceptors. Servicers (and the auth
interceptor inside it) raise :class:`aion.errors.Error`; it answers with the status of the error's row
in :data:`aion.errors.TABLE`, the row's name in the ``aion-error`` trailer and the hint in
``aion-hint-bin``. An exception that is not an Error is a bug: the caller gets INTERNAL with an id, and
the log gets one line with that id. A request that cannot be decoded never reaches a servicer (nor
authentication): it answers INVALID_ARGUMENT. Log lines about bad calls are throttled, so a client
cannot fill the disk with them.

:class:`AuthInterceptor`, inside it, authenticates and authorises every call with the checks of
:mod:`aiond.security.auth` before the servicer runs.

:class:`TraceInterceptor`, outside the error interceptor and present only while traces are exported
(:mod:`aiond.tracing`), makes each call's server span.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn, TypeAlias

import grpc

from aion import tracing
from aion.errors import Error, Forbidden, InternalError, Unauthenticated, UsageError, transport
from aion.ids import ulid
from aiond.logs import Throttle
from aiond.security.auth import (
    Authenticator,
    DenialReporter,
    Principal,
    Role,
    authorize,
    bearer,
    current_principal,
    identity_of,
    required_role,
)

# grpc's handler types are generic only in their stubs, so this alias exists for the type checker alone.
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"

log = logging.getLogger("aiond.grpc")

ERROR_TRAILER = "aion-error"
HINT_TRAILER = "aion-hint-bin"

_KINDS = (
    ("unary_unary", grpc.unary_unary_rpc_method_handler),
    ("unary_stream", grpc.unary_stream_rpc_method_handler),
    ("stream_unary", grpc.stream_unary_rpc_method_handler),
    ("stream_stream", grpc.stream_stream_rpc_method_handler),
)


def with_behavior(
    handler: Handler,
    wrap: Callable[[Any], Any],
    request_deserializer: Callable[[bytes], Any] | None = None,
) -> Handler:
    """``handler`` with its behaviour replaced by ``wrap(behaviour)``, of the same kind and with the
    same serializer (and the same request deserializer, unless another is given)."""
    for kind, factory in _KINDS:
        behavior = getattr(handler, kind)
        if behavior:
            return factory(
                wrap(behavior),
                request_deserializer=request_deserializer or handler.request_deserializer,
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


class _Undecodable:
    """What a request that could not be decoded becomes, instead of an exception inside grpc (which
    answers UNKNOWN and logs a traceback, before any authentication)."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


def grpc_status(error: BaseException) -> grpc.StatusCode:
    """The gRPC status of ``error``'s row in the error table."""
    return grpc.StatusCode[transport(error).grpc]


async def abort(context: grpc.aio.ServicerContext[Any, Any], error: Error) -> NoReturn:
    """End the call with ``error``'s status, message (with its hint, for clients other than aionctl),
    and trailers. Raises, as grpc's abort does."""
    row = transport(error)
    metadata: list[tuple[str, str | bytes]] = [*error.metadata(), (ERROR_TRAILER, row.name)]
    details = error.message
    if error.hint:
        metadata.append((HINT_TRAILER, error.hint.encode()))
        details += f" ({error.hint})"
    await context.abort(grpc.StatusCode[row.grpc], details, tuple(metadata))
    raise AssertionError("unreachable: grpc's abort raises")  # pragma: no cover


class ErrorInterceptor(WrapOnce):
    """Maps what a handler raises to the call's status through :data:`aion.errors.TABLE`."""

    def __init__(self) -> None:
        super().__init__()
        self._bad_requests = Throttle(log)
        self._internal = Throttle(log, rate=5.0, burst=20)

    def wrap(self, handler: Handler, method: str) -> Handler:
        decode = handler.request_deserializer

        def tolerant(data: bytes) -> Any:
            try:
                return decode(data) if decode is not None else data
            except Exception as exc:  # protobuf's DecodeError, or anything a decoder raises
                return _Undecodable(type(exc).__name__)

        return with_behavior(handler, lambda behavior: self._guard(behavior, method), tolerant)

    def _guard(self, behavior: Any, method: str) -> Any:
        if inspect.isasyncgenfunction(behavior):

            async def guarded_stream(
                request: Any, context: grpc.aio.ServicerContext[Any, Any]
            ) -> AsyncIterator[Any]:
                await self._refuse_undecodable(request, method, context)
                try:
                    async for response in behavior(request, context):
                        yield response
                except Exception as exc:
                    await self._fail(exc, method, context)

            return guarded_stream

        async def guarded(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            await self._refuse_undecodable(request, method, context)
            try:
                return await behavior(request, context)
            except Exception as exc:
                await self._fail(exc, method, context)

        return guarded

    async def _refuse_undecodable(
        self, request: Any, method: str, context: grpc.aio.ServicerContext[Any, Any]
    ) -> None:
        if isinstance(request, _Undecodable):
            self._bad_requests.log(
                logging.WARNING, "refused an undecodable request to %s from %s (%s)",
                method, context.peer(), request.reason,
            )  # fmt: skip
            await abort(context, UsageError(f"the request is not a valid message for {method}"))

    async def _fail(
        self, exc: Exception, method: str, context: grpc.aio.ServicerContext[Any, Any]
    ) -> NoReturn:
        if isinstance(exc, grpc.aio.AbortError | asyncio.CancelledError):
            raise exc  # the call already has its status, or the caller went away
        if isinstance(exc, Error):
            await abort(context, exc)
        error_id = ulid()
        where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
        self._internal.log(
            logging.ERROR, "internal error %s in %s: %s: %s (at %s)",
            error_id, method, type(exc).__name__, str(exc)[:300],
            f"{where.filename}:{where.lineno} in {where.name}" if where else "?",
        )  # fmt: skip
        log.debug("internal error %s", error_id, exc_info=exc)
        await abort(context, InternalError(error_id))


# -- authentication --------------------------------------------------------------------------------


class AuthInterceptor(WrapOnce):
    """Authenticates and authorises every call before its handler runs; sets :data:`current_principal`."""

    def __init__(self, authenticator: Authenticator, reporter: DenialReporter, *, mtls: bool) -> None:
        super().__init__()
        self._auth = authenticator
        self._reporter = reporter
        self._mtls = mtls

    def wrap(self, handler: Handler, method: str) -> Handler:
        needed = required_role(method)
        if needed is None:
            return handler
        return with_behavior(handler, lambda behavior: self._guard(behavior, method, needed))

    async def _principal(
        self, method: str, needed: Role, context: grpc.aio.ServicerContext[Any, Any]
    ) -> Principal:
        token = None
        for key, value in context.invocation_metadata() or ():
            if key == "authorization":
                token = bearer(value if isinstance(value, str) else value.decode("latin-1"))
                if token is None:
                    token = ""  # present but not a bearer token: malformed
                break
        identity = None
        if self._mtls:
            pem = list(context.auth_context().get("x509_pem_cert") or ())
            identity = identity_of(bytes(pem[0])) if pem else None
        try:
            principal = self._auth.authenticate(token if token else None, identity)
            if token == "":
                raise Unauthenticated("the authorization metadata is not 'Bearer <token>'")
            authorize(principal, needed, method.rsplit("/", 1)[-1])
        except (Unauthenticated, Forbidden) as denied:
            await self._reporter.report(denied, method, "grpc")
            raise  # the error interceptor around this one answers with its status
        return principal

    def _guard(self, behavior: Any, method: str, needed: Role) -> Any:
        if inspect.isasyncgenfunction(behavior):

            async def guarded_stream(
                request: Any, context: grpc.aio.ServicerContext[Any, Any]
            ) -> AsyncIterator[Any]:
                current_principal.set(await self._principal(method, needed, context))
                async for response in behavior(request, context):
                    yield response

            return guarded_stream

        async def guarded(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            current_principal.set(await self._principal(method, needed, context))
            return await behavior(request, context)

        return guarded


# -- traces ----------------------------------------------------------------------------------------

SERVER_ERRORS = frozenset(
    {grpc.StatusCode.UNKNOWN, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNIMPLEMENTED,
     grpc.StatusCode.INTERNAL, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DATA_LOSS}
)  # fmt: skip
"""The codes that mark a server span failed, as OpenTelemetry's RPC conventions list them: the others
(a refusal, a missing token, a bad request) are the caller's outcome, not the server's failure."""


class TraceInterceptor(WrapOnce):
    """A server span for every call, named ``service/method``, continuing the caller's trace when the
    call's metadata carries a W3C ``traceparent``; its attributes are OpenTelemetry's RPC ones, the
    final status code included. The task's decision and attempt spans, made by the executor while
    the call is being handled, become its children.

    Written here rather than taken from opentelemetry-instrumentation-grpc: that package's grpc.aio
    interceptor makes its spans with the process-wide tracer provider, which aiond does not set (the
    tracer is :mod:`aion.tracing`'s, present only while traces are exported), it adds the
    instrumentation framework and wrapt to aiond's dependencies for what is one wrapper, and it
    wraps each method's handler anew on every call, where :class:`WrapOnce` wraps it once.
    """

    def wrap(self, handler: Handler, method: str) -> Handler:
        service, _, name = method.lstrip("/").rpartition("/")
        attributes: dict[str, tracing.AttributeValue] = {
            "rpc.system": "grpc", "rpc.service": service, "rpc.method": name,
        }  # fmt: skip
        return with_behavior(handler, lambda behavior: self._traced(behavior, method.lstrip("/"), attributes))

    def _traced(self, behavior: Any, name: str, attributes: dict[str, tracing.AttributeValue]) -> Any:
        if inspect.isasyncgenfunction(behavior):

            async def traced_stream(
                request: Any, context: grpc.aio.ServicerContext[Any, Any]
            ) -> AsyncIterator[Any]:
                with tracing.incoming(name, _carrier(context), attributes) as span:
                    try:
                        async for response in behavior(request, context):
                            yield response
                    except BaseException as exc:
                        _ended(span, context, exc)
                        raise
                    _ended(span, context, None)

            return traced_stream

        async def traced(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            with tracing.incoming(name, _carrier(context), attributes) as span:
                try:
                    response = await behavior(request, context)
                except BaseException as exc:
                    _ended(span, context, exc)
                    raise
                _ended(span, context, None)
                return response

        return traced


def _carrier(context: grpc.aio.ServicerContext[Any, Any]) -> dict[str, str]:
    """The trace context entries of a call's metadata (gRPC keys are lower case already)."""
    carrier: dict[str, str] = {}
    for key, value in context.invocation_metadata() or ():
        if key in ("traceparent", "tracestate") and isinstance(value, str):
            carrier[key] = value
    return carrier


def _ended(
    span: tracing.SpanLike, context: grpc.aio.ServicerContext[Any, Any], exc: BaseException | None
) -> None:
    """Record the call's final code on its span (and mark it failed for a server error)."""
    if not span.is_recording():
        return
    code: grpc.StatusCode
    if isinstance(exc, asyncio.CancelledError):
        # Cancelled by grpc: the caller left, or the call's deadline passed (the caller sees that).
        remaining: float | None = context.time_remaining()  # None without a deadline, despite the stubs
        expired = remaining is not None and remaining <= 0
        code = grpc.StatusCode.DEADLINE_EXCEEDED if expired else grpc.StatusCode.CANCELLED
    elif exc is not None and not isinstance(exc, grpc.aio.AbortError):
        code = grpc.StatusCode.UNKNOWN
    else:
        set_code: grpc.StatusCode | None = context.code()  # None when no code was set, despite the stubs
        code = set_code if set_code is not None else grpc.StatusCode.OK
    span.set_attribute("rpc.grpc.status_code", code.value[0])
    if code in SERVER_ERRORS:
        tracing.fail(span, code.name, str(context.details() or "")[:300])


__all__ = [
    "ERROR_TRAILER",
    "HINT_TRAILER",
    "SERVER_ERRORS",
    "AuthInterceptor",
    "ErrorInterceptor",
    "Handler",
    "TraceInterceptor",
    "WrapOnce",
    "abort",
    "grpc_status",
    "with_behavior",
]
