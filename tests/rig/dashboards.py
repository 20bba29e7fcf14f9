"""The Grafana dashboards aion ships (``examples/dashboards/``), for the dashboard tests: the files, and
their queries as Grafana would send them. Reading panels and queries is :mod:`aion.dashboards`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from tests.rig.daemon import REPO

DASHBOARDS = REPO / "examples" / "dashboards"
NAMES = ("router-overview.json", "task-health.json", "resource-utilization.json")
GRAFANA_VARIABLE = re.compile(r"\$(?:\{(\w+)(?::\w+)?\}|(\w+))")


def load(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(path.read_text())
    return doc


def shipped() -> dict[str, dict[str, Any]]:
    """Every dashboard in examples/dashboards/, by file name."""
    return {path.name: load(path) for path in sorted(DASHBOARDS.glob("*.json"))}


def instantiate(expr: str, interval: str = "30s", time_range: str = "5m") -> str:
    """``expr`` as Grafana would send it: its interval variables replaced by durations and template
    variables (all used in regular-expression matchers) by ``.+``."""
    durations = {"__rate_interval": interval, "__interval": interval, "__range": time_range}

    def value(found: re.Match[str]) -> str:
        name = found.group(1) or found.group(2)
        return durations.get(name, ".+")

    return GRAFANA_VARIABLE.sub(value, expr)


__all__ = [
    "DASHBOARDS",
    "NAMES",
    "instantiate",
    "load",
    "shipped",
]
