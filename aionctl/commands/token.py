"""``aionctl token list|rotate``: aiond's API tokens by age and last use, and their rotation, over the
API (AdminService.ListTokens and RotateToken, role admin; a lower role exits 4), so that runbooks can
find tokens past a maximum age or unused for long, and replace them.

``list`` reads every page of the daemon's answer; ``--older-than`` keeps the credentials created more
than that long ago, ``--unused-for`` those no call used for that long (a credential never used counts
from its creation). Last use is written by aiond at most once a minute, so it is that coarse.

``rotate NAME|ID`` issues a new secret with the same name and role; the old one keeps working for
``--overlap`` (default 1h; 0 stops it at once), then aiond refuses it. The new token is printed once on
stdout, as ``aiond token create`` does, or written to ``--secret-file`` (mode 0600, replacing the file
by one rename, so a client reading that file moves to the new token whole). ``rotate --older-than 90d
--secret-dir DIR`` rotates every live token older than that, each new token into ``DIR/NAME.token``
(0600); its secrets never go to stdout. Identity grants (no secret), expired tokens and tokens already
replaced are left out. Both forms print a ``TokenRotation`` document with ``-o json|yaml`` (schema
``output/token``); only the single form without a file puts the secret in it.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from aion.errors import InputError, UsageError
from aionctl.client import Endpoint, call, channel, every_page
from aionctl.connect import daemon_command
from aionctl.options import Output, command_app, global_options
from aionctl.output import OutputFormat, document, emit

if TYPE_CHECKING:
    from aion.api.v1 import admin_pb2

app = command_app()
app.info.help = "List aiond's API tokens by age and last use, and rotate them (role admin)."
app.info.no_args_is_help = True

_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@:-]{0,63}")
"""The names aiond gives credentials (aiond.security.auth.mint): each one a safe file name."""
MAX_AGE = dt.timedelta(days=3650)
MAX_OVERLAP = dt.timedelta(days=30)
"""aiond's limit (aiond.security.auth.MAX_OVERLAP): checked here too, before anything changes."""


def _age(text: str | None) -> str | None:
    if text is not None:
        from aionctl.commands.audit import duration

        duration(text, low=dt.timedelta(0), high=MAX_AGE)
    return text


def _overlap(text: str) -> str:
    from aionctl.commands.audit import duration

    duration(text, low=dt.timedelta(0), high=MAX_OVERLAP)
    return text


def _span(text: str, high: dt.timedelta) -> dt.timedelta:
    from aionctl.commands.audit import duration

    return duration(text, low=dt.timedelta(0), high=high)


OlderThan = Annotated[
    str | None,
    typer.Option("--older-than", metavar="DURATION", callback=_age, show_default=False,
                 help="Only tokens created more than DURATION ago (90d, 12w, 24h)."),
]  # fmt: skip
UnusedFor = Annotated[
    str | None,
    typer.Option("--unused-for", metavar="DURATION", callback=_age, show_default=False,
                 help="Only tokens no call used for DURATION (never used: counted from creation)."),
]  # fmt: skip
Overlap = Annotated[
    str,
    typer.Option("--overlap", metavar="DURATION", callback=_overlap,
                 help="How long the old secret keeps working: 0 (it stops at once) to 30d."),
]  # fmt: skip


def _iso(stamp: Any, present: bool) -> str | None:
    return str(stamp.ToJsonString()) if present else None


def entry(c: admin_pb2.Credential, now: dt.datetime) -> dict[str, Any]:
    """One credential of the ``TokenList`` document."""
    from aion.api.v1 import admin_pb2
    from aion.documents import enum_word

    created = c.created_at.ToDatetime(tzinfo=dt.UTC)
    return {
        "id": c.id,
        "name": c.name,
        "role": enum_word(admin_pb2.Role.DESCRIPTOR, c.role),
        "type": "identity" if c.identity else "token",
        "createdAt": _iso(c.created_at, True),
        "lastUsedAt": _iso(c.last_used_at, c.HasField("last_used_at")),
        "ageDays": max((now - created).days, 0),
        "expiresAt": _iso(c.expires_at, c.HasField("expires_at")),
        "revoked": c.HasField("revoked_at"),
        "replacedBy": c.replaced_by or None,
    }


def _older(c: admin_pb2.Credential, now: dt.datetime, age: dt.timedelta) -> bool:
    return now - c.created_at.ToDatetime(tzinfo=dt.UTC) > age


def _unused(c: admin_pb2.Credential, now: dt.datetime, idle: dt.timedelta) -> bool:
    last = c.last_used_at if c.HasField("last_used_at") else c.created_at
    return now - last.ToDatetime(tzinfo=dt.UTC) > idle


def _rotatable(c: admin_pb2.Credential, now: dt.datetime) -> bool:
    """A live token nothing replaced: what ``rotate --older-than`` may pick."""
    expired = c.HasField("expires_at") and c.expires_at.ToDatetime(tzinfo=dt.UTC) <= now
    return not (c.identity or c.replaced_by or c.HasField("revoked_at") or expired)


def every_token(target: Endpoint, *, include_revoked: bool = False) -> list[admin_pb2.Credential]:
    """Every credential, page after page: the daemon answers at most one page per call."""
    from aion.api.v1 import admin_pb2, admin_pb2_grpc

    with channel(target) as ch:
        return every_page(
            target, admin_pb2_grpc.AdminServiceStub(ch).ListTokens,
            lambda token: admin_pb2.ListTokensRequest(page_token=token, include_revoked=include_revoked),
            lambda reply: reply.tokens, "token list",
        )  # fmt: skip


@daemon_command(app, "list", timeout=10.0)
def list_(
    ctx: typer.Context,
    target: Endpoint,
    older_than: OlderThan = None,
    unused_for: UnusedFor = None,
    include_revoked: Annotated[bool, typer.Option("--all", help="Include revoked tokens.")] = False,
    output: Output = OutputFormat.TEXT,
) -> None:
    """List API tokens with their age and last use, never their secrets (role admin)."""
    now = dt.datetime.now(dt.UTC)
    found = every_token(target, include_revoked=include_revoked)
    if older_than is not None:
        found = [c for c in found if _older(c, now, _span(older_than, MAX_AGE))]
    if unused_for is not None:
        found = [c for c in found if _unused(c, now, _span(unused_for, MAX_AGE))]
    rows = [entry(c, now) for c in found]
    if not (global_options(ctx).quiet and output is OutputFormat.TEXT):
        emit(document("TokenList", {"tokens": rows}), output, text=lambda: render_list(rows))


def render_list(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no tokens\n"

    def day(text: str | None, empty: str) -> str:
        return text[:19] + "Z" if text else empty

    def status(row: dict[str, Any]) -> str:
        if row["revoked"]:
            return "revoked"
        if row["replacedBy"]:
            return f"rotated to {row['replacedBy']}"
        return "live"

    header = f"{'NAME':<24} {'ID':<12} {'ROLE':<9} {'AGE':>5} {'LAST USED':<20} {'EXPIRES':<20} STATUS\n"
    return header + "".join(
        f"{r['name']:<24} {r['id']:<12} {r['role'] or '-':<9} {str(r['ageDays']) + 'd':>5} "
        f"{day(r['lastUsedAt'], 'never'):<20} {day(r['expiresAt'], 'never'):<20} {status(r)}\n"
        for r in rows
    )


Token = Annotated[
    str | None,
    typer.Argument(metavar="[NAME|ID]", show_default=False,
                   help="The token to rotate: its name, or a live token's id."),
]  # fmt: skip
RotateOlderThan = Annotated[
    str | None,
    typer.Option("--older-than", metavar="DURATION", callback=_age, show_default=False,
                 help="Instead of NAME: every live token created more than DURATION ago."),
]  # fmt: skip
SecretFile = Annotated[
    Path | None,
    typer.Option("--secret-file", metavar="FILE", show_default=False,
                 help="Write the new token to FILE (mode 0600) instead of stdout."),
]  # fmt: skip
SecretDir = Annotated[
    Path | None,
    typer.Option("--secret-dir", metavar="DIR", show_default=False,
                 help="With --older-than: write each new token to DIR/NAME.token (mode 0600)."),
]  # fmt: skip


@daemon_command(app, "rotate", timeout=10.0)
def rotate(
    ctx: typer.Context,
    target: Endpoint,
    name: Token = None,
    overlap: Overlap = "1h",
    older_than: RotateOlderThan = None,
    secret_file: SecretFile = None,
    secret_dir: SecretDir = None,
    output: Output = OutputFormat.TEXT,
) -> None:
    """Issue a new secret for a token with the same name and role; the old one works on for the
    overlap (role admin)."""
    _check_forms(name, older_than, secret_file, secret_dir)
    span = _span(overlap, MAX_OVERLAP)
    if name is not None:
        if secret_file is not None:
            if secret_file.is_dir():
                raise InputError(f"--secret-file {secret_file} is a directory", hint="name a file in it")
            _check_writable(secret_file.parent, f"--secret-file {secret_file}")
        done = [_rotate_one(target, name, span, secret_file)]
    else:
        assert older_than is not None
        assert secret_dir is not None
        done = _rotate_old(target, _span(older_than, MAX_AGE), span, secret_dir)
    rotated = [info for info, _ in done]
    if output is OutputFormat.TEXT and name is not None and secret_file is None:
        print(done[0][1])  # the secret alone on stdout, for a script to capture, as aiond token create does
        sys.stdout.flush()
    elif not (global_options(ctx).quiet and output is OutputFormat.TEXT):
        if output is not OutputFormat.TEXT and name is not None and secret_file is None:
            rotated = [{**rotated[0], "token": done[0][1]}]  # no file holds it: this is its one showing
        emit(document("TokenRotation", {"rotated": rotated}), output, text=lambda: render_rotated(rotated))
    if global_options(ctx).quiet:
        return
    for info in rotated:
        print(
            f"token {info['name']!r} rotated: {info['newId']} replaces {info['id']}, which works until "
            f"{info['oldExpiresAt']}" + ("" if info["secretFile"] else "; the new token is shown only once"),
            file=sys.stderr,
        )
    if not rotated:
        print(f"no live token is older than {older_than}", file=sys.stderr)


def _check_forms(
    name: str | None, older_than: str | None, secret_file: Path | None, secret_dir: Path | None
) -> None:
    """The single form (NAME, maybe --secret-file) or the batch form (--older-than and --secret-dir)."""
    if (name is None) == (older_than is None):
        raise UsageError(
            "give a token's NAME or ID, or --older-than DURATION (one of them)",
            hint="see 'aionctl token rotate --help'",
        )
    if name is not None and secret_dir is not None:
        raise UsageError("--secret-dir goes with --older-than", hint="for one token, use --secret-file FILE")
    if older_than is not None and secret_file is not None:
        raise UsageError("--secret-file goes with NAME", hint="with --older-than, use --secret-dir DIR")
    if older_than is not None and secret_dir is None:
        raise UsageError(
            "--older-than needs --secret-dir DIR", hint="each new token is written to DIR/NAME.token"
        )


def render_rotated(rotated: list[dict[str, Any]]) -> str:
    if not rotated:
        return ""
    return "".join(
        f"{r['name']:<24} {r['id']} -> {r['newId']}  old works until {r['oldExpiresAt']}  {r['secretFile']}\n"
        for r in rotated
    )


def _call_rotate(target: Endpoint, token: str, overlap: dt.timedelta) -> admin_pb2.RotateTokenResponse:
    from aion.api.v1 import admin_pb2, admin_pb2_grpc

    request = admin_pb2.RotateTokenRequest(token=token)
    request.overlap.FromTimedelta(overlap)
    with channel(target) as ch:
        return call(target, admin_pb2_grpc.AdminServiceStub(ch).RotateToken, request, "token rotate")


def _rotate_one(
    target: Endpoint, token: str, overlap: dt.timedelta, secret_file: Path | None
) -> tuple[dict[str, Any], str]:
    reply = _call_rotate(target, token, overlap)
    info = {
        "name": reply.token.name,
        "id": reply.previous.id,
        "newId": reply.token.id,
        "oldExpiresAt": _iso(reply.previous.expires_at, reply.previous.HasField("expires_at")),
        "secretFile": str(secret_file) if secret_file is not None else None,
    }
    if secret_file is not None:
        _write_secret(secret_file, reply.secret, info)
    return info, reply.secret


def _rotate_old(
    target: Endpoint, age: dt.timedelta, overlap: dt.timedelta, secret_dir: Path
) -> list[tuple[dict[str, Any], str]]:
    now = dt.datetime.now(dt.UTC)
    chosen = [c for c in every_token(target) if _rotatable(c, now) and _older(c, now, age)]
    if chosen:
        _check_writable(secret_dir, f"--secret-dir {secret_dir}", make=True)
    odd = [c.name for c in chosen if not _FILE_NAME.fullmatch(c.name)]
    if odd:  # aiond's names never hold a "/" or start with a dot; a file name must not either
        raise InputError(
            f"aiond at {target.grpc} named a token {odd[0][:80]!r}, which is no name aiond gives",
            hint="check --addr: is that aiond?",
        )
    done: list[tuple[dict[str, Any], str]] = []
    for c in chosen:
        try:
            # By id: a token another client rotated meanwhile is refused rather than rotated twice.
            done.append(_rotate_one(target, c.id, overlap, secret_dir / f"{c.name}.token"))
        except Exception:
            if done:
                names = ", ".join(info["name"] for info, _ in done)
                print(f"rotated before the failure: {names} (their files are written)", file=sys.stderr)
            raise
    return done


def _check_writable(directory: Path, what: str, *, make: bool = False) -> None:
    """Refuse, before anything is rotated, a place the new secrets could not be written to: a secret
    that cannot be kept is a lost one."""
    try:
        if make:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=directory, prefix=".aion-token-", suffix=".probe")
        os.close(fd)
        Path(probe).unlink()
    except OSError as exc:
        raise InputError(
            f"{what}: cannot write there: {exc.strerror or exc}", hint="give a writable directory"
        ) from exc


def _write_secret(path: Path, secret: str, info: dict[str, Any]) -> None:
    """``secret`` into ``path``, mode 0600, by one rename: a reader sees the old file or the new one."""
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".new")
    try:
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, (secret + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        Path(temp).replace(path)
    except OSError as exc:
        Path(temp).unlink(missing_ok=True)
        raise InputError(
            f"token {info['name']!r} was rotated ({info['newId']}), but its new secret could not be "
            f"written to {path}: {exc.strerror or exc}",
            hint=f"the old token works until {info['oldExpiresAt']}: rotate {info['name']} again "
            "into a writable file",
        ) from exc
