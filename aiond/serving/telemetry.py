"""aiond's Prometheus metrics and the gRPC interceptor that feeds them.

Metrics live in a registry owned by the daemon instance (never the process-global default), so two
daemons in one test process do not share counters. Names follow Prometheus conventions: ``aion_``
prefix, base units, ``_total`` for counters. Every family is registered whether or not the part that
feeds it runs (the event delivery families exist on a daemon without Kafka, at 0), so the dashboards
in ``examples/dashboards/`` and alerting rules work on every daemon; ``docs/observability.md`` lists
them all.

:class:`CallTracker` counts every gRPC call once with its final status: answered, aborted by the
error table or the auth check, cancelled by the client, past its deadline, and calls to a method the
daemon does not serve (counted under ``service="unknown", method="unknown"``, since a client picks
that path and the label set must stay bounded).
"""

from __future__ import annotations

import asyncio
import inspect
import platform
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from typing import Any, TypeAlias

import grpc
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.registry import Collector

from aion import __version__
from aion.envelopes import AUDIT_TOPIC, DECISIONS_TOPIC, LIFECYCLE_TOPIC
from aiond.serving.interceptors import Handler, WrapOnce, with_behavior

Levels: TypeAlias = "tuple[float, Mapping[str, tuple[int, int]]]"
"""What is reserved now (USD), and tasks (running, waiting) by route."""


def cached_labels(metric: MetricWrapperBase) -> Callable[..., Any]:
    """``metric.labels(*values)``, remembered per label values. prometheus_client checks the values and
    takes a lock on every ``labels()`` call; the hot path (several per task) asks for the same few
    children over and over. Label values here come from bounded sets (routes, statuses, methods,
    configured providers), so the cache stays small."""
    children: dict[tuple[str, ...], Any] = {}

    def child(*values: str) -> Any:
        found = children.get(values)
        if found is None:
            found = children[values] = metric.labels(*values)
        return found

    return child


class _LevelsCollector(Collector):
    """Reserved budget, running and waiting tasks, read when Prometheus scrapes rather than set on each
    change: they move with every task, and are only looked at once per scrape."""

    def __init__(self) -> None:
        self.read: Callable[[], Levels] = lambda: (0.0, {})

    def describe(self) -> Iterator[Metric]:
        return iter(self._families())

    def collect(self) -> Iterator[Metric]:
        reserved, depths = self.read()
        return iter(self._families(reserved, depths))

    @staticmethod
    def _families(reserved: float = 0.0, depths: Mapping[str, tuple[int, int]] | None = None) -> list[Metric]:
        budget = GaugeMetricFamily(
            "aion_budget_reserved_usd", "Worst-case costs reserved by tasks still running, in USD.", reserved
        )
        waiting = GaugeMetricFamily(
            "aion_route_queue_depth", "Tasks waiting for a running slot, by route.", labels=["route"]
        )
        running = GaugeMetricFamily("aion_route_tasks_running", "Tasks running, by route.", labels=["route"])
        for route, (now_running, now_waiting) in (depths or {}).items():
            waiting.add_metric([route], now_waiting)
            running.add_metric([route], now_running)
        return [budget, waiting, running]


ModuleLevels: TypeAlias = "Mapping[str, tuple[int, int, int]]"
"""Per module: (calls running, calls waiting, parallelism)."""


class _ModuleLevelsCollector(Collector):
    """Module calls in flight and waiting, and each module's parallelism, read at each scrape."""

    def __init__(self) -> None:
        self.read: Callable[[], ModuleLevels] = dict

    def describe(self) -> Iterator[Metric]:
        return iter(self._families({}))

    def collect(self) -> Iterator[Metric]:
        return iter(self._families(self.read()))

    @staticmethod
    def _families(levels: ModuleLevels) -> list[Metric]:
        running = GaugeMetricFamily(
            "aion_module_calls_in_flight", "Module calls running, by module.", labels=["module"]
        )
        waiting = GaugeMetricFamily(
            "aion_module_queue_depth", "Module calls waiting for a slot, by module.", labels=["module"]
        )
        limit = GaugeMetricFamily(
            "aion_module_parallelism", "Calls a module may run at once (its parallelism), by module.",
            labels=["module"],
        )  # fmt: skip
        for name, (now_running, now_waiting, parallelism) in levels.items():
            running.add_metric([name], now_running)
            waiting.add_metric([name], now_waiting)
            limit.add_metric([name], parallelism)
        return [running, waiting, limit]


class Metrics:
    """The daemon's metric families, registered in their own registry."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        build = Gauge(
            "aion_build_info",
            "aiond build information; the value is always 1.",
            ["version", "python"],
            registry=self.registry,
        )
        build.labels(version=__version__, python=platform.python_version()).set(1)
        self.ready = Gauge(
            "aion_daemon_ready", "1 while aiond reports ready on /readyz, else 0.", registry=self.registry
        )
        self.grpc_in_flight = Gauge(
            "aion_grpc_requests_in_flight", "gRPC calls being served right now.", registry=self.registry
        )
        self.grpc_requests = Counter(
            "aion_grpc_requests",
            "gRPC calls finished, by service, method and status code.",
            ["service", "method", "code"],
            registry=self.registry,
        )
        self.grpc_duration = Histogram(
            "aion_grpc_request_duration_seconds",
            "Time to serve a gRPC call, by service and method.",
            ["service", "method"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )

        self.policy_activations = Counter(
            "aion_policy_activations",
            "Policy activation attempts, by source (apply, reload, http, sighup, startup, rollback) "
            "and outcome (success, refused).",
            ["source", "outcome"],
            registry=self.registry,
        )
        self.policy_active_version = Gauge(
            "aion_policy_active_version", "Number of the active policy version; 0 while none is.",
            registry=self.registry,
        )  # fmt: skip
        self.policy_activation_duration = Histogram(
            "aion_policy_activation_duration_seconds",
            "Time from reading a config set to its activation (read, validate, store, swap).",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.auth_denials = Counter(
            "aion_auth_denials",
            "Calls refused by authentication (unauthenticated) or authorisation (forbidden).",
            ["reason"],
            registry=self.registry,
        )
        self.breaker_transitions = Counter(
            "aion_breaker_transitions",
            "Circuit breaker state changes, by breaker (provider or provider:model) and new state.",
            ["breaker", "to"],
            registry=self.registry,
        )
        self.decisions = Counter(
            "aion_route_decisions", "Tasks admitted, by the route decided and who chose it.",
            ["route", "chosen_by"], registry=self.registry,
        )  # fmt: skip
        self.decision_duration = Histogram(
            "aion_route_decision_duration_seconds", "Time to decide a task's route (the routing engine).",
            buckets=(5e-6, 1e-5, 2e-5, 5e-5, 1e-4, 2.5e-4, 1e-3, 1e-2), registry=self.registry,
        )  # fmt: skip
        self.task_duration = Histogram(
            "aion_task_duration_seconds", "Time from admission to a terminal state, by route and status.",
            ["route", "status"], registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        )  # fmt: skip
        self.task_rejections = Counter(
            "aion_task_rejections",
            "Tasks refused before they ran, by code (the router's refusal, ROUTE_SATURATED or "
            "MODULE_SATURATED).",
            ["reason"], registry=self.registry,
        )  # fmt: skip
        self.task_retries = Counter(
            "aion_task_retries", "Retries of a call to the same target, by provider.", ["provider"],
            registry=self.registry,
        )  # fmt: skip
        self.retries_denied = Counter(
            "aion_task_retries_denied", "Retries the retry budget refused, by provider.", ["provider"],
            registry=self.registry,
        )  # fmt: skip
        self.deduplicated = Counter(
            "aion_task_deduplicated",
            "Submissions answered with the earlier task of the same idempotency key.",
            registry=self.registry,
        )  # fmt: skip
        self.task_fallbacks = Counter(
            "aion_task_fallbacks", "Moves to the next target of a decision's chain, by the target moved to.",
            ["provider"], registry=self.registry,
        )  # fmt: skip
        self.budget_spent = Counter(
            "aion_budget_spent_usd", "What finished tasks cost, in USD.", registry=self.registry
        )
        self._levels = _LevelsCollector()
        self.registry.register(self._levels)
        self.module_duration = Histogram(
            "aion_module_call_duration_seconds",
            "Module calls, by module and outcome (ok, or the failure kind).",
            ["module", "outcome"], registry=self.registry,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )  # fmt: skip
        self.module_failures = Counter(
            "aion_module_failures",
            "Module calls that gave no answer, by module and kind (timeout, fuel, trap, oom, crash, "
            "bad_output, declined, secret, unavailable, saturated).", ["module", "kind"],
            registry=self.registry,
        )  # fmt: skip
        self._module_levels = _ModuleLevelsCollector()
        self.registry.register(self._module_levels)
        self.audit_events = Counter(
            "aion_audit_events", "Audit events recorded, by action and outcome.", ["action", "outcome"],
            registry=self.registry,
        )  # fmt: skip
        self._delivery_metrics()

        self.decided = cached_labels(self.decisions)
        self.finished = cached_labels(self.task_duration)
        self.module_called = cached_labels(self.module_duration)

    def _delivery_metrics(self) -> None:
        """The outbox and Kafka delivery families (set by the event delivery code). Label values are
        bounded: ``kind`` is audit or task, ``topic`` an event's own topic (its envelope's, not the
        Kafka topic it is configured to go to), ``reason`` a librdkafka error name."""
        self.outbox_events = Gauge(
            "aion_outbox_events", "Events waiting in the outbox for delivery, by kind (audit, task).",
            ["kind"], registry=self.registry,
        )  # fmt: skip
        self.outbox_bytes = Gauge(
            "aion_outbox_bytes", "Bytes of events waiting in the outbox.", registry=self.registry
        )
        self.outbox_limit_bytes = Gauge(
            "aion_outbox_limit_bytes",
            "Size the outbox may reach; past it task events are shed and admin actions refused.",
            registry=self.registry,
        )
        self.outbox_oldest_age = Gauge(
            "aion_outbox_oldest_event_age_seconds",
            "Age of the oldest event waiting in the outbox; 0 when it is empty.", registry=self.registry,
        )  # fmt: skip
        self.events_shed = Counter(
            "aion_events_shed", "Task events dropped because the outbox was full, by topic.", ["topic"],
            registry=self.registry,
        )  # fmt: skip
        self.outbox_write_duration = Histogram(
            "aion_outbox_write_duration_seconds", "Time to write one batch of events to the outbox.",
            buckets=(2e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.5),
            registry=self.registry,
        )  # fmt: skip
        self.kafka_delivered = Counter(
            "aion_kafka_delivered", "Events Kafka acknowledged (delivery report without error), by topic.",
            ["topic"], registry=self.registry,
        )  # fmt: skip
        self.kafka_produce_errors = Counter(
            "aion_kafka_produce_errors",
            "Failed deliveries and producer errors, by reason (the librdkafka error name).", ["reason"],
            registry=self.registry,
        )  # fmt: skip
        self.kafka_delivery_duration = Histogram(
            "aion_kafka_delivery_seconds",
            "Time from an event's outbox write to its delivery report from Kafka.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=self.registry,
        )  # fmt: skip
        self.kafka_connected = Gauge(
            "aion_kafka_connected", "1 while the Kafka producer has a broker connection, else 0.",
            registry=self.registry,
        )  # fmt: skip
        self.backup_last_success = Gauge(
            "aion_backup_last_success_timestamp_seconds",
            "When the last snapshot of the state was completed (Unix time; 0: none yet), by source: "
            "scheduled (--backup-dir) or online (BackupService.CreateBackup).", ["source"],
            registry=self.registry,
        )  # fmt: skip
        self.backup_failures = Counter(
            "aion_backup_failures", "Snapshots of the state that failed, by source (scheduled, online).",
            ["source"], registry=self.registry,
        )  # fmt: skip
        for source in ("scheduled", "online"):
            self.backup_last_success.labels(source=source)
            self.backup_failures.labels(source=source)
        # The known label values start at 0, so a series exists (and a rate is 0, not absent) before
        # the first event, and on a daemon that has no Kafka.
        for kind in ("audit", "task"):
            self.outbox_events.labels(kind=kind)
        for topic in (DECISIONS_TOPIC, LIFECYCLE_TOPIC):
            self.events_shed.labels(topic=topic)
        for topic in (AUDIT_TOPIC, DECISIONS_TOPIC, LIFECYCLE_TOPIC):
            self.kafka_delivered.labels(topic=topic)

    def read_modules(self, read: Callable[[], ModuleLevels]) -> None:
        """Where the module levels come from (read at each scrape)."""
        self._module_levels.read = read

    def read_levels(self, read: Callable[[], Levels]) -> None:
        """Where the reserved budget and the queue levels come from (read at each scrape)."""
        self._levels.read = read

    def exposition(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)


class CallTracker(WrapOnce):
    """Counts in-flight gRPC calls (for the status report) and records each call's duration and code."""

    def __init__(self, metrics: Metrics) -> None:
        super().__init__()
        self._metrics = metrics
        self._in_flight = 0
        metrics.grpc_in_flight.set_function(lambda: self._in_flight)
        self._requests = cached_labels(metrics.grpc_requests)
        self._durations = cached_labels(metrics.grpc_duration)
        # grpc answers a method nobody serves by itself, past every interceptor's wrapper; this
        # handler answers as grpc would, inside one, so that such calls are counted too.
        self._unknown: Handler = grpc.stream_stream_rpc_method_handler(
            self._track(_unimplemented, ("unknown", "unknown"))
        )

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def _enter(self) -> float:
        self._in_flight += 1
        return time.perf_counter()

    def _exit(self, names: tuple[str, str], started: float, code: grpc.StatusCode) -> None:
        self._in_flight -= 1
        self._requests(*names, code.name).inc()
        self._durations(*names).observe(time.perf_counter() - started)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await super().intercept_service(continuation, handler_call_details)
        return self._unknown if handler is None else handler

    def wrap(self, handler: Handler, method: str) -> Handler:
        service, _, name = method.lstrip("/").rpartition("/")
        return with_behavior(handler, lambda behavior: self._track(behavior, (service, name)))

    def _track(self, behavior: Any, names: tuple[str, str]) -> Any:
        # grpc.aio tells response-streaming handlers apart by kind: an async generator yields its
        # responses, a coroutine writes them through context.write(). The wrapper keeps the kind.
        if inspect.isasyncgenfunction(behavior):

            async def tracked_stream(
                request: Any, context: grpc.aio.ServicerContext[Any, Any]
            ) -> AsyncIterator[Any]:
                started = self._enter()
                code = grpc.StatusCode.OK
                try:
                    async for response in behavior(request, context):
                        yield response
                except BaseException as exc:
                    code = _code_for(exc, context)
                    raise
                else:
                    code = _set_code(context)
                finally:
                    self._exit(names, started, code)

            wrapped: Any = tracked_stream
        else:

            async def tracked(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                started = self._enter()
                code = grpc.StatusCode.OK
                try:
                    result = await behavior(request, context)
                except BaseException as exc:
                    code = _code_for(exc, context)
                    raise
                else:
                    code = _set_code(context)
                    return result
                finally:
                    self._exit(names, started, code)

            wrapped = tracked
        return wrapped


def _set_code(context: grpc.aio.ServicerContext[Any, Any]) -> grpc.StatusCode:
    """The code a handler set with set_code(), or OK; grpc returns None when none was set."""
    code: grpc.StatusCode | None = context.code()
    return code if code is not None else grpc.StatusCode.OK


async def _unimplemented(requests: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
    await context.abort(grpc.StatusCode.UNIMPLEMENTED, "Method not found!")


def _code_for(exc: BaseException, context: grpc.aio.ServicerContext[Any, Any]) -> grpc.StatusCode:
    if isinstance(exc, asyncio.CancelledError | GeneratorExit):
        # grpc cancels the handler (or closes a streaming handler's generator) both when the client
        # goes away and when the call's deadline passes; the client sees DEADLINE_EXCEEDED in the
        # second case, and so do the metrics.
        remaining: float | None = context.time_remaining()  # None without a deadline, despite the stubs
        if remaining is not None and remaining <= 0:
            return grpc.StatusCode.DEADLINE_EXCEEDED
        return grpc.StatusCode.CANCELLED
    code: grpc.StatusCode | None = context.code()
    if isinstance(exc, grpc.aio.AbortError) and code is not None:
        return code
    return grpc.StatusCode.UNKNOWN


__all__ = ["CallTracker", "Metrics"]
