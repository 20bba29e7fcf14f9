"""The one error model of aion, and the one table of how each kind of error reaches a user.

Every failure a user can cause or meet is an :class:`Error`. ``aionctl`` catches it in one place and
exits with its code; ``aiond`` raises it from a handler and one interceptor (gRPC) or middleware (HTTP)
answers with its status; nothing else picks a code. Lower-layer exceptions (grpc, httpx, sqlite3, OS
errors) are translated into these at the boundary with ``raise ... from``, so ``--debug`` can still
show the cause.

Exception tree, with each class's row of :data:`TABLE` (exit code, gRPC status, HTTP status)::

    Error                          1  INTERNAL             500  (never raised as itself)
    ├── UsageError                 2  INVALID_ARGUMENT     400  a value on the command line or in a request
    ├── InputError                 3  FAILED_PRECONDITION  409  a file or directory cannot be read or used
    │   ├── NotFound               3  NOT_FOUND            404  no such version, task, module, intent ...
    │   ├── ConfigError            3  FAILED_PRECONDITION  409  a config file cannot be loaded at all
    │   ├── RegistryError          3  UNAVAILABLE          502  a registry or image layout failed
    │   ├── StorageFull            3  RESOURCE_EXHAUSTED   507  the disk (or quota) is full
    │   └── StorageUnavailable     3  UNAVAILABLE          503  the disk cannot be written (read-only, I/O)
    ├── FindingsError              1  FAILED_PRECONDITION  422  the work ran and found problems
    │   ├── InvalidConfig          1  INVALID_ARGUMENT     422  a config set has errors (with findings)
    │   ├── Refused                1  FAILED_PRECONDITION  422  the router's hard rules refuse a task
    │   │   └── BudgetExhausted    1  RESOURCE_EXHAUSTED   429  today's budget has too little left
    │   └── VerificationError      1  PERMISSION_DENIED    403  a signature, digest or trust check failed
    │       └── EvidenceMissing    1  FAILED_PRECONDITION  422  something the policy requires is absent
    ├── AuthError                  4  PERMISSION_DENIED    403
    │   ├── Unauthenticated        4  UNAUTHENTICATED      401  no valid credential
    │   ├── Forbidden              4  PERMISSION_DENIED    403  a valid credential, too weak a role
    │   └── RegistryAuthError      4  FAILED_PRECONDITION  502  a registry refused the credentials
    ├── DaemonUnavailable          5  UNAVAILABLE          503  cannot be reached, or cannot serve now
    │   ├── Saturated              5  RESOURCE_EXHAUSTED   429  full queues; retry after a while
    │   ├── Draining               5  UNAVAILABLE          503  shutting down: no new work, retry in a moment
    │   └── EventsBacklogged       5  UNAVAILABLE          503  the event outbox is full: no audit, no change
    ├── ConflictError              6  FAILED_PRECONDITION  409  a precondition does not hold
    │   └── Stale                  6  ABORTED              409  what the caller expected has changed
    └── ServiceError               1  INTERNAL             500  the daemon failed in a way none of these say
        ├── InternalError          1  INTERNAL             500  an unexpected exception (a bug), with an id
        └── UpstreamFailed         5  UNAVAILABLE          502  no provider or module of the chain answered
            └── UpstreamTimeout    5  DEADLINE_EXCEEDED    504  the task's deadline passed first

The daemon sends the row's :attr:`Transport.name` in the ``aion-error`` trailer (and the hint in
``aion-hint-bin``), so a client rebuilds the very class the daemon raised (:func:`from_status`) and
exits with the same code a local run would; without the trailer (another server) it falls back on
the gRPC code.
"""

from __future__ import annotations

import dataclasses
import errno
from collections.abc import Mapping

from aion.exitcodes import ExitCode

Metadata = tuple[tuple[str, str | bytes], ...]


class Error(Exception):
    """Base of every aion error. ``message`` says what went wrong; ``hint`` says what to do."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.trailers: Metadata = ()
        """Extra response metadata a transport sends with this error (for example the findings of a
        refused activation); set by whoever raises it."""

    retry_after: float | None = None
    """When the caller may try again, in seconds (sent as ``retry-after-ms``); set by the errors that
    know (:class:`Saturated`, :class:`BudgetExhausted`, :class:`Draining`)."""

    @property
    def exit_code(self) -> ExitCode:
        return transport(self).exit_code

    def diagnostics(self) -> str:
        """The text shown to a user: the message, then the hint on its own line when there is one."""
        if self.hint:
            return f"{self.message}\nhint: {self.hint}"
        return self.message

    def metadata(self) -> Metadata:
        """What a transport sends along with this error, beyond its status and message."""
        return self.trailers + _retry_after(self.retry_after)


class UsageError(Error):
    pass


class InputError(Error):
    pass


class NotFound(InputError):
    pass


class ConfigError(InputError):
    pass


class RegistryError(InputError):
    pass


class StorageFull(InputError):
    pass


class StorageUnavailable(InputError):
    pass


_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})
_UNWRITABLE = frozenset({errno.EROFS, errno.EIO, errno.EACCES, errno.EPERM})


def storage_error(exc: OSError, what: str) -> InputError:
    """The error a failed write to ``what`` (a file aion keeps) stands for: a full disk, a disk that
    cannot be written, or another input/output error."""
    if exc.errno in _FULL:
        return StorageFull(
            f"cannot write {what}: the disk is full", hint="free space on it; nothing was half-written"
        )
    reason = exc.strerror or str(exc)
    if exc.errno in _UNWRITABLE:
        return StorageUnavailable(
            f"cannot write {what}: {reason}", hint="check the disk and its mount (read-only?)"
        )
    return InputError(f"cannot write {what}: {reason}")


class FindingsError(Error):
    pass


class InvalidConfig(FindingsError):
    pass


class Refused(FindingsError):
    """A task the router's hard rules or the budget refuse; ``code`` is the reason code."""

    def __init__(self, message: str, *, code: str = "REFUSED", hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.code = code


class BudgetExhausted(Refused):
    """Today's budget (``budget.daily_cap_usd``) has too little left for a task: try again after
    ``retry_after`` seconds (sent as ``retry-after-ms``), when tasks in flight have settled or the UTC
    day has turned."""

    def __init__(self, message: str, *, retry_after: float | None = None, hint: str | None = None) -> None:
        super().__init__(message, code="BUDGET_EXHAUSTED", hint=hint)
        self.retry_after = retry_after


class VerificationError(FindingsError):
    pass


class EvidenceMissing(VerificationError):
    pass


class AuthError(Error):
    def __init__(self, message: str, *, hint: str | None = None, principal: str = "anonymous") -> None:
        super().__init__(message, hint=hint)
        self.principal = principal
        """Who was refused (for the audit trail)."""


class Unauthenticated(AuthError):
    pass


class Forbidden(AuthError):
    pass


class RegistryAuthError(AuthError):
    pass


class DaemonUnavailable(Error):
    pass


class Saturated(DaemonUnavailable):
    """Queues are full: try again after ``retry_after`` seconds (sent as ``retry-after-ms``)."""

    def __init__(self, message: str, *, retry_after: float | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.retry_after = retry_after


class Draining(DaemonUnavailable):
    """The daemon is shutting down: it takes no new work, while the work it has finishes. Try again
    after ``retry_after`` seconds (another instance, or this one restarted)."""

    def __init__(self, message: str, *, retry_after: float = 1.0, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.retry_after = retry_after


def _retry_after(seconds: float | None) -> Metadata:
    return () if seconds is None else (("retry-after-ms", str(round(seconds * 1000))),)


class EventsBacklogged(DaemonUnavailable):
    """The event outbox is full of events Kafka has not taken: an admin action, whose audit event
    would not fit, is refused rather than done without its record."""


class ConflictError(Error):
    pass


class Stale(ConflictError):
    pass


class ServiceError(Error):
    pass


class InternalError(ServiceError):
    """An unexpected exception: the user sees its id, the daemon's log has the rest."""

    def __init__(self, error_id: str) -> None:
        super().__init__(
            f"internal error {error_id}",
            hint=f"this is a bug in aiond; its log has a line with {error_id} (report it)",
        )
        self.error_id = error_id


class UpstreamFailed(ServiceError):
    """A task was admitted, but no target of its chain answered (``code`` is the task's error code,
    for example PROVIDER_UNAVAILABLE): what a caller that waits for the answer meets."""

    def __init__(self, message: str, *, code: str = "PROVIDER_UNAVAILABLE", hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.code = code


class UpstreamTimeout(UpstreamFailed):
    """A task waited for ran out of time before any target answered."""


@dataclasses.dataclass(frozen=True, slots=True)
class Transport:
    """How one kind of error reaches a user."""

    name: str
    """Stable: sent in the ``aion-error`` trailer and in HTTP error documents as ``reason``."""
    exit_code: ExitCode
    grpc: str
    """The name of a ``grpc.StatusCode`` (aion does not import grpc for this table)."""
    http: int


TABLE: Mapping[type[Error], Transport] = {
    Error: Transport("internal", ExitCode.FINDINGS, "INTERNAL", 500),
    UsageError: Transport("usage", ExitCode.USAGE, "INVALID_ARGUMENT", 400),
    InputError: Transport("input", ExitCode.INPUT, "FAILED_PRECONDITION", 409),
    NotFound: Transport("not-found", ExitCode.INPUT, "NOT_FOUND", 404),
    ConfigError: Transport("config", ExitCode.INPUT, "FAILED_PRECONDITION", 409),
    RegistryError: Transport("registry", ExitCode.INPUT, "UNAVAILABLE", 502),
    StorageFull: Transport("storage-full", ExitCode.INPUT, "RESOURCE_EXHAUSTED", 507),
    StorageUnavailable: Transport("storage-unavailable", ExitCode.INPUT, "UNAVAILABLE", 503),
    FindingsError: Transport("findings", ExitCode.FINDINGS, "FAILED_PRECONDITION", 422),
    InvalidConfig: Transport("invalid-config", ExitCode.FINDINGS, "INVALID_ARGUMENT", 422),
    Refused: Transport("refused", ExitCode.FINDINGS, "FAILED_PRECONDITION", 422),
    BudgetExhausted: Transport("budget-exhausted", ExitCode.FINDINGS, "RESOURCE_EXHAUSTED", 429),
    VerificationError: Transport("verification", ExitCode.FINDINGS, "PERMISSION_DENIED", 403),
    EvidenceMissing: Transport("evidence-missing", ExitCode.FINDINGS, "FAILED_PRECONDITION", 422),
    AuthError: Transport("auth", ExitCode.AUTH, "PERMISSION_DENIED", 403),
    Unauthenticated: Transport("unauthenticated", ExitCode.AUTH, "UNAUTHENTICATED", 401),
    Forbidden: Transport("forbidden", ExitCode.AUTH, "PERMISSION_DENIED", 403),
    RegistryAuthError: Transport("registry-auth", ExitCode.AUTH, "FAILED_PRECONDITION", 502),
    DaemonUnavailable: Transport("unavailable", ExitCode.UNAVAILABLE, "UNAVAILABLE", 503),
    Saturated: Transport("saturated", ExitCode.UNAVAILABLE, "RESOURCE_EXHAUSTED", 429),
    Draining: Transport("draining", ExitCode.UNAVAILABLE, "UNAVAILABLE", 503),
    EventsBacklogged: Transport("events-backlogged", ExitCode.UNAVAILABLE, "UNAVAILABLE", 503),
    ConflictError: Transport("conflict", ExitCode.CONFLICT, "FAILED_PRECONDITION", 409),
    Stale: Transport("stale", ExitCode.CONFLICT, "ABORTED", 409),
    ServiceError: Transport("service", ExitCode.FINDINGS, "INTERNAL", 500),
    InternalError: Transport("internal", ExitCode.FINDINGS, "INTERNAL", 500),
    UpstreamFailed: Transport("upstream", ExitCode.UNAVAILABLE, "UNAVAILABLE", 502),
    UpstreamTimeout: Transport("upstream-timeout", ExitCode.UNAVAILABLE, "DEADLINE_EXCEEDED", 504),
}
"""Every class of the tree above, with its row. A subclass defined elsewhere (``ActivationRefused``,
``SecretMissing``, ...) takes the row of its nearest ancestor here; a kind of error that must reach
users differently gets a class of its own in this module, so no error can be mapped two ways."""

_BY_NAME: Mapping[str, type[Error]] = {row.name: cls for cls, row in TABLE.items() if cls is not Error}

_FROM_GRPC: Mapping[str, type[Error]] = {
    "INVALID_ARGUMENT": UsageError,
    "OUT_OF_RANGE": UsageError,
    "NOT_FOUND": NotFound,
    "FAILED_PRECONDITION": ConflictError,
    "ABORTED": Stale,
    "ALREADY_EXISTS": ConflictError,
    "UNAUTHENTICATED": Unauthenticated,
    "PERMISSION_DENIED": Forbidden,
    "UNAVAILABLE": DaemonUnavailable,
    "DEADLINE_EXCEEDED": DaemonUnavailable,
    "RESOURCE_EXHAUSTED": Saturated,
}
"""What a gRPC status means when the server did not say which aion error it was."""


def transport(error: BaseException) -> Transport:
    """The row of :data:`TABLE` for ``error``: its class's, else its nearest listed ancestor's. An
    exception that is no :class:`Error` at all is a bug, and reaches users as an internal error."""
    for cls in type(error).__mro__:
        row = TABLE.get(cls)
        if row is not None:
            return row
    return TABLE[Error]


def from_status(grpc_code: str, message: str, *, name: str | None = None, hint: str | None = None) -> Error:
    """The error a daemon's failed call stands for: the class named by its ``aion-error`` trailer, or
    the class its gRPC status means (:class:`ServiceError` for any other status)."""
    cls = _BY_NAME.get(name or "") or _FROM_GRPC.get(grpc_code, ServiceError)
    if cls is InternalError:
        cls = ServiceError  # the id is already in the message
    return cls(message, hint=hint)


__all__ = [
    "TABLE",
    "AuthError",
    "BudgetExhausted",
    "ConfigError",
    "ConflictError",
    "DaemonUnavailable",
    "Draining",
    "Error",
    "EventsBacklogged",
    "EvidenceMissing",
    "FindingsError",
    "Forbidden",
    "InputError",
    "InternalError",
    "InvalidConfig",
    "NotFound",
    "Refused",
    "RegistryAuthError",
    "RegistryError",
    "Saturated",
    "ServiceError",
    "Stale",
    "StorageFull",
    "StorageUnavailable",
    "Transport",
    "Unauthenticated",
    "UpstreamFailed",
    "UpstreamTimeout",
    "UsageError",
    "VerificationError",
    "from_status",
    "storage_error",
    "transport",
]
