"""The Anthropic Messages wire format.

``POST {base_url}/v1/messages`` with headers ``x-api-key`` and ``anthropic-version``, body
``{model, max_tokens, messages, system?}``. Streamed answers are server-sent events: message_start
(input tokens), content_block_delta (text), message_delta (stop reason, output tokens), message_stop.
A stream that ends without message_stop was cut off; an ``error`` event mid-stream is mapped like the
HTTP status it stands for.

Assumptions: the base URL is the API's root (``https://api.anthropic.com``); one that already ends in
``/v1`` is accepted too. Messages with role ``system`` are sent as the top-level ``system`` text (the
Messages API has no system role), joined by blank lines in their order. Input tokens are the sum of
``input_tokens`` and the cache counters (``cache_creation_input_tokens``, ``cache_read_input_tokens``)
when the provider reports them, since every one of them was read by the model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp

from aion.config.model import Provider
from aion.providers.base import (
    Completion,
    Exchange,
    Kind,
    OnDelta,
    ProviderError,
    Sampling,
    base_url,
    check_api_key,
    count,
    cut_off,
    estimate_tokens,
    events,
    exchange,
    json_event,
    message_of,
    protocol_error,
    text_of,
)

ANTHROPIC_VERSION = "2023-06-01"
_CACHE_COUNTERS = ("cache_creation_input_tokens", "cache_read_input_tokens")
_STREAM_ERROR_KINDS: dict[str | None, tuple[Kind, bool]] = {
    "rate_limit_error": ("rate_limited", True),
    "overloaded_error": ("server", True),
    "api_error": ("server", True),
    "timeout_error": ("server", True),
    "authentication_error": ("auth", False),
    "permission_error": ("auth", False),
    "invalid_request_error": ("client", False),
    "not_found_error": ("client", False),
    "request_too_large": ("client", False),
}
"""What an ``error`` event's type means: (kind, retryable); any other type is a client error."""


def endpoint(provider: Provider) -> str:
    base = base_url(provider)
    return base + ("/messages" if base.endswith("/v1") else "/v1/messages")


def headers(api_key: str | None, *, stream: bool) -> dict[str, str]:
    out = {
        "Accept": "text/event-stream" if stream else "application/json",
        "anthropic-version": ANTHROPIC_VERSION,
    }
    if api_key is not None:
        out["x-api-key"] = api_key
    return out


def split_system(messages: Sequence[Mapping[str, Any]]) -> tuple[str | None, list[dict[str, Any]]]:
    """The system text (None when there is none) and the remaining user/assistant messages."""
    system = [text_of(m.get("content")) for m in messages if m.get("role") == "system"]
    rest = [{"role": m["role"], "content": m["content"]} for m in messages if m.get("role") != "system"]
    return ("\n\n".join(system) if system else None), rest


async def complete(
    client: aiohttp.ClientSession,
    provider: Provider,
    model: str,
    messages: Sequence[Mapping[str, Any]],
    *,
    api_key: str | None,
    max_tokens: int,
    timeout: float,
    stream: bool = False,
    sampling: Sampling | None = None,
    on_delta: OnDelta | None = None,
) -> Completion:
    """One message from ``model`` at ``provider``; a :class:`ProviderError` when there is none.
    Streamed, each piece of the answer is given to ``on_delta`` as it arrives."""
    key = check_api_key(api_key, provider.name)
    system, rest = split_system(messages)
    payload: dict[str, Any] = {"model": model, "max_tokens": max_tokens, "messages": rest}
    if system is not None:
        payload["system"] = system
    if sampling is not None and sampling.temperature is not None:
        payload["temperature"] = min(sampling.temperature, 1.0)
    if sampling is not None and sampling.stop:
        payload["stop_sequences"] = list(sampling.stop)
    if stream:
        payload["stream"] = True
    async with exchange(
        client,
        provider=provider.name,
        url=endpoint(provider),
        headers=headers(key, stream=stream),
        payload=payload,
        timeout=timeout,
        secret=key,
    ) as current:
        if stream:
            return await _streamed(current, model, messages, on_delta)
        return _answer(current, await current.json_body(), model, messages)


def _input_tokens(usage: Mapping[str, Any]) -> int | None:
    base = count(usage.get("input_tokens"))
    if base is None:
        return None
    return base + sum(count(usage.get(name)) or 0 for name in _CACHE_COUNTERS)


def _estimate(messages: Sequence[Mapping[str, Any]], text: str) -> tuple[int, int]:
    chars = sum(len(text_of(m.get("content"))) for m in messages)
    return estimate_tokens(chars), estimate_tokens(len(text))


def _answer(current: Exchange, doc: object, model: str, messages: Sequence[Mapping[str, Any]]) -> Completion:
    name = current.provider
    if not isinstance(doc, dict):
        raise protocol_error(name, "the answer is not a JSON object")
    if doc.get("type") == "error":
        raise protocol_error(
            name, "a success status with an error in the answer", said=message_of(doc), secret=current.secret
        )
    content = doc.get("content")
    if not isinstance(content, list):
        raise protocol_error(name, "the answer has no content list")
    text = text_of(content)
    usage = doc.get("usage")
    input_tokens = output_tokens = None
    if isinstance(usage, dict):
        input_tokens, output_tokens = _input_tokens(usage), count(usage.get("output_tokens"))
    estimated = input_tokens is None or output_tokens is None
    if input_tokens is None or output_tokens is None:
        input_tokens, output_tokens = _estimate(messages, text)
    stop = doc.get("stop_reason")
    answered = doc.get("model")
    return Completion(
        text=text,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        model=answered if isinstance(answered, str) and answered else model,
        provider=name,
        latency_ms=current.elapsed_ms(),
        finish_reason=stop if isinstance(stop, str) else None,
        usage_estimated=estimated,
    )


def _stream_error(name: str, doc: Mapping[str, Any], secret: str | None) -> ProviderError:
    error = doc.get("error")
    error_type = error.get("type") if isinstance(error, dict) else None
    if not isinstance(error_type, str) or error_type not in _STREAM_ERROR_KINDS:
        error_type = None
    # The type is named in the message only when it is one of the API's own: it is provider text too.
    what = f"the provider reported an error mid-stream ({error_type or 'of an unknown type'})"
    kind, retryable = _STREAM_ERROR_KINDS.get(error_type, ("client", False))
    return ProviderError(
        what, retryable=retryable, kind=kind, provider=name, said=message_of(doc), secret=secret
    )


@dataclasses.dataclass(slots=True)
class _Stream:
    """What a streamed message has said so far."""

    provider: str
    model: str
    parts: list[str] = dataclasses.field(default_factory=list)
    input_tokens: int | None = None
    output_tokens: int | None = None
    stop: str | None = None
    on_delta: OnDelta | None = None

    def message_start(self, doc: Mapping[str, Any]) -> None:
        message = doc.get("message")
        if not isinstance(message, dict):
            raise protocol_error(self.provider, "message_start without a message")
        if isinstance(message.get("model"), str) and message["model"]:
            self.model = message["model"]
        usage = message.get("usage")
        if isinstance(usage, dict):
            self.input_tokens, self.output_tokens = _input_tokens(usage), count(usage.get("output_tokens"))

    def content_block_delta(self, doc: Mapping[str, Any]) -> None:
        delta = doc.get("delta")
        if isinstance(delta, dict) and delta.get("type") == "text_delta":
            if not isinstance(delta.get("text"), str):
                raise protocol_error(self.provider, "a text_delta without text")
            self.parts.append(delta["text"])
            if self.on_delta is not None and delta["text"]:
                self.on_delta(delta["text"])

    def message_delta(self, doc: Mapping[str, Any]) -> None:
        delta = doc.get("delta")
        if isinstance(delta, dict) and isinstance(delta.get("stop_reason"), str):
            self.stop = delta["stop_reason"]
        usage = doc.get("usage")
        if isinstance(usage, dict):
            # message_delta's counts are cumulative: they replace message_start's.
            self.output_tokens = count(usage.get("output_tokens"))
            if count(usage.get("input_tokens")) is not None:
                self.input_tokens = _input_tokens(usage)


async def _streamed(
    current: Exchange, model: str, messages: Sequence[Mapping[str, Any]], on_delta: OnDelta | None
) -> Completion:
    name = current.provider
    state = _Stream(name, model, on_delta=on_delta)
    done = False
    async for event in events(current):
        doc = json_event(name, event.data)
        kind = doc.get("type", event.name)
        if kind == "error":
            raise _stream_error(name, doc, current.secret)
        if kind == "message_start":
            state.message_start(doc)
        elif kind == "content_block_delta":
            state.content_block_delta(doc)
        elif kind == "message_delta":
            state.message_delta(doc)
        elif kind == "message_stop":
            done = True
            break
    if not done:
        raise cut_off(name, "the stream ended before message_stop")
    text = "".join(state.parts)
    input_tokens, output_tokens = state.input_tokens, state.output_tokens
    estimated = input_tokens is None or output_tokens is None
    if input_tokens is None or output_tokens is None:
        input_tokens, output_tokens = _estimate(messages, text)
    return Completion(
        text=text,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        model=state.model,
        provider=name,
        latency_ms=current.elapsed_ms(),
        finish_reason=state.stop,
        usage_estimated=estimated,
    )


__all__ = ["ANTHROPIC_VERSION", "complete", "endpoint", "headers", "split_system"]
