"""aiond's HTTP endpoints: liveness, readiness, metrics, and the policy endpoints of the runbook.

``/healthz`` answers 200 while the process can serve HTTP at all. ``/readyz`` answers 200 only while
the daemon accepts work, and 503 while it starts or drains, so that load balancers and Kubernetes stop
sending work before shutdown. ``/metrics`` is the Prometheus exposition. These three stay open: probes
and scrapers carry no token.

``GET /router/policy`` (viewer) returns the policy status and ``POST /router/policy/reload``
(operator) re-reads the config directory, both as JSON in the proto3 JSON mapping of the PolicyService
messages, with ``apiVersion`` and ``kind``. A reload answers 200 when the set was activated or was
unchanged, 422 with the findings when it was refused, and 409 when another precondition failed.
Callers authenticate with ``Authorization: Bearer <token>``; 401 means no valid token, 403 too weak a
role. ``?dry_run=true`` validates without activating.
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from google.protobuf import json_format
from google.protobuf.message import Message

from aiond.security.auth import (
    HTTP_ROLES,
    Authenticator,
    DenialReporter,
    Denied,
    Principal,
    Role,
    authorize,
    bearer,
    identity_of,
)
from aiond.serving.telemetry import Metrics

API_VERSION = "aion/v1"

ReadinessProbe = Callable[[], tuple[bool, str]]
"""Returns (ready, phase name)."""


class PolicyEndpoints:
    """What the policy routes call; the server provides it. Both return finished JSON documents."""

    def __init__(
        self,
        status: Callable[[], dict[str, Any]],
        reload: Callable[[Principal, bool], Awaitable[tuple[int, dict[str, Any]]]],
    ) -> None:
        self.status = status
        self.reload = reload


def document(kind: str, message: Message) -> dict[str, Any]:
    """A proto message as a JSON document: apiVersion, kind, then the proto3 JSON mapping, with
    finding severities as aionctl prints them (error, warning, info)."""
    body = json_format.MessageToDict(message, always_print_fields_with_no_presence=True)
    return {"apiVersion": API_VERSION, "kind": kind, **_severities(body)}


def _severities(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            k: (
                v.removeprefix("SEVERITY_").lower()
                if k == "severity" and isinstance(v, str)
                else _severities(v)
            )
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_severities(v) for v in node]
    return node


def error_document(message: str, reason: str) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": "Error", "reason": reason, "message": message}


def _error(status: int, message: str, reason: str) -> web.Response:
    return web.json_response(error_document(message, reason), status=status)


def build_app(
    *,
    readiness: ReadinessProbe,
    metrics: Metrics,
    version: str,
    policy: PolicyEndpoints | None = None,
    authenticator: Authenticator | None = None,
    reporter: DenialReporter | None = None,
) -> web.Application:
    """The aiohttp application; ``readiness`` is asked on every /readyz request."""

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
        # HEAD is GET without a body (aiohttp answers it for every GET route); a served route the
        # table does not know needs admin, so a new route is closed until someone decides otherwise.
        method = "GET" if request.method == "HEAD" else request.method
        needed = HTTP_ROLES.get((method, request.path), Role.ADMIN)
        if needed is None:
            return await handler(request)
        if authenticator is None:
            return _error(503, "authentication is not configured", "Unavailable")
        identity = _peer_identity(request)
        try:
            header = request.headers.get("Authorization")
            token = bearer(header)
            if header and token is None:
                raise Denied("unauthenticated", "the Authorization header is not 'Bearer <token>'")
            principal = authenticator.authenticate(token, identity)
            authorize(principal, needed, f"{request.method} {request.path}")
        except Denied as denied:
            if reporter is not None:
                await reporter.report(denied, f"{request.method} {request.path}", "http")
            status = 401 if denied.kind == "unauthenticated" else 403
            response = _error(status, denied.message, "Unauthorized" if status == 401 else "Forbidden")
            if status == 401:
                response.headers["WWW-Authenticate"] = 'Bearer realm="aiond"'
            return response
        request["principal"] = principal
        return await handler(request)

    async def policy_status(_request: web.Request) -> web.Response:
        assert policy is not None
        return web.json_response(policy.status())

    async def policy_reload(request: web.Request) -> web.Response:
        assert policy is not None
        dry = request.query.get("dry_run", "false").lower()
        if dry not in ("true", "false", "1", "0"):
            return _error(400, "dry_run must be true or false", "BadRequest")
        status, body = await policy.reload(request["principal"], dry in ("true", "1"))
        return web.json_response(body, status=status)

    app = web.Application(client_max_size=64 * 1024, middlewares=[guard])
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_handler)
    if policy is not None:
        app.router.add_get("/router/policy", policy_status)
        app.router.add_post("/router/policy/reload", policy_reload)
    return app


def _peer_identity(request: web.Request) -> str | None:
    transport = request.transport
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    if not isinstance(ssl_object, ssl.SSLObject):
        return None
    der = ssl_object.getpeercert(binary_form=True)
    return identity_of(der) if der else None


__all__ = ["PolicyEndpoints", "build_app", "document", "error_document"]
