from __future__ import annotations

import io
import json

import pytest
import yaml

from aionctl.output import API_VERSION, OutputFormat, document, emit


@pytest.mark.parametrize("fmt", list(OutputFormat))
def test_every_format_renders_the_document(fmt: OutputFormat) -> None:
    doc = document("Thing", {"name": "x", "count": 2, "nested": {"ok": True}})
    out = io.StringIO()
    emit(doc, fmt, text=lambda: "name: x\n", stream=out)
    text = out.getvalue()
    match fmt:
        case OutputFormat.TEXT:
            assert text == "name: x\n"
        case OutputFormat.JSON:
            assert json.loads(text) == doc
        case OutputFormat.YAML:
            assert yaml.safe_load(text) == doc


def test_document_puts_api_version_and_kind_first() -> None:
    doc = document("Thing", {"a": 1})
    assert doc == {"apiVersion": API_VERSION, "kind": "Thing", "a": 1}
    assert list(doc) == ["apiVersion", "kind", "a"]
    with pytest.raises(ValueError, match="must not set apiVersion or kind"):
        document("Thing", {"kind": "Other"})


def test_text_is_rendered_only_when_asked_for() -> None:
    calls: list[int] = []

    def render() -> str:
        calls.append(1)
        return "x"

    emit(document("Thing", {}), OutputFormat.JSON, text=render, stream=io.StringIO())
    assert calls == []
