"""Checking documents against the packaged JSON Schemas, with jsonschema-rs.

jsonschema-rs (a Rust implementation of draft 2020-12) is used rather than the pure-Python jsonschema
because validation runs on every file of every commit in CI: it is more than ten times faster, and it
reports each error with the instance path that the finding's line and column come from.
"""

from __future__ import annotations

import difflib
from functools import cache
from typing import Any

import jsonschema_rs

from aion import schemas
from aion.config.findings import Finding, Severity
from aion.config.kinds import Kind
from aion.config.yamlload import Document


@cache
def _validator(name: str) -> Any:
    return jsonschema_rs.validator_for(schemas.load(name))


def check(document: Document, kind: Kind, *, strict: bool = False) -> list[Finding]:
    """Schema findings for a document of ``kind``: AION100 for violations, AION101 for unknown keys
    (an error when ``strict``)."""
    schema = schemas.load(kind.schema)
    findings: list[Finding] = []
    for error in _validator(kind.schema).iter_errors(document.data):
        path: list[str | int] = list(error.instance_path)
        schema_path = list(error.schema_path)
        kind_name = type(error.kind).__name__
        if kind_name == "AdditionalProperties" and schema_path and schema_path[-1] == "additionalProperties":
            known = sorted(_node(schema, schema_path[:-1]).get("properties", {}))
            for key in error.kind.unexpected:
                findings.append(_unknown_key(document, path, str(key), known, strict))
        elif kind_name == "PropertyNames":
            name = error.kind.error.instance
            # The failing keyword sits in the name rule, inline or behind a $ref: its parent node
            # is the rule, whose description says what a valid name is.
            rule = _node(schema, schema_path[:-1])
            what = rule.get("description", "")
            findings.append(
                document.finding(
                    "AION100",
                    Severity.ERROR,
                    [*path, str(name)],
                    f"{name!r} is not a valid name. {what}",
                    key=True,
                )
            )
        else:
            findings.append(
                document.finding("AION100", Severity.ERROR, path, _message(error, schema, schema_path))
            )
    return findings


def _unknown_key(
    document: Document, path: list[str | int], key: str, known: list[str], strict: bool
) -> Finding:
    where = "at the top of the file" if not path else f"in {'/'.join(str(p) for p in path)}"
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}?" if close else (f"known keys: {', '.join(known)}" if known else None)
    severity = Severity.ERROR if strict else Severity.WARNING
    return document.finding(
        "AION101", severity, [*path, key], f"unknown key {key!r} {where}", hint=hint, key=True
    )


MAX_MESSAGE = 300


def _message(error: Any, schema: dict[str, Any], schema_path: list[str | int]) -> str:
    message: str = error.message
    if len(message) > MAX_MESSAGE:
        # The validator quotes the offending value whole; a megabyte of it helps nobody.
        message = f"{message[:120]} ... {message[-160:]}"
    if type(error.kind).__name__ == "Enum" and isinstance(error.instance, str):
        allowed = [v for v in _node(schema, schema_path[:-1]).get("enum", []) if isinstance(v, str)]
        close = difflib.get_close_matches(error.instance, allowed, n=1, cutoff=0.6)
        if close:
            message += f"; did you mean {close[0]!r}?"
    return message


def _node(schema: dict[str, Any], path: list[str | int]) -> dict[str, Any]:
    node: Any = schema
    for step in path:
        if isinstance(node, dict) and step == "$ref" and isinstance(node.get("$ref"), str):
            continue
        if isinstance(node, dict):
            node = node.get(step, {})
        elif isinstance(node, list) and isinstance(step, int) and step < len(node):
            node = node[step]
        else:
            return {}
    return node if isinstance(node, dict) else {}


__all__ = ["check"]
