"""Each public module of the core library lists exactly what it defines in ``__all__``."""

from __future__ import annotations

import importlib
import inspect

import pytest

MODULES = ["aion", "aion.addresses", "aion.errors", "aion.exitcodes", "aion.schemas"]


@pytest.mark.parametrize("name", MODULES)
def test_all_is_complete(name: str) -> None:
    module = importlib.import_module(name)
    declared = set(getattr(module, "__all__", ()))
    defined = {
        attr
        for attr, value in vars(module).items()
        if not attr.startswith("_")
        and (inspect.isclass(value) or inspect.isfunction(value))
        and value.__module__ == name
    }
    assert defined <= declared, f"{name}.__all__ lacks {sorted(defined - declared)}"
    assert all(hasattr(module, attr) for attr in declared)
