"""HTTP connections of aiond, bounded: how many are open, and how long each may wait.

Neither aiohttp nor asyncio bounds this. asyncio's accept loop logs a traceback for every accept that
fails for want of descriptors and schedules a retry for each (a client holding every descriptor makes
the log grow by thousands of lines a second); aiohttp has no cap on connections, and its keep-alive
timer alone does not give a silent connection a deadline in every version this project allows. So:

- :class:`ConnectionWatch` gives every connection a deadline for its request's head (from the accept,
  TLS handshake included, ``--http-header-timeout``) and between requests (``--http-idle-timeout``),
  and holds the cap, taking the place of the connection that has waited longest for a request when
  a new one arrives at it;
- :class:`HttpListener` accepts the connections itself, one throttled log line and a short pause when
  no descriptor is free, and serving resumes as soon as one is.

The cap, ``--max-connections``, applies to each listener; by default it is half of what the
open-file limit leaves after :data:`RESERVED_FILES`. (gRPC's connections are bounded by grpc's own C
core: see :func:`aiond.serving.listeners.grpc_server`.)
"""

from __future__ import annotations

import asyncio
import enum
import errno
import functools
import logging
import resource
import socket
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from aiond.logs import Throttle

log = logging.getLogger("aiond.http")

RESERVED_FILES = 64
"""Descriptors kept for what is not a client connection when the cap is derived from the open-file
limit: the state database with its journal files, the event log, the validation worker's pipes, grpc's
and asyncio's own (about 30 in all at start-up), the listeners, and room for connections that are
accepted only to be closed at the cap."""
UNLIMITED_FILES = 1 << 16
"""What an unlimited open-file limit counts as when the cap is derived from it."""
ACCEPT_RETRY_DELAY = 0.1
"""Seconds between attempts to accept while the process has no descriptor free."""


def open_file_limit() -> int:
    """The process's open-file limit (the soft one, the one that makes accept() fail)."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return UNLIMITED_FILES if soft == resource.RLIM_INFINITY else soft


def connection_cap(max_connections: int | None, open_files: int) -> int:
    """The most connections each listener holds: ``--max-connections``, else half of what
    ``open_files`` leaves after :data:`RESERVED_FILES` (HTTP and gRPC share what is left)."""
    if max_connections is not None:
        return max_connections
    return max(1, (open_files - RESERVED_FILES) // 2)


def warn_if_short_of_files(max_connections: int | None, cap: int, open_files: int) -> None:
    needed = 2 * cap + RESERVED_FILES
    if max_connections is not None and needed > open_files:
        log.warning(
            "--max-connections %d on each listener needs about %d open files, but the limit is %d: "
            "past it new connections wait in the kernel's queue until others close; raise the limit "
            "(ulimit -n, or LimitNOFILE= under systemd) or lower --max-connections",
            cap, needed, open_files,
        )  # fmt: skip
    elif max_connections is None and cap < 16:
        log.warning(
            "the open-file limit (%d) leaves room for only %d connections on each listener; raise it "
            "(ulimit -n, or LimitNOFILE= under systemd)",
            open_files, cap,
        )  # fmt: skip


class Stage(enum.Enum):
    """What an HTTP connection is doing, for its deadline."""

    HEAD = "waiting for a request's head"
    REQUEST = "serving a request"
    IDLE = "idle between requests"


class Connection:
    """One accepted HTTP connection, as the watch sees it."""

    __slots__ = ("handler", "lost", "stage", "starting", "timer", "transport")

    def __init__(self) -> None:
        self.stage = Stage.HEAD
        self.timer: asyncio.TimerHandle | None = None
        self.starting: asyncio.Task[None] | None = None
        """Until the connection is made: asyncio setting it up (the TLS handshake, if any)."""
        self.transport: asyncio.Transport | None = None
        self.handler: web.RequestHandler | None = None
        self.lost: asyncio.Future[None] | None = None
        """Done when the connection closes."""


def request_key(name: str, kind: type) -> Any:
    """A key for a request's storage: aiohttp's typed ``RequestKey`` where it has one (3.14 on, which
    warns about plain strings), else the name."""
    maker = getattr(web, "RequestKey", None)
    return maker(name, kind) if maker is not None else name


LOST = request_key("aion.connection_lost", asyncio.Future)
"""The request key of a future done when the request's connection closes (the caller went away), so that
work done only for that caller can stop (with a done callback: no task waits on it)."""


def lost(request: web.Request) -> asyncio.Future[None]:
    """A future done when ``request``'s connection closes (never done when nothing watches it)."""
    future = request.get(LOST)
    return future if isinstance(future, asyncio.Future) else asyncio.get_running_loop().create_future()


class ConnectionWatch:
    """The HTTP listener's connections: a deadline for each, and a cap on how many are open.

    A connection has ``header_timeout`` seconds for a request's line and headers from its accept (the
    TLS handshake included) or from the first byte of its next request, and may be idle between
    requests for ``idle_timeout``; a request in progress has no deadline here. At ``cap`` open
    connections a new one takes the place of the one that has waited longest for a request; when
    every one is serving a request, the new one is closed at once. Nothing is ever queued.

    Why aiond does this itself: aiohttp has one keep-alive timer, which from 3.14 on also runs from
    the accept, so a connection that never sends a whole request gets as long as an idle keep-alive
    one (an hour by default), and before 3.14 (aiond runs on 3.11 and later) it has no limit at all.
    aiohttp has no cap on connections either.
    """

    def __init__(self, *, cap: int, header_timeout: float, idle_timeout: float) -> None:
        self.cap = cap
        self.header_timeout = header_timeout
        self.idle_timeout = idle_timeout
        self._open: set[Connection] = set()
        self._waiting: dict[Connection, None] = {}
        """The open connections with no request in progress, the one waiting longest first."""
        self._by_handler: dict[web.RequestHandler, Connection] = {}
        self._at_cap = Throttle(log, rate=0.2, burst=5)

    def __len__(self) -> int:
        return len(self._open)

    def admit(self) -> Connection | None:
        """A connection just accepted, with its head deadline running; None when it must be closed
        at once."""
        if len(self._open) >= self.cap:
            if not self._waiting:
                self._at_cap.log(
                    logging.WARNING,
                    "HTTP: %d connections open (--max-connections), every one serving a request: "
                    "closed a new one",
                    self.cap,
                )
                return None
            self._at_cap.log(
                logging.WARNING,
                "HTTP: %d connections open (--max-connections): closed the one that had waited "
                "longest for a request, for a new one",
                self.cap,
            )
            self.close(next(iter(self._waiting)))
        connection = Connection()
        self._open.add(connection)
        self._wait(connection, Stage.HEAD, self.header_timeout)
        return connection

    def made(self, connection: Connection, transport: asyncio.Transport, handler: web.RequestHandler) -> None:
        if connection not in self._open:  # closed while asyncio was still making it
            transport.abort()
            return
        connection.transport, connection.handler = transport, handler
        self._by_handler[handler] = connection

    def data_received(self, connection: Connection) -> None:
        if connection.stage is Stage.IDLE:  # the next request begins: its head is due
            self._wait(connection, Stage.HEAD, self.header_timeout)

    def request_started(self, handler: web.RequestHandler) -> None:
        connection = self._by_handler.get(handler)
        if connection is not None:
            connection.stage = Stage.REQUEST
            self._cancel_timer(connection)
            self._waiting.pop(connection, None)

    def request_finished(self, handler: web.RequestHandler) -> None:
        connection = self._by_handler.get(handler)
        if connection is not None:
            self._wait(connection, Stage.IDLE, self.idle_timeout)

    def middleware(self) -> Callable[..., Awaitable[web.StreamResponse]]:
        """The aiohttp middleware that tells the watch when a request is in progress."""

        @web.middleware
        async def track_requests(
            request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
        ) -> web.StreamResponse:
            self.request_started(request.protocol)
            connection = self._by_handler.get(request.protocol)
            if connection is not None:
                if connection.lost is None:
                    connection.lost = asyncio.get_running_loop().create_future()
                request[LOST] = connection.lost
            try:
                return await handler(request)
            finally:
                self.request_finished(request.protocol)

        return track_requests

    def close(self, connection: Connection) -> None:
        """Close ``connection`` now, without waiting on the peer."""
        self.forget(connection)
        if connection.transport is not None:
            # abort(), not close(): a peer past its deadline does not get to hold the descriptor
            # while it reads what is left to send, or answers TLS's close_notify.
            connection.transport.abort()
        elif connection.starting is not None:
            connection.starting.cancel()

    def close_starting(self) -> None:
        """Close the connections that are not made yet (TLS handshakes): the listener stops."""
        for connection in [c for c in self._open if c.transport is None]:
            self.close(connection)

    def forget(self, connection: Connection) -> None:
        """``connection`` is closed: drop it and its deadline."""
        self._open.discard(connection)
        self._waiting.pop(connection, None)
        if connection.handler is not None:
            self._by_handler.pop(connection.handler, None)
        self._cancel_timer(connection)
        if connection.lost is not None and not connection.lost.done():
            connection.lost.set_result(None)

    def _wait(self, connection: Connection, stage: Stage, timeout: float) -> None:
        if connection not in self._open:  # closed already; its connection_lost is on its way
            return
        connection.stage = stage
        self._cancel_timer(connection)
        connection.timer = asyncio.get_running_loop().call_later(timeout, self._expire, connection)
        self._waiting.pop(connection, None)
        self._waiting[connection] = None

    def _expire(self, connection: Connection) -> None:
        connection.timer = None
        log.debug("HTTP: closed a connection %s for too long", connection.stage.value)
        self.close(connection)

    @staticmethod
    def _cancel_timer(connection: Connection) -> None:
        if connection.timer is not None:
            connection.timer.cancel()
            connection.timer = None


class _WatchedProtocol(asyncio.Protocol):
    """aiohttp's protocol for one connection, telling the watch when it is made, when bytes arrive and
    when it is lost."""

    def __init__(self, watch: ConnectionWatch, connection: Connection, handler: web.RequestHandler) -> None:
        self._watch = watch
        self._connection = connection
        self._handler = handler

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._watch.made(self._connection, transport, self._handler)
        self._handler.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self._watch.data_received(self._connection)
        self._handler.data_received(data)

    def eof_received(self) -> None:
        # As with aiohttp alone (its protocol returns None): the transport closes at the peer's EOF.
        self._handler.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._watch.forget(self._connection)
        self._handler.connection_lost(exc)

    def pause_writing(self) -> None:
        self._handler.pause_writing()

    def resume_writing(self) -> None:
        self._handler.resume_writing()


class HttpListener(asyncio.AbstractServer):
    """Accepts connections on the HTTP socket and hands each to aiohttp under the watch.

    Why not ``loop.create_server``: when accept() fails for want of descriptors (EMFILE, ENFILE),
    asyncio logs a traceback for every attempt, up to the backlog at each wake-up, and schedules a
    retry for each, and while the loop is busy those retries multiply: 300 silent connections under
    a 256 open-file limit wrote 58 MB of log in 13 s. Here a failed accept is one throttled line and
    one retry after :data:`ACCEPT_RETRY_DELAY`, until descriptors are free again. And the watch hears
    of a connection at its accept, so the cap and the head deadline cover TLS handshakes too.
    """

    def __init__(
        self,
        sock: socket.socket,
        handlers: Callable[[], web.RequestHandler],
        watch: ConnectionWatch,
        *,
        ssl_context: ssl.SSLContext | None,
        handshake_timeout: float,
    ) -> None:
        self._sock = sock
        self._handlers = handlers
        self._watch = watch
        self._ssl = ssl_context
        self._handshake_timeout = handshake_timeout
        self._loop = asyncio.get_running_loop()
        self._refused = Throttle(log, rate=0.2, burst=3)
        self._accepting: asyncio.Task[None] | None = None

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        return (self._sock,)

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def is_serving(self) -> bool:
        return self._accepting is not None and not self._accepting.done()

    async def start_serving(self) -> None:
        if self._accepting is None:
            self._sock.setblocking(False)
            self._accepting = self._loop.create_task(self._accept_forever())

    async def serve_forever(self) -> None:
        await self.start_serving()
        assert self._accepting is not None
        await self._accepting

    def close(self) -> None:
        self._watch.close_starting()
        accepting = self._accepting
        if accepting is None or accepting.done():
            self._sock.close()
            return
        accepting.cancel()
        # Closed once the accept is cancelled: the loop must not be watching a closed descriptor.
        accepting.add_done_callback(lambda _task: self._sock.close())

    async def wait_closed(self) -> None:
        if self._accepting is not None:
            await asyncio.wait([self._accepting])

    async def _accept_forever(self) -> None:
        while True:
            try:
                sock, _peer = await self._loop.sock_accept(self._sock)
            except OSError as exc:
                self._accept_failed(exc)
                await asyncio.sleep(ACCEPT_RETRY_DELAY)
                continue
            self._admit(sock)
            # While connections queue up, accept returns without waiting: let the loop run the
            # rest of the daemon between two of them.
            await asyncio.sleep(0)

    def _accept_failed(self, exc: OSError) -> None:
        if exc.errno in (errno.EMFILE, errno.ENFILE):
            self._refused.log(
                logging.WARNING,
                "HTTP: cannot accept connections: %s (the open-file limit is %d); retrying until "
                "descriptors are free",
                exc.strerror, open_file_limit(),
            )  # fmt: skip
        else:
            self._refused.log(logging.WARNING, "HTTP: accept failed: %s; retrying", exc.strerror or exc)

    def _admit(self, sock: socket.socket) -> None:
        connection = self._watch.admit()
        if connection is None:
            sock.close()
            return
        starting = self._loop.create_task(self._connect(sock, connection))
        connection.starting = starting
        starting.add_done_callback(functools.partial(self._started, sock, connection))

    async def _connect(self, sock: socket.socket, connection: Connection) -> None:
        def protocol() -> _WatchedProtocol:
            return _WatchedProtocol(self._watch, connection, self._handlers())

        try:
            if self._ssl is None:
                await self._loop.connect_accepted_socket(protocol, sock)
            else:
                await self._loop.connect_accepted_socket(
                    protocol, sock, ssl=self._ssl, ssl_handshake_timeout=self._handshake_timeout
                )
        except OSError as exc:  # a TLS handshake that failed or took too long
            log.debug("HTTP: a connection ended before it was made: %s", exc)

    def _started(self, sock: socket.socket, connection: Connection, task: asyncio.Task[None]) -> None:
        connection.starting = None
        if not task.cancelled() and (error := task.exception()) is not None:
            self._refused.log(
                logging.ERROR, "HTTP: cannot set up a connection: %s: %s", type(error).__name__, error
            )
        if connection.transport is None:  # never made: the socket is still this listener's to close
            self._watch.forget(connection)
            sock.close()


class HttpSite(web.BaseSite):
    """aiohttp's site for aiond's HTTP socket, served by :class:`HttpListener` under ``watch``."""

    __slots__ = ("_sock", "_watch")

    def __init__(
        self,
        runner: web.BaseRunner,
        sock: socket.socket,
        watch: ConnectionWatch,
        *,
        ssl_context: ssl.SSLContext | None,
    ) -> None:
        super().__init__(runner, ssl_context=ssl_context)
        self._sock = sock
        self._watch = watch

    @property
    def name(self) -> str:
        host, port = self._sock.getsockname()[:2]
        return f"{'https' if self._ssl_context else 'http'}://{host}:{port}"

    async def start(self) -> None:
        await super().start()
        handlers = self._runner.server
        assert handlers is not None, "the runner is set up before its site starts"
        listener = HttpListener(
            self._sock,
            handlers,
            self._watch,
            ssl_context=self._ssl_context,
            handshake_timeout=self._watch.header_timeout,
        )
        await listener.start_serving()
        self._server = listener


__all__ = [
    "RESERVED_FILES",
    "ConnectionWatch",
    "HttpListener",
    "HttpSite",
    "connection_cap",
    "open_file_limit",
    "warn_if_short_of_files",
]
