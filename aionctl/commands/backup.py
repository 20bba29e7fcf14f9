"""``aionctl backup create|list|verify|restore``: snapshots of aiond's state, for disaster recovery.

- ``create`` asks the running aiond for a snapshot (BackupService.CreateBackup, role admin) and
  writes it into ``--out`` (default: the current directory) as ``aion-backup-<UTC time>.tar``. The
  stream is bounded by the size its header announces (and ``--max-bytes``), and every byte is
  checked before the file is kept: the whole archive's SHA-256 against the header, then every member
  against the manifest (:func:`aion.backup.verify`); it is written under a temporary name and renamed
  only then. ``--offline STATE_DIR`` snapshots a stopped aiond's state directory instead (refused,
  exit 6, while a running aiond holds it). Document ``output/backup``.
- ``list DIR``: the snapshots in DIR, newest first, with their age (``output/backup-list``).
- ``verify FILE``: every digest, SQLite's integrity check, a known schema version, the manifest's
  schema; exit 1 naming what is wrong (``output/backup-verification``).
- ``restore FILE --state-dir DIR``: verify, then restore into a temporary directory next to DIR and
  rename it onto DIR; refused (exit 6) while a running aiond holds DIR, or when DIR holds anything
  and ``--force`` is not given (with ``--force`` the old directory is kept, renamed). The document
  (``output/backup-restore``) carries the summary, to compare with the restored daemon's next
  snapshot, and the modules to reinstall by digest.

The format and every check are :mod:`aion.backup`'s.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from aion.errors import InputError, ServiceError, VerificationError, storage_error
from aionctl.client import Endpoint, channel, translate_rpc_error
from aionctl.connect import daemon_command
from aionctl.options import Output, command_app, global_options
from aionctl.output import OutputFormat, document, emit

if TYPE_CHECKING:
    from aion.backup import Verification

app = command_app()
app.info.help = "Snapshot aiond's state; list, verify and restore snapshots."
app.info.no_args_is_help = True

DEFAULT_MAX_BYTES = 64 << 30
"""The largest snapshot ``create`` accepts from the daemon unless told otherwise (64 GiB)."""


@app.callback()
def group() -> None:
    """Snapshot aiond's state; list, verify and restore snapshots."""


def _quiet(ctx: typer.Context, output: OutputFormat) -> bool:
    return global_options(ctx).quiet and output is OutputFormat.TEXT


@daemon_command(app, "create", timeout=600.0)
def create(
    ctx: typer.Context,
    target: Endpoint,
    out: Annotated[
        Path, typer.Option("--out", metavar="DIR", help="Directory the snapshot is written into.")
    ] = Path(),
    offline: Annotated[
        Path | None,
        typer.Option("--offline", metavar="STATE_DIR",
                     help="Snapshot a stopped aiond's state directory, without a daemon."),
    ] = None,
    module_store: Annotated[
        Path | None,
        typer.Option("--module-store", metavar="DIR",
                     help="With --offline: the module store [default: STATE_DIR/modules]."),
    ] = None,
    max_bytes: Annotated[
        int, typer.Option("--max-bytes", min=1 << 20, max=1 << 50, metavar="BYTES",
                          help="Refuse a snapshot from the daemon larger than this.")
    ] = DEFAULT_MAX_BYTES,
    output: Output = OutputFormat.TEXT,
) -> None:  # fmt: skip
    """Take a snapshot of aiond's state (online, role admin; or --offline from a stopped daemon's
    state directory), checked in full before it is kept."""
    from aion import __version__, backup

    if offline is not None:
        made = backup.offline_create(offline, out, module_store=module_store, version=__version__)
        checked = backup.verify(made.path)
    else:
        if module_store is not None:
            raise InputError("--module-store goes with --offline", hint="the daemon knows its own store")
        checked = _download(target, out, max_bytes)
    backup.require_intact(checked)
    assert checked.manifest is not None
    assert checked.summary is not None
    body = {
        "path": str(checked.path),
        "createdAt": checked.manifest["createdAt"],
        "source": checked.manifest["source"],
        "daemonVersion": checked.manifest["daemonVersion"],
        "sizeBytes": checked.size,
        "sha256": checked.sha256,
        "schemaVersion": checked.schema_version,
        "summary": checked.summary,
    }
    if not _quiet(ctx, output):
        emit(document("Backup", body), output, text=lambda: _backup_text(body))


def _download(target: Endpoint, out: Path, max_bytes: int) -> Verification:
    """The daemon's snapshot, streamed into a temporary file in ``out``, checked, then renamed."""
    import grpc

    from aion import backup
    from aion.api.v1 import backup_pb2, backup_pb2_grpc

    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, temp_name = tempfile.mkstemp(dir=out, prefix=".aion-backup-", suffix=".download")
    except OSError as exc:
        raise storage_error(exc, f"a snapshot in {out}") from exc
    temp = Path(temp_name)
    try:
        with channel(target) as ch, os.fdopen(fd, "wb") as handle:
            stream = backup_pb2_grpc.BackupServiceStub(ch).CreateBackup(
                backup_pb2.CreateBackupRequest(), timeout=target.timeout, metadata=target.metadata()
            )
            try:
                header = _receive(stream, handle, max_bytes, target)
            except grpc.RpcError as exc:
                raise translate_rpc_error(exc, target, "backup create") from exc
            handle.flush()
            os.fsync(handle.fileno())
        checked = backup.verify(temp)
        backup.require_intact(checked)
        final = out / header.name
        try:
            os.link(temp, final)  # never replaces a snapshot of the same name
        except FileExistsError:
            raise InputError(f"{final} exists already", hint="choose another --out directory") from None
        return backup.Verification(
            final, checked.size, checked.sha256, checked.problems, checked.manifest, checked.summary
        )
    except OSError as exc:
        raise storage_error(exc, f"the snapshot in {out}") from exc
    finally:
        temp.unlink(missing_ok=True)


def _receive(stream: Any, handle: Any, max_bytes: int, target: Endpoint) -> Any:
    """Write the stream's chunks to ``handle``: at most the size the header announced (within
    ``max_bytes``), and exactly the bytes its SHA-256 names."""
    import re

    where = f"aiond at {target.grpc}"
    replies = iter(stream)
    first = next(replies, None)
    if first is None or first.WhichOneof("part") != "header":
        raise ServiceError(f"backup create: {where} sent no snapshot header")
    header = first.header
    if not re.fullmatch(r"aion-backup-\d{8}T\d{6}\.\d{3}Z\.tar", header.name):
        raise ServiceError(
            f"backup create: {where} named the snapshot {header.name[:100]!r}, not aion-backup-*.tar"
        )
    if header.size_bytes > max_bytes:
        stream.cancel()
        raise InputError(
            f"backup create: the snapshot has {header.size_bytes:,} bytes, "
            f"more than --max-bytes {max_bytes:,}",
            hint="raise --max-bytes, or make room",
        )
    digest = hashlib.sha256()
    received = 0
    for reply in replies:
        chunk = reply.chunk
        if reply.WhichOneof("part") != "chunk" or received + len(chunk) > header.size_bytes:
            stream.cancel()
            raise VerificationError(
                f"backup create: {where} sent more than the {header.size_bytes:,} bytes it announced"
            )
        digest.update(chunk)
        handle.write(chunk)
        received += len(chunk)
    if received != header.size_bytes or digest.hexdigest() != header.sha256:
        raise VerificationError(
            f"backup create: the snapshot received ({received:,} bytes) is not the one {where} announced "
            f"({header.size_bytes:,} bytes, sha256 {header.sha256[:16]}...)",
            hint="try again; nothing was kept",
        )
    return header


def _backup_text(body: dict[str, Any]) -> str:
    return (
        f"{body['path']}\n"
        f"  created {body['createdAt']} ({body['source']}, aion {body['daemonVersion']}), "
        f"{body['sizeBytes']:,} bytes, schema {body['schemaVersion']}\n"
        f"  sha256 {body['sha256']}\n" + _summary_text(body["summary"])
    )


def _summary_text(summary: dict[str, Any]) -> str:
    active = summary["active"]
    spend = sum(summary["spendNanoUsd"].values()) / 1e9
    lines = [
        f"  policy versions {summary['policyVersions']}, active "
        + (f"v{active['number']} {active['tag']}" if active else "none"),
        f"  tokens {summary['tokens']['count']}, intent modes {len(summary['intentModes'])}, "
        f"module parallelism {len(summary['moduleParallelism'])}, "
        f"spend ${spend:.4f} over {len(summary['spendNanoUsd'])} days",
    ]
    return "\n".join(lines) + "\n"


@app.command("list")
def list_(
    ctx: typer.Context,
    directory: Annotated[Path, typer.Argument(metavar="DIR", help="A directory of snapshots.")],
    output: Output = OutputFormat.TEXT,
) -> None:
    """List the snapshots in DIR, newest first, with their age."""
    from aion import backup

    now = dt.datetime.now(dt.UTC)
    found = backup.snapshots(directory)
    body: dict[str, Any] = {
        "directory": str(directory),
        "backups": [
            {
                "path": str(s.path),
                "name": s.path.name,
                "createdAt": s.created_at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                "ageSeconds": round(max(0.0, (now - s.created_at).total_seconds()), 3),
                "sizeBytes": s.size,
            }
            for s in found
        ],
    }

    def text() -> str:
        if not found:
            return f"no snapshots in {directory}\n"
        rows = [f"{'AGE':>10}  {'SIZE':>12}  NAME"]
        rows += [f"{_age(b['ageSeconds']):>10}  {b['sizeBytes']:>12,}  {b['name']}" for b in body["backups"]]
        return "\n".join(rows) + "\n"

    if not _quiet(ctx, output):
        emit(document("BackupList", body), output, text=text)


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


@app.command()
def verify(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(metavar="FILE", help="A snapshot (aion-backup-*.tar).")],
    output: Output = OutputFormat.TEXT,
) -> None:
    """Check a snapshot: every digest, SQLite's integrity check, a known schema version, the
    manifest's schema (exit 1 naming what is wrong)."""
    from aion import backup

    checked = backup.verify(file)
    body: dict[str, Any] = {
        "path": str(file),
        "verified": checked.ok,
        "sizeBytes": checked.size,
        "sha256": checked.sha256,
        "problems": list(checked.problems),
    }
    if checked.manifest is not None:
        body["createdAt"] = checked.manifest["createdAt"]
        body["schemaVersion"] = checked.manifest["schemaVersion"]
    if checked.summary is not None:
        body["summary"] = checked.summary

    def text() -> str:
        if not checked.ok:
            return f"damaged: {file}\n" + "".join(f"  {p}\n" for p in checked.problems)
        return (
            f"verified: {file} (schema {body['schemaVersion']}, created {body['createdAt']})\n"
            + _summary_text(body["summary"])
        )

    if not _quiet(ctx, output):
        emit(document("BackupVerification", body), output, text=text)
    backup.require_intact(checked)


@app.command()
def restore(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(metavar="FILE", help="A snapshot (aion-backup-*.tar).")],
    state_dir: Annotated[
        Path, typer.Option("--state-dir", metavar="DIR", help="The state directory to restore into.")
    ],
    force: Annotated[
        bool,
        typer.Option("--force", help="Replace a state directory that is not in use (it is kept, renamed)."),
    ] = False,
    output: Output = OutputFormat.TEXT,
) -> None:
    """Verify a snapshot, then restore it as the state directory DIR: whole or not at all; refused
    (exit 6) while an aiond runs on DIR, or when DIR is not empty without --force."""
    from aion import backup

    restored = backup.restore(file, state_dir, force=force)
    body = {
        "path": str(file),
        "stateDir": str(restored.state_dir),
        "replaced": str(restored.replaced) if restored.replaced else None,
        "schemaVersion": restored.schema_version,
        "summary": restored.summary,
        "modules": restored.modules,
    }

    def text() -> str:
        lines = [f"restored {file}\n  into {restored.state_dir} (schema {restored.schema_version})\n"]
        if restored.replaced:
            lines.append(f"  the directory that was there is now {restored.replaced}\n")
        lines.append(_summary_text(restored.summary))
        if restored.modules:
            lines.append("  modules to reinstall (their lock file is restored):\n")
            lines += [f"    {m['name']}  {m['ref']}@{m['digest']}\n" for m in restored.modules]
        return "".join(lines)

    if not _quiet(ctx, output):
        emit(document("BackupRestore", body), output, text=text)
