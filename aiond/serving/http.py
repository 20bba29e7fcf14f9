"""aiond's HTTP endpoints: liveness, readiness, metrics, and the policy endpoints of the runbook.

``/healthz`` answers 200 while the process can serve HTTP at all. ``/readyz`` answers 200 only while
the daemon accepts work, and 503 while it starts or drains, so that load balancers and Kubernetes stop
sending work before shutdown. ``/metrics`` is the Prometheus exposition. These three stay open: probes
and scrapers carry no token.

``GET /router/policy`` (viewer) returns the policy status and ``POST /router/policy/reload``
(operator) re-reads the config directory, both as JSON documents of the PolicyService messages
(:mod:`aion.documents`: numbers as numbers, enums as words, with ``apiVersion`` and ``kind``). A
reload answers 200 when the set was activated or was unchanged, 422 with the findings when it was
refused; any other error has the HTTP status of its row in the error table (:mod:`aion.errors`) and
an ``Error`` document. Callers authenticate with ``Authorization: Bearer <token>``; 401 means no
valid token, 403 too weak a role. ``?dry_run=true`` validates without activating.
"""

from __future__ import annotations

import logging
import math
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from aion.api.v1 import policies_pb2
from aion.documents import API_VERSION, document
from aion.errors import (
    DaemonUnavailable,
    Error,
    Forbidden,
    InternalError,
    Saturated,
    Unauthenticated,
    UsageError,
    transport,
)
from aion.ids import ulid
from aiond.logs import Throttle
from aiond.policy.store import ActivationRefused, PolicyStore
from aiond.security.auth import (
    HTTP_ROLES,
    Authenticator,
    DenialReporter,
    Principal,
    Role,
    authorize,
    bearer,
    identity_of,
)
from aiond.serving import openai_api
from aiond.serving.connections import request_key
from aiond.serving.openai_api import OpenAIRoutes
from aiond.serving.services import policies as policy_messages
from aiond.serving.telemetry import Metrics

log = logging.getLogger("aiond.http")

PRINCIPAL = request_key("aion.principal", Principal)
"""Who made a request, once the guard has checked the token."""

ReadinessProbe = Callable[[], tuple[bool, str]]
"""Returns (ready, phase name)."""


def error_document(error: Error) -> dict[str, Any]:
    """An error as the JSON document an HTTP caller gets (schema ``output/error``)."""
    body: dict[str, Any] = {
        "apiVersion": API_VERSION,
        "kind": "Error",
        "reason": transport(error).name,
        "message": error.message,
    }
    if error.hint:
        body["hint"] = error.hint
    return body


def error_response(error: Error) -> web.Response:
    """The response for ``error``: its status from the error table, its document, and the headers its
    status calls for."""
    response = web.json_response(error_document(error), status=transport(error).http)
    if isinstance(error, Unauthenticated):
        response.headers["WWW-Authenticate"] = 'Bearer realm="aiond"'
    if isinstance(error, Saturated) and error.retry_after is not None:
        response.headers["Retry-After"] = str(max(1, math.ceil(error.retry_after)))
    return response


def build_app(
    *,
    readiness: ReadinessProbe,
    metrics: Metrics,
    version: str,
    policies: PolicyStore | None = None,
    authenticator: Authenticator | None = None,
    reporter: DenialReporter | None = None,
    openai: OpenAIRoutes | None = None,
) -> web.Application:
    """The aiohttp application; ``readiness`` is asked on every /readyz request. With ``openai``, the
    OpenAI-compatible endpoints under /v1 (:mod:`aiond.serving.openai_api`), whose errors (auth
    included) take OpenAI's shape."""
    internal = Throttle(log, rate=5.0, burst=20)

    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"apiVersion": API_VERSION, "status": "ok", "version": version})

    async def readyz(_request: web.Request) -> web.Response:
        ready, phase = readiness()
        body = {"apiVersion": API_VERSION, "ready": ready, "phase": phase}
        return web.json_response(body, status=200 if ready else 503)

    async def metrics_handler(_request: web.Request) -> web.Response:
        response = web.Response(body=metrics.exposition())
        response.headers["Content-Type"] = metrics.content_type
        return response

    @web.middleware
    async def guard(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.match_info.http_exception is not None:
            return await handler(request)  # 404 or 405: nothing is served, no credentials needed
        needed = _needed_role(request)
        if needed is None:
            return await handler(request)
        if authenticator is None:
            raise DaemonUnavailable("authentication is not configured")
        identity = _peer_identity(request)
        try:
            header = request.headers.get("Authorization")
            token = bearer(header)
            if header and token is None:
                raise Unauthenticated("the Authorization header is not 'Bearer <token>'")
            principal = authenticator.authenticate(token, identity)
            authorize(principal, needed, f"{request.method} {request.path}")
        except (Unauthenticated, Forbidden) as denied:
            if reporter is not None:
                await reporter.report(denied, f"{request.method} {request.path}", "http")
            raise
        request[PRINCIPAL] = principal
        return await handler(request)

    @web.middleware
    async def errors(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        openai_shape = openai is not None and request.path.startswith("/v1/")
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if openai_shape and exc.status >= 400:
                return openai_api.http_error_response(exc)
            raise  # aiohttp's own answers (404, 405, 413)
        except Error as error:
            return openai_api.error_response(error) if openai_shape else error_response(error)
        except Exception as exc:  # a bug: the caller gets an id, the log one line with it
            error_id = ulid()
            internal.log(
                logging.ERROR, "internal error %s in %s %s: %s: %s",
                error_id, request.method, request.path, type(exc).__name__, str(exc)[:300],
            )  # fmt: skip
            log.debug("internal error %s", error_id, exc_info=exc)
            internal_error = InternalError(error_id)
            return (
                openai_api.error_response(internal_error) if openai_shape else error_response(internal_error)
            )

    # Only the chat completions endpoint reads a body, after the guard has checked its caller.
    app = web.Application(client_max_size=openai_api.MAX_BODY_BYTES, middlewares=[errors, guard])
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_handler)
    if policies is not None:
        _add_policy_routes(app, policies)
    if openai is not None:
        openai.add_to(app)
    return app


def _add_policy_routes(app: web.Application, store: PolicyStore) -> None:
    async def policy_status(_request: web.Request) -> web.Response:
        return web.json_response(document("PolicyStatus", policy_messages.status_message(store)))

    async def policy_reload(request: web.Request) -> web.Response:
        dry = request.query.get("dry_run", "false").lower()
        if dry not in ("true", "false", "1", "0"):
            raise UsageError("dry_run must be true or false")
        principal: Principal = request[PRINCIPAL]
        try:
            outcome = await store.reload(
                principal=principal.name, source="http", dry_run=dry in ("true", "1")
            )
        except ActivationRefused as exc:
            refused = policy_messages.refusal(store, exc, policies_pb2.ReloadPolicyResponse)
            body = {**document("PolicyActivation", refused.activation), "message": exc.message}
            return web.json_response(body, status=transport(exc).http)
        return web.json_response(document("PolicyActivation", policy_messages.activation(store, outcome)))

    app.router.add_get("/router/policy", policy_status)
    app.router.add_post("/router/policy/reload", policy_reload)


def _needed_role(request: web.Request) -> Role | None:
    """The least role a request's route needs (None: open). HEAD is GET without a body (aiohttp answers
    it for every GET route); a served route the table does not know needs admin, so a new route is
    closed until someone decides otherwise. Routes with a variable part are looked up by their pattern
    (``/v1/models/{model}``)."""
    method = "GET" if request.method == "HEAD" else request.method
    resource = request.match_info.route.resource
    path = resource.canonical if resource is not None else request.path
    return HTTP_ROLES.get((method, path), Role.ADMIN)


def _peer_identity(request: web.Request) -> str | None:
    connection = request.transport
    ssl_object = connection.get_extra_info("ssl_object") if connection is not None else None
    if not isinstance(ssl_object, ssl.SSLObject):
        return None
    der = ssl_object.getpeercert(binary_form=True)
    return identity_of(der) if der else None


__all__ = ["build_app", "document", "error_document", "error_response"]
