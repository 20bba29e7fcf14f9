"""BackupService: a snapshot of the daemon's state streamed to the caller (``aionctl backup create``).

The stream is a header (name, size, SHA-256 of the whole archive), then the archive in chunks of at
most :data:`CHUNK_BYTES`, well under the message cap. The snapshot is read from disk a chunk at a
time in a worker thread, so neither the archive's size nor a slow reader costs memory or blocks the
event loop; at most :data:`MAX_STREAMS` streams are served at once (each holds a snapshot on disk).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc

from aion.api.v1 import backup_pb2, backup_pb2_grpc
from aion.errors import Saturated
from aiond.security.auth import current_principal
from aiond.serving.backups import Backups
from aiond.serving.services.policies import timestamp

SERVICE_NAME = backup_pb2.DESCRIPTOR.services_by_name["BackupService"].full_name
CHUNK_BYTES = 1 << 20
MAX_STREAMS = 4


class BackupServicer(backup_pb2_grpc.BackupServiceServicer):
    def __init__(self, backups: Backups) -> None:
        self._backups = backups
        self._open = 0

    async def CreateBackup(
        self, request: backup_pb2.CreateBackupRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[backup_pb2.CreateBackupResponse]:
        if self._open >= MAX_STREAMS:
            raise Saturated(f"{MAX_STREAMS} backups are being streamed", retry_after=5.0,
                            hint="try again when one of them has finished")  # fmt: skip
        self._open += 1
        try:
            async with self._backups.streamed(current_principal.get().name) as made:
                header = backup_pb2.BackupHeader(
                    name=made.path.name, size_bytes=made.size, sha256=made.sha256,
                    created_at=timestamp(made.created_at), schema_version=made.schema_version,
                )  # fmt: skip
                yield backup_pb2.CreateBackupResponse(header=header)
                with made.path.open("rb") as archive:
                    while chunk := await asyncio.to_thread(archive.read, CHUNK_BYTES):
                        yield backup_pb2.CreateBackupResponse(chunk=chunk)
        finally:
            self._open -= 1


def add_to_server(server: grpc.aio.Server, backups: Backups) -> str:
    backup_pb2_grpc.add_BackupServiceServicer_to_server(BackupServicer(backups), server)
    return SERVICE_NAME
