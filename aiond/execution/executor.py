"""Running tasks: admission, budget reservation, the walk down the decision's chain, retries, the
hybrid local step, breakers, settlement and events.

**Admission** (:meth:`Executor.submit`, all synchronous after the input is read, so concurrent submits
cannot overtake each other's checks): an idempotency key that is known returns its first task; the
router decides under the active policy and the live state; the daily pool must hold the decision's
worst case (else the router decides again within what is left, else BUDGET_EXHAUSTED); the route must
have a running slot or a queue place (else RESOURCE_EXHAUSTED with a retry-after hint); then the
worst case is reserved and the task starts.

**Execution** (:meth:`Executor._run`): for each target of the chain in order, while the task's deadline
allows: the breakers of its provider and model must let the call through; a hybrid target first runs
the route's local step (a module that serves the intent on the hybrid route, else a local model asked
to remove personal data), and if that fails the hybrid targets are skipped; then up to
``retries.max_attempts`` attempts, with exponential
backoff and full jitter between them (or the provider's Retry-After, when it gives one), as long as the
retry budget allows (retries may add at most ``retries.budget_ratio`` to the calls made, plus a small
floor), and never past the deadline. A failure that cannot succeed on retry (a client or auth error, a
missing secret) moves straight to the next target. Every attempt is recorded on the task, and every
outcome feeds the breakers.

**Deadlines**: a task waited for ends with its call's deadline; otherwise it gets six times its route's
p95 target. Each attempt is bounded by the provider's timeout and by what is left of the deadline.

**Costs**: an attempt that answered costs its tokens at the model's prices, rounded up to the
nano-dollar; the task's cost is the sum, settled against the pool when the task ends.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import datetime as dt
import functools
import logging
import random
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import aiohttp

from aion import tracing
from aion.config.model import ConfigSnapshot, Locality, ModelInfo, Provider, Route
from aion.errors import BudgetExhausted, InputError, Refused, Saturated
from aion.ids import ulid
from aion.modules.abi import Failure, FailureKind
from aion.providers import Completion, ProviderError, Sampling, complete, new_session
from aion.routing import Decision, Refusal, Request, Target
from aion.routing.engine import NANO_PER_USD, Step, TargetKind
from aion.secrets.base import SecretsBackend
from aion.secrets.files import DEFAULT_DIRECTORY, FileSecrets
from aiond.execution.admission import Admission, Ticket
from aiond.execution.budget import BudgetLedger
from aiond.execution.controls import Controls
from aiond.execution.modules import Modules, Place
from aiond.execution.observer import ExecutionObserver, Unobserved
from aiond.execution.taskstore import (
    Attempt,
    Status,
    Stored,
    TaskError,
    TaskRecord,
    TaskStore,
    TokenStream,
)
from aiond.policy.store import ActiveConfig, PolicyStore

log = logging.getLogger("aiond.execution.executor")

DEADLINE_FACTOR = 6
"""A task that nobody waits for gets this many times its route's p95 target."""
RETRY_FLOOR = 10
"""Retries always allowed per window, whatever the ratio (so a quiet daemon can still retry)."""
PREPARE_PROMPT = (
    "Rewrite the user's text so that it can leave this host: remove or replace names, e-mail addresses, "
    "phone numbers, postal addresses, account numbers and any other personal data. Keep everything else, "
    "and answer with the rewritten text only."
)
NO_RETRY_KINDS = frozenset({"client", "auth"})
MODULE_FAULTS = frozenset(
    {FailureKind.TIMEOUT, FailureKind.FUEL, FailureKind.TRAP, FailureKind.OOM, FailureKind.CRASH,
     FailureKind.BAD_OUTPUT}
)  # fmt: skip
"""Module failures that count against its breaker (the others are not the module's fault, or not a
sign that it is broken: it declined the input, a secret is missing, it is saturated)."""
NOT_THE_PROVIDERS_FAULT = frozenset({"client", "auth"})
_CODES = {"timeout": "PROVIDER_TIMEOUT", "rate_limited": "RATE_LIMITED", "connect": "PROVIDER_UNAVAILABLE"}


_EXHAUSTED = "the daily budget (budget.daily_cap_usd) has too little left for this task"
_DEADLINE = TaskError("DEADLINE_EXCEEDED", "the task's deadline passed", True)


class RetryBudget:
    """Retries may add at most ``ratio`` of the first attempts made in the last ``window`` seconds,
    plus :data:`RETRY_FLOOR`: under a broad outage, retries do not multiply the load."""

    def __init__(
        self, ratio: float, *, window: float = 10.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ratio = ratio
        self._window = window
        self._clock = clock
        self._calls: collections.deque[float] = collections.deque()
        self._retries: collections.deque[float] = collections.deque()

    def _trim(self, now: float) -> None:
        for queue in (self._calls, self._retries):
            while queue and queue[0] < now - self._window:
                queue.popleft()

    def call(self) -> None:
        now = self._clock()
        # Trimmed here too, not only when a retry is asked for: with no retries at all, the window
        # would otherwise keep the time of every call the daemon ever made.
        self._trim(now)
        self._calls.append(now)

    @property
    def held(self) -> int:
        """Times kept for the window (first attempts and retries)."""
        return len(self._calls) + len(self._retries)

    def allow_retry(self) -> bool:
        now = self._clock()
        self._trim(now)
        if len(self._retries) >= RETRY_FLOOR + self.ratio * len(self._calls):
            return False
        self._retries.append(now)
        return True


@dataclasses.dataclass(frozen=True, slots=True)
class _Call:
    target: Target
    provider: Provider
    info: ModelInfo
    messages: list[dict[str, str]]
    key: str | None
    timeout: float


@dataclasses.dataclass(frozen=True, slots=True)
class Submission:
    intent: str
    text: str
    budget_nano: int | None = None
    latency_target_ms: int | None = None
    route_override: Route | None = None
    idempotency_key: str = ""
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)
    deadline: float | None = None
    """Seconds from now, when the caller waits; None for the route default."""
    conversation: tuple[dict[str, str], ...] = ()
    """A chat to send to models as it is (``{"role", "content"}``, after the intent's system message);
    ``text`` is then what modules, the hybrid step and the router see of it."""
    max_tokens: int | None = None
    sampling: Sampling | None = None
    stream: bool = False
    """The caller reads the answer as it is made (:attr:`TaskRecord.stream`)."""


class Executor:
    def __init__(
        self,
        *,
        policies: PolicyStore,
        controls: Controls,
        ledger: BudgetLedger,
        admission: Admission,
        observer: ExecutionObserver | None = None,
        store: TaskStore | None = None,
        client: aiohttp.ClientSession | None = None,
        rng: random.Random | None = None,
        secrets_dir: Path = DEFAULT_DIRECTORY,
        secrets: SecretsBackend | None = None,
        modules: Modules | None = None,
    ) -> None:
        self._policies = policies
        self._controls = controls
        self._ledger = ledger
        self._admission = admission
        self._observer: ExecutionObserver = observer if observer is not None else Unobserved()
        self.store = store or TaskStore()
        # Made here, inside the daemon's running loop, as an aiohttp session must be.
        self._client = client if client is not None else new_session(max_connections=512)
        self._rng = rng or random.Random()  # noqa: S311 - retry jitter, not security
        self._retry_budget = RetryBudget(0.1)
        # The daemon's secret backend, fixed at start-up: no config set decides where keys are read.
        self._secrets: SecretsBackend = secrets if secrets is not None else FileSecrets(secrets_dir)
        self._modules = modules
        self._places: dict[str, Place] = {}
        """Module places held by admitted tasks until their first module call (or their end)."""

    async def close(self, grace: float = 0.0) -> None:
        """Stop: tasks still running get ``grace`` seconds to finish (the daemon's shutdown grace), then
        are canceled (and settled); then the provider connections close."""
        running = self._running()
        if running and grace > 0:
            await asyncio.wait(running, timeout=grace)
        for task in self._running():
            task.cancel()
        remaining = self._running()
        if remaining:
            await asyncio.wait(remaining, timeout=5)
        await self._client.close()

    def _running(self) -> list[asyncio.Task[None]]:
        return [r.runner for r in self.store.running() if r.runner is not None and not r.runner.done()]

    # -- admission ----------------------------------------------------------------------------------------

    def submit(self, submission: Submission) -> tuple[Stored, bool]:
        """Admit a task and start it; returns it and whether it is an earlier task with the same key.
        Raises Refused or Saturated. Synchronous from the first check to the reservation."""
        if submission.idempotency_key:
            earlier = self.store.by_key(submission.idempotency_key)
            if earlier is not None:
                self._observer.deduplicated()
                return earlier, True
        active = self._policies.active
        if active is None:
            raise Refused("NO_POLICY: no policy version is active", code="NO_POLICY")
        live = self._controls.live(self._modules.runnable if self._modules is not None else frozenset())
        request = Request(
            intent=submission.intent,
            input_bytes=len(submission.text.encode()),
            budget_nano=submission.budget_nano,
            latency_target_ms=submission.latency_target_ms,
            route_override=submission.route_override,
        )
        started = time.perf_counter()
        with tracing.span("aion.decision", attributes={"aion.intent": submission.intent}) as span:
            decision = active.routing.decide(request, live)
            available = self._ledger.available()
            over = (
                isinstance(decision, Decision)
                and available is not None
                and decision.estimated_max_nano > available
            )
            if over and isinstance(decision, Decision) and available is not None:
                # Decide again within what is left of today's pool: a cheaper chain may still fit.
                ceiling = available if decision.budget_nano is None else min(decision.budget_nano, available)
                decision = active.routing.decide(dataclasses.replace(request, budget_nano=ceiling), live)
                if isinstance(decision, Refusal) and decision.code == "OVER_BUDGET":
                    decision = Refusal("BUDGET_EXHAUSTED", _EXHAUSTED)
            _traced_decision(span, decision)
        self._observer.decided(time.perf_counter() - started)
        if isinstance(decision, Refusal):
            raise self._refused(decision)
        place = self._module_place(active.snapshot, decision)
        try:
            ticket = self._admission.admit(decision.route)  # raises Saturated
        except Saturated:
            if place is not None:
                place.release()
            self._observer.refused("ROUTE_SATURATED")
            raise
        task_id = ulid()
        if not self._ledger.reserve(task_id, decision.estimated_max_nano):  # pragma: no cover - checked above
            ticket.release()
            if place is not None:
                place.release()
            raise BudgetExhausted(f"BUDGET_EXHAUSTED: {_EXHAUSTED}", retry_after=self._budget_retry())
        task = TaskRecord(
            task_id=task_id,
            intent=submission.intent,
            decision=decision,
            policy_version=active.version.number,
            idempotency_key=submission.idempotency_key,
            labels=dict(submission.labels),
            conversation=submission.conversation,
            max_tokens=submission.max_tokens,
            sampling=submission.sampling,
            stream=TokenStream() if submission.stream else None,
        )
        self.store.add(task)
        if place is not None:
            self._places[task_id] = place
        self._observer.admitted(task)
        deadline = submission.deadline
        if deadline is None:
            deadline = DEADLINE_FACTOR * active.snapshot.policies.p95_ms[decision.route] / 1000
        task.runner = asyncio.get_running_loop().create_task(
            self._run(task, ticket, active, submission.text, time.monotonic() + deadline)
        )
        task.runner.add_done_callback(functools.partial(self._never_started, task, ticket))
        return task, False

    def _refused(self, refusal: Refusal) -> Refused:
        self._observer.refused(refusal.code)
        message = f"{refusal.code}: {refusal.message}"
        if refusal.code == "BUDGET_EXHAUSTED":
            return BudgetExhausted(message, retry_after=self._budget_retry())
        return Refused(message, code=refusal.code)

    def _budget_retry(self) -> float:
        """When a task refused for today's budget may try again: soon, while tasks in flight hold
        reservations (they settle at their actual cost, usually far below the worst case); else when
        the UTC day turns."""
        if self._ledger.reserved_nano:
            return 1.0
        now = dt.datetime.now(dt.UTC)
        tomorrow = (now + dt.timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
        return max(1.0, (tomorrow - now).total_seconds())

    def _module_place(self, snapshot: ConfigSnapshot, decision: Decision) -> Place | None:
        """For a task whose first target is a module: a place in its gate, held until its call starts.
        With every slot and queue place taken, the task is refused now, with a retry hint, rather
        than admitted to wait where there is no room."""
        first = decision.target
        if first.kind is not TargetKind.MODULE or self._modules is None:
            return None
        spec = snapshot.modules.get(first.name)
        if spec is None:  # pragma: no cover - the engine only picks configured modules
            return None
        place = self._modules.hold(spec)
        if isinstance(place, Place):
            return place
        self._observer.refused("MODULE_SATURATED")
        raise Saturated(
            f"module {first.name} is at its parallelism and its queue is full",
            retry_after=place,
            hint="retry after the time given, or raise it: aionctl module parallelism NAME N --reason",
        )

    def _never_started(self, task: TaskRecord, ticket: Ticket, runner: asyncio.Task[None]) -> None:
        """A runner canceled before its first step never enters :meth:`_run` (the cancellation is
        raised at its start), so its task is ended here: slot, reservation, state and event."""
        if not runner.cancelled() or task.status.terminal or task.status is Status.RUNNING:
            return
        ticket.release()
        self._release_place(task)
        self._finish(task, Status.CANCELED, error=TaskError("CANCELED", "the task was canceled"))
        self._ledger.settle(task.task_id, 0)
        self._observer.finished(task)
        self.store.changed(task)
        self._event(task, "canceled")

    def _release_place(self, task: TaskRecord) -> None:
        place = self._places.pop(task.task_id, None)
        if place is not None:
            place.release()

    def abandon(self, task: Stored, reason: str) -> None:
        """Cancel ``task`` without waiting for it to stop (its caller went away)."""
        if not task.status.terminal and task.runner is not None:
            task.runner.cancel(reason or "canceled")

    async def cancel(self, task: Stored, reason: str) -> None:
        if task.status.terminal or task.runner is None:
            return
        task.runner.cancel(reason or "canceled")
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(task.runner)

    # -- running ---------------------------------------------------------------------------------------------

    async def _run(
        self, task: TaskRecord, ticket: Ticket, active: ActiveConfig, text: str, deadline: float
    ) -> None:
        self._event_soon(task, "queued" if ticket.waiting else "admitted")
        try:
            async with ticket:
                task.status, task.started_at = Status.RUNNING, dt.datetime.now(dt.UTC)
                self.store.changed(task)
                self._event_soon(task, "running")
                await self._walk(task, active, text, deadline)
        except asyncio.CancelledError:
            self._finish(task, Status.CANCELED, error=TaskError("CANCELED", "the task was canceled"))
        except Exception as exc:  # a bug: the task fails, the daemon does not
            log.exception("task %s failed unexpectedly", task.task_id)
            self._finish(task, Status.ERROR, error=TaskError("INTERNAL", f"{type(exc).__name__}: {exc}"))
        finally:
            if task.stream is not None:
                task.stream.close()
            self._release_place(task)
            spent = self._ledger.settle(task.task_id, task.cost_nano)
            if spent:
                self._observer.spent(spent)
                with contextlib.suppress(asyncio.CancelledError):  # the write goes on; so does the rest
                    await self._ledger.flush()
            self._observer.finished(task)
            self.store.changed(task)
            self._event_soon(task, task.status.name.lower())

    async def _walk(self, task: TaskRecord, active: ActiveConfig, text: str, deadline: float) -> None:
        snapshot = active.snapshot
        settings = snapshot.policies.retries
        self._retry_budget.ratio = settings.budget_ratio
        prepared: str | None = None
        hybrid_failed = False
        last: TaskError | None = None
        for index, step in enumerate(task.decision.chain):
            if time.monotonic() >= deadline:
                self._finish(task, Status.TIMEOUT, error=_DEADLINE)
                return
            if index:
                self._observer.fell_back(step.target)
            content = text
            if step.target.route is Route.HYBRID:
                if hybrid_failed:
                    continue
                if prepared is None:
                    prepared = await self._prepare(task, snapshot, text, deadline)
                    if prepared is None:
                        hybrid_failed = True
                        continue
                content = prepared
            outcome = await self._target(
                task, snapshot, step, content, deadline, max_attempts=settings.max_attempts
            )
            if isinstance(outcome, Completion):
                task.result = outcome.text
                task.finish_reason = outcome.finish_reason
                self._finish(task, Status.OK)
                return
            last = outcome
            if task.stream is not None and task.stream.started:
                break  # the caller has read part of this answer: another target cannot continue it
        if time.monotonic() >= deadline or (last is not None and last.code == "DEADLINE_EXCEEDED"):
            self._finish(task, Status.TIMEOUT, error=_DEADLINE)
            return
        error = last or TaskError("NO_TARGET_AVAILABLE", "no target of the chain could be tried", True)
        self._finish(task, Status.ERROR, error=TaskError(error.code, error.message, error.retryable))

    async def _prepare(
        self, task: TaskRecord, snapshot: ConfigSnapshot, text: str, deadline: float
    ) -> str | None:
        """The hybrid local step; None when it fails (the hybrid targets are then skipped)."""
        target = task.decision.prepare
        if target is None:
            return None
        if target.kind is TargetKind.MODULE:
            answer = await self._module_target(task, snapshot, target, text, deadline, 1, "prepare")
            return answer.text if isinstance(answer, Completion) else None
        messages = [{"role": "system", "content": PREPARE_PROMPT}, {"role": "user", "content": text}]
        outcome = await self._target(
            task,
            snapshot,
            Step(target, 0),
            text,
            deadline,
            max_attempts=1,
            messages=messages,
            phase="prepare",
        )
        return outcome.text if isinstance(outcome, Completion) else None

    async def _target(
        self,
        task: TaskRecord,
        snapshot: ConfigSnapshot,
        step: Step,
        content: str,
        deadline: float,
        *,
        max_attempts: int,
        messages: list[dict[str, str]] | None = None,
        phase: str = "complete",
    ) -> Completion | TaskError:
        """Up to ``max_attempts`` calls to one target (a model or a module); its completion, or the last
        error."""
        if step.target.kind is TargetKind.MODULE:
            return await self._module_target(
                task, snapshot, step.target, content, deadline, max_attempts, phase
            )
        return await self._model_target(
            task, snapshot, step, content, deadline, max_attempts=max_attempts, messages=messages, phase=phase
        )

    async def _model_target(
        self,
        task: TaskRecord,
        snapshot: ConfigSnapshot,
        step: Step,
        content: str,
        deadline: float,
        *,
        max_attempts: int,
        messages: list[dict[str, str]] | None,
        phase: str,
    ) -> Completion | TaskError:
        target = step.target
        provider = snapshot.models.provider(target.provider)
        info = snapshot.models.models.get(target.key)
        if provider is None or info is None:  # pragma: no cover - the engine only picks configured models
            return TaskError("CONFIG", f"{target.key} is not configured")
        if messages is None:
            # The caller's chat as it is, unless the hybrid step rewrote the input (then only the
            # rewritten text may leave the host).
            chat = task.conversation if task.conversation and step.target.route is not Route.HYBRID else ()
            messages = _messages(snapshot, task.intent, content, chat)
        try:
            key = (
                self._api_key(snapshot, provider.api_key_secret)
                if provider.locality is Locality.CLOUD
                else None
            )
        except InputError as exc:
            error = TaskError("SECRET_MISSING", exc.message)
            task.attempts.append(
                Attempt(
                    len(task.attempts) + 1,
                    target,
                    Status.ERROR,
                    dt.datetime.now(dt.UTC),
                    error=error,
                    step=phase,
                )
            )
            return error
        call = _Call(
            target,
            provider,
            info,
            messages,
            key,
            provider.timeout_for(snapshot.policies.p95_ms[target.route]) / 1000,
        )
        retries = snapshot.policies.retries
        last = TaskError("BREAKER_OPEN", f"{target.key}: its breaker is open", True)
        retry_after: float | None = None
        for attempt in range(max(1, max_attempts)):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return _DEADLINE
            if attempt:
                if not self._retry_budget.allow_retry():
                    self._observer.retry_denied(target)
                    return last
                pause = self._backoff(retries.base_delay_ms, attempt, retries.max_delay_ms, retry_after)
                if pause >= remaining:
                    return last
                self._observer.retried(target)
                await asyncio.sleep(pause)
            else:
                self._retry_budget.call()
            if not self._controls.board.allow(target.provider, target.key):
                return last
            with tracing.span("aion.attempt", attributes=_attempt(task, target, phase)) as span:
                outcome = await self._call(task, call, deadline, phase)
                _traced_attempt(span, task)
            if isinstance(outcome, Completion):
                return outcome
            last, retry_after = outcome
            if not last.retryable or (task.stream is not None and task.stream.started):
                return last  # nothing to retry; or the caller already has part of this answer
        return last

    async def _call(
        self, task: TaskRecord, call: _Call, deadline: float, phase: str
    ) -> Completion | tuple[TaskError, float | None]:
        """One call; its completion, or (error, the provider's Retry-After)."""
        target, board = call.target, self._controls.board
        started_at, started = dt.datetime.now(dt.UTC), time.monotonic()
        limit = call.info.max_output_tokens
        # Only the answer streams to the caller: never the hybrid step's rewrite of the input.
        stream = task.stream if phase == "complete" else None
        try:
            answer = await complete(
                self._client, call.provider, target.name, call.messages, api_key=call.key,
                max_tokens=min(limit, task.max_tokens) if task.max_tokens else limit,
                timeout=max(0.001, min(call.timeout, deadline - time.monotonic())),
                sampling=task.sampling if phase == "complete" else None,
                stream=stream is not None, on_delta=stream.push if stream is not None else None,
            )  # fmt: skip
        except ProviderError as exc:
            board.record(None if exc.kind in NOT_THE_PROVIDERS_FAULT else True, target.provider, target.key)
            error = TaskError(
                _CODES.get(exc.kind, "PROVIDER_" + exc.kind.upper()),
                exc.message,
                exc.retryable and exc.kind not in NO_RETRY_KINDS,
            )
            outcome = Status.TIMEOUT if exc.kind == "timeout" else Status.ERROR
            latency = round((time.monotonic() - started) * 1000)
            task.attempts.append(
                Attempt(len(task.attempts) + 1, target, outcome, started_at, latency, error, phase)
            )
            self.store.changed(task)
            return error, exc.retry_after
        board.record(False, target.provider, target.key)
        elapsed = time.monotonic() - started
        self._controls.record_latency(target.key, elapsed * 1000)
        task.input_tokens += answer.input_tokens
        task.output_tokens += answer.output_tokens
        task.cost_nano += _cost(call.info, target, answer)
        task.attempts.append(
            Attempt(len(task.attempts) + 1, target, Status.OK, started_at, round(elapsed * 1000), None, phase)
        )
        self.store.changed(task)
        return answer

    async def _module_target(  # noqa: PLR0917 - the attempt's facts, as _target has them
        self,
        task: TaskRecord,
        snapshot: ConfigSnapshot,
        target: Target,
        content: str,
        deadline: float,
        max_attempts: int,
        phase: str,
    ) -> Completion | TaskError:
        """Calls of one module, as :meth:`_target` makes of a model: under its breaker, within the
        deadline, retried (as often as its manifest's ``policies.retries`` allows) only when the
        failure may pass."""
        spec = snapshot.modules.get(target.name)
        if spec is None or self._modules is None:  # pragma: no cover - the engine only picks configured ones
            return TaskError("MODULE_UNAVAILABLE", f"{target.key} is not configured")
        attempts = max(1, min(max_attempts, 1 + self._modules.retries(target.name)))
        retries = snapshot.policies.retries
        last = TaskError("BREAKER_OPEN", f"{target.key}: its breaker is open", True)
        for attempt in range(attempts):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return _DEADLINE
            if attempt:
                pause = self._backoff(retries.base_delay_ms, attempt, retries.max_delay_ms, None)
                if pause >= remaining:
                    return last
                self._observer.retried(target)
                await asyncio.sleep(pause)
            if not self._controls.board.allow(target.key):
                return last
            started_at, started = dt.datetime.now(dt.UTC), time.monotonic()
            with (
                tracing.span("aion.attempt", attributes=_attempt(task, target, phase)) as span,
                tracing.span(
                    f"module {target.name}", kind="client", attributes=_module(target, phase)
                ) as call,
            ):
                outcome = await self._modules.call(
                    spec, task_id=task.task_id, intent=task.intent, step=phase, text=content,
                    timeout_s=deadline - time.monotonic(), place=self._places.pop(task.task_id, None),
                )  # fmt: skip
                _traced_module_call(span, call, outcome)
            elapsed = time.monotonic() - started
            if isinstance(outcome, Failure):
                self._observer.module_called(target.name, elapsed, outcome.kind.value)
                self._controls.board.record(True if outcome.kind in MODULE_FAULTS else None, target.key)
                last = TaskError(outcome.code, f"{target.key}: {outcome.message}", outcome.retryable)
                status = Status.TIMEOUT if outcome.kind is FailureKind.TIMEOUT else Status.ERROR
                task.attempts.append(
                    Attempt(
                        len(task.attempts) + 1, target, status, started_at, round(elapsed * 1000), last, phase
                    )
                )
                self.store.changed(task)
                if not last.retryable:
                    return last
                continue
            self._observer.module_called(target.name, elapsed, None)
            self._controls.board.record(False, target.key)
            self._controls.record_latency(target.key, elapsed * 1000)
            task.cost_nano += int(spec.cost_usd_per_call * NANO_PER_USD)
            task.attempts.append(
                Attempt(
                    len(task.attempts) + 1, target, Status.OK, started_at, round(elapsed * 1000), None, phase
                )
            )
            self.store.changed(task)
            return Completion(outcome.text, 0, 0, target.name, "module", elapsed * 1000, "stop")
        return last

    def _backoff(self, base_ms: int, attempt: int, cap_ms: int, retry_after: float | None) -> float:
        """Full jitter over an exponential ceiling, or the provider's Retry-After when it gave one."""
        if retry_after is not None:
            return retry_after
        ceiling = min(cap_ms, base_ms * 2 ** (attempt - 1)) / 1000
        return self._rng.uniform(0, ceiling)

    def _api_key(self, snapshot: ConfigSnapshot, name: str | None) -> str | None:
        """The key of a provider's ``api_key_secret``, from the daemon's own secrets directory; the
        snapshot's secrets.directory is never read (an uploaded set could name any directory)."""
        if name is None:
            return None
        return self._secrets.get(name)

    def _finish(self, task: TaskRecord, status: Status, *, error: TaskError | None = None) -> None:
        task.status = status
        task.error = error
        task.finished_at = dt.datetime.now(dt.UTC)
        failed = [(a.target, a.error) for a in task.attempts if a.error is not None]
        if error is not None and failed and (len(failed) > 1 or failed[0][1] != error):
            # The last failure is often a consequence (a fallback that was not meant to carry the
            # load, a deadline, nothing left to try); the first is often the cause, so the task
            # reports both.
            target, first = failed[0]
            task.first_error = TaskError(first.code, f"{target.key}: {first.message}", first.retryable)

    def _event(self, task: TaskRecord, state: str) -> None:
        self._observer.changed(task, state)

    def _event_soon(self, task: TaskRecord, state: str) -> None:
        """Report a change on the loop's next turn. The caller waiting for the answer goes first: the
        decision event is made while the provider works on the call, and the last event after the
        answer has been written. Every change of a running task is reported this way, and callbacks
        run in the order they were scheduled, so a task's events keep their order; whoever awaits the
        runner itself sees them all made."""
        asyncio.get_running_loop().call_soon(self._observer.changed, task, state)


def _messages(
    snapshot: ConfigSnapshot, intent_name: str, content: str, chat: tuple[dict[str, str], ...] = ()
) -> list[dict[str, str]]:
    """The chat a task sends: the intent's description as the system message, then the input (the
    caller's own chat, when there is one)."""
    intent = snapshot.intents.get(intent_name)
    messages = list(chat) if chat else [{"role": "user", "content": content}]
    if intent is not None and intent.description:
        messages.insert(0, {"role": "system", "content": intent.description})
    return messages


def _traced_decision(span: tracing.SpanLike, decision: Decision | Refusal) -> None:
    if not span.is_recording():
        return
    if isinstance(decision, Refusal):
        span.set_attribute("aion.refusal", decision.code)
        return
    span.set_attributes({
        "aion.route": decision.route.value, "aion.target": decision.target.key,
        "aion.chosen_by": decision.chosen_by, "aion.reason_codes": list(decision.reason_codes),
        "aion.fallback_chain": [t.key for t in decision.fallback_chain],
    })  # fmt: skip


def _attempt(task: TaskRecord, target: Target, phase: str) -> dict[str, tracing.AttributeValue] | None:
    """The attributes of the span of the attempt about to be made (None while tracing is off)."""
    if not tracing.active():
        return None
    return {"aion.task_id": task.task_id, "aion.target": target.key, "aion.attempt": len(task.attempts) + 1,
            "aion.step": phase}  # fmt: skip


def _traced_attempt(span: tracing.SpanLike, task: TaskRecord) -> None:
    """The outcome of the attempt just recorded, on its span."""
    if not span.is_recording() or not task.attempts:
        return
    attempt = task.attempts[-1]
    span.set_attribute("aion.outcome", attempt.outcome.name.lower())
    if attempt.error is not None:
        tracing.fail(span, attempt.error.code, attempt.error.message)


def _module(target: Target, phase: str) -> dict[str, tracing.AttributeValue] | None:
    if not tracing.active():
        return None
    return {"aion.module": target.name, "aion.step": phase}


def _traced_module_call(attempt: tracing.SpanLike, call: tracing.SpanLike, outcome: object) -> None:
    if not attempt.is_recording():
        return
    if isinstance(outcome, Failure):
        kind = "timeout" if outcome.kind is FailureKind.TIMEOUT else "error"
        for span in (attempt, call):
            span.set_attribute("aion.outcome", kind)
            tracing.fail(span, outcome.code, outcome.message)
        call.set_attribute("aion.module.failure", outcome.kind.value)
    else:
        attempt.set_attribute("aion.outcome", "ok")
        call.set_attribute("aion.outcome", "ok")


def _cost(info: ModelInfo, target: Target, answer: Completion) -> int:
    if target.locality is Locality.LOCAL:
        return 0
    per_mtok = answer.input_tokens * int(info.input_usd_per_mtok * 10**9) + answer.output_tokens * int(
        info.output_usd_per_mtok * 10**9
    )
    return -(-per_mtok // 1_000_000)


__all__ = ["Executor", "RetryBudget", "Submission"]
