"""Access to the JSON Schemas that ship with aion (``schemas/`` in the repository, ``aion/_data/schemas`` in
the wheel). Schema names are paths without the ``.json`` suffix, for example ``output/health``."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, cast

from aion.errors import InputError, UsageError


def root() -> Traversable:
    """The schema directory: packaged data when installed from a wheel, the repository's otherwise."""
    packaged = resources.files("aion").joinpath("_data", "schemas")
    if packaged.is_dir():
        return packaged
    # An editable install or a source checkout: the schemas sit next to the package.
    return Path(__file__).resolve().parent.parent / "schemas"


def names() -> list[str]:
    """Every packaged schema's name, sorted."""
    found: list[str] = []

    def walk(node: Traversable, prefix: str) -> None:
        for child in node.iterdir():
            if child.is_dir():
                walk(child, f"{prefix}{child.name}/")
            elif child.name.endswith(".json"):
                found.append(prefix + child.name.removesuffix(".json"))

    walk(root(), "")
    return sorted(found)


@cache
def load(name: str) -> dict[str, Any]:
    """The parsed schema called ``name``: UsageError (exit 2) when there is none, InputError (exit 3)
    when it cannot be read."""
    if name not in names():
        raise UsageError(f"no schema named {name!r}", hint="`aionctl schema list` shows the names")
    node = root()
    for part in f"{name}.json".split("/"):
        node = node.joinpath(part)
    try:
        return cast(dict[str, Any], json.loads(node.read_text(encoding="utf-8")))
    except (OSError, ValueError) as exc:
        raise InputError(f"packaged schema {name!r} is unreadable: {exc}", hint="reinstall aion") from exc


__all__ = ["load", "names", "root"]
