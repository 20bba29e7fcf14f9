"""``aionctl policy``: apply, reload, roll back, compare and list the daemon's policy versions.

Exit codes: 0 done (also when the content was unchanged); 1 the config set has errors and was refused
(the findings are printed, the running version stays active), or ``diff`` found differences;
3 a local directory cannot be read (or holds a link that leads out of it, or an entry that is not a
regular file), the set is larger than the daemon's message cap, or a version does not exist; 4 no
token or too weak a role; 5 aiond unreachable or too slow; 6 a precondition failed (nothing to roll
back to or compare with, or ``--expect-tag`` is no longer the active tag).

A local directory is read as ``aionctl validate`` reads it, and only what validate would check is
sent: files it does not recognise (by name or top-level ``kind:``) are left out, and said so on
stderr, since whatever is applied stays in the version history for every viewer to read back.
"""

from __future__ import annotations

import difflib
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from aion.errors import ConflictError, Error, FindingsError, UsageError
from aionctl.client import Endpoint, call, channel, rpc_status
from aionctl.connect import (
    DEFAULT_MAX_MESSAGE_BYTES,
    MaxMessageBytes,
    check_request_size,
    daemon_command,
    oversized,
)
from aionctl.options import Output, command_app, global_options
from aionctl.output import OutputFormat, document, emit

app = command_app()
app.info.help = "Apply, reload, roll back, compare and list the daemon's policy versions."
app.info.no_args_is_help = True

ACTIVATION_TRAILER = "aion-activation-bin"

DryRun = Annotated[
    bool, typer.Option("--dry-run", help="Validate on the daemon and report; activate nothing.")
]


class _Conn:
    """The endpoint of one command, with the global options its printing needs."""

    def __init__(self, ctx: typer.Context, target: Endpoint) -> None:
        self.endpoint = target
        self.quiet = global_options(ctx).quiet
        self.color = global_options(ctx).color(sys.stdout)


def _stub(ch: Any) -> Any:
    from aion.api.v1 import policies_pb2_grpc

    return policies_pb2_grpc.PolicyServiceStub(ch)


def _to_dict(message: Any) -> dict[str, Any]:
    from aion.documents import to_dict

    return to_dict(message)


# -- rendering --------------------------------------------------------------------------------------------


def _findings(body: dict[str, Any]) -> list[dict[str, Any]]:
    return list(body.get("findings", []))


def _finding_lines(findings: list[dict[str, Any]]) -> str:
    lines = []
    for f in findings:
        loc = f.get("location", {})
        where = f"{loc.get('file', '')}:{loc.get('line', 0)}:{loc.get('column', 0)}"
        hint = f"\n    hint: {f['hint']}" if f.get("hint") else ""
        lines.append(f"{where}: {f['severity']} {f.get('ruleId', '')} {f.get('message', '')}{hint}\n")
    return "".join(lines)


def _version_line(v: dict[str, Any] | None) -> str:
    if not v or not int(v.get("number", 0) or 0):
        return "none"
    return f"{v['number']} ({v['tag'][:19]}, {v.get('source', '')} by {v.get('author', '')})"


def _activation_text(body: dict[str, Any], verb: str) -> str:
    version, previous = body.get("version"), body.get("previous")
    if body.get("unchanged"):
        head = f"unchanged: the content equals the active version {_version_line(version)}\n"
    elif body.get("activated"):
        head = f"{verb}: version {_version_line(version)} is active (was {_version_line(previous)})\n"
    else:
        tag = (version or {}).get("tag", "")
        head = f"dry run: the set is valid and would become a new version ({tag})\n"
    return head + _finding_lines(body.get("findings", []))


def _emit_activation(conn: _Conn, body: dict[str, Any], output: OutputFormat, verb: str) -> None:
    body["findings"] = _findings(body)
    if conn.quiet and output is OutputFormat.TEXT:
        return
    emit(document("PolicyActivation", body), output, text=lambda: _activation_text(body, verb))


def _refused(exc: Any, response_type: Any, what: str, output: OutputFormat) -> Error:
    """The error for a refused activation; prints its findings first (to stdout as data, or stderr)."""
    import grpc

    code, detail = rpc_status(exc)
    trailer = next(
        (value for key, value in (exc.trailing_metadata() or ()) if key == ACTIVATION_TRAILER), None
    )
    if code is not grpc.StatusCode.INVALID_ARGUMENT or trailer is None:
        return FindingsError(f"{what}: {detail}")
    response = response_type.FromString(trailer)
    body = _to_dict(response.activation)
    body["findings"] = _findings(body)
    if output is OutputFormat.TEXT:
        sys.stderr.write(_finding_lines(body["findings"]))
    else:
        emit(document("PolicyActivation", body), output, text=lambda: "")
    return FindingsError(f"{what} refused: {detail}")


# -- commands ---------------------------------------------------------------------------------------------


@daemon_command(app, "apply", timeout=30.0)
def apply(
    ctx: typer.Context,
    target: Endpoint,
    directory: Annotated[Path, typer.Argument(metavar="DIR", help="Config set directory to upload.")],
    dry_run: DryRun = False,
    expect_tag: Annotated[
        str | None,
        typer.Option(
            "--expect-tag",
            metavar="TAG",
            help="Refuse (exit 6) unless TAG is still the active version's tag.",
        ),
    ] = None,
    message: Annotated[
        str, typer.Option("--message", "-m", metavar="TEXT", help="Where it came from, e.g. a git commit.")
    ] = "",
    max_message_bytes: MaxMessageBytes = DEFAULT_MAX_MESSAGE_BYTES,
    output: Output = OutputFormat.TEXT,
) -> None:
    """Upload a config set; the daemon validates it exactly like `aionctl validate` and activates it
    (role admin). Only files validate recognises are sent; links out of DIR are refused."""
    from aion.api.v1 import common_pb2, policies_pb2

    conn = _Conn(ctx, target)
    files = _local_set(conn, directory)
    request = policies_pb2.ApplyPolicyRequest(
        files=[common_pb2.ConfigFile(path=p, content=c) for p, c in files.items()],
        source=message,
        dry_run=dry_run,
        expected_active_tag=expect_tag or "",
    )
    check_request_size(request, max_message_bytes, "policy apply")
    _activate(conn, "ApplyPolicy", request, policies_pb2.ApplyPolicyResponse, output, "apply")


@daemon_command(app, "reload", timeout=30.0)
def reload(
    ctx: typer.Context,
    target: Endpoint,
    dry_run: DryRun = False,
    output: Output = OutputFormat.TEXT,
) -> None:
    """Make the daemon re-read its config directory and activate it (role operator)."""
    from aion.api.v1 import policies_pb2

    request = policies_pb2.ReloadPolicyRequest(dry_run=dry_run)
    _activate(
        _Conn(ctx, target), "ReloadPolicy", request, policies_pb2.ReloadPolicyResponse, output, "reload"
    )


def _activate(
    conn: _Conn, method: str, request: Any, response_type: Any, output: OutputFormat, verb: str
) -> None:
    """Call ApplyPolicy or ReloadPolicy and print the activation; a refusal prints its findings (they
    travel in a trailer, since a failed call has no response) and exits 1."""
    import grpc

    from aionctl.client import translate_rpc_error

    what = f"policy {verb}"
    with channel(conn.endpoint) as ch:
        try:
            reply = getattr(_stub(ch), method)(
                request, timeout=conn.endpoint.timeout, metadata=conn.endpoint.metadata()
            )
        except grpc.RpcError as exc:
            # Only a request can be too large here: the replies of these calls are small.
            if verb == "apply" and (too_large := oversized(exc, what)) is not None:
                raise too_large from exc
            code, _ = rpc_status(exc)
            if code is grpc.StatusCode.INVALID_ARGUMENT:
                raise _refused(exc, response_type, what, output) from exc
            raise translate_rpc_error(exc, conn.endpoint, what) from exc
    _emit_activation(
        conn, _to_dict(reply.activation), output, {"apply": "applied", "reload": "reloaded"}[verb]
    )


@daemon_command(app, "rollback", timeout=30.0)
def rollback(
    ctx: typer.Context,
    target: Endpoint,
    to: Annotated[
        str | None,
        typer.Option(
            "--to",
            metavar="N|TAG",
            help="Version number or tag (sha256:..., or 7+ hex digits) [default: the previous version].",
        ),
    ] = None,
    output: Output = OutputFormat.TEXT,
) -> None:
    """Activate an earlier version again, as a new version (role admin). Exit 6 when there is
    nothing to roll back to."""
    from aion.api.v1 import policies_pb2

    conn = _Conn(ctx, target)
    request = policies_pb2.RollbackPolicyRequest()
    if to is not None:
        if not to.strip():
            raise UsageError("--to is empty", hint="give a version number or tag, or leave --to out")
        if to.isascii() and to.isdecimal():
            if not 1 <= int(to) < 2**63:
                raise UsageError(
                    f"--to {to}: version numbers run from 1", hint="see `aionctl policy history`"
                )
            request.number = int(to)
        else:
            request.tag = to
    with channel(conn.endpoint) as ch:
        reply = call(conn.endpoint, _stub(ch).RollbackPolicy, request, "policy rollback")
    body = _to_dict(reply)
    if conn.quiet and output is OutputFormat.TEXT:
        return
    emit(
        document("PolicyRollback", body),
        output,
        text=lambda: (
            f"rolled back: version {_version_line(body['version'])} is active "
            f"(was {_version_line(body['previous'])})\n"
        ),
    )


@daemon_command(app, "history", timeout=5.0)
def history(
    ctx: typer.Context,
    target: Endpoint,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000, help="Most versions to list.")] = 20,
    output: Output = OutputFormat.TEXT,
) -> None:
    """List policy versions, newest first (role viewer)."""
    from aion.api.v1 import policies_pb2

    conn = _Conn(ctx, target)
    with channel(conn.endpoint) as ch:
        reply = call(
            conn.endpoint, _stub(ch).ListPolicyVersions,
            policies_pb2.ListPolicyVersionsRequest(page_size=limit), "policy history",
        )  # fmt: skip
    body = _to_dict(reply)
    versions = body.get("versions", [])
    if conn.quiet and output is OutputFormat.TEXT:
        return

    def text() -> str:
        rows = [
            f"{'':1} {'VERSION':>7}  {'TAG':<19}  {'SOURCE':<8}  {'AUTHOR':<20}  {'CREATED':<20}  DESCRIPTION"
        ]
        for v in versions:
            mark = "*" if v.get("active") else " "
            created = v.get("createdAt", "")[:19].replace("T", " ")
            rows.append(
                f"{mark} {v['number']:>7}  {v['tag'][:19]:<19}  {v['source']:<8}  {v['author'][:20]:<20}  "
                f"{created:<20}  {v.get('description', '')}"
            )
        return "\n".join(rows) + "\n"

    emit(document("PolicyHistory", {"versions": versions}), output, text=text)


@daemon_command(app, "status", timeout=5.0)
def status(
    ctx: typer.Context,
    target: Endpoint,
    output: Output = OutputFormat.TEXT,
) -> None:
    """Show the active version, the last activation and the last refused one (role viewer)."""
    from aion.api.v1 import policies_pb2

    conn = _Conn(ctx, target)
    with channel(conn.endpoint) as ch:
        reply = call(
            conn.endpoint, _stub(ch).GetPolicyStatus, policies_pb2.GetPolicyStatusRequest(), "policy status"
        )
    body = _to_dict(reply)
    if "lastError" in body:
        body["lastError"]["findings"] = _findings(body["lastError"])
    if conn.quiet and output is OutputFormat.TEXT:
        return

    def text() -> str:
        rows = [
            f"active:          {_version_line(body.get('active'))}",
            f"activated at:    {body.get('lastActivationAt', 'never')}",
            f"config dir:      {body.get('configDir', '')}",
        ]
        error = body.get("lastError")
        if error:
            at, source = error.get("at", ""), error.get("source", "")
            rows.append(f"last refusal:    {at} ({source}): {error.get('message', '')}")
            rows.append(_finding_lines(error.get("findings", [])).rstrip("\n"))
        else:
            rows.append("last refusal:    none")
        return "\n".join(r for r in rows if r) + "\n"

    emit(document("PolicyStatus", body), output, text=text)


@daemon_command(app, "diff", timeout=10.0)
def diff(
    ctx: typer.Context,
    target: Endpoint,
    first: Annotated[
        str | None, typer.Argument(metavar="[FROM]", help="Version number, tag, 'active', or a directory.")
    ] = None,
    second: Annotated[
        str | None, typer.Argument(metavar="[TO]", help="Version number, tag, 'active', or a directory.")
    ] = None,
    output: Output = OutputFormat.TEXT,
) -> None:
    """Show what would change between two versions, or between a version and a local directory.

    No argument: the previous version against the active one. One: the active version against it
    (a directory shows what `policy apply DIR` would change). Exit 0 when identical, 1 when they differ.
    """
    conn = _Conn(ctx, target)
    if first is None:
        sides = ("previous", "active")
    elif second is None:
        sides = ("active", first)
    else:
        sides = (first, second)
    with channel(conn.endpoint) as ch:
        (left_label, left), (right_label, right) = (_side(conn, ch, s) for s in sides)
    changes = file_changes(left, right, left_label, right_label)
    body = {
        "from": left_label,
        "to": right_label,
        "identical": not changes,
        "files": changes,
    }
    if not (conn.quiet and output is OutputFormat.TEXT):
        emit(document("PolicyDiff", body), output, text=lambda: _diff_text(body, conn.color))
    if changes:
        raise typer.Exit(1)


def _side(conn: _Conn, ch: Any, selector: str) -> tuple[str, dict[str, bytes]]:
    """(label, files) for one side of a diff."""
    from aion.api.v1 import policies_pb2

    ep = conn.endpoint
    path = Path(selector)
    if (
        selector not in ("active", "previous")
        and not selector.isdecimal()
        and (path.exists() or "/" in selector)
    ):
        return selector.rstrip("/") or selector, _local_set(conn, path)
    request = policies_pb2.GetPolicyVersionRequest(include_files=True)
    stub = _stub(ch)
    if selector == "previous":
        listing = call(
            ep, stub.ListPolicyVersions, policies_pb2.ListPolicyVersionsRequest(page_size=1000), "policy diff"
        )
        numbers = [v.number for v in listing.versions]
        active = next((v.number for v in listing.versions if v.active), None)
        older = [n for n in numbers if active is not None and n < active]
        if not older:
            # The same situation as a rollback with nothing to roll back to, and the same exit (6).
            raise ConflictError(
                "policy diff: there is no version before the active one to compare with",
                hint="name two versions, or a directory to compare the active version with",
            )
        request.number = older[0]
    elif selector.isascii() and selector.isdecimal():
        if not 1 <= int(selector) < 2**63:
            raise UsageError(f"{selector}: version numbers run from 1", hint="see `aionctl policy history`")
        request.number = int(selector)
    elif selector != "active":
        request.tag = selector
    reply = call(ep, stub.GetPolicyVersion, request, "policy diff")
    return f"v{reply.version.number}", {f.path: bytes(f.content) for f in reply.files}


def file_changes(
    left: dict[str, bytes], right: dict[str, bytes], left_label: str, right_label: str
) -> list[dict[str, Any]]:
    """Per-file changes from ``left`` to ``right``, with unified diffs, in path order."""
    changes: list[dict[str, Any]] = []
    for path in sorted(set(left) | set(right)):
        a, b = left.get(path), right.get(path)
        if a == b:
            continue
        change = "added" if a is None else "removed" if b is None else "modified"
        text = "".join(
            difflib.unified_diff(
                _lines(a),
                _lines(b),
                fromfile=f"{left_label}/{path}" if a is not None else "/dev/null",
                tofile=f"{right_label}/{path}" if b is not None else "/dev/null",
            )
        )
        changes.append({"path": path, "change": change, "diff": text})
    return changes


def _lines(data: bytes | None) -> list[str]:
    if data is None:
        return []
    lines = data.decode("utf-8", errors="replace").splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n\\ No newline at end of file\n"
    return lines


def _diff_text(body: dict[str, Any], color: bool) -> str:
    if body["identical"]:
        return f"no differences between {body['from']} and {body['to']}\n"
    out = []
    for change in body["files"]:
        for line in change["diff"].splitlines(keepends=True):
            if color and line.startswith(("+", "-")) and not line.startswith(("+++", "---")):
                code = "32" if line.startswith("+") else "31"
                out.append(f"\x1b[{code}m{line.rstrip(chr(10))}\x1b[0m\n")
            else:
                out.append(line)
    return "".join(out)


def _local_set(conn: _Conn, directory: Path) -> dict[str, bytes]:
    """:func:`read_directory`, saying on stderr which files it left out (unless --quiet)."""
    files, left_out = read_directory(directory)
    if not conn.quiet:
        for name in left_out:
            sys.stderr.write(
                f"left out {name}: not recognised as an aion config file (by name or top-level kind:)\n"
            )
    return files


def read_directory(directory: Path) -> tuple[dict[str, bytes], list[str]]:
    """The config set under ``directory`` as {relative path: bytes}, the files ``aionctl validate``
    checks, and the files it leaves out (not recognised by name or by a top-level ``kind:``).

    Nothing that does not belong to the directory is read: a symbolic link whose target is outside
    it is an InputError naming the link and its target, and so is an entry that is not a regular
    file (a FIFO, a device), before anything is sent."""
    from aion.config.validate import collect, ignored
    from aion.errors import InputError

    if not directory.is_dir():
        raise InputError(f"{directory}: not a directory", hint="give the directory of a config set")
    sources = collect([str(directory)], confined=True)
    for source in sources:
        if source.not_a_file is not None:
            raise InputError(
                f"{source.name} is {source.not_a_file}, not a regular file; nothing was sent",
                hint="config files must be regular files: replace it with the file it stands for, "
                "or remove it",
            )
    files: dict[str, bytes] = {}
    left_out: list[str] = []
    for source in sources:
        if ignored(source):
            left_out.append(source.name)
        else:
            files[Path(source.name).relative_to(directory).as_posix()] = source.data
    if not files:
        raise InputError(
            f"{directory}: no aion config files (intents.yml, policies.yml, models.yml, modules.yml, "
            "or a top-level kind:)",
            hint="give the directory of a config set",
        )
    return files, left_out
