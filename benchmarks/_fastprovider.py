"""A minimal OpenAI-compatible chat endpoint for the throughput benchmark, written straight on
asyncio's protocols rather than a web framework.

It answers every ``POST .../chat/completions`` with the same small, valid completion (keep-alive,
Content-Length), so that the provider is never the bottleneck of a measurement meant to show the
gateway's overhead; the test rig's stand-in provider, which parses every request and scripts failures,
tops out around 300 answers a second on this machine. Hand-written because that is the whole point:
a framework's per-request work is what this must not add.

A request with ``"stream": true`` is answered with server-sent events in a chunked body, as OpenAI
streams: at once the role chunk and the first content chunk, then, :data:`STREAM_GAP` seconds later,
the second content chunk, the finish chunk, the usage chunk and ``data: [DONE]``. So the time to the
first token differs from the time to the whole answer, and a gateway measured on its first token
must pass that chunk on before the rest exists.

    python benchmarks/_fastprovider.py    # prints its base URL, serves until SIGTERM

With ``--forward URL`` it is instead the HTTP floor for aiond's OpenAI endpoint: a bare aiohttp server
that forwards each chat completion to URL with an aiohttp client session, as aiond does, and passes
the answer back (a stream chunk by chunk). No auth, routing, admission, events or metrics: what any
Python gateway written on aiohttp pays on this machine.

    python benchmarks/_fastprovider.py --forward http://127.0.0.1:PORT/v1
"""

from __future__ import annotations

import asyncio
import json
import re
import signal

BODY = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 0,
        "model": "qwen2.5",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "echo:ok"}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 24, "completion_tokens": 2, "total_tokens": 26},
    }
).encode()
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
    + str(len(BODY)).encode()
    + b"\r\nConnection: keep-alive\r\n\r\n"
    + BODY
)

STREAM_GAP = 0.002
"""Seconds between a stream's first content chunk and the rest of it."""
_STREAM = re.compile(rb'"stream": ?true')


def _event(delta: dict[str, object], finish: str | None = None, usage: dict[str, int] | None = None) -> bytes:
    doc: dict[str, object] = {
        "id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 0, "model": "qwen2.5",
        "choices": [] if usage else [{"index": 0, "delta": delta, "finish_reason": finish}],
    }  # fmt: skip
    if usage:
        doc["usage"] = usage
    data = b"data: " + json.dumps(doc, separators=(",", ":")).encode() + b"\n\n"
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n"
    b"Connection: keep-alive\r\n\r\n"
    + _event({"role": "assistant", "content": ""})
    + _event({"content": "echo"})
)
STREAM_TAIL = (
    _event({"content": ":ok"})
    + _event({}, "stop")
    + _event({}, usage={"prompt_tokens": 24, "completion_tokens": 2, "total_tokens": 26})
    + b"e\r\ndata: [DONE]\n\n\r\n0\r\n\r\n"
)


class Responder(asyncio.Protocol):
    def __init__(self) -> None:
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.held: list[bytes] | None = None  # answers behind a stream's pending tail, in order

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            head_end = self.buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = self.buffer[:head_end].lower()
            length = 0
            marker = head.find(b"content-length:")
            if marker >= 0:
                line_end = head.find(b"\r\n", marker)
                length = int(head[marker + 15 : line_end if line_end >= 0 else None].strip())
            end = head_end + 4 + length
            if len(self.buffer) < end:
                return
            streamed = _STREAM.search(self.buffer, head_end, end) is not None
            self.buffer = self.buffer[end:]
            self.answer(streamed)

    def answer(self, streamed: bool) -> None:
        assert self.transport is not None
        if self.held is not None:  # a stream's tail is still due: this answer goes after it
            self.held.append(STREAM_HEAD if streamed else RESPONSE)
            return
        if not streamed:
            self.transport.write(RESPONSE)
            return
        self.transport.write(STREAM_HEAD)
        self.held = []
        asyncio.get_running_loop().call_later(STREAM_GAP, self.tail)

    def tail(self) -> None:
        assert self.transport is not None
        assert self.held is not None
        if self.transport.is_closing():
            return
        self.transport.write(STREAM_TAIL)
        held, self.held = self.held, None
        for answer in held:  # rare: only a client that pipelines requests
            self.answer(answer is STREAM_HEAD)


async def main() -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Responder, "127.0.0.1", 0, backlog=4096)
    port = server.sockets[0].getsockname()[1]
    print(f"http://127.0.0.1:{port}/v1", flush=True)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    server.close()


async def forward(upstream: str) -> None:
    import aiohttp
    from aiohttp import web

    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=512), trust_env=False)
    target = f"{upstream.rstrip('/')}/chat/completions"

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        async with session.post(target, data=body, headers={"Content-Type": "application/json"}) as answer:
            if answer.content_type != "text/event-stream":
                return web.Response(
                    body=await answer.read(), status=answer.status, content_type="application/json"
                )
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            async for chunk in answer.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=4096)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    print(f"http://127.0.0.1:{port}/v1", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await runner.cleanup()
    await session.close()


if __name__ == "__main__":
    import sys

    asyncio.run(forward(sys.argv[2]) if sys.argv[1:2] == ["--forward"] else main())
