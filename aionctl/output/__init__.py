"""Renderers for aionctl's output: text for people, json and yaml for programs.

Every document printed for a program is a mapping with ``apiVersion`` and ``kind`` first, so scripts
can check what they parse. Data goes to stdout; messages and progress go to stderr.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TextIO, assert_never

from aionctl.output.interface import API_VERSION, OutputFormat

if TYPE_CHECKING:
    from google.protobuf.message import Message


def document(kind: str, body: Mapping[str, Any] | Message) -> dict[str, Any]:
    """A printable document: apiVersion and kind first, then the body (which must not set either). A
    proto message is converted as every document is (:mod:`aion.documents`: numbers as numbers,
    enums as the words the text shows)."""
    if not isinstance(body, Mapping):
        from aion.documents import to_dict

        body = to_dict(body)
    if "apiVersion" in body or "kind" in body:
        raise ValueError("a document body must not set apiVersion or kind")
    return {"apiVersion": API_VERSION, "kind": kind, **body}


def emit(
    doc: Mapping[str, Any], fmt: OutputFormat, *, text: Callable[[], str], stream: TextIO | None = None
) -> None:
    """Write ``doc`` in ``fmt``; ``text`` renders the human form only when it is asked for."""
    out = stream if stream is not None else sys.stdout
    match fmt:
        case OutputFormat.TEXT:
            rendered = text()
        case OutputFormat.JSON:
            rendered = json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
        case OutputFormat.YAML:
            import yaml

            rendered = yaml.safe_dump(dict(doc), sort_keys=False, allow_unicode=True)
        case _:
            assert_never(fmt)
    out.write(rendered if rendered.endswith("\n") or not rendered else rendered + "\n")
    out.flush()


def emit_streamed(doc: Mapping[str, Any], fmt: OutputFormat, *, text: Callable[[], str]) -> None:
    """Write one document of a stream (``events tail``, ``task watch``): JSON as one line per document
    (JSON Lines), YAML as one document after each ``---``, text as ``text()`` renders it."""
    match fmt:
        case OutputFormat.JSON:
            line = json.dumps(doc, ensure_ascii=False, separators=(",", ":")) + "\n"
        case OutputFormat.YAML:
            import yaml

            line = "---\n" + yaml.safe_dump(dict(doc), sort_keys=False, allow_unicode=True)
        case OutputFormat.TEXT:
            line = text()
        case _:
            assert_never(fmt)
    sys.stdout.write(line if line.endswith("\n") or not line else line + "\n")
    sys.stdout.flush()


__all__ = ["API_VERSION", "OutputFormat", "document", "emit", "emit_streamed"]
