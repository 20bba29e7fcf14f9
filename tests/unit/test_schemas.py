"""Every packaged schema is valid draft 2020-12, has a stable $id, and documents every property."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from aion import schemas


def properties(node: Any, pointer: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every (pointer, subschema) under a "properties" keyword, at any depth."""
    if isinstance(node, dict):
        for name, sub in node.get("properties", {}).items():
            yield f"{pointer}/properties/{name}", sub
        for key, value in node.items():
            yield from properties(value, f"{pointer}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from properties(value, f"{pointer}/{index}")


@pytest.mark.parametrize("name", schemas.names())
def test_schema_is_valid_2020_12(name: str) -> None:
    schema = schemas.load(name)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)


@pytest.mark.parametrize("name", schemas.names())
def test_schema_has_a_stable_id(name: str) -> None:
    assert schemas.load(name)["$id"] == "urn:aion:schema:v1:" + name.replace("/", ":")


@pytest.mark.parametrize("name", schemas.names())
def test_every_property_has_a_description(name: str) -> None:
    undocumented = [p for p, sub in properties(schemas.load(name)) if not sub.get("description")]
    assert undocumented == []


def test_ids_are_unique() -> None:
    ids = [schemas.load(name)["$id"] for name in schemas.names()]
    assert len(ids) == len(set(ids))
