"""The provider clients against the stand-in provider over real HTTP: both wire formats, streamed and
not, every scripted failure mapped to the error the executor acts on, and keys that never leak, even
when a provider echoes them split, escaped or encoded."""

from __future__ import annotations

import asyncio
import email.utils
import itertools
import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from aion.config.model import ApiStyle, Locality, Provider
from aion.providers import Completion, ProviderError, complete, new_session
from aion.providers.base import MAX_RETRY_AFTER_S, EventParser, parse_retry_after
from aion.providers.openai import is_azure
from aion.providers.redaction import MAX_EXCERPT_CHARS, OPAQUE_MARK, excerpt
from tests.rig import providers as behaviours
from tests.rig.providers import (
    ECHO_FORMS,
    REDACTED,
    Behaviour,
    EchoForm,
    StandIn,
    echo_message,
    echoed,
    key_leaks,
    refused_url,
)

MESSAGES = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello world"}]
"""8 + 11 = 19 input characters: 5 tokens. The reply "echo:hello world" is 16 characters: 4 tokens."""
KEY = "sk-test-0123456789abcdef"
APIS = [ApiStyle.OPENAI, ApiStyle.ANTHROPIC]
STREAM = [False, True]


def call(
    stand_in: StandIn,
    api: ApiStyle,
    *,
    stream: bool = False,
    key: str | None = KEY,
    timeout: float = 10.0,
    max_tokens: int = 100,
    model: str = "gpt-x",
    messages: Sequence[Mapping[str, Any]] = MESSAGES,
    provider: Provider | None = None,
) -> Completion:
    async def run() -> Completion:
        async with new_session() as client:
            return await complete(
                client,
                provider or stand_in.provider(api=api),
                model,
                messages,
                api_key=key,
                max_tokens=max_tokens,
                timeout=timeout,
                stream=stream,
            )

    return asyncio.run(run())


def texts(exc: BaseException) -> str:
    """str and repr of an exception and of everything it was raised from or during."""
    seen: list[str] = []
    current: BaseException | None = exc
    while current is not None and len(seen) < 20:
        seen += [str(current), repr(current)]
        current = current.__cause__ or current.__context__
    return "\n".join(seen)


def failure(stand_in: StandIn, api: ApiStyle, **kwargs: Any) -> ProviderError:
    with pytest.raises(ProviderError) as info:
        call(stand_in, api, **kwargs)
    key = kwargs.get("key", KEY)
    if key:
        assert key not in texts(info.value)
    return info.value


def everything_shown(error: ProviderError) -> str:
    """All an error can show: message, str, repr, args and attributes, and the same of every
    exception in its chain."""
    return "\n".join([error.message, texts(error), repr(error.args), repr(vars(error))])


@pytest.mark.parametrize("stream", STREAM)
@pytest.mark.parametrize("api", APIS)
def test_a_completion_with_exact_usage(stand_in: StandIn, api: ApiStyle, stream: bool) -> None:
    stand_in.api_key = KEY
    result = call(stand_in, api, stream=stream)
    assert result.text == "echo:hello world"
    assert (result.input_tokens, result.output_tokens) == (5, 4)
    assert not result.usage_estimated
    assert result.model == "gpt-x"
    assert result.provider == "standin"
    assert result.finish_reason == ("stop" if api is ApiStyle.OPENAI else "end_turn")
    assert result.latency_ms > 0
    [request] = stand_in.requests
    assert request.authorized is True
    if api is ApiStyle.OPENAI:
        assert request.path == "/v1/chat/completions"
        assert request.body["messages"] == MESSAGES
        assert request.headers["authorization"] == REDACTED
        if stream:
            assert request.body["stream_options"] == {"include_usage": True}
    else:
        assert request.path == "/v1/messages"
        assert request.body["system"] == "be brief"
        assert request.body["messages"] == [{"role": "user", "content": "hello world"}]
        assert request.headers["x-api-key"] == REDACTED
        assert request.headers["anthropic-version"] == "2023-06-01"
    assert request.body.get("stream", False) is stream
    assert request.body["max_tokens"] == 100


@pytest.mark.parametrize("stream", STREAM)
@pytest.mark.parametrize("api", APIS)
def test_max_tokens_cuts_the_reply(stand_in: StandIn, api: ApiStyle, stream: bool) -> None:
    result = call(stand_in, api, stream=stream, max_tokens=2)
    assert result.text == "echo:hel"
    assert result.output_tokens == 2
    assert result.finish_reason == ("length" if api is ApiStyle.OPENAI else "max_tokens")


@pytest.mark.parametrize("stream", STREAM)
@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize(
    ("behaviour", "kind", "retryable", "code"),
    [
        (behaviours.status(500), "server", True, 500),
        (behaviours.status(502), "server", True, 502),
        (behaviours.status(503), "server", True, 503),
        (behaviours.status(504), "server", True, 504),
        (behaviours.status(529), "server", True, 529),
        (behaviours.status(501), "server", False, 501),
        (behaviours.status(400), "client", False, 400),
        (behaviours.status(404), "client", False, 404),
        (behaviours.status(422), "client", False, 422),
        (behaviours.status(401), "auth", False, 401),
        (behaviours.status(403), "auth", False, 403),
        (behaviours.status(408), "timeout", True, 408),
        (behaviours.status(307), "protocol", False, 307),
        (behaviours.garbage(), "protocol", True, None),
        (behaviours.reset(), "connect", True, None),
        (behaviours.cut_stream(after_chunks=3), "cut_off", True, None),
        (behaviours.huge(), "protocol", False, None),
    ],
    ids=lambda v: f"{v.kind}-{v.status}" if isinstance(v, Behaviour) else str(v),
)
def test_failures_map_to_what_the_executor_acts_on(
    stand_in: StandIn,
    api: ApiStyle,
    stream: bool,
    behaviour: Behaviour,
    kind: str,
    retryable: bool,
    code: int | None,
) -> None:
    stand_in.script(behaviour)
    error = failure(stand_in, api, stream=stream)
    assert (error.kind, error.retryable, error.status) == (kind, retryable, code)
    assert error.provider == "standin"
    assert stand_in.calls() == 1, "the client never retries on its own: the executor decides"
    assert call(stand_in, api, stream=stream).text == "echo:hello world", "the script applies once"


@pytest.mark.parametrize("api", APIS)
def test_a_stream_that_ends_cleanly_but_early_is_cut_off(stand_in: StandIn, api: ApiStyle) -> None:
    stand_in.script(behaviours.cut_stream(after_chunks=2, graceful=True))
    error = failure(stand_in, api, stream=True)
    assert error.kind == "cut_off"
    assert ("[DONE]" if api is ApiStyle.OPENAI else "message_stop") in error.message


@pytest.mark.parametrize("api", APIS)
def test_an_error_event_mid_stream(stand_in: StandIn, api: ApiStyle) -> None:
    stand_in.script(behaviours.stream_error(after_chunks=2))
    error = failure(stand_in, api, stream=True)
    assert (error.kind, error.retryable) == ("server", True)
    assert "mid-stream" in error.message


@pytest.mark.parametrize("stream", STREAM)
@pytest.mark.parametrize("api", APIS)
def test_rate_limited_with_seconds(stand_in: StandIn, api: ApiStyle, stream: bool) -> None:
    stand_in.script(behaviours.rate_limited(retry_after=1.5))
    error = failure(stand_in, api, stream=stream)
    assert (error.kind, error.retryable, error.status, error.retry_after) == ("rate_limited", True, 429, 1.5)


@pytest.mark.parametrize("api", APIS)
def test_rate_limited_with_an_http_date(stand_in: StandIn, api: ApiStyle) -> None:
    stand_in.script(behaviours.rate_limited(retry_after=30, http_date=True))
    error = failure(stand_in, api)
    assert error.kind == "rate_limited"
    assert error.retry_after is not None
    assert 27.0 <= error.retry_after <= 30.0  # the date has whole seconds, and time passed


@pytest.mark.parametrize(
    ("header", "expected"),
    [("soon", None), ("nan", None), ("inf", None), ("", None), ("-5", 0.0), ("100000", MAX_RETRY_AFTER_S)],
)
def test_unusable_retry_after_values(stand_in: StandIn, header: str, expected: float | None) -> None:
    stand_in.script(behaviours.rate_limited(retry_after=header))
    error = failure(stand_in, ApiStyle.OPENAI)
    assert (error.kind, error.retry_after) == ("rate_limited", expected)


def test_a_503_may_say_when_to_come_back(stand_in: StandIn) -> None:
    stand_in.script(behaviours.status(503, retry_after=2))
    error = failure(stand_in, ApiStyle.ANTHROPIC)
    assert (error.kind, error.retryable, error.retry_after) == ("server", True, 2.0)


@pytest.mark.parametrize("stream", STREAM)
@pytest.mark.parametrize("api", APIS)
def test_a_hanging_provider_times_out(stand_in: StandIn, api: ApiStyle, stream: bool) -> None:
    stand_in.script(behaviours.hang())
    started = time.monotonic()
    error = failure(stand_in, api, stream=stream, timeout=0.5)
    assert time.monotonic() - started < 0.5 + 2.0
    assert (error.kind, error.retryable, error.status) == ("timeout", True, None)


@pytest.mark.parametrize("stream", STREAM)
@pytest.mark.parametrize("api", APIS)
def test_the_deadline_covers_the_body(stand_in: StandIn, api: ApiStyle, stream: bool) -> None:
    stand_in.script(behaviours.stall(after_chunks=3))
    started = time.monotonic()
    error = failure(stand_in, api, stream=stream, timeout=0.5)
    assert time.monotonic() - started < 0.5 + 2.0
    assert error.kind == "timeout"


def test_a_hanging_request_does_not_hold_up_others(stand_in: StandIn) -> None:
    stand_in.script(behaviours.hang(), model="stuck")
    finished: list[str] = []

    async def one(client: aiohttp.ClientSession, model: str, timeout: float) -> None:
        try:
            await complete(
                client,
                stand_in.provider(),
                model,
                MESSAGES,
                api_key=None,
                max_tokens=10,
                timeout=timeout,
            )
            finished.append(f"{model}:ok")
        except ProviderError as exc:
            finished.append(f"{model}:{exc.kind}")

    async def run() -> None:
        async with aiohttp.ClientSession(trust_env=False) as client:
            stuck = asyncio.create_task(one(client, "stuck", 1.0))
            await asyncio.gather(*(one(client, f"m{i}", 5.0) for i in range(3)))
            finished.append("others done")
            await stuck

    asyncio.run(run())
    assert finished[-2:] == ["others done", "stuck:timeout"]
    assert sorted(finished[:3]) == ["m0:ok", "m1:ok", "m2:ok"]


@pytest.mark.parametrize("stream", STREAM)
@pytest.mark.parametrize("api", APIS)
def test_connection_refused(stand_in: StandIn, api: ApiStyle, stream: bool) -> None:
    provider = Provider("down", api, refused_url(), None, Locality.LOCAL, None, False)
    error = failure(stand_in, api, stream=stream, provider=provider)
    assert (error.kind, error.retryable, error.status) == ("connect", True, None)
    assert error.provider == "down"


def test_a_provider_that_goes_away_and_comes_back(stand_in: StandIn) -> None:
    url = stand_in.url
    stand_in.stop()
    assert failure(stand_in, ApiStyle.OPENAI).kind == "connect"
    stand_in.start()
    assert stand_in.url == url
    assert call(stand_in, ApiStyle.OPENAI).text == "echo:hello world"


def test_a_base_url_that_is_not_http_is_a_client_error(stand_in: StandIn) -> None:
    provider = Provider("odd", ApiStyle.OPENAI, "ftp://127.0.0.1/v1", None, Locality.LOCAL, None, False)
    error = failure(stand_in, ApiStyle.OPENAI, provider=provider)
    assert (error.kind, error.retryable) == ("client", False)


@pytest.mark.parametrize("api", APIS)
def test_a_wrong_key_is_auth_and_never_shown(stand_in: StandIn, api: ApiStyle) -> None:
    stand_in.api_key = KEY
    wrong = "sk-wrong-9876543210"
    error = failure(stand_in, api, key=wrong)
    assert (error.kind, error.retryable, error.status) == ("auth", False, 401)
    assert "<redacted>" in error.message, "the stand-in echoes the refused key, as OpenAI does"
    assert wrong not in texts(error)
    assert call(stand_in, api).text == "echo:hello world"
    recorded = json.dumps([dict(r.headers) for r in stand_in.requests])
    assert wrong not in recorded
    assert KEY not in recorded
    assert [r.authorized for r in stand_in.requests] == [False, True]


def test_the_stand_in_does_echo_a_refused_key(stand_in: StandIn) -> None:
    """What makes the test above meaningful: the raw answer carries the key."""
    stand_in.api_key = KEY

    async def post() -> tuple[int, str]:
        async with (
            aiohttp.ClientSession(trust_env=False) as client,
            client.post(
                f"{stand_in.url}/chat/completions",
                json={"model": "m", "messages": MESSAGES},
                headers={"Authorization": "Bearer sk-echo-me"},
            ) as answer,
        ):
            return answer.status, await answer.text()

    status, text = asyncio.run(post())
    assert status == 401
    assert "sk-echo-me" in text


def refused_by_raw_answer(answer: bytes, name: str) -> ProviderError:
    """The error of a call to a peer that reads the request's head and answers ``answer``, whatever
    it is (a proxy's HTML page, bytes that are no HTTP): a real socket, so aiohttp parses it as it would
    any server's."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer)
        await writer.drain()
        writer.close()

    async def run() -> ProviderError:
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        provider = Provider(
            name, ApiStyle.OPENAI, f"http://127.0.0.1:{port}/v1", None, Locality.LOCAL, None, False
        )
        try:
            async with new_session() as client:
                with pytest.raises(ProviderError) as info:
                    await complete(client, provider, "m", MESSAGES, api_key=KEY, max_tokens=10, timeout=5.0)
                return info.value
        finally:
            server.close()
            await server.wait_closed()

    return asyncio.run(run())


@pytest.mark.parametrize(
    "answer",
    [
        f"HTTP/1.1 abc {KEY}\r\n\r\n".encode(),  # a status line that echoes the key
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",  # a broken chunk size
    ],
    ids=["status-line", "chunk-size"],
)
def test_an_unreadable_answer_is_connect_and_never_shows_the_key(answer: bytes) -> None:
    """aiohttp's error for an answer it cannot parse carries the request, key included, in its repr."""

    error = refused_by_raw_answer(answer, "odd")
    assert (error.kind, error.retryable, error.status) == ("connect", True, None)
    assert KEY not in texts(error)


@pytest.mark.parametrize("form", ECHO_FORMS)
@pytest.mark.parametrize("api", APIS)
def test_the_stand_in_echoes_the_key_in_each_form(stand_in: StandIn, api: ApiStyle, form: EchoForm) -> None:
    """What makes the tests below meaningful: the raw answer carries the key, in a form that neither
    the key nor the old verbatim blanking would find, and that key_leaks does find."""
    stand_in.script(behaviours.echo_key(form))
    path = "/v1/chat/completions" if api is ApiStyle.OPENAI else "/v1/messages"
    header = {"Authorization": f"Bearer {KEY}"} if api is ApiStyle.OPENAI else {"x-api-key": KEY}

    async def post() -> tuple[int, Any]:
        async with (
            aiohttp.ClientSession(trust_env=False) as client,
            client.post(
                stand_in.base + path,
                json={"model": "m", "messages": MESSAGES},
                headers={**header, "anthropic-version": "2023-06-01"},
            ) as answer,
        ):
            return answer.status, await answer.json()

    status, doc = asyncio.run(post())
    assert status == 401
    said = doc["error"]["message"]
    assert said == echo_message(KEY, form)
    assert echoed(KEY, form) in said
    assert key_leaks(said, KEY)
    if form != "verbatim":
        assert KEY not in said
    if api is ApiStyle.ANTHROPIC:
        assert doc["type"] == "error"


ECHOES = [
    pytest.param(behaviours.echo_key, False, ("auth", False, 401, None), id="401"),
    pytest.param(
        lambda form: behaviours.echo_key(form, code=401), True, ("auth", False, 401, None), id="401-stream"
    ),
    pytest.param(
        lambda form: behaviours.echo_key(form, code=429), False, ("rate_limited", True, 429, None), id="429"
    ),
    pytest.param(
        lambda form: behaviours.echo_key(form, code=503), False, ("server", True, 503, None), id="503"
    ),
    pytest.param(
        lambda form: behaviours.echo_key(form, code=400), False, ("client", False, 400, None), id="400"
    ),
    pytest.param(lambda form: behaviours.echo_key(form, mid_stream=True), True, None, id="mid-stream"),
]


@pytest.mark.parametrize("form", ECHO_FORMS)
@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize(("echo", "stream", "expected"), ECHOES)
def test_an_echoed_key_never_reaches_the_error(
    stand_in: StandIn,
    api: ApiStyle,
    form: EchoForm,
    echo: Any,
    stream: bool,
    expected: tuple[str, bool, int | None, float | None] | None,
) -> None:
    stand_in.script(echo(form))
    error = failure(stand_in, api, stream=stream)
    assert key_leaks(everything_shown(error), KEY) == []
    if expected is None:  # an error event after the first event: OpenAI's is a server error
        expected = ("server", True, None, None) if api is ApiStyle.OPENAI else ("auth", False, None, None)
    assert (error.kind, error.retryable, error.status, error.retry_after) == expected
    kind, _, code, _ = expected
    head = f"standin: {kind}" + (f" (HTTP {code})" if code else "")
    assert error.message.startswith(head + ": "), error.message
    assert error.args == (error.message,)
    # The provider's words are still quoted, short, with the key blanked out.
    assert 'the provider said: "Incorrect API key provided: <redacted>' in error.message, error.message
    said = error.message.split("the provider said: ", 1)[1]
    assert len(said) <= MAX_EXCERPT_CHARS + 2
    assert all(c.isprintable() for c in error.message)


@pytest.mark.parametrize("api", APIS)
def test_an_error_event_whose_type_echoes_the_key(stand_in: StandIn, api: ApiStyle) -> None:
    """Anthropic's error type decides the kind; it is named only when it is one of the API's own."""
    stand_in.script(behaviours.stream_error(after_chunks=2, error_type=echoed(KEY, "nul")))
    error = failure(stand_in, api, stream=True)
    assert key_leaks(everything_shown(error), KEY) == []
    expected = ("server", True) if api is ApiStyle.OPENAI else ("client", False)
    assert (error.kind, error.retryable) == expected
    if api is ApiStyle.ANTHROPIC:
        assert "mid-stream (of an unknown type)" in error.message


def test_an_error_body_that_is_not_the_wire_format_is_not_quoted() -> None:
    """An HTML error page (a proxy's, say) is the raw body: none of it reaches the error."""
    page = f"<html><body>502 Bad Gateway for {KEY} at {'x' * 40}</body></html>".encode()
    answer = b"HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/html\r\nContent-Length: %d\r\n\r\n%s" % (
        len(page),
        page,
    )

    error = refused_by_raw_answer(answer, "proxy")
    assert (error.kind, error.retryable, error.status) == ("server", True, 502)
    assert error.message == "proxy: server (HTTP 502): the provider failed"
    assert "html" not in everything_shown(error).lower()


def test_the_summary_of_a_plain_status(stand_in: StandIn) -> None:
    stand_in.script(behaviours.status(503))
    error = failure(stand_in, ApiStyle.OPENAI)
    assert (
        error.message
        == 'standin: server (HTTP 503): the provider failed; the provider said: "stand-in error 503"'
    )
    assert str(error) == error.message
    assert error.args == (error.message,)


def test_a_missing_key_is_auth(stand_in: StandIn) -> None:
    stand_in.api_key = KEY
    error = failure(stand_in, ApiStyle.ANTHROPIC, key=None)
    assert (error.kind, error.status) == ("auth", 401)


@pytest.mark.parametrize("bad", ["sk-with\nnewline", "sk with space", "", "x" * 5000])
def test_a_key_unfit_for_a_header_is_refused_before_sending(stand_in: StandIn, bad: str) -> None:
    error = failure(stand_in, ApiStyle.OPENAI, key=bad)
    assert (error.kind, error.retryable) == ("auth", False)
    if bad:
        assert bad not in texts(error)
    assert stand_in.calls() == 0


def test_azure_takes_its_key_in_an_api_key_header(stand_in: StandIn) -> None:
    stand_in.api_key = KEY
    azure = Provider(
        "azure", ApiStyle.OPENAI, stand_in.url, "AZURE_OPENAI_API_KEY", Locality.CLOUD, None, False
    )
    assert call(stand_in, ApiStyle.OPENAI, provider=azure).text == "echo:hello world"
    [request] = stand_in.requests
    assert request.authorized is True
    assert request.headers["api-key"] == REDACTED
    assert "authorization" not in request.headers


def test_azure_is_recognised_by_its_host() -> None:
    def provider(name: str, url: str | None) -> Provider:
        return Provider(name, ApiStyle.OPENAI, url, None, Locality.CLOUD, None, False)

    assert is_azure(provider("prod", "https://aion-prod.openai.azure.com/openai/v1"))
    assert is_azure(provider("azure", None))
    assert not is_azure(provider("openai", "https://api.openai.com/v1"))
    assert not is_azure(provider("evil", "https://openai.azure.com.example.net/v1"))


@pytest.mark.parametrize("api", APIS)
def test_no_base_url_is_a_client_error_without_a_request(stand_in: StandIn, api: ApiStyle) -> None:
    provider = Provider("azure", api, None, None, Locality.CLOUD, None, False)
    error = failure(stand_in, api, provider=provider)
    assert (error.kind, error.retryable) == ("client", False)
    assert "base_url" in error.message
    assert stand_in.calls() == 0


def test_scripts_per_model_and_standing_behaviours(stand_in: StandIn) -> None:
    stand_in.script(behaviours.status(500), behaviours.status(503), model="gpt-y")
    assert call(stand_in, ApiStyle.OPENAI, model="gpt-x").text == "echo:hello world"
    assert failure(stand_in, ApiStyle.OPENAI, model="gpt-y").status == 500
    assert failure(stand_in, ApiStyle.OPENAI, model="gpt-y").status == 503
    assert call(stand_in, ApiStyle.OPENAI, model="gpt-y").text == "echo:hello world"
    assert stand_in.pending == 0
    stand_in.always(behaviours.status(502))
    assert failure(stand_in, ApiStyle.ANTHROPIC).status == 502
    assert failure(stand_in, ApiStyle.OPENAI).status == 502
    stand_in.always(None)
    assert call(stand_in, ApiStyle.ANTHROPIC).text == "echo:hello world"
    assert stand_in.calls(model="gpt-y") == 3
    assert stand_in.calls(path="/v1/messages") == 2


@pytest.mark.parametrize("api", APIS)
def test_a_slow_answer_within_the_deadline_succeeds(stand_in: StandIn, api: ApiStyle) -> None:
    stand_in.script(behaviours.slow(0.3))
    result = call(stand_in, api, timeout=10.0)
    assert result.text == "echo:hello world"
    assert result.latency_ms >= 300


# -- the pieces the clients are built from ----------------------------------------------------------


def test_retry_after_forms() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after(email.utils.formatdate(now + 42, usegmt=True), now=now) == 42.0
    assert parse_retry_after(email.utils.formatdate(now - 42, usegmt=True), now=now) == 0.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00") is None  # no zone: not an HTTP-date
    assert parse_retry_after(None) is None


@given(st.text(max_size=80))
def test_retry_after_is_never_out_of_range(header: str) -> None:
    value = parse_retry_after(header)
    assert value is None or 0.0 <= value <= MAX_RETRY_AFTER_S


STREAM_TEXT = (
    b': comment\r\nevent: message_start\r\ndata: {"a": 1}\r\n\r\n'
    b"data: line one\ndata: line two\n\n"
    b"event: ping\rdata: {}\r\r"
    b"data: [DONE]\n\n"
)
EXPECTED_EVENTS = [
    ("message_start", '{"a": 1}'),
    ("", "line one\nline two"),
    ("ping", "{}"),
    ("", "[DONE]"),
]


@given(st.lists(st.integers(min_value=0, max_value=len(STREAM_TEXT)), max_size=12))
def test_events_do_not_depend_on_how_bytes_arrive(cuts: list[int]) -> None:
    points = [0, *sorted(cuts), len(STREAM_TEXT)]
    parser = EventParser()
    seen = [
        (event.name, event.data)
        for start, end in itertools.pairwise(points)
        for event in parser.feed(STREAM_TEXT[start:end])
    ]
    assert seen == EXPECTED_EVENTS


REALISTIC_KEYS = st.from_regex(r"sk-[A-Za-z0-9_-]{20,60}", fullmatch=True)


@given(
    key=REALISTIC_KEYS,
    form=st.sampled_from(ECHO_FORMS),
    before=st.text(max_size=120),
    after=st.text(max_size=120),
)
def test_an_excerpt_never_shows_the_key_whatever_surrounds_it(
    key: str, form: EchoForm, before: str, after: str
) -> None:
    shown = excerpt(before + echoed(key, form) + after, key)
    assert key_leaks(shown, key) == []
    assert len(shown) <= MAX_EXCERPT_CHARS
    assert all(c.isprintable() for c in shown)


@given(secret=st.from_regex(r"[A-Za-z0-9+/=_-]{24,80}", fullmatch=True), before=st.text(max_size=60))
def test_an_unknown_long_token_is_never_shown(secret: str, before: str) -> None:
    """What no list of forms foresees: a long opaque run is blanked out even without the key."""
    assert secret not in excerpt(f"{before} {secret} trailing words", None)
    assert excerpt(f"request {secret} refused", None) == f"request {OPAQUE_MARK} refused"


@given(st.text(max_size=400))
def test_an_excerpt_is_short_and_printable(text: str) -> None:
    shown = excerpt(text, KEY)
    assert len(shown) <= MAX_EXCERPT_CHARS
    assert all(c.isprintable() for c in shown)
    assert shown == shown.strip()


def test_a_message_too_long_to_scrub_whole_is_not_quoted() -> None:
    assert excerpt("x " * 10_000 + KEY, KEY) == ""


def test_a_malformed_base_url_is_a_client_error(stand_in: StandIn) -> None:
    broken = Provider("azure-like", ApiStyle.OPENAI, "http://[bad/v1", None, Locality.CLOUD, None, False)
    with pytest.raises(ProviderError) as raised:
        call(stand_in, ApiStyle.OPENAI, provider=broken)
    assert raised.value.kind == "client"
    assert not raised.value.retryable
