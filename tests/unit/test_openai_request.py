"""How aiond reads an OpenAI chat completion request (aiond.serving.openai_api.submission): what carries
over into the task, the aion hints from the body and the headers, and a clear 400 naming the field
for anything malformed, whatever JSON arrives."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aion.config.model import Route
from aion.errors import UsageError, transport
from aiond.execution.executor import Submission
from aiond.serving.openai_api import BadField, error_body, submission, task_text
from tests.rig.fuzz import examples

USER = [{"role": "user", "content": "hello"}]


def test_a_minimal_request_is_one_text() -> None:
    asked, usage = submission({"model": "summarize", "messages": USER}, {})
    assert (asked.intent, asked.text, asked.conversation, asked.stream, usage) == (
        "summarize", "hello", (), False, False
    )  # fmt: skip
    assert asked.route_override is None
    assert asked.max_tokens is None
    assert asked.sampling is None


def test_everything_that_carries_over() -> None:
    body = {
        "model": "intent:draft_reply",
        "messages": [
            {"role": "developer", "content": "be kind"},
            {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        ],
        "max_tokens": 50,
        "max_completion_tokens": 20,
        "temperature": 0,
        "stop": "\n\n",
        "user": "u-1",
        "metadata": {"ticket": "T-9"},
        "stream": True,
        "stream_options": {"include_usage": True},
        "aion": {"route": "hybrid", "budget_usd": "0.25", "latency_target_ms": 900, "idempotency_key": "k"},
        "seed": 7,  # ignored: no effect on routing, and providers differ
    }
    asked, usage = submission(body, {})
    assert asked.intent == "draft_reply"
    assert asked.conversation == ({"role": "system", "content": "be kind"}, {"role": "user", "content": "ab"})
    assert asked.text == "system: be kind\n\nuser: ab"
    assert asked.max_tokens == 20  # max_completion_tokens wins
    assert asked.sampling is not None
    assert (asked.sampling.temperature, asked.sampling.stop) == (0.0, ("\n\n",))
    assert asked.labels == {"ticket": "T-9", "user": "u-1"}
    assert (asked.route_override, asked.budget_nano, asked.latency_target_ms) == (
        Route.HYBRID,
        250_000_000,
        900,
    )
    assert asked.idempotency_key == "k"
    assert asked.stream
    assert usage


def test_headers_give_the_hints_the_body_does_not() -> None:
    headers = {
        "x-aion-route": "API",
        "x-aion-budget-usd": "0.01",
        "x-aion-latency-target-ms": "250",
        "Idempotency-Key": "from-header",
    }
    asked, _ = submission({"model": "summarize", "messages": USER, "aion": {"route": "local"}}, headers)
    assert asked.route_override is Route.LOCAL  # the body wins
    assert (asked.budget_nano, asked.latency_target_ms, asked.idempotency_key) == (
        10_000_000,
        250,
        "from-header",
    )


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"model": None}, "model"),
        ({"model": ""}, "model"),
        ({"model": "intent:"}, "model"),
        ({"messages": []}, "messages"),
        ({"messages": "hello"}, "messages"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
         "messages[0].content[0]"),
        ({"messages": [{"role": "assistant", "content": "only me"}]}, "messages"),
        ({"messages": [{"role": "user", "content": 3}]}, "messages[0].content"),
        ({"tools": [{"type": "function"}]}, "tools"),
        ({"n": 3}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_completion_tokens": True}, "max_completion_tokens"),
        ({"temperature": 2.5}, "temperature"),
        ({"temperature": "hot"}, "temperature"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"stop": [""]}, "stop"),
        ({"metadata": {"k": 1}}, "metadata.k"),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
        ({"user": ["me"]}, "user"),
        ({"stream": "yes"}, "stream"),
        ({"aion": {"route": "moon"}}, "aion.route"),
        ({"aion": {"budget_usd": -1}}, "aion.budget_usd"),
        ({"aion": {"budget_usd": "NaN"}}, "aion.budget_usd"),
        ({"aion": {"latency_target_ms": 0}}, "aion.latency_target_ms"),
        ({"aion": {"idempotency_key": "k" * 300}}, "aion.idempotency_key"),
        ({"aion": {"speed": "fast"}}, "aion.speed"),
        ({"aion": "local"}, "aion"),
    ],
)  # fmt: skip
def test_a_malformed_field_is_a_400_that_names_it(change: dict[str, Any], param: str) -> None:
    body: dict[str, Any] = {"model": "summarize", "messages": USER, **change}
    with pytest.raises(BadField) as caught:
        submission(body, {})
    assert caught.value.param == param
    assert transport(caught.value).http == 400
    shaped = error_body(caught.value)["error"]
    assert (shaped["param"], shaped["type"]) == (param, "invalid_request_error")


json_values: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)
fields = st.sampled_from([
    "model", "messages", "max_tokens", "max_completion_tokens", "temperature", "stop", "user", "metadata",
    "stream", "stream_options", "aion", "n", "tools", "logprobs", "response_format", "modalities",
])  # fmt: skip


@settings(max_examples=examples(500), deadline=None)
@given(body=st.dictionaries(fields, json_values, max_size=8) | json_values, headers=st.dictionaries(
    st.sampled_from(["x-aion-route", "x-aion-budget-usd", "x-aion-latency-target-ms", "Idempotency-Key"]),
    st.text(max_size=20), max_size=4))  # fmt: skip
def test_any_json_is_a_task_or_a_usage_error(body: Any, headers: dict[str, str]) -> None:
    """Nothing but a UsageError (400) ever comes out of a malformed request, and what is accepted is
    within bounds."""
    try:
        asked, _ = submission(body, headers)
    except UsageError as exc:
        refused: UsageError = exc
    else:
        check_accepted(body, asked)
        return
    assert transport(refused).http == 400


def check_accepted(body: Any, asked: Submission) -> None:
    assert isinstance(body, dict)
    assert asked.intent == str(body["model"]).removeprefix("intent:")
    assert len(asked.labels) <= 17
    assert asked.max_tokens is None or 1 <= asked.max_tokens <= 1_000_000
    assert (
        any(m["role"] == "user" for m in asked.conversation) or asked.text == body["messages"][0]["content"]
    )


def test_the_text_of_a_chat() -> None:
    assert task_text(({"role": "user", "content": "one"},)) == "one"
    assert task_text(({"role": "user", "content": "a"}, {"role": "assistant", "content": "b"})) == (
        "user: a\n\nassistant: b"
    )
