"""The OpenAI chat-completions wire format: OpenAI, Azure OpenAI, and the servers that copy it
(ollama, vLLM, llama.cpp, Hugging Face's router).

``POST {base_url}/chat/completions`` with ``{model, messages, max_tokens}``; streamed with
``stream: true`` and ``stream_options.include_usage`` so the last chunk carries the token counts, and
ended by ``data: [DONE]``. A stream that stops without ``[DONE]`` was cut off.

Assumptions, stated because they are not negotiated on the wire:

- Azure OpenAI is reached through its v1 API (``https://NAME.openai.azure.com/openai/v1``, as in the
  example models.yml): the same paths and bodies, with the key in an ``api-key`` header instead of
  ``Authorization: Bearer``, and no ``api-version`` query parameter. A provider is treated as Azure when
  it is named ``azure`` or its base URL's host ends in one of :data:`AZURE_HOST_SUFFIXES`.
- The output limit is sent as ``max_tokens``, which every server above accepts (OpenAI's reasoning
  models want ``max_completion_tokens`` instead; they are not supported yet).
- A server that reports no usage gets its token counts estimated (see :attr:`Completion.usage_estimated`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from aion.config.model import Provider
from aion.providers.base import (
    Completion,
    Exchange,
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

AZURE_HOST_SUFFIXES = (".openai.azure.com", ".cognitiveservices.azure.com", ".services.ai.azure.com")


def is_azure(provider: Provider) -> bool:
    """Whether the provider is Azure OpenAI, which takes its key in an ``api-key`` header."""
    if provider.name == "azure":
        return True
    try:
        host = (urlsplit(provider.base_url or "").hostname or "").lower()
    except ValueError:  # a malformed base_url; the request itself reports it as a client error
        return False
    return host.endswith(AZURE_HOST_SUFFIXES)


def endpoint(provider: Provider) -> str:
    return base_url(provider) + "/chat/completions"


def headers(provider: Provider, api_key: str | None, *, stream: bool) -> dict[str, str]:
    out = {"Accept": "text/event-stream" if stream else "application/json"}
    if api_key is not None:
        if is_azure(provider):
            out["api-key"] = api_key
        else:
            out["Authorization"] = f"Bearer {api_key}"
    return out


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
    """One chat completion from ``model`` at ``provider``; a :class:`ProviderError` when there is none.
    Streamed, each piece of the answer is given to ``on_delta`` as it arrives."""
    key = check_api_key(api_key, provider.name)
    payload: dict[str, Any] = {
        "model": model,
        "messages": [{"role": m["role"], "content": m["content"]} for m in messages],
        "max_tokens": max_tokens,
    }
    if sampling is not None and sampling.temperature is not None:
        payload["temperature"] = sampling.temperature
    if sampling is not None and sampling.stop:
        payload["stop"] = list(sampling.stop)
    if stream:
        payload["stream"] = True
        payload["stream_options"] = {"include_usage": True}
    async with exchange(
        client,
        provider=provider.name,
        url=endpoint(provider),
        headers=headers(provider, key, stream=stream),
        payload=payload,
        timeout=timeout,
        secret=key,
    ) as current:
        if stream:
            return await _streamed(current, model, messages, on_delta)
        return _answer(current, await current.json_body(), model, messages)


def _input_chars(messages: Sequence[Mapping[str, Any]]) -> int:
    return sum(len(text_of(m.get("content"))) for m in messages)


def _usage(usage: object, messages: Sequence[Mapping[str, Any]], text: str) -> tuple[int, int, bool]:
    """(input tokens, output tokens, estimated)."""
    if isinstance(usage, dict):
        prompt, completion = count(usage.get("prompt_tokens")), count(usage.get("completion_tokens"))
        if prompt is not None and completion is not None:
            return prompt, completion, False
    return estimate_tokens(_input_chars(messages)), estimate_tokens(len(text)), True


def _answer(current: Exchange, doc: object, model: str, messages: Sequence[Mapping[str, Any]]) -> Completion:
    name = current.provider
    if not isinstance(doc, dict):
        raise protocol_error(name, "the answer is not a JSON object")
    choices = doc.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        if isinstance(doc.get("error"), dict):
            raise protocol_error(
                name,
                "a success status with an error in the answer",
                said=message_of(doc),
                secret=current.secret,
            )
        raise protocol_error(name, "the answer has no choices")
    message = choices[0].get("message")
    if not isinstance(message, dict):
        raise protocol_error(name, "the answer's first choice has no message")
    content = message.get("content")
    if content is not None and not isinstance(content, str):
        raise protocol_error(name, "the answer's message content is not text")
    text = content or ""
    prompt, completion, estimated = _usage(doc.get("usage"), messages, text)
    finish = choices[0].get("finish_reason")
    answered = doc.get("model")
    return Completion(
        text=text,
        input_tokens=prompt,
        output_tokens=completion,
        model=answered if isinstance(answered, str) and answered else model,
        provider=name,
        latency_ms=current.elapsed_ms(),
        finish_reason=finish if isinstance(finish, str) else None,
        usage_estimated=estimated,
    )


async def _streamed(
    current: Exchange, model: str, messages: Sequence[Mapping[str, Any]], on_delta: OnDelta | None
) -> Completion:
    name = current.provider
    parts: list[str] = []
    finish: str | None = None
    usage: object = None
    answered = model
    done = False
    async for event in events(current):
        if event.data == "[DONE]":
            done = True
            break
        chunk = json_event(name, event.data)
        if "error" in chunk:
            raise ProviderError(
                "the provider reported an error mid-stream",
                retryable=True,
                kind="server",
                provider=name,
                said=message_of(chunk),
                secret=current.secret,
            )
        if isinstance(chunk.get("model"), str) and chunk["model"]:
            answered = chunk["model"]
        choices = chunk.get("choices")
        if isinstance(choices, list) and choices and isinstance(choices[0], dict):
            delta = choices[0].get("delta")
            if isinstance(delta, dict) and isinstance(delta.get("content"), str):
                parts.append(delta["content"])
                if on_delta is not None and delta["content"]:
                    on_delta(delta["content"])
            if isinstance(choices[0].get("finish_reason"), str):
                finish = choices[0]["finish_reason"]
        if isinstance(chunk.get("usage"), dict):
            usage = chunk["usage"]
    if not done:
        raise cut_off(name, "the stream ended before [DONE]")
    text = "".join(parts)
    prompt, completion, estimated = _usage(usage, messages, text)
    return Completion(
        text=text,
        input_tokens=prompt,
        output_tokens=completion,
        model=answered,
        provider=name,
        latency_ms=current.elapsed_ms(),
        finish_reason=finish,
        usage_estimated=estimated,
    )


__all__ = ["AZURE_HOST_SUFFIXES", "complete", "endpoint", "headers", "is_azure"]
