"""The aionctl root command: global options, the lazily loaded command group, and error handling.

Every :class:`aion.errors.Error` is caught here, once, printed as ``error: ...`` with its hint, and
turned into its documented exit code. ``--debug`` (or ``AION_DEBUG=1``) adds the traceback.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Annotated

import typer
import typer.main

from aion import __version__
from aion.errors import Error
from aion.exitcodes import EXIT_CODE_HELP, ExitCode
from aionctl._lazy import LazyGroup
from aionctl.options import ContextName, GlobalOptions
from aionctl.usage import usage_error

PROG = "aionctl"
VERSION_TEXT = f"{PROG} {__version__}"

_EXIT_CODES = "\n".join(f"  {int(code)}  {text}" for code, text in EXIT_CODE_HELP.items())

app = typer.Typer(
    cls=LazyGroup,
    name=PROG,
    help="Operate the aion task-routing platform and its daemon, aiond, from shells, scripts and CI.",
    # \b keeps the exit-code table as written instead of re-wrapping it.
    epilog=f"\b\nExit codes:\n{_EXIT_CODES}",
    # Plain help and errors: no box drawing, no colour in pipes; also keeps start-up fast.
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(VERSION_TEXT)
        raise typer.Exit(0)


@app.callback()
def root(
    ctx: typer.Context,
    *,
    no_color: Annotated[
        bool, typer.Option("--no-color", help="Never colour the output (NO_COLOR works too).")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors.")] = False,
    debug: Annotated[
        bool, typer.Option("--debug", envvar="AION_DEBUG", help="Show the underlying cause of errors.")
    ] = False,
    context: ContextName = None,
    version: Annotated[
        bool,
        typer.Option("--version", is_eager=True, callback=_print_version, help="Print the version and exit."),
    ] = False,
) -> None:
    ctx.obj = GlobalOptions(no_color=no_color, quiet=quiet, debug=debug, context=context or None)


def run(args: Sequence[str]) -> int:
    """Run aionctl with ``args``; returns the exit code (also for usage errors and ``--help``)."""
    from typer._click import exceptions as click

    debug = "--debug" in args or os.environ.get("AION_DEBUG", "").lower() in ("1", "true", "yes")
    command = typer.main.get_command(app)
    if os.environ.get("_AIONCTL_COMPLETE"):  # a TAB: help as written, without loading rich
        from aionctl.completing import plain_help

        plain_help()
    try:
        returned = command.main(args=list(args), prog_name=PROG, standalone_mode=False)
    except click.NoArgsIsHelpError as exc:
        exc.show()  # the help of a group named without a command; a usage error all the same
        return int(ExitCode.USAGE)
    except click.UsageError as exc:
        return _report(usage_error(exc), debug)
    except click.ClickException as exc:  # a file the parser could not open, and the like
        return _report(Error(exc.format_message()), debug)
    except typer.Abort:
        print("error: aborted", file=sys.stderr)
        return 130
    except Error as exc:
        return _report(exc, debug)
    except Exception as exc:  # an aion bug, not a user error: say so, briefly, and how to see more
        if debug:
            import traceback

            traceback.print_exc()
        print(
            f"error: internal error: {type(exc).__name__}: {exc}\n"
            "hint: this is a bug in aionctl; rerun with --debug and report the traceback",
            file=sys.stderr,
        )
        return int(ExitCode.FINDINGS)
    return returned if isinstance(returned, int) else int(ExitCode.OK)


def _report(error: Error, debug: bool) -> int:
    """Print ``error`` as every aion program does, and return its exit code."""
    if debug:
        import traceback

        traceback.print_exc()
    print(f"error: {error.diagnostics()}", file=sys.stderr)
    return int(error.exit_code)
