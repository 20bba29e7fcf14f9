"""Clients of the model providers' HTTP APIs: one call in, a :class:`Completion` or a
:class:`ProviderError` out.

:func:`complete` sends a chat to a provider in the wire format its ``api`` names (OpenAI chat
completions or Anthropic Messages). Secrets (API keys) are looked up by name with
:mod:`aion.providers.secrets`; this package never reads them from anywhere else.

Calls go out through a shared :class:`aiohttp.ClientSession` that the caller owns: make it with
:func:`new_session` (inside the running event loop that will use it) and close it when done. Each call
sets its own deadline and never follows redirects, whatever the session's defaults.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp

from aion.config.model import ApiStyle, Provider
from aion.providers import anthropic, openai
from aion.providers.base import (
    KINDS,
    MAX_RESPONSE_BYTES,
    Completion,
    Kind,
    ProviderError,
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
    return await call(
        client,
        provider,
        model,
        messages,
        api_key=api_key,
        max_tokens=max_tokens,
        timeout=timeout,
        stream=stream,
    )


__all__ = [
    "KINDS",
    "MAX_RESPONSE_BYTES",
    "Completion",
    "Kind",
    "ProviderError",
    "complete",
    "new_session",
    "parse_retry_after",
]
