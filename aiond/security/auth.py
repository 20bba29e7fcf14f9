"""Who may call what: API tokens with roles, optional client certificates, and the checks that the
transports run on every call (the gRPC interceptor in :mod:`aiond.serving.interceptors`, the HTTP
middleware in :mod:`aiond.serving.http`).

Roles are ordered; each includes the ones below it:

- ``viewer``: read status, policy versions, modules, events;
- ``operator``: also reload policies, run tasks, force breakers, switch intent modes;
- ``admin``: also apply and roll back policies, install and remove modules.

A token looks like ``aion_<id>_<secret>``. The id is public and finds the record; only the SHA-256 of
the secret is stored. The secret is 256 random bits, so a plain hash is as strong as a slow password
hash here (slow hashes protect guessable secrets) and keeps every call cheap. Comparison is constant
time. Tokens are managed offline with ``aiond token create|list|revoke|rotate``, and listed and
rotated over the API (AdminService.ListTokens and RotateToken, role admin).

Every credential records its last use, coarsely: :class:`TokenUses` notes each authenticated call in
memory (a dictionary entry, no I/O), and its flusher writes what it noted to the state every
``--token-use-interval`` seconds (a minute by default), one transaction for every credential used in
that time and none when none was, and once more at shutdown. So a credential's ``last_used_at`` is
at most one interval old while the daemon runs, and a busy token costs one row update a minute, not
one per call.

A rotation (:func:`rotate`) issues a new secret under the same name and role and makes the old one
expire at the end of an overlap (an hour by default), so clients can move to the new secret before
the old one is refused.

With a client CA configured (mTLS), the certificate's identity (its first URI SAN, else DNS SAN, else
email SAN, else common name) becomes the principal. Its role comes from the token the call
carries, or, without a token, from a grant bound to that identity
(``aiond token create NAME --identity ID``).

Health checks, reflection, ``/healthz``, ``/readyz`` and ``/metrics`` need no token: probes and
scrapers carry none. (With mTLS on, every gRPC connection still needs a client certificate, probes
included; HTTP asks for one but does not require it.) Every other method needs a role, and a method
this table does not know needs ``admin``, so a new RPC is closed until someone decides otherwise.
Every denial is counted, and audited (at a bounded rate, so a flood of bad calls cannot fill the
disk).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import datetime as dt
import enum
import hashlib
import hmac
import logging
import re
import secrets
import sqlite3
import time
from collections.abc import Awaitable, Callable, Mapping
from functools import lru_cache
from typing import Any

from aion.envelopes import audit
from aion.errors import AuthError, Error, Forbidden, Unauthenticated, UsageError
from aion.errors import transport as error_transport
from aiond.state.backend import Rotation, StateBackend, TokenRecord

log = logging.getLogger("aiond")

TOKEN_PREFIX = "aion_"  # noqa: S105 - a format marker, not a secret
_TOKEN = re.compile(r"^aion_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
_CACHE_SECONDS = 1.0
"""How long a looked-up credential is reused: the longest a revocation takes to bite."""


class Role(enum.IntEnum):
    NONE = 0
    """No role at all: the principal of a call that was never authenticated."""
    VIEWER = 1
    OPERATOR = 2
    ADMIN = 3

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Role:
        try:
            role = cls[text.strip().upper()]
            if role is cls.NONE:
                raise KeyError(text)
            return role
        except KeyError:
            raise UsageError(f"{text!r} is not a role", hint="use viewer, operator or admin") from None


@dataclasses.dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller."""

    name: str
    role: Role
    credential: str
    """The token's name, or "certificate" for an identity grant."""


SYSTEM = Principal("aiond", Role.ADMIN, "system")
"""The daemon itself, for changes it makes on its own (start-up, SIGHUP)."""
ANONYMOUS = Principal("anonymous", Role.NONE, "none")
current_principal: contextvars.ContextVar[Principal] = contextvars.ContextVar(
    "aion_principal", default=ANONYMOUS
)
"""The caller of the RPC being served; handlers read it for audit events. Outside an authenticated
call it is ANONYMOUS, which holds no role."""

_S = "/aion.v1."
METHOD_ROLES: Mapping[str, Role | None] = {
    # open: probes and API discovery
    "/grpc.health.v1.Health/Check": None,
    "/grpc.health.v1.Health/Watch": None,
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": None,
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo": None,
    # admin service
    _S + "AdminService/GetStatus": Role.VIEWER,
    _S + "AdminService/ListBreakers": Role.VIEWER,
    _S + "AdminService/ListIntentModes": Role.VIEWER,
    _S + "AdminService/SetBreakerState": Role.OPERATOR,
    _S + "AdminService/SetIntentMode": Role.OPERATOR,
    _S + "AdminService/WhoAmI": Role.VIEWER,
    _S + "AdminService/ListTokens": Role.ADMIN,
    _S + "AdminService/RotateToken": Role.ADMIN,
    # policies
    _S + "PolicyService/GetPolicyStatus": Role.VIEWER,
    _S + "PolicyService/ListPolicyVersions": Role.VIEWER,
    _S + "PolicyService/GetPolicyVersion": Role.VIEWER,
    _S + "PolicyService/ReloadPolicy": Role.OPERATOR,
    _S + "PolicyService/ApplyPolicy": Role.ADMIN,
    _S + "PolicyService/RollbackPolicy": Role.ADMIN,
    # modules
    _S + "ModuleService/ListModules": Role.VIEWER,
    _S + "ModuleService/GetModule": Role.VIEWER,
    _S + "ModuleService/VerifyModules": Role.VIEWER,
    _S + "ModuleService/SetModuleParallelism": Role.OPERATOR,
    _S + "ModuleService/InstallModule": Role.ADMIN,
    _S + "ModuleService/RemoveModule": Role.ADMIN,
    # tasks, routing, events
    _S + "TaskService/SubmitTask": Role.OPERATOR,
    _S + "TaskService/CancelTask": Role.OPERATOR,
    _S + "TaskService/GetTask": Role.VIEWER,
    _S + "TaskService/WatchTask": Role.VIEWER,
    _S + "RouterService/ExplainRoute": Role.VIEWER,
    _S + "EventService/TailEvents": Role.VIEWER,
    _S + "BackupService/CreateBackup": Role.ADMIN,
}

HTTP_ROLES: Mapping[tuple[str, str], Role | None] = {
    ("GET", "/healthz"): None,
    ("GET", "/readyz"): None,
    ("GET", "/metrics"): None,
    ("GET", "/router/policy"): Role.VIEWER,
    ("POST", "/router/policy/reload"): Role.OPERATOR,
    # The OpenAI-compatible endpoints, as SubmitTask and ListIntents.
    ("POST", "/v1/chat/completions"): Role.OPERATOR,
    ("GET", "/v1/models"): Role.VIEWER,
    ("GET", "/v1/models/{model}"): Role.VIEWER,
}


def required_role(method: str) -> Role | None:
    """The least role ``method`` needs; None when it is open. Unknown methods need admin."""
    return METHOD_ROLES.get(method, Role.ADMIN)


# -- tokens ----------------------------------------------------------------------------------------------


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def mint(
    name: str,
    role: Role,
    *,
    created_by: str,
    ttl: dt.timedelta | None = None,
    identity: str = "",
) -> tuple[TokenRecord, str]:
    """A new credential and, for a token, its text (shown once, never stored). An identity grant has
    no secret and an empty text."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.@:-]{0,63}", name):
        raise UsageError(
            f"{name!r} is not a valid credential name",
            hint="use 1-64 letters, digits, '_', '.', '@', ':' or '-', starting with a letter or digit",
        )
    now = dt.datetime.now(dt.UTC)
    token_id = secrets.token_hex(6)
    secret = "" if identity else secrets.token_urlsafe(32)
    record = TokenRecord(
        id=token_id,
        name=name,
        role=role.label,
        secret_sha256=hash_secret(secret) if secret else "",
        created_at=now,
        created_by=created_by,
        expires_at=now + ttl if ttl else None,
        identity=identity,
    )
    return record, (f"{TOKEN_PREFIX}{token_id}_{secret}" if secret else "")


DEFAULT_OVERLAP = dt.timedelta(hours=1)
MAX_OVERLAP = dt.timedelta(days=30)


def describe(record: TokenRecord) -> dict[str, Any]:
    """A credential as documents and audit events show it (never its secret's hash)."""

    def iso(when: dt.datetime | None) -> str | None:
        return when.astimezone(dt.UTC).isoformat().replace("+00:00", "Z") if when else None

    return {
        "id": record.id,
        "name": record.name,
        "role": record.role,
        "type": "identity" if record.identity else "token",
        "identity": record.identity or None,
        "createdAt": iso(record.created_at),
        "createdBy": record.created_by,
        "expiresAt": iso(record.expires_at),
        "revokedAt": iso(record.revoked_at),
        "lastUsedAt": iso(record.last_used_at),
        "replacedBy": record.replaced_by or None,
    }


def rotate(
    backend: StateBackend,
    name_or_id: str,
    *,
    overlap: dt.timedelta = DEFAULT_OVERLAP,
    principal: str,
) -> tuple[Rotation, str]:
    """Replace a token's secret: a new token of the same name and role (and, when the old one had a
    lifetime, the same lifetime from now), while the old one works on for ``overlap`` (0: it stops
    at once) and expires. One transaction with its ``token.rotate`` audit event; the caller then
    delivers the journal (``Journal.committed()``, or ``drain()`` offline). Returns the rotation and
    the new token's text, which is never stored."""
    if not dt.timedelta(0) <= overlap <= MAX_OVERLAP:
        raise UsageError(
            f"the overlap {overlap} is outside 0 to {MAX_OVERLAP.days} days",
            hint="give how long the old secret keeps working, for example 1h; 0 ends it at once",
        )
    now = dt.datetime.now(dt.UTC)
    texts: list[str] = []

    def issue(old: TokenRecord) -> TokenRecord:
        lifetime = old.expires_at - old.created_at if old.expires_at is not None else None
        record, text = mint(old.name, Role.parse(old.role), created_by=principal, ttl=lifetime)
        texts.append(text)
        return dataclasses.replace(record, created_at=now, expires_at=now + lifetime if lifetime else None)

    def recorded(rotation: Rotation) -> dict[str, Any]:
        return audit(
            principal=principal,
            action="token.rotate",
            target=rotation.new.name,
            outcome="success",
            before=rotation.old.id,
            after=rotation.new.id,
            reason=f"the old secret works until {describe(rotation.old)['expiresAt']}",
            details={"old": describe(rotation.old), "new": describe(rotation.new),
                     "overlapSeconds": int(overlap.total_seconds())},
        )  # fmt: skip

    rotation = backend.rotate_token(name_or_id, issue, at=now, overlap=overlap, audit=recorded)
    return rotation, texts[-1]


class TokenUses:
    """The last use of each credential: noted in memory on every call, written to the state every
    ``interval`` seconds (one transaction for all the credentials used meanwhile), and at :meth:`close`.

    Only credentials that authenticated are noted, so the dictionary holds at most one entry per stored
    credential. A write that fails (a full disk) keeps its uses for the next one."""

    def __init__(
        self,
        backend: StateBackend,
        *,
        interval: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._backend = backend
        self.interval = interval
        self._clock = clock
        self._noted: dict[str, float] = {}
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def note(self, token_id: str) -> None:
        self._noted[token_id] = self._clock()

    def flush(self) -> int:
        """Write what was noted since the last flush; returns how many credentials it was."""
        noted, self._noted = self._noted, {}
        if not noted:
            return 0
        try:
            self._backend.note_token_use(
                {token_id: dt.datetime.fromtimestamp(at, dt.UTC) for token_id, at in noted.items()}
            )
        except (Error, sqlite3.Error) as exc:  # a full disk, or the database locked for too long
            for token_id, at in noted.items():  # newer uses noted meanwhile win
                self._noted[token_id] = max(at, self._noted.get(token_id, at))
            log.warning(
                "the last use of %d credentials could not be recorded (kept for the next try): %s",
                len(noted), exc.message if isinstance(exc, Error) else exc,
            )  # fmt: skip
            return 0
        return len(noted)

    def start(self) -> None:
        """Start the flusher on the running loop; :meth:`close` stops it."""
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=self.interval)
            # Off the loop: the write may wait for another writer of the state (a commit's fsync).
            await asyncio.to_thread(self.flush)
            if self._stop.is_set():  # that was the last one
                return

    async def close(self) -> None:
        """Stop the flusher after one last flush (the uses since the last one)."""
        self._stop.set()
        if self._task is not None:
            await self._task
        else:
            self.flush()


class Authenticator:
    """Checks credentials against the state backend, with a short cache so each call stays cheap."""

    def __init__(
        self,
        backend: StateBackend,
        clock: Callable[[], float] = time.monotonic,
        *,
        uses: TokenUses | None = None,
    ) -> None:
        self._backend = backend
        self._clock = clock
        self.uses = uses
        """Where each call's use of its credential is noted (None: nowhere)."""
        self._cache: dict[str, tuple[float, TokenRecord | None]] = {}
        self._verified: dict[str, tuple[float, Principal, str]] = {}

    def _lookup(self, key: str, fetch: Callable[[], TokenRecord | None]) -> TokenRecord | None:
        now = self._clock()
        hit = self._cache.get(key)
        if hit is not None and now - hit[0] < _CACHE_SECONDS:
            return hit[1]
        record = fetch()
        if len(self._cache) > 10_000:  # bounded: unknown ids from a flood of bad tokens
            self._cache.clear()
        self._cache[key] = (now, record)
        return record

    def authenticate(self, token: str | None, identity: str | None) -> Principal:
        """The principal for a bearer token and/or a verified certificate identity. Raises
        Unauthenticated or Forbidden.

        A token that checked out is remembered for :data:`_CACHE_SECONDS` (like the records), so a
        client that sends the same token call after call is not hashed and looked up every time;
        revocation and expiry still take effect within that second."""
        if token and identity is None:
            hit = self._verified.get(token)
            if hit is not None and self._clock() - hit[0] < _CACHE_SECONDS:
                if self.uses is not None:
                    self.uses.note(hit[2])
                return hit[1]
            principal = self._authenticate(token, None)
            # Valid for as long as the record it was checked against: a revocation read from the
            # backend a second later ends it, as it would without this cache.
            token_id = token[len(TOKEN_PREFIX) : len(TOKEN_PREFIX) + 12]
            fetched = self._cache.get("t:" + token_id)
            if fetched is not None:
                if len(self._verified) > 10_000:
                    self._verified.clear()
                self._verified[token] = (fetched[0], principal, token_id)
            return principal
        return self._authenticate(token, identity)

    def _authenticate(self, token: str | None, identity: str | None) -> Principal:
        if token:
            match = _TOKEN.match(token)
            if match is None:
                raise Unauthenticated("the token is malformed", principal=identity or "anonymous")
            token_id, secret = match.groups()
            record = self._lookup("t:" + token_id, lambda: self._backend.token(token_id))
            if record is None or not record.secret_sha256:
                raise Unauthenticated("the token is not known", principal=identity or "anonymous")
            if not hmac.compare_digest(record.secret_sha256, hash_secret(secret)):
                raise Unauthenticated("the token is not known", principal=identity or "anonymous")
            self._check_live(record, identity or record.name)
            if self.uses is not None:
                self.uses.note(record.id)
            return Principal(identity or record.name, Role.parse(record.role), record.name)
        if identity:
            record = self._lookup("i:" + identity, lambda: self._backend.token_for_identity(identity))
            if record is None:
                raise Forbidden(
                    f"certificate identity {identity!r} has no role and the call has no token",
                    principal=identity,
                )
            self._check_live(record, identity)
            if self.uses is not None:
                self.uses.note(record.id)
            return Principal(identity, Role.parse(record.role), "certificate")
        raise Unauthenticated("the call carries no token (authorization: Bearer ...)")

    @staticmethod
    def _check_live(record: TokenRecord, who: str) -> None:
        if record.revoked_at is not None:
            raise Unauthenticated(f"credential {record.name!r} was revoked", principal=who)
        if record.expires_at is not None and record.expires_at <= dt.datetime.now(dt.UTC):
            raise Unauthenticated(f"credential {record.name!r} has expired", principal=who)


def authorize(principal: Principal, needed: Role, what: str) -> None:
    if principal.role < needed:
        raise Forbidden(
            f"{what} needs role {needed.label}; {principal.name} has {principal.role.label}",
            principal=principal.name,
        )


def bearer(value: str | None) -> str | None:
    """The token of an ``Authorization: Bearer ...`` value (the scheme is case-insensitive)."""
    if not value:
        return None
    scheme, _, rest = value.strip().partition(" ")
    return rest.strip() if scheme.lower() == "bearer" and rest.strip() else None


@lru_cache(maxsize=256)
def identity_of(der_or_pem: bytes) -> str | None:
    """A client certificate's identity: first URI SAN, else DNS SAN, else email SAN, else common name."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    try:
        if der_or_pem.lstrip().startswith(b"-----BEGIN"):
            cert = x509.load_pem_x509_certificate(der_or_pem)
        else:
            cert = x509.load_der_x509_certificate(der_or_pem)
    except ValueError:
        return None
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        san = None
    if san is not None:
        for kind in (x509.UniformResourceIdentifier, x509.DNSName, x509.RFC822Name):
            values = san.get_values_for_type(kind)
            if values:
                return str(values[0])
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else None


# -- denial reporting ----------------------------------------------------------------------------------


class DenialReporter:
    """Counts every denial and audits them at a bounded rate (token bucket: ``rate`` per second, bursts
    of ``burst``); denials over the rate are counted but not written."""

    def __init__(
        self,
        emit: Callable[[dict[str, Any]], Awaitable[None]],
        count: Callable[[str], None],
        *,
        rate: float = 10.0,
        burst: float = 50.0,
    ) -> None:
        self._emit = emit
        self._count = count
        self._rate = rate
        self._burst = burst
        self._tokens = burst
        self._last = time.monotonic()

    async def report(self, denied: AuthError, target: str, transport: str) -> None:
        kind = error_transport(denied).name
        self._count(kind)
        now = time.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
        self._last = now
        if self._tokens < 1:
            return
        self._tokens -= 1
        try:
            await self._emit(
                audit(
                    principal=denied.principal,
                    action="auth.deny",
                    target=target,
                    outcome="refused",
                    reason=denied.message,
                    details={"kind": kind, "transport": transport},
                )
            )
        except Error as exc:  # the caller is refused either way; the record is what failed
            log.warning("a denial could not be recorded: %s", exc.message)


__all__ = [
    "ANONYMOUS",
    "DEFAULT_OVERLAP",
    "HTTP_ROLES",
    "MAX_OVERLAP",
    "METHOD_ROLES",
    "SYSTEM",
    "Authenticator",
    "DenialReporter",
    "Principal",
    "Role",
    "TokenUses",
    "authorize",
    "bearer",
    "current_principal",
    "describe",
    "hash_secret",
    "identity_of",
    "mint",
    "required_role",
    "rotate",
]
