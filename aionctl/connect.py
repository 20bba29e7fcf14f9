"""How a daemon-facing command finds aiond and authenticates: its connection options, and the one
function that resolves them into an :class:`~aionctl.client.Endpoint`.

Precedence for every setting, like kubectl: a flag, else its environment variable, else the client
context (``--context``/``AION_CONTEXT``, else the current context of ``aionctl config``), else the
built-in default. The token comes from ``--token-file``, else ``AION_TOKEN``, else
``AION_TOKEN_FILE``, else the context. There is deliberately no ``--token`` flag: a token on a command
line is visible to every user of the host in the process list.
"""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from aion.errors import InputError, UsageError
from aionctl.client import Endpoint, Tls
from aionctl.options import Address, Timeout, global_options

TokenFile = Annotated[
    Path | None,
    typer.Option("--token-file", metavar="FILE", show_default=False,
                 help="File holding the API token [env AION_TOKEN (the token itself) or AION_TOKEN_FILE]."),
]  # fmt: skip
TlsCa = Annotated[
    str | None,
    typer.Option("--tls-ca", envvar="AION_TLS_CA", metavar="FILE", show_default=False,
                 help="PEM CA bundle that signs aiond's certificate; connects with TLS."),
]  # fmt: skip
TlsCert = Annotated[
    str | None,
    typer.Option("--tls-cert", envvar="AION_TLS_CERT", metavar="FILE", show_default=False,
                 help="PEM client certificate, for mTLS (with --tls-key)."),
]  # fmt: skip
TlsKey = Annotated[
    str | None,
    typer.Option("--tls-key", envvar="AION_TLS_KEY", metavar="FILE", show_default=False,
                 help="PEM private key of --tls-cert."),
]  # fmt: skip
TlsServerName = Annotated[
    str | None,
    typer.Option("--tls-server-name", envvar="AION_TLS_SERVER_NAME", metavar="NAME", show_default=False,
                 help="Name to check aiond's certificate against, when it differs from the address."),
]  # fmt: skip


_TOKEN_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/=")


def _checked(token: str, origin: str) -> str:
    """The token, if it can travel in a header; never echoes it."""
    if not token or not set(token) <= _TOKEN_CHARS or len(token) > 4096:
        raise UsageError(
            f"the token from {origin} is malformed: it must be one line of letters, digits and -._~+/=",
            hint="aiond tokens look like aion_<id>_<secret>; check the file or variable holds only that",
        )
    return token


def _read_token_file(path: Path, origin: str) -> str:
    try:
        token = path.expanduser().read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise InputError(f"{origin} {path}: cannot read the token: {reason}", hint="check the path") from exc
    if not token:
        raise InputError(f"{origin} {path}: the file is empty", hint="write the token into it")
    return token


def endpoint(
    ctx: typer.Context,
    *,
    addr: str | None,
    http_addr: str | None = None,
    timeout: float,
    token_file: Path | None = None,
    tls_ca: str | None = None,
    tls_cert: str | None = None,
    tls_key: str | None = None,
    tls_server_name: str | None = None,
) -> Endpoint:
    """The endpoint for this invocation, every setting resolved by precedence."""
    from aionctl.contexts import config_path, select

    context = select(global_options(ctx).context, config_path())
    token: str | None
    if token_file is not None:
        token = _checked(_read_token_file(token_file, "--token-file"), f"--token-file {token_file}")
    elif os.environ.get("AION_TOKEN", "").strip():
        token = _checked(os.environ["AION_TOKEN"].strip(), "AION_TOKEN")
    elif os.environ.get("AION_TOKEN_FILE", "").strip():
        path = Path(os.environ["AION_TOKEN_FILE"].strip())
        token = _checked(_read_token_file(path, "AION_TOKEN_FILE"), f"AION_TOKEN_FILE {path}")
    elif context is not None and (text := context.read_token()) is not None:
        token = _checked(text, f"context {context.name!r}")
    else:
        token = None
    ca = tls_ca or (context.ca_file if context else None)
    cert = tls_cert or (context.cert_file if context else None)
    key = tls_key or (context.key_file if context else None)
    server_name = tls_server_name or (context.server_name if context else None)
    tls = Tls(ca, cert, key, server_name) if any((ca, cert, key, server_name)) else None
    return Endpoint.resolve(
        addr or (context.addr if context else None),
        http_addr or (context.http_addr if context else None),
        timeout,
        token=token,
        tls=tls,
    )


_CONNECTION_OPTIONS = ("addr", "token_file", "tls_ca", "tls_cert", "tls_key", "tls_server_name", "timeout")


def daemon_command(
    app: typer.Typer, name: str | None = None, *, timeout: float = 5.0
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Register a command that talks to aiond. The command takes ``ctx`` and ``target: Endpoint``; this
    adds the connection options every such command shares (``--addr``, ``--timeout`` with the given
    default, ``--token-file`` and the ``--tls-*`` files) and resolves them into ``target`` by
    precedence, so each command states only its own options."""

    def register(command: Callable[..., None]) -> Callable[..., None]:
        signature = inspect.signature(command, eval_str=True)
        own = [p for p in signature.parameters.values() if p.name != "target"]
        keyword = inspect.Parameter.KEYWORD_ONLY
        added = [
            inspect.Parameter("addr", keyword, default=None, annotation=Address),
            inspect.Parameter("timeout", keyword, default=timeout, annotation=Timeout),
            inspect.Parameter("token_file", keyword, default=None, annotation=TokenFile),
            inspect.Parameter("tls_ca", keyword, default=None, annotation=TlsCa),
            inspect.Parameter("tls_cert", keyword, default=None, annotation=TlsCert),
            inspect.Parameter("tls_key", keyword, default=None, annotation=TlsKey),
            inspect.Parameter("tls_server_name", keyword, default=None, annotation=TlsServerName),
        ]

        @functools.wraps(command)
        def run(**kwargs: Any) -> None:
            options = {key: kwargs.pop(key) for key in _CONNECTION_OPTIONS}
            command(target=endpoint(kwargs["ctx"], **options), **kwargs)

        run.__signature__ = signature.replace(parameters=[*own, *added])  # type: ignore[attr-defined]
        app.command(name)(run)
        return command

    return register


__all__ = ["TlsCa", "TlsCert", "TlsKey", "TlsServerName", "TokenFile", "daemon_command", "endpoint"]
