"""The runbook's incident levers, held by the daemon: circuit breakers and runtime intent modes.

Together with measured latencies they make the router's :class:`~aion.routing.LiveState`. Intent modes
are stored in the state backend, so a switch made during an incident survives a restart; breakers are
runtime state and start closed. Every change is audited with who made it and why.

A runtime mode can only make an intent stricter than its config: a local-only intent stays local-only,
and a hybrid intent cannot be switched to allow-api. Switching back to ``policy`` removes the mode.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import datetime as dt
import math
from collections.abc import Awaitable, Callable
from typing import Any

from aion.config.model import ConfigSnapshot, Privacy
from aion.envelopes import audit
from aion.errors import ConflictError, Error, NotFound
from aion.inputs import quoted
from aion.routing import LiveState
from aiond.execution.breakers import Breaker, BreakerBoard, Override
from aiond.state.backend import IntentMode, StateBackend

LATENCY_SAMPLES = 64
"""Calls per target its latency p95 is taken over: enough for a p95, few enough to follow a change
within a minute of traffic."""

_STRICTNESS = {Privacy.ALLOW_API: 0, Privacy.HYBRID: 1, Privacy.LOCAL_ONLY: 2}


class Controls:
    def __init__(
        self,
        backend: StateBackend,
        board: BreakerBoard,
        emit: Callable[[dict[str, Any]], Awaitable[None]],
        committed: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._backend = backend
        self.board = board
        self._emit = emit
        self._committed = committed
        """Given, a mode change's audit event is written in the change's transaction, then this is
        called; else the event is emitted after the change."""
        self._modes: dict[str, IntentMode] = {}
        self._privacy: dict[str, Privacy] = {}
        self.latency_ms: dict[str, float] = {}
        """The p95 of the last :data:`LATENCY_SAMPLES` calls by "provider:model" (see
        :meth:`record_latency`), as the router compares it with each route's p95 target."""
        self._samples: dict[str, collections.deque[float]] = {}

    async def load(self) -> None:
        modes = await asyncio.to_thread(self._backend.intent_modes)
        self._modes = {m.intent: m for m in modes}
        self._privacy = {m.intent: Privacy(m.mode) for m in modes}

    def record_latency(self, key: str, millis: float) -> None:
        """A successful call to ``key`` took ``millis``: update its p95 over the last calls."""
        samples = self._samples.get(key)
        if samples is None:
            samples = self._samples[key] = collections.deque(maxlen=LATENCY_SAMPLES)
        samples.append(millis)
        ordered = sorted(samples)
        self.latency_ms[key] = ordered[math.ceil(0.95 * len(ordered)) - 1]

    def live(self, modules: frozenset[str] = frozenset()) -> LiveState:
        """The router's live state; ``modules`` are the installed modules that can run now."""
        return LiveState(
            breakers=self.board.live(),
            latency_ms=self.latency_ms,
            intent_modes=self._privacy,
            modules=modules,
        )

    def modes(self) -> list[IntentMode]:
        return sorted(self._modes.values(), key=lambda m: m.intent)

    async def set_mode(
        self, snapshot: ConfigSnapshot, intent: str, mode: Privacy | None, *, principal: str, reason: str
    ) -> tuple[IntentMode | None, Privacy | None]:
        """Switch ``intent`` to ``mode`` (None: back to the policy). Returns the new state and the
        previous mode. Raises NotFound for an unknown intent, ConflictError for a looser mode."""
        spec = snapshot.intents.get(intent)
        if spec is None:
            raise NotFound(
                f"intent {quoted(intent)} is not defined in the active policy",
                hint="see aionctl route explain",
            )
        configured = Privacy.LOCAL_ONLY if spec.local_only else spec.privacy
        previous = self._privacy.get(intent)
        if mode is not None and _STRICTNESS[mode] < _STRICTNESS[configured]:
            refusal = ConflictError(
                f"intent {intent!r} is {configured} by its policy; a runtime mode can only make it stricter",
                hint="change the policy (aionctl policy apply) to loosen it",
            )
            await self._mode_event(principal, intent, (previous, mode), "refused", refusal.message)
            raise refusal
        state = None
        if mode is not None:
            state = IntentMode(intent, mode.value, principal, dt.datetime.now(dt.UTC), reason)
        recorded = self._mode_audit(principal, intent, (previous, mode), "success", reason)
        if self._committed is None:
            await asyncio.to_thread(self._backend.set_intent_mode, state, intent)
        else:
            await asyncio.to_thread(lambda: self._backend.set_intent_mode(state, intent, audit=recorded))
        if state is None:
            self._modes.pop(intent, None)
            self._privacy.pop(intent, None)
        else:
            self._modes[intent] = state
            self._privacy[intent] = mode  # type: ignore[assignment]
        if self._committed is None:
            await self._emit(recorded)
        else:
            await self._committed()
        return state, previous

    async def force_breaker(
        self, snapshot: ConfigSnapshot, key: str, override: Override, *, principal: str, reason: str
    ) -> tuple[Breaker, Breaker]:
        """Force the breaker of ``key`` (a provider, or provider:model of the active policy); returns
        it and a copy of it as it was. A key the policy does not configure is refused before any
        breaker is made for it."""
        provider, _, model = key.partition(":")
        if provider == "module":
            if model not in snapshot.modules:
                raise NotFound(
                    f"{quoted(key)} is not a module of the active policy", hint="name it module:NAME"
                )
        elif not provider or snapshot.models.provider(provider) is None:
            raise NotFound(
                f"{quoted(provider)} is not a provider of the active policy", hint="see aionctl breaker list"
            )
        elif model and key not in snapshot.models.models:
            raise NotFound(
                f"{quoted(key)} is not a model of the active policy", hint="name it provider:model"
            )
        was = self.board.get(key)
        was = dataclasses.replace(was, outcomes=collections.deque(was.outcomes))
        breaker, previous, before = self.board.force(key, override)
        after = f"{override.value}/{breaker.effective.value}"
        try:
            await self._emit(
                audit(principal=principal, action="breaker.set", target=key, outcome="success",
                      before=f"{previous.value}/{before.value}", after=after, reason=reason or None,
                      details={"override": override.value})
            )  # fmt: skip
        except Error:
            self.board.force(key, previous)  # no record (a full outbox, a full disk), no change
            raise
        return breaker, was

    async def _mode_event(
        self,
        principal: str,
        intent: str,
        change: tuple[Privacy | None, Privacy | None],
        outcome: str,
        reason: str,
    ) -> None:
        await self._emit(self._mode_audit(principal, intent, change, outcome, reason))

    @staticmethod
    def _mode_audit(
        principal: str,
        intent: str,
        change: tuple[Privacy | None, Privacy | None],
        outcome: str,
        reason: str,
    ) -> dict[str, Any]:
        before, after = change
        return audit(principal=principal, action="intent.mode", target=intent, outcome=outcome,
                     before=before.value if before else "policy", after=after.value if after else "policy",
                     reason=reason or None)  # fmt: skip


__all__ = ["Controls"]
