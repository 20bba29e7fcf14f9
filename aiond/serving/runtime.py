"""The daemon's parts, made once at start-up and wired together: :func:`assemble` builds a frozen
:class:`Runtime` in dependency order, and registers each part's way of closing on an exit stack, so
that shutdown closes them in the reverse order (and a start-up that fails half-way closes what it had
made).

Order (each needs what comes before it): the state directory's lock, the state database, the journal
(the one event sink), authentication, the validation worker, the policy store (whose start activates
a version: nothing runs without one), the breakers and the runtime levers, the budget ledger,
admission, and the executor. Shutdown therefore lets running tasks finish (executor), then writes the
queued events, waits for policy changes whose callers left, stops the worker, closes the database and
releases the directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import socket
from collections.abc import Callable, Coroutine
from decimal import Decimal
from pathlib import Path
from typing import Any

from aion.config.model import ConfigSnapshot, Trust
from aion.errors import Error
from aion.modules.store import ModuleStore
from aion.routing import LiveState
from aion.secrets.base import SecretsBackend
from aion.secrets.select import backend_for
from aiond.events.journal import Journal
from aiond.events.kafka import KafkaRelay
from aiond.events.sink import LocalSink
from aiond.execution.admission import Admission
from aiond.execution.breakers import BreakerBoard
from aiond.execution.budget import BudgetLedger
from aiond.execution.controls import Controls
from aiond.execution.executor import Executor
from aiond.execution.modules import Modules
from aiond.policy.store import ActiveConfig, PolicyStore
from aiond.policy.validation import Validator
from aiond.security.auth import Authenticator, DenialReporter, TokenUses
from aiond.serving import reporting
from aiond.serving.backups import Backups
from aiond.serving.telemetry import Metrics
from aiond.settings import Settings
from aiond.state.lock import StateDirLock
from aiond.state.sqlite import OUTBOX_BYTES, SqliteState


@dataclasses.dataclass(frozen=True, slots=True)
class Runtime:
    """Every part of a running daemon; the servicers and HTTP endpoints are made from it."""

    settings: Settings
    metrics: Metrics
    state: SqliteState
    journal: Journal
    authenticator: Authenticator
    denials: DenialReporter
    policies: PolicyStore
    controls: Controls
    ledger: BudgetLedger
    admission: Admission
    modules: Modules
    executor: Executor
    backups: Backups

    def live_state(self) -> LiveState:
        """What the router knows now that is not in the config: breakers, latencies, intent modes,
        and the installed modules that can run."""
        return self.controls.live(self.modules.runnable)

    def active_snapshot(self) -> ConfigSnapshot | None:
        active = self.policies.active
        return active.snapshot if active is not None else None

    def active_trust(self) -> Trust | None:
        """The trust policy of the active version (module installs run under it)."""
        active = self.policies.active
        return active.snapshot.policies.trust if active is not None else None


class _PolicyFollowers:
    """What a policy change reconfigures (breakers, the daily cap, admission limits), and its metrics.
    The store calls it from its first activation on, before the followers exist; they join once made."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self.followers: list[Callable[[ActiveConfig], None]] = []

    def __call__(self, active: ActiveConfig, source: str, outcome: str, seconds: float) -> None:
        # The active snapshot lives until the next change: move it (and everything else alive now) out
        # of the collector's generations, so that full collections, which would otherwise walk every
        # object of a 1,000-intent set and pause the event loop for milliseconds, stay short. A
        # replaced snapshot is still freed by reference counting (it holds no cycles).
        gc.freeze()
        for follow in self.followers:
            follow(active)
        self._metrics.policy_active_version.set(active.version.number)
        self._metrics.policy_activations.labels(source=source, outcome=outcome).inc()
        if seconds:
            self._metrics.policy_activation_duration.observe(seconds)


async def assemble(
    settings: Settings, metrics: Metrics, stack: contextlib.AsyncExitStack, *, grace: Callable[[], float]
) -> Runtime:
    """Make and wire the daemon's parts; each one's closing goes on ``stack``. ``grace`` says, at
    shutdown, how long running tasks may still take."""
    lock = StateDirLock.acquire(settings.state_dir)
    stack.callback(lock.release)
    state = SqliteState.open(settings.state_dir, initialise=settings.init_state)
    stack.callback(state.close)
    secrets = backend_for(settings)  # fixed at start-up: files, sops or vault, as the flags say
    journal = await _journal(settings, metrics, state, secrets, stack)
    uses = TokenUses(state, interval=settings.token_use_interval)
    uses.start()
    stack.push_async_callback(uses.close)  # the last uses written before the database closes
    authenticator = Authenticator(state, uses=uses)
    denials = DenialReporter(journal.emit, lambda reason: metrics.auth_denials.labels(reason=reason).inc())
    validator = Validator(processes=True)
    stack.callback(validator.close)
    followers = _PolicyFollowers(metrics)
    policies = PolicyStore(
        state, settings.config_dir, emit=journal.emit, committed=journal.committed, on_change=followers,
        validator=validator,
        trust_keys_dir=settings.trust_keys_dir, secrets_dir=settings.secrets_dir,
    )  # fmt: skip
    stack.push_async_callback(policies.drain)  # a change whose caller left still finishes
    active = await policies.start(prefer_config_dir=settings.startup_policy == "config")
    policy = active.snapshot.policies
    board = BreakerBoard(
        policy.breakers,
        on_change=lambda b, before, after: reporting.breaker_changed(metrics, b, before, after),
    )
    controls = Controls(state, board, journal.emit, journal.committed)
    await controls.load()
    ledger = BudgetLedger(state)
    await ledger.load()
    ledger.cap_nano = _nano(policy.budget.daily_cap_usd)
    admission = Admission(policy.limits.concurrency, policy.limits.queue_depth)
    followers.followers += [
        lambda a: board.reconfigure(a.snapshot.policies.breakers),
        lambda a: setattr(ledger, "cap_nano", _nano(a.snapshot.policies.budget.daily_cap_usd)),
        lambda a: admission.reconfigure(
            a.snapshot.policies.limits.concurrency, a.snapshot.policies.limits.queue_depth
        ),
    ]
    metrics.read_levels(lambda: reporting.levels(ledger, admission))

    def trust() -> tuple[Trust, Path] | None:
        current = policies.active
        return None if current is None else (current.snapshot.policies.trust, settings.config_dir)

    modules = Modules(
        settings.modules_dir, cache_dir=settings.state_dir / "wasm-cache", secrets=secrets, backend=state,
        emit=journal.emit, trust=trust, sandbox_uid=settings.sandbox_uid, committed=journal.committed,
    )  # fmt: skip
    await modules.load()
    followers.followers.append(lambda a: _later(modules.refresh()))  # the trust policy may have changed
    stack.push_async_callback(modules.close)
    watcher = asyncio.get_running_loop().create_task(modules.watch())
    stack.callback(watcher.cancel)
    metrics.read_modules(lambda: reporting.module_levels(modules))
    executor = Executor(
        policies=policies,
        controls=controls,
        ledger=ledger,
        admission=admission,
        observer=reporting.TaskReporter(metrics, journal),
        secrets=secrets,
        modules=modules,
    )
    stack.push_async_callback(lambda: executor.close(grace()))
    snapshots = reporting.RuntimeReporter(
        journal, instance=f"{socket.gethostname()}:{settings.grpc_listen}", state=state, ledger=ledger,
        admission=admission, modules=modules,
    )  # fmt: skip
    every_minute = asyncio.get_running_loop().create_task(snapshots.run())
    stack.callback(snapshots.record)  # the last one, written with the journal's last batch
    stack.callback(every_minute.cancel)
    backups = Backups(settings, state.path, journal, metrics)
    backups.start()  # with --backup-dir, the first snapshot now
    stack.push_async_callback(backups.close)  # a snapshot being made finishes, with its audit event
    return Runtime(
        settings=settings, metrics=metrics, state=state, journal=journal, authenticator=authenticator,
        denials=denials, policies=policies, controls=controls, ledger=ledger, admission=admission,
        modules=modules, executor=executor, backups=backups,
    )  # fmt: skip


async def _journal(
    settings: Settings,
    metrics: Metrics,
    state: SqliteState,
    secrets: SecretsBackend,
    stack: contextlib.AsyncExitStack,
) -> Journal:
    """The journal over the outbox, and with ``--kafka-config`` the relay that delivers it to Kafka.
    Before anything else writes, what a crash left in the outbox reaches the local log."""
    sink = LocalSink(
        settings.state_dir, segment_bytes=settings.event_log_segment, keep_bytes=settings.event_log_keep
    )
    delivery = reporting.DeliveryReporter(metrics)
    relay = None
    limit = OUTBOX_BYTES
    if settings.kafka_config is not None:
        from aion.kafka.config import client_settings
        from aion.kafka.config import load as load_kafka

        kafka = load_kafka(settings.kafka_config)
        limit = kafka.outbox_max_bytes
        relay = KafkaRelay(state, kafka.topic_for, client_settings(kafka, secrets), observer=delivery)
    stranded = state.configure_outbox(kafka=relay is not None, max_bytes=limit)
    if stranded:
        log.warning(
            "%d events were waiting for Kafka, which is not configured now (no --kafka-config): "
            "they stay in the local event log only",
            stranded,
        )
    metrics.outbox_limit_bytes.set(limit)
    journal = Journal(
        sink, on_emit=lambda recorded: reporting.count_audit_event(metrics, recorded), outbox=state,
        kafka=relay is not None, on_outbox=delivery.wrote(relay.wake if relay is not None else None),
    )  # fmt: skip
    released = await asyncio.to_thread(journal.reconcile, _module_change_happened(settings.modules_dir))
    if released:
        log.warning("%d module changes made before aiond stopped get their audit events now", released)
    await journal.committed()
    delivery.levels(state.outbox_levels(), state.shed)
    if relay is not None:
        relay.start()
        stack.callback(relay.close)  # after the journal's last batch (stack closes in reverse order)
    stack.push_async_callback(journal.flush)
    return journal


def _module_change_happened(store_dir: Path) -> Callable[[dict[str, Any]], bool]:
    """Whether the install or removal a held audit event records is in the module store's lock file
    (aiond stopped between writing the event and releasing it). An unreadable lock file keeps the
    event: a record of a change that may not have happened is better than no record of one that did."""
    try:
        lock: dict[str, dict[str, Any]] | None = ModuleStore(store_dir).lock()
    except Error:
        lock = None

    def happened(event: dict[str, Any]) -> bool:
        if lock is None:
            return True
        target = str(event.get("target"))
        if event.get("action") == "module.install":
            return bool(lock.get(target, {}).get("digest") == event.get("after"))
        if event.get("action") == "module.remove":
            return target not in lock
        return True

    return happened


log = logging.getLogger("aiond")
_pending: set[asyncio.Task[None]] = set()


def _later(work: Coroutine[Any, Any, None]) -> None:
    """Run ``work`` soon on the loop, keeping a reference until it is done."""
    task = asyncio.get_running_loop().create_task(work)
    _pending.add(task)
    task.add_done_callback(_pending.discard)


def _nano(value: Decimal | None) -> int | None:
    return None if value is None else int(value * 1_000_000_000)


__all__ = ["Runtime", "assemble"]
