"""``aiond token create|list|revoke|rotate``: manage API credentials offline, on the state directory.

These commands open the state database directly, so they work whether or not a daemon is running on
that state directory (SQLite WAL lets both use it; a running daemon sees a change within a second).
A token's text is printed once, on stdout alone so that scripts can capture it, and only its hash is
kept. Every change is recorded in the daemon's event log as an audit event.

``create`` on a state directory without ``state.db`` makes it (that is how the first token exists
before the daemon's first start). A ``state.db`` that exists but is damaged or empty (0 bytes, no
schema) is refused by every command, exit 3, exactly as ``aiond`` refuses it: an empty one may be
state that lost its contents, and a token written into it would hide that. ``aiond --init-state``, or
moving the file away, starts over.

``rotate NAME|ID [--overlap 1h]`` issues a new secret under the same name and role (printed once, as
``create`` does) and lets the old one work on until the overlap ends (``0``: it stops at once); a
token with a lifetime gets the same lifetime again from now. ``list`` shows each credential's age
and last use (written by the daemon at most once a minute, see :mod:`aiond.security.auth`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from aion.errors import InputError, UsageError
from aiond.settings import default_state_dir, parse_path
from aiond.usage import Parser

if TYPE_CHECKING:
    from aiond.events.journal import Journal
    from aiond.state.backend import TokenRecord
    from aiond.state.sqlite import SqliteState

_DURATION = re.compile(r"^(\d{1,9})([smhd])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_MAX_TTL_DAYS = 3650
ROLE_NAMES = ["viewer", "operator", "admin"]
"""The roles a credential can have (aiond.security.auth.Role, named here so that the parser, and
``--help``, do not load the authentication code)."""


OUTPUTS = ["text", "json", "yaml"]


def parser() -> argparse.ArgumentParser:
    """``aiond token``'s parser. ``--state-dir`` and ``-o`` work before or after the sub-command."""
    anywhere = Parser(add_help=False)
    anywhere.add_argument(
        "--state-dir",
        metavar="DIR",
        default=argparse.SUPPRESS,
        help=f"the daemon's state directory [env AIOND_STATE_DIR; default: {default_state_dir()}]",
    )
    anywhere.add_argument(
        "-o", "--output", choices=OUTPUTS, default=argparse.SUPPRESS, help="text (default), json or yaml"
    )
    p = Parser(
        prog="aiond token",
        description="Manage aiond API credentials offline, on the state directory.",
        parents=[anywhere],
    )
    sub = p.add_subparsers(
        dest="action", required=True, metavar="{create,list,revoke,rotate}", parser_class=Parser
    )
    create = sub.add_parser(
        "create", parents=[anywhere], help="create a token (printed once) or a certificate-identity grant"
    )
    create.add_argument("name", help="who or what uses it, for example ci-deploy or alice")
    create.add_argument("--role", required=True, choices=ROLE_NAMES, help="what it may do")
    create.add_argument("--ttl", metavar="DURATION", help="expire after this long: 30m, 12h, 90d")
    create.add_argument(
        "--identity",
        metavar="ID",
        help="grant the role to a client certificate identity (URI SAN, DNS SAN or CN) instead of "
        "creating a token; for mTLS clients that send no token",
    )
    listing = sub.add_parser("list", parents=[anywhere], help="list credentials (never their secrets)")
    listing.add_argument("--all", action="store_true", help="include revoked credentials")
    revoke = sub.add_parser(
        "revoke", parents=[anywhere], help="revoke a credential by name or id; takes effect within 1 s"
    )
    revoke.add_argument("name", metavar="NAME|ID")
    rotate = sub.add_parser(
        "rotate",
        parents=[anywhere],
        help="issue a new secret with the same name and role (printed once); the old one works on "
        "for the overlap",
    )
    rotate.add_argument("name", metavar="NAME|ID")
    rotate.add_argument(
        "--overlap",
        metavar="DURATION",
        default="1h",
        help="how long the old secret keeps working: 0 (it stops at once) to 30d [default: 1h]",
    )
    return p


def _print(kind: str, body: dict[str, Any], output: str) -> None:
    document = {"apiVersion": "aion/v1", "kind": kind, **body}
    if output == "yaml":
        import yaml

        print(yaml.safe_dump(document, sort_keys=False, allow_unicode=True), end="")
    else:
        print(json.dumps(document, indent=2))


def parse_ttl(text: str) -> dt.timedelta:
    match = _DURATION.match(text.strip())
    if match is None or int(match.group(1)) == 0:
        raise UsageError(f"--ttl: {text!r} is not a duration", hint="use a number and a unit: 30m, 12h, 90d")
    seconds = int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds > _MAX_TTL_DAYS * 86400:
        raise UsageError(
            f"--ttl: {text} is longer than {_MAX_TTL_DAYS} days", hint="leave --ttl out for no expiry"
        )
    return dt.timedelta(seconds=seconds)


_MAX_OVERLAP_DAYS = 30
"""aiond.security.auth.MAX_OVERLAP, named here so that parsing does not load the authentication code."""


def parse_overlap(text: str) -> dt.timedelta:
    """``--overlap``: ``0`` or a number and a unit (``90s``, ``30m``, ``1h``, ``7d``), at most 30 days."""
    if text.strip() == "0":
        return dt.timedelta(0)
    match = _DURATION.match(text.strip())
    if match is None:
        raise UsageError(
            f"--overlap: {text[:40]!r} is not a duration",
            hint="use 0, or a number and a unit: 90s, 30m, 1h, 7d",
        )
    seconds = int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds > _MAX_OVERLAP_DAYS * 86400:
        raise UsageError(f"--overlap: {text} is longer than {_MAX_OVERLAP_DAYS} days")
    return dt.timedelta(seconds=seconds)


def _record(record: TokenRecord, now: dt.datetime | None = None) -> dict[str, Any]:
    from aiond.security.auth import describe

    age = (now or dt.datetime.now(dt.UTC)) - record.created_at
    return {**describe(record), "ageDays": max(age.days, 0)}


def run(argv: Sequence[str]) -> int:
    args = parser().parse_args(argv)
    output = getattr(args, "output", "text")
    raw_dir = getattr(args, "state_dir", None)
    if raw_dir is None:
        raw_dir = os.environ.get("AIOND_STATE_DIR")
    state_dir = parse_path(raw_dir, "--state-dir") if raw_dir is not None else default_state_dir()
    from aion.envelopes import local_principal
    from aiond.events.journal import Journal
    from aiond.events.sink import LocalSink
    from aiond.state.sqlite import DB_NAME, SqliteState

    who = local_principal()
    if args.action == "rotate":
        parse_overlap(args.overlap)  # a usage error before any I/O
    if args.action != "create" and not (state_dir / DB_NAME).is_file():
        # Only create may start a new state directory (before the first daemon start); a typo in
        # --state-dir for list or revoke must not silently report an empty, fresh one.
        raise InputError(
            f"{state_dir} holds no aiond state ({DB_NAME} is missing)",
            hint="give the daemon's --state-dir, or set AIOND_STATE_DIR",
        )
    # Never initialise an empty state.db here: only the daemon's --init-state says that is wanted.
    state = SqliteState.open(state_dir, initialise=False)
    # The same journal as the daemon's: the audit event in the change's transaction (the outbox, which
    # the daemon delivers to Kafka when it has it), then audit.jsonl and the event log.
    events = Journal(LocalSink(state_dir), outbox=state)
    try:
        actions = {"create": _create, "list": _list, "revoke": _revoke, "rotate": _rotate}
        actions[args.action](args, state, events, who, output)
    finally:
        state.close()
    return 0


def _create(args: argparse.Namespace, state: SqliteState, events: Journal, who: str, output: str) -> None:
    from aion.envelopes import audit
    from aiond.security.auth import Role, mint

    ttl = parse_ttl(args.ttl) if args.ttl else None
    record, text = mint(
        args.name, Role.parse(args.role), created_by=who, ttl=ttl, identity=args.identity or ""
    )
    state.add_token(
        record,
        audit=audit(principal=who, action="token.create", target=record.name, outcome="success",
                    after=record.id, reason=f"role {record.role}", details=_record(record)),
    )  # fmt: skip
    events.drain()
    if output != "text":
        _print("Credential", {**_record(record), "token": text or None}, output)
    elif text:
        print(text)
        print(
            f"token {record.name!r} ({record.role}) created; it is shown only once, store it now",
            file=sys.stderr,
        )
    else:
        print(f"identity {record.identity!r} granted role {record.role} as {record.name!r}", file=sys.stderr)


def _list(args: argparse.Namespace, state: SqliteState, events: Journal, who: str, output: str) -> None:
    records = state.tokens(include_revoked=args.all)
    if output != "text":
        _print("CredentialList", {"credentials": [_record(r) for r in records]}, output)
        return
    print(
        f"{'NAME':<24} {'ID':<12} {'ROLE':<9} {'KIND':<8} {'AGE':>5} {'LAST USED':<20} {'EXPIRES':<20} STATUS"
    )
    now = dt.datetime.now(dt.UTC)
    for r in records:
        status = (
            "revoked" if r.revoked_at else ("expired" if r.expires_at and r.expires_at <= now else "live")
        )
        if status == "live" and r.replaced_by:
            status = f"rotated to {r.replaced_by}"
        expires = r.expires_at.strftime("%Y-%m-%dT%H:%M:%SZ") if r.expires_at else "never"
        used = r.last_used_at.strftime("%Y-%m-%dT%H:%M:%SZ") if r.last_used_at else "never"
        kind = "identity" if r.identity else "token"
        age = f"{max((now - r.created_at).days, 0)}d"
        print(f"{r.name:<24} {r.id:<12} {r.role:<9} {kind:<8} {age:>5} {used:<20} {expires:<20} {status}")


def _revoke(args: argparse.Namespace, state: SqliteState, events: Journal, who: str, output: str) -> None:
    from aion.envelopes import audit

    def recorded(record: TokenRecord) -> dict[str, Any]:
        return audit(principal=who, action="token.revoke", target=record.name, outcome="success",
                     before=record.id, reason="revoked", details=_record(record))  # fmt: skip

    record = state.revoke_token(args.name, dt.datetime.now(dt.UTC), audit=recorded)
    events.drain()
    if output != "text":
        _print("Credential", _record(record), output)
    print(f"revoked {record.name!r} ({record.id})", file=sys.stderr)


def _rotate(args: argparse.Namespace, state: SqliteState, events: Journal, who: str, output: str) -> None:
    from aiond.security.auth import rotate

    rotation, text = rotate(state, args.name, overlap=parse_overlap(args.overlap), principal=who)
    events.drain()
    ends = _record(rotation.old)["expiresAt"]
    if output != "text":
        # The shape of aionctl token rotate's document, with the secret in it since no file holds it.
        rotated = {"name": rotation.new.name, "id": rotation.old.id, "newId": rotation.new.id,
                   "oldExpiresAt": ends, "secretFile": None, "token": text}  # fmt: skip
        _print("TokenRotation", {"rotated": [rotated]}, output)
    else:
        print(text)
    print(
        f"token {rotation.new.name!r} rotated: {rotation.new.id} replaces {rotation.old.id}, which works "
        f"until {ends}; the new token is shown only once, store it now",
        file=sys.stderr,
    )


__all__ = ["parse_overlap", "parse_ttl", "parser", "run"]
