"""``aionctl validate [PATH ...|-]``: the CI gate for config. Checks files against their schemas and
the whole set across files, offline, and points every finding at a file, line and column.

Exit 0 when clean, 1 with errors (or warnings, with --fail-on-warn; unknown keys are errors with
--strict), 2 for a usage error, 3 when a path cannot be read.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from aion.config import kinds
from aion.config.limits import DEFAULT_MAX_BYTES
from aion.errors import UsageError
from aion.exitcodes import ExitCode
from aionctl.options import command_app, global_options
from aionctl.output.findings.interface import FindingsFormat

if TYPE_CHECKING:
    from aion.config.validate import Source

app = command_app()

_KINDS = ", ".join(k.value for k in kinds.Kind)
MAX_FILE_SIZE = 1 << 30
"""Largest --max-file-size: every file is held in memory while the set is checked."""
MAX_JOBS = 256
"""Largest --jobs: each is a process."""


@app.command()
def validate_command(
    ctx: typer.Context,
    paths: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="[PATH ...|-]",
            help="Files or directories (walked for *.yml and *.yaml); - reads standard input. Default: .",
            show_default=False,
        ),
    ] = None,
    kind: Annotated[
        str | None,
        typer.Option("--kind", metavar="KIND", help=f"Treat every file as this kind: {_KINDS}."),
    ] = None,
    output: Annotated[
        FindingsFormat,
        typer.Option(
            "--output",
            "-o",
            help="text for people; json, yaml, sarif, github or junit for CI.",
            case_sensitive=False,
        ),
    ] = FindingsFormat.TEXT,
    strict: Annotated[bool, typer.Option("--strict", help="Unknown keys are errors, not warnings.")] = False,
    fail_on_warn: Annotated[bool, typer.Option("--fail-on-warn", help="Exit 1 on warnings too.")] = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Text output: errors only, no summary.")
    ] = False,
    max_file_size: Annotated[
        int,
        typer.Option(
            "--max-file-size",
            metavar="BYTES",
            min=1,
            max=MAX_FILE_SIZE,
            help="Largest file read (up to 1 GiB).",
        ),
    ] = DEFAULT_MAX_BYTES,
    each_dir: Annotated[
        bool,
        typer.Option(
            "--each-dir", help="Validate each directory's files as a separate set (one set per environment)."
        ),
    ] = False,
    jobs: Annotated[
        int,
        typer.Option(
            "--jobs",
            "-j",
            metavar="N",
            min=0,
            max=MAX_JOBS,
            help="Sets validated at once with --each-dir (0 to 256); 0 means one per CPU.",
        ),
    ] = 0,
) -> None:
    """Validate config files (intents, policies, models, modules, module manifests, runbooks)."""
    from aion import __version__
    from aion.config.findings import Finding, Severity
    from aion.config.validate import STDIN, Options, collect, validate_many
    from aion.config.yamlload import Limits
    from aionctl.output.findings import Rendering, render
    from aionctl.output.findings.interface import clean, clean_finding
    from aionctl.output.findings.text import summary

    opts = global_options(ctx)
    forced = _parse_kind(kind)
    limits = Limits(max_bytes=max_file_size)
    options = Options(strict=strict, limits=limits)
    targets = paths or ["."]
    stdin = sys.stdin.buffer if STDIN in targets and sys.stdin is not None else None
    sources = collect(targets, kind=forced, stdin=stdin, limits=limits)
    findings: list[Finding] = []
    files: dict[str, str | None] = {}
    workers = jobs or os.cpu_count() or 1
    for set_findings, set_files in validate_many(
        _sets(sources, targets, each_dir=each_dir), options, jobs=workers
    ):
        findings.extend(set_findings)
        files.update({name: k.value if k else None for name, k in set_files.items()})
    failed = any(
        f.severity.rank >= (Severity.WARNING if fail_on_warn else Severity.ERROR).rank for f in findings
    )
    rendering = Rendering(
        findings=tuple(clean_finding(f) for f in findings),
        files={clean(name): kind for name, kind in files.items()},
        failed=failed,
        fail_on_warn=fail_on_warn,
        tool_version=__version__,
    )
    quiet = quiet or opts.quiet
    sys.stdout.write(render(rendering, output, color=opts.color(), quiet=quiet))
    sys.stdout.flush()
    if output is FindingsFormat.TEXT and not quiet:
        print(summary(rendering), file=sys.stderr)
    raise typer.Exit(int(ExitCode.FINDINGS if failed else ExitCode.OK))


def _sets(sources: list[Source], targets: list[str], *, each_dir: bool) -> list[tuple[str, list[Source]]]:
    """The sets to validate: everything as one, or (--each-dir) one per directory of files."""
    if not each_dir:
        name = targets[0] if len(targets) == 1 and Path(targets[0]).is_dir() else ""
        return [(name, sources)]
    groups: dict[str, list[Source]] = {}
    for source in sources:
        groups.setdefault(str(Path(source.name).parent), []).append(source)
    return list(groups.items())


def _parse_kind(text: str | None) -> kinds.Kind | None:
    if text is None:
        return None
    try:
        return kinds.parse(text)
    except ValueError:
        raise UsageError(f"--kind: {text!r} is not a file kind", hint=f"one of {_KINDS}") from None
