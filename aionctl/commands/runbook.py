"""``aionctl runbook list|show|run``: the operational runbook, executed.

A runbook (``kind: Runbook``, docs/runbooks.md) is a list of steps: aionctl commands run in-process,
HTTP requests, programs, waits, manual confirmations and measurements, each with checks on its
result. ``run`` stops at the first failed step (exit 1), names it, shows what it found, runs the
runbook's ``on_failure`` steps and prints the command that resumes from that step. It writes a JSON
report (schema ``output/runbook-report``) and the resume state next to it, by default under
``$XDG_STATE_HOME/aion/runbooks/``; ``-o json`` or ``-o junit`` prints the report instead of the
summary. ``--dry-run`` resolves the variables and prints the plan, marking the steps that change
state, and runs nothing.

Exit codes: 0 every step passed, 1 a step failed (or the runbook has errors), 2 a usage error
(unknown step or variable, a missing --var), 130 interrupted.
"""

from __future__ import annotations

import enum
import os
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from aion.errors import UsageError
from aionctl import completing
from aionctl.options import Address, HttpAddress, Output, command_app, global_options
from aionctl.output import OutputFormat, document, emit

if TYPE_CHECKING:
    from aionctl.runbooks.find import Loaded

app = command_app()
app.info.help = "Run the operational runbook's sections as code: list, show and run runbooks."
app.info.no_args_is_help = True


class ReportFormat(enum.StrEnum):
    TEXT = "text"
    JSON = "json"
    JUNIT = "junit"


Name = Annotated[
    str,
    typer.Argument(
        metavar="NAME|FILE",
        autocompletion=completing.runbook_names_for,
        help="A runbook's name (searched on the runbook path) or its file.",
    ),
]
Dirs = Annotated[
    list[Path] | None,
    typer.Option(
        "--dir",
        metavar="DIR",
        help="Look for runbooks here first (repeatable); then $AION_RUNBOOK_PATH, "
        "./runbooks and the shipped ones.",
    ),
]


@app.command("list")
def list_(ctx: typer.Context, dirs: Dirs = None, output: Output = OutputFormat.TEXT) -> None:
    """List the runbooks on the search path, first match of each name."""
    from aion.errors import InputError, InvalidConfig
    from aionctl.runbooks.find import candidates, load

    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for path in candidates(dirs or []):
        try:
            book = load(path).runbook
            entry = {
                "name": book.name,
                "section": book.section,
                "description": book.description,
                "file": str(path),
                "steps": len(book.steps),
                "valid": True,
            }
        except (InputError, InvalidConfig) as exc:
            entry = {
                "name": path.stem,
                "section": "",
                "description": exc.message.splitlines()[0],
                "file": str(path),
                "steps": 0,
                "valid": False,
            }
        if str(entry["name"]) in seen:
            continue
        seen.add(str(entry["name"]))
        rows.append(entry)

    def text() -> str:
        if not rows:
            return "no runbooks found (see aionctl runbook list --help for where they are looked for)\n"
        width = max(len(r["name"]) for r in rows)
        lines = [f"{'NAME':<{width}}  STEPS  DESCRIPTION"]
        for r in rows:
            described = ("INVALID: " if not r["valid"] else "") + r["description"]
            lines.append(f"{r['name']:<{width}}  {r['steps']:>5}  {described}")
        return "\n".join(lines) + "\n"

    if not (global_options(ctx).quiet and output is OutputFormat.TEXT):
        emit(document("RunbookList", {"runbooks": rows}), output, text=text)


@app.command()
def show(ctx: typer.Context, name: Name, dirs: Dirs = None, output: Output = OutputFormat.TEXT) -> None:
    """Show a runbook's variables and steps, as written."""
    from aion.runbook.model import Step
    from aionctl.runbooks.find import load, locate
    from aionctl.runbooks.steps import describe_raw

    loaded = load(locate(name, dirs or []))
    book = loaded.runbook

    def step_doc(step: Step) -> dict[str, Any]:
        return {
            "name": step.name,
            "kind": step.kind,
            "description": step.description,
            "command": describe_raw(step),
        }

    doc = document(
        "Runbook",
        {
            "name": book.name,
            "section": book.section,
            "description": book.description,
            "file": str(loaded.path),
            "vars": {
                n: {"default": v.default, "description": v.description, "secret": v.secret}
                for n, v in book.vars.items()
            },
            "steps": [step_doc(s) for s in book.steps],
            "onFailure": [step_doc(s) for s in book.on_failure],
        },
    )

    def text() -> str:
        lines = [f"{book.name}: {book.description}".rstrip(": "), f"file: {loaded.path}"]
        if book.section:
            lines.append(f"section: {book.section}")
        if book.vars:
            lines.append("variables:")
            for n, v in book.vars.items():
                default = "(required)" if v.required else ("***" if v.secret else repr(v.default))
                lines.append(f"  {n} = {default}" + (f"  # {v.description}" if v.description else ""))
        lines.append("steps:")
        for index, step in enumerate(book.steps, 1):
            lines.append(f"  {index:>2}. {step.name:<24} {describe_raw(step)}")
        for step in book.on_failure:
            lines.append(f"  on failure: {step.name:<20} {describe_raw(step)}")
        return "\n".join(lines) + "\n"

    emit(doc, output, text=text)


def _default_report(name: str) -> Path:
    base = os.environ.get("XDG_STATE_HOME", "")
    root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".local" / "state"
    return root / "aion" / "runbooks" / f"{name}.json"


def _parse_vars(pairs: list[str]) -> dict[str, str]:
    values: dict[str, str] = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not key.strip():
            raise UsageError(f"--var {pair!r} is not NAME=VALUE", hint="for example --var tag=v2")
        values[key.strip()] = value
    return values


@app.command()
def run(
    ctx: typer.Context,
    name: Name,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the plan, variables resolved; run nothing.")
    ] = False,
    start_from: Annotated[
        str | None,
        typer.Option(
            "--from", metavar="STEP", help="Resume: start at STEP, reusing the earlier steps' results."
        ),
    ] = None,
    only: Annotated[
        list[str] | None, typer.Option("--only", metavar="STEP", help="Run just this step (repeatable).")
    ] = None,
    var: Annotated[
        list[str] | None, typer.Option("--var", metavar="NAME=VALUE", help="Set a variable (repeatable).")
    ] = None,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Confirm manual steps (needed off a terminal).")
    ] = False,
    output: Annotated[
        ReportFormat,
        typer.Option(
            "--output",
            "-o",
            case_sensitive=False,
            help="text (a summary), json (the report) or junit (for CI).",
        ),
    ] = ReportFormat.TEXT,
    report: Annotated[
        Path | None,
        typer.Option(
            "--report",
            metavar="FILE",
            help="Where the JSON report goes (the resume state sits beside it) "
            "[default: $XDG_STATE_HOME/aion/runbooks/NAME.json].",
        ),
    ] = None,
    dirs: Dirs = None,
    addr: Address = None,
    http_addr: HttpAddress = None,
    token_file: Annotated[
        Path | None,
        typer.Option("--token-file", metavar="FILE", help="The token the steps use [env AION_TOKEN_FILE]."),
    ] = None,
) -> None:
    """Run a runbook's steps in order; stop at the first that fails."""
    from aionctl.runbooks.find import load, locate

    loaded = load(locate(name, dirs or []))
    if start_from and only:
        raise UsageError(
            "--from and --only cannot be combined", hint="--from resumes a run; --only runs single steps"
        )
    _connection_env(ctx, addr, http_addr, token_file)
    from typer._click.core import ParameterSource

    def given(parameter: str, value: Any) -> Any:
        return value if ctx.get_parameter_source(parameter) is ParameterSource.COMMANDLINE else None

    extra = _resume_extra(dirs, report, given("addr", addr), given("http_addr", http_addr), token_file)
    code = execute(
        ctx,
        loaded,
        name,
        given=_parse_vars(var or []),
        dry_run=dry_run,
        start_from=start_from,
        only=only or [],
        yes=yes,
        output=output,
        report=report,
        extra=extra,
    )
    raise typer.Exit(code)


def _connection_env(
    ctx: typer.Context, addr: str | None, http_addr: str | None, token_file: Path | None
) -> None:
    """The connection flags, passed to every step through the environment the commands read."""
    if addr:
        os.environ["AION_ADDR"] = addr
    if http_addr:
        os.environ["AION_HTTP_ADDR"] = http_addr
    if token_file is not None:
        os.environ["AION_TOKEN_FILE"] = str(token_file.expanduser().absolute())
        os.environ.pop("AION_TOKEN", None)  # the flag wins, as it does for every command
    context = global_options(ctx).context
    if context:
        os.environ["AION_CONTEXT"] = context


def _resume_extra(
    dirs: list[Path] | None,
    report: Path | None,
    addr: str | None,
    http_addr: str | None,
    token_file: Path | None,
) -> list[str]:
    extra: list[str] = []
    for d in dirs or []:
        extra += ["--dir", str(d)]
    if report is not None:
        extra += ["--report", str(report)]
    if addr:
        extra += ["--addr", addr]
    if http_addr:
        extra += ["--http-addr", http_addr]
    if token_file is not None:
        extra += ["--token-file", str(token_file)]
    return extra


def execute(
    ctx: typer.Context,
    loaded: Loaded,
    source: str,
    *,
    given: dict[str, str],
    dry_run: bool,
    start_from: str | None,
    only: list[str],
    yes: bool,
    output: ReportFormat,
    report: Path | None,
    extra: list[str],
) -> int:
    import json

    from aion.ids import ulid
    from aionctl.runbooks import report as reports
    from aionctl.runbooks.executor import Executor, resolve_values
    from aionctl.runbooks.progress import choose

    book = loaded.runbook
    values = resolve_values(book, given)
    report_path = (report or _default_report(book.name)).expanduser().absolute()
    state_path = reports.state_path(report_path)
    previous: dict[str, Any] = {}
    if start_from or only:
        previous, digest = reports.load_state(state_path, book.name)
        if digest is not None and digest != loaded.sha256:
            print(f"note: {loaded.path} changed since the run that {state_path} records", file=sys.stderr)
    run_dir = report_path.with_name(report_path.stem + ".run")
    if not (dry_run or start_from or only) and run_dir.exists():
        shutil.rmtree(run_dir, ignore_errors=True)
    if not dry_run:
        run_dir.mkdir(parents=True, exist_ok=True)
    progress = choose(global_options(ctx).quiet)
    executor = Executor(
        book,
        values,
        progress=progress,
        run_id=ulid(),
        run_dir=str(run_dir),
        yes=yes,
        dry_run=dry_run,
        start_from=start_from,
        only=only,
        previous=previous,
    )
    try:
        outcome = executor.execute()
    finally:
        progress.close()
    resume = None if dry_run else reports.resume_command(outcome, source, given, extra)
    doc = reports.report_doc(outcome, file_sha256=loaded.sha256, resume=resume)
    if not dry_run:
        reports.write_report(report_path, json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
        reports.save_state(state_path, doc)
    match output:
        case ReportFormat.JSON:
            sys.stdout.write(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
        case ReportFormat.JUNIT:
            sys.stdout.write(reports.junit(doc))
        case ReportFormat.TEXT:
            summary = reports.text(doc, report_path=None if dry_run else str(report_path))
            if not global_options(ctx).quiet:
                sys.stdout.write(summary)
            elif outcome.status == "failed":  # --quiet prints nothing but errors: this is one
                sys.stderr.write(summary)
    sys.stdout.flush()
    if outcome.interrupted:
        return 130
    return 1 if outcome.status == "failed" else 0


__all__ = ["app", "execute"]
