"""Clients of the model providers' HTTP APIs: one call in, a :class:`Completion` or a
:class:`ProviderError` out.

:func:`complete` sends a chat to a provider in the wire format its ``api`` names (OpenAI chat
completions or Anthropic Messages). Secrets (API keys) are looked up by name with
:mod:`aion.providers.secrets`; this package never reads them from anywhere else.

Calls go out through a shared :class:`aiohttp.ClientSession` that the caller owns: make it with
:func:`new_session` (inside the running event loop that will use it) and close it when done. Each call
sets its own deadline and never follows redirects, whatever the session's defaults.

While traces are on (:mod:`aion.tracing`), each call is a client span, named and described with
OpenTelemetry's generative-AI conventions (``chat MODEL``: the provider, the model, the server, token
usage, and on failure the error kind as ``error.type``), and every request carries its W3C
``traceparent``, so a provider that traces can join the task's trace.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from aion import tracing
from aion.config.model import ApiStyle, Provider
from aion.providers import anthropic, openai
from aion.providers.base import (
    KINDS,
    MAX_RESPONSE_BYTES,
    Completion,
    Kind,
    OnDelta,
    ProviderError,
    Sampling,
    new_session,
    parse_retry_after,
)


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
    """One completion from ``model`` at ``provider``, in the provider's wire format.

    ``client`` is the session to send through (see :func:`new_session`); ``messages`` are
    ``{"role": "system"|"user"|"assistant", "content": str}``; ``timeout`` (seconds) bounds the whole
    call, streamed body included. Raises :class:`ProviderError` on every failure.
    """
    if provider.api is ApiStyle.ANTHROPIC:
        call = anthropic.complete
    elif provider.api is ApiStyle.OPENAI:
        call = openai.complete
    else:  # pragma: no cover - a new ApiStyle without a client
        raise ProviderError(
            f"no client for API style {provider.api}",
            retryable=False,
            kind="client",
            provider=provider.name,
        )
    with tracing.span(f"chat {model}", kind="client") as span:
        if span.is_recording():
            span.set_attributes(_request_attributes(provider, model, max_tokens, stream))
        try:
            answer = await call(
                client,
                provider,
                model,
                messages,
                api_key=api_key,
                max_tokens=max_tokens,
                timeout=timeout,
                stream=stream,
                sampling=sampling,
                on_delta=on_delta,
            )
        except ProviderError as exc:
            if exc.status is not None:
                span.set_attribute("http.response.status_code", exc.status)
            tracing.fail(span, exc.kind, exc.message)
            raise
        if span.is_recording():
            span.set_attributes({
                "gen_ai.response.model": answer.model,
                "gen_ai.usage.input_tokens": answer.input_tokens,
                "gen_ai.usage.output_tokens": answer.output_tokens,
                "gen_ai.response.finish_reasons": [answer.finish_reason] if answer.finish_reason else [],
            })  # fmt: skip
        return answer


def _request_attributes(
    provider: Provider, model: str, max_tokens: int, stream: bool
) -> dict[str, tracing.AttributeValue]:
    attributes: dict[str, tracing.AttributeValue] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": provider.name,
        "gen_ai.request.model": model,
        "gen_ai.request.max_tokens": max_tokens,
        "aion.provider.api": provider.api.value,
        "aion.stream": stream,
    }
    try:
        parts = urlsplit(provider.base_url or "")
        scheme, host, port = parts.scheme, parts.hostname, parts.port
    except ValueError:  # the call itself reports a bad base_url
        scheme, host, port = "", None, None
    if host:
        attributes["server.address"] = host
        attributes["server.port"] = port or (443 if scheme == "https" else 80)
    return attributes


__all__ = [
    "KINDS",
    "MAX_RESPONSE_BYTES",
    "Completion",
    "Kind",
    "OnDelta",
    "ProviderError",
    "Sampling",
    "complete",
    "new_session",
    "parse_retry_after",
]
