"""``aionctl config ...``: the client contexts, kubectl style: list them, show and switch the current one,
create, change and delete them.

The file is ``$AION_CLIENT_CONFIG``, else ``$XDG_CONFIG_HOME/aion/config.yaml``, else
``~/.config/aion/config.yaml`` (aionctl.contexts owns it). Every change rewrites it atomically with mode
0600, so a failed write leaves the old file as it was. Tokens are never printed.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from aionctl import completing, contexts
from aionctl.options import Output, command_app, global_options
from aionctl.output import OutputFormat, document, emit

if TYPE_CHECKING:
    from aionctl.contexts import Context

app = command_app()
app.info.help = "Manage client contexts: where aiond is and how to authenticate."


Name = Annotated[
    str,
    typer.Argument(
        metavar="NAME", help="Context name.", autocompletion=completing.context_names, show_default=False
    ),
]


@app.command("get-contexts")
def get_contexts(ctx: typer.Context, output: Output = OutputFormat.TEXT) -> None:
    """List the contexts; * marks the current one. Tokens are never shown."""
    path = contexts.config_path()
    config = contexts.load(path)
    rows = [_row(c, current=c.name == config.current_context) for c in config.contexts.values()]
    if global_options(ctx).quiet and output is OutputFormat.TEXT:
        return
    if not rows and output is OutputFormat.TEXT:
        _say(
            ctx, f"no contexts in {path}; create one with `aionctl config set-context NAME --addr HOST:PORT`"
        )
        return
    body = {"file": str(path), "currentContext": config.current_context, "contexts": rows}
    emit(document("ContextList", body), output, text=lambda: _table(rows))


@app.command("current-context")
def current_context(ctx: typer.Context, output: Output = OutputFormat.TEXT) -> None:
    """Print the current context's name.

    Exit 6 when no context is current.
    """
    from aion.errors import ConflictError

    path = contexts.config_path()
    name = contexts.load(path).current_context
    if name is None:
        raise ConflictError(
            f"no current context is set in {path}",
            hint="pick one with `aionctl config use-context NAME` (`aionctl config get-contexts` lists them)",
        )
    if not (global_options(ctx).quiet and output is OutputFormat.TEXT):
        body = {"file": str(path), "name": name}
        emit(document("CurrentContext", body), output, text=lambda: f"{name}\n")


@app.command("use-context")
def use_context(ctx: typer.Context, name: Name) -> None:
    """Make a context the current one."""
    path = contexts.config_path()
    config = contexts.load(path, resolve_paths=False)
    config.find(name, source=path)
    config.current_context = name
    contexts.save(path, config)
    _say(ctx, f"switched to context {name!r}")


@app.command("set-context")
def set_context(
    ctx: typer.Context,
    name: Name,
    addr: Annotated[
        str | None,
        typer.Option("--addr", metavar="HOST:PORT", help="aiond's gRPC address.", show_default=False),
    ] = None,
    http_addr: Annotated[
        str | None,
        typer.Option("--http-addr", metavar="HOST:PORT", help="aiond's HTTP address (health, metrics)."),
    ] = None,
    token_file: Annotated[
        str | None,
        typer.Option("--token-file", metavar="FILE", help="File that holds the API token (preferred)."),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            metavar="TOKEN",
            help="API token, stored in the file (a token on the command line also lands in shell history).",
        ),
    ] = None,
    ca: Annotated[
        str | None,
        typer.Option(
            "--ca", metavar="FILE", help="PEM certificate authorities that sign aiond's certificate."
        ),
    ] = None,
    cert: Annotated[
        str | None, typer.Option("--cert", metavar="FILE", help="PEM client certificate (with --key).")
    ] = None,
    key: Annotated[
        str | None, typer.Option("--key", metavar="FILE", help="PEM private key of --cert.")
    ] = None,
    server_name: Annotated[
        str | None,
        typer.Option("--server-name", metavar="NAME", help="Name to check aiond's certificate against."),
    ] = None,
    use: Annotated[bool, typer.Option("--use", help="Also make it the current context.")] = False,
) -> None:
    """Create a context, or change one.

    Only the settings given change; an empty value (--ca "") removes a setting. --token and
    --token-file replace each other. Relative file paths are stored as absolute paths; a file that
    cannot be read yet is stored with a warning.
    """
    from aion.errors import UsageError

    contexts.check_name(name, what="NAME")
    if (cert is None) != (key is None):
        raise UsageError("--cert and --key go together", hint="give both (or neither)")
    if token is not None and token_file is not None:
        raise UsageError("--token and --token-file exclude each other", hint="give one of them")
    changes: dict[str, Any] = {}
    for flag, field, value, check in (
        ("--addr", "addr", addr, contexts.check_addr),
        ("--http-addr", "http_addr", http_addr, contexts.check_addr),
        ("--token", "token", token, contexts.check_token),
        ("--server-name", "server_name", server_name, contexts.check_text),
    ):
        if value is not None:
            if value:
                check(value, what=flag)
            changes[field] = value or None
    for flag, field, value in (
        ("--token-file", "token_file", token_file),
        ("--ca", "ca_file", ca),
        ("--cert", "cert_file", cert),
        ("--key", "key_file", key),
    ):
        if value is not None:
            changes[field] = _path(flag, value) if value else None
    # A new way to authenticate replaces the old one.
    if changes.get("token"):
        changes["token_file"] = None
    if changes.get("token_file"):
        changes["token"] = None
    path = contexts.config_path()
    config = contexts.load(path, resolve_paths=False)
    existed = name in config.contexts
    config.contexts[name] = _updated(config.contexts.get(name), name, changes)
    if use:
        config.current_context = name
    contexts.save(path, config)
    _say(ctx, f"{'changed' if existed else 'created'} context {name!r}" + (" (now current)" if use else ""))


@app.command("delete-context")
def delete_context(ctx: typer.Context, name: Name) -> None:
    """Delete a context.

    If it was the current one, no context is current afterwards.
    """
    path = contexts.config_path()
    config = contexts.load(path, resolve_paths=False)
    config.find(name, source=path)
    del config.contexts[name]
    was_current = config.current_context == name
    if was_current:
        config.current_context = None
    contexts.save(path, config)
    _say(ctx, f"deleted context {name!r}" + ("; no context is current now" if was_current else ""))


def _updated(old: Context | None, name: str, changes: dict[str, Any]) -> Context:
    import dataclasses

    from aion.errors import UsageError

    base = old if old is not None else contexts.Context(name=name)
    new = dataclasses.replace(base, **changes)
    if (new.cert_file is None) != (new.key_file is None):
        raise UsageError(
            "--cert and --key go together", hint="give both (or remove both with --cert '' --key '')"
        )
    return new


def _path(flag: str, value: str) -> str:
    """The path to store: as given, but a relative one made absolute (in the file, a relative path
    would be relative to the file's directory, not to where the command ran). A file that cannot be
    read now is stored anyway, with a warning: it may be created later."""
    contexts.check_text(value, what=flag)
    given = Path(value)
    stored = value if value.startswith("~") or given.is_absolute() else str(given.absolute())
    target = Path(stored).expanduser()
    if not target.is_file() or not os.access(target, os.R_OK):
        print(f"warning: {flag}: {target} is not a readable file (saved anyway)", file=sys.stderr)
    return stored


def _row(c: Context, *, current: bool) -> dict[str, Any]:
    return {
        "name": c.name,
        "current": current,
        "addr": c.addr,
        "httpAddr": c.http_addr,
        "auth": c.auth,
        "tokenFile": c.token_file,
        "tls": {"ca": c.ca_file, "cert": c.cert_file, "key": c.key_file, "serverName": c.server_name}
        if c.uses_tls
        else None,
    }


def _table(rows: list[dict[str, Any]]) -> str:
    lines = [("CURRENT", "NAME", "ADDR", "AUTH", "TLS")]
    lines += [
        ("*" if r["current"] else "", r["name"], r["addr"] or "-", r["auth"], "yes" if r["tls"] else "no")
        for r in rows
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    return "".join(
        "   ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip() + "\n"
        for line in lines
    )


def _say(ctx: typer.Context, message: str) -> None:
    """A message for people: stderr (stdout is for data), nothing with --quiet."""
    if not global_options(ctx).quiet:
        print(message, file=sys.stderr)
