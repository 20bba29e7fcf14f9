"""The circuit breaker state machine, on an injected clock: no waiting."""

from __future__ import annotations

from aion.config.model import Breakers
from aion.routing import BreakerState
from aiond.execution.breakers import BreakerBoard, Override

SETTINGS = Breakers(failure_ratio=0.5, window=4, min_requests=4, cooldown_ms=10_000, half_open_probes=1)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def board() -> tuple[BreakerBoard, Clock, list[tuple[str, str, str]]]:
    clock = Clock()
    changes: list[tuple[str, str, str]] = []
    b = BreakerBoard(
        SETTINGS, clock=clock, on_change=lambda br, a, z: changes.append((br.key, a.value, z.value))
    )
    return b, clock, changes


def test_opens_at_the_failure_ratio_after_min_requests() -> None:
    b, _clock, changes = board()
    for failed in (True, True, True):
        assert b.allow("p", "p:m")
        b.record(failed, "p", "p:m")
    assert b.get("p").state is BreakerState.CLOSED  # 3 < min_requests
    b.record(False, "p", "p:m")  # 3 failures of 4: 0.75 >= 0.5
    assert b.get("p").state is BreakerState.OPEN
    assert not b.allow("p", "p:m")
    assert b.live() == {"p": BreakerState.OPEN, "p:m": BreakerState.OPEN}
    assert ("p", "closed", "open") in changes


def test_successes_keep_it_closed_and_client_errors_do_not_count() -> None:
    b, _clock, _ = board()
    for _ in range(10):
        b.record(None, "p")
        b.record(False, "p")
    assert b.get("p").state is BreakerState.CLOSED
    assert b.get("p").failure_ratio == 0.0
    assert len(b.get("p").outcomes) == SETTINGS.window


def test_half_open_lets_one_probe_through_then_closes_or_reopens() -> None:
    b, clock, changes = board()
    for _ in range(4):
        b.record(True, "p")
    clock.now += 9.9
    assert not b.allow("p")
    clock.now += 0.2
    assert b.live() == {"p": BreakerState.HALF_OPEN}
    assert b.allow("p")  # the probe
    assert not b.allow("p")  # only one probe at a time
    b.record(True, "p")  # a failure while half-open re-opens it
    assert b.get("p").state is BreakerState.OPEN
    clock.now += 10.1
    assert b.allow("p")
    b.record(False, "p")
    assert b.get("p").state is BreakerState.CLOSED
    assert b.live() == {}
    assert [c[2] for c in changes] == ["open", "half-open", "open", "half-open", "closed"]


def test_forced_states_win_until_handed_back() -> None:
    b, _clock, _ = board()
    b.force("p", Override.FORCED_OPEN)
    assert not b.allow("p")
    for _ in range(5):
        b.record(False, "p")
    assert b.get("p").effective is BreakerState.OPEN
    b.force("p", Override.FORCED_CLOSED)
    for _ in range(5):
        b.record(True, "p")
    assert b.allow("p")  # forced closed: calls go through even though it would have opened
    breaker, previous, before = b.force("p", Override.NONE)
    assert (previous, before) == (Override.FORCED_CLOSED, BreakerState.CLOSED)
    assert breaker.effective is BreakerState.HALF_OPEN  # it had opened underneath; probes at once


def test_new_settings_apply_to_existing_breakers() -> None:
    b, _clock, _ = board()
    for _ in range(4):
        b.record(False, "p")
    b.reconfigure(Breakers(failure_ratio=0.2, window=2, min_requests=2, cooldown_ms=1000, half_open_probes=2))
    assert len(b.get("p").outcomes) == 2
    b.record(True, "p")
    assert b.get("p").state is BreakerState.OPEN  # 1 of 2 >= 0.2
