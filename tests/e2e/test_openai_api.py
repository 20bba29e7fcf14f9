"""aiond's OpenAI-compatible endpoints, driven by the real ``openai`` SDK: a real aiond routing to the
real stand-in provider. Completions plain and streamed, the models list, the x-aion headers, every
error as the SDK's exception type, and a 429 the SDK waits out and retries."""

from __future__ import annotations

import concurrent.futures
import json
from collections.abc import Iterator

import httpx
import openai
import pytest

from aion.api.v1 import common_pb2, tasks_pb2, tasks_pb2_grpc
from tests.e2e.test_tasks import write_config
from tests.rig import providers as behave
from tests.rig.daemon import Aiond
from tests.rig.procs import poll
from tests.rig.providers import StandIn


@pytest.fixture(scope="module")
def stand_in() -> Iterator[StandIn]:
    with StandIn() as server:
        yield server


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory, stand_in: StandIn) -> Iterator[Aiond]:
    root = tmp_path_factory.mktemp("openai")
    policies = {"limits": {"concurrency": {"local": 1, "api": 64, "hybrid": 16},
                           "queue_depth": {"local": 1, "api": 256, "hybrid": 64}}}  # fmt: skip
    d = Aiond(root, config_dir=write_config(root, stand_in, policies=policies)).start()
    yield d
    d.stop()


OPEN: list[openai.OpenAI] = []


@pytest.fixture(autouse=True)
def fresh(stand_in: StandIn) -> Iterator[None]:
    stand_in.clear()
    yield
    while OPEN:
        OPEN.pop().close()


def client(
    daemon: Aiond, role: str = "operator", *, max_retries: int = 0, key: str | None = None
) -> openai.OpenAI:
    made = openai.OpenAI(
        base_url=f"http://{daemon.http_addr}/v1",
        api_key=daemon.tokens[role] if key is None else key,
        max_retries=max_retries,
    )
    OPEN.append(made)
    return made


def test_a_chat_completion_is_a_task_and_says_how_it_was_routed(daemon: Aiond, stand_in: StandIn) -> None:
    raw = client(daemon).chat.completions.with_raw_response.create(
        model="summarize",
        messages=[{"role": "user", "content": "the nightly batch finished"}],
        extra_headers={"x-aion-route": "api"},
    )
    answer = raw.parse()
    assert answer.choices[0].message.content == "echo:the nightly batch finished"
    assert answer.choices[0].finish_reason == "stop"
    assert answer.model == "summarize"
    assert answer.usage is not None
    assert answer.usage.completion_tokens == 8
    assert raw.headers["x-aion-route"] == "api"
    assert raw.headers["x-aion-target"].startswith(("openai/", "azure/", "hf/"))
    assert answer.id == f"chatcmpl-{raw.headers['x-aion-task-id']}"
    assert float(raw.headers["x-aion-cost-usd"]) > 0
    assert int(raw.headers["x-aion-policy-version"]) >= 1
    sent = stand_in.requests[-1]
    assert sent.body["messages"][0] == {
        "role": "system",
        "content": "Summarise a document for the operator console",
    }
    # the task is aiond's like any other: its record says the same
    with daemon.channel("viewer") as channel:
        task = (
            tasks_pb2_grpc.TaskServiceStub(channel)
            .GetTask(tasks_pb2.GetTaskRequest(task_id=raw.headers["x-aion-task-id"]), timeout=10)
            .task
        )
    assert task.intent == "summarize"
    assert task.status == tasks_pb2.TASK_STATUS_OK
    assert task.decision.route == common_pb2.ROUTE_API
    assert task.result.text == answer.choices[0].message.content


def test_the_chat_and_its_options_reach_the_provider(daemon: Aiond, stand_in: StandIn) -> None:
    answer = client(daemon).chat.completions.create(
        model="intent:summarize",
        messages=[
            {"role": "developer", "content": "be brief"},
            {
                "role": "user",
                "content": [{"type": "text", "text": "first "}, {"type": "text", "text": "part"}],
            },
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "and the second"},
        ],
        max_completion_tokens=3,
        temperature=0.2,
        stop=["END"],
        user="app-7",
        metadata={"ticket": "T-1"},
        extra_body={"aion": {"route": "api", "budget_usd": 0.5}},
    )
    assert answer.choices[0].finish_reason == "length"
    assert answer.choices[0].message.content == "echo:and the second"[:12]
    body = stand_in.requests[-1].body
    assert [m["role"] for m in body["messages"]] == ["system", "system", "user", "assistant", "user"]
    assert body["messages"][2]["content"] == "first part"
    assert body["max_tokens"] == 3
    assert body["temperature"] == 0.2
    assert body["stop"] == ["END"]


def test_a_streamed_completion_arrives_in_pieces_with_its_usage(daemon: Aiond) -> None:
    stream = client(daemon).chat.completions.create(
        model="summarize",
        messages=[{"role": "user", "content": "stream me a longer answer please"}],
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={"x-aion-route": "api"},
    )
    pieces, finish, usage = [], None, None
    for chunk in stream:
        if chunk.choices:
            pieces.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
        if chunk.usage is not None:
            usage = chunk.usage
    assert "".join(pieces) == "echo:stream me a longer answer please"
    assert len([p for p in pieces if p]) > 3, "the provider's pieces, not one block"
    assert finish == "stop"
    assert usage is not None
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens > 0


def test_models_are_the_intents_with_their_routes(daemon: Aiond) -> None:
    models = client(daemon, "viewer").models.list()
    by_id = {m.id: m for m in models.data}
    assert set(by_id) == {"summarize", "invoice_ocr", "draft_reply"}
    extra = by_id["invoice_ocr"].model_extra or {}
    assert extra["aion"]["privacy"] == "local-only"
    assert "api" not in extra["aion"]["routes"]
    assert "api" in (by_id["summarize"].model_extra or {})["aion"]["routes"]


@pytest.mark.parametrize(
    ("kwargs", "role", "error", "status", "code"),
    [
        ({"model": "no_such_intent"}, "operator", openai.NotFoundError, 404, "not-found"),
        ({"extra_headers": {"x-aion-route": "api"}, "model": "invoice_ocr"}, "operator",
         openai.UnprocessableEntityError, 422, "ROUTE_NOT_PERMITTED"),
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "operator",
         openai.BadRequestError, 400, "usage"),
        ({"n": 2}, "operator", openai.BadRequestError, 400, "usage"),
        ({"extra_body": {"aion": {"route": "moon"}}}, "operator", openai.BadRequestError, 400, "usage"),
        ({}, "viewer", openai.PermissionDeniedError, 403, "forbidden"),
    ],
)  # fmt: skip
def test_errors_have_openais_shape_and_the_sdks_types(
    daemon: Aiond,
    kwargs: dict[str, object],
    role: str,
    error: type[openai.APIStatusError],
    status: int,
    code: str,
) -> None:
    call = {"model": "summarize", "messages": [{"role": "user", "content": "hi"}], **kwargs}
    with pytest.raises(error) as caught:
        client(daemon, role).chat.completions.create(**call)  # type: ignore[call-overload]
    assert caught.value.status_code == status
    body = caught.value.body
    assert isinstance(body, dict)
    assert set(body) >= {"message", "type", "code"}
    assert body["code"] == code
    assert "Traceback" not in json.dumps(body)


def test_a_wrong_token_is_an_authentication_error(daemon: Aiond) -> None:
    with pytest.raises(openai.AuthenticationError) as caught:
        client(daemon, key="aion_not-a-token").models.list()
    assert caught.value.status_code == 401


def test_providers_that_fail_are_a_502_with_the_cause_and_no_key(daemon: Aiond, stand_in: StandIn) -> None:
    stand_in.always(behave.status(500))
    with pytest.raises(openai.APIStatusError) as caught:
        client(daemon).chat.completions.create(
            model="summarize",
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-aion-route": "api"},
        )
    assert caught.value.status_code == 502
    assert behave.key_leaks(json.dumps(caught.value.body), "sk-stand-in-0123456789") == []


def admitted(daemon: Aiond, route: str) -> float:
    """Tasks aiond has admitted on ``route`` so far (its aion_route_decisions counter)."""
    text = httpx.get(f"http://{daemon.http_addr}/metrics", timeout=10).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("aion_route_decisions_total{") and f'route="{route}"' in line
    )


def test_a_full_route_is_a_429_that_the_sdk_waits_out_and_retries(daemon: Aiond, stand_in: StandIn) -> None:
    """The local route has one slot and one queue place: while two slow tasks hold them, the next
    request is refused with Retry-After; the SDK waits as told and its retry is answered."""
    stand_in.script(behave.slow(1.0), behave.slow(1.0))
    chat = {"model": "summarize", "messages": [{"role": "user", "content": "hold"}],
            "extra_headers": {"x-aion-route": "local"}}  # fmt: skip
    before = admitted(daemon, "local")
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        holders = [pool.submit(client(daemon).chat.completions.create, **chat) for _ in range(2)]  # type: ignore[arg-type]
        poll(lambda: admitted(daemon, "local") >= before + 2, timeout=10, what="the slot and the queue taken")
        with pytest.raises(openai.RateLimitError) as refused:
            client(daemon).chat.completions.create(**chat)  # type: ignore[call-overload]
        assert int(refused.value.response.headers["Retry-After"]) >= 1
        assert refused.value.body["code"] == "saturated"  # type: ignore[index]
        retried = client(daemon, max_retries=3).chat.completions.create(**chat)  # type: ignore[call-overload]
        assert retried.choices[0].message.content == "echo:hold"
        assert [h.result().choices[0].message.content for h in holders] == ["echo:hold"] * 2
