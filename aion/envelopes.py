"""Event envelopes: the topics aion writes to, audit events (checked against ``schemas/events/audit``)
and task events (decisions and lifecycle), each with an id, a topic and a time.

Where events go is not decided here: see :mod:`aion.eventlog` for the local log, and the daemon's
event room for its one sink.

An event made inside a recorded span (while aiond exports traces) carries that span's ``trace_id``,
so the trace of the call that caused it can be found from it; others carry none.
"""

from __future__ import annotations

import datetime as dt
import getpass
import os
import socket
import time
from functools import cache
from typing import Any

from aion import tracing
from aion.ids import ulid

AUDIT_TOPIC = "aion.audit.activity"
DECISIONS_TOPIC = "aion.router.decisions"
LIFECYCLE_TOPIC = "aion.tasks.lifecycle"
RUNTIME_TOPIC = "aion.metrics.runtime"


def local_principal() -> str:
    """Who runs a local command: user@host."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


@cache
def _audit_validator() -> Any:
    import jsonschema_rs

    from aion import schemas

    return jsonschema_rs.validator_for(schemas.load("events/audit"))


def audit(
    *,
    principal: str,
    action: str,
    target: str,
    outcome: str,
    before: str | None = None,
    after: str | None = None,
    reason: str | None = None,
    details: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An audit event, checked against its schema (a malformed event is a bug, so it raises)."""
    event: dict[str, Any] = {
        "id": ulid(),
        "topic": AUDIT_TOPIC,
        "time": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "principal": principal,
        "action": action,
        "target": target,
        "before": before,
        "after": after,
        "outcome": outcome,
        "reason": reason,
        "details": details or {},
    }
    trace = tracing.trace_id()
    if trace is not None:
        event["trace_id"] = trace
    errors = [e.message for e in _audit_validator().iter_errors(event)]
    if errors:
        raise ValueError(f"malformed audit event: {'; '.join(errors)}")
    return event


_second: list[tuple[int, str]] = [(-1, "")]


def _now() -> str:
    """The time now, as RFC 3339 UTC with milliseconds (``2026-11-26T22:51:12.345Z``). The part up to
    the second is formatted once per second: task events ask for this several times a millisecond."""
    millis = time.time_ns() // 1_000_000
    seconds, fraction = divmod(millis, 1000)
    known, text = _second[0]
    if known != seconds:
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
        _second[0] = (seconds, text)
    return f"{text}.{fraction:03d}Z"


def usd(nano: int) -> str:
    """Nano-dollars as an exact decimal string of dollars."""
    return f"{nano // 1_000_000_000}.{nano % 1_000_000_000:09d}"


def event(topic: str, **fields: Any) -> dict[str, Any]:
    """A task event (decision or lifecycle) with id, topic and time, and the current trace id when
    there is one. Not validated here: these are made per task on the hot path, and tests check them
    against schemas/events/."""
    made = {"id": ulid(), "topic": topic, "time": _now(), **fields}
    trace = tracing.trace_id()
    if trace is not None:
        made.setdefault("trace_id", trace)
    return made


__all__ = [
    "AUDIT_TOPIC",
    "DECISIONS_TOPIC",
    "LIFECYCLE_TOPIC",
    "RUNTIME_TOPIC",
    "audit",
    "event",
    "local_principal",
    "usd",
]
