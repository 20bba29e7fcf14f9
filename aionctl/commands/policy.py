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

import dataclasses
import difflib
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from aion.config.findings import Finding
from aion.errors import ConflictError, FindingsError, UsageError
from aionctl.client import Endpoint, call, channel
from aionctl.connect import (
    DEFAULT_MAX_MESSAGE_BYTES,
    MaxMessageBytes,
    check_request_size,
    daemon_command,
    oversized,
)
from aionctl.options import Output, command_app, global_options
from aionctl.output import OutputFormat, document, emit
from aionctl.output.findings.interface import FindingsFormat

if TYPE_CHECKING:
    from aion.api.v1 import common_pb2, policies_pb2
    from aion.config.kinds import Kind

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


# -- rendering --------------------------------------------------------------------------------------------
#
# Every message is rendered from its typed form: text through the functions below, json and yaml as
# the documents of schema output/policy (aion.documents), and the findings of apply, reload and
# rollback also as sarif, github or junit, exactly as `aionctl validate` renders them.

ActivationOutput = Annotated[
    FindingsFormat,
    typer.Option(
        "--output", "-o", case_sensitive=False,
        help="text for people; json or yaml for programs; sarif, github or junit for the findings, as "
        "`aionctl validate` prints them.",
    ),
]  # fmt: skip


@dataclasses.dataclass(frozen=True, slots=True)
class _LocalNames:
    """How the findings of an uploaded set name its files: as `aionctl validate DIR` would."""

    directory: str
    files: Mapping[str, bytes]

    def __call__(self, name: str) -> str:
        if name in self.files:
            return (Path(self.directory) / name).as_posix()
        if name == UPLOADED_SET:
            return self.directory
        return name


UPLOADED_SET = "uploaded config set"
"""What the daemon calls a set that was uploaded (apply), for findings about the set as a whole."""


def _finding_lines(findings: Sequence[Finding]) -> str:
    from aionctl.output.findings.interface import clean_finding
    from aionctl.output.findings.text import finding_line

    return "".join(finding_line(clean_finding(f)) for f in findings)


def _version_line(version: policies_pb2.PolicyVersion | None) -> str:
    if version is None or not version.number:
        return "none"
    return f"{version.number} ({version.tag[:19]}, {version.source} by {version.author})"


def _activation_text(activation: policies_pb2.Activation, findings: Sequence[Finding], verb: str) -> str:
    version = activation.version if activation.HasField("version") else None
    previous = activation.previous if activation.HasField("previous") else None
    if activation.unchanged:
        head = f"unchanged: the content equals the active version {_version_line(version)}\n"
    elif activation.activated:
        head = f"{verb}: version {_version_line(version)} is active (was {_version_line(previous)})\n"
    else:
        head = (
            f"dry run: the set is valid and would become a new version ({version.tag if version else ''})\n"
        )
    return head + _finding_lines(findings)


def _findings(messages: Sequence[common_pb2.Finding], names: Callable[[str], str]) -> list[Finding]:
    """Findings from the daemon as validate has them: files named by ``names``, in validate's order;
    the daemon's note about findings it left out stays last."""
    from aion.config.wire import finding_from_message

    found = [finding_from_message(f, names) for f in messages]
    notes = [f for f in found if f.rule == "AION000"]
    return sorted((f for f in found if f.rule != "AION000"), key=Finding.sort_key) + notes


def _print_findings(
    conn: _Conn, findings: Sequence[Finding], files: Mapping[str, bytes], names: Callable[[str], str],
    output: FindingsFormat, *, failed: bool,
) -> None:  # fmt: skip
    """The findings of an activation in a findings format (sarif, github, junit)."""
    from aion import __version__
    from aion.config import kinds
    from aionctl.output.findings import Rendering, render
    from aionctl.output.findings.interface import clean, clean_finding

    known = {names(path): kinds.by_name(path) for path in files}
    if isinstance(names, _LocalNames):
        known, findings = _with_read_alone(names.directory, known, findings)
    for finding in findings:  # a reload's files, which only the daemon has read
        known.setdefault(finding.file, kinds.by_name(finding.file))
    rendering = Rendering(
        findings=tuple(clean_finding(f) for f in findings),
        files={clean(name): kind.value if kind else None for name, kind in known.items() if name},
        failed=failed,
        fail_on_warn=False,
        tool_version=__version__,
    )
    sys.stdout.write(render(rendering, output, color=conn.color, quiet=conn.quiet))
    sys.stdout.flush()


def _with_read_alone(
    directory: str, sent: Mapping[str, Kind | None], findings: Sequence[Finding]
) -> tuple[dict[str, Kind | None], list[Finding]]:
    """The files and findings of an apply's report with the directory's files that are read on their
    own (kafka.yml) added, checked here as validate checks them, in validate's order: they are not
    sent, and the report is the very one ``aionctl validate DIR`` gives."""
    from aion.config.validate import Options, check_file, collect, read_alone

    known: dict[str, Kind | None] = {}
    extra: list[Finding] = []
    for source in collect([directory], confined=True):
        if read_alone(source):
            kind, _, found = check_file(source, Options())
            known[source.name] = kind
            extra.extend(found)
        elif source.name in sent:
            known[source.name] = sent[source.name]
    known.update((name, kind) for name, kind in sent.items() if name not in known)
    notes = [f for f in findings if f.rule == "AION000"]
    merged = sorted([*(f for f in findings if f.rule != "AION000"), *extra], key=Finding.sort_key)
    return known, merged + notes


def _emit_activation(
    conn: _Conn, activation: policies_pb2.Activation, output: FindingsFormat, verb: str,
    *, names: Callable[[str], str] = str, files: Mapping[str, bytes] | None = None, refused: bool = False,
) -> None:  # fmt: skip
    findings = _findings(activation.findings, names)
    if output in (FindingsFormat.SARIF, FindingsFormat.GITHUB, FindingsFormat.JUNIT):
        _print_findings(conn, findings, files or {}, names, output, failed=refused)
        return
    if output is FindingsFormat.TEXT:
        if refused:
            sys.stderr.write(_finding_lines(findings))
        elif not conn.quiet:
            sys.stdout.write(_activation_text(activation, findings, verb))
        return
    body = document("PolicyActivation", activation)
    body["findings"] = [_finding_body(f) for f in findings]
    emit(body, OutputFormat(output.value), text=lambda: "")


def _finding_body(finding: Finding) -> dict[str, Any]:
    """A finding in the shape of schema output/policy (the message's document, with validate's
    file names)."""
    from aion.config.wire import finding_message
    from aion.documents import to_dict

    return to_dict(finding_message(finding))


def _refusal(exc: Any) -> policies_pb2.Activation | None:
    """The refused activation a failed call carries in its trailer, if it carries one."""
    from aion.api.v1 import policies_pb2

    trailer = next((v for k, v in (exc.trailing_metadata() or ()) if k == ACTIVATION_TRAILER), None)
    if not isinstance(trailer, bytes):
        return None
    return policies_pb2.ApplyPolicyResponse.FromString(trailer).activation


# -- commands ---------------------------------------------------------------------------------------------


@daemon_command(app, "apply", timeout=30.0)
def apply(
    ctx: typer.Context,
    target: Endpoint,
    directory: Annotated[str, typer.Argument(metavar="DIR", help="Config set directory to upload.")],
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
    output: ActivationOutput = FindingsFormat.TEXT,
) -> None:
    """Upload a config set; the daemon validates it exactly like `aionctl validate` and activates it
    (role admin). Only files validate recognises are sent; links out of DIR are refused."""
    from aion.api.v1 import common_pb2, policies_pb2

    conn = _Conn(ctx, target)
    files = _local_set(conn, Path(directory))
    request = policies_pb2.ApplyPolicyRequest(
        files=[common_pb2.ConfigFile(path=p, content=c) for p, c in files.items()],
        source=message,
        dry_run=dry_run,
        expected_active_tag=expect_tag or "",
    )
    check_request_size(request, max_message_bytes, "policy apply")
    names = _LocalNames(directory, files)
    _activate(conn, "ApplyPolicy", request, output, "apply", names=names, files=files)


@daemon_command(app, "reload", timeout=30.0)
def reload(
    ctx: typer.Context,
    target: Endpoint,
    dry_run: DryRun = False,
    output: ActivationOutput = FindingsFormat.TEXT,
) -> None:
    """Make the daemon re-read its config directory and activate it (role operator)."""
    from aion.api.v1 import policies_pb2

    _activate(
        _Conn(ctx, target),
        "ReloadPolicy",
        policies_pb2.ReloadPolicyRequest(dry_run=dry_run),
        output,
        "reload",
    )


def _activate(
    conn: _Conn, method: str, request: Any, output: FindingsFormat, verb: str,
    *, names: Callable[[str], str] = str, files: Mapping[str, bytes] | None = None,
) -> None:  # fmt: skip
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
            error = translate_rpc_error(exc, conn.endpoint, what)
            refused = _refusal(exc) if isinstance(error, FindingsError) else None
            if refused is not None:
                _emit_activation(conn, refused, output, verb, names=names, files=files, refused=True)
            raise error from exc
    _emit_activation(
        conn,
        reply.activation,
        output,
        {"apply": "applied", "reload": "reloaded"}[verb],
        names=names,
        files=files,
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
    output: ActivationOutput = FindingsFormat.TEXT,
) -> None:
    """Activate an earlier version again, as a new version (role admin). Exit 6 when there is
    nothing to roll back to; a version that no longer validates is refused with its findings."""
    import grpc

    from aion.api.v1 import policies_pb2
    from aionctl.client import translate_rpc_error

    conn = _Conn(ctx, target)
    request = policies_pb2.RollbackPolicyRequest()
    if to is not None:
        if not to.strip():
            raise UsageError("--to is empty", hint="give a version number or tag, or leave --to out")
        if to.isascii() and to.isdecimal():
            if not 1 <= int(to) < 2**62:
                raise UsageError(
                    f"--to {to}: version numbers run from 1", hint="see `aionctl policy history`"
                )
            request.number = int(to)
        else:
            request.tag = to
    with channel(conn.endpoint) as ch:
        try:
            reply = _stub(ch).RollbackPolicy(
                request, timeout=conn.endpoint.timeout, metadata=conn.endpoint.metadata()
            )
        except grpc.RpcError as exc:
            error = translate_rpc_error(exc, conn.endpoint, "policy rollback")
            refused = _refusal(exc)
            if refused is not None:
                _emit_activation(conn, refused, output, "rollback", refused=True)
            raise error from exc
    if output in (FindingsFormat.SARIF, FindingsFormat.GITHUB, FindingsFormat.JUNIT):
        _print_findings(conn, [], {}, str, output, failed=False)
        return
    if conn.quiet and output is FindingsFormat.TEXT:
        return
    emit(
        document("PolicyRollback", reply),
        OutputFormat(output.value),
        text=lambda: (
            f"rolled back: version {_version_line(reply.version)} is active "
            f"(was {_version_line(reply.previous)})\n"
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
    from aion.documents import to_dict

    conn = _Conn(ctx, target)
    with channel(conn.endpoint) as ch:
        reply = call(
            conn.endpoint, _stub(ch).ListPolicyVersions,
            policies_pb2.ListPolicyVersionsRequest(page_size=limit), "policy history",
        )  # fmt: skip
    if conn.quiet and output is OutputFormat.TEXT:
        return

    def text() -> str:
        rows = [
            f"{'':1} {'VERSION':>7}  {'TAG':<19}  {'SOURCE':<8}  {'AUTHOR':<20}  {'CREATED':<20}  DESCRIPTION"
        ]
        for v in reply.versions:
            created = v.created_at.ToJsonString()[:19].replace("T", " ") if v.HasField("created_at") else ""
            mark = "*" if v.active else " "
            rows.append(
                f"{mark} {v.number:>7}  {v.tag[:19]:<19}  {v.source:<8}  {v.author[:20]:<20}  "
                f"{created:<20}  {v.description}"
            )
        return "\n".join(rows) + "\n"

    emit(document("PolicyHistory", {"versions": to_dict(reply)["versions"]}), output, text=text)


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
    if conn.quiet and output is OutputFormat.TEXT:
        return

    def text() -> str:
        activated = (
            reply.last_activation_at.ToJsonString() if reply.HasField("last_activation_at") else "never"
        )
        rows = [
            f"active:          {_version_line(reply.active if reply.HasField('active') else None)}",
            f"activated at:    {activated}",
            f"config dir:      {reply.config_dir}",
        ]
        if reply.HasField("last_error"):
            error = reply.last_error
            rows.append(f"last refusal:    {error.at.ToJsonString()} ({error.source}): {error.message}")
            rows.append(_finding_lines(_findings(error.findings, str)).rstrip("\n"))
        else:
            rows.append("last refusal:    none")
        return "\n".join(r for r in rows if r) + "\n"

    emit(document("PolicyStatus", reply), output, text=text)


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
    from aion.config.validate import collect, ignored, read_alone
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
        if read_alone(source):
            continue  # kafka.yml: aionctl kafka and aiond's event delivery read it, not a policy set
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
