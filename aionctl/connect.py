"""How a daemon-facing command finds aiond and authenticates: its connection options, and the one
function that resolves them into an :class:`~aionctl.client.Endpoint`.

Precedence for every setting, like kubectl: a flag, else its environment variable, else the client
context (``--context``/``AION_CONTEXT``, else the current context of ``aionctl config``), else the
built-in default. The token comes from ``--token-file``, else ``AION_TOKEN``, else
``AION_TOKEN_FILE``, else the context. There is deliberately no ``--token`` flag: a token on a command
line is visible to every user of the host in the process list. An empty ``--addr ""`` (an unset
variable in a script) is a usage error, never the default address.

It also owns the daemon's message cap as a client sees it (``--max-message-bytes``): a request larger
than the cap is refused before it is sent, and the daemon's own refusal of one ("larger than max")
becomes the same input error, with the size and the limit.
"""

from __future__ import annotations

import functools
import inspect
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from aion.errors import InputError, UsageError
from aion.inputs import human_size
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
DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
"""aiond's default --grpc-max-message-bytes."""
MAX_MESSAGE_BYTES_LIMIT = 256 * 1024 * 1024
"""The largest cap aiond can be given."""

MaxMessageBytes = Annotated[
    int,
    typer.Option("--max-message-bytes", envvar="AION_MAX_MESSAGE_BYTES", metavar="BYTES",
                 min=1024, max=MAX_MESSAGE_BYTES_LIMIT,
                 help="Largest request aiond accepts, its --grpc-max-message-bytes (1 KiB to 256 MiB)."),
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
    from aion.inputs import read_bounded
    from aionctl.contexts import MAX_TOKEN_FILE_BYTES

    data = read_bounded(path, MAX_TOKEN_FILE_BYTES, what=origin, hint="give the file that holds the token")
    try:
        token = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise InputError(f"{origin} {path}: cannot read the token: not UTF-8 text") from None
    if not token:
        raise InputError(f"{origin} {path}: the file is empty", hint="write the token into it")
    return token


def _given(value: str | None, flag: str) -> str | None:
    """A connection flag's value; an empty one is a usage error, not "use the default": in a script it
    is usually a variable that was never set, and the default would talk to the wrong daemon."""
    if value is not None and not value.strip():
        raise UsageError(
            f"{flag} is empty", hint=f"give HOST:PORT, or leave {flag} out for the context or the default"
        )
    return value


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

    addr, http_addr = _given(addr, "--addr"), _given(http_addr, "--http-addr")

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


# -- the message cap ------------------------------------------------------------------------------------

_LARGER_THAN_MAX = re.compile(r"larger than max \((\d+) vs\. (\d+)\)")


def check_request_size(request: Any, limit: int, what: str) -> None:
    """Refuse, before sending, a request that the daemon would refuse for its size (exit 3)."""
    size = request.ByteSize()
    if size > limit:
        raise _too_large(what, size, limit)


def oversized(exc: Exception, what: str) -> InputError | None:
    """The input error for a call the daemon refused as larger than its message cap (its limit is
    smaller than ``--max-message-bytes`` said), or None when ``exc`` is something else."""
    import grpc

    from aionctl.client import rpc_status

    if not isinstance(exc, grpc.RpcError):
        return None
    code, detail = rpc_status(exc)
    found = _LARGER_THAN_MAX.search(detail)
    if code is not grpc.StatusCode.RESOURCE_EXHAUSTED or found is None:
        return None
    return _too_large(what, int(found.group(1)), int(found.group(2)))


def _too_large(what: str, size: int, limit: int) -> InputError:
    return InputError(
        f"{what}: the request is {size} bytes, larger than the daemon's message limit of "
        f"{human_size(limit)} ({limit} bytes)",
        hint="send less at once, or raise aiond's --grpc-max-message-bytes and pass the same "
        "--max-message-bytes here",
    )


__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES",
    "MaxMessageBytes",
    "TlsCa",
    "TlsCert",
    "TlsKey",
    "TlsServerName",
    "TokenFile",
    "check_request_size",
    "daemon_command",
    "endpoint",
    "oversized",
]
