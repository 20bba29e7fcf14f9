"""The aiond process lifecycle: one asyncio loop serving gRPC (grpc.aio) and HTTP (aiohttp).

Read :meth:`Daemon.serve` top to bottom: ``startup()`` -> wait for a stop request -> ``shutdown()``.

Signals handled by :meth:`Daemon.serve`:

- SIGTERM, SIGINT: graceful stop (the shutdown order below). A second one while draining stops at once.
- SIGHUP: reload the config directory, as ``aionctl policy reload`` does (a bad set is refused and
  logged; the running version stays active).

Start-up order (:meth:`Daemon.startup`): check the config directory, take the state directory, open
the state database, activate the policies (the daemon does not start without a valid version), then
bind HTTP and gRPC and report ready.

Shutdown order (:meth:`Daemon.shutdown`), which a test checks:

1. Phase DRAINING: ``/readyz`` answers 503 and gRPC health answers NOT_SERVING.
2. Wait ``--shutdown-delay`` seconds, so load balancers stop sending new work.
3. End long-lived streams (health Watch), which would otherwise hold the server for the whole grace.
4. Stop gRPC: new calls are refused; in-flight calls get ``--shutdown-grace`` seconds, then are cancelled.
5. Stop HTTP: the listener closes; in-flight requests finish.
6. Tasks still running (submitted without waiting) get ``--shutdown-grace`` seconds to finish, then
   are canceled and settled; queued task events are written.
7. Close the state database and release the state directory. Phase STOPPED; a stopped daemon cannot
   be started again.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import enum
import errno
import gc
import logging
import os
import signal
import socket
import ssl
from collections.abc import Callable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import grpc
from aiohttp import web
from google.protobuf.descriptor import ServiceDescriptor
from grpc_reflection.v1alpha import reflection

from aion import __version__
from aion.addresses import HostPort
from aion.api.v1 import policies_pb2
from aion.config.model import Route, Trust
from aion.envelopes import DECISIONS_TOPIC, LIFECYCLE_TOPIC, event, usd
from aion.errors import ConflictError, Error, InputError
from aion.routing import BreakerState, LiveState
from aiond.events.journal import DaemonEvents
from aiond.execution.admission import Admission
from aiond.execution.breakers import Breaker, BreakerBoard
from aiond.execution.budget import BudgetLedger
from aiond.execution.controls import Controls
from aiond.execution.executor import Executor
from aiond.execution.taskstore import TaskRecord
from aiond.policy.store import ActivationRefused, ActiveConfig, PolicyStore
from aiond.policy.validation import Validator
from aiond.security.auth import Authenticator, AuthInterceptor, DenialReporter, Principal
from aiond.serving import http
from aiond.serving.services import admin, event_tail, health, modules, policies, router, tasks, unimplemented
from aiond.serving.telemetry import CallTracker, Levels, Metrics
from aiond.settings import Settings
from aiond.state.backend import StaleActiveVersion
from aiond.state.lock import StateDirLock
from aiond.state.sqlite import SqliteState

log = logging.getLogger("aiond")

# Keepalive: ping idle clients every minute so dead peers are noticed, and accept client pings down
# to every 10 s (gRPC's default would answer faster pings with GOAWAY "too_many_pings").
_GRPC_KEEPALIVE_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.keepalive_time_ms", 60_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
    ("grpc.http2.max_pings_without_data", 0),
)

# Contract services this version answers with UNIMPLEMENTED (still listed by reflection).
_NOT_YET_SERVED: tuple[ServiceDescriptor, ...] = ()


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
        self._grpc: grpc.aio.Server | None = None
        self._http: web.AppRunner | None = None
        self._lock: StateDirLock | None = None
        self._state: SqliteState | None = None
        self._validator: Validator | None = None
        self.controls: Controls | None = None
        self.ledger: BudgetLedger | None = None
        self.admission: Admission | None = None
        self.executor: Executor | None = None
        self.events: DaemonEvents | None = None
        self.policies: PolicyStore | None = None
        self._authenticator: Authenticator | None = None
        self._reporter: DenialReporter | None = None
        self._background: set[asyncio.Task[None]] = set()
        self.grpc_address: HostPort | None = None
        self.http_address: HostPort | None = None
        self.phase_log: list[Phase] = []
        self._shutdown: asyncio.Future[None] | None = None

    @property
    def phase(self) -> Phase:
        return self._phase

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
        """Check inputs, take the state directory, bind both listeners, then report ready."""
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
        self._lock = StateDirLock.acquire(s.state_dir)
        self._state = SqliteState.open(s.state_dir, initialise=s.init_state)
        self.events = DaemonEvents(
            s.state_dir,
            on_emit=self._count_event,
            segment_bytes=s.event_log_segment,
            keep_bytes=s.event_log_keep,
        )
        self._authenticator = Authenticator(self._state)
        self._reporter = DenialReporter(
            self.events.emit, lambda reason: self.metrics.auth_denials.labels(reason=reason).inc()
        )
        self._validator = Validator(processes=True)
        self.policies = PolicyStore(
            self._state,
            s.config_dir,
            emit=self.events.emit,
            on_change=self._policy_changed,
            validator=self._validator,
        )
        await self.policies.start(prefer_config_dir=s.startup_policy == "config")
        assert self.policies.active is not None
        board = BreakerBoard(self.policies.active.snapshot.policies.breakers, on_change=self._breaker_changed)
        self.controls = Controls(self._state, board, self.events.emit)
        await self.controls.load()
        self.ledger = BudgetLedger(self._state)
        await self.ledger.load()
        policy = self.policies.active.snapshot.policies
        self.ledger.cap_nano = _nano(policy.budget.daily_cap_usd)
        self.admission = Admission(policy.limits.concurrency, policy.limits.queue_depth)
        self.metrics.read_levels(self._levels)
        self.executor = Executor(
            policies=self.policies,
            controls=self.controls,
            ledger=self.ledger,
            admission=self.admission,
            observe=self._observe,
        )
        # HTTP first: an aiohttp runner gives its port back when cleaned up, while a grpc server that
        # bound a port but never started keeps it until the process exits.
        self._http, self.http_address = await self._start_http(s.http_listen)
        self._grpc = self._build_grpc_server()
        self.grpc_address = _bind_grpc(self._grpc, s.grpc_listen, self._grpc_credentials())
        await self._grpc.start()
        await self._health.set("", health.SERVING)
        self._enter(Phase.SERVING)
        log.info(
            "aiond %s serving: gRPC on %s, HTTP on %s (config %s, state %s)",
            __version__,
            self.grpc_address,
            self.http_address,
            s.config_dir,
            s.state_dir,
        )

    def request_stop(self, *, force: bool = False) -> None:
        """Ask :meth:`serve` to shut down; ``force`` (or a second request while draining) skips the waits."""
        if force or self._stop_requested.is_set():
            self._force_stop.set()
        self._stop_requested.set()

    async def shutdown(self) -> None:
        """Stop in the documented order. Safe after a failed or partial startup, and idempotent:
        concurrent calls wait for the one shutdown in progress.

        Worst case, without a second signal: ``--shutdown-delay`` + ``--shutdown-grace`` (gRPC) +
        ``--shutdown-grace`` (HTTP requests still running, in practice none: they are probes).
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
            # 6. Close the database and release the state directory, whatever failed above.
            for task in self._background:
                task.cancel()
            if self.executor is not None:
                grace = 0.0 if self._force_stop.is_set() else self.settings.shutdown_grace
                await self.executor.close(grace)
            if self.events is not None:
                await self.events.flush()
            if self.policies is not None:
                await self.policies.drain()  # a change whose caller left still finishes
            if self._validator is not None:
                self._validator.close()
            if self._state is not None:
                self._state.close()
            if self._lock is not None:
                self._lock.release()
            self._enter(Phase.STOPPED)
            if served:
                log.info("stopped")

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
        # 4. gRPC: refuse new calls, let in-flight ones finish within the grace period.
        assert self._grpc is not None
        if self._force_stop.is_set():  # asked twice already: one immediate stop, never two at once
            log.warning("second stop request: cancelling in-flight calls")
            await self._grpc.stop(0)
            return
        stopping = asyncio.ensure_future(self._grpc.stop(self.settings.shutdown_grace))
        forced = asyncio.ensure_future(self._force_stop.wait())
        try:
            await asyncio.wait({stopping, forced}, return_when=asyncio.FIRST_COMPLETED)
            if not stopping.done():
                # grpc.aio documents a second stop() with a smaller grace as the way to stop sooner.
                log.warning("second stop request: cancelling in-flight calls")
                await self._grpc.stop(0)
            await stopping
        finally:
            forced.cancel()

    # -- assembly ---------------------------------------------------------------------------------

    def _build_grpc_server(self) -> grpc.aio.Server:
        limit = self.settings.grpc_max_message_bytes
        assert self._authenticator is not None
        assert self._reporter is not None
        assert self.policies is not None
        assert self.events is not None
        guard = AuthInterceptor(
            self._authenticator, self._reporter, mtls=self.settings.tls_client_ca is not None
        )
        server = grpc.aio.server(
            interceptors=[self._tracker, guard],
            options=[
                # Never share a port with another process: a second daemon must fail to bind.
                ("grpc.so_reuseport", 0),
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", limit),
                *_GRPC_KEEPALIVE_OPTIONS,
            ],
        )
        names = [health.add_to_server(server, self._health)]
        names.append(admin.add_to_server(server, self.status, self.policies, self.controls))
        names.append(
            modules.add_to_server(
                server,
                self.settings.modules_dir,
                self.settings.config_dir,
                frozenset(self.settings.registry_plain_http),
                events_log=self.events.path,
                trust=self._active_trust,
            )
        )
        names.append(policies.add_to_server(server, self.policies))
        names.append(router.add_to_server(server, self.policies, self.live_state))
        assert self.executor is not None
        names.append(tasks.add_to_server(server, self.executor))
        names.append(event_tail.add_to_server(server, self.events))
        names.extend(unimplemented.add_to_server(server, service) for service in _NOT_YET_SERVED)
        names.extend(binding.register(server) for binding in self._extra_services)
        names.append(reflection.SERVICE_NAME)
        reflection.enable_server_reflection(names, server)
        return server

    async def _start_http(self, listen: HostPort) -> tuple[web.AppRunner, HostPort]:
        app = http.build_app(
            readiness=self._readiness,
            metrics=self.metrics,
            version=__version__,
            policy=http.PolicyEndpoints(self._http_policy_status, self._http_reload),
            authenticator=self._authenticator,
            reporter=self._reporter,
        )
        runner = web.AppRunner(
            app, handle_signals=False, access_log=None, shutdown_timeout=self.settings.shutdown_grace
        )
        await runner.setup()
        sock: socket.socket | None = None
        try:
            sock = _listen_socket(listen, what="HTTP", flag="--http-listen")
            bound = sock.getsockname()
            await web.SockSite(runner, sock, ssl_context=self._http_tls()).start()
        except BaseException:
            if sock is not None:
                sock.close()
            await runner.cleanup()
            raise
        return runner, HostPort(listen.host, int(bound[1]))

    def _readiness(self) -> tuple[bool, str]:
        return self._phase is Phase.SERVING, self._phase.value

    def status(self) -> admin.DaemonStatus:
        """The daemon's self-description, as AdminService.GetStatus reports it."""
        active = self.policies.active if self.policies is not None else None
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

    # -- policies ---------------------------------------------------------------------------------

    def _policy_changed(self, active: ActiveConfig, source: str, outcome: str, seconds: float) -> None:
        # The active snapshot lives until the next change: move it (and everything else alive now) out
        # of the collector's generations, so that full collections, which would otherwise walk every
        # object of a 1,000-intent set and pause the event loop for milliseconds, stay short. A
        # replaced snapshot is still freed by reference counting (it holds no cycles).
        gc.freeze()
        policy = active.snapshot.policies
        if self.controls is not None:
            self.controls.board.reconfigure(policy.breakers)
        if self.ledger is not None:
            self.ledger.cap_nano = _nano(policy.budget.daily_cap_usd)
        if self.admission is not None:
            self.admission.reconfigure(policy.limits.concurrency, policy.limits.queue_depth)
        self.metrics.policy_active_version.set(active.version.number)
        self.metrics.policy_activations.labels(source=source, outcome=outcome).inc()
        if seconds:
            self.metrics.policy_activation_duration.observe(seconds)

    def _count_event(self, event: dict[str, object]) -> None:
        self.metrics.audit_events.labels(
            action=str(event.get("action")), outcome=str(event.get("outcome"))
        ).inc()
        if event.get("action") in ("policy.apply", "policy.reload") and event.get("outcome") == "refused":
            details = event.get("details")
            source = details.get("source", "") if isinstance(details, dict) else ""
            self.metrics.policy_activations.labels(source=str(source), outcome="refused").inc()

    def live_state(self) -> LiveState:
        """What the router knows now that is not in the config: breakers, latencies, intent modes."""
        return self.controls.live() if self.controls is not None else LiveState()

    def _observe(self, name: str, value: Any) -> None:
        """What the executor reports: metrics, and the task events of the local event log."""
        m = self.metrics
        if name == "decision_seconds":
            m.decision_duration.observe(value)
        elif name == "decided":
            m.decided(value.route.value, value.chosen_by).inc()
        elif name == "refused":
            m.task_rejections.labels(reason=value).inc()
        elif name == "retry":
            m.task_retries.labels(provider=value.provider or value.key).inc()
        elif name == "retry_denied":
            m.retries_denied.labels(provider=value.provider or value.key).inc()
        elif name == "fallback":
            m.task_fallbacks.labels(provider=value.provider or value.key).inc()
        elif name == "spent":
            m.budget_spent.inc(value / 1e9)
        elif name == "finished":
            elapsed = ((value.finished_at or value.created_at) - value.created_at).total_seconds()
            m.finished(value.decision.route.value, value.status.name).observe(elapsed)
        elif name == "event":
            self._task_event(*value)

    def _levels(self) -> Levels:
        """Reserved budget, and running and queued tasks by route (read by each metrics scrape)."""
        reserved = self.ledger.reserved_nano / 1e9 if self.ledger is not None else 0.0
        if self.admission is None:
            return reserved, {}
        return reserved, {route.value: self.admission.depth(route) for route in Route}

    def _task_event(self, task: TaskRecord, state: str) -> None:
        assert self.events is not None
        d = task.decision
        common = {"task_id": task.task_id, "intent": task.intent, "route": d.route.value,
                  "policy_version": task.policy_version}  # fmt: skip
        if state in ("admitted", "queued"):
            self.events.emit_soon(
                event(DECISIONS_TOPIC, **common, tier=d.tier, target=d.target.key,
                      fallback_chain=[t.key for t in d.fallback_chain],
                      prepare=d.prepare.key if d.prepare else None, chosen_by=d.chosen_by, reason=d.reason,
                      reason_codes=list(d.reason_codes), estimated_max_usd=usd(d.estimated_max_nano))
            )  # fmt: skip
        if state in ("admitted", "running"):
            return  # the decision event marks admission; lifecycle events record a wait and the end
        extra: dict[str, Any] = {"attempts": len(task.attempts)}
        if task.status.terminal:
            elapsed = ((task.finished_at or task.created_at) - task.created_at).total_seconds()
            extra |= {"latency_ms": round(elapsed * 1000), "cost_usd": usd(task.cost_nano),
                      "error_code": task.error.code if task.error else None}  # fmt: skip
        self.events.emit_soon(event(LIFECYCLE_TOPIC, **common, status=state, **extra))

    def _breaker_changed(self, breaker: Breaker, before: BreakerState, after: BreakerState) -> None:
        self.metrics.breaker_transitions.labels(breaker=breaker.key, to=after.value).inc()
        log.warning("breaker %s: %s -> %s", breaker.key, before.value, after.value)

    def _active_trust(self) -> Trust | None:
        active = self.policies.active if self.policies is not None else None
        return active.snapshot.policies.trust if active is not None else None

    def _http_policy_status(self) -> dict[str, object]:
        assert self.policies is not None
        return http.document("PolicyStatus", policies.status_message(self.policies))

    async def _http_reload(self, principal: Principal, dry_run: bool) -> tuple[int, dict[str, object]]:
        assert self.policies is not None
        try:
            outcome = await self.policies.reload(principal=principal.name, source="http", dry_run=dry_run)
        except ActivationRefused as exc:
            refused = policies.refusal(self.policies, exc, policies_pb2.ReloadPolicyResponse)
            body = http.document("PolicyActivation", refused.activation)
            body["message"] = exc.message
            return 422, body
        except StaleActiveVersion as exc:
            return 409, http.error_document(exc.message, "Conflict")
        except Error as exc:
            return 409, http.error_document(exc.message, "FailedPrecondition")
        return 200, http.document("PolicyActivation", policies.activation(self.policies, outcome))

    async def _sighup_reload(self) -> None:
        assert self.policies is not None
        try:
            await self.policies.reload(principal="aiond", source="sighup")
        except Error as exc:
            log.error("SIGHUP reload refused: %s", exc.message)

    # -- TLS --------------------------------------------------------------------------------------

    def _read_pem(self, path: Path, what: str) -> bytes:
        try:
            return path.read_bytes()
        except OSError as exc:
            raise InputError(
                f"cannot read the {what} {path}: {exc.strerror}", hint="check the --tls-* flags"
            ) from exc

    def _http_tls(self) -> ssl.SSLContext | None:
        s = self.settings
        if s.tls_cert is None or s.tls_key is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(s.tls_cert, s.tls_key)
            if s.tls_client_ca is not None:
                # Optional on HTTP: probes carry no certificate; a presented one must verify and then
                # names the principal, and tokens authorise as on gRPC.
                context.load_verify_locations(cafile=str(s.tls_client_ca))
                context.verify_mode = ssl.CERT_OPTIONAL
        except (OSError, ssl.SSLError) as exc:
            raise InputError(
                f"cannot use the TLS files: {exc}", hint="check --tls-cert, --tls-key and --tls-client-ca"
            ) from exc
        return context

    def _grpc_credentials(self) -> grpc.ServerCredentials | None:
        s = self.settings
        if s.tls_cert is None or s.tls_key is None:
            return None
        cert = self._read_pem(s.tls_cert, "TLS certificate")
        key = self._read_pem(s.tls_key, "TLS key")
        ca = self._read_pem(s.tls_client_ca, "client CA") if s.tls_client_ca else None
        return grpc.ssl_server_credentials(
            [(key, cert)], root_certificates=ca, require_client_auth=ca is not None
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
        task = asyncio.ensure_future(self._sighup_reload())
        self._background.add(task)
        task.add_done_callback(self._background.discard)


def _nano(value: Decimal | None) -> int | None:
    return None if value is None else int(value * 1_000_000_000)


def _listen_socket(listen: HostPort, *, what: str, flag: str) -> socket.socket:
    """A bound, listening TCP socket, or an error that says precisely why the address cannot be used."""
    try:
        infos = socket.getaddrinfo(listen.host, listen.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise InputError(
            f"cannot listen for {what} on {listen}: cannot resolve {listen.host!r} ({exc.strerror})",
            hint=f"use an IP address or a resolvable host name in {flag}",
        ) from exc
    family, _, _, _, sockaddr = infos[0]
    try:
        return socket.create_server(sockaddr[:2], family=family, reuse_port=False)
    except OSError as exc:
        raise _bind_error(listen, what, flag, exc) from exc


def _bind_error(listen: HostPort, what: str, flag: str, exc: OSError) -> Exception:
    if exc.errno == errno.EADDRINUSE:
        return ConflictError(
            f"cannot listen for {what} on {listen}: address already in use",
            hint=f"another aiond or another program holds it; choose a free port with {flag}",
        )
    if exc.errno == errno.EACCES:
        return InputError(
            f"cannot listen for {what} on {listen}: permission denied",
            hint=f"use a port above 1023 with {flag}",
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return InputError(
            f"cannot listen for {what} on {listen}: no such address on this host",
            hint=f"use an address of one of this host's interfaces in {flag}, or 0.0.0.0",
        )
    return InputError(f"cannot listen for {what} on {listen}: {exc.strerror}", hint=f"check {flag}")


def _bind_grpc(
    server: grpc.aio.Server, listen: HostPort, credentials: grpc.ServerCredentials | None
) -> HostPort:
    # Probe the address with a plain socket first (port 0 included: binding it still checks the
    # address): it gives the precise reason where grpc only says "failed to bind". grpc's own bind
    # below stays the authority.
    _listen_socket(listen, what="gRPC", flag="--grpc-listen").close()
    try:
        if credentials is None:
            port = server.add_insecure_port(str(listen))
        else:
            port = server.add_secure_port(str(listen), credentials)
    except RuntimeError as exc:
        raise InputError(f"cannot listen for gRPC on {listen}: {exc}", hint="check --grpc-listen") from exc
    return HostPort(listen.host, port)


__all__ = ["Daemon", "Phase", "ServiceBinding"]
