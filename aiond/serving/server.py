"""The aiond process lifecycle: one asyncio loop serving gRPC (grpc.aio) and HTTP (aiohttp).

Read :meth:`Daemon.serve` top to bottom: ``startup()`` -> wait for a stop request -> ``shutdown()``.
The daemon is composition only: its parts are made by :func:`aiond.serving.runtime.assemble`, its
listeners by :mod:`aiond.serving.listeners`, its reports by :mod:`aiond.serving.reporting`.

Signals handled by :meth:`Daemon.serve`:

- SIGTERM, SIGINT: graceful stop (the shutdown order below). A second one while draining stops at once.
- SIGHUP: reload the config directory, as ``aionctl policy reload`` does (a bad set is refused and
  logged; the running version stays active).

Start-up order (:meth:`Daemon.startup`): check the config directory, start trace export when an OTLP
endpoint is configured (:mod:`aiond.tracing`), make the runtime (state directory, state database,
journal, policies: the daemon does not start without a valid version, levers, budget, admission,
executor), then bind HTTP and gRPC and report ready.

Shutdown order (:meth:`Daemon.shutdown`), which a test checks:

1. Phase DRAINING: ``/readyz`` answers 503 and gRPC health answers NOT_SERVING.
2. Wait ``--shutdown-delay`` seconds, so load balancers stop sending new work.
3. End long-lived streams (health Watch), which would otherwise hold the server for the whole grace.
4. Stop taking work: gRPC refuses new calls, ``POST /v1/chat/completions`` new tasks (503, ``draining``);
   in-flight calls get ``--shutdown-grace`` seconds, then are cancelled.
5. Stop HTTP: the listener closes; in-flight requests finish.
6. Close the runtime in the reverse of its making: tasks still running (submitted without waiting) get
   ``--shutdown-grace`` seconds to finish, then are canceled and settled; queued task events are
   written; policy changes whose callers left finish; the validation worker stops; the state database
   closes and the state directory is released; last, the spans still queued are exported (bounded).
   Phase STOPPED; a stopped daemon cannot be started again.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import enum
import logging
import os
import signal
from collections.abc import Callable, Sequence

import grpc
from aiohttp import web
from grpc_reflection.v1alpha import reflection

from aion import __version__
from aion.addresses import HostPort
from aion.errors import Error, InputError
from aiond.serving import http, listeners
from aiond.serving.interceptors import AuthInterceptor, ErrorInterceptor, TraceInterceptor
from aiond.serving.openai_api import OpenAIRoutes
from aiond.serving.runtime import Runtime, assemble
from aiond.serving.services import admin, event_tail, health, modules, policies, router, tasks
from aiond.serving.services import backup as backup_service
from aiond.serving.telemetry import CallTracker, Metrics
from aiond.settings import Settings
from aiond.tracing import exporting

log = logging.getLogger("aiond")


class Phase(enum.Enum):
    NEW = "new"
    STARTING = "starting"
    SERVING = "serving"
    DRAINING = "draining"
    STOPPED = "stopped"


@dataclasses.dataclass(frozen=True, slots=True)
class ServiceBinding:
    """An extra gRPC service to mount: ``register`` adds it to the server and returns its full name."""

    register: Callable[[grpc.aio.Server], str]


class Daemon:
    """One aiond instance. ``await Daemon(settings).serve()`` runs it until SIGTERM."""

    def __init__(self, settings: Settings, *, extra_services: Sequence[ServiceBinding] = ()) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self._extra_services = tuple(extra_services)
        self._phase = Phase.NEW
        self._started_at = dt.datetime.now(dt.UTC)
        self._stop_requested = asyncio.Event()
        self._force_stop = asyncio.Event()
        self._tracker = CallTracker(self.metrics)
        self._health = health.HealthServicer()
        self._closing = contextlib.AsyncExitStack()
        """What startup made, closed in reverse by shutdown (also after a start-up that failed)."""
        self._runtime: Runtime | None = None
        self._traced = False
        self._grpc: grpc.aio.Server | None = None
        self._http: web.AppRunner | None = None
        self._background: set[asyncio.Task[None]] = set()
        self.grpc_address: HostPort | None = None
        self.http_address: HostPort | None = None
        self.phase_log: list[Phase] = []
        self._shutdown: asyncio.Future[None] | None = None
        self._taking_work = True
        """False from step 4 of the shutdown on, when gRPC and the OpenAI endpoint refuse new work."""

    @property
    def phase(self) -> Phase:
        return self._phase

    @property
    def runtime(self) -> Runtime:
        """The daemon's parts; only while it serves or drains."""
        if self._runtime is None:
            raise RuntimeError(f"a daemon in phase {self._phase.value} has no runtime")
        return self._runtime

    def _enter(self, phase: Phase) -> None:
        self._phase = phase
        self.phase_log.append(phase)
        self.metrics.ready.set(1 if phase is Phase.SERVING else 0)
        log.debug("phase %s", phase.value)

    # -- lifecycle --------------------------------------------------------------------------------

    async def serve(self) -> None:
        """Run until a stop is requested (signal or :meth:`request_stop`), then shut down in order."""
        self._install_signal_handlers()
        try:
            await self.startup()
            await self._stop_requested.wait()
        finally:
            await self.shutdown()
            self._remove_signal_handlers()

    async def startup(self) -> None:
        """Check inputs, make the runtime, bind both listeners, then report ready."""
        if self._phase is not Phase.NEW:
            raise RuntimeError(f"a daemon in phase {self._phase.value} cannot be started")
        self._enter(Phase.STARTING)
        s = self.settings
        if not s.config_dir.is_dir():
            what = "does not exist" if not s.config_dir.exists() else "is not a directory"
            raise InputError(
                f"config directory {s.config_dir} {what}",
                hint="point --config at the directory of your config set",
            )
        # Entered first, so closed last: the spans of the runtime's last moments are exported too.
        self._traced = await self._closing.enter_async_context(exporting(os.environ, version=__version__))
        runtime = await assemble(s, self.metrics, self._closing, grace=self._task_grace)
        self._runtime = runtime
        # HTTP first: an aiohttp runner gives its port back when cleaned up, while a grpc server that
        # bound a port but never started keeps it until the process exits.
        self._http, self.http_address = await listeners.start_http(self._http_app(runtime), s)
        self._grpc = self._grpc_server(runtime)
        self.grpc_address = listeners.bind_grpc(self._grpc, s)
        await self._grpc.start()
        await self._health.set("", health.SERVING)
        self._enter(Phase.SERVING)
        log.info(
            "aiond %s serving: gRPC on %s, HTTP on %s (config %s, state %s)",
            __version__, self.grpc_address, self.http_address, s.config_dir, s.state_dir,
        )  # fmt: skip

    def request_stop(self, *, force: bool = False) -> None:
        """Ask :meth:`serve` to shut down; ``force`` (or a second request while draining) skips the waits."""
        if force or self._stop_requested.is_set():
            self._force_stop.set()
        self._stop_requested.set()

    async def shutdown(self) -> None:
        """Stop in the documented order. Safe after a failed or partial startup, and idempotent:
        concurrent calls wait for the one shutdown in progress.

        Worst case, without a second signal: ``--shutdown-delay`` + ``--shutdown-grace`` (gRPC) +
        ``--shutdown-grace`` (HTTP requests still running, in practice none: they are probes) +
        ``--shutdown-grace`` (tasks still running).
        """
        if self._shutdown is None:
            self._shutdown = asyncio.ensure_future(self._shutdown_once())
        await asyncio.shield(self._shutdown)

    async def _shutdown_once(self) -> None:
        served = Phase.SERVING in self.phase_log
        try:
            if served:
                await self._drain()
            elif self._grpc is not None:
                await self._grpc.stop(0)  # never served: nothing to drain, nobody to warn
            # 5. HTTP: close the listener; in-flight requests finish.
            if self._http is not None:
                await self._http.cleanup()
        finally:
            # 6. The runtime, in the reverse of its making, whatever failed above.
            for task in self._background:
                task.cancel()
            await self._closing.aclose()
            self._enter(Phase.STOPPED)
            if served:
                log.info("stopped")

    def _task_grace(self) -> float:
        return 0.0 if self._force_stop.is_set() else self.settings.shutdown_grace

    async def _drain(self) -> None:
        # 1. Not ready any more: /readyz 503, gRPC health NOT_SERVING.
        self._enter(Phase.DRAINING)
        await self._health.drain()
        log.info("draining: readiness is now 503")
        # 2. Give load balancers time to notice, unless told to hurry.
        if self.settings.shutdown_delay > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._force_stop.wait(), timeout=self.settings.shutdown_delay)
        # 3. End long-lived streams.
        await self._health.close()
        # 4. No new work: gRPC refuses new calls, the OpenAI endpoint new tasks; in-flight ones finish
        # within the grace period.
        self._taking_work = False
        log.info("draining: no new work taken, in-flight calls finish")
        server = self._grpc
        if server is None:  # pragma: no cover - SERVING is entered only after the server started
            return
        if self._force_stop.is_set():  # asked twice already: one immediate stop, never two at once
            log.warning("second stop request: cancelling in-flight calls")
            await server.stop(0)
            return
        stopping = asyncio.ensure_future(server.stop(self.settings.shutdown_grace))
        forced = asyncio.ensure_future(self._force_stop.wait())
        try:
            await asyncio.wait({stopping, forced}, return_when=asyncio.FIRST_COMPLETED)
            if not stopping.done():
                # grpc.aio documents a second stop() with a smaller grace as the way to stop sooner.
                log.warning("second stop request: cancelling in-flight calls")
                await server.stop(0)
            await stopping
        finally:
            forced.cancel()

    # -- assembly ---------------------------------------------------------------------------------

    def _grpc_server(self, rt: Runtime) -> grpc.aio.Server:
        # Outermost first: the call metrics see every call's final code; the server span (when traces
        # are exported) holds the error table's log lines; the error table answers for whatever the
        # auth check or a servicer raises.
        guard = AuthInterceptor(rt.authenticator, rt.denials, mtls=self.settings.tls_client_ca is not None)
        traced = [TraceInterceptor()] if self._traced else []
        server = listeners.grpc_server(self.settings, [self._tracker, *traced, ErrorInterceptor(), guard])
        s = self.settings
        names = [
            health.add_to_server(server, self._health),
            admin.add_to_server(server, self.status, rt.policies, rt.controls, state=rt.state,
                                committed=rt.journal.committed),
            modules.add_to_server(server, s.modules_dir, s.config_dir, frozenset(s.registry_plain_http),
                                  events=rt.journal, trust=rt.active_trust, runner=rt.modules,
                                  snapshot=rt.active_snapshot),
            policies.add_to_server(server, rt.policies),
            router.add_to_server(server, rt.policies, rt.live_state),
            tasks.add_to_server(server, rt.executor),
            event_tail.add_to_server(server, rt.journal),
            backup_service.add_to_server(server, rt.backups),
            *(binding.register(server) for binding in self._extra_services),
            reflection.SERVICE_NAME,
        ]  # fmt: skip
        reflection.enable_server_reflection(names, server)
        return server

    def _http_app(self, rt: Runtime) -> web.Application:
        return http.build_app(
            readiness=self._readiness,
            metrics=self.metrics,
            version=__version__,
            policies=rt.policies,
            authenticator=rt.authenticator,
            reporter=rt.denials,
            openai=OpenAIRoutes(
                rt.executor,
                rt.policies,
                rt.live_state,
                write_timeout=rt.settings.stream_write_timeout,
                taking_work=lambda: self._taking_work,
            ),
        )

    def _readiness(self) -> tuple[bool, str]:
        return self._phase is Phase.SERVING, self._phase.value

    def status(self) -> admin.DaemonStatus:
        """The daemon's self-description, as AdminService.GetStatus reports it."""
        active = self._runtime.policies.active if self._runtime is not None else None
        return admin.DaemonStatus(
            version=__version__,
            phase=self._phase.value,
            started_at=self._started_at,
            pid=os.getpid(),
            config_dir=str(self.settings.config_dir),
            state_dir=str(self.settings.state_dir),
            grpc_address=str(self.grpc_address or ""),
            http_address=str(self.http_address or ""),
            inflight_rpcs=self._tracker.in_flight,
            active_policy_version=active.version.number if active else 0,
        )

    # -- signals ----------------------------------------------------------------------------------

    def _install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_stop_signal, sig)
        loop.add_signal_handler(signal.SIGHUP, self._on_sighup)

    def _remove_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)

    def _on_stop_signal(self, sig: signal.Signals) -> None:
        if self._stop_requested.is_set():
            log.warning("%s again: stopping now", sig.name)
        else:
            log.info("%s: shutting down gracefully (send it again to stop at once)", sig.name)
        self.request_stop()

    def _on_sighup(self) -> None:
        if self._phase is not Phase.SERVING:
            log.warning("SIGHUP while %s: not reloading", self._phase.value)
            return
        log.info("SIGHUP: reloading %s", self.settings.config_dir)
        task = asyncio.ensure_future(self._sighup_reload(self.runtime))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _sighup_reload(self, rt: Runtime) -> None:
        try:
            await rt.policies.reload(principal="aiond", source="sighup")
        except Error as exc:
            log.error("SIGHUP reload refused: %s", exc.message)


__all__ = ["Daemon", "Phase", "ServiceBinding"]
