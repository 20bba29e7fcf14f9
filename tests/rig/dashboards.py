"""The Grafana dashboards aion ships (``examples/dashboards/``), read the way the dashboard tests need:
every panel (inside rows too), every PromQL query with where it sits, and the metric names those
queries read that an exposition does not offer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.rig.daemon import REPO
from tests.rig.promql import metric_names, template_metric_names

DASHBOARDS = REPO / "examples" / "dashboards"
NAMES = ("router-overview.json", "task-health.json", "resource-utilization.json")
GRAFANA_VARIABLE = re.compile(r"\$(?:\{(\w+)(?::\w+)?\}|(\w+))")


@dataclass(frozen=True)
class Query:
    """One PromQL query of a dashboard: a panel target's ``expr`` or a templating variable's query."""

    where: str
    expr: str
    templating: bool = False

    def metrics(self) -> set[str]:
        return template_metric_names(self.expr) if self.templating else metric_names(self.expr)


def load(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(path.read_text())
    return doc


def shipped() -> dict[str, dict[str, Any]]:
    """Every dashboard in examples/dashboards/, by file name."""
    return {path.name: load(path) for path in sorted(DASHBOARDS.glob("*.json"))}


def panels(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows and the panels of collapsed rows included."""
    for panel in doc.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def queries(doc: dict[str, Any]) -> Iterator[Query]:
    for panel in panels(doc):
        for target in panel.get("targets", []):
            yield Query(
                f"panel {panel.get('id')} ({panel.get('title')!r}) {target.get('refId')}", target["expr"]
            )
    for variable in doc.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            query = variable["query"]
            text = query["query"] if isinstance(query, dict) else query
            yield Query(f"variable {variable['name']}", text, templating=True)


def unknown_metrics(doc: dict[str, Any], exported: set[str]) -> list[str]:
    """``where: name`` for every metric a query of ``doc`` reads that is not in ``exported``."""
    return [
        f"{query.where}: {name}"
        for query in queries(doc)
        for name in sorted(query.metrics())
        if name not in exported
    ]


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
    "Query",
    "instantiate",
    "load",
    "panels",
    "queries",
    "shipped",
    "unknown_metrics",
]
