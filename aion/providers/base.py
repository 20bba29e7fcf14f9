"""What every provider client shares: the result of a call, the error a call can end in, and the
bounded HTTP exchange both wire formats run on.

A call ends either in a :class:`Completion` or in a :class:`ProviderError` whose ``kind`` says what
happened and whose ``retryable`` says whether trying again (later, perhaps elsewhere) can help. These are
runtime outcomes the executor acts on (retries, breakers, fallbacks), not user errors, so they are plain
exceptions rather than :class:`aion.errors.Error`.

Everything read from a provider is bounded: a response body (streamed or not) larger than
:data:`MAX_RESPONSE_BYTES` is refused, the whole call has one deadline, and redirects are never followed
(a redirect would carry the API key to another address). What a provider says in an error reaches
a :class:`ProviderError` only as a short excerpt of its own error message, scrubbed by
:mod:`aion.providers.redaction` (the key in every form it is likely to be echoed in, and any long
opaque run); the body itself is never kept, neither on the error nor on an exception it is raised
from. Keys are checked before they reach a header, so no HTTP library error can echo one.

Server-sent events are parsed here rather than with a library: the format is a few lines of spec, and
the parser must count bytes as they arrive so a provider cannot grow memory without bound.

The HTTP client is an :class:`aiohttp.ClientSession`, shared by every call; :func:`new_session` makes one
as these clients expect it. Each call brings its own settings (its deadline, no redirects, no
raise-for-status, decompression on), so a session needs no default timeout; what a call cannot override
is the session's own state, so the session should carry no default headers, cookies for other hosts or
base URL, and should not read proxies or .netrc from the environment (``trust_env=False``). Sessions
must be made, used and closed inside one running event loop.

Every request carries the W3C ``traceparent`` of the current span while traces are on
(:mod:`aion.tracing`); nothing else of the caller's context goes to the provider.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import email.utils
import functools
import json
import math
import re
import ssl
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Any, Literal
from urllib.parse import urlsplit

import aiohttp
import certifi
from aiohttp.http_exceptions import ContentEncodingError

from aion import tracing
from aion.config.model import Provider
from aion.providers.redaction import excerpt

Kind = Literal["connect", "timeout", "rate_limited", "server", "client", "auth", "protocol", "cut_off"]
KINDS: frozenset[str] = frozenset(
    ("connect", "timeout", "rate_limited", "server", "client", "auth", "protocol", "cut_off")
)

MAX_RESPONSE_BYTES = 4 * 1024 * 1024
"""The most bytes aion reads from one provider answer; larger answers are refused (kind "protocol")."""
MAX_RETRY_AFTER_S = 300.0
"""Retry-After values are clamped to [0, this]: a provider cannot park a route for longer."""
MAX_ERROR_BODY = 64 * 1024
"""How much of an error answer's body is read for the provider's message (a longer one gives none)."""

RETRYABLE_SERVER_STATUSES = frozenset({500, 502, 503, 504, 529})
"""5xx answers that are transient by their meaning (529 is Anthropic's "overloaded")."""

_KEY_CHARS = re.compile(r"[\x21-\x7e]{1,4096}")


@dataclasses.dataclass(frozen=True, slots=True)
class Completion:
    """A model's answer to one call."""

    text: str
    input_tokens: int
    output_tokens: int
    model: str
    """The model that answered, as the provider names it (may be more specific than the one asked)."""
    provider: str
    latency_ms: float
    """From sending the request to the end of the answer (the last byte of a stream)."""
    finish_reason: str | None = None
    """Why the model stopped, as the provider says it (stop, length, end_turn, max_tokens, ...)."""
    usage_estimated: bool = False
    """True when the provider reported no token counts and they were estimated (4 characters a token)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Sampling:
    """What a caller asks of the model's sampling, passed on in each provider's wire format."""

    temperature: float | None = None
    """0 to 2 (Anthropic takes 0 to 1: a larger value is clamped to 1)."""
    stop: tuple[str, ...] = ()
    """Up to 4 sequences at which the model stops."""


OnDelta = Callable[[str], None]
"""Called with each piece of text of a streamed answer as it arrives (never with an empty one)."""


class ProviderError(Exception):
    """A call to a provider that did not produce a completion.

    ``kind`` is one of :data:`KINDS`: connect (no connection, or it failed before an answer), timeout
    (the deadline passed), rate_limited (429), server (5xx), client (other 4xx, or a request aion cannot
    make), auth (401/403), protocol (an answer that is not the wire format), cut_off (an answer that
    stopped part-way). ``retry_after`` is the provider's Retry-After in seconds, when it gave one.

    ``message`` (and ``str()``, ``repr()`` and ``args``) is a summary fit for anyone who may read the
    task: ``PROVIDER: KIND (HTTP STATUS): WHAT; the provider said: "EXCERPT"``. ``what`` is aion's
    own account of what happened; ``said`` is the provider's own error message, given as it came
    with the ``secret`` (the API key) that was sent: only :func:`aion.providers.redaction.excerpt` of
    it is kept, and neither ``said`` nor ``secret`` is stored.
    """

    def __init__(
        self,
        what: str,
        *,
        retryable: bool,
        status: int | None = None,
        retry_after: float | None = None,
        kind: Kind,
        provider: str | None = None,
        said: str = "",
        secret: str | None = None,
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown provider error kind {kind!r}")
        message = summary(provider, kind, status, what, excerpt(said, secret) if said else "")
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.status = status
        self.retry_after = retry_after
        self.kind: Kind = kind
        self.provider = provider

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return (
            f"ProviderError(kind={self.kind!r}, retryable={self.retryable}, status={self.status}, "
            f"retry_after={self.retry_after}, message={self.message!r})"
        )


def summary(provider: str | None, kind: str, status: int | None, what: str, quoted: str) -> str:
    """The message of a :class:`ProviderError`: who, the kind, the status, what, and what the
    provider said (``quoted``, already scrubbed)."""
    head = f"{provider}: {kind}" if provider else kind
    if status is not None:
        head += f" (HTTP {status})"
    return f'{head}: {what}; the provider said: "{quoted}"' if quoted else f"{head}: {what}"


def estimate_tokens(chars: int) -> int:
    """The usual rough rule when a provider reports no usage: four characters a token, rounded up."""
    return -(-chars // 4)


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """A Retry-After header in seconds from ``now``: delta-seconds (fractions accepted, as some
    providers send them) or an HTTP-date. Clamped to [0, :data:`MAX_RETRY_AFTER_S`]; None when absent
    or unreadable (NaN, infinity, garbage)."""
    if value is None:
        return None
    text = value.strip()
    if not text or len(text) > 64:
        return None
    seconds: float | None
    try:
        seconds = float(text)
    except ValueError:
        seconds = None
    if seconds is None:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when.tzinfo is None:  # HTTP-dates are GMT by definition
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


def check_api_key(api_key: str | None, provider: str) -> str | None:
    """The key, if it can go in a header as it is; else an "auth" error that does not show it."""
    if api_key is None:
        return None
    if _KEY_CHARS.fullmatch(api_key) is None:
        raise ProviderError(
            "the API key is not usable in a header (empty, too long, or it holds spaces or control "
            "characters); check the secret file",
            retryable=False,
            kind="auth",
            provider=provider,
        )
    return api_key


def said_in(body: bytes) -> str:
    """The provider's own message in an error body, as it came (OpenAI's and Anthropic's shapes both
    keep it at error.message); "" when the body is not such a document. Never the body itself: only
    give the result to :class:`ProviderError` as ``said``, which scrubs it."""
    if len(body) > MAX_ERROR_BODY:
        return ""
    return message_of(parsed(body.decode("utf-8", "replace"))[0])


def message_of(doc: object) -> str:
    """The error message in an already parsed error document (``{"error": {"message": ...}}``), as it
    came; give it to :class:`ProviderError` only as ``said``."""
    error = doc.get("error") if isinstance(doc, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    return message if isinstance(message, str) else ""


def status_error(
    provider: str, status: int, headers: Mapping[str, str], body: bytes, secret: str | None
) -> ProviderError:
    """The :class:`ProviderError` for an HTTP answer that is not a success."""

    def error(
        what: str, kind: Kind, retryable: bool, retry_after: float | None = None, *, quoted: bool = True
    ) -> ProviderError:
        return ProviderError(
            what,
            retryable=retryable,
            status=status,
            retry_after=retry_after,
            kind=kind,
            provider=provider,
            said=said_in(body) if quoted else "",
            secret=secret,
        )

    if status == 429:
        return error("too many requests", "rate_limited", True, parse_retry_after(headers.get("retry-after")))
    if status in (401, 403):
        return error("the API key was refused, check the secret it is read from", "auth", False)
    if status == 408:
        return error("the provider timed out the request", "timeout", True)
    if 500 <= status <= 599:
        retry_after = parse_retry_after(headers.get("retry-after"))
        return error("the provider failed", "server", status in RETRYABLE_SERVER_STATUSES, retry_after)
    if 300 <= status <= 399:
        return error(
            "unexpected redirect; redirects are not followed, so the API key stays with the configured "
            "address: fix base_url",
            "protocol",
            False,
            quoted=False,
        )
    if 400 <= status <= 499:
        return error("request refused", "client", False)
    return error("unexpected HTTP status", "protocol", False, quoted=False)


def too_large(provider: str) -> ProviderError:
    return ProviderError(
        f"the answer is larger than {MAX_RESPONSE_BYTES} bytes, the most aion reads",
        retryable=False,
        kind="protocol",
        provider=provider,
    )


def protocol_error(provider: str, what: str, *, said: str = "", secret: str | None = None) -> ProviderError:
    """An answer that does not follow the wire format (retryable: typically a glitch of one answer)."""
    return ProviderError(what, retryable=True, kind="protocol", provider=provider, said=said, secret=secret)


def cut_off(provider: str, what: str) -> ProviderError:
    return ProviderError(what, retryable=True, kind="cut_off", provider=provider)


def new_session(*, max_connections: int = 512) -> aiohttp.ClientSession:
    """An HTTP session for :func:`aion.providers.complete`, set up as the clients expect: no proxies or
    .netrc from the environment, certificates checked against certifi's CA bundle (as httpx, which aion
    used before, does), at most ``max_connections`` connections open at once (to all providers
    together), idle ones kept 5 seconds. Call it inside the event loop that will use the session, and
    close the session there (``await session.close()``)."""
    context = ssl.create_default_context(cafile=certifi.where())
    connector = aiohttp.TCPConnector(limit=max_connections, keepalive_timeout=5.0, ssl=context)
    return aiohttp.ClientSession(connector=connector, trust_env=False, auto_decompress=True)


_NO_CLIENT_TIMEOUT = aiohttp.ClientTimeout()
"""aiohttp's own timers are off: every call runs under one asyncio deadline of its own instead."""


@dataclasses.dataclass(slots=True)
class Exchange:
    """One request under way: its response (headers received) and a byte budget for its body."""

    provider: str
    response: aiohttp.ClientResponse
    secret: str | None
    started: float
    received: int = 0

    def elapsed_ms(self) -> float:
        return (time.monotonic() - self.started) * 1000.0

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives; "protocol" past :data:`MAX_RESPONSE_BYTES`, "cut_off" when the
        connection ends before the body does."""
        failure: ProviderError | None = None
        try:
            async for chunk in self.response.content.iter_any():
                self.received += len(chunk)
                if self.received > MAX_RESPONSE_BYTES:
                    raise too_large(self.provider)
                yield chunk
        except TimeoutError as exc:  # aiohttp's ServerTimeoutError is one too
            raise _timeout(self.provider) from exc
        except aiohttp.ClientPayloadError as exc:
            if isinstance(exc.__cause__, ContentEncodingError):
                failure = protocol_error(self.provider, "the answer's content encoding is broken")
            else:
                failure = cut_off(self.provider, f"the answer stopped part-way ({type(exc).__name__})")
        except aiohttp.ClientError as exc:
            failure = cut_off(self.provider, f"the answer stopped part-way ({type(exc).__name__})")
        if failure is not None:
            # Raised here, after the handler: aiohttp's payload errors can quote the body (a chunk-size
            # line, say) and its response errors show the request, key included, so neither may ride
            # along as the cause or the context.
            raise failure

    async def body(self) -> bytes:
        declared = self.response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_RESPONSE_BYTES:
            raise too_large(self.provider)
        parts = [chunk async for chunk in self.chunks()]
        return b"".join(parts)

    async def json_body(self) -> Any:
        doc, valid = parsed(await self.body())
        if not valid:
            raise protocol_error(self.provider, "the answer is not valid JSON")
        return doc


def parsed(text: str | bytes) -> tuple[Any, bool]:
    """(the JSON value of ``text``, True), or (None, False) when it is not JSON. The decoder's error
    holds the whole text, so it is not kept: an error raised for it must not have it as its context."""
    try:
        return json.loads(text), True
    except ValueError:
        return None, False


def base_url(provider: Provider) -> str:
    """The provider's ``base_url`` without a trailing slash; a "client" error when it has none."""
    if not provider.base_url:
        raise ProviderError(
            f"no base_url; set providers.{provider.name}.base_url in models.yml",
            retryable=False,
            kind="client",
            provider=provider.name,
        )
    return provider.base_url.rstrip("/")


def _timeout(provider: str) -> ProviderError:
    return ProviderError("no answer in time", retryable=True, kind="timeout", provider=provider)


@functools.lru_cache(maxsize=256)
def _check_url(provider: str, url: str) -> None:
    """A "client" error unless ``url`` is an http(s) URL with a host (checked before anything is sent;
    a URL that passes is remembered, as every call to a provider sends to the same few)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError as exc:
        raise ProviderError(
            f"invalid base_url ({exc})", retryable=False, kind="client", provider=provider
        ) from exc
    if parts.scheme.lower() not in ("http", "https"):
        raise ProviderError(
            "base_url must be http:// or https://",
            retryable=False,
            kind="client",
            provider=provider,
        )
    if not host:
        raise ProviderError(
            f"invalid base_url (no host in {url!r})",
            retryable=False,
            kind="client",
            provider=provider,
        )


def _connect_reason(exc: aiohttp.ClientConnectorError) -> str:
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return str(exc.certificate_error)
    return str(exc.os_error) or type(exc.os_error).__name__


def _before_answer(provider: str, detail: str, name: str, secret: str | None) -> ProviderError:
    """A "connect" error: the connection failed, or the answer could not be read, before its headers
    were in. ``name`` is the exception's type, ``detail`` what it says, which may quote the answer
    (so it is scrubbed like a provider's message)."""
    return ProviderError(
        f"the connection failed before an answer ({name})",
        retryable=True,
        kind="connect",
        provider=provider,
        said=detail,
        secret=secret,
    )


def _encode(payload: Mapping[str, Any]) -> bytes:
    """The request body, encoded as httpx encoded ``json=`` bodies (compact, UTF-8, no NaN)."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


async def _send(
    client: aiohttp.ClientSession,
    *,
    provider: str,
    url: str,
    headers: Mapping[str, str],
    data: bytes,
    secret: str | None,
) -> aiohttp.ClientResponse:
    """POST ``data`` and return the response once its headers are in; a failure on the way becomes a
    :class:`ProviderError`."""
    try:
        return await client.post(
            url,
            data=data,
            headers=headers,
            allow_redirects=False,
            raise_for_status=False,
            auto_decompress=True,
            timeout=_NO_CLIENT_TIMEOUT,
        )
    except TimeoutError as exc:  # aiohttp's ServerTimeoutError is one too
        raise _timeout(provider) from exc
    except aiohttp.ClientConnectorError as exc:
        raise ProviderError(
            f"cannot connect to {exc.host}:{exc.port} ({_connect_reason(exc)})",
            retryable=True,
            kind="connect",
            provider=provider,
        ) from exc
    except aiohttp.NonHttpUrlClientError as exc:
        raise ProviderError(
            "base_url must be http:// or https://",
            retryable=False,
            kind="client",
            provider=provider,
        ) from exc
    except aiohttp.InvalidURL as exc:
        raise ProviderError(
            f"invalid base_url ({exc})", retryable=False, kind="client", provider=provider
        ) from exc
    except aiohttp.ClientResponseError as exc:
        # An answer aiohttp could not parse. The exception's repr shows the request, API key included,
        # so it must not ride along as the cause, nor as the context: the error is raised below.
        unchained = _before_answer(provider, exc.message, type(exc).__name__, secret)
    except aiohttp.ClientError as exc:
        # Others (a disconnect, say) may quote what the provider sent, headers included: the same.
        unchained = _before_answer(provider, str(exc), type(exc).__name__, secret)
    raise unchained


@contextlib.asynccontextmanager
async def exchange(
    client: aiohttp.ClientSession,
    *,
    provider: str,
    url: str,
    headers: Mapping[str, str],
    payload: Mapping[str, Any],
    timeout: float,
    secret: str | None,
) -> AsyncIterator[Exchange]:
    """POST ``payload`` as JSON and yield the exchange once a 2xx answer's headers are in; any other
    answer, and every transport failure, becomes a :class:`ProviderError`. The whole block, body reads
    included, runs under one deadline of ``timeout`` seconds."""
    started = time.monotonic()
    _check_url(provider, url)
    data = _encode(payload)
    sent = {**headers, "Content-Type": "application/json"}
    tracing.inject(sent)  # traceparent, while traces are on: the provider's side joins the task's trace
    try:
        async with asyncio.timeout(timeout):
            response = await _send(client, provider=provider, url=url, headers=sent, data=data, secret=secret)
            try:
                current = Exchange(provider, response, secret, started)
                if not 200 <= response.status <= 299:
                    try:
                        body = await current.body()
                    except ProviderError as exc:
                        if exc.kind == "timeout":
                            raise
                        body = b""  # the status says enough; a broken error body changes nothing
                    raise status_error(provider, response.status, response.headers, body, secret)
                yield current
            finally:
                # Back to the pool when the body was read to its end; otherwise the connection closes.
                response.release()
    except TimeoutError as exc:
        raise _timeout(provider) from exc


def content_type_is(response: aiohttp.ClientResponse, expected: str) -> bool:
    declared: str = response.headers.get("content-type", "")
    return declared.partition(";")[0].strip().lower() == expected


@dataclasses.dataclass(frozen=True, slots=True)
class Event:
    """One server-sent event: its ``event:`` name ("" when unnamed) and its joined ``data:`` lines."""

    name: str
    data: str


class EventParser:
    """Incremental server-sent-events parser (the WHATWG event-stream format, minus id/retry, which
    provider APIs do not use). Feed it bytes; it yields each event once its blank line has arrived."""

    def __init__(self) -> None:
        self._buffer = b""
        self._name = ""
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> Iterator[Event]:
        self._buffer += chunk
        while True:
            cut = _line_end(self._buffer)
            if cut is None:
                return
            end, after = cut
            line = self._buffer[:end].decode("utf-8", "replace")
            self._buffer = self._buffer[after:]
            event = self._line(line)
            if event is not None:
                yield event

    def _line(self, line: str) -> Event | None:
        if not line:
            if not self._data and not self._name:
                return None
            event = Event(self._name, "\n".join(self._data))
            self._name, self._data = "", []
            return event
        if line.startswith(":"):
            return None
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "event":
            self._name = value
        elif field == "data":
            self._data.append(value)
        return None


def _line_end(buffer: bytes) -> tuple[int, int] | None:
    """Where the first line of ``buffer`` ends, and where the next begins (\\n, \\r\\n or \\r)."""
    lf, cr = buffer.find(b"\n"), buffer.find(b"\r")
    if cr == -1 and lf == -1:
        return None
    if cr == -1 or (lf != -1 and lf < cr):
        return lf, lf + 1
    if cr + 1 == len(buffer):
        return None  # a \r at the very end may be the first half of \r\n
    return cr, cr + 2 if buffer[cr + 1 : cr + 2] == b"\n" else cr + 1


async def events(current: Exchange) -> AsyncIterator[Event]:
    """The server-sent events of a streamed answer, within the exchange's byte budget."""
    if not content_type_is(current.response, "text/event-stream"):
        raise protocol_error(current.provider, "a streamed answer that is not text/event-stream")
    parser = EventParser()
    async for chunk in current.chunks():
        for event in parser.feed(chunk):
            yield event


def json_event(provider: str, data: str) -> dict[str, Any]:
    """The JSON object one event carries."""
    doc, valid = parsed(data)
    if not valid:
        raise protocol_error(provider, "a streamed event is not valid JSON")
    if not isinstance(doc, dict):
        raise protocol_error(provider, "a streamed event is not a JSON object")
    return doc


def count(value: object) -> int | None:
    """A token count from a provider: a non-negative integer, else None."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


def text_of(content: object) -> str:
    """The text of a message's content: a string, or a list of content blocks (text blocks only)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            block["text"]
            for block in content
            if isinstance(block, dict) and block.get("type") == "text" and isinstance(block.get("text"), str)
        )
    return ""


__all__ = [
    "KINDS",
    "MAX_ERROR_BODY",
    "MAX_RESPONSE_BYTES",
    "MAX_RETRY_AFTER_S",
    "RETRYABLE_SERVER_STATUSES",
    "Completion",
    "Event",
    "EventParser",
    "Exchange",
    "Kind",
    "OnDelta",
    "ProviderError",
    "Sampling",
    "check_api_key",
    "content_type_is",
    "count",
    "cut_off",
    "estimate_tokens",
    "events",
    "exchange",
    "json_event",
    "message_of",
    "new_session",
    "parse_retry_after",
    "parsed",
    "protocol_error",
    "said_in",
    "status_error",
    "summary",
    "text_of",
    "too_large",
]
