"""A load generator, run as its own process by ``benchmarks/tasks.py``: it sends chat tasks to one
target at a fixed rate (open loop) or from a fixed number of workers (closed loop), and prints the
latencies as JSON.

Targets:

- ``aiond ADDR TOKEN``: TaskService.SubmitTask with ``wait`` over gRPC (intent summarize, route local);
- ``http URL [KEY]``: an OpenAI-compatible ``POST {URL}/chat/completions``, the same chat aiond sends
  (the stand-in provider directly, or a gateway such as LiteLLM's proxy). With ``--intent NAME`` the
  target is aiond's own OpenAI endpoint: the model is the intent, the chat is only the user's message
  (aiond adds the intent's system prompt, so the provider receives the same chat as direct), and
  ``x-aion-route: local`` asks for the route the gRPC target asks for.

Options (see also ``--from-sent`` below): ``--stream`` asks for a streamed answer (``stream: true``) and measures the time to the first
content chunk instead of the whole answer; ``--requests N`` ends a closed loop after N answers
instead of after SECONDS.

The HTTP client is written straight on asyncio's protocols (keep-alive connections, Content-Length
and chunked bodies, a byte search for the first content of a stream), not on a client library: the
generator shares the machine's cores with the gateways it measures, and must cost far less per
request than they do. It prints its own CPU seconds (``cpu_s``) so that the report can show it did.
Open loop: request i is due at ``start + i / rate`` and sent then whether or not earlier ones have
answered, so a slow target is not hidden by sending less (no coordinated omission), and its latency is
measured from that due time. With ``--from-sent`` it is measured from the moment the request is
written to the socket instead: asyncio's timers wake up to a millisecond late (epoll's resolution),
which otherwise adds up to a millisecond of the generator's own to every figure. How late the sends
were is printed either way (``lag_p99_ms``): a large lag means the generator, not the target, fell
behind.

    python benchmarks/_loadgen.py open RATE SECONDS aiond 127.0.0.1:8470 TOKEN
    python benchmarks/_loadgen.py closed WORKERS SECONDS http http://127.0.0.1:9000/v1
    python benchmarks/_loadgen.py open 500 10 http http://127.0.0.1:8080/v1 TOKEN --intent summarize --stream
"""

from __future__ import annotations

import asyncio
import collections
import json
import re
import sys
import time
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

TEXT = "Summarise the following note for the operator console: the nightly batch finished."
SYSTEM = "Summarise a document for the operator console"
MODEL = "qwen2.5"
MAX_CONNECTIONS = 1000

Call = Callable[[], Awaitable[tuple[float, float] | None]]
"""One request: the loop times it was sent and of the event measured (the whole answer, or a
stream's first content), or None when it failed."""

_CONTENT = re.compile(rb'"content": ?"[^"]')
_HEAD, _LENGTH, _CHUNKED = 0, 1, 2


async def aiond_caller(addr: str, token: str) -> tuple[Call, Callable[[], Awaitable[None]]]:
    import grpc

    from aion.api.v1 import common_pb2, tasks_pb2, tasks_pb2_grpc

    channel = grpc.aio.insecure_channel(addr, options=[("grpc.enable_http_proxy", 0)])
    stub = tasks_pb2_grpc.TaskServiceStub(channel)
    metadata = (("authorization", f"Bearer {token}"),)
    request = tasks_pb2.SubmitTaskRequest(
        intent="summarize",
        input=tasks_pb2.TaskInput(text=TEXT),
        hints=tasks_pb2.RoutingHints(route_override=common_pb2.ROUTE_LOCAL),
        wait=True,
    )
    loop = asyncio.get_running_loop()

    async def call() -> tuple[float, float] | None:
        sent = loop.time()
        try:
            reply = await stub.SubmitTask(request, timeout=30, metadata=metadata)
        except grpc.aio.AioRpcError:
            return None
        return (sent, loop.time()) if reply.task.status == tasks_pb2.TASK_STATUS_OK else None

    return call, channel.close


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection, one request at a time."""

    def __init__(self, stream: bool) -> None:
        self.stream = stream
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.open = True
        self.done: asyncio.Future[float | None] | None = None
        self.state = _HEAD
        self.status = 0
        self.length = 0
        self.scanned = 0
        self.first: float | None = None
        self.keep = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        if self.done is not None and not self.done.done():
            self.done.set_result(None)

    def send(self, request: bytes, done: asyncio.Future[float | None]) -> None:
        assert self.transport is not None
        self.done, self.state, self.first, self.scanned = done, _HEAD, None, 0
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.state == _HEAD and not self._head():
            return
        buffer = self.buffer
        if self.stream and self.first is None:
            if _CONTENT.search(buffer, max(0, self.scanned - 16)):
                self.first = asyncio.get_running_loop().time()
            self.scanned = len(buffer)
        if self.state == _LENGTH:
            if len(buffer) >= self.length:
                del buffer[: self.length]
                self._complete()
            return
        end = self._chunked_end()
        if end is not None:
            del buffer[:end]
            self._complete()

    def _head(self) -> bool:
        """Read the response's head once it is in; whether the body may follow."""
        buffer = self.buffer
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            return False
        head = bytes(buffer[:end]).lower()
        del buffer[: end + 4]
        self.status = int(head[9:12])
        self.keep = b"connection: close" not in head
        if b"transfer-encoding: chunked" in head:
            self.state = _CHUNKED
            return True
        marker = head.find(b"content-length:")
        if marker < 0:
            self._finish(None, close=True)  # read-until-close bodies are not expected here
            return False
        line_end = head.find(b"\r\n", marker)
        self.length = int(head[marker + 15 : line_end if line_end >= 0 else None])
        self.state = _LENGTH
        return True

    def _chunked_end(self) -> int | None:
        """Where a chunked body ends, once all of it is in."""
        buffer, position = self.buffer, 0
        while True:
            line_end = buffer.find(b"\r\n", position)
            if line_end < 0:
                return None
            size = int(bytes(buffer[position:line_end]).split(b";")[0], 16)
            if size == 0:
                return line_end + 4 if len(buffer) >= line_end + 4 else None
            if len(buffer) < line_end + 2 + size + 2:
                return None
            position = line_end + 2 + size + 2

    def _complete(self) -> None:
        ok = self.status == 200 and (not self.stream or self.first is not None)
        when = (self.first if self.stream else asyncio.get_running_loop().time()) if ok else None
        self._finish(when, close=not self.keep)

    def _finish(self, when: float | None, *, close: bool) -> None:
        self.state = _HEAD
        self.scanned = 0
        if close and self.transport is not None:
            self.open = False
            self.transport.close()
        if self.done is not None and not self.done.done():
            self.done.set_result(when)


class _Pool:
    """Keep-alive connections to one server, at most MAX_CONNECTIONS of them; callers beyond wait."""

    def __init__(self, host: str, port: int, stream: bool) -> None:
        self.host, self.port, self.stream = host, port, stream
        self.idle: list[_Connection] = []
        self.waiting: collections.deque[asyncio.Future[None]] = collections.deque()
        self.count = 0

    def _reuse(self) -> _Connection | None:
        while self.idle:
            conn = self.idle.pop()
            if conn.open:
                return conn
            self.count -= 1
        return None

    async def connection(self) -> tuple[_Connection, bool]:
        """A connection, and whether the caller had to wait for one to come free."""
        loop = asyncio.get_running_loop()
        conn = self._reuse()
        waited = False
        while conn is None and self.count >= MAX_CONNECTIONS:
            waited = True
            turn: asyncio.Future[None] = loop.create_future()
            self.waiting.append(turn)
            await turn
            conn = self._reuse()
        if conn is not None:
            return conn, waited
        self.count += 1
        try:
            _, made = await loop.create_connection(lambda: _Connection(self.stream), self.host, self.port)
        except OSError:
            self.count -= 1
            raise
        return made, waited

    def release(self, conn: _Connection) -> None:
        if conn.open:
            self.idle.append(conn)
        else:
            self.count -= 1
        while self.waiting:
            turn = self.waiting.popleft()
            if not turn.done():
                turn.set_result(None)
                break

    async def close(self) -> None:
        for conn in self.idle:
            if conn.transport is not None:
                conn.transport.close()


async def http_caller(
    url: str, key: str | None, *, intent: str | None, stream: bool
) -> tuple[Call, Callable[[], Awaitable[None]]]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    user = {"role": "user", "content": TEXT}
    body: dict[str, object] = {
        "model": intent or MODEL,
        "messages": [user] if intent else [{"role": "system", "content": SYSTEM}, user],
        "max_tokens": 1024,
    }
    if stream:
        body["stream"] = True
    payload = json.dumps(body).encode()
    head = [
        f"POST {parts.path.rstrip('/')}/chat/completions HTTP/1.1",
        f"Host: {host}:{port}",
        "Content-Type: application/json",
        f"Content-Length: {len(payload)}",
    ]
    if key:
        head.append(f"Authorization: Bearer {key}")
    if intent:
        head.append("x-aion-route: local")
    request = ("\r\n".join(head) + "\r\n\r\n").encode() + payload
    loop = asyncio.get_running_loop()
    pool = _Pool(host, port, stream)

    async def call() -> tuple[float, float] | None:
        asked = loop.time()
        try:
            conn, waited = await pool.connection()
        except OSError:
            return None
        done: asyncio.Future[float | None] = loop.create_future()
        sent = asked if waited else loop.time()  # a wait for a free connection is the target's to pay
        conn.send(request, done)
        try:
            when = await asyncio.wait_for(done, 30)
            return None if when is None else (sent, when)
        except TimeoutError:
            conn.open = False
            if conn.transport is not None:
                conn.transport.abort()
            return None
        finally:
            pool.release(conn)

    return call, pool.close


async def open_loop(
    call: Callable[[], Awaitable[tuple[float, float] | bool | None]],
    rate: float,
    seconds: float,
    *,
    from_sent: bool = False,
) -> dict[str, object]:
    """Latencies from each request's due time, or with ``from_sent`` from the moment it was sent. Also
    takes a ``call`` that answers only whether it succeeded (as benchmarks/modules.py's does): then
    from the due time."""
    latencies: list[float] = []
    lags: list[float] = []
    failures = 0
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.2
    count = int(rate * seconds)

    async def one(i: int) -> None:
        nonlocal failures
        due = start + i / rate
        await asyncio.sleep(max(0.0, due - loop.time()))
        times = await call()
        if times is True:
            latencies.append((loop.time() - due) * 1000)
        elif isinstance(times, tuple):
            latencies.append((times[1] - (times[0] if from_sent else due)) * 1000)
            lags.append((times[0] - due) * 1000)
        else:
            failures += 1

    cpu = time.process_time()
    await asyncio.gather(*(one(i) for i in range(count)))
    lags.sort()
    return {
        "latencies_ms": latencies, "failures": failures, "sent": count, "cpu_s": time.process_time() - cpu,
        "lag_p99_ms": lags[int(0.99 * (len(lags) - 1))] if lags else 0.0,
    }  # fmt: skip


async def closed_loop(call: Call, workers: int, seconds: float, requests: int | None) -> dict[str, object]:
    done = failures = 0
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds

    async def worker() -> None:
        nonlocal done, failures
        while (loop.time() < end) if requests is None else (done + failures < requests):
            if await call() is not None:
                done += 1
            else:
                failures += 1

    cpu = time.process_time()
    started = loop.time()
    await asyncio.gather(*(worker() for _ in range(workers)))
    return {
        "completed": done, "failures": failures, "seconds": loop.time() - started,
        "cpu_s": time.process_time() - cpu,
    }  # fmt: skip


async def main(argv: list[str]) -> int:
    stream, from_sent = "--stream" in argv, "--from-sent" in argv
    argv = [a for a in argv if a not in ("--stream", "--from-sent")]
    intent = requests = None
    if "--intent" in argv:
        at = argv.index("--intent")
        intent = argv[at + 1]
        del argv[at : at + 2]
    if "--requests" in argv:
        at = argv.index("--requests")
        requests = int(argv[at + 1])
        del argv[at : at + 2]
    mode, amount, seconds, kind, *target = argv
    if kind == "aiond":
        call, close = await aiond_caller(target[0], target[1])
    else:
        key = target[1] if len(target) > 1 else None
        call, close = await http_caller(target[0], key, intent=intent, stream=stream)
    for _ in range(20):  # warm connections up
        await call()
    if mode == "open":
        result = await open_loop(call, float(amount), float(seconds), from_sent=from_sent)
    else:
        result = await closed_loop(call, int(amount), float(seconds), requests)
    await close()
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent.parent))
    raise SystemExit(asyncio.run(main(sys.argv[1:])))
