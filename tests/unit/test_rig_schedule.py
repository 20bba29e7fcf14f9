"""How the suite is split between pytest-xdist workers: the files that share the session's Kafka
broker are one unit of work (tests/rig/plugin.py, KAFKA_FILES), every other file is its own."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from tests.rig import plugin

ROOT = Path(__file__).resolve().parents[2]
_IMPORTS = re.compile(r"^from (tests\.[\w.]+) import", re.MULTILINE)


def _module_file(module: str) -> str:
    return module.replace(".", "/") + ".py"


def kafka_users() -> set[str]:
    """Test files that ask for the kafka_broker fixture, or import fixtures from a file that does."""
    texts = {str(p.relative_to(ROOT)): p.read_text() for p in (ROOT / "tests").rglob("test_*.py")}
    texts.pop("tests/unit/test_rig_schedule.py")
    users = {name for name, text in texts.items() if re.search(r"\bkafka_broker\b", text)}
    grown = True
    while grown:
        more = {
            name
            for name, text in texts.items()
            if name not in users and any(_module_file(m) in users for m in _IMPORTS.findall(text))
        }
        users |= more
        grown = bool(more)
    return users


def test_every_file_that_uses_the_broker_is_in_the_kafka_group() -> None:
    assert kafka_users() == set(plugin.KAFKA_FILES)


def test_the_scheduler_keeps_the_kafka_files_together_and_the_others_apart() -> None:
    # The two options xdist's scheduler reads: how to split, and the workers (as -n 2 gives them).
    config: Any = SimpleNamespace(getvalue={"dist": "loadfile", "tx": ["2*popen"]}.get)
    scheduling = plugin.pytest_xdist_make_scheduler(config, None)
    scope = {
        nodeid: scheduling._split_scope(nodeid)
        for nodeid in (
            "tests/integration/test_kafka_ops.py::test_a",
            "tests/integration/test_audit_verify.py::test_b[x]",
            "tests/integration/test_sandbox.py::test_c",
            "tests/integration/test_deploy.py::test_d",
            "tests/e2e/test_openai_api.py::test_e",
        )
    }
    assert scope == {
        "tests/integration/test_kafka_ops.py::test_a": plugin.KAFKA_GROUP,
        "tests/integration/test_audit_verify.py::test_b[x]": plugin.KAFKA_GROUP,
        "tests/integration/test_sandbox.py::test_c": "tests/integration/test_sandbox.py",
        "tests/integration/test_deploy.py::test_d": "tests/integration/test_deploy.py",
        "tests/e2e/test_openai_api.py::test_e": "tests/e2e/test_openai_api.py",
    }
    other: Any = SimpleNamespace(getvalue=lambda name: "load")
    assert plugin.pytest_xdist_make_scheduler(other, None) is None
