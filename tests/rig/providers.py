"""A stand-in model provider: a real HTTP server on 127.0.0.1 that speaks both provider wire formats.

- OpenAI chat completions: ``POST /v1/chat/completions`` (``StandIn.url`` is the base URL,
  ``http://127.0.0.1:PORT/v1``), JSON or server-sent events ending with ``data: [DONE]``; the key in
  ``Authorization: Bearer`` (or Azure's ``api-key`` header).
- Anthropic Messages: ``POST /v1/messages`` (``StandIn.anthropic_url`` is ``http://127.0.0.1:PORT``),
  with ``x-api-key`` and ``anthropic-version``; streamed as message_start ... message_stop events.

Answers are deterministic so tests can assert text, usage and cost exactly: the reply is ``"echo:"``
plus the last user message (its first :attr:`StandIn.reply_chars` characters), input tokens are
``ceil(input characters / 4)`` over every message's text (the system text included) and output tokens
``ceil(len(reply) / 4)``. A reply longer than ``max_tokens`` tokens is cut to ``4 * max_tokens``
characters and ends with finish_reason "length" / stop_reason "max_tokens", as real providers do.

Failures are scripted: :meth:`StandIn.script` queues behaviours for the next requests (optionally for
one model), :meth:`StandIn.always` sets a standing one. The behaviours: :func:`ok`, :func:`status`,
:func:`rate_limited`, :func:`hang`, :func:`slow`, :func:`stall`, :func:`cut_stream`, :func:`reset`,
:func:`garbage`, :func:`huge`, :func:`stream_error` and :func:`echo_key` (an error that echoes the key
it was sent, split, escaped or encoded: :func:`key_leaks` finds it in any text). Every request is
recorded, keys redacted, in :attr:`StandIn.requests`. The server runs on its own event loop in a
background thread, so a hanging answer never blocks the others, and :meth:`StandIn.stop` releases
every hanging request.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import dataclasses
import email.utils
import itertools
import json
import math
import socket
import struct
import threading
import time
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, Literal

from aiohttp import web

from aion.config.model import ApiStyle, Locality, Provider
from tests.rig.procs import free_port

Wire = Literal["openai", "anthropic"]
EchoForm = Literal["verbatim", "nul", "spaced", "zero_width", "base64", "base64url", "hex", "percent"]
ECHO_FORMS: tuple[EchoForm, ...] = (
    "verbatim", "nul", "spaced", "zero_width", "base64", "base64url", "hex", "percent"
)  # fmt: skip
REDACTED = "<redacted>"
SECRET_HEADERS = frozenset({"authorization", "x-api-key", "api-key"})
START_TIMEOUT = 10.0


@dataclasses.dataclass(frozen=True, slots=True)
class Behaviour:
    """What the stand-in does with one request. Build these with the functions below."""

    kind: str
    status: int = 200
    retry_after: str | None = None
    seconds: float = 0.0
    after_chunks: int = 0
    graceful: bool = False
    error_type: str = ""
    echo: EchoForm = "verbatim"


def ok() -> Behaviour:
    """Answer normally."""
    return Behaviour("ok")


def status(code: int, *, retry_after: float | str | None = None) -> Behaviour:
    """Answer ``code`` with an error body in the wire's own shape (and a Retry-After when given)."""
    return Behaviour("status", status=code, retry_after=_retry_after(retry_after, http_date=False))


def rate_limited(retry_after: float | str | None = 1.5, *, http_date: bool = False) -> Behaviour:
    """429 with ``Retry-After``: seconds (as given, fractions kept), an HTTP-date that many seconds
    from now (``http_date=True``; whole seconds, as the format has), a raw header text (a ``str``), or
    no header at all (None)."""
    return Behaviour("status", status=429, retry_after=_retry_after(retry_after, http_date=http_date))


def hang() -> Behaviour:
    """Never answer: the request waits until the client gives up or the stand-in stops."""
    return Behaviour("hang")


def slow(seconds: float) -> Behaviour:
    """Answer normally after ``seconds``."""
    return Behaviour("slow", seconds=seconds)


def trickle(seconds: float) -> Behaviour:
    """Streaming: answer in full, ``seconds`` between one event and the next (a model that writes
    slowly). Not streaming: like :func:`ok`."""
    return Behaviour("trickle", seconds=seconds)


def cut_stream(after_chunks: int = 1, *, graceful: bool = False) -> Behaviour:
    """Streaming: send ``after_chunks`` events, then drop the connection mid-body (``graceful``: end
    the HTTP body properly instead, just without ``[DONE]`` / ``message_stop``). Not streaming: send
    the headers (with the full Content-Length) and half of the body, then drop the connection."""
    return Behaviour("cut", after_chunks=after_chunks, graceful=graceful)


def stall(after_chunks: int = 1) -> Behaviour:
    """Start answering, then go silent: streaming, after ``after_chunks`` events; not streaming, after
    the headers and half of the body. The connection stays open until the client gives up."""
    return Behaviour("stall", after_chunks=after_chunks)


def huge(size: int = 8 * 1024 * 1024) -> Behaviour:
    """200 with an answer of about ``size`` bytes, sent chunked (no Content-Length, so only counting
    the bytes can catch it): a JSON document padded with one long string, or, streaming, events with
    long text deltas."""
    return Behaviour("huge", after_chunks=size)


def reset() -> Behaviour:
    """Reset the TCP connection (RST) without answering."""
    return Behaviour("reset")


def garbage() -> Behaviour:
    """200 with a body that is not valid JSON (streaming: an event whose data is not JSON)."""
    return Behaviour("garbage")


def stream_error(after_chunks: int = 1, *, error_type: str = "overloaded_error") -> Behaviour:
    """Streaming: send ``after_chunks`` events, then an error event in the wire's shape (Anthropic's
    ``event: error``; OpenAI's ``data: {"error": ...}``). Not streaming: like ``status(529)``."""
    return Behaviour("stream_error", after_chunks=after_chunks, error_type=error_type)


def echo_key(form: EchoForm, *, code: int = 401, mid_stream: bool = False) -> Behaviour:
    """Answer ``code`` with an error in the wire's own shape whose message echoes the key the request
    carried, written in ``form`` (see :func:`echoed`), as a provider or a proxy in front of one may.
    ``mid_stream``: when the request streams, answer 200 and send the echo as an error event after
    the first event instead (Anthropic's ``event: error``; OpenAI's ``data: {"error": ...}``)."""
    kind = "echo_stream" if mid_stream else "echo_key"
    return Behaviour(kind, status=code, after_chunks=1, echo=form)


def echoed(key: str, form: EchoForm) -> str:
    """``key`` as an echo writes it: as it is, split by NULs, by spaces or by zero-width spaces,
    base64 or base64url (padded), hex digits, or every byte percent-encoded."""
    raw = key.encode()
    if form == "verbatim":
        return key
    if form == "nul":
        return "\0".join(key)
    if form == "spaced":
        return " ".join(key)
    if form == "zero_width":
        return "\u200b".join(key)
    if form == "base64":
        return base64.b64encode(raw).decode()
    if form == "base64url":
        return base64.urlsafe_b64encode(raw).decode()
    if form == "hex":
        return raw.hex()
    return "".join(f"%{b:02X}" for b in raw)


def echo_message(key: str, form: EchoForm) -> str:
    """The error message :func:`echo_key` sends, the way OpenAI words a refused key."""
    return (
        f"Incorrect API key provided: {echoed(key, form)}. You can find your API key at "
        "https://platform.openai.com/account/api-keys."
    )


def key_leaks(text: str, key: str) -> list[str]:
    """Which forms of ``key`` can be read in ``text``, whatever stands between its characters: empty
    when none. Checks the key itself (any case), its letters and digits with anything else between
    them (NULs, spaces, dots), its base64 and base64url, its hex digits (``%XX`` included) and the
    text percent-decoded."""

    def squeezed(value: str) -> str:
        return "".join(c for c in value if c.isascii() and c.isalnum()).lower()

    raw = key.encode()
    flat = squeezed(text)
    found = []
    if key.lower() in text.lower():
        found.append("verbatim")
    if squeezed(key) and squeezed(key) in flat:
        found.append("separated")
    for name, encoded in (("base64", base64.b64encode(raw)), ("base64url", base64.urlsafe_b64encode(raw))):
        stripped = encoded.decode().rstrip("=")
        if stripped in text or squeezed(stripped) in flat:
            found.append(name)
    if raw.hex() in flat:
        found.append("hex")
    if key in urllib.parse.unquote(text):
        found.append("percent")
    return found


def _retry_after(value: float | str | None, *, http_date: bool) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if http_date:
        return email.utils.formatdate(time.time() + value, usegmt=True)
    return f"{value:g}"


@dataclasses.dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request as the stand-in saw it, with every key header's value replaced by ``<redacted>``."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: Any
    """The parsed JSON body; None when it was not JSON."""
    at: float
    """time.time() when it arrived."""
    authorized: bool | None
    """Whether it carried the right key; None when the stand-in wants no key."""

    @property
    def model(self) -> str | None:
        model = self.body.get("model") if isinstance(self.body, dict) else None
        return model if isinstance(model, str) else None


def tokens(chars: int) -> int:
    """The stand-in's token count for ``chars`` characters: ceil(chars / 4)."""
    return math.ceil(chars / 4)


def text_of(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(b["text"] for b in content if isinstance(b, dict) and isinstance(b.get("text"), str))
    return ""


def refused_url() -> str:
    """A base URL on a loopback port nothing listens on: connecting is refused."""
    return f"http://127.0.0.1:{free_port()}/v1"


class StandIn:
    """The stand-in provider. ``api_key``: the key it requires (None: any or none)."""

    def __init__(self, *, api_key: str | None = None, reply_chars: int = 200, chunk_chars: int = 4) -> None:
        self.api_key = api_key
        self.reply_chars = reply_chars
        self.chunk_chars = chunk_chars
        self.port = 0
        self.base = self.url = self.anthropic_url = ""
        self._lock = threading.Lock()
        self._queue: collections.deque[Behaviour] = collections.deque()
        self._model_queues: dict[str, collections.deque[Behaviour]] = {}
        self._always: Behaviour | None = None
        self._model_always: dict[str, Behaviour] = {}
        self._requests: list[RecordedRequest] = []
        self._in_flight = 0
        self._ids = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._stopping: asyncio.Event | None = None

    # -- scripting -------------------------------------------------------------------------------

    def script(self, *behaviours: Behaviour, model: str | None = None) -> StandIn:
        """Apply ``behaviours`` to the next requests, one each, in order (only to requests for
        ``model`` when given; those take precedence over the shared queue); then answer normally."""
        with self._lock:
            queue = (
                self._queue if model is None else self._model_queues.setdefault(model, collections.deque())
            )
            queue.extend(behaviours)
        return self

    def always(self, behaviour: Behaviour | None, *, model: str | None = None) -> StandIn:
        """Apply ``behaviour`` to every request that no script covers (None: back to normal)."""
        with self._lock:
            if model is None:
                self._always = behaviour
            elif behaviour is None:
                self._model_always.pop(model, None)
            else:
                self._model_always[model] = behaviour
        return self

    def clear(self) -> None:
        """Forget every script, standing behaviour and recorded request."""
        with self._lock:
            self._queue.clear()
            self._model_queues.clear()
            self._always = None
            self._model_always.clear()
            self._requests.clear()

    def _next(self, model: str | None) -> Behaviour:
        with self._lock:
            queue = self._model_queues.get(model) if model is not None else None
            if queue:
                return queue.popleft()
            if self._queue:
                return self._queue.popleft()
            if model is not None and model in self._model_always:
                return self._model_always[model]
            return self._always or ok()

    @property
    def pending(self) -> int:
        """Scripted behaviours not used yet."""
        with self._lock:
            return len(self._queue) + sum(len(q) for q in self._model_queues.values())

    # -- records ---------------------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far, oldest first (a copy)."""
        with self._lock:
            return list(self._requests)

    @property
    def in_flight(self) -> int:
        """Requests being answered right now (a client that goes away ends its request's handler)."""
        with self._lock:
            return self._in_flight

    def calls(self, *, path: str | None = None, model: str | None = None) -> int:
        """How many requests arrived (for ``path`` and/or ``model`` when given)."""
        return sum(
            1
            for r in self.requests
            if (path is None or r.path == path) and (model is None or r.model == model)
        )

    # -- configuration helpers ---------------------------------------------------------------------

    def provider(
        self,
        name: str = "standin",
        api: ApiStyle = ApiStyle.OPENAI,
        *,
        locality: Locality = Locality.CLOUD,
        api_key_secret: str | None = None,
        timeout_ms: int | None = None,
    ) -> Provider:
        """A :class:`Provider` pointing at this stand-in in the given wire format."""
        base = self.anthropic_url if api is ApiStyle.ANTHROPIC else self.url
        return Provider(name, api, base, api_key_secret, locality, timeout_ms, False)

    def reply(self, messages: Sequence[Mapping[str, Any]], max_tokens: int | None = None) -> tuple[str, bool]:
        """The reply text for ``messages`` and whether ``max_tokens`` cut it."""
        last = next((m for m in reversed(messages) if m.get("role") == "user"), None)
        text = "echo:" + text_of(last.get("content") if last else "")[: self.reply_chars]
        if max_tokens is not None and tokens(len(text)) > max_tokens:
            return text[: 4 * max_tokens], True
        return text, False

    # -- life cycle --------------------------------------------------------------------------------

    def start(self) -> StandIn:
        """Start serving; a stand-in that was stopped starts again on the same port, so a test can
        take a provider away (connections refused) and bring it back."""
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=self._run, args=(loop,), name="stand-in-provider", daemon=True)
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self._serve(), loop).result(START_TIMEOUT)
        except BaseException:
            self.stop()
            raise
        return self

    @staticmethod
    def _run(loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            leftovers = asyncio.all_tasks(loop)
            for task in leftovers:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*leftovers, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _serve(self) -> None:
        self._stopping = asyncio.Event()
        app = web.Application(client_max_size=4 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._openai)
        app.router.add_post("/v1/messages", self._anthropic)
        # handler_cancellation: a client that gives up cancels its hanging request's handler.
        runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0)
        await runner.setup()
        self._runner = runner
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", self.port))  # after a stop, start again at the same address
            await web.SockSite(runner, sock).start()
        except BaseException:
            sock.close()
            raise
        self.port = int(sock.getsockname()[1])
        self.base = f"http://127.0.0.1:{self.port}"
        self.url = f"{self.base}/v1"
        self.anthropic_url = self.base

    async def _shutdown(self) -> None:
        if self._stopping is not None:
            self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        self._loop = self._thread = None
        if loop.is_running():
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(START_TIMEOUT)
            loop.call_soon_threadsafe(loop.stop)
        thread.join(START_TIMEOUT)

    def __enter__(self) -> StandIn:
        return self.start() if self._loop is None else self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- request handling --------------------------------------------------------------------------

    async def _record(self, request: web.Request, wire: Wire) -> tuple[Any, bool | None]:
        raw = await request.read()
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = None
        presented = _presented(request, wire)
        authorized = None if self.api_key is None else presented == self.api_key
        headers = {
            k.lower(): (REDACTED if k.lower() in SECRET_HEADERS else v) for k, v in request.headers.items()
        }
        with self._lock:
            self._requests.append(
                RecordedRequest(request.method, request.path, headers, body, time.time(), authorized)
            )
        return body, authorized

    async def _openai(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, "openai")

    async def _anthropic(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, "anthropic")

    async def _handle(self, request: web.Request, wire: Wire) -> web.StreamResponse:
        with self._lock:
            self._in_flight += 1
        try:
            return await self._answer_request(request, wire)
        finally:
            with self._lock:
                self._in_flight -= 1

    async def _answer_request(self, request: web.Request, wire: Wire) -> web.StreamResponse:
        body, authorized = await self._record(request, wire)
        model = body.get("model") if isinstance(body, dict) else None
        behaviour = self._next(model if isinstance(model, str) else None)
        early = await self._before_checks(request, wire, behaviour)
        if early is not None:
            return early
        refusal = _refusal(request, wire, body, authorized)
        if refusal is not None:
            return refusal
        streaming = body.get("stream") is True
        if behaviour.kind == "echo_stream" and not streaming:
            return _echo(request, wire, behaviour)
        if behaviour.kind == "stream_error" and not streaming:
            return _error(wire, 529, message="Overloaded", error_type=behaviour.error_type)
        if behaviour.kind == "garbage" and not streaming:
            return web.Response(
                status=200, body=b'{"id": "garbage", "choices": [', content_type="application/json"
            )
        if behaviour.kind == "huge":
            return await _huge(request, wire, streaming, behaviour.after_chunks)
        answer = self._answer(wire, body)
        if streaming:
            return await self._stream(request, wire, answer, body, behaviour)
        payload = json.dumps(answer.document(wire)).encode()
        if behaviour.kind in ("cut", "stall"):
            response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
            response.content_length = len(payload)
            await response.prepare(request)
            await response.write(payload[: len(payload) // 2])
            if behaviour.kind == "stall":
                await self._until_stopped()
            return _drop(request, response, rst=False)
        return web.Response(status=200, body=payload, content_type="application/json")

    async def _before_checks(
        self, request: web.Request, wire: Wire, behaviour: Behaviour
    ) -> web.StreamResponse | None:
        """The behaviours that act before the key and the body are looked at (as a provider's edge
        does), or None to go on."""
        if behaviour.kind == "hang":
            await self._until_stopped()
            return _drop(request)
        if behaviour.kind == "reset":
            return _drop(request)
        if behaviour.kind == "slow":
            await asyncio.sleep(behaviour.seconds)
        if behaviour.kind == "status":
            return _error(wire, behaviour.status, retry_after=behaviour.retry_after)
        if behaviour.kind == "echo_key":
            return _echo(request, wire, behaviour)
        return None

    async def _until_stopped(self) -> None:
        """Wait for :meth:`stop` (or for the client to leave, which cancels the handler)."""
        assert self._stopping is not None
        await self._stopping.wait()

    def _answer(self, wire: Wire, body: Mapping[str, Any]) -> _Answer:
        messages = body["messages"]
        chars = sum(len(text_of(m.get("content"))) for m in messages)
        if wire == "anthropic":
            chars += len(text_of(body.get("system")))
        max_tokens = body.get("max_tokens")
        text, truncated = self.reply(messages, max_tokens if isinstance(max_tokens, int) else None)
        prefix = "chatcmpl-standin-" if wire == "openai" else "msg_standin_"
        return _Answer(
            id=f"{prefix}{next(self._ids)}",
            model=body["model"],
            text=text,
            input_tokens=tokens(chars),
            output_tokens=tokens(len(text)),
            truncated=truncated,
            chunk_chars=self.chunk_chars,
        )

    async def _stream(
        self,
        request: web.Request,
        wire: Wire,
        answer: _Answer,
        body: Mapping[str, Any],
        behaviour: Behaviour,
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            status=200, headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        if behaviour.kind == "garbage":
            name = "event: message_start\n" if wire == "anthropic" else ""
            await response.write(f"{name}data: {{not json\n\n".encode())
            await response.write_eof()
            return response
        options = body.get("stream_options")
        usage = isinstance(options, dict) and options.get("include_usage") is True
        events = list(answer.openai_events(usage) if wire == "openai" else answer.anthropic_events())
        partial = behaviour.kind in ("cut", "stall", "stream_error", "echo_stream")
        for index, event in enumerate(events[: behaviour.after_chunks if partial else len(events)]):
            if behaviour.kind == "trickle" and index:
                await asyncio.sleep(behaviour.seconds)
            await response.write(event)
        if behaviour.kind == "stall":
            await self._until_stopped()
            return _drop(request, response, rst=False)
        if behaviour.kind == "stream_error":
            await response.write(_stream_error_event(wire, behaviour.error_type))
        elif behaviour.kind == "echo_stream":
            message = echo_message(_presented(request, wire) or "", behaviour.echo)
            await response.write(_stream_error_event(wire, "authentication_error", message))
        elif behaviour.kind == "cut" and not behaviour.graceful:
            return _drop(request, response, rst=False)
        else:
            done = b"data: [DONE]\n\n" if wire == "openai" and behaviour.kind != "cut" else b""
            if done:
                await response.write(done)
        await response.write_eof()
        return response


@dataclasses.dataclass(frozen=True, slots=True)
class _Answer:
    id: str
    model: str
    text: str
    input_tokens: int
    output_tokens: int
    truncated: bool
    chunk_chars: int

    def pieces(self) -> list[str]:
        size = max(1, self.chunk_chars)
        return [self.text[i : i + size] for i in range(0, len(self.text), size)]

    def document(self, wire: Wire) -> dict[str, Any]:
        if wire == "openai":
            return {
                "id": self.id,
                "object": "chat.completion",
                "created": int(time.time()),
                "model": self.model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": self.text},
                        "finish_reason": "length" if self.truncated else "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": self.input_tokens,
                    "completion_tokens": self.output_tokens,
                    "total_tokens": self.input_tokens + self.output_tokens,
                },
            }
        return {
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [{"type": "text", "text": self.text}],
            "stop_reason": "max_tokens" if self.truncated else "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens},
        }

    def openai_events(self, usage: bool) -> Iterator[bytes]:
        created = int(time.time())

        def chunk(choices: list[dict[str, Any]], **extra: Any) -> bytes:
            doc = {
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": self.model,
                "choices": choices,
                **extra,
            }
            return f"data: {json.dumps(doc)}\n\n".encode()

        yield chunk([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
        for piece in self.pieces():
            yield chunk([{"index": 0, "delta": {"content": piece}, "finish_reason": None}])
        finish = "length" if self.truncated else "stop"
        yield chunk([{"index": 0, "delta": {}, "finish_reason": finish}])
        if usage:
            total = self.input_tokens + self.output_tokens
            yield chunk(
                [],
                usage={
                    "prompt_tokens": self.input_tokens,
                    "completion_tokens": self.output_tokens,
                    "total_tokens": total,
                },
            )

    def anthropic_events(self) -> Iterator[bytes]:
        def event(name: str, doc: dict[str, Any]) -> bytes:
            return f"event: {name}\ndata: {json.dumps({'type': name, **doc})}\n\n".encode()

        message: dict[str, Any] = {
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": self.input_tokens, "output_tokens": 1},
        }
        yield event("message_start", {"message": message})
        yield event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}})
        yield event("ping", {})
        for piece in self.pieces():
            yield event("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": piece}})
        yield event("content_block_stop", {"index": 0})
        stop = "max_tokens" if self.truncated else "end_turn"
        yield event(
            "message_delta",
            {
                "delta": {"stop_reason": stop, "stop_sequence": None},
                "usage": {"output_tokens": self.output_tokens},
            },
        )
        yield event("message_stop", {})


_OPENAI_ERRORS = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "unsupported_country_region_territory"),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
}
_ANTHROPIC_ERRORS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def _error(
    wire: Wire,
    code: int,
    *,
    message: str | None = None,
    retry_after: str | None = None,
    error_type: str | None = None,
) -> web.Response:
    """An error answer in the wire's own shape."""
    text = message or f"stand-in error {code}"
    doc: dict[str, Any]
    if wire == "openai":
        kind, error_code = _OPENAI_ERRORS.get(
            code, ("server_error" if code >= 500 else "invalid_request_error", None)
        )
        doc = {"error": {"message": text, "type": error_type or kind, "param": None, "code": error_code}}
    else:
        kind = _ANTHROPIC_ERRORS.get(code, "api_error" if code >= 500 else "invalid_request_error")
        doc = {"type": "error", "error": {"type": error_type or kind, "message": text}}
    headers = {"Retry-After": retry_after} if retry_after is not None else None
    return web.json_response(doc, status=code, headers=headers)


def _stream_error_event(wire: Wire, error_type: str, message: str | None = None) -> bytes:
    if wire == "anthropic":
        doc = {"type": "error", "error": {"type": error_type, "message": message or "Overloaded"}}
        return f"event: error\ndata: {json.dumps(doc)}\n\n".encode()
    text = message or "The server had an error while processing your request."
    doc = {"error": {"message": text, "type": error_type}}
    return f"data: {json.dumps(doc)}\n\n".encode()


def _presented(request: web.Request, wire: Wire) -> str | None:
    """The key a request carried, in the header its wire format (or Azure) puts it in."""
    if wire == "anthropic":
        return request.headers.get("x-api-key")
    bearer = request.headers.get("Authorization", "")
    if bearer.startswith("Bearer "):
        return bearer[len("Bearer ") :]
    return request.headers.get("api-key")


def _echo(request: web.Request, wire: Wire, behaviour: Behaviour) -> web.Response:
    return _error(
        wire, behaviour.status, message=echo_message(_presented(request, wire) or "", behaviour.echo)
    )


def _refusal(request: web.Request, wire: Wire, body: Any, authorized: bool | None) -> web.Response | None:
    """The error answer for a wrong key, a missing anthropic-version or a malformed body, or None."""
    if authorized is False:
        presented = request.headers.get("x-api-key") or request.headers.get("api-key") or ""
        if not presented:
            presented = request.headers.get("Authorization", "").removeprefix("Bearer ")
        # Like OpenAI, the error names the key it refused; clients must not pass it on.
        return _error(wire, 401, message=f"Incorrect API key provided: {presented}")
    if wire == "anthropic" and "anthropic-version" not in request.headers:
        return _error(wire, 400, message="anthropic-version: header is required")
    problem = _invalid(wire, body)
    return None if problem is None else _error(wire, 400, message=problem)


def _invalid(wire: Wire, body: Any) -> str | None:
    """Why a request body is not one the API takes, or None."""
    if not isinstance(body, dict):
        return "the request body is not a JSON object"
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "model: field required"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages: at least one message is required"
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            return f"messages.{index}: a message needs a role"
        if wire == "anthropic" and message["role"] not in ("user", "assistant"):
            return f"messages.{index}.role: must be user or assistant"
    max_tokens = body.get("max_tokens")
    if wire == "anthropic" and max_tokens is None:
        return "max_tokens: field required"
    if max_tokens is not None and (
        isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1
    ):
        return "max_tokens: must be a positive integer"
    return None


async def _huge(request: web.Request, wire: Wire, streaming: bool, size: int) -> web.StreamResponse:
    content_type = "text/event-stream" if streaming else "application/json"
    response = web.StreamResponse(status=200, headers={"Content-Type": content_type})
    response.enable_chunked_encoding()
    await response.prepare(request)
    pad = "x" * 65536
    if streaming and wire == "openai":
        piece = f"data: {json.dumps({'choices': [{'index': 0, 'delta': {'content': pad}}]})}\n\n"
    elif streaming:
        doc = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": pad}}
        piece = f"event: content_block_delta\ndata: {json.dumps(doc)}\n\n"
    else:
        piece = pad
    sent = 0
    try:
        if not streaming:
            await response.write(b'{"pad": "')
        while sent < size:
            await response.write(piece.encode())
            sent += len(piece)
        await response.write(b"" if streaming else b'"}')
        await response.write_eof()
    except ConnectionError:
        pass  # the client stopped reading, as it should
    return response


def _drop(
    request: web.Request, response: web.StreamResponse | None = None, *, rst: bool = True
) -> web.StreamResponse:
    """End the connection without finishing the answer: with a TCP reset (``rst``), or with an orderly
    close after what was written so far, so the client reads a body that stops short."""
    transport = request.transport
    if transport is not None:
        if rst:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
        else:
            transport.close()
    # aiohttp needs a response to return; nothing more reaches the closed connection.
    return response if response is not None else web.Response(status=500)


__all__ = [
    "ECHO_FORMS",
    "REDACTED",
    "Behaviour",
    "EchoForm",
    "RecordedRequest",
    "StandIn",
    "cut_stream",
    "echo_key",
    "echo_message",
    "echoed",
    "garbage",
    "hang",
    "huge",
    "key_leaks",
    "ok",
    "rate_limited",
    "refused_url",
    "reset",
    "slow",
    "stall",
    "status",
    "stream_error",
    "text_of",
    "tokens",
]
