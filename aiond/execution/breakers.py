"""Circuit breakers, per provider and per provider:model, with the policies' settings.

A breaker is **closed** while calls mostly succeed. It keeps the outcomes of the last ``window`` calls;
once it has seen at least ``min_requests`` of them and the share of failures reaches
``failure_ratio``, it **opens**: no call goes through for ``cooldown_ms``. Then it is **half-open**:
up to ``half_open_probes`` calls at a time may try; a success closes it (with a fresh window), a
failure opens it again for another cooldown. Connection errors and timeouts count as failures, as do
5xx answers and 429s; a client error (4xx) is the caller's problem, not the provider's, and does not
count either way.

An operator can force a breaker open or closed (the runbook's incident lever); a forced state holds
until it is handed back to automatic control. The clock is injected, so the state machine is tested
without waiting.

The board is touched only from the daemon's event loop; it needs no lock.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import time
from collections.abc import Callable, Iterator

from aion.config.model import Breakers
from aion.routing import BreakerState


class Override(enum.StrEnum):
    NONE = "none"
    FORCED_OPEN = "forced-open"
    FORCED_CLOSED = "forced-closed"


@dataclasses.dataclass
class Breaker:
    key: str
    """A provider name, or "provider:model"."""
    settings: Breakers
    state: BreakerState = BreakerState.CLOSED
    override: Override = Override.NONE
    outcomes: collections.deque[bool] = dataclasses.field(default_factory=collections.deque)
    """True for a failure, newest last, at most ``settings.window``."""
    changed_at: float = 0.0
    retry_at: float = 0.0
    probes: int = 0

    @property
    def effective(self) -> BreakerState:
        if self.override is Override.FORCED_OPEN:
            return BreakerState.OPEN
        if self.override is Override.FORCED_CLOSED:
            return BreakerState.CLOSED
        return self.state

    @property
    def failure_ratio(self) -> float:
        return sum(self.outcomes) / len(self.outcomes) if self.outcomes else 0.0


Transition = Callable[[Breaker, BreakerState, BreakerState], None]


class BreakerBoard:
    """Every breaker the daemon has, created on first use."""

    def __init__(
        self,
        settings: Breakers,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_change: Transition | None = None,
    ) -> None:
        self.settings = settings
        self._clock = clock
        self._on_change = on_change
        self._breakers: dict[str, Breaker] = {}
        self._not_closed: dict[str, BreakerState] = {}

    def reconfigure(self, settings: Breakers) -> None:
        """New settings (a policy change) apply to every breaker from its next outcome on."""
        self.settings = settings
        for breaker in self._breakers.values():
            breaker.settings = settings
            while len(breaker.outcomes) > settings.window:
                breaker.outcomes.popleft()

    def get(self, key: str) -> Breaker:
        breaker = self._breakers.get(key)
        if breaker is None:
            breaker = self._breakers[key] = Breaker(key, self.settings, changed_at=self._clock())
        return breaker

    def __iter__(self) -> Iterator[Breaker]:
        return iter(sorted(self._breakers.values(), key=lambda b: b.key))

    def live(self) -> dict[str, BreakerState]:
        """The breakers that are not closed, as the router reads them (cheap: usually empty)."""
        self._tick()
        return dict(self._not_closed)

    # -- calls ---------------------------------------------------------------------------------------------

    def allow(self, *keys: str) -> bool:
        """Whether a call may go to a target guarded by ``keys`` (its provider and its model). Takes
        a half-open probe slot when it says yes to a half-open breaker; :meth:`record` gives it back."""
        now = self._clock()
        breakers = [self.get(k) for k in keys]
        for breaker in breakers:
            self._advance(breaker, now)
            if breaker.effective is BreakerState.OPEN:
                return False
            if (
                breaker.override is Override.NONE
                and breaker.state is BreakerState.HALF_OPEN
                and breaker.probes >= self.settings.half_open_probes
            ):
                return False
        for breaker in breakers:
            if breaker.override is Override.NONE and breaker.state is BreakerState.HALF_OPEN:
                breaker.probes += 1
        return True

    def record(self, failed: bool | None, *keys: str) -> None:
        """The outcome of a call: True a failure, False a success, None neither (a client error)."""
        now = self._clock()
        for key in keys:
            breaker = self.get(key)
            if breaker.state is BreakerState.HALF_OPEN:
                breaker.probes = max(0, breaker.probes - 1)
                if failed is None:
                    continue
                if failed:
                    self._open(breaker, now)
                else:
                    breaker.outcomes.clear()
                    self._set(breaker, BreakerState.CLOSED, now)
                continue
            if failed is None or breaker.state is BreakerState.OPEN:
                continue
            breaker.outcomes.append(failed)
            while len(breaker.outcomes) > self.settings.window:
                breaker.outcomes.popleft()
            if (
                len(breaker.outcomes) >= self.settings.min_requests
                and breaker.failure_ratio >= self.settings.failure_ratio
            ):
                self._open(breaker, now)

    def force(self, key: str, override: Override) -> tuple[Breaker, Override, BreakerState]:
        """Force a breaker (or hand it back with NONE); returns it with its previous override and state."""
        breaker = self.get(key)
        previous = (breaker.override, breaker.effective)
        breaker.override = override
        now = self._clock()
        if override is Override.NONE and breaker.state is BreakerState.OPEN:
            breaker.retry_at = min(breaker.retry_at, now)  # handed back: probe at once
        breaker.changed_at = now
        self._advance(breaker, now)
        self._index(breaker)
        if previous[1] is not breaker.effective and self._on_change is not None:
            self._on_change(breaker, previous[1], breaker.effective)
        return breaker, previous[0], previous[1]

    # -- state machine ------------------------------------------------------------------------------------

    def _open(self, breaker: Breaker, now: float) -> None:
        breaker.retry_at = now + self.settings.cooldown_ms / 1000
        breaker.probes = 0
        self._set(breaker, BreakerState.OPEN, now)

    def _advance(self, breaker: Breaker, now: float) -> None:
        if breaker.state is BreakerState.OPEN and now >= breaker.retry_at:
            breaker.probes = 0
            self._set(breaker, BreakerState.HALF_OPEN, now)

    def _tick(self) -> None:
        if not self._not_closed:
            return
        now = self._clock()
        for key in list(self._not_closed):
            self._advance(self._breakers[key], now)

    def _set(self, breaker: Breaker, state: BreakerState, now: float) -> None:
        if breaker.state is state:
            return
        before = breaker.effective
        breaker.state = state
        breaker.changed_at = now
        self._index(breaker)
        if self._on_change is not None and before is not breaker.effective:
            self._on_change(breaker, before, breaker.effective)

    def _index(self, breaker: Breaker) -> None:
        if breaker.effective is BreakerState.CLOSED:
            self._not_closed.pop(breaker.key, None)
        else:
            self._not_closed[breaker.key] = breaker.effective


__all__ = ["Breaker", "BreakerBoard", "Override"]
