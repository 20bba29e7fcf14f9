"""The pure parts of runbooks: ${...} references, checks on results, durations, the canary's arithmetic,
and the freshness of the command table validate checks runbooks against."""

from __future__ import annotations

import pytest

from aion import canary
from aion.runbook import conditions, model, templates
from tests.rig.generated import assert_current


def resolve(ref: templates.Ref) -> object:
    known: dict[str, dict[str, object]] = {"var": {"n": 3, "s": "a b"}, "step": {"x": {"k": [1, 2]}}}
    return known[ref.kind][ref.name]


def test_a_lone_reference_keeps_its_type_and_text_embeds_json() -> None:
    assert templates.parse("${n}").render(resolve) == 3
    assert templates.parse("n=${n} s=${s} x=${steps.x}").render(resolve) == 'n=3 s=a b x={"k":[1,2]}'
    assert templates.parse("cost $$5 and $x").render(resolve) == "cost $5 and $x"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("${", "without a closing"),
        ("${run.nope}", "the run has dir, id, started"),
        ("${steps.a.exits}", "a step has exit, seconds, status"),
        ("${steps.a.exit/x}", "a step has exit"),
        ("${1abc}", "is not a reference"),
        ("${env.}", "is not a reference"),
    ],
)
def test_malformed_references_say_what_the_forms_are(text: str, fragment: str) -> None:
    with pytest.raises(templates.TemplateError, match=fragment.replace("(", r"\(")):
        templates.parse(text)


def test_step_references_carry_field_and_pointer() -> None:
    (ref,) = templates.parse("${steps.apply/version/tag}").parts
    assert isinstance(ref, templates.Ref)
    assert (ref.kind, ref.name, ref.field, ref.pointer) == ("step", "apply", None, "/version/tag")
    (status,) = templates.parse("${steps.apply.status}").parts
    assert isinstance(status, templates.Ref)
    assert (status.name, status.field) == ("apply", "status")


DOC = {"a": {"b": [{"ok": True, "n": 2}, {"ok": True, "n": 5}]}, "t": "serving", "e": [], "m/x": 1, "z": "3"}


@pytest.mark.parametrize(
    ("pointer", "operator", "expected", "ok"),
    [
        ("/t", "equals", "serving", True),
        ("/t", "equals", "draining", False),
        ("/z", "equals", 3, True),  # numbers as numbers
        ("/a/b/0/n", "lt", 3, True),
        ("/a/b/*/n", "lt", 3, False),  # every element must pass
        ("/a/b/*/ok", "equals", True, True),
        ("/e/*/ok", "equals", True, True),  # nothing to check passes; `length` requires elements
        ("/e", "length", 0, True),
        ("/a/b", "length", 2, True),
        ("/t", "matches", "^serv", True),
        ("/t", "in", ["serving", "draining"], True),
        ("/t", "not_in", ["serving"], False),
        ("/a/b/0", "contains", "ok", True),
        ("/m~1x", "equals", 1, True),
        ("/nope", "exists", False, True),
        ("/nope", "equals", 1, False),
        ("/t", "gt", "x", False),
    ],
)
def test_checks_compare_as_documented(pointer: str, operator: str, expected: object, ok: bool) -> None:
    assert conditions.evaluate(DOC, pointer, operator, expected).ok is ok


def test_a_failed_check_says_where_and_what() -> None:
    outcome = conditions.evaluate(DOC, "/a/b/*/n", "le", 4)
    assert outcome.detail == "/a/b/1/n is 5, expected <= 4"
    with pytest.raises(conditions.PointerError):
        conditions.evaluate(DOC, "a", "exists", True)


@pytest.mark.parametrize(
    ("text", "seconds"), [("500ms", 0.5), ("30s", 30), ("5m", 300), ("1h", 3600), (2, 2.0)]
)
def test_durations(text: object, seconds: float) -> None:
    assert model.seconds(text) == seconds


@pytest.mark.parametrize("text", ["5 minutes", "25h", "-1s", True, "1d"])
def test_bad_durations_are_refused(text: object) -> None:
    with pytest.raises(ValueError, match=r"duration|out of range"):
        model.seconds(text)


def test_action_with_options_becomes_a_command_line() -> None:
    argv = model.action_argv(
        "policy.apply", {"expect_tag": "v1", "dry_run": True, "quiet": False, "args": ["dir"]}
    )
    assert argv == ["policy", "apply", "--expect-tag", "v1", "--dry-run", "dir"]


def exposition(ok: int, errors: int, slow: int) -> str:
    total = ok + errors
    fast = total - slow
    lines = ["# TYPE aion_task_duration_seconds histogram"]
    for status, count in (("OK", ok), ("ERROR", errors)):
        share = fast * count // total if total else 0
        for le in ("0.1", "1.0", "+Inf"):
            n = share if le == "0.1" else (share if le == "1.0" else count)
            lines.append(f'aion_task_duration_seconds_bucket{{le="{le}",route="api",status="{status}"}} {n}')
        lines.append(f'aion_task_duration_seconds_count{{route="api",status="{status}"}} {count}')
        lines.append(f'aion_task_duration_seconds_sum{{route="api",status="{status}"}} 1.0')
    return "\n".join(lines) + "\n"


def test_the_canary_judges_only_what_finished_in_the_window() -> None:
    before = canary.parse(exposition(ok=100, errors=50, slow=0))
    after = canary.parse(exposition(ok=190, errors=60, slow=0))
    window = canary.window(before, after)
    assert (window.tasks, window.errors) == (100, 10)
    assert window.error_ratio == pytest.approx(0.1)
    assert canary.judge(window, max_error_ratio=0.2, max_p95=2, min_tasks=1).passed
    failed = canary.judge(window, max_error_ratio=0.05, max_p95=2, min_tasks=1)
    assert not failed.passed
    assert failed.reasons == ("error ratio 0.100 (10/100) is over 0.05",)
    assert not canary.judge(canary.window(after, after), max_error_ratio=1, max_p95=9, min_tasks=1).passed


def test_the_canary_quantile_interpolates_like_prometheus() -> None:
    buckets = [(0.1, 50.0), (1.0, 100.0), (float("inf"), 100.0)]
    assert canary.quantile(0.5, buckets) == pytest.approx(0.1)
    assert canary.quantile(0.75, buckets) == pytest.approx(0.55)
    assert canary.quantile(0.95, [(0.1, 0.0), (float("inf"), 10.0)]) == 0.1  # in +Inf: the last bound
    assert canary.quantile(0.95, []) is None


def test_the_runbook_command_table_is_current() -> None:
    assert_current("runbook_verbs.py")
