"""aiond's HTTP endpoints: liveness, readiness and metrics.

``/healthz`` answers 200 while the process can serve HTTP at all. ``/readyz`` answers 200 only while
the daemon accepts work, and 503 while it starts or drains, so that load balancers and Kubernetes stop
sending work before shutdown. ``/metrics`` is the Prometheus exposition. All three stay open without a
token: probes and scrapers carry none.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from aiond.telemetry import Metrics

API_VERSION = "aion/v1"

ReadinessProbe = Callable[[], tuple[bool, str]]
"""Returns (ready, phase name)."""


def build_app(*, readiness: ReadinessProbe, metrics: Metrics, version: str) -> web.Application:
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

    app = web.Application(client_max_size=64 * 1024)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_handler)
    return app


__all__ = ["build_app"]
