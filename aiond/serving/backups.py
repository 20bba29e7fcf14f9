"""aiond's snapshots of its own state: made on request (BackupService.CreateBackup, streamed to the
caller) and on a schedule (``--backup-dir``, every ``--backup-interval``, the newest
``--backup-keep`` kept).

The snapshot itself is :func:`aion.backup.create` (the format, the online backup API, the summary),
run in a worker thread: it reads the whole database, and the event loop keeps serving meanwhile.
One snapshot is made at a time. Each one is audited (``backup.create``, through the journal: an
admin action with no stored state), and counted: ``aion_backup_last_success_timestamp_seconds`` and
``aion_backup_failures_total``, by source. Older scheduled snapshots are deleted only after a new one
is complete, so a failing schedule never leaves fewer snapshots than it found.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

from aion import __version__
from aion.envelopes import audit
from aion.errors import Error
from aiond.events.journal import Journal
from aiond.serving.telemetry import Metrics
from aiond.settings import Settings

if TYPE_CHECKING:
    from aion import backup  # loaded by the first snapshot: tarfile and the format stay out of start-up

log = logging.getLogger("aiond")

_STREAMING = ".backup-stream-"
"""Prefix of the private directories in STATE_DIR where snapshots wait while they are streamed."""


class Backups:
    """Makes snapshots of the running daemon's state; :meth:`run` is the schedule."""

    def __init__(self, settings: Settings, db_path: Path, journal: Journal, metrics: Metrics) -> None:
        self._settings = settings
        self._db_path = db_path
        self._journal = journal
        self._metrics = metrics
        self._one_at_a_time = asyncio.Lock()
        self._schedule: asyncio.Task[None] | None = None
        for leftover in settings.state_dir.glob(_STREAMING + "*"):  # a stream a crash cut short
            shutil.rmtree(leftover, ignore_errors=True)

    async def make(self, out_dir: Path, *, principal: str, source: str) -> backup.Snapshot:
        """One snapshot into ``out_dir``, audited and counted; an aion error when it fails."""
        from aion import backup

        async with self._one_at_a_time:
            try:
                made = await asyncio.to_thread(
                    backup.create, self._db_path, out_dir, module_store=self._settings.modules_dir,
                    daemon_version=__version__, source=source,
                )  # fmt: skip
            except Error as exc:
                self._metrics.backup_failures.labels(source=source).inc()
                await self._audit(principal, source, "error", str(out_dir), reason=exc.message)
                raise
            self._metrics.backup_last_success.labels(source=source).set(time.time())
            await self._audit(
                principal, source, "success", made.path.name,
                details={"sizeBytes": made.size, "sha256": made.sha256, "schemaVersion": made.schema_version,
                         "summary": made.summary},
            )  # fmt: skip
            return made

    @contextlib.asynccontextmanager
    async def streamed(self, principal: str) -> AsyncIterator[backup.Snapshot]:
        """A snapshot for a caller, in a private directory of the state directory, deleted once the
        block (the stream) ends."""
        scratch = Path(tempfile.mkdtemp(dir=self._settings.state_dir, prefix=_STREAMING))
        try:
            yield await self.make(scratch, principal=principal, source="online")
        finally:
            await asyncio.to_thread(shutil.rmtree, scratch, True)

    def start(self) -> None:
        """Start the schedule (with ``--backup-dir``)."""
        if self._settings.backup_dir is not None and self._schedule is None:
            self._schedule = asyncio.get_running_loop().create_task(self.run())

    async def close(self) -> None:
        """Stop the schedule; a snapshot being made is finished first, so none is left unaudited."""
        if self._schedule is None:
            return
        async with self._one_at_a_time:
            self._schedule.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._schedule

    async def run(self) -> None:
        """The schedule: a snapshot at once, then one every interval; each failure is logged and
        counted, and the next one is tried an interval later."""
        directory = self._settings.backup_dir
        if directory is None:
            return
        interval, keep = self._settings.backup_interval, self._settings.backup_keep
        log.info("scheduled backups: every %gs into %s, the newest %d kept", interval, directory, keep)
        while True:
            started = time.monotonic()
            await self.scheduled(directory, keep)
            await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))

    async def scheduled(self, directory: Path, keep: int) -> bool:
        """One scheduled snapshot, then the older ones pruned; whether it was made."""
        try:
            made = await self.make(directory, principal="aiond", source="scheduled")
        except Error as exc:
            log.error("scheduled backup failed: %s", exc.message)
            return False
        except Exception:  # the schedule outlives a bug in one snapshot, which is logged and counted
            self._metrics.backup_failures.labels(source="scheduled").inc()
            log.exception("scheduled backup failed")
            return False
        from aion import backup

        try:
            deleted = await asyncio.to_thread(backup.prune, directory, keep)
        except (Error, OSError) as exc:
            log.warning("old backups in %s were not pruned: %s", directory, getattr(exc, "message", exc))
            deleted = []
        log.info("backup %s made (%d bytes)%s", made.path.name, made.size,
                 f"; {len(deleted)} older deleted" if deleted else "")  # fmt: skip
        return True

    async def _audit(
        self,
        principal: str,
        source: str,
        outcome: str,
        target: str,
        *,
        reason: str | None = None,
        details: dict[str, object] | None = None,
    ) -> None:
        event = audit(
            principal=principal, action="backup.create", target=target, outcome=outcome, reason=reason,
            details={"source": source, **(details or {})},
        )  # fmt: skip
        try:
            await self._journal.emit(event)
        except Error as exc:
            if source != "scheduled":
                raise  # a caller is handed no snapshot whose making is not on record
            log.warning("a scheduled backup's audit event could not be recorded: %s", exc.message)


__all__ = ["Backups"]
