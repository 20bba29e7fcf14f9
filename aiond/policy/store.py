"""The policy store: versioned config sets, validated before they are activated, kept for rollback.

Every config set that becomes active is stored as an immutable :class:`~aiond.state.StoredVersion`
(number, content tag, author, time, source). Changes go one at a time through one lock, in this order:

1. read the set (the config directory, uploaded files, or a stored version);
2. validate it with :func:`aion.config.validate.validate`, the very rules of ``aionctl validate``, in a
   worker thread so that the daemon keeps serving; then judge the files it names against the
   daemon's own directories (:func:`aion.config.semantics.judge_for_daemon`): trust keys only
   inside ``--config`` or ``--trust-keys-dir``, and secrets.directory compared with
   ``--secrets-dir``, where the daemon reads API keys whatever a set says;
3. refuse it with its findings when it has errors (the running version stays active, and the refusal
   is remembered as the last error), or when the caller's expected active tag is stale;
4. store it as a new version and mark it active, in one transaction;
5. swap :attr:`PolicyStore.active` (one reference assignment). Work that started on the old snapshot
   keeps it: snapshots are immutable and nobody mutates them in place;
6. emit an audit event either way.

A rollback is a change like any other: the earlier version's files are validated again and stored as a
new version whose source is ``rollback``, so the history reads top to bottom as what was active when,
and rolling back twice returns to where one started.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

from aion.config.findings import Finding, Severity
from aion.config.kinds import Kind
from aion.config.model import ConfigSnapshot
from aion.config.semantics import DaemonPaths, judge_for_daemon
from aion.config.validate import Report, Source, collect, ignored, read_alone
from aion.config.yamlload import Document, Limits, load
from aion.envelopes import audit
from aion.errors import ConflictError, Error, InputError, InvalidConfig, NotFound, UsageError
from aion.routing import RoutingTable, compile_table
from aiond.policy.validation import Validator
from aiond.state.backend import StaleActiveVersion, StateBackend, StoredVersion

log = logging.getLogger("aiond.policy")

MAX_FILES = 256
"""Most files one config set may have."""
HISTORY_PAGE = 50
"""Versions listed when a client names no page size."""
HISTORY_PAGE_MAX = 1000

AuditSink = Callable[[dict[str, Any]], Awaitable[None]]
_FAULT_FILE = os.environ.get("AIOND_TEST_FAULT_FILE", "")
"""Fault injection for the zero-loss tests: while the file this names exists, aiond kills itself
right after committing a policy version, before anything else is done with its audit event."""


def _crash_after_commit() -> bool:
    return bool(_FAULT_FILE) and Path(_FAULT_FILE).exists()


_T = TypeVar("_T")


def _settle(task: asyncio.Future[Any]) -> None:
    """Mark a detached change's outcome as seen when its caller has gone (no "never retrieved" noise)."""
    if not task.cancelled():
        task.exception()


@dataclasses.dataclass(frozen=True, slots=True)
class ActiveConfig:
    """What the router runs under: one stored version, the snapshot built from it, and the snapshot
    compiled for routing decisions."""

    version: StoredVersion
    snapshot: ConfigSnapshot
    activated_at: dt.datetime
    routing: RoutingTable


@dataclasses.dataclass(frozen=True, slots=True)
class Outcome:
    """The result of an apply or a reload that was not refused."""

    activated: bool
    version: StoredVersion | None
    """The version created, or the active one when nothing changed; None for a dry run of new content."""
    previous: StoredVersion | None
    unchanged: bool
    findings: tuple[Finding, ...]
    tag: str
    """The content tag of the set that was checked."""


class ActivationRefused(InvalidConfig):
    """A config set was not activated because it has errors. ``findings`` says where (at most
    :data:`~aiond.policy.validation.MAX_FINDINGS` of them; ``omitted`` counts the rest)."""

    def __init__(
        self, message: str, findings: Sequence[Finding], *, hint: str | None = None, omitted: int = 0
    ) -> None:
        super().__init__(message, hint=hint)
        self.findings = tuple(findings)
        self.omitted = omitted

    def diagnostics(self) -> str:
        shown = [f for f in self.findings if f.severity is Severity.ERROR][:20]
        lines = [self.message]
        lines += [f"  {f.file}:{f.line}:{f.column}: {f.rule} {f.message}" for f in shown]
        if self.hint:
            lines.append(f"hint: {self.hint}")
        return "\n".join(lines)


class RollbackRefused(ConflictError):
    """The version to roll back to no longer validates under the current rules."""

    def __init__(self, message: str, findings: Sequence[Finding], *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.findings = tuple(findings)
        self.omitted = 0


class VersionNotFound(NotFound):
    """No stored version matches a number or tag."""


class NothingToRollBack(ConflictError):
    """There is no earlier version to go back to, or the target is already active."""


@dataclasses.dataclass(frozen=True, slots=True)
class Target:
    """A version selector: a number, a tag (or a unique prefix of one), or neither (the previous)."""

    number: int | None = None
    tag: str | None = None


class PolicyStore:
    """The daemon's policy versions. Create, then ``await start()``; read :attr:`active` freely."""

    def __init__(
        self,
        backend: StateBackend,
        config_dir: Path,
        *,
        emit: AuditSink,
        committed: Callable[[], Awaitable[None]] | None = None,
        on_change: Callable[[ActiveConfig, str, str, float], None] | None = None,
        limits: Limits | None = None,
        validator: Validator | None = None,
        trust_keys_dir: Path | None = None,
        secrets_dir: Path | None = None,
    ) -> None:
        self._backend = backend
        self.config_dir = config_dir
        self._paths = DaemonPaths(config_dir, trust_keys_dir, secrets_dir)
        self._emit = emit
        self._committed = committed
        """Given (the daemon's journal), a new version's audit event is written in the version's own
        transaction, and this is called after it; else the event is emitted after the commit."""
        self._on_change = on_change
        self._limits = limits or Limits()
        self._validator = validator or Validator(processes=False)
        self._lock = asyncio.Lock()
        self._active: ActiveConfig | None = None
        self._last_error: dict[str, Any] | None = None
        self._changes: set[asyncio.Future[Any]] = set()
        self.audit_failures = 0

    @property
    def active(self) -> ActiveConfig | None:
        """The active version. Read it once per task and keep the reference: it never changes under you."""
        return self._active

    @property
    def last_error(self) -> dict[str, Any] | None:
        return self._last_error

    # -- start-up ------------------------------------------------------------------------------------

    async def start(self, *, prefer_config_dir: bool = False) -> ActiveConfig:
        """Activate the stored active version, or the config directory when there is none (or when
        ``prefer_config_dir`` and the directory is valid). Raises ActivationRefused when nothing valid
        can be activated, so the daemon does not start without policies. Returns what is active."""
        self._last_error = await asyncio.to_thread(self._backend.last_error)
        stored = await asyncio.to_thread(self._backend.active)
        if stored is not None:
            version, activated_at = stored
            files = await asyncio.to_thread(self._backend.files, version.number)
            report = await self._check_files(files, f"policy version {version.number}")
            if report.snapshot is not None:
                table = await asyncio.to_thread(compile_table, report.snapshot)
                self._set_active(
                    ActiveConfig(version, report.snapshot, activated_at, table), "startup", "resumed", 0.0
                )
                log.info("resumed policy version %d (%s)", version.number, version.tag)
            else:
                log.error(
                    "the stored active policy version %d no longer validates (%d errors); "
                    "activating the config directory instead",
                    version.number,
                    sum(1 for f in report.findings if f.severity is Severity.ERROR),
                )
        if self._active is None or prefer_config_dir:
            try:
                outcome = await self.reload(principal="aiond", source="startup")
            except ActivationRefused:
                if self._active is None:
                    raise
                log.warning(
                    "the config directory %s has errors; staying on policy version %d",
                    self.config_dir,
                    self._active.version.number,
                )
                return self._active
            if outcome.unchanged:
                log.info("config directory %s matches the active version", self.config_dir)
            assert self._active is not None  # a reload that was not refused activated a version
            return self._active
        await self._warn_if_directory_differs()
        return self._active

    async def _warn_if_directory_differs(self) -> None:
        assert self._active is not None
        try:
            report = await self._check_directory()
        except Error:
            return
        tag = report.snapshot.tag if report.snapshot is not None else None
        if tag != self._active.version.tag:
            log.warning(
                "the config directory %s differs from the active policy version %d; "
                "run `aionctl policy reload` (or send SIGHUP) to activate it",
                self.config_dir,
                self._active.version.number,
            )

    # -- changes -------------------------------------------------------------------------------------

    async def _detached(self, change: Coroutine[Any, Any, _T]) -> _T:
        """Run a change to its end even when the caller goes away (deadline, disconnect, shutdown):
        a version that was committed must also be swapped in and audited, and the lock must be held
        until then."""
        task = asyncio.ensure_future(change)
        self._changes.add(task)
        task.add_done_callback(_settle)
        task.add_done_callback(self._changes.discard)
        return await asyncio.shield(task)

    async def drain(self) -> None:
        """Wait for changes still running after their callers left (called before the state closes)."""
        while self._changes:
            await asyncio.gather(*self._changes, return_exceptions=True)

    async def reload(self, *, principal: str, source: str = "reload", dry_run: bool = False) -> Outcome:
        """Re-read the config directory and activate it."""
        return await self._detached(self._reload(principal, source, dry_run))

    async def _reload(self, principal: str, source: str, dry_run: bool) -> Outcome:
        async with self._lock:
            started = time.perf_counter()
            try:
                sources = await asyncio.to_thread(self._read_directory)
            except Error as exc:
                await self._refused(principal, source, "policy.reload", exc.message, (), dry_run=dry_run)
                raise
            report = await self._validate(sources, str(self.config_dir))
            files = [(_relative(s.name, self.config_dir), s.data) for s in sources]
            return await self._activate(
                files, report, principal=principal, source=source, action="policy.reload",
                description=str(self.config_dir), dry_run=dry_run, expected_tag=None, started=started,
            )  # fmt: skip

    async def apply(
        self,
        files: Sequence[tuple[str, bytes]],
        *,
        principal: str,
        description: str = "",
        dry_run: bool = False,
        expected_tag: str | None = None,
    ) -> Outcome:
        """Validate an uploaded config set and activate it. Relative paths inside it (trust keys)
        resolve against the daemon's config directory, as they would after a reload."""
        return await self._detached(self._apply(files, principal, description, dry_run, expected_tag))

    async def _apply(
        self,
        files: Sequence[tuple[str, bytes]],
        principal: str,
        description: str,
        dry_run: bool,
        expected_tag: str | None,
    ) -> Outcome:
        async with self._lock:
            started = time.perf_counter()
            try:
                clean = check_upload(files, self._limits)
            except UsageError as exc:
                await self._refused(principal, "apply", "policy.apply", exc.message, (), dry_run=dry_run)
                raise
            report = await self._check_files(clean, "uploaded config set")
            return await self._activate(
                clean, report, principal=principal, source="apply", action="policy.apply",
                description=description, dry_run=dry_run, expected_tag=expected_tag, started=started,
            )  # fmt: skip

    async def rollback(self, target: Target, *, principal: str) -> tuple[StoredVersion, StoredVersion]:
        """Activate an earlier version again, as a new version. Returns (new version, previous)."""
        return await self._detached(self._rollback(target, principal))

    async def _rollback(self, target: Target, principal: str) -> tuple[StoredVersion, StoredVersion]:
        async with self._lock:
            started = time.perf_counter()
            current = self._active
            try:
                if current is None:
                    raise NothingToRollBack("nothing to roll back: no policy version is active")
                chosen = await asyncio.to_thread(self._rollback_target, target, current.version)
            except Error as exc:
                await self._audit(principal, "policy.rollback", "refused", reason=exc.message,
                                  before=current.version if current else None, after=None)  # fmt: skip
                raise
            files = await asyncio.to_thread(self._backend.files, chosen.number)
            report = await self._check_files(files, f"policy version {chosen.number}")
            if report.snapshot is None:
                message = (
                    f"policy version {chosen.number} no longer validates "
                    f"({_error_count(report)} errors); version {current.version.number} stays active"
                )
                await self._refused(principal, "rollback", "policy.rollback", message, report.findings)
                first = next((f for f in report.findings if f.severity is Severity.ERROR), None)
                if first is not None:
                    message += (
                        f"; first: {first.file}:{first.line}:{first.column} {first.rule} {first.message}"
                    )
                raise RollbackRefused(
                    message, report.findings, hint="fix what it breaks and apply it instead"
                )
            table = await asyncio.to_thread(compile_table, report.snapshot)

            def recorded(stored: StoredVersion) -> dict[str, Any]:
                return self._audit_event(
                    principal, "policy.rollback", "success", before=current.version, after=stored,
                    reason=f"rolled back to version {chosen.number}", details={"rolledBackTo": chosen.number},
                )  # fmt: skip

            stored = await self._add_version(
                files, recorded,
                tag=report.snapshot.tag,
                author=principal,
                source="rollback",
                description=f"rollback to version {chosen.number}",
            )  # fmt: skip
            self._set_active(
                ActiveConfig(stored, report.snapshot, stored.created_at, table),
                "rollback",
                "success",
                time.perf_counter() - started,
            )
            log.info(
                "policy version %d active (rollback to %d, by %s)", stored.number, chosen.number, principal
            )
            return stored, current.version

    # -- reading -------------------------------------------------------------------------------------

    def history(self, *, limit: int, before: int | None = None) -> list[StoredVersion]:
        return self._backend.versions(
            limit=max(1, min(limit or HISTORY_PAGE, HISTORY_PAGE_MAX)), before=before
        )

    def find(self, target: Target) -> StoredVersion:
        """The version a selector names. Raises InputError when there is none (or the prefix is ambiguous)."""
        if target.number is not None:
            found = self._backend.version(target.number)
            if found is None:
                raise VersionNotFound(
                    f"there is no policy version {target.number}",
                    hint="list them with: aionctl policy history",
                )
            return found
        if target.tag:
            return self._by_tag(target.tag)
        raise UsageError("name a version by number or by tag")

    def files(self, number: int) -> list[tuple[str, bytes]]:
        return self._backend.files(number)

    # -- internals -----------------------------------------------------------------------------------

    def _by_tag(self, tag: str) -> StoredVersion:
        prefix = tag if tag.startswith("sha256:") else "sha256:" + tag
        hexpart = prefix.removeprefix("sha256:")
        if len(hexpart) < 7 or any(c not in "0123456789abcdef" for c in hexpart):
            raise UsageError(
                f"{tag!r} is not a version tag", hint="use sha256:HEX, or at least 7 hex digits of one"
            )
        matches = self._backend.versions_with_tag_prefix(prefix)
        if not matches:
            raise VersionNotFound(
                f"no policy version has tag {tag}", hint="list them with: aionctl policy history"
            )
        if len({m.tag for m in matches}) > 1:
            raise UsageError(f"tag prefix {tag!r} is ambiguous", hint="give more hex digits")
        return matches[0]  # newest first: the latest version with that content

    def _rollback_target(self, target: Target, active: StoredVersion) -> StoredVersion:
        if target.number is None and not target.tag:
            chosen = self._previous(active)
            if chosen is None:
                raise NothingToRollBack(
                    f"nothing to roll back to: version {active.number} is the only one ever active",
                    hint="apply another version first; see `aionctl policy history`",
                )
        else:
            chosen = self.find(target)
        if chosen.tag == active.tag:
            raise NothingToRollBack(
                f"version {chosen.number} has the same content as the active version {active.number}",
                hint="nothing would change; pick another version from `aionctl policy history`",
            )
        return chosen

    def _previous(self, active: StoredVersion) -> StoredVersion | None:
        """The version active before the current content became active."""
        for activation in self._backend.activations(limit=HISTORY_PAGE_MAX):
            version = self._backend.version(activation.number)
            if version is not None and version.tag != active.tag:
                return version
        return None

    async def _activate(
        self,
        files: Sequence[tuple[str, bytes]],
        report: Report,
        *,
        principal: str,
        source: str,
        action: str,
        description: str,
        dry_run: bool,
        expected_tag: str | None,
        started: float,
    ) -> Outcome:
        current = self._active
        if report.snapshot is None:
            errors = _error_count(report)
            message = (
                f"the config set has {errors} error{'s' if errors != 1 else ''}"
                if errors
                else "the config set is incomplete: it needs at least intents and models"
            )
            if report.omitted:
                message = f"the config set has at least {errors} errors, and {report.omitted} more findings"
            if current is not None:
                message += f"; version {current.version.number} stays active"
            await self._refused(principal, source, action, message, report.findings, dry_run=dry_run)
            raise ActivationRefused(
                message, report.findings, hint="fix the findings, then try again", omitted=report.omitted
            )
        snapshot = report.snapshot
        if expected_tag is not None and (current is None or current.version.tag != expected_tag):
            found = current.version.tag if current else "no active version"
            exc = StaleActiveVersion(
                f"the active version is not the expected one: expected {expected_tag}, found {found}",
                hint="look at `aionctl policy status`, then apply again",
            )
            await self._refused(principal, source, action, exc.message, (), dry_run=dry_run)
            raise exc
        if current is not None and current.version.tag == snapshot.tag:
            if not dry_run:
                await self._audit(principal, action, "success", before=current.version, after=current.version,
                                  reason="unchanged: the content equals the active version",
                                  details={"source": source, "unchanged": True})  # fmt: skip
            return Outcome(False, current.version, current.version, True, report.findings, snapshot.tag)
        if dry_run:
            previous = current.version if current else None
            return Outcome(False, None, previous, False, report.findings, snapshot.tag)
        table = await asyncio.to_thread(compile_table, snapshot)  # before the commit: the swap is instant

        def recorded(stored: StoredVersion) -> dict[str, Any]:
            return self._audit_event(
                principal, action, "success",
                before=current.version if current else None, after=stored,
                reason=f"activated version {stored.number}",
                details={"source": source, "description": description, "files": len(files),
                         "warnings": sum(1 for f in report.findings if f.severity is Severity.WARNING)},
            )  # fmt: skip

        stored = await self._add_version(
            files, recorded,
            tag=snapshot.tag,
            author=principal,
            source=source,
            description=description,
            expected_active_tag=expected_tag,
        )  # fmt: skip
        self._set_active(
            ActiveConfig(stored, snapshot, stored.created_at, table),
            source,
            "success",
            time.perf_counter() - started,
        )
        log.info("policy version %d active (%s, by %s, %s)", stored.number, source, principal, stored.tag)
        return Outcome(
            True, stored, current.version if current else None, False, report.findings, snapshot.tag
        )

    def _set_active(self, active: ActiveConfig, source: str, outcome: str, seconds: float) -> None:
        self._active = active
        if self._on_change is not None:
            self._on_change(active, source, outcome, seconds)

    async def _refused(
        self,
        principal: str,
        source: str,
        action: str,
        message: str,
        findings: Sequence[Finding],
        *,
        dry_run: bool = False,
    ) -> None:
        if dry_run:
            return
        now = dt.datetime.now(dt.UTC)
        error = {
            "at": now.isoformat(),
            "source": source,
            "message": message,
            "findings": [finding_dict(f) for f in findings if f.severity is Severity.ERROR][:100],
        }
        self._last_error = error
        await asyncio.to_thread(self._backend.record_error, error)
        current = self._active
        await self._audit(principal, action, "refused", before=current.version if current else None,
                          after=None, reason=message,
                          details={"source": source, "errors": len(error["findings"])})  # fmt: skip
        log.warning("%s refused (%s, by %s): %s", action, source, principal, message)

    async def _add_version(
        self,
        files: Sequence[tuple[str, bytes]],
        recorded: Callable[[StoredVersion], dict[str, Any]],
        **fields: Any,
    ) -> StoredVersion:
        """Store a version; its audit event goes in the same transaction (see ``committed``)."""
        together = self._committed is not None
        stored = await asyncio.to_thread(
            lambda: self._backend.add_version(files, audit=recorded if together else None, **fields)
        )
        if _crash_after_commit():
            os.kill(os.getpid(), signal.SIGKILL)
        if self._committed is None:
            await self._record(recorded(stored), str(fields.get("source")))
            return stored
        try:
            await self._committed()
        except Error as exc:
            # The version and its audit event are committed together; the event is only late for the
            # local log, which the next start (or change) catches up on.
            log.error(
                "the audit event of policy version %d waits in the outbox: %s", stored.number, exc.message
            )
        return stored

    async def _audit(
        self,
        principal: str,
        action: str,
        outcome: str,
        *,
        before: StoredVersion | None,
        after: StoredVersion | None,
        reason: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        event = self._audit_event(
            principal, action, outcome, before=before, after=after, reason=reason, details=details
        )
        await self._record(event, action)

    async def _record(self, event: dict[str, Any], action: str) -> None:
        try:
            await self._emit(event)
        except Error as exc:
            # The change itself is committed (or refused) either way; losing its audit record must not
            # turn a done change into a reported failure. Say so loudly instead.
            self.audit_failures += 1
            log.error(
                "could not record the audit event for %s (%s): %s", action, event["outcome"], exc.message
            )

    def _audit_event(
        self,
        principal: str,
        action: str,
        outcome: str,
        *,
        before: StoredVersion | None,
        after: StoredVersion | None,
        reason: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        extra = dict(details or {})
        if before is not None:
            extra["beforeTag"] = before.tag
        if after is not None:
            extra["afterTag"] = after.tag
        return audit(
            principal=principal,
            action=action,
            target="policy",
            outcome=outcome,
            before=str(before.number) if before else None,
            after=str(after.number) if after else None,
            reason=reason,
            details=extra,
        )

    def _read_directory(self) -> list[Source]:
        if not self.config_dir.is_dir():
            raise InputError(
                f"config directory {self.config_dir} is not a directory",
                hint="check aiond's --config",
            )
        # Links that lead out of the directory are refused, and files of no kind aion knows are left
        # out: whatever is read here is stored for good and any viewer can read it back.
        found = collect([str(self.config_dir)], limits=self._limits, confined=True)
        sources = [source for source in found if not ignored(source)]
        # Files read on their own (kafka.yml: aiond reads it through --kafka-config) are left out
        # without a word; only files of no known kind are named.
        unknown = sorted(
            _relative(s.name, self.config_dir) for s in found if ignored(s) and not read_alone(s)
        )
        if unknown:
            log.info(
                "config directory %s: not config files, left out: %s", self.config_dir, ", ".join(unknown)
            )
        if len(sources) > MAX_FILES:
            raise InputError(
                f"config directory {self.config_dir} has {len(sources)} files; the limit is {MAX_FILES}"
            )
        return sources

    async def _check_directory(self) -> Report:
        sources = await asyncio.to_thread(self._read_directory)
        return await self._validate(sources, str(self.config_dir))

    async def _check_files(self, files: Sequence[tuple[str, bytes]], set_name: str) -> Report:
        sources = [Source(path, data, explicit=False) for path, data in files]
        return await self._validate(sources, set_name)

    async def _validate(self, sources: Sequence[Source], set_name: str) -> Report:
        report = await self._validator.validate(
            sources, set_name=set_name, base_dir=self.config_dir, limits=self._limits
        )
        # The set cannot choose where the daemon reads keys: what its trust rules and models.yml name
        # is judged against the daemon's own directories (this follows links, so not on the loop).
        return await asyncio.to_thread(self._judged, sources, report)

    def _judged(self, sources: Sequence[Source], report: Report) -> Report:
        def models() -> Document | None:
            source = next((s for s in sources if report.files.get(s.name) is Kind.MODELS), None)
            return None if source is None else load(source.data, source.name, self._limits)[0]

        findings, snapshot = judge_for_daemon(report.findings, report.snapshot, self._paths, models=models)
        return dataclasses.replace(report, findings=tuple(findings), snapshot=snapshot)


def check_upload(files: Sequence[tuple[str, bytes]], limits: Limits) -> list[tuple[str, bytes]]:
    """Uploaded files, checked: relative forward-slash paths inside the set, YAML names, no
    duplicates, within the count and size limits. Raises UsageError naming the first bad file."""
    if not files:
        raise UsageError("the config set has no files", hint="upload at least intents.yml and models.yml")
    if len(files) > MAX_FILES:
        raise UsageError(f"the config set has {len(files)} files; the limit is {MAX_FILES}")
    seen: set[str] = set()
    clean: list[tuple[str, bytes]] = []
    for path, data in files:
        problem = _path_problem(path)
        if problem:
            raise UsageError(f"config file {path!r}: {problem}")
        if path in seen:
            raise UsageError(f"config file {path!r} appears twice")
        if len(data) > limits.max_bytes:
            raise UsageError(f"config file {path!r} is {len(data)} bytes; the limit is {limits.max_bytes}")
        seen.add(path)
        clean.append((path, data))
    return sorted(clean)


def _path_problem(path: str) -> str | None:
    if not path or len(path) > 1024:
        return "a path of 1 to 1024 characters is required"
    if "\\" in path or "\0" in path or any(ord(c) < 32 for c in path):
        return "use forward slashes and printable characters only"
    pure = PurePosixPath(path)
    if pure.is_absolute() or any(part in ("", ".", "..") for part in path.split("/")):
        return "the path must be relative to the config set root, without '.' or '..'"
    if pure.suffix not in (".yml", ".yaml"):
        return "only *.yml and *.yaml files belong in a config set"
    return None


def _relative(name: str, root: Path) -> str:
    rel = os.path.relpath(name, root)
    return rel.replace(os.sep, "/")


def _error_count(report: Report) -> int:
    return report.count(Severity.ERROR)


def finding_dict(finding: Finding) -> dict[str, Any]:
    """A finding in the shape aionctl prints and the last-error record keeps."""
    return {
        "file": finding.file,
        "line": finding.line,
        "column": finding.column,
        "pointer": finding.pointer,
        "rule": finding.rule,
        "severity": finding.severity.value,
        "message": finding.message,
        "hint": finding.hint,
    }


__all__ = [
    "ActivationRefused",
    "ActiveConfig",
    "NothingToRollBack",
    "Outcome",
    "PolicyStore",
    "RollbackRefused",
    "Target",
    "VersionNotFound",
    "check_upload",
    "finding_dict",
]
