"""What aiond keeps durably, as one interface (:class:`StateBackend`) and the records it stores:
policy versions, activations, API credentials, runtime intent modes, daily spend and the event
outbox. Every method that changes something is one transaction, so a crash at any moment leaves
either the state before the change or the state after it; a change made by an admin takes its audit
event (``audit=``) into the outbox in that same transaction, so the change never survives without
its record, nor the record without the change. :mod:`aiond.state.sqlite` is the implementation."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, TypeAlias, TypeVar

from aion.errors import Stale


@dataclasses.dataclass(frozen=True, slots=True)
class StoredVersion:
    """One immutable policy version as stored."""

    number: int
    tag: str
    author: str
    created_at: dt.datetime
    source: str
    """How it arrived: apply, reload, sighup, http, startup or rollback."""
    description: str
    """Free text from the client (for example a git commit), or what a rollback went back to."""


@dataclasses.dataclass(frozen=True, slots=True)
class Activation:
    """One entry of the activation log: which version became active when."""

    sequence: int
    number: int
    at: dt.datetime


@dataclasses.dataclass(frozen=True, slots=True)
class TokenRecord:
    """An API credential. ``secret_sha256`` is empty for a certificate-identity grant, whose ``identity``
    is matched against the client certificate instead of a secret."""

    id: str
    name: str
    role: str
    secret_sha256: str
    created_at: dt.datetime
    created_by: str
    expires_at: dt.datetime | None = None
    revoked_at: dt.datetime | None = None
    identity: str = ""
    last_used_at: dt.datetime | None = None
    """When a call last authenticated with it, to within the daemon's flush interval (a minute by
    default); None when none has yet."""
    replaced_by: str = ""
    """The id of the credential a rotation issued in its place; it works on until ``expires_at``."""


@dataclasses.dataclass(frozen=True, slots=True)
class Rotation:
    """A credential replaced by a new one of the same name and role."""

    old: TokenRecord
    """As stored after the rotation: ``replaced_by`` the new id, ``expires_at`` the overlap's end."""
    new: TokenRecord


@dataclasses.dataclass(frozen=True, slots=True)
class IntentMode:
    """A runtime privacy switch of one intent (the runbook's incident lever)."""

    intent: str
    mode: str
    """local-only, allow-api or hybrid."""
    set_by: str
    set_at: dt.datetime
    reason: str


@dataclasses.dataclass(frozen=True, slots=True)
class ModuleParallelism:
    """A runtime parallelism limit of one module (the runbook's incident lever)."""

    module: str
    parallelism: int
    set_by: str
    set_at: dt.datetime
    reason: str


@dataclasses.dataclass(frozen=True, slots=True)
class OutboxRow:
    """One event waiting in the outbox."""

    seq: int
    id: str
    topic: str
    key: str
    """The Kafka partition key: the task's id for task events, the target for audit events."""
    body: bytes
    """The encoded event: one line of the event log, newline included."""
    audit: bool
    at: float
    """When it was written (Unix seconds)."""


@dataclasses.dataclass(frozen=True, slots=True)
class OutboxLevels:
    """What waits in the outbox now."""

    audit: int
    task: int
    bytes: int
    oldest_at: float | None


T = TypeVar("T")
AuditFor: TypeAlias = "Callable[[T], dict[str, Any]] | None"
"""The audit event of a change, made from its result inside the change's transaction."""


class StaleActiveVersion(Stale):
    """The active version is not the one the caller expected (optimistic concurrency)."""


class StateBackend(Protocol):
    """What aiond keeps durably. Every method that changes something is one transaction."""

    # policy versions
    def add_version(
        self,
        files: Sequence[tuple[str, bytes]],
        *,
        tag: str,
        author: str,
        source: str,
        description: str,
        expected_active_tag: str | None = None,
        audit: AuditFor[StoredVersion] = None,
    ) -> StoredVersion:
        """Store a new version and make it active, atomically. Raises :class:`StaleActiveVersion` when
        ``expected_active_tag`` is given and is not the active version's tag."""
        ...

    def versions(self, *, limit: int, before: int | None = None) -> list[StoredVersion]: ...
    def version(self, number: int) -> StoredVersion | None: ...
    def versions_with_tag_prefix(self, prefix: str) -> list[StoredVersion]: ...
    def files(self, number: int) -> list[tuple[str, bytes]]: ...
    def active(self) -> tuple[StoredVersion, dt.datetime] | None: ...
    def activations(self, *, limit: int) -> list[Activation]: ...
    def record_error(self, error: dict[str, Any]) -> None: ...

    # spending
    def spent(self, day: str) -> int:
        """Nano-dollars settled on ``day`` (YYYY-MM-DD, UTC)."""
        ...

    def add_spend(self, spends: Mapping[str, int]) -> None:
        """Add nano-dollars to each day's spend (YYYY-MM-DD, UTC), in one transaction."""
        ...

    # runtime intent modes
    def intent_modes(self) -> list[IntentMode]: ...
    def set_intent_mode(
        self, mode: IntentMode | None, intent: str, *, audit: dict[str, Any] | None = None
    ) -> None:
        """Store ``mode`` for ``intent``; None removes it (back to what the policy says)."""
        ...

    # runtime module parallelism
    def module_parallelism(self) -> list[ModuleParallelism]: ...
    def set_module_parallelism(
        self, setting: ModuleParallelism, *, audit: dict[str, Any] | None = None
    ) -> None:
        """Store ``setting`` for its module (replacing an earlier one)."""
        ...

    def last_error(self) -> dict[str, Any] | None: ...

    # credentials
    def add_token(self, record: TokenRecord, *, audit: dict[str, Any] | None = None) -> None: ...
    def token(self, token_id: str) -> TokenRecord | None: ...
    def token_for_identity(self, identity: str) -> TokenRecord | None: ...
    def tokens(self, *, include_revoked: bool = False) -> list[TokenRecord]: ...
    def revoke_token(
        self, name_or_id: str, at: dt.datetime, *, audit: AuditFor[TokenRecord] = None
    ) -> TokenRecord:
        """Revoke the live credential with id ``name_or_id``, else every live one of that name (the
        current one and those a rotation replaced), each with its own audit event; returns the
        current one."""
        ...

    def rotate_token(
        self,
        name_or_id: str,
        issue: Callable[[TokenRecord], TokenRecord],
        *,
        at: dt.datetime,
        overlap: dt.timedelta,
        audit: AuditFor[Rotation] = None,
    ) -> Rotation:
        """Replace the current credential of a name (or the one of an id) with ``issue(old)``, in one
        transaction: the old one expires at ``at + overlap`` (or earlier, if it already did). Raises
        InputError when there is no such credential, ConflictError when it cannot be rotated (a
        certificate-identity grant, expired, or already replaced)."""
        ...

    def note_token_use(self, uses: Mapping[str, dt.datetime]) -> None:
        """Record when each credential (by id) was last used, in one transaction; a time older than
        the stored one leaves it as it is."""
        ...

    # the event outbox
    def configure_outbox(self, *, kafka: bool, max_bytes: int) -> int:
        """Whether events wait for Kafka too, and how many bytes of events may wait at most. Returns
        how many events that waited for Kafka will not go there (Kafka is no longer configured)."""
        ...

    def outbox_add(self, events: Sequence[dict[str, Any]]) -> None:
        """Write audit events to the outbox, in one transaction. Raises EventsBacklogged when they do not
        fit even after task events are shed."""
        ...

    def outbox_add_tasks(self, rows: Sequence[tuple[str, str, str, str]]) -> dict[str, int]:
        """Write encoded task events ``(id, topic, key, line)``, in one transaction; those that do not
        fit are shed. Returns the count shed, by topic."""
        ...

    def outbox_hold(self, event: dict[str, Any]) -> int: ...
    def outbox_release(self, seq: int) -> None: ...
    def outbox_discard(self, seq: int) -> None: ...
    def outbox_held(self) -> list[OutboxRow]: ...
    def outbox_unlogged(self, *, limit: int) -> list[OutboxRow]: ...
    def outbox_logged(self, seqs: Sequence[int]) -> None: ...
    def outbox_undelivered(self, *, after: int, limit: int) -> list[OutboxRow]: ...
    def outbox_delivered(self, seqs: Sequence[int]) -> None: ...
    def outbox_levels(self) -> OutboxLevels: ...

    def close(self) -> None: ...


__all__ = [
    "Activation",
    "AuditFor",
    "IntentMode",
    "ModuleParallelism",
    "OutboxLevels",
    "OutboxRow",
    "Rotation",
    "StaleActiveVersion",
    "StateBackend",
    "StoredVersion",
    "TokenRecord",
]
