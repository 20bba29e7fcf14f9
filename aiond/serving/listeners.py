"""aiond's listeners: binding the gRPC and HTTP addresses (with an error that says precisely why an
address cannot be used), the TLS material of both, and the gRPC server's options.

Connections are bounded on both listeners, so that clients that connect and send nothing cannot
take the daemon's descriptors: on gRPC, grpc's C core enforces the handshake deadline (TLS and the
client's HTTP/2 settings, ``--grpc-handshake-timeout``), the idle limit (``--grpc-idle-timeout``) and
the cap (``grpc.max_allowed_incoming_connections``: a connection over it is closed at accept); on
HTTP, :mod:`aiond.serving.connections` does.

Nothing here knows what is served; :mod:`aiond.serving.server` hands in the servicers and the HTTP
application.
"""

from __future__ import annotations

import errno
import logging
import socket
import ssl
from collections.abc import Sequence
from pathlib import Path

import grpc
from aiohttp import web

from aion.addresses import HostPort
from aion.errors import ConflictError, InputError
from aion.inputs import read_bounded
from aiond.serving.connections import (
    ConnectionWatch,
    HttpSite,
    connection_cap,
    open_file_limit,
    warn_if_short_of_files,
)
from aiond.settings import Settings

log = logging.getLogger("aiond.http")

# Keepalive: ping idle clients every minute so dead peers are noticed, and accept client pings down
# to every 10 s (gRPC's default would answer faster pings with GOAWAY "too_many_pings").
GRPC_KEEPALIVE_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.keepalive_time_ms", 60_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
    ("grpc.http2.max_pings_without_data", 0),
)
PEM_LIMIT = 1 << 20
"""Largest TLS certificate, key or CA bundle file read."""


def _millis(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def grpc_server(settings: Settings, interceptors: Sequence[grpc.aio.ServerInterceptor]) -> grpc.aio.Server:
    """A grpc.aio server with aiond's message caps, keepalive, connection deadlines and connection
    cap, nothing served or bound yet."""
    limit = settings.grpc_max_message_bytes
    return grpc.aio.server(
        interceptors=list(interceptors),
        options=[
            # Never share a port with another process: a second daemon must fail to bind.
            ("grpc.so_reuseport", 0),
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
            *GRPC_KEEPALIVE_OPTIONS,
            # The handshake deadline covers TLS and the wait for the client's HTTP/2 settings, so a
            # connection that sends nothing is closed when it passes (grpc's default: 2 minutes).
            ("grpc.server_handshake_timeout_ms", _millis(settings.grpc_handshake_timeout)),
            # Without a call for this long, the server sends GOAWAY; clients reconnect on their next call.
            ("grpc.max_connection_idle_ms", _millis(settings.grpc_idle_timeout)),
            # Over the cap grpc closes a connection at accept, so gRPC can never take the descriptors
            # HTTP and the state database need.
            ("grpc.max_allowed_incoming_connections",
             connection_cap(settings.max_connections, open_file_limit())),
        ],
    )  # fmt: skip


def bind_grpc(server: grpc.aio.Server, settings: Settings) -> HostPort:
    """Bind the gRPC address (TLS when configured); the port actually bound."""
    listen = settings.grpc_listen
    credentials = grpc_credentials(settings)
    # Probe the address with a plain socket first (port 0 included: binding it still checks the
    # address): it gives the precise reason where grpc only says "failed to bind". grpc's own bind
    # below stays the authority.
    listen_socket(listen, what="gRPC", flag="--grpc-listen").close()
    try:
        if credentials is None:
            port = server.add_insecure_port(str(listen))
        else:
            port = server.add_secure_port(str(listen), credentials)
    except RuntimeError as exc:
        raise InputError(f"cannot listen for gRPC on {listen}: {exc}", hint="check --grpc-listen") from exc
    return HostPort(listen.host, port)


async def start_http(app: web.Application, settings: Settings) -> tuple[web.AppRunner, HostPort]:
    """Serve ``app`` on the HTTP address (TLS when configured); the runner and the port bound.

    ``app`` gets one more middleware, the outermost, which tells the connection watch when a request
    is in progress."""
    open_files = open_file_limit()
    cap = connection_cap(settings.max_connections, open_files)
    warn_if_short_of_files(settings.max_connections, cap, open_files)
    watch = ConnectionWatch(
        cap=cap, header_timeout=settings.http_header_timeout, idle_timeout=settings.http_idle_timeout
    )
    app.middlewares.insert(0, watch.middleware())
    runner = web.AppRunner(
        app,
        handle_signals=False,
        access_log=None,
        shutdown_timeout=settings.shutdown_grace,
        # aiohttp's own keep-alive timer (which from aiohttp 3.14 on also runs from the accept) must
        # never end a connection before the watch's deadlines do.
        keepalive_timeout=max(settings.http_idle_timeout, settings.http_header_timeout),
    )
    await runner.setup()
    sock: socket.socket | None = None
    try:
        sock = listen_socket(settings.http_listen, what="HTTP", flag="--http-listen")
        bound = sock.getsockname()
        site = HttpSite(runner, sock, watch, ssl_context=http_tls(settings))
        await site.start()
    except BaseException:
        if sock is not None:
            sock.close()
        await runner.cleanup()
        raise
    return runner, HostPort(settings.http_listen.host, int(bound[1]))


def listen_socket(listen: HostPort, *, what: str, flag: str) -> socket.socket:
    """A bound, listening TCP socket, or an error that says precisely why the address cannot be used."""
    try:
        infos = socket.getaddrinfo(listen.host, listen.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise InputError(
            f"cannot listen for {what} on {listen}: cannot resolve {listen.host!r} ({exc.strerror})",
            hint=f"use an IP address or a resolvable host name in {flag}",
        ) from exc
    family, _, _, _, sockaddr = infos[0]
    try:
        return socket.create_server(sockaddr[:2], family=family, reuse_port=False)
    except OSError as exc:
        raise _bind_error(listen, what, flag, exc) from exc


def _bind_error(listen: HostPort, what: str, flag: str, exc: OSError) -> Exception:
    if exc.errno == errno.EADDRINUSE:
        return ConflictError(
            f"cannot listen for {what} on {listen}: address already in use",
            hint=f"another aiond or another program holds it; choose a free port with {flag}",
        )
    if exc.errno == errno.EACCES:
        return InputError(
            f"cannot listen for {what} on {listen}: permission denied",
            hint=f"use a port above 1023 with {flag}",
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return InputError(
            f"cannot listen for {what} on {listen}: no such address on this host",
            hint=f"use an address of one of this host's interfaces in {flag}, or 0.0.0.0",
        )
    return InputError(f"cannot listen for {what} on {listen}: {exc.strerror}", hint=f"check {flag}")


# -- TLS ------------------------------------------------------------------------------------------------


def _pem(path: Path, what: str) -> bytes:
    return read_bounded(path, PEM_LIMIT, what=f"the {what}", hint="check the --tls-* flags")


def http_tls(settings: Settings) -> ssl.SSLContext | None:
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(settings.tls_cert, settings.tls_key)
        if settings.tls_client_ca is not None:
            # Optional on HTTP: probes carry no certificate; a presented one must verify and then
            # names the principal, and tokens authorise as on gRPC.
            context.load_verify_locations(cafile=str(settings.tls_client_ca))
            context.verify_mode = ssl.CERT_OPTIONAL
    except (OSError, ssl.SSLError) as exc:
        raise InputError(
            f"cannot use the TLS files: {exc}", hint="check --tls-cert, --tls-key and --tls-client-ca"
        ) from exc
    return context


def grpc_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    cert = _pem(settings.tls_cert, "TLS certificate")
    key = _pem(settings.tls_key, "TLS key")
    ca = _pem(settings.tls_client_ca, "client CA") if settings.tls_client_ca else None
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=ca, require_client_auth=ca is not None
    )


__all__ = [
    "GRPC_KEEPALIVE_OPTIONS",
    "bind_grpc",
    "grpc_credentials",
    "grpc_server",
    "http_tls",
    "listen_socket",
    "start_http",
]
