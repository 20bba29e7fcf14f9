"""Event envelopes (audit events now; decisions and task lifecycle with the router), validated against
their schemas under ``schemas/events/``, and the append-only local event log (JSON lines).

The local log is what a daemon without Kafka keeps, and what aionctl writes for local actions: one
JSON object per line, appended under an exclusive lock and flushed to disk, so concurrent writers
never interleave and a crash loses at most the line being written.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import getpass
import json
import os
import secrets
import socket
import time
from functools import cache
from pathlib import Path
from typing import Any

from aion import schemas
from aion.errors import InputError

AUDIT_TOPIC = "aion.audit.activity"
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def ulid() -> str:
    """A ULID: 48 bits of milliseconds then 80 random bits, Crockford base32 (sorts by time)."""
    value = (int(time.time() * 1000) << 80) | secrets.randbits(80)
    return "".join(_CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))


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
    errors = [e.message for e in _audit_validator().iter_errors(event)]
    if errors:
        raise ValueError(f"malformed audit event: {'; '.join(errors)}")
    return event


class EventLog:
    """An append-only JSON-lines file of events."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, event: dict[str, Any]) -> None:
        self.append_many([event])

    def append_many(self, events: list[dict[str, Any]]) -> None:
        """Append several events with one write and one fsync (the daemon batches task events)."""
        line = "".join(json.dumps(e, separators=(",", ":"), ensure_ascii=False) + "\n" for e in events)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                size = os.fstat(fd).st_size
                if size and os.pread(fd, 1, size - 1) != b"\n":
                    line = "\n" + line  # end a line a crash cut short, so this event stays readable
                os.write(fd, line.encode())
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise InputError(f"cannot write the event log {self.path}: {exc.strerror}") from exc

    def read(self) -> list[dict[str, Any]]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in text.splitlines() if line.strip()]


DECISIONS_TOPIC = "aion.router.decisions"
LIFECYCLE_TOPIC = "aion.tasks.lifecycle"


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def usd(nano: int) -> str:
    """Nano-dollars as an exact decimal string of dollars."""
    return f"{nano // 1_000_000_000}.{nano % 1_000_000_000:09d}"


def event(topic: str, **fields: Any) -> dict[str, Any]:
    """A task event (decision or lifecycle) with id, topic and time. Not validated here: these are
    made per task on the hot path, and tests check them against schemas/events/."""
    return {"id": ulid(), "topic": topic, "time": _now(), **fields}


__all__ = [
    "AUDIT_TOPIC",
    "DECISIONS_TOPIC",
    "LIFECYCLE_TOPIC",
    "EventLog",
    "audit",
    "event",
    "local_principal",
    "ulid",
    "usd",
]
