"""How the daemon reports what happens inside it: the executor's observer (metrics and task events),
and the metric side of policy changes, breaker transitions and recorded audit events.

The executor, the policy store and the breakers know nothing of Prometheus or of the event log; the
daemon's composition (:mod:`aiond.serving.runtime`) hands them the callbacks defined here.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from aion import __version__
from aion.config.model import Route
from aion.envelopes import DECISIONS_TOPIC, LIFECYCLE_TOPIC, RUNTIME_TOPIC, event, usd
from aion.routing import BreakerState, Target
from aiond.events.journal import Journal
from aiond.execution.admission import Admission
from aiond.execution.breakers import Breaker
from aiond.execution.budget import BudgetLedger
from aiond.execution.modules import Modules
from aiond.execution.taskstore import TaskRecord
from aiond.serving.telemetry import Levels, Metrics, ModuleLevels
from aiond.state.backend import OutboxLevels, StateBackend

log = logging.getLogger("aiond")


class TaskReporter:
    """The daemon's :class:`~aiond.execution.observer.ExecutionObserver`: metrics, and the decision and
    lifecycle events of every task, batched into the journal."""

    def __init__(self, metrics: Metrics, journal: Journal) -> None:
        self._metrics = metrics
        self._journal = journal

    def decided(self, seconds: float) -> None:
        self._metrics.decision_duration.observe(seconds)

    def refused(self, code: str) -> None:
        self._metrics.task_rejections.labels(reason=code).inc()

    def deduplicated(self) -> None:
        self._metrics.deduplicated.inc()

    def admitted(self, task: TaskRecord) -> None:
        self._metrics.decided(task.decision.route.value, task.decision.chosen_by).inc()

    def retried(self, target: Target) -> None:
        self._metrics.task_retries.labels(provider=target.provider or target.key).inc()

    def retry_denied(self, target: Target) -> None:
        self._metrics.retries_denied.labels(provider=target.provider or target.key).inc()

    def fell_back(self, target: Target) -> None:
        self._metrics.task_fallbacks.labels(provider=target.provider or target.key).inc()

    def spent(self, nano_usd: int) -> None:
        self._metrics.budget_spent.inc(nano_usd / 1e9)

    def finished(self, task: TaskRecord) -> None:
        elapsed = ((task.finished_at or task.created_at) - task.created_at).total_seconds()
        self._metrics.finished(task.decision.route.value, task.status.name).observe(elapsed)

    def module_called(self, name: str, seconds: float, failure: str | None) -> None:
        self._metrics.module_called(name, failure or "ok").observe(seconds)
        if failure is not None:
            self._metrics.module_failures.labels(module=name, kind=failure).inc()

    def changed(self, task: TaskRecord, state: str) -> None:
        """A decision event when the task is admitted (or queued); lifecycle events when it waits and
        when it ends."""
        d = task.decision
        common = {"task_id": task.task_id, "intent": task.intent, "route": d.route.value,
                  "policy_version": task.policy_version}  # fmt: skip
        if state in ("admitted", "queued"):
            self._journal.emit_soon(
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
        self._journal.emit_soon(event(LIFECYCLE_TOPIC, **common, status=state, **extra))


class DeliveryReporter:
    """The metrics of the outbox and of Kafka delivery (:class:`aiond.events.kafka.DeliveryObserver`):
    called from the relay's thread (prometheus_client's metrics are thread-safe) and, for outbox
    writes, from the journal's."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._shed: dict[str, int] = {}

    def wrote(self, then: Callable[[], None] | None) -> Callable[[float], None]:
        """The journal's ``on_outbox``: time a batch written to the outbox, then wake the relay."""

        def on_outbox(seconds: float) -> None:
            if seconds:
                self._metrics.outbox_write_duration.observe(seconds)
            if then is not None:
                then()

        return on_outbox

    def delivered(self, topic: str, seconds: float) -> None:
        self._metrics.kafka_delivered.labels(topic=topic).inc()
        self._metrics.kafka_delivery_duration.observe(seconds)

    def failed(self, reason: str) -> None:
        self._metrics.kafka_produce_errors.labels(reason=reason).inc()

    def connected(self, up: bool) -> None:
        self._metrics.kafka_connected.set(1 if up else 0)

    def levels(self, levels: OutboxLevels, shed: Mapping[str, int]) -> None:
        m = self._metrics
        m.outbox_events.labels(kind="audit").set(levels.audit)
        m.outbox_events.labels(kind="task").set(levels.task)
        m.outbox_bytes.set(levels.bytes)
        m.outbox_oldest_age.set(0 if levels.oldest_at is None else max(0.0, time.time() - levels.oldest_at))
        for topic, count in shed.items():
            more = count - self._shed.get(topic, 0)
            if more > 0:
                m.events_shed.labels(topic=topic).inc(more)
                self._shed[topic] = count


RUNTIME_EVENT_SECONDS = 60.0
"""How often aiond records a runtime snapshot (topic aion.metrics.runtime)."""


class RuntimeReporter:
    """A snapshot of what this aiond is doing (tasks by route, reserved budget, the outbox, module
    calls, memory and CPU), recorded as an ``aion.metrics.runtime`` event every
    :data:`RUNTIME_EVENT_SECONDS` and at shutdown: the Kafka-side view of what /metrics serves."""

    def __init__(
        self,
        journal: Journal,
        *,
        instance: str,
        state: StateBackend,
        ledger: BudgetLedger,
        admission: Admission,
        modules: Modules,
    ) -> None:
        self._journal = journal
        self._instance = instance
        self._state = state
        self._ledger = ledger
        self._admission = admission
        self._modules = modules
        self._started = time.monotonic()

    def snapshot(self) -> dict[str, Any]:
        outbox = self._state.outbox_levels()
        oldest = 0.0 if outbox.oldest_at is None else max(0.0, time.time() - outbox.oldest_at)
        routes = {route.value: self._admission.depth(route) for route in Route}
        return event(
            RUNTIME_TOPIC,
            instance=self._instance,
            version=__version__,
            uptime_s=round(time.monotonic() - self._started, 3),
            routes={name: {"running": run, "queued": wait} for name, (run, wait) in routes.items()},
            reserved_usd=usd(self._ledger.reserved_nano),
            outbox={"audit": outbox.audit, "task": outbox.task, "bytes": outbox.bytes,
                    "oldest_age_s": round(oldest, 3)},
            modules={name: {"running": run, "queued": wait, "parallelism": limit}
                     for name, (run, wait, limit) in self._modules.levels().items()},
            process={"rss_bytes": _rss_bytes(), "cpu_seconds": round(time.process_time(), 3)},
        )  # fmt: skip

    def record(self) -> None:
        self._journal.emit_soon(self.snapshot())

    async def run(self) -> None:
        """Record a snapshot every :data:`RUNTIME_EVENT_SECONDS`, until cancelled."""
        while True:
            await asyncio.sleep(RUNTIME_EVENT_SECONDS)
            try:
                self.record()
            except Exception:  # a snapshot that fails must not end the next ones
                log.exception("the runtime snapshot failed")


def _rss_bytes() -> int:
    """Resident memory now (Linux: /proc/self/statm), else 0."""
    try:
        return int(Path("/proc/self/statm").read_bytes().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def count_audit_event(metrics: Metrics, recorded: dict[str, Any]) -> None:
    """An audit event was recorded: count it, and count a refused activation as one."""
    metrics.audit_events.labels(
        action=str(recorded.get("action")), outcome=str(recorded.get("outcome"))
    ).inc()
    if recorded.get("action") in ("policy.apply", "policy.reload") and recorded.get("outcome") == "refused":
        details = recorded.get("details")
        source = details.get("source", "") if isinstance(details, dict) else ""
        metrics.policy_activations.labels(source=str(source), outcome="refused").inc()


def breaker_changed(metrics: Metrics, breaker: Breaker, before: BreakerState, after: BreakerState) -> None:
    metrics.breaker_transitions.labels(breaker=breaker.key, to=after.value).inc()
    log.warning("breaker %s: %s -> %s", breaker.key, before.value, after.value)


def module_levels(modules: Modules) -> ModuleLevels:
    """Per module of the active policy: calls running and waiting, and its parallelism."""
    return modules.levels()


def levels(ledger: BudgetLedger, admission: Admission) -> Levels:
    """Reserved budget, and running and queued tasks by route (read by each metrics scrape)."""
    return ledger.reserved_nano / 1e9, {route.value: admission.depth(route) for route in Route}


__all__ = [
    "RUNTIME_EVENT_SECONDS",
    "DeliveryReporter",
    "RuntimeReporter",
    "TaskReporter",
    "breaker_changed",
    "count_audit_event",
    "levels",
    "module_levels",
]
